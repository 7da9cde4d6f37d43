from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    LABELER = "labeler", "Labeler"
    ADMIN = "admin", "Admin"
    ML_ENGINEER = "ml_engineer", "ML engineer"


class LabelerStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"


class LabelerProfile(models.Model):
    """A person's role on the platform; labelers also carry their working status."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.LABELER)
    status = models.CharField(max_length=16, choices=LabelerStatus.choices, default=LabelerStatus.ACTIVE)
    status_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(role__in=Role.values), name="labelerprofile_role_valid"),
            models.CheckConstraint(
                condition=models.Q(status__in=LabelerStatus.values), name="labelerprofile_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role})"
