"""Plain rows in and plain results out: the boundary with the Django side."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

Message = dict[str, str]  # {"role": ..., "content": ...}
PromptInput = str | list[Message]


class ProgressCallback(Protocol):
    """on_progress(step, total, metrics): metrics use namespaced keys (ppo/kl, reward/loss)."""

    def __call__(self, step: int, total: int, metrics: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class PromptRow:
    """One prompt: plain text or chat messages, with tags."""

    id: str
    text: str | None = None
    messages: list[Message] | None = None
    tags: tuple[str, ...] = ()

    @property
    def content(self) -> PromptInput:
        """The text, or the messages when there is no text."""
        if self.messages:
            return self.messages
        return self.text or ""


@dataclass(frozen=True)
class GeneratedResponse:
    """One sampled response with the exact settings that produced it (the Response origin)."""

    text: str
    settings: dict[str, Any]
    num_tokens: int
    finished: bool  # True when the model emitted EOS before max_new_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class ComparisonRow:
    """One pair from a ranking: `chosen` was ranked above `rejected` (or tied with it)."""

    prompt: PromptInput
    chosen: str
    rejected: str
    group_id: str  # the ranking it came from: its pairs stay in one batch
    margin: float = 0.0
    is_tie: bool = False
    weight: float = 1.0  # e.g. labeler reliability
    tag: str | None = None
    split: Literal["train", "val"] = "train"
    human_agreement: float | None = None  # share of other labelers who ordered this pair alike


@dataclass
class RewardResult:
    """What train_reward_model hands back."""

    model_path: str
    metrics: dict[str, Any]
    seed: int


@dataclass
class PPOResult:
    """What run_ppo hands back."""

    model_path: str
    metrics: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
