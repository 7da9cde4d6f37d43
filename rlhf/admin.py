from django.contrib import admin

from rlhf.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Which version is current (state, the KL reference, and what a version is: its kind, project
    and weights) changes only through the registry's services, which lock the kind and write the
    audit row: read-only here, and a version is not deleted here. The admin sets trust_remote_code
    and notes."""

    list_display = ("name", "kind", "state", "project", "parent", "trust_remote_code", "created_at")
    list_filter = ("kind", "state", "project")
    search_fields = ("name", "path")
    raw_id_fields = ("parent",)
    readonly_fields = ("state", "is_reference", "promoted_at", "kind", "project", "path")

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
