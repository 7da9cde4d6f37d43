from django.contrib import admin

from labelers.models import LabelerProfile


@admin.register(LabelerProfile)
class LabelerProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "role", "status", "created_at")
    list_filter = ("role", "status")
    search_fields = ("user__username", "user__email")
