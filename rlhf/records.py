"""Typed, versioned records of the JSON the loop stores: a run's summary, a model version's metrics,
and the gate verdicts in both. Plain Python (no Django): the services write them, the pages and the
API read them, and nothing else interprets the stored dicts.

Each gate decides and explains in one object: its inputs, the test, the figures, the verdict and
the reason in words. ``from_json`` reads every stored shape, including rows written before records
had a version (``version`` missing), so old runs render as they did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RECORD_VERSION = 1


def percent(value: Any) -> str:
    """A share as ``68.0%``; a dash when there is no number."""
    return f"{value * 100:.1f}%" if _is_number(value) else "—"


def number(value: Any, digits: int = 3) -> str:
    """A figure with ``digits`` decimals; a dash when there is no number."""
    return f"{value:.{digits}f}" if _is_number(value) else "—"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_number(value: Any) -> float | None:
    """A stored figure as a float; None when it is not a number."""
    return float(value) if _is_number(value) else None


_float = as_number


def prompt_text(prompt: Any) -> str:
    """A stored prompt, text or chat messages, as plain text."""
    if isinstance(prompt, list):
        return "\n".join(
            f"{m.get('role', 'user')}: {m.get('content', '')}" if isinstance(m, dict) else str(m) for m in prompt
        )
    return "" if prompt is None else str(prompt)


def last_value(series: Any) -> float | None:
    """The last value of a ``[[step, value], ...]`` series, or a plain number as it is."""
    if isinstance(series, list) and series:
        item = series[-1]
        return _float(item[-1] if isinstance(item, list | tuple) else item)
    return _float(series)


@dataclass(frozen=True)
class GateCheck:
    """One line of a verdict: ``passed`` None is a figure shown for context, not a condition."""

    name: str
    passed: bool | None
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "text": self.text}


@dataclass(frozen=True)
class RewardGate:
    """A new reward model passes when its held-out accuracy is at least ``min_accuracy`` and above the
    promoted reward model's on the same held-out pairs (when there is one)."""

    new_accuracy: float | None
    min_accuracy: float
    promoted_accuracy: float | None = None
    promoted_version: int | None = None
    human_agreement: float | None = None  # the ceiling, shown for context
    passed: bool | None = None  # None: an old row that stored no verdict
    version: int = RECORD_VERSION
    gate = "reward"

    @classmethod
    def decide(
        cls,
        *,
        new_accuracy: float | None,
        min_accuracy: float,
        promoted_accuracy: float | None = None,
        promoted_version: int | None = None,
        human_agreement: float | None = None,
    ) -> RewardGate:
        new = new_accuracy or 0.0
        passed = new >= min_accuracy and new > (promoted_accuracy if promoted_accuracy is not None else -1.0)
        return cls(new_accuracy, min_accuracy, promoted_accuracy, promoted_version, human_agreement, passed)

    @property
    def checks(self) -> list[GateCheck]:
        new, out = self.new_accuracy, []
        if new is not None:
            ok = new >= self.min_accuracy
            out.append(
                GateCheck(
                    "min_accuracy",
                    ok,
                    f"Held-out accuracy {percent(new)} {'≥' if ok else '<'} the minimum {percent(self.min_accuracy)}.",
                )
            )
            if self.promoted_accuracy is not None:
                ok = new > self.promoted_accuracy
                out.append(
                    GateCheck(
                        "beats_promoted",
                        ok,
                        f"The promoted reward model (version {self.promoted_version or '?'}) scores "
                        f"{percent(self.promoted_accuracy)} on the same pairs: {'beaten' if ok else 'not beaten'}.",
                    )
                )
            else:
                out.append(GateCheck("beats_promoted", True, "No promoted reward model to beat."))
        if self.human_agreement is not None:
            out.append(
                GateCheck(
                    "human_agreement",
                    None,
                    f"Human agreement on the held-out pairs: {percent(self.human_agreement)} (the ceiling).",
                )
            )
        return out

    @property
    def reason(self) -> str:
        return _reason(self.passed, self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "gate": self.gate,
            "new_accuracy": self.new_accuracy,
            "min_accuracy": self.min_accuracy,
            "promoted_accuracy": self.promoted_accuracy,
            "promoted_version": self.promoted_version,
            "human_agreement": self.human_agreement,
            "passed": self.passed,
            "reason": self.reason,
            "checks": [c.to_json() for c in self.checks],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, human_agreement: float | None = None) -> RewardGate:
        """Any stored shape; before version 1 the human agreement was only in the run's metrics."""
        return cls(
            new_accuracy=_float(data.get("new_accuracy")),
            min_accuracy=_float(data.get("min_accuracy")) or 0.0,
            promoted_accuracy=_float(data.get("promoted_accuracy")),
            promoted_version=data.get("promoted_version"),
            human_agreement=_float(data.get("human_agreement", human_agreement)),
            passed=data.get("passed"),
            version=int(data.get("version", 0)),
        )


