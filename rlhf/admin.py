from django.contrib import admin

from rlhf.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "state", "project", "parent", "trust_remote_code", "created_at")
    list_filter = ("kind", "state", "project")
    search_fields = ("name", "path")
    raw_id_fields = ("parent",)
