"""Projects, guidelines, prompts, responses, response sets, assignments, rankings, comparisons.

The ranking is the source of truth; comparisons are derived from it in the same transaction and
never edited. Invariants live in database constraints where a constraint can say them.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

# InstructGPT's per-response metadata (Ouyang et al. 2022, appendix B).
DEFAULT_FLAGS = [
    {"key": "fails_instruction", "label": "Fails to follow the instruction"},
    {"key": "hallucination", "label": "Makes up facts (hallucination)"},
    {"key": "inappropriate_for_customer", "label": "Inappropriate for a customer assistant"},
    {"key": "harmful", "label": "Harmful or encourages violence"},
    {"key": "sexual_content", "label": "Contains sexual content"},
    {"key": "denigrates_protected_class", "label": "Denigrates a protected class"},
    {"key": "bad_advice", "label": "Contains bad advice"},
    {"key": "expresses_opinion", "label": "Expresses a moral judgement or opinion"},
]

LIKERT_MIN = 1
LIKERT_MAX = 7


def default_flags() -> list[dict[str, str]]:
    return [dict(flag) for flag in DEFAULT_FLAGS]


class TaskMode(models.TextChoices):
    RANK = "rank", "Rank K responses (ties allowed)"
    PAIRWISE = "pairwise", "Pairwise (A / B / tie / both bad)"


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    VAL = "val", "Validation"
    TEST = "test", "Test"


class Project(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    k = models.PositiveSmallIntegerField(default=4, help_text="Responses per response set (2..9).")
    task_mode = models.CharField(max_length=16, choices=TaskMode.choices, default=TaskMode.RANK)
    overlap = models.PositiveSmallIntegerField(default=3, help_text="Distinct labelers per response set.")
    lease_minutes = models.PositiveIntegerField(default=30)
    flags = models.JSONField(default=default_flags, blank=True)
    require_likert = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    # A human evaluation collects votes: leasing looks at its items first (one statement more then).
    evaluating = models.BooleanField(default=False)
    # Quality controls.
    gold_rate = models.FloatField(default=0.0, help_text="Share of items that are gold (0..1).")
    qualification_items = models.PositiveSmallIntegerField(
        default=0, help_text="Gold items a new labeler ranks before real work (0: no qualification)."
    )
    qualification_threshold = models.FloatField(default=0.7, help_text="Gold accuracy needed to qualify.")
    reliability_threshold = models.FloatField(
        default=0.0, help_text="Labelers whose reliability falls below this are paused (0: never)."
    )
    reliability_min_labels = models.PositiveIntegerField(
        default=60, help_text="Comparisons a labeler needs before reliability can pause them."
    )
    review_kendall_w = models.FloatField(default=0.3, help_text="Sets with Kendall's W below this go to review.")
    current_guideline = models.ForeignKey(
        "annotation.Guideline", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    current_policy = models.ForeignKey(
        "rlhf.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(k__gte=2, k__lte=9), name="project_k_2_to_9"),
            models.CheckConstraint(condition=Q(overlap__gte=1), name="project_overlap_positive"),
            models.CheckConstraint(condition=Q(lease_minutes__gte=1), name="project_lease_positive"),
            models.CheckConstraint(condition=Q(task_mode__in=TaskMode.values), name="project_task_mode_valid"),
            models.CheckConstraint(condition=~Q(task_mode=TaskMode.PAIRWISE) | Q(k=2), name="project_pairwise_has_k_2"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def flag_keys(self) -> list[str]:
        return [flag["key"] for flag in self.flags]


class Guideline(models.Model):
    """One published, immutable version of a project's labeling instructions (markdown)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="guidelines")
    version = models.PositiveIntegerField()
    body = models.TextField()
    note = models.CharField(max_length=500, blank=True, help_text="What changed in this version.")
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    published_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "-version"]
        constraints = [models.UniqueConstraint(fields=["project", "version"], name="guideline_unique_version")]

    def __str__(self) -> str:
        return f"{self.project} v{self.version}"