@dataclass(frozen=True)
class PPOGate:
    """A PPO policy passes when its mean KL to the reference is at most ``max_kl`` and, with
    ``require_improvement`` (the loop setting ppo_require_improvement), its held-out reward is above
    the policy it started from on the same prompts."""

    candidate_reward: float | None
    baseline_reward: float | None
    kl: float | None
    max_kl: float | None
    require_improvement: bool
    prompts: int | None = None
    passed: bool | None = None  # None: an old row that stored no verdict
    version: int = RECORD_VERSION
    gate = "ppo"

    @classmethod
    def decide(
        cls,
        *,
        candidate_reward: float,
        baseline_reward: float,
        kl: float | None,
        max_kl: float,
        require_improvement: bool,
        prompts: int | None = None,
    ) -> PPOGate:
        improved = candidate_reward > baseline_reward or not require_improvement
        passed = improved and (kl is None or kl <= max_kl)
        return cls(candidate_reward, baseline_reward, kl, max_kl, require_improvement, prompts, passed)

    @property
    def checks(self) -> list[GateCheck]:
        out = []
        cand, base = self.candidate_reward, self.baseline_reward
        if cand is not None and base is not None:
            better = cand > base
            text = (
                f"Held-out reward {number(cand)} against {number(base)} for the policy it started from "
                f"({'better' if better else 'not better'}; {self.prompts if self.prompts is not None else '?'} prompts)"
            )
            if self.require_improvement:
                out.append(GateCheck("improvement", better, f"{text}."))
            else:
                out.append(GateCheck("improvement", None, f"{text}; not required (ppo_require_improvement is off)."))
        if self.kl is not None and self.max_kl is not None:
            ok = self.kl <= self.max_kl
            sign = "≤" if ok else ">"
            text = f"KL to the reference {number(self.kl)} {sign} the limit {number(self.max_kl)}."
            out.append(GateCheck("max_kl", ok, text))
        return out

    @property
    def reason(self) -> str:
        return _reason(self.passed, self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "gate": self.gate,
            "candidate_reward": self.candidate_reward,
            "baseline_reward": self.baseline_reward,
            "kl": self.kl,
            "max_kl": self.max_kl,
            "require_improvement": self.require_improvement,
            "prompts": self.prompts,
            "passed": self.passed,
            "reason": self.reason,
            "checks": [c.to_json() for c in self.checks],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PPOGate:
        """Any stored shape. Before version 1 the setting was not stored: a verdict that passed with a
        policy no better than its start (KL within the limit) was made with it off."""
        cand, base = _float(data.get("candidate_reward")), _float(data.get("baseline_reward"))
        passed = data.get("passed")
        require = data.get("require_improvement")
        if require is None:
            require = not (passed and cand is not None and base is not None and cand <= base)
        return cls(
            candidate_reward=cand,
            baseline_reward=base,
            kl=_float(data.get("kl")),
            max_kl=_float(data.get("max_kl")),
            require_improvement=bool(require),
            prompts=data.get("prompts"),
            passed=passed,
            version=int(data.get("version", 0)),
        )


Gate = RewardGate | PPOGate


def _reason(passed: bool | None, checks: list[GateCheck]) -> str:
    deciding = [c.text for c in checks if c.passed is not None] or ["no figures to decide on."]
    verdict = "Passed: " if passed else "Not decided: " if passed is None else "Did not pass: "
    return verdict + " ".join(deciding)


def gate_from_json(kind: str, data: Any, *, human_agreement: float | None = None) -> Gate | None:
    """The gate stored under ``evaluation`` for a run (or model) of ``kind``; None when there is none."""
    if not isinstance(data, dict) or not data:
        return None
    if kind == "reward":
        return RewardGate.from_json(data, human_agreement=human_agreement)
    if kind in ("ppo", "policy"):
        return PPOGate.from_json(data)
    return None


@dataclass(frozen=True)
class Sample:
    """One row of a sample table: a prompt, the answer and its reward; with the baseline's when the
    table compares two policies."""

    prompt: Any  # text, or a list of chat messages
    response: str
    reward: float | None = None
    baseline_response: str | None = None
    baseline_reward: float | None = None

    @property
    def prompt_text(self) -> str:
        return prompt_text(self.prompt)

    @property
    def has_baseline(self) -> bool:
        return self.baseline_response is not None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sample:
        baseline = data.get("baseline_response")
        return cls(
            prompt=data.get("prompt"),
            response=str(data.get("response", "")),
            reward=_float(data.get("reward")),
            baseline_response=str(baseline) if "baseline_response" in data else None,
            baseline_reward=_float(data.get("baseline_reward")),
        )


def _samples(data: Any) -> list[Sample]:
    return [Sample.from_json(s) for s in data if isinstance(s, dict)] if isinstance(data, list) else []


@dataclass(frozen=True)
class RunSummary:
    """What a finished run stored: its final metrics, its gate (reward and PPO runs), the held-out
    evaluation samples and figures (PPO), the training samples, the seed; for a generation run its
    counts."""

    kind: str
    metrics: dict[str, float] = field(default_factory=dict)
    gate: Gate | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)  # the gate's figures and the evaluation's own
    eval_samples: list[Sample] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    seed: int | None = None
    version: int = RECORD_VERSION

    @property
    def scalar_metrics(self) -> list[tuple[str, float]]:
        return sorted(self.metrics.items())

    @classmethod
    def from_json(cls, kind: str, data: Any) -> RunSummary:
        data = data if isinstance(data, dict) else {}
        raw_metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
        metrics = {k: float(v) for k, v in raw_metrics.items() if _is_number(v)}
        evaluation = data.get("evaluation") if isinstance(data.get("evaluation"), dict) else {}
        return cls(
            kind=kind,
            metrics=metrics,
            gate=gate_from_json(kind, evaluation, human_agreement=metrics.get("reward/human_agreement")),
            evaluation={k: v for k, v in evaluation.items() if k != "samples"},
            eval_samples=_samples(evaluation.get("samples")),
            samples=_samples(data.get("samples")),
            seed=data.get("seed"),
            version=int(data.get("version", 0)),
        )


