from django.conf import settings
from django.db import models
from django.utils import timezone


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


class ApiToken(models.Model):
    """A token for the API. Only the SHA-256 digest of its secret is stored (the secret is shown
    once, when issued); it ends at ``expires_at``, on revocation (the row is deleted) and when the
    user's password changes (``password_fingerprint`` no longer matches)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for, as its owner calls it.")
    prefix = models.CharField(max_length=8, help_text="The secret's first characters, to tell tokens apart.")
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the secret, in hex.")
    password_fingerprint = models.CharField(
        max_length=64, help_text="SHA-256 of the user's password hash when issued: a new password ends the token."
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="Kept to the minute, not every request.")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(expires_at__gt=models.F("created_at")), name="apitoken_expires_after_created"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"
