from django.contrib import admin

from annotation.models import (
    Assignment,
    Comparison,
    Guideline,
    GuidelineAcknowledgement,
    Project,
    Prompt,
    Ranking,
    Response,
    ResponseSet,
    ResponseSetItem,
)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "k", "task_mode", "overlap", "lease_minutes", "is_active", "created_at")
    list_filter = ("task_mode", "is_active")
    search_fields = ("name",)
    raw_id_fields = ("current_guideline", "current_policy", "created_by")


@admin.register(Guideline)
class GuidelineAdmin(admin.ModelAdmin):
    """Published versions are immutable: read-only here; publish a new one instead."""

    list_display = ("project", "version", "note", "published_by", "published_at")
    list_filter = ("project",)

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return obj is None

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(GuidelineAcknowledgement)
class GuidelineAcknowledgementAdmin(admin.ModelAdmin):
    list_display = ("guideline", "user", "acknowledged_at")
    raw_id_fields = ("guideline", "user")


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("external_id", "project", "split", "created_at")
    list_filter = ("project", "split")
    search_fields = ("external_id", "text")


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ("id", "prompt", "origin", "model_version", "created_at")
    list_filter = ("origin",)
    raw_id_fields = ("prompt", "model_version")


class ResponseSetItemInline(admin.TabularInline):
    model = ResponseSetItem
    raw_id_fields = ("response",)
    extra = 0


@admin.register(ResponseSet)
class ResponseSetAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "prompt", "status", "submitted_count", "required_count")
    list_filter = ("project", "status")
    raw_id_fields = ("prompt",)
    inlines = [ResponseSetItemInline]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("id", "response_set", "labeler", "status", "leased_at", "expires_at")
    list_filter = ("status",)
    raw_id_fields = ("response_set", "labeler", "guideline")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rankings and their comparisons are the record of what labelers said: never edited by hand."""

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Ranking)
class RankingAdmin(ReadOnlyAdmin):
    list_display = ("id", "response_set", "labeler", "guideline", "time_spent_ms", "created_at")
    raw_id_fields = ("assignment", "response_set", "labeler", "guideline")


@admin.register(Comparison)
class ComparisonAdmin(ReadOnlyAdmin):
    list_display = ("id", "ranking", "response_a", "response_b", "outcome", "margin")
    list_filter = ("outcome",)
    raw_id_fields = ("ranking", "response_set", "labeler", "response_a", "response_b")
