"""The stored agreement report, each set's consensus and each labeler's standing on a project.

These tables were created by the annotation and labelers apps and keep their names: the models
moved here without a change to the database (see migrations/0001_initial.py).
"""

from django.conf import settings
from django.db import models

# Written into a labeler's status reason by the automatic pause; an override lifts only such a pause.
AUTO_PAUSE_PREFIX = "Automatic:"


class AgreementReport(models.Model):
    """A stored agreement report; pages and the API read the newest one and say how fresh it is."""

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="agreement_reports")
    computed_at = models.DateTimeField(auto_now_add=True)
    # The newest ranking the report saw: a newer ranking makes the report stale.
    last_ranking_id = models.BigIntegerField(default=0)
    seconds = models.FloatField(default=0.0)
    data = models.JSONField()

    class Meta:
        db_table = "annotation_agreementreport"
        ordering = ["-computed_at", "-id"]
        indexes = [models.Index(fields=["project", "-computed_at"], name="agreementreport_latest_idx")]

    def __str__(self) -> str:
        return f"agreement of {self.project} at {self.computed_at:%Y-%m-%d %H:%M}"


class ConsensusSource(models.TextChoices):
    MODEL = "model", "Bradley-Terry over the labelers' comparisons"
    REVIEW = "review", "Accepted by an admin in review"
    GOLD = "gold", "The gold reference"


class ResponseSetConsensus(models.Model):
    """The agreed order of one response set and how sure we are of it."""

    response_set = models.OneToOneField("annotation.ResponseSet", on_delete=models.CASCADE, related_name="consensus")
    ranks = models.JSONField()  # {"<response id>": dense rank}
    scores = models.JSONField(default=dict)  # {"<response id>": Bradley-Terry strength (log scale)}
    confidence = models.FloatField(help_text="Share of the set's labels that agree with this order.")
    source = models.CharField(max_length=8, choices=ConsensusSource.choices, default=ConsensusSource.MODEL)
    accepted_ranking = models.ForeignKey(
        "annotation.Ranking", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "annotation_responsesetconsensus"

    def __str__(self) -> str:
        return f"consensus of set {self.response_set_id} ({self.source}, {self.confidence:.2f})"


class QualificationState(models.TextChoices):
    NOT_REQUIRED = "not_required", "Not required"
    PENDING = "pending", "Ranking qualification items"
    QUALIFIED = "qualified", "Qualified"
    FAILED = "failed", "Did not qualify"


class LabelerQuality(models.Model):
    """One labeler's standing on one project: qualification, gold accuracy, reliability, biases."""

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="labeler_quality")
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quality")
    qualification = models.CharField(
        max_length=16, choices=QualificationState.choices, default=QualificationState.NOT_REQUIRED
    )
    gold_items = models.PositiveIntegerField(default=0)
    gold_pairs = models.PositiveIntegerField(default=0)
    gold_pairs_agreed = models.PositiveIntegerField(default=0)
    reliability = models.FloatField(null=True, blank=True, help_text="One-coin Dawid-Skene skill (0..1).")
    comparisons = models.PositiveIntegerField(default=0)
    agreement_with_consensus = models.FloatField(null=True, blank=True)
    position_bias = models.FloatField(
        null=True, blank=True, help_text="Share of decided pairs won by the response shown first (0.5: none)."
    )
    fast_items = models.PositiveIntegerField(default=0)
    intransitive_cycles = models.PositiveIntegerField(default=0)
    median_time_ms = models.PositiveIntegerField(null=True, blank=True)
    # An admin's word beats the automatic pause.
    override = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "labelers_labelerquality"
        constraints = [models.UniqueConstraint(fields=["project", "labeler"], name="labelerquality_unique")]

    def __str__(self) -> str:
        return f"{self.labeler} on {self.project}"

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_pairs_agreed / self.gold_pairs if self.gold_pairs else None
