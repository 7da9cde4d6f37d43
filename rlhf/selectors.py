"""Reads of the model registry and the runs."""

from __future__ import annotations

import dataclasses
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from annotation import rules
from annotation.models import Comparison, Project, ResponseSetItem
from config.exceptions import NotFound
from rlhf.models import Evaluation, ModelVersion, RunStatus, TrainingRun
from rlhf.records import (
    EvaluationReport,
    HumanEvalGate,
    LeaderboardRow,
    PPOGate,
    RunSummary,
    Sample,
    SideBySide,
    TagWinRate,
)
from rlhf.training.stats import bradley_terry, bradley_terry_intervals, win_rate

EVALUATION_SAMPLES = 6  # items shown side by side on an evaluation
LEADERBOARD_RESAMPLES = 200


def training_run_list(*, project: Project | None = None, kind: str | None = None) -> QuerySet[TrainingRun]:
    qs = TrainingRun.objects.select_related("output_version", "policy", "reward_model", "reference")
    if project is not None:
        qs = qs.filter(project=project)
    if kind:
        qs = qs.filter(kind=kind)
    return qs.order_by("-created_at", "-id")


def training_run_get(*, run_id: int) -> TrainingRun:
    run = training_run_list().filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"Training run {run_id} not found.")
    return run


def training_run_eta_seconds(*, run: TrainingRun) -> float | None:
    """Remaining seconds at the rate so far, for a running run."""
    if run.status != RunStatus.RUNNING or not run.started_at or not run.progress_step or not run.progress_total:
        return None
    elapsed = (timezone.now() - run.started_at).total_seconds()
    return round(elapsed / run.progress_step * (run.progress_total - run.progress_step), 1)


def model_version_get(*, version_id: int) -> ModelVersion:
    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None:
        raise NotFound(f"Model version {version_id} not found.")
    return version


def model_version_lineage(*, version: ModelVersion) -> list[dict[str, Any]]:
    """The chain of parents up to the SFT model, newest first."""
    chain = []
    current: ModelVersion | None = version
    seen = set()
    while current is not None and current.pk not in seen:
        seen.add(current.pk)
        chain.append(
            {
                "id": current.pk,
                "name": current.name,
                "kind": current.kind,
                "state": current.state,
                "run_id": current.run_id,
            }
        )
        current = current.parent
    return chain


def model_versions_compare(*, a: ModelVersion, b: ModelVersion) -> dict[str, Any]:
    """Side by side: each version's stored metrics and evaluation."""

    def view(v: ModelVersion) -> dict[str, Any]:
        return {"id": v.pk, "name": v.name, "kind": v.kind, "state": v.state, "metrics": v.metrics}

    return {"a": view(a), "b": view(b)}


def model_version_list(*, project: Project) -> QuerySet[ModelVersion]:
    """A project's models with the parent and the run that made each, newest first."""
    return ModelVersion.objects.filter(project=project).select_related("parent", "run").order_by("-created_at", "-id")


def training_runs_active(*, project: Project) -> QuerySet[TrainingRun]:
    return training_run_list(project=project).filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING])


def _sample_prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else repr(prompt)


def _evaluation_samples(run: TrainingRun | None) -> list[Sample]:
    """The held-out sample table of a PPO run: candidate and baseline answers to the same prompts,
    scored by the run's reward model; older runs keep it under ``summary['samples']``."""
    if run is None:
        return []
    summary = RunSummary.from_json(run.kind, run.summary)
    return [s for s in summary.eval_samples or summary.samples if s.prompt is not None]


def _ppo_gate(run: TrainingRun) -> PPOGate | None:
    gate = RunSummary.from_json(run.kind, run.summary).gate
    return gate if isinstance(gate, PPOGate) else None


def _policy_answers(version: ModelVersion) -> tuple[dict[str, dict[str, Any]], TrainingRun | None]:
    """A policy's stored held-out answers by prompt: from the run that made it, else from the
    newest run that evaluated a candidate against it as the baseline."""
    own = _evaluation_samples(version.run) if version.run_id else []
    if own:
        answers = {
            _sample_prompt_key(s.prompt): {"prompt": s.prompt, "response": s.response, "reward": s.reward} for s in own
        }
        return answers, version.run
    as_baseline = TrainingRun.objects.filter(policy=version, kind="ppo").exclude(summary={}).order_by("-id")
    for run in as_baseline:
        rows = [s for s in _evaluation_samples(run) if s.has_baseline]
        if rows:
            answers = {
                _sample_prompt_key(s.prompt): {
                    "prompt": s.prompt,
                    "response": s.baseline_response,
                    "reward": s.baseline_reward,
                }
                for s in rows
            }
            return answers, run
    return {}, None


