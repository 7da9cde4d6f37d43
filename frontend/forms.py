"""Forms of the admin pages. They check the shape of the input; the services own the rules."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import models

from annotation import rules
from annotation.models import TaskMode
from labelers.models import Role
from rlhf.models import LoopSettings
from rlhf.services.loop_settings import loop_setting_bounds


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    k = forms.IntegerField(label="K (responses per set)", min_value=rules.K_MIN, max_value=rules.K_MAX, initial=4)
    task_mode = forms.ChoiceField(label="Task mode", choices=TaskMode.choices, initial=TaskMode.RANK)
    overlap = forms.IntegerField(
        min_value=rules.OVERLAP_MIN,
        max_value=rules.OVERLAP_MAX,
        initial=3,
        help_text="Distinct labelers who must submit each response set.",
    )
    lease_minutes = forms.IntegerField(
        label="Lease (minutes)",
        min_value=rules.LEASE_MINUTES_MIN,
        max_value=rules.LEASE_MINUTES_MAX,
        initial=30,
        help_text="How long a labeler holds an item.",
    )
    flags = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "class": "mono"}),
        help_text="One flag per line: key | label (for example: hallucination | Makes up facts).",
    )
    require_likert = forms.BooleanField(label="Require a Likert score (1-7) for every response", required=False)
    is_active = forms.BooleanField(label="Active (labelers can take items)", required=False, initial=True)
    gold_rate = forms.FloatField(
        required=False,
        label="Gold rate",
        min_value=rules.SHARE_MIN,
        max_value=rules.SHARE_MAX,
        initial=0.0,
        help_text="Share of items that are gold (0..1).",
    )
    qualification_items = forms.IntegerField(
        required=False,
        label="Qualification items",
        min_value=rules.QUALIFICATION_ITEMS_MIN,
        max_value=rules.QUALIFICATION_ITEMS_MAX,
        initial=0,
        help_text="Gold items a new labeler ranks before real work (0: none).",
    )
    qualification_threshold = forms.FloatField(
        required=False,
        label="Qualification threshold",
        min_value=rules.SHARE_MIN,
        max_value=rules.SHARE_MAX,
        initial=0.7,
        help_text="Gold accuracy needed.",
    )
    reliability_threshold = forms.FloatField(
        required=False,
        label="Pause below reliability",
        min_value=rules.SHARE_MIN,
        max_value=rules.SHARE_MAX,
        initial=0.0,
        help_text="Labelers whose reliability falls below this are paused (0: never).",
    )
    reliability_min_labels = forms.IntegerField(
        required=False,
        label="Comparisons before a pause",
        min_value=rules.RELIABILITY_MIN_LABELS_MIN,
        initial=60,
        help_text="Reliability needs this many first.",
    )
    review_kendall_w = forms.FloatField(
        required=False,
        label="Review below Kendall's W",
        min_value=rules.SHARE_MIN,
        max_value=rules.SHARE_MAX,
        initial=0.3,
        help_text="Sets whose labelers agree less than this go to review.",
    )
    guideline = forms.CharField(
        label="Guideline (published as version 1)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="Markdown. Later versions are published from the guideline page.",
    )

    def clean_flags(self) -> list[dict[str, str]]:
        flags = []
        for number, raw in enumerate(self.cleaned_data["flags"].splitlines(), start=1):
            if not raw.strip():
                continue
            key, _, label = raw.partition("|")
            key = key.strip()
            if not rules.flag_key_valid(key):
                raise forms.ValidationError(
                    f"Line {number}: the key '{key}' may hold only lower-case letters, digits and underscores "
                    f"(at most {rules.FLAG_KEY_MAX})."
                )
            flags.append({"key": key, "label": label.strip() or rules.flag_label_default(key)})
        return flags

    @staticmethod
    def flags_text(flags: list[dict[str, Any]]) -> str:
        return "\n".join(f"{flag['key']} | {flag.get('label', '')}" for flag in flags)


class ImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL (one prompt per line) or CSV; the format follows the file name.")

    def fmt(self) -> str:
        name = self.cleaned_data["file"].name.lower()
        return "csv" if name.endswith(".csv") else "jsonl"


class GuidelineForm(forms.Form):
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 22, "class": "mono"}))
    note = forms.CharField(max_length=500, required=False, help_text="What changed in this version; labelers see it.")


class LabelerCreateForm(forms.Form):
    username = forms.RegexField(r"^[\w.@+-]{1,150}$", max_length=150)
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.LABELER)
    password = forms.CharField(
        required=False,
        min_length=8,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to invite: you get a link where they set their own password.",
    )


class LabelerUpdateForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices, required=False)
    status = forms.ChoiceField(choices=[("active", "Active"), ("paused", "Paused")], required=False)
    status_reason = forms.CharField(max_length=500, required=False)


def _model_help(name: str) -> str:
    """The loop setting's help text, written once on the model field."""
    field = LoopSettings._meta.get_field(name)
    assert isinstance(field, models.Field), name
    return str(field.help_text)


