from django.contrib import admin
from django.http import HttpRequest

from labelers.models import ApiToken, LabelerProfile


@admin.register(LabelerProfile)
class LabelerProfileAdmin(admin.ModelAdmin):
    """Role and status change only through ``user_update`` (the last-admin rule, the audit row):
    read-only here."""

    list_display = ("user", "role", "status", "created_at")
    list_filter = ("role", "status")
    search_fields = ("user__username", "user__email")
    readonly_fields = ("role", "status", "status_reason")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens can be looked at and revoked (deleted) here; they are issued only through the API,
    which is the one place their secret is ever shown."""

    list_display = ("prefix", "user", "name", "created_at", "expires_at", "last_used_at")
    search_fields = ("user__username", "prefix", "name")
    readonly_fields = ("user", "name", "prefix", "created_at", "expires_at", "last_used_at")
    exclude = ("digest", "password_fingerprint")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False
