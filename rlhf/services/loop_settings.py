"""How a project's loop turns (its settings) and the run configs checked against them."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from annotation.models import Project
from annotation.services.text import unstorable_at
from config.exceptions import ApplicationError
from rlhf.data import sft_rows_from_jsonl
from rlhf.models import MAX_RESPONSE_TOKENS, MIN_RESPONSE_TOKENS, LoopSettings
from rlhf.training.config import GenerationConfig, PPOConfig, RewardModelConfig

PTX_WITHOUT_SFT = (
    "PPO-ptx (ptx_coef > 0) mixes the SFT loss into each update, and this project has no SFT rows; "
    'set the loop setting sft_data_path to a JSONL file of {"prompt", "response"} rows on the server, '
    "or set ptx_coef to 0."
)


def loop_settings_get(*, project: Project) -> LoopSettings:
    settings_row, _ = LoopSettings.objects.get_or_create(project=project)
    return settings_row


# Model fields a run config may not set: the models of a run are its registered versions.
SERVER_MODEL_FIELDS = {
    "model_name_or_path": "a run's models are the project's registered model versions; register the model "
    "and promote it",
    "trust_remote_code": "whether a model may run its own code is set on its registered model version by "
    "an admin, never in a run config",
}


def run_config_validated(kind: str, base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A run's config: ``overrides`` over ``base``, checked by the stage's config class. A refusal
    names its key (``config.<key>``) as the error's field."""
    if found := unstorable_at(overrides, "config"):
        raise ApplicationError(f"{found[1]}.", code="invalid_config", field=found[0])
    model = overrides.get("model")
    for name, why in SERVER_MODEL_FIELDS.items():
        if isinstance(model, dict) and name in model:
            raise ApplicationError(f"{why}.", code="invalid_config", field=f"config.model.{name}")
    classes: dict[str, Any] = {
        "generate": GenerationConfig,
        "evaluate": GenerationConfig,
        "reward": RewardModelConfig,
        "ppo": PPOConfig,
    }
    config_class = classes[kind]
    merged = deep_merge(base, overrides)
    try:
        config = config_class.from_dict(merged)
        config.validate()
    except (ValueError, TypeError) as exc:
        # The config classes say "<field>: <what is wrong>" (plain Python, no error type of ours).
        key, sep, what = str(exc).partition(": ")
        if not sep or " " in key:
            raise ApplicationError(f"config.{exc}", code="invalid_config") from exc
        raise ApplicationError(what, code="invalid_config", field=f"config.{key}") from exc
    return config.to_dict()


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# Each setting's type and bounds (None: no bound), the one statement of them: the service checks
# them and the settings form takes its limits from here (loop_setting_bounds).
LOOP_SETTING_FIELDS: dict[str, tuple[type, Any, Any]] = {
    "auto_chain": (bool, None, None),
    "retrain_min_comparisons": (int, 1, 10_000_000),
    "reward_min_accuracy": (float, 0.0, 1.0),
    "ppo_max_kl": (float, 0.0, None),
    "ppo_require_improvement": (bool, None, None),
    "generate_prompts": (int, 1, 100_000),
    "reward_margin": (float, 0.0, 1.0),
    "human_eval": (bool, None, None),
    "human_eval_prompts": (int, 1, 10_000),
    "human_eval_min_votes": (int, 1, 1_000_000),
    "human_eval_threshold": (float, 0.0, 1.0),
    "human_eval_timeout_hours": (int, 1, 24 * 365),
    "max_response_tokens": (int, MIN_RESPONSE_TOKENS, MAX_RESPONSE_TOKENS),
    "sft_data_path": (str, None, None),
    "reward_config": (dict, None, None),
    "ppo_config": (dict, None, None),
    "generation_config": (dict, None, None),
}


def loop_setting_bounds(name: str) -> dict[str, Any]:
    """A numeric setting's bounds as form-field arguments (``min_value``, ``max_value``)."""
    _, low, high = LOOP_SETTING_FIELDS[name]
    return {key: value for key, value in (("min_value", low), ("max_value", high)) if value is not None}


# The response length is one loop setting, not a key of two config overrides that could disagree.
LENGTH_KEYS = {"generation_config": "max_new_tokens", "ppo_config": "response_length"}


def _refused(setting: str, message: str, code: str) -> ApplicationError:
    """A loop setting refused: the whole message, and the setting it is about as data (``errors``)."""
    return ApplicationError(message, code=code, errors=[{"field": setting, "message": message}])


@transaction.atomic
def loop_settings_update(*, project: Project, **fields: Any) -> LoopSettings:
    """Change how the project's loop turns; every field is checked and named when wrong."""
    loop = LoopSettings.objects.select_for_update().get(pk=loop_settings_get(project=project).pk)
    for name, value in fields.items():
        if name not in LOOP_SETTING_FIELDS:
            raise _refused(name, f"{name}: unknown loop setting.", "invalid")
        kind, low, high = LOOP_SETTING_FIELDS[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise _refused(name, f"{name}: must be {kind.__name__}, got {value!r}.", "invalid")
        if low is not None and value < low:
            raise _refused(name, f"{name}: must be at least {low}, got {value}.", "invalid")
        if high is not None and value > high:
            raise _refused(name, f"{name}: must be at most {high}, got {value}.", "invalid")
        if name == "sft_data_path":
            value = str(value).strip()
            if value and value != loop.sft_data_path:
                try:
                    sft_rows_from_jsonl(value)
                except ValueError as exc:
                    raise _refused(name, f"sft_data_path: {exc}.", "invalid") from exc
        if name in LENGTH_KEYS and LENGTH_KEYS[name] in value:
            raise _refused(
                name,
                f"{name}.{LENGTH_KEYS[name]}: the response length is the loop setting max_response_tokens "
                "(one length for generation and PPO).",
                "invalid_config",
            )
        setattr(loop, name, value)
    for name, run_kind in (("reward_config", "reward"), ("ppo_config", "ppo"), ("generation_config", "generate")):
        if name in fields:
            base = {"model": {"model_name_or_path": "settings-check"}} if run_kind != "ppo" else {}
            try:
                run_config_validated(run_kind, base, fields[name])
            except ApplicationError as exc:
                raise _refused(name, f"{name}.{exc.message.removeprefix('config.')}", "invalid_config") from exc
    ptx = (loop.ppo_config or {}).get("ptx_coef", 0)
    if ("ppo_config" in fields or "sft_data_path" in fields) and ptx > 0 and not loop.sft_data_path:
        raise _refused("ppo_config", f"ppo_config.ptx_coef: {PTX_WITHOUT_SFT}", "invalid_config")
    loop.save()
    return loop