def policy_versions_sample_compare(*, a: ModelVersion, b: ModelVersion) -> dict[str, Any]:
    """Two policies on the held-out prompts their runs stored, side by side: mean reward of each
    over the shared prompts and A's win rate (ties count half). Exact when one run scored both
    (one version is the other's PPO baseline); across runs only when the same reward model
    scored both, otherwise the rows are shown without a win rate."""
    for candidate, baseline, flipped in ((a, b, False), (b, a, True)):
        run = candidate.run
        if run is not None and run.policy_id == baseline.pk:
            rows = [s for s in _evaluation_samples(run) if s.has_baseline]
            if rows:
                pairs: list[tuple[Any, Any, Any, Any, Any]] = [
                    (s.prompt, s.response, s.reward, s.baseline_response, s.baseline_reward) for s in rows
                ]
                if flipped:
                    pairs = [(p, rb, sb, ra, sa) for p, ra, sa, rb, sb in pairs]
                reward_models = [run.reward_model_id] if run.reward_model_id is not None else []
                out = _sample_compare(pairs, source="one_run", runs=[run], reward_model_ids=reward_models)
                gate = _ppo_gate(run)
                held_out = (gate.candidate_reward, gate.baseline_reward) if gate is not None else (None, None)
                out["a_held_out_reward"], out["b_held_out_reward"] = held_out[::-1] if flipped else held_out
                return out
    answers_a, run_a = _policy_answers(a)
    answers_b, run_b = _policy_answers(b)
    shared = [key for key in answers_a if key in answers_b]
    pairs = [
        (
            answers_a[key]["prompt"],
            answers_a[key]["response"],
            answers_a[key]["reward"],
            answers_b[key]["response"],
            answers_b[key]["reward"],
        )
        for key in shared
    ]
    runs = [run for run in (run_a, run_b) if run is not None]
    reward_models = sorted({run.reward_model_id for run in runs if run.reward_model_id is not None})
    out = _sample_compare(pairs, source="two_runs", runs=runs, reward_model_ids=reward_models)
    out["a_held_out_reward"] = _held_out_reward(a, run_a)
    out["b_held_out_reward"] = _held_out_reward(b, run_b)
    return out


def _held_out_reward(version: ModelVersion, run: TrainingRun | None) -> float | None:
    """The mean held-out reward a run's evaluation gave ``version``, as its output or its baseline."""
    gate = _ppo_gate(run) if run is not None else None
    if gate is None or run is None:
        return None
    return gate.candidate_reward if run.pk == version.run_id else gate.baseline_reward


def _sample_compare(
    pairs: list[tuple[Any, Any, Any, Any, Any]], *, source: str, runs: list[TrainingRun], reward_model_ids: list[int]
) -> dict[str, Any]:
    rows = [
        {"prompt": p, "a_response": ra, "a_reward": sa, "b_response": rb, "b_reward": sb} for p, ra, sa, rb, sb in pairs
    ]
    scored = [
        (float(r["a_reward"]), float(r["b_reward"]))
        for r in rows
        if isinstance(r["a_reward"], int | float) and isinstance(r["b_reward"], int | float)
    ]
    comparable = bool(scored) and len(reward_model_ids) <= 1
    out: dict[str, Any] = {
        "rows": rows,
        "source": source,
        "run_ids": [run.pk for run in runs],
        "reward_model_ids": reward_model_ids,
        "comparable": comparable,
        "scored": len(scored),
        "a_mean_reward": None,
        "b_mean_reward": None,
        "win_rate": None,
    }
    if comparable:
        out["a_mean_reward"] = sum(x for x, _ in scored) / len(scored)
        out["b_mean_reward"] = sum(y for _, y in scored) / len(scored)
        out["win_rate"] = win_rate(scored)
    return out


def evaluation_list(*, project: Project) -> QuerySet[Evaluation]:
    return Evaluation.objects.filter(project=project).select_related("candidate", "baseline", "run", "gated_run")


def evaluation_get(*, evaluation_id: int) -> Evaluation:
    evaluation = (
        Evaluation.objects.select_related("candidate", "baseline", "run", "gated_run", "project")
        .filter(pk=evaluation_id)
        .first()
    )
    if evaluation is None:
        raise NotFound(f"Evaluation {evaluation_id} not found.")
    return evaluation