@dataclass(frozen=True)
class ModelMetrics:
    """The figures stored on a model version when its run made it, with the run's gate."""

    kind: str
    figures: dict[str, float] = field(default_factory=dict)  # as stored: counts stay ints
    gate: Gate | None = None
    version: int = RECORD_VERSION

    @property
    def passed(self) -> bool | None:
        return self.gate.passed if self.gate is not None else None

    @property
    def accuracy(self) -> float | None:
        """A reward model's held-out accuracy: its gate's, else its training metric."""
        if isinstance(self.gate, RewardGate) and self.gate.new_accuracy is not None:
            return self.gate.new_accuracy
        return self.figures.get("reward/accuracy")

    @property
    def kl(self) -> float | None:
        """A policy's KL to the reference: its gate's, else its last training figure."""
        if isinstance(self.gate, PPOGate) and self.gate.kl is not None:
            return self.gate.kl
        return self.figures.get("ppo/kl")

    @classmethod
    def from_json(cls, kind: str, data: Any) -> ModelMetrics:
        data = data if isinstance(data, dict) else {}
        figures = {k: v for k, v in data.items() if k != "version" and _is_number(v)}
        return cls(
            kind=kind,
            figures=figures,
            gate=gate_from_json(kind, data.get("evaluation"), human_agreement=figures.get("reward/human_agreement")),
            version=int(data.get("version", 0)),
        )
