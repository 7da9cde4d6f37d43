"""The audit trail: one row per decision a person or the loop made (who, what, when, why, before/after)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditAction(models.TextChoices):
    MODEL_PROMOTE = "model.promote", "Model promoted"
    MODEL_ROLLBACK = "model.rollback", "Model rolled back"
    GATE_VERDICT = "gate.verdict", "Gate verdict"
    EVALUATION_START = "evaluation.start", "Human evaluation started"
    LABELER_PAUSE = "labeler.pause", "Labeler paused"
    LABELER_RESUME = "labeler.resume", "Labeler resumed"
    ROLE_CHANGE = "user.role", "Role changed"
    QUALITY_OVERRIDE = "quality.override", "Quality override"
    REVIEW_ACCEPT = "review.accept", "Review accepted"
    GUIDELINE_PUBLISH = "guideline.publish", "Guideline published"
    GOLD_SET = "gold.set", "Gold set marked"


class AuditEntry(models.Model):
    """A decision. ``actor`` is empty when the loop decided (a gate, an automatic pause); ``target``
    names what was decided about as ``<app>.<model>:<id>`` so one table covers every kind."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150, blank=True)  # kept when the account is deleted
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    project = models.ForeignKey(
        "annotation.Project", null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_entries"
    )
    target = models.CharField(max_length=80, db_index=True)
    target_label = models.CharField(max_length=200, blank=True)
    reason = models.TextField(blank=True)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"])]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_name or 'the loop'} {self.action} {self.target}"

    @property
    def who(self) -> str:
        return self.actor_name or "the loop"