class LoopSettingsForm(forms.Form):
    auto_chain = forms.BooleanField(
        label="Chain the steps automatically",
        required=False,
        help_text="A reward run that passes is promoted and starts PPO; a PPO policy that passes is promoted and "
        "writes the next batch.",
    )
    retrain_min_comparisons = forms.IntegerField(
        label="Retrain after (new comparisons)",
        **loop_setting_bounds("retrain_min_comparisons"),
        help_text="The schedule starts a reward run once this many comparisons arrived since the last one.",
    )
    reward_min_accuracy = forms.FloatField(
        label="Reward model: minimum held-out accuracy",
        **loop_setting_bounds("reward_min_accuracy"),
        help_text="A share between 0 and 1 (0.55 is 55%).",
    )
    ppo_max_kl = forms.FloatField(
        label="PPO: largest KL to the reference",
        **loop_setting_bounds("ppo_max_kl"),
        help_text="Mean KL (nats per response) a policy may have and still be promoted.",
    )
    generate_prompts = forms.IntegerField(
        label="Prompts per generated batch",
        help_text="Each gets K responses.",
        **loop_setting_bounds("generate_prompts"),
    )
    max_response_tokens = forms.IntegerField(
        label="Longest response (tokens)",
        **loop_setting_bounds("max_response_tokens"),
        help_text="The same limit for the batches labelers rank and for PPO's rollouts, so the reward model "
        "scores answers of the length it was trained on.",
    )
    sft_data_path = forms.CharField(
        label="SFT data for PPO-ptx (JSONL file on the server)",
        required=False,
        max_length=1000,
        help_text='An absolute path; one {"prompt", "completion"}, {"prompt", "response"} or {"messages": [...]} '
        "object per line. Needed when ppo_config sets ptx_coef above 0; empty for none.",
    )
    reward_margin = forms.FloatField(
        label="Reward model: margin below the promoted one",
        **loop_setting_bounds("reward_margin"),
        help_text=_model_help("reward_margin"),
    )
    human_eval = forms.BooleanField(
        label="Human evaluation before a PPO policy is promoted", required=False, help_text=_model_help("human_eval")
    )
    human_eval_prompts = forms.IntegerField(
        label="Prompts per human evaluation",
        **loop_setting_bounds("human_eval_prompts"),
        help_text=_model_help("human_eval_prompts"),
    )
    human_eval_min_votes = forms.IntegerField(
        label="Votes before it decides",
        **loop_setting_bounds("human_eval_min_votes"),
        help_text=_model_help("human_eval_min_votes"),
    )
    human_eval_threshold = forms.FloatField(
        label="Win rate to beat (lower bound of the 95% interval)",
        **loop_setting_bounds("human_eval_threshold"),
        help_text=_model_help("human_eval_threshold"),
    )
    human_eval_timeout_hours = forms.IntegerField(
        label="Waits for votes (hours)",
        **loop_setting_bounds("human_eval_timeout_hours"),
        help_text=_model_help("human_eval_timeout_hours"),
    )

    # How the page groups the settings: (legend, field names), in the order shown.
    GROUPS = (
        ("The loop", ("auto_chain", "retrain_min_comparisons", "generate_prompts", "max_response_tokens")),
        ("Reward model gate", ("reward_min_accuracy", "reward_margin")),
        ("PPO gate", ("ppo_max_kl", "sft_data_path")),
        (
            "Human evaluation",
            (
                "human_eval",
                "human_eval_prompts",
                "human_eval_min_votes",
                "human_eval_threshold",
                "human_eval_timeout_hours",
            ),
        ),
    )

    def groups(self) -> list[tuple[str, list[forms.BoundField]]]:
        """The bound fields by group, for the page's fieldsets."""
        return [(legend, [self[name] for name in names]) for legend, names in self.GROUPS]


class EvaluationStartForm(forms.Form):
    """Which two policies a human evaluation compares; the choices are the project's policies."""

    candidate = forms.TypedChoiceField(coerce=int, label="Candidate policy", help_text="The policy on trial.")
    baseline = forms.TypedChoiceField(
        coerce=int, label="Baseline policy", help_text="What it must beat; the promoted policy unless you pick another."
    )

    def __init__(self, *args: Any, policies: list[tuple[int, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("candidate", "baseline"):
            self.fields[name].choices = policies  # type: ignore[attr-defined]
