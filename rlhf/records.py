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

from rlhf.training.stats import mcnemar_one_sided, wilson_interval

RECORD_VERSION = 1


def percent(value: Any) -> str:
    """A share as ``68.0%``; a dash when there is no number."""
    return f"{value * 100:.1f}%" if _is_number(value) else "—"


def number(value: Any, digits: int = 3) -> str:
    """A figure with ``digits`` decimals; a dash when there is no number."""
    return f"{value:.{digits}f}" if _is_number(value) else "—"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(value: Any) -> int | None:
    return int(value) if _is_number(value) else None


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


REWARD_ALPHA = 0.05  # the significance level of the reward gate's paired test


@dataclass(frozen=True)
class RewardGate:
    """A new reward model passes when its held-out accuracy is at least ``min_accuracy`` and, when a
    reward model is promoted, the promoted one (scored again on the same held-out pairs) does not
    beat it: the new one is refused only when it trails by more than ``margin`` and the paired test
    says so (exact one-sided McNemar on the pairs the two models decide differently, p < 0.05).
    The new model is trained on more comparisons; a strict ``>`` near the labelers' ceiling is a
    coin flip that keeps a stale model."""

    new_accuracy: float | None
    min_accuracy: float
    promoted_accuracy: float | None = None
    promoted_version: int | None = None
    human_agreement: float | None = None  # the ceiling, shown for context
    passed: bool | None = None  # None: an old row that stored no verdict
    margin: float | None = None  # None: a row from before the paired test (a strict comparison)
    pairs: int | None = None  # the held-out pairs both models were scored on
    new_only: int | None = None  # pairs only the new model got right
    old_only: int | None = None  # pairs only the promoted model got right
    promoted_name: str | None = None
    version: int = RECORD_VERSION
    gate = "reward"

    @classmethod
    def decide(
        cls,
        *,
        new_accuracy: float | None,
        min_accuracy: float,
        margin: float,
        promoted_correct: list[bool] | None = None,
        new_correct: list[bool] | None = None,
        promoted_version: int | None = None,
        promoted_name: str | None = None,
        human_agreement: float | None = None,
    ) -> RewardGate:
        """``new_correct`` / ``promoted_correct``: per held-out pair, whether each model ranks it as the
        labeler did (the same pairs in the same order); with them the new accuracy is read off
        ``new_correct``."""
        promoted_accuracy = pairs = new_only = old_only = None
        if promoted_correct is not None and new_correct:
            if len(promoted_correct) != len(new_correct):
                raise ValueError("promoted_correct: not the same pairs as new_correct")
            pairs = len(new_correct)
            new_accuracy = sum(new_correct) / pairs
            promoted_accuracy = sum(promoted_correct) / pairs
            new_only = sum(1 for n, o in zip(new_correct, promoted_correct, strict=True) if n and not o)
            old_only = sum(1 for n, o in zip(new_correct, promoted_correct, strict=True) if o and not n)
        new = new_accuracy or 0.0
        passed = new >= min_accuracy and not _promoted_beats(new, promoted_accuracy, margin, new_only, old_only)
        return cls(
            new_accuracy,
            min_accuracy,
            promoted_accuracy,
            promoted_version if promoted_accuracy is not None else None,
            human_agreement,
            passed,
            margin,
            pairs,
            new_only,
            old_only,
            promoted_name if promoted_accuracy is not None else None,
        )

    @property
    def p_value(self) -> float | None:
        """The paired test's one-sided p-value that the promoted model is the better one."""
        if self.new_only is None or self.old_only is None:
            return None
        return mcnemar_one_sided(self.new_only, self.old_only)

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
            if self.promoted_accuracy is not None and self.margin is not None and self.p_value is not None:
                beaten = _promoted_beats(new, self.promoted_accuracy, self.margin, self.new_only, self.old_only)
                who = f"'{self.promoted_name}'" if self.promoted_name else f"version {self.promoted_version or '?'}"
                out.append(
                    GateCheck(
                        "promoted_not_better",
                        not beaten,
                        f"The promoted reward model ({who}) scores {percent(self.promoted_accuracy)} on the same "
                        f"{self.pairs} pairs ({self.new_only} right only for the new one, {self.old_only} only for "
                        f"the promoted one; one-sided McNemar p = {self.p_value:.3f}): "
                        + (
                            (
                                f"it leads by more than the margin {percent(self.margin)} and is right on every "
                                f"pair where they differ, too few for the test to reach p < {REWARD_ALPHA:g}, so "
                                "the new one is refused."
                                if self.p_value >= REWARD_ALPHA
                                else f"it leads by more than the margin {percent(self.margin)} and significantly, "
                                "so the new one is refused."
                            )
                            if beaten
                            else f"not better by more than the margin {percent(self.margin)} with p < {REWARD_ALPHA:g}."
                        ),
                    )
                )
            elif self.promoted_accuracy is not None:  # a row from before the paired test
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
                out.append(GateCheck("promoted_not_better", True, "No promoted reward model to beat."))
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
            "promoted_name": self.promoted_name,
            "human_agreement": self.human_agreement,
            "margin": self.margin,
            "pairs": self.pairs,
            "new_only": self.new_only,
            "old_only": self.old_only,
            "p_value": self.p_value,
            **_verdict_json(self),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, human_agreement: float | None = None) -> RewardGate:
        """Any stored shape; before version 1 the human agreement was only in the run's metrics, and
        before the paired test (no ``margin``) the promoted model had to be beaten strictly."""
        return cls(
            new_accuracy=_float(data.get("new_accuracy")),
            min_accuracy=_float(data.get("min_accuracy")) or 0.0,
            promoted_accuracy=_float(data.get("promoted_accuracy")),
            promoted_version=data.get("promoted_version"),
            human_agreement=_float(data.get("human_agreement", human_agreement)),
            passed=data.get("passed"),
            margin=_float(data.get("margin")),
            pairs=_int(data.get("pairs")),
            new_only=_int(data.get("new_only")),
            old_only=_int(data.get("old_only")),
            promoted_name=data.get("promoted_name"),
            version=int(data.get("version", 0)),
        )


