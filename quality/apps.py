from django.apps import AppConfig


class QualityConfig(AppConfig):
    name = "quality"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the tasks in every process, web included (see annotation.apps).
        from quality import tasks  # noqa: F401