class GuidelineAcknowledgement(models.Model):
    guideline = models.ForeignKey(Guideline, on_delete=models.CASCADE, related_name="acknowledgements")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="acknowledgements")
    acknowledged_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["guideline", "user"], name="ack_unique_user_guideline")]

    def __str__(self) -> str:
        return f"{self.user} read {self.guideline}"


class Prompt(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    external_id = models.CharField(max_length=200)
    # Plain text, or chat messages [{"role": ..., "content": ...}] ending with the user's turn.
    text = models.TextField(blank=True)
    messages = models.JSONField(null=True, blank=True)
    split = models.CharField(max_length=8, choices=Split.choices, default=Split.TRAIN)
    tags = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "external_id"], name="prompt_unique_external_id"),
            models.CheckConstraint(condition=~Q(text="") | Q(messages__isnull=False), name="prompt_has_content"),
            models.CheckConstraint(condition=Q(split__in=Split.values), name="prompt_split_valid"),
        ]

    def __str__(self) -> str:
        return self.external_id

    @property
    def display_text(self) -> str:
        if self.messages:
            return "\n\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in self.messages)
        return self.text


class ResponseOrigin(models.TextChoices):
    MODEL = "model", "Model"
    IMPORT = "import", "Import"
    HUMAN = "human", "Human"


class Response(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    text = models.TextField()
    origin = models.CharField(max_length=8, choices=ResponseOrigin.choices, default=ResponseOrigin.IMPORT)
    model_version = models.ForeignKey(
        "rlhf.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="responses"
    )
    # The exact sampling settings (temperature, top_p, max_new_tokens, seed, ...) for model output;
    # for imports, whatever the source said about where the text came from.
    sampling = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(origin__in=ResponseOrigin.values), name="response_origin_valid"),
            models.CheckConstraint(
                condition=Q(origin=ResponseOrigin.MODEL, model_version__isnull=False)
                | (~Q(origin=ResponseOrigin.MODEL) & Q(model_version__isnull=True)),
                name="response_model_origin_has_version",
            ),
        ]

    def __str__(self) -> str:
        return f"response {self.pk} ({self.origin})"


class ReviewState(models.TextChoices):
    NONE = "", "Not in review"
    NEEDS_REVIEW = "needs_review", "Needs review"
    ACCEPTED = "accepted", "Consensus accepted"
    MORE_LABELS = "more_labels", "More labels asked"


class ResponseSetStatus(models.TextChoices):
    OPEN = "open", "Open"
    COMPLETE = "complete", "Complete"
    RETIRED = "retired", "Retired"


class ResponseSet(models.Model):
    """The K responses of one prompt shown together: the unit a labeler ranks."""

    # Foreign keys whose columns lead a composite index below have no index of their own: every
    # index is written on every insert and submit, and these would only duplicate a prefix.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="response_sets", db_index=False)
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="response_sets")
    responses = models.ManyToManyField(Response, through="ResponseSetItem", related_name="response_sets")
    status = models.CharField(max_length=16, choices=ResponseSetStatus.choices, default=ResponseSetStatus.OPEN)
    # Distinct labelers that must submit; starts at the project's overlap.
    required_count = models.PositiveSmallIntegerField()
    submitted_count = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Gold: a reference ranking {"<response id>": rank}. Gold sets are mixed into queues at the
    # project's gold rate, look like any other item, and never fill up.
    is_gold = models.BooleanField(default=False)
    gold_ranks = models.JSONField(null=True, blank=True)
    review_state = models.CharField(max_length=16, choices=ReviewState.choices, default="", blank=True)
    # A set of a blind human evaluation of two policies: ranked like any other, never reward-model data.
    evaluation = models.ForeignKey(
        "rlhf.Evaluation", null=True, blank=True, on_delete=models.RESTRICT, related_name="response_sets"
    )

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["project", "status", "-submitted_count", "id"], name="responseset_queue_idx"),
            # The human evaluations' sets, leased first: a few, found without reading the whole queue.
            models.Index(
                fields=["project", "status", "-submitted_count", "id"],
                condition=Q(evaluation__isnull=False),
                name="responseset_eval_queue_idx",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(submitted_count__lte=F("required_count")), name="responseset_overlap_not_exceeded"
            ),
            models.CheckConstraint(condition=Q(required_count__gte=1), name="responseset_required_positive"),
            models.CheckConstraint(
                condition=Q(is_gold=False) | Q(gold_ranks__isnull=False), name="responseset_gold_has_ranks"
            ),
        ]

    def __str__(self) -> str:
        return f"set {self.pk} ({self.submitted_count}/{self.required_count})"


