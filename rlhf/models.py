from django.db import models


class ModelKind(models.TextChoices):
    POLICY = "policy", "Policy"
    REWARD = "reward", "Reward model"


class ModelState(models.TextChoices):
    CANDIDATE = "candidate", "Candidate"
    PROMOTED = "promoted", "Promoted"
    ARCHIVED = "archived", "Archived"


class ModelVersion(models.Model):
    """A policy or reward model: where its weights are and where it came from."""

    project = models.ForeignKey(
        "annotation.Project", null=True, blank=True, on_delete=models.CASCADE, related_name="model_versions"
    )
    kind = models.CharField(max_length=16, choices=ModelKind.choices)
    name = models.CharField(max_length=200)
    state = models.CharField(max_length=16, choices=ModelState.choices, default=ModelState.CANDIDATE)
    # A local directory (under ARTIFACTS_ROOT for models we trained) or a hub id.
    path = models.CharField(max_length=1000)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    metrics = models.JSONField(default=dict, blank=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "kind", "name"], name="modelversion_unique_name"),
            models.CheckConstraint(condition=models.Q(kind__in=ModelKind.values), name="modelversion_kind_valid"),
            models.CheckConstraint(condition=models.Q(state__in=ModelState.values), name="modelversion_state_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"