def _promoted_beats(
    new: float, promoted: float | None, margin: float, new_only: int | None, old_only: int | None
) -> bool:
    """The reward gate's refusal: the promoted model leads by more than the margin, significantly;
    or, where the two differ on too few pairs for the test ever to reach significance, on every one."""
    if promoted is None or new_only is None or old_only is None:
        return False
    if promoted - new <= margin:
        return False
    return mcnemar_one_sided(new_only, old_only) < REWARD_ALPHA or (_untestable(new_only, old_only) and new_only == 0)


def _untestable(new_only: int, old_only: int) -> bool:
    """Too few discordant pairs for the one-sided test to reject even if all went one way."""
    return mcnemar_one_sided(0, new_only + old_only) >= REWARD_ALPHA


@dataclass(frozen=True)
class PPOGate:
    """A PPO policy passes when its mean KL to the reference is at most ``max_kl`` and, with
    ``require_improvement`` (the loop setting ppo_require_improvement), its held-out reward is above
    the policy it started from on the same prompts, as scored by the judge: the newest promoted
    reward model that neither policy nor any policy they descend from was optimised against
    (``registry.independent_judge``) when there is one, else the one it was optimised against,
    which the verdict then says."""

    candidate_reward: float | None
    baseline_reward: float | None
    kl: float | None
    max_kl: float | None
    require_improvement: bool
    prompts: int | None = None
    passed: bool | None = None  # None: an old row that stored no verdict
    judge: str | None = None  # the reward model that scored both policies (None: an old row)
    judge_independent: bool | None = None  # whether PPO did not optimise against the judge
    optimised_candidate_reward: float | None = None  # the optimised reward model's scores, for context
    optimised_baseline_reward: float | None = None
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
        judge: str | None = None,
        judge_independent: bool | None = None,
        optimised_candidate_reward: float | None = None,
        optimised_baseline_reward: float | None = None,
    ) -> PPOGate:
        improved = candidate_reward > baseline_reward or not require_improvement
        passed = improved and (kl is None or kl <= max_kl)
        return cls(
            candidate_reward,
            baseline_reward,
            kl,
            max_kl,
            require_improvement,
            prompts,
            passed,
            judge,
            judge_independent,
            optimised_candidate_reward,
            optimised_baseline_reward,
        )

    @property
    def judge_text(self) -> str:
        if self.judge is None:
            return ""
        if self.judge_independent:
            return f"judged by reward model '{self.judge}', which PPO did not optimise against"
        return (
            f"judged by reward model '{self.judge}', the one PPO optimised against (no promoted reward model "
            "that neither policy was optimised against)"
        )

    @property
    def checks(self) -> list[GateCheck]:
        out = []
        cand, base = self.candidate_reward, self.baseline_reward
        if cand is not None and base is not None:
            better = cand > base
            judged = f"; {self.judge_text}" if self.judge_text else ""
            text = (
                f"Held-out reward {number(cand)} against {number(base)} for the policy it started from "
                f"({'better' if better else 'not better'}; {self.prompts if self.prompts is not None else '?'} "
                f"prompts{judged})"
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
        oc, ob = self.optimised_candidate_reward, self.optimised_baseline_reward
        if self.judge_independent and oc is not None and ob is not None:
            out.append(
                GateCheck(
                    "optimised_reward",
                    None,
                    f"The reward model PPO optimised scores {number(oc)} against {number(ob)} (not deciding: a "
                    "policy can exploit the model it was trained against).",
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
            "candidate_reward": self.candidate_reward,
            "baseline_reward": self.baseline_reward,
            "kl": self.kl,
            "max_kl": self.max_kl,
            "require_improvement": self.require_improvement,
            "prompts": self.prompts,
            "judge": self.judge,
            "judge_independent": self.judge_independent,
            "optimised_candidate_reward": self.optimised_candidate_reward,
            "optimised_baseline_reward": self.optimised_baseline_reward,
            **_verdict_json(self),
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
            judge=data.get("judge"),
            judge_independent=data.get("judge_independent"),
            optimised_candidate_reward=_float(data.get("optimised_candidate_reward")),
            optimised_baseline_reward=_float(data.get("optimised_baseline_reward")),
            version=int(data.get("version", 0)),
        )


@dataclass(frozen=True)
class HumanEvalGate:
    """A candidate policy passes a human evaluation when, with at least ``min_votes`` votes, the lower
    end of the 95% Wilson interval of its win rate over the baseline (ties counted half) is above
    ``threshold``. With fewer votes it waits (``passed`` None) until the deadline, where it ends as
    not passed. A vote is one labeler's ranking of one evaluation item: the share of the item's
    (candidate answer, baseline answer) pairs the candidate won. Votes on one prompt are not
    independent (the same two answers), so the unit is the prompt: the win rate is the mean over
    the prompts voted on of each prompt's mean vote, and the interval counts prompts, not votes
    (Wilson on scores in [0, 1] is conservative: their variance is at most p(1 - p))."""

    evaluation: int | None
    candidate: str
    baseline: str
    votes: int
    labelers: int
    points: float  # the votes' summed scores: win rate = points / votes
    min_votes: int
    threshold: float
    timed_out: bool = False
    timeout_hours: int | None = None
    passed: bool | None = None  # None: waiting for votes
    prompts_voted: int = 0  # the prompts with at least one vote: the interval's sample size
    prompt_points: float = 0.0  # the sum over those prompts of each one's mean vote
    version: int = RECORD_VERSION
    gate = "human"

    @classmethod
    def decide(
        cls,
        *,
        evaluation: int | None,
        candidate: str,
        baseline: str,
        votes: int,
        labelers: int,
        points: float,
        min_votes: int,
        threshold: float,
        timed_out: bool,
        timeout_hours: int | None = None,
        prompts_voted: int,
        prompt_points: float,
    ) -> HumanEvalGate:
        passed: bool | None
        if votes >= min_votes and votes > 0 and prompts_voted > 0:
            passed = wilson_interval(prompt_points, prompts_voted)[0] > threshold
        else:
            passed = False if timed_out else None
        return cls(
            evaluation,
            candidate,
            baseline,
            votes,
            labelers,
            points,
            min_votes,
            threshold,
            timed_out,
            timeout_hours,
            passed,
            prompts_voted,
            prompt_points,
        )

    @property
    def win_rate(self) -> float | None:
        return self.prompt_points / self.prompts_voted if self.prompts_voted else None

    @property
    def ci95(self) -> tuple[float, float] | None:
        return wilson_interval(self.prompt_points, self.prompts_voted) if self.prompts_voted else None

    @property
    def enough_votes(self) -> bool:
        return self.votes >= self.min_votes and self.votes > 0

    @property
    def checks(self) -> list[GateCheck]:
        who = f"{self.labelers} labeler{'s' if self.labelers != 1 else ''}"
        if self.enough_votes:
            out = [GateCheck("votes", True, f"{self.votes} votes from {who} (at least {self.min_votes} needed).")]
        elif self.timed_out:
            hours = f" after {self.timeout_hours} hours" if self.timeout_hours is not None else ""
            out = [
                GateCheck(
                    "votes", False, f"Timed out{hours} with {self.votes} of the {self.min_votes} votes needed ({who})."
                )
            ]
        else:
            out = [GateCheck("votes", None, f"{self.votes} of the {self.min_votes} votes needed so far ({who}).")]
        if self.votes and self.ci95 is not None:
            low, high = self.ci95
            above = low > self.threshold
            on = f"{self.prompts_voted} prompt{'s' if self.prompts_voted != 1 else ''}"
            text = (
                f"Win rate of '{self.candidate}' over '{self.baseline}' {percent(self.win_rate)} "
                f"(95% CI {percent(low)} – {percent(high)} over {on}, ties count half): the lower bound is "
                f"{'above' if above else 'not above'} {percent(self.threshold)}."
            )
            out.append(GateCheck("win_rate", above if self.enough_votes else None, text))
        return out

    @property
    def reason(self) -> str:
        if self.passed is None:
            return "Waiting for votes: " + " ".join(c.text for c in self.checks)
        return _reason(self.passed, self.checks)

    def to_json(self) -> dict[str, Any]:
        ci = self.ci95
        return {
            "version": self.version,
            "gate": self.gate,
            "evaluation": self.evaluation,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "votes": self.votes,
            "labelers": self.labelers,
            "points": self.points,
            "prompts_voted": self.prompts_voted,
            "prompt_points": self.prompt_points,
            "win_rate": self.win_rate,
            "ci95": list(ci) if ci is not None else None,
            "min_votes": self.min_votes,
            "threshold": self.threshold,
            "timed_out": self.timed_out,
            "timeout_hours": self.timeout_hours,
            **_verdict_json(self),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HumanEvalGate:
        return cls(
            evaluation=_int(data.get("evaluation")),
            candidate=str(data.get("candidate", "")),
            baseline=str(data.get("baseline", "")),
            votes=_int(data.get("votes")) or 0,
            labelers=_int(data.get("labelers")) or 0,
            points=_float(data.get("points")) or 0.0,
            min_votes=_int(data.get("min_votes")) or 0,
            threshold=_float(data.get("threshold")) or 0.0,
            timed_out=bool(data.get("timed_out")),
            timeout_hours=_int(data.get("timeout_hours")),
            passed=data.get("passed"),
            # Rows before prompts were the unit counted each vote as one.
            prompts_voted=_int(data.get("prompts_voted", data.get("votes"))) or 0,
            prompt_points=_float(data.get("prompt_points", data.get("points"))) or 0.0,
            version=int(data.get("version", 0)),
        )


Gate = RewardGate | PPOGate | HumanEvalGate


def _verdict_json(gate: Gate) -> dict[str, Any]:
    """The part every gate stores alike: the verdict, its reason in words and each check."""
    return {"passed": gate.passed, "reason": gate.reason, "checks": [c.to_json() for c in gate.checks]}


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


@dataclass(frozen=True)
class TagWinRate:
    """The candidate's win rate on the evaluation items whose prompt has one tag."""

    tag: str
    votes: int
    points: float

    @property
    def win_rate(self) -> float | None:
        return self.points / self.votes if self.votes else None

    @property
    def ci95(self) -> tuple[float, float] | None:
        return wilson_interval(self.points, self.votes) if self.votes else None

    def to_json(self) -> dict[str, Any]:
        ci = self.ci95
        return {
            "tag": self.tag,
            "votes": self.votes,
            "points": self.points,
            "win_rate": self.win_rate,
            "ci95": list(ci) if ci is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TagWinRate:
        return cls(str(data.get("tag", "")), _int(data.get("votes")) or 0, _float(data.get("points")) or 0.0)


@dataclass(frozen=True)
class SideBySide:
    """One evaluation item shown with both policies' first answers and how the votes went."""

    prompt: Any  # text, or a list of chat messages
    candidate: str
    baseline: str
    votes: int
    points: float  # the candidate's summed vote scores on this item

    @property
    def prompt_text(self) -> str:
        return prompt_text(self.prompt)

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "votes": self.votes,
            "points": self.points,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SideBySide:
        return cls(
            data.get("prompt"),
            str(data.get("candidate", "")),
            str(data.get("baseline", "")),
            _int(data.get("votes")) or 0,
            _float(data.get("points")) or 0.0,
        )


@dataclass(frozen=True)
class EvaluationReport:
    """A human evaluation as it stands (live while votes arrive; stored when it is decided): the
    gate with its figures, the win rate per prompt tag, and a few items side by side."""

    gate: HumanEvalGate
    by_tag: list[TagWinRate] = field(default_factory=list)
    samples: list[SideBySide] = field(default_factory=list)
    version: int = RECORD_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "gate": self.gate.to_json(),
            "by_tag": [t.to_json() for t in self.by_tag],
            "samples": [s.to_json() for s in self.samples],
        }

    @classmethod
    def from_json(cls, data: Any) -> EvaluationReport | None:
        if not isinstance(data, dict) or not isinstance(data.get("gate"), dict):
            return None
        return cls(
            gate=HumanEvalGate.from_json(data["gate"]),
            by_tag=[TagWinRate.from_json(t) for t in data.get("by_tag") or [] if isinstance(t, dict)],
            samples=[SideBySide.from_json(t) for t in data.get("samples") or [] if isinstance(t, dict)],
            version=int(data.get("version", 0)),
        )


@dataclass(frozen=True)
class LeaderboardRow:
    """One evaluated model version: its Bradley-Terry rating (Elo scale) from every evaluation vote
    of the project, the 95% bootstrap interval, its votes, its win rate over all opponents and its
    group: versions no chain of votes joins have ratings that say nothing of each other."""

    version_id: int
    name: str
    state: str
    rating: float
    ci95: tuple[float, float] | None
    votes: int
    points: float
    group: int = 1  # versions joined by votes, directly or through others: ratings compare within one

    @property
    def win_rate(self) -> float | None:
        return self.points / self.votes if self.votes else None

    def to_json(self) -> dict[str, Any]:
        return {
            "version_id": self.version_id,
            "group": self.group,
            "name": self.name,
            "state": self.state,
            "rating": self.rating,
            "ci95_low": self.ci95[0] if self.ci95 else None,
            "ci95_high": self.ci95[1] if self.ci95 else None,
            "votes": self.votes,
            "win_rate": self.win_rate,
        }