class ResponseSetItem(models.Model):
    response_set = models.ForeignKey(ResponseSet, on_delete=models.CASCADE, related_name="items")
    response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["response_set_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["response_set", "position"], name="rsitem_unique_position"),
            models.UniqueConstraint(fields=["response_set", "response"], name="rsitem_unique_response"),
        ]

    def __str__(self) -> str:
        return f"set {self.response_set_id} #{self.position}"


class AssignmentStatus(models.TextChoices):
    LEASED = "leased", "Leased"
    SUBMITTED = "submitted", "Submitted"
    SKIPPED = "skipped", "Skipped"
    EXPIRED = "expired", "Expired"


class Assignment(models.Model):
    """One labeler's lease on one response set. One row per (set, labeler), ever."""

    # No single-column indexes: (response_set, labeler) and (labeler, status) lead with these.
    response_set = models.ForeignKey(ResponseSet, on_delete=models.CASCADE, related_name="assignments", db_index=False)
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments", db_index=False
    )
    status = models.CharField(max_length=16, choices=AssignmentStatus.choices, default=AssignmentStatus.LEASED)
    # Response ids in the order this labeler sees them (randomised per assignment).
    display_order = models.JSONField()
    guideline = models.ForeignKey(Guideline, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=1000, blank=True)

    # Not a column: the set's responses in display order, when the lease that made this object
    # loaded them already (``selectors.assignment_responses`` then needs no query).
    shown_responses: list[Response] | None = None

    class Meta:
        ordering = ["id"]
        indexes = [
            # Live leases only (partial): the slots a set has taken now, and the leases to expire.
            # They stay as small as the number of labelers at work, and a submit adds nothing to them.
            models.Index(
                fields=["response_set", "expires_at"],
                condition=Q(status=AssignmentStatus.LEASED),
                name="assignment_live_slots_idx",
            ),
            models.Index(fields=["labeler", "status"], name="assignment_labeler_idx"),
            models.Index(
                fields=["expires_at"], condition=Q(status=AssignmentStatus.LEASED), name="assignment_live_expiry_idx"
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["response_set", "labeler"], name="assignment_unique_labeler_set"),
            models.CheckConstraint(condition=Q(status__in=AssignmentStatus.values), name="assignment_status_valid"),
        ]

    def __str__(self) -> str:
        return f"assignment {self.pk} ({self.status})"


class PairwiseChoice(models.TextChoices):
    A = "a", "A is better"
    B = "b", "B is better"
    TIE = "tie", "Tie"
    BOTH_BAD = "both_bad", "Both bad"


