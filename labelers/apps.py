from django.apps import AppConfig


class LabelersConfig(AppConfig):
    name = "labelers"
    default_auto_field = "django.db.models.BigAutoField"
