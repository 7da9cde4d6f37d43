from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    name = "annotation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the tasks in every process, web included: services enqueue them by name
        # (celery.current_app.signature), which finds the task object only once it is registered.
        from annotation import tasks  # noqa: F401