class Ranking(models.Model):
    """One labeler's submitted order over a response set: the source of truth for comparisons."""

    assignment = models.OneToOneField(Assignment, on_delete=models.PROTECT, related_name="ranking")
    # No single-column indexes: (response_set, labeler) and (labeler, project, idempotency_key) lead
    # with these; the project's would only be read when a project is deleted, which the sets' PROTECT
    # refuses first anyway.
    response_set = models.ForeignKey(ResponseSet, on_delete=models.PROTECT, related_name="rankings", db_index=False)
    # The set's project, copied: idempotency keys are unique per labeler and project, and a unique
    # constraint cannot reach through the set. Written by ``ranking_submit`` only.
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+", db_index=False)
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="rankings", db_index=False
    )
    guideline = models.ForeignKey(Guideline, null=True, blank=True, on_delete=models.PROTECT, related_name="rankings")
    # {"<response id>": rank}; dense ranks from 1 (best), equal ranks are ties.
    ranks = models.JSONField()
    display_order = models.JSONField()
    pairwise_choice = models.CharField(max_length=16, choices=PairwiseChoice.choices, blank=True)
    scores = models.JSONField(default=dict, blank=True)  # {"<response id>": 1..7}
    flags = models.JSONField(default=dict, blank=True)  # {"<response id>": ["hallucination", ...]}
    comment = models.TextField(blank=True)
    time_spent_ms = models.PositiveIntegerField(default=0)
    idempotency_key = models.CharField(max_length=100)
    submitted_late = models.BooleanField(default=False, help_text="Submitted after the lease had expired.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["labeler", "project", "idempotency_key"], name="ranking_unique_idempotency_key"
            ),
            models.UniqueConstraint(fields=["response_set", "labeler"], name="ranking_unique_labeler_set"),
        ]
        # The newest ranking of a project in one index probe: the agreement sweep asks every 30 s.
        indexes = [models.Index(fields=["project", "id"], name="ranking_project_id")]

    def __str__(self) -> str:
        return f"ranking {self.pk} of set {self.response_set_id}"


class ComparisonOutcome(models.TextChoices):
    A = "a", "A preferred"
    B = "b", "B preferred"
    TIE = "tie", "Tie"


class Comparison(models.Model):
    """One unordered pair of a ranking. ``response_a`` has the lower id; derived, never edited."""

    # No single-column indexes: (ranking, a, b) and (response_set, a, b) lead with these.
    ranking = models.ForeignKey(Ranking, on_delete=models.CASCADE, related_name="comparisons", db_index=False)
    response_set = models.ForeignKey(ResponseSet, on_delete=models.CASCADE, related_name="comparisons", db_index=False)
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    response_a = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    response_b = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    outcome = models.CharField(max_length=4, choices=ComparisonOutcome.choices)
    # Rank distance between the two (0 for a tie).
    margin = models.PositiveSmallIntegerField()
    both_bad = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["response_set", "response_a", "response_b"], name="comparison_pair_idx")]
        constraints = [
            models.UniqueConstraint(fields=["ranking", "response_a", "response_b"], name="comparison_unique_pair"),
            models.CheckConstraint(condition=Q(response_a__lt=F("response_b")), name="comparison_a_lt_b"),
            models.CheckConstraint(
                condition=(Q(outcome=ComparisonOutcome.TIE) & Q(margin=0))
                | (~Q(outcome=ComparisonOutcome.TIE) & Q(margin__gte=1)),
                name="comparison_margin_matches_outcome",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.response_a_id} vs {self.response_b_id}: {self.outcome}"

    @property
    def is_tie(self) -> bool:
        return self.outcome == ComparisonOutcome.TIE

    @property
    def preferred_id(self) -> int | None:
        return {"a": self.response_a_id, "b": self.response_b_id}.get(self.outcome)


class ImportJobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ImportJob(models.Model):
    """A large import run by a worker: the uploaded file waits on disk, the outcome is kept here."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    fmt = models.CharField(max_length=8)
    file_name = models.CharField(max_length=255, blank=True)
    path = models.CharField(max_length=1000)
    size = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=ImportJobStatus.choices, default=ImportJobStatus.QUEUED)
    rows_checked = models.PositiveIntegerField(default=0)
    summary = models.JSONField(default=dict, blank=True)
    detail = models.TextField(blank=True)
    errors = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"import {self.pk} of project {self.project_id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (ImportJobStatus.SUCCEEDED, ImportJobStatus.FAILED)
