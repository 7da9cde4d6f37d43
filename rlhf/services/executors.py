"""What a run does, by kind: write responses (generate), train a reward model, run PPO. Each executor
fills in the run's data snapshot, summary and output version; ``training_run_execute`` ends the run."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count

from annotation.models import Project, Prompt, Response, ResponseOrigin
from annotation.services import response_sets_build
from rlhf.data import comparison_rows, prompt_rows, sft_rows_for, training_prompts
from rlhf.models import ModelKind, ModelVersion, TrainingRun
from rlhf.records import RECORD_VERSION, PPOGate, RewardGate, last_value
from rlhf.services.loop_settings import PTX_WITHOUT_SFT, loop_settings_get
from rlhf.services.registry import promoted_version
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


def generation_batch(*, project: Project, policy: ModelVersion, limit: int) -> list[Prompt]:
    """The next prompts to write responses for: training prompts this policy has not answered yet,
    those with the fewest response sets first."""
    return list(
        Prompt.objects.filter(project=project)
        .exclude(responses__model_version=policy)
        .annotate(n_sets=Count("response_sets"))
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
    promoted_accuracy = None
    if previous is not None and held_out:
        promoted_accuracy = evaluate_reward_model(previous.path, held_out)["reward/accuracy"]
    gate = RewardGate.decide(
        new_accuracy=metrics.get("reward/accuracy"),
        min_accuracy=loop.reward_min_accuracy,
        promoted_accuracy=promoted_accuracy,
        promoted_version=previous.pk if promoted_accuracy is not None and previous is not None else None,
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
    evaluation = policy_evaluate(
        candidate_path=result.model_path,
        baseline_path=run.policy.path,
        reward_path=run.reward_model.path,
        prompts=prompt_rows(prompts=held_out or prompts[:16]),
        config=config,
        samples_per_prompt=EVAL_SAMPLES,
    )
    gate = PPOGate.decide(
        candidate_reward=evaluation["candidate_reward"],
        baseline_reward=evaluation["baseline_reward"],
        kl=last_value(result.metrics.get("ppo/kl")),
        max_kl=loop.ppo_max_kl,
        require_improvement=loop.ppo_require_improvement,
        prompts=evaluation["prompts"],
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
