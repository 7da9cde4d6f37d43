"""Can a model serve a role? Read from its config and tokenizer only (no weights), so that a model
that cannot be a policy or a reward model is refused when it is registered, not when a run starts.

Pure Python + transformers; no Django import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REASON_CHARS = 160  # the exception text kept in a message: its first sentence, at most this long


def model_role_problem(
    path: str, kind: str, *, needs_chat_template: bool = False, trust_remote_code: bool = False
) -> str | None:
    """Why the model at ``path`` (a local directory or a hub id) cannot serve as ``kind``
    ("policy" or "reward"), as a message that starts with "path: "; None when it can."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # OSError, ValueError, a remote-code error: all mean "cannot read it"
        return f"path: no model config could be read at '{path}' ({_reason(path, exc, 'config.json')})"
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        return f"path: no tokenizer could be read at '{path}' ({_reason(path, exc, 'tokenizer files')})"
    # transformers builds an empty tokenizer from a bare config.json rather than failing.
    if len(tokenizer.get_vocab()) <= len(tokenizer.all_special_tokens):
        return f"path: no tokenizer could be read at '{path}' (no tokenizer vocabulary there)"
    vocab_size = getattr(config.get_text_config(), "vocab_size", None)
    if isinstance(vocab_size, int) and len(tokenizer) > vocab_size:
        return (
            f"path: the tokenizer at '{path}' has {len(tokenizer)} tokens but the model's vocabulary holds "
            f"{vocab_size} (config vocab_size): they do not belong together."
        )
    model_type = getattr(config, "model_type", "") or "unknown"
    architectures = list(getattr(config, "architectures", None) or [])
    if kind == "policy":
        return _policy_problem(path, config, tokenizer, model_type, architectures, needs_chat_template)
    if kind == "reward":
        return _reward_problem(path, config, tokenizer, model_type, architectures)
    raise ValueError(f"kind: must be policy or reward, got {kind!r}")


def _policy_problem(
    path: str, config: Any, tokenizer: Any, model_type: str, architectures: list[str], needs_chat_template: bool
) -> str | None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal = (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        or any(name.endswith("ForCausalLM") for name in architectures)
        or "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    )
    if not causal:
        return (
            f"path: a policy must be a causal language model, and '{path}' is a {_described(model_type, architectures)}"
            " that AutoModelForCausalLM cannot load."
        )
    if tokenizer.eos_token is None:
        return (
            f"path: the tokenizer at '{path}' has no EOS token; a policy needs one to end its responses "
            "(set eos_token in tokenizer_config.json)."
        )
    if needs_chat_template and not getattr(tokenizer, "chat_template", None):
        return (
            f"path: the tokenizer at '{path}' has no chat template, and this project's prompts are chat messages "
            "(add chat_template.jinja or chat_template in tokenizer_config.json)."
        )
    return None


def _reward_problem(path: str, config: Any, tokenizer: Any, model_type: str, architectures: list[str]) -> str | None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    classifier = model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES or (
        "AutoModelForSequenceClassification" in (getattr(config, "auto_map", None) or {})
    )
    if not classifier:
        return (
            f"path: a reward model must load as a sequence classifier with a scalar head, and '{path}' is a "
            f"{_described(model_type, architectures)} that AutoModelForSequenceClassification cannot load."
        )
    # An encoder (BERT) has no EOS but pads; a decoder pads with its EOS when it has no pad token.
    if tokenizer.pad_token is None and tokenizer.eos_token is None:
        return (
            f"path: the tokenizer at '{path}' has neither a pad nor an EOS token; a reward model needs one "
            "to score a batch (set pad_token in tokenizer_config.json)."
        )
    return None


def _described(model_type: str, architectures: list[str]) -> str:
    names = f" ({', '.join(architectures)})" if architectures else ""
    return f"{model_type} model{names}"


def _reason(path: str, exc: Exception, wanted: str) -> str:
    """A short why: the common local cases in words, else the first sentence of the error."""
    local = Path(path).expanduser()
    if local.is_dir():
        if wanted == "config.json" and not (local / "config.json").is_file():
            return "no config.json in that directory"
    elif local.exists():
        return "not a directory"
    elif path.startswith(("/", ".", "~")):
        return "no such directory"
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    sentence = text.split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= REASON_CHARS else sentence[: REASON_CHARS - 1] + "…"


POSITION_FIELDS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


def model_positions(path: str, *, trust_remote_code: bool = False) -> int | None:
    """How many token positions the model at ``path`` holds (its config's max_position_embeddings
    or equal), or None when the config does not say (or cannot be read)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).get_text_config()
    except Exception:  # registration read it once; a model gone since fails when the run loads it
        return None
    for name in POSITION_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
