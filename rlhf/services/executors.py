"""What a run does, by kind: write responses (generate), train a reward model, run PPO. Each executor
fills in the run's data snapshot, summary and output version; ``training_run_execute`` ends the run."""

from __future__ import annotations

import dataclasses
import random
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q

from annotation.models import Project, Prompt, Response, ResponseOrigin, ResponseSet, ResponseSetItem
from annotation.services import response_sets_build, response_sets_create
from rlhf.data import comparison_rows, evaluation_prompts, prompt_rows, sft_rows_for, training_prompts
from rlhf.models import Evaluation, EvaluationStatus, ModelKind, ModelVersion, TrainingRun
from rlhf.records import RECORD_VERSION, PPOGate, RewardGate, last_value
from rlhf.services.evaluations import evaluation_answers_written
from rlhf.services.loop_settings import PTX_WITHOUT_SFT, loop_settings_get
from rlhf.services.registry import independent_judge, promoted_version
from rlhf.services.runs import Progress, attempt_publish, run_artifact_dir, run_log
from rlhf.training.config import GenerationConfig, PPOConfig, RewardModelConfig
from rlhf.training.launch import Launcher, launch_ppo, launch_reward_model

EVAL_SAMPLES = 4  # responses per held-out prompt when a PPO policy is compared with the promoted one


def training_launcher() -> Launcher:
    """How this worker starts training: in its own process or as a multi-process job (settings)."""
    return Launcher(
        mode=settings.TRAINING_LAUNCHER,
        num_processes=settings.TRAINING_NUM_PROCESSES,
        accelerate_config=settings.TRAINING_ACCELERATE_CONFIG,
        num_machines=settings.TRAINING_NUM_MACHINES,
        machine_rank=settings.TRAINING_MACHINE_RANK,
        main_process_ip=settings.TRAINING_MAIN_PROCESS_IP,
        main_process_port=settings.TRAINING_MAIN_PROCESS_PORT,
    )


def execute_generate(run: TrainingRun, progress: Progress) -> None:
    """K responses from the run's policy for the next prompts, grouped into response sets."""
    from rlhf.training import generate_responses  # torch and transformers: on first use

    loop = loop_settings_get(project=run.project)
    assert run.policy is not None
    prompts = generation_batch(project=run.project, policy=run.policy, limit=loop.generate_prompts)
    if not prompts:
        raise ValueError("prompts: every training prompt already has responses from this policy")
    run.data_snapshot = {"prompt_ids": [p.pk for p in prompts]}
    config = GenerationConfig.from_dict(run.config)
    progress(0, len(prompts), {})
    groups = generate_responses(config, prompt_rows(prompts=prompts), k=run.project.k)
    with transaction.atomic():
        responses = [
            Response(
                prompt=prompt,
                text=generated.text,
                origin=ResponseOrigin.MODEL,
                model_version=run.policy,
                sampling={**generated.settings, "num_tokens": generated.num_tokens, "finished": generated.finished},
            )
            for prompt, group in zip(prompts, groups, strict=True)
            for generated in group
        ]
        Response.objects.bulk_create(responses)
        sets = response_sets_build(project=run.project, prompt_ids=[p.pk for p in prompts])
    progress(len(prompts), len(prompts), {"generate/responses": len(responses), "generate/response_sets": sets})
    finished = sum(1 for group in groups for g in group if g.finished)
    run.summary = {
        "responses": len(responses),
        "response_sets": sets,
        "finished_share": finished / max(len(responses), 1),
        "samples": [
            {"prompt": p.text or p.messages, "response": g[0].text}
            for p, g in list(zip(prompts, groups, strict=True))[:8]
        ],
    }


