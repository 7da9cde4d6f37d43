from django.apps import AppConfig


class RlhfConfig(AppConfig):
    name = "rlhf"
    verbose_name = "RLHF"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the tasks in every process, web included: services enqueue them by name
        # (celery.current_app.signature), which finds the task object only once it is registered.
        from rlhf import tasks  # noqa: F401
