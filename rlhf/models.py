from django.conf import settings
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
    # The SFT model: the KL reference of PPO runs.
    is_reference = models.BooleanField(default=False)
    # Whether loading this model may run code shipped with it (transformers' trust_remote_code).
    # Set by an admin (the `models register --trust-remote-code` command, the Django admin); a run
    # config cannot switch it on.
    trust_remote_code = models.BooleanField(default=False)
    run = models.ForeignKey("rlhf.TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    data_snapshot = models.JSONField(default=dict, blank=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "kind", "name"], name="modelversion_unique_name"),
            models.UniqueConstraint(
                fields=["project", "kind"],
                condition=models.Q(state="promoted"),
                name="modelversion_one_promoted_per_kind",
            ),
            models.CheckConstraint(condition=models.Q(kind__in=ModelKind.values), name="modelversion_kind_valid"),
            models.CheckConstraint(condition=models.Q(state__in=ModelState.values), name="modelversion_state_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


class RunKind(models.TextChoices):
    GENERATE = "generate", "Generate responses"
    REWARD = "reward", "Train reward model"
    PPO = "ppo", "PPO"
    EVALUATE = "evaluate", "Write answers for a human evaluation"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class RunTrigger(models.TextChoices):
    MANUAL = "manual", "Started by hand"
    SCHEDULE = "schedule", "Started by the schedule"
    CHAIN = "chain", "Started by the previous step"


FINISHED_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
MIN_RESPONSE_TOKENS, MAX_RESPONSE_TOKENS = 1, 4096


class TrainingRun(models.Model):
    """One generation, reward-model or PPO job: its config, progress, metrics and output."""

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="training_runs")
    kind = models.CharField(max_length=16, choices=RunKind.choices)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    trigger = models.CharField(max_length=16, choices=RunTrigger.choices, default=RunTrigger.MANUAL)
    config = models.JSONField(default=dict)
    # Inputs: the models it started from.
    policy = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reference = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reward_model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    output_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="produced_by"
    )
    # The exact data: comparison ids (hash + count + newest id) or prompt ids.
    data_snapshot = models.JSONField(default=dict, blank=True)
    progress_step = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)  # {"ppo/kl": [[step, value], ...]}
    summary = models.JSONField(default=dict, blank=True)  # final metrics, evaluation, samples
    log_tail = models.TextField(blank=True)
    error = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Attempts a stopping worker handed back (a deploy): not lost workers (TRAINING_MAX_ATTEMPTS).
    handbacks = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "kind", "status"], name="trainingrun_lookup_idx")]
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=RunKind.values), name="trainingrun_kind_valid"),
            models.CheckConstraint(condition=models.Q(status__in=RunStatus.values), name="trainingrun_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES


class LoopSettings(models.Model):
    """How a project's loop turns: when to retrain, what to promote, whether steps chain."""

    project = models.OneToOneField("annotation.Project", on_delete=models.CASCADE, related_name="loop_settings")
    auto_chain = models.BooleanField(default=True, help_text="Reward run -> promotion -> PPO -> promotion -> generate.")
    retrain_min_comparisons = models.PositiveIntegerField(
        default=500, help_text="New comparisons since the last reward model that start a reward run."
    )
    reward_min_accuracy = models.FloatField(default=0.55, help_text="Held-out accuracy a reward model needs.")
    ppo_max_kl = models.FloatField(default=10.0, help_text="Largest mean KL to the reference a policy may have.")
    ppo_require_improvement = models.BooleanField(
        default=True, help_text="Promote a PPO policy only if it beats the promoted one on held-out reward."
    )
    generate_prompts = models.PositiveIntegerField(default=16, help_text="Prompts per generation batch.")
    reward_margin = models.FloatField(
        default=0.02,
        help_text="How far below the promoted reward model's held-out accuracy a new one may score and still "
        "replace it; refused only when it is also significantly worse on the same pairs (McNemar, p < 0.05).",
    )
    human_eval = models.BooleanField(
        default=False,
        help_text="Promote a PPO policy only after labelers prefer it to the promoted one in a blind evaluation.",
    )
    human_eval_prompts = models.PositiveIntegerField(default=32, help_text="Held-out prompts per human evaluation.")
    human_eval_min_votes = models.PositiveIntegerField(
        default=30, help_text="Votes (one labeler's ranking of one evaluation item) before a human evaluation decides."
    )
    human_eval_threshold = models.FloatField(
        default=0.5, help_text="The lower bound of the candidate's win rate (95% Wilson) must be above this."
    )
    human_eval_timeout_hours = models.PositiveIntegerField(
        default=72, help_text="Hours a human evaluation waits for its votes before it ends as not promoted."
    )
    reward_config = models.JSONField(default=dict, blank=True, help_text="Overrides of the reward-model config.")
    ppo_config = models.JSONField(default=dict, blank=True, help_text="Overrides of the PPO config.")
    generation_config = models.JSONField(default=dict, blank=True, help_text="Overrides of the generation config.")
    # One length for both: a reward model trained on 64-token answers scores 32-token rollouts badly.
    max_response_tokens = models.PositiveIntegerField(
        default=64,
        help_text="Most tokens per response, in the batches labelers rank and in PPO rollouts alike (1 to 4096).",
    )
    sft_data_path = models.CharField(
        max_length=1000,
        blank=True,
        help_text='JSONL file on the server of {"prompt", "completion"}, {"prompt", "response"} or {"messages"} rows: '
        "the SFT data PPO-ptx mixes into each update (ptx_coef > 0).",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(max_response_tokens__gte=MIN_RESPONSE_TOKENS)
                & models.Q(max_response_tokens__lte=MAX_RESPONSE_TOKENS),
                name="loopsettings_max_response_tokens_range",
            )
        ]

    def __str__(self) -> str:
        return f"loop settings of {self.project}"


class EvaluationStatus(models.TextChoices):
    GENERATING = "generating", "Writing the answers"
    COLLECTING = "collecting", "Collecting votes"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Did not pass"
    TIMED_OUT = "timed_out", "Timed out"
    CANCELLED = "cancelled", "Cancelled"


EVALUATION_OPEN = (EvaluationStatus.GENERATING, EvaluationStatus.COLLECTING)


class Evaluation(models.Model):
    """A blind human comparison of a candidate policy with a baseline policy: both answer the same
    held-out prompts, each prompt becomes a response set (half the answers from each, in a random
    order, the models hidden) that labelers rank like any other item. Evaluation sets never train a
    reward model. With ``gated_run`` (a PPO run) the candidate's promotion waits on the verdict."""

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="evaluations")
    candidate = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    baseline = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=EvaluationStatus.choices, default=EvaluationStatus.GENERATING)
    # The run that writes the answers, and the PPO run whose promotion waits on this evaluation.
    run = models.OneToOneField(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluation")
    gated_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="human_evaluations"
    )
    prompts = models.PositiveIntegerField(default=0)
    min_votes = models.PositiveIntegerField()
    threshold = models.FloatField()
    timeout_hours = models.PositiveIntegerField()
    deadline = models.DateTimeField(null=True, blank=True)  # set when the answers are written
    verdict = models.JSONField(default=dict, blank=True)  # the HumanEvalGate record, when decided
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=EvaluationStatus.values), name="evaluation_status_valid"
            ),
            models.CheckConstraint(condition=~models.Q(candidate=models.F("baseline")), name="evaluation_two_models"),
        ]

    def __str__(self) -> str:
        return f"evaluation {self.pk} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in EVALUATION_OPEN