def evaluation_report(*, evaluation: Evaluation, now: Any = None) -> EvaluationReport:
    """The evaluation as it stands from the votes so far: a vote is one labeler's ranking of one of
    its items, scored as the share of the item's (candidate, baseline) answer pairs the candidate won
    (ties half). The stored verdict once decided; live before."""
    if not evaluation.is_open:
        stored = EvaluationReport.from_json(evaluation.verdict)
        if stored is not None:
            return stored
    candidate, baseline = evaluation.candidate_id, evaluation.baseline_id
    rows = Comparison.objects.filter(response_set__evaluation=evaluation).values_list(
        "ranking_id",
        "labeler_id",
        "response_set_id",
        "response_a__model_version_id",
        "response_b__model_version_id",
        "outcome",
    )
    per_vote: dict[int, list[float]] = {}
    vote_set: dict[int, int] = {}
    labelers: set[int] = set()
    for ranking_id, labeler_id, set_id, version_a, version_b, outcome in rows:
        if {version_a, version_b} != {candidate, baseline}:
            continue  # two answers of the same policy
        per_vote.setdefault(ranking_id, []).append(rules.pair_points(outcome, for_a=version_a == candidate))
        vote_set[ranking_id] = set_id
        labelers.add(labeler_id)
    scores = {ranking: sum(points) / len(points) for ranking, points in per_vote.items()}
    per_prompt: dict[int, list[float]] = {}
    for ranking, score in scores.items():
        per_prompt.setdefault(vote_set[ranking], []).append(score)
    now = now or timezone.now()
    gate = HumanEvalGate.decide(
        evaluation=evaluation.pk,
        candidate=evaluation.candidate.name,
        baseline=evaluation.baseline.name,
        votes=len(scores),
        labelers=len(labelers),
        points=sum(scores.values()),
        min_votes=evaluation.min_votes,
        threshold=evaluation.threshold,
        timed_out=evaluation.deadline is not None and now >= evaluation.deadline,
        timeout_hours=evaluation.timeout_hours,
        prompts_voted=len(per_prompt),
        prompt_points=sum(sum(v) / len(v) for v in per_prompt.values()),
    )
    sets = {
        rs.pk: rs
        for rs in evaluation.response_sets.select_related("prompt").order_by("id")  # type: ignore[attr-defined]
    }
    by_tag: dict[str, list[float]] = {}
    by_set: dict[int, list[float]] = {}
    for ranking, score in scores.items():
        response_set = sets[vote_set[ranking]]
        by_set.setdefault(response_set.pk, []).append(score)
        for tag in response_set.prompt.tags or []:
            by_tag.setdefault(str(tag), []).append(score)
    answers: dict[tuple[int, int], str] = {}
    for set_id, version, text in (
        ResponseSetItem.objects.filter(response_set_id__in=list(sets)[:EVALUATION_SAMPLES])
        .order_by("response_set_id", "response_id")
        .values_list("response_set_id", "response__model_version_id", "response__text")
    ):
        answers.setdefault((set_id, version), text)
    samples = [
        SideBySide(
            prompt=rs.prompt.messages or rs.prompt.text,
            candidate=answers.get((rs.pk, candidate), ""),
            baseline=answers.get((rs.pk, baseline), ""),
            votes=len(by_set.get(rs.pk, [])),
            points=sum(by_set.get(rs.pk, [])),
        )
        for rs in list(sets.values())[:EVALUATION_SAMPLES]
    ]
    return EvaluationReport(
        gate=gate,
        by_tag=[TagWinRate(tag, len(v), sum(v)) for tag, v in sorted(by_tag.items())],
        samples=samples,
    )


def leaderboard(*, project: Project, resamples: int = LEADERBOARD_RESAMPLES) -> list[LeaderboardRow]:
    """Every model version of the project that human evaluations compared, rated by Bradley-Terry
    (Elo scale, mean 1000) from all their votes: each pair of answers of two different versions that
    a labeler ranked is one vote (ties half). The 95% intervals resample whole prompts."""
    rows = Comparison.objects.filter(
        response_set__project=project,
        response_set__evaluation__isnull=False,
        response_a__model_version__isnull=False,
        response_b__model_version__isnull=False,
    ).values_list("response_set__prompt_id", "response_a__model_version_id", "response_b__model_version_id", "outcome")
    votes: list[tuple[str, str, float]] = []
    groups: list[int] = []
    for prompt_id, version_a, version_b, outcome in rows:
        if version_a == version_b:
            continue
        votes.append((str(version_a), str(version_b), rules.pair_points(outcome, for_a=True)))
        groups.append(prompt_id)
    if not votes:
        return []
    ratings = bradley_terry(votes)
    intervals = bradley_terry_intervals(votes, groups=groups, resamples=resamples) if resamples else {}
    counts: dict[str, list[float]] = {}
    for a, b, points in votes:
        counts.setdefault(a, []).append(points)
        counts.setdefault(b, []).append(1.0 - points)
    versions = {str(v.pk): v for v in ModelVersion.objects.filter(pk__in=[int(k) for k in ratings])}
    component = _components([(a, b) for a, b, _ in votes])
    board = [
        LeaderboardRow(
            version_id=int(key),
            name=versions[key].name,
            state=versions[key].state,
            rating=rating,
            ci95=intervals.get(key),
            votes=len(counts[key]),
            points=sum(counts[key]),
            group=component[key],
        )
        for key, rating in ratings.items()
    ]
    board.sort(key=lambda row: (-row.rating, row.name))
    # Groups numbered in the order their best version ranks.
    number: dict[int, int] = {}
    for row in board:
        number.setdefault(row.group, len(number) + 1)
    return [dataclasses.replace(row, group=number[row.group]) for row in board]


def _components(edges: list[tuple[str, str]]) -> dict[str, int]:
    """Each model's connected component in the graph of who was compared with whom."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in edges:
        parent[root(a)] = root(b)
    roots: dict[str, int] = {}
    return {node: roots.setdefault(root(node), len(roots)) for node in list(parent)}
