from django.apps import AppConfig


class RlhfConfig(AppConfig):
    name = "rlhf"
    verbose_name = "RLHF"
    default_auto_field = "django.db.models.BigAutoField"