def execute_evaluate(run: TrainingRun, progress: Progress) -> None:
    """The answers of a human evaluation: the candidate (the run's policy) and the baseline (the
    run's reference) answer the same held-out prompts with the same settings and seed; each prompt's
    K answers (half from each, the candidate's one more when K is odd) become one response set of
    the evaluation, which labelers rank blind. Done once: a retry after the answers exist does nothing."""
    from rlhf.training import generate_responses  # torch and transformers: on first use

    evaluation = Evaluation.objects.select_related("candidate", "baseline").get(run=run)
    if evaluation.status != EvaluationStatus.GENERATING:
        _evaluate_summary(run, evaluation)
        return
    loop = loop_settings_get(project=run.project)
    prompts = evaluation_prompts(project=run.project, limit=loop.human_eval_prompts)
    if not prompts:
        raise ValueError("prompts: the project has no held-out prompts (split test or val) to evaluate on")
    k = run.project.k
    per_model = {evaluation.candidate: (k + 1) // 2, evaluation.baseline: k // 2}
    config = GenerationConfig.from_dict(run.config)
    rows = prompt_rows(prompts=prompts)
    progress(0, len(per_model), {})
    answers: dict[ModelVersion, list[Any]] = {}
    for step, (version, count) in enumerate(per_model.items(), start=1):
        model = dataclasses.replace(
            config.model, model_name_or_path=version.path, trust_remote_code=version.trust_remote_code
        )
        answers[version] = generate_responses(dataclasses.replace(config, model=model), rows, k=count)
        progress(step, len(per_model), {})
    with transaction.atomic():
        # Two attempts may have generated at once (a redelivery): the first to get here writes.
        if Evaluation.objects.select_for_update().get(pk=evaluation.pk).status != EvaluationStatus.GENERATING:
            _evaluate_summary(run, evaluation)
            return
        groups: list[tuple[int, list[Response]]] = []
        for index, prompt in enumerate(prompts):
            group = [
                Response(
                    prompt=prompt,
                    text=generated.text,
                    origin=ResponseOrigin.MODEL,
                    model_version=version,
                    sampling={
                        **generated.settings,
                        "num_tokens": generated.num_tokens,
                        "finished": generated.finished,
                        "evaluation": evaluation.pk,
                    },
                )
                for version, by_prompt in answers.items()
                for generated in by_prompt[index]
            ]
            # Ids follow creation order: without this the candidate's answers would have the lower ids.
            random.shuffle(group)
            groups.append((prompt.pk, group))
        Response.objects.bulk_create([r for _, group in groups for r in group])
        response_sets_create(
            project=run.project,
            groups=[(prompt_id, [r.pk for r in group]) for prompt_id, group in groups],
            evaluation_id=evaluation.pk,
        )
        evaluation_answers_written(evaluation=evaluation, prompts=len(prompts))
    run.data_snapshot = {"prompt_ids": [p.pk for p in prompts], "evaluation": evaluation.pk}
    _evaluate_summary(run, evaluation)


def _evaluate_summary(run: TrainingRun, evaluation: Evaluation) -> None:
    """What the evaluate run left: the evaluation's items and answers, as stored."""
    sets = ResponseSet.objects.filter(evaluation=evaluation)
    run.summary = {
        "evaluation_id": evaluation.pk,
        "responses": ResponseSetItem.objects.filter(response_set__in=sets).count(),
        "response_sets": sets.count(),
        "candidate": evaluation.candidate.name,
        "baseline": evaluation.baseline.name,
    }


def generation_batch(*, project: Project, policy: ModelVersion, limit: int) -> list[Prompt]:
    """The next prompts to write responses for: training prompts this policy has not answered yet,
    those with the fewest response sets first."""
    answered = Response.objects.filter(prompt=OuterRef("pk"), model_version=policy).exclude(
        response_sets__evaluation__isnull=False
    )
    return list(
        Prompt.objects.filter(project=project)
        .exclude(Exists(answered))
        .annotate(n_sets=Count("response_sets", filter=Q(response_sets__evaluation__isnull=True)))
        .order_by("n_sets", "id")[:limit]
    )


def execute_reward(run: TrainingRun, progress: Progress) -> None:
    """A reward model trained on every comparison so far, its gate decided on the held-out pairs."""
    from rlhf.training import evaluate_reward_model  # torch and transformers: on first use

    loop = loop_settings_get(project=run.project)
    config = RewardModelConfig.from_dict(run.config)
    rows, snapshot = comparison_rows(
        project=run.project, include_ties=config.include_ties, weight_by_reliability=config.weight_by_reliability
    )
    run.data_snapshot = snapshot
    TrainingRun.objects.filter(pk=run.pk).update(data_snapshot=snapshot)
    run_log(run, f"{snapshot['train_rows']} training and {snapshot['val_rows']} held-out comparisons")
    root = run_artifact_dir(run)
    work, final = root / "work", root / "model"
    if work.exists():
        shutil.rmtree(work)  # a reward run restarts clean
    result = launch_reward_model(config, rows, output_dir=work, on_progress=progress, launcher=training_launcher())
    attempt_publish(run, Path(result.model_path), final)
    metrics = {k: v for k, v in result.metrics.items() if not isinstance(v, list)}
    held_out = [r for r in rows if r.split == "val" and not r.is_tie]
    previous = promoted_version(run.project, ModelKind.REWARD)
    new_correct = promoted_correct = None
    if previous is not None and held_out:
        # Both models on the same held-out pairs, pair by pair: the gate's paired test.
        new_correct = evaluate_reward_model(final, held_out)["reward/correct"]
        promoted_correct = evaluate_reward_model(previous.path, held_out)["reward/correct"]
    gate = RewardGate.decide(
        new_accuracy=metrics.get("reward/accuracy"),
        min_accuracy=loop.reward_min_accuracy,
        margin=loop.reward_margin,
        new_correct=new_correct,
        promoted_correct=promoted_correct,
        promoted_version=previous.pk if previous is not None else None,
        promoted_name=previous.name if previous is not None else None,
        human_agreement=metrics.get("reward/human_agreement"),
    )
    evaluation = gate.to_json()
    run.summary = {"version": RECORD_VERSION, "metrics": metrics, "evaluation": evaluation, "seed": result.seed}
    run.output_version = ModelVersion.objects.create(
        project=run.project,
        kind=ModelKind.REWARD,
        name=f"reward-run-{run.pk}",
        path=str(final),
        parent=run.reference,
        run=run,
        metrics={"version": RECORD_VERSION, **metrics, "evaluation": evaluation},
        data_snapshot=snapshot,
    )


def execute_ppo(run: TrainingRun, progress: Progress) -> None:
    """PPO of the run's policy against its reward model, its gate decided on held-out prompts."""
    from rlhf.training import policy_evaluate  # torch and transformers: on first use

    loop = loop_settings_get(project=run.project)
    prompts = training_prompts(project=run.project)
    held_out = training_prompts(project=run.project, held_out=True, limit=32)
    if not prompts:
        raise ValueError("prompts: the project has no training prompts")
    config = PPOConfig.from_dict(run.config)
    sft_rows: list[dict[str, Any]] | None = None
    sft_snapshot: dict[str, Any] = {}
    if config.ptx_coef > 0:
        sft_rows, sft_snapshot = sft_rows_for(project=run.project)
        if not sft_rows:
            raise ValueError(f"ptx_coef: {PTX_WITHOUT_SFT}")
    run.data_snapshot = {
        "prompt_ids": [p.pk for p in prompts],
        "eval_prompt_ids": [p.pk for p in held_out],
        **sft_snapshot,
    }
    TrainingRun.objects.filter(pk=run.pk).update(data_snapshot=run.data_snapshot)
    assert run.policy is not None and run.reference is not None and run.reward_model is not None
    root = run_artifact_dir(run)
    work, final = root / "work", root / "model"
    # Same work directory on a retry: run_ppo resumes from its checkpoint there.
    result = launch_ppo(
        config,
        prompt_rows(prompts=prompts),
        policy_path=run.policy.path,
        ref_path=run.reference.path,
        reward_path=run.reward_model.path,
        output_dir=work,
        sft_rows=sft_rows,
        on_progress=progress,
        resume=True,
        launcher=training_launcher(),
    )
    judge = independent_judge(run.project, candidate_parent=run.policy, optimised=run.reward_model)
    evaluation = policy_evaluate(
        candidate_path=result.model_path,
        baseline_path=run.policy.path,
        reward_path=run.reward_model.path,
        judge_path=judge.path if judge is not None else None,
        prompts=prompt_rows(prompts=held_out or prompts[:16]),
        config=config,
        samples_per_prompt=EVAL_SAMPLES,
    )
    decided_by = "judge_" if judge is not None else ""
    gate = PPOGate.decide(
        candidate_reward=evaluation[f"{decided_by}candidate_reward"],
        baseline_reward=evaluation[f"{decided_by}baseline_reward"],
        kl=last_value(result.metrics.get("ppo/kl")),
        max_kl=loop.ppo_max_kl,
        require_improvement=loop.ppo_require_improvement,
        prompts=evaluation["prompts"],
        judge=(judge or run.reward_model).name,
        judge_independent=judge is not None,
        optimised_candidate_reward=evaluation["candidate_reward"] if judge is not None else None,
        optimised_baseline_reward=evaluation["baseline_reward"] if judge is not None else None,
    )
    evaluation.update(gate.to_json())  # the gate's record, with the evaluation's win rate and samples
    attempt_publish(run, Path(result.model_path), final)
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, int | float)}
    run.summary = {
        "version": RECORD_VERSION,
        "metrics": metrics,
        "evaluation": evaluation,
        "samples": result.samples,
        "seed": result.seed,
    }
    run.output_version = ModelVersion.objects.create(
        project=run.project,
        kind=ModelKind.POLICY,
        name=f"ppo-run-{run.pk}",
        path=str(final),
        parent=run.policy,
        run=run,
        metrics={
            "version": RECORD_VERSION,
            **metrics,
            "evaluation": {k: v for k, v in evaluation.items() if k != "samples"},
        },
        data_snapshot=run.data_snapshot,
    )
