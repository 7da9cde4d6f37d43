"""The whole RLHF loop, several rounds, against a hidden utility that simulated labelers perceive with
known noise: does the promoted policy's hidden utility rise in every round?

What runs (all through the real services, in this process, no Celery worker):
- a tiny GPT-2 SFT policy (``train_demo_sft(quick=True)``) registered as the KL reference;
- prompts from the bundled instruction corpus imported with ``prompts_import`` (every 4th one in
  split ``val``: the reward model's held-out data);
- round 0: a ``generate`` run (K responses per prompt for ``--prompts`` prompts); six simulated
  labelers rank every response set through ``assignment_lease_next`` / ``ranking_submit``
  (overlap 3, ties when two responses have the same utility);
- rounds 1..R: ``loop_check`` starts a ``reward`` run (the schedule); each run is executed with
  ``training_run_execute``; ``auto_chain`` promotes what passed its evaluation and starts the
  ``ppo`` run, then the ``generate`` run of the next batch with the new policy; labelers rank it.
  The Celery broker is ``memory://`` so that queued tasks go nowhere: this script is the worker.
  When the reward gate (new held-out accuracy strictly above the promoted RM's on the same pairs)
  stops the chain, the script acts as the ML engineer: it promotes the new RM by hand if it is
  within one binomial standard error of the promoted one (printed), and starts PPO by hand.

Hidden utility of a response: the number of whitespace-separated words, capped at ``CAP_WORDS``.
Each labeler perceives ``utility + N(0, sigma)`` (Thurstone; one draw per distinct utility value of
a set, so equal utilities tie) with sigma from ``LABELER_NOISE``, and ranks by it (dense ranks).

Printed per round: the mean hidden utility of the promoted policy's responses on a fixed prompt set
that is never imported (``--eval-prompts`` prompts x ``EVAL_K`` samples, fixed seed), the reward
model's held-out accuracy next to the labelers' agreement with each other on the same held-out
pairs (``reward/human_agreement``) and the labelers' accuracy against the hidden utility, the final
PPO KL to the SFT reference, what was promoted, and the wall seconds of every stage.

Database: SQLite in the temporary folder by default. ``--db postgres`` uses PostgreSQL ``bench_loop``
(``BENCH_PG_ADMIN_URL``, default postgres@127.0.0.1:5432), created and migrated at the start and
dropped at the end unless ``--keep-db``; until the generate run strips NUL bytes (the byte-level
tiny tokenizer can sample them and PostgreSQL text columns refuse them) that mode can fail in a
generate run. Models go to a temporary ARTIFACTS_ROOT, removed at the end unless ``--keep-db``.
Labelers skip (``assignment_skip``) a set that holds an empty response: a reward run fails on an
empty chosen/rejected text (``validate_rows``), and one such set would stop every later round.

  HF_HUB_OFFLINE=1 .venv/bin/python bench/loop.py [--rounds 3] [--seed 0] [--prompts 32]
      [--eval-prompts 32] [--db sqlite|postgres] [--keep-db]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import bench_env, database_create, database_drop, django_setup, migrate

DB_NAME = "bench_loop"
K = 4
OVERLAP = 3
CAP_WORDS = 16
LABELER_NOISE = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # sigma of each labeler, in words
EVAL_K = 4
EVAL_SEED = 1234
RESPONSE_TOKENS = 40

PPO_MAX_KL = 20.0  # LoopSettings.ppo_max_kl: KL (nats per response) a promoted policy may have

GENERATION_CONFIG: dict[str, Any] = {"max_new_tokens": RESPONSE_TOKENS, "model": {"device": "cpu"}}
REWARD_CONFIG: dict[str, Any] = {
    "learning_rate": 1e-3,
    "num_epochs": 2.0,
    "max_length": 128,
    "max_pairs_per_batch": 24,
    "model": {"device": "cpu"},
}
PPO_CONFIG: dict[str, Any] = {
    "total_episodes": 96,
    "batch_size": 16,
    "mini_batch_size": 8,
    "num_ppo_epochs": 4,
    "response_length": RESPONSE_TOKENS,
    "learning_rate": 2e-4,
    "kl_coef": 0.05,
    "device": "cpu",
}


def utility(text: str) -> int:
    """The hidden utility: words in the response, at most CAP_WORDS."""
    return min(len(text.split()), CAP_WORDS)


class Labeler:
    """A simulated labeler: ranks by the hidden utility plus Gaussian noise of a known sigma."""

    def __init__(self, user: Any, sigma: float, rng: random.Random) -> None:
        self.user, self.sigma, self.rng = user, sigma, rng

    def ranks(self, texts: dict[int, str]) -> dict[int, int]:
        utilities = {pk: utility(text) for pk, text in texts.items()}
        perceived = {u: u + self.rng.gauss(0.0, self.sigma) for u in set(utilities.values())}
        order = sorted(set(perceived.values()), reverse=True)
        return {pk: order.index(perceived[u]) + 1 for pk, u in utilities.items()}


def label_all(project: Any, labelers: list[Labeler]) -> dict[str, float]:
    """Every labeler in turn leases and ranks one set until no labeler gets one."""
    from annotation.services import assignment_lease_next, assignment_skip, ranking_submit

    submitted, skipped, correct, decided = 0, 0, 0, 0
    active = list(labelers)
    while active:
        for labeler in list(active):
            lease = assignment_lease_next(project=project, labeler=labeler.user)
            if lease is None:
                active.remove(labeler)
                continue
            texts = dict(lease.response_set.responses.values_list("id", "text"))
            if not all(text.strip() for text in texts.values()):
                # A set with an empty response breaks every later reward run (validate_rows rejects
                # empty texts), so the labelers skip it: see the report of this benchmark.
                assignment_skip(assignment_id=lease.pk, labeler=labeler.user, reason="empty response")
                skipped += 1
                continue
            ranks = labeler.ranks(texts)
            ranking_submit(
                assignment_id=lease.pk,
                labeler=labeler.user,
                idempotency_key=f"{labeler.user.username}-{lease.pk}",
                ranks=ranks,
            )
            submitted += 1
            ids = sorted(texts)
            for i, a in enumerate(ids):
                for b in ids[i + 1 :]:
                    ua, ub = utility(texts[a]), utility(texts[b])
                    if ua != ub:
                        decided += 1
                        correct += (ranks[a] < ranks[b]) == (ua > ub)
    return {
        "rankings": submitted,
        "skipped": skipped,
        "labeler_accuracy": correct / decided if decided else float("nan"),
    }


def evaluate(policy_path: str, prompts: list[Any], seed: int) -> dict[str, float]:
    """Mean hidden utility of EVAL_K samples per prompt from ``policy_path`` (fixed seed)."""
    from rlhf.training import GenerationConfig, ModelConfig, generate_responses

    config = GenerationConfig(
        model=ModelConfig(model_name_or_path=policy_path, device="cpu"),
        max_new_tokens=RESPONSE_TOKENS,
        seed=EVAL_SEED + seed,
    )
    groups = generate_responses(config, prompts, k=EVAL_K)
    flat = [r for group in groups for r in group]
    values = [utility(r.text) for r in flat]
    return {
        "utility": statistics.fmean(values),
        "utility_se": statistics.stdev(values) / len(values) ** 0.5,
        "finished": sum(r.finished for r in flat) / len(flat),
        "tokens": statistics.fmean(r.num_tokens for r in flat),
        "sample": flat[0].text,
    }


def execute(run: Any) -> tuple[Any, float]:
    from rlhf.services import training_run_execute

    started = time.perf_counter()
    run = training_run_execute(run_id=run.pk)
    seconds = time.perf_counter() - started
    if run.status != "succeeded":
        raise SystemExit(f"{run.kind} run {run.pk} {run.status}:\n{run.error[-3000:]}")
    return run, seconds


def queued(project: Any, kind: str) -> Any:
    from rlhf.models import TrainingRun

    return TrainingRun.objects.filter(project=project, kind=kind, status="queued").first()


def fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="reward + PPO rounds after round 0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=32, help="prompts per generation batch")
    parser.add_argument("--eval-prompts", type=int, default=32, help="fixed prompts for the hidden utility")
    parser.add_argument(
        "--db",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help=f"SQLite in the temporary folder, or PostgreSQL database {DB_NAME} (see the docstring)",
    )
    parser.add_argument("--keep-db", action="store_true", help="leave the database (and the artifacts) behind")
    args = parser.parse_args()

    load = os.getloadavg()
    started_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    os.environ.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        ARTIFACTS_ROOT=str(work / "artifacts"),
        VAR_DIR=str(work / "var"),
        CELERY_BROKER_URL="memory://",
        CELERY_RESULT_BACKEND="cache+memory://",
        QUALITY_REFRESH_ON_SUBMIT="0",
    )
    print(f"bench/loop.py  seed {args.seed}  rounds {args.rounds}  prompts/round {args.prompts}  K {K}")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    if args.db == "postgres":
        print(f"database: PostgreSQL {DB_NAME}; artifacts: {work}")
        database_create(DB_NAME)
    else:
        print(f"database: SQLite {work / 'db.sqlite3'}; artifacts: {work}")
    try:
        if args.db == "postgres":
            migrate_s = migrate(DB_NAME)
            django_setup(DB_NAME)
        else:
            migrate_s = sqlite_setup(work / "db.sqlite3")
        return run_loop(args, work, migrate_s, started_all)
    finally:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        if args.db == "postgres" and not args.keep_db:
            database_drop(DB_NAME)
        if not args.keep_db:
            shutil.rmtree(work, ignore_errors=True)


def sqlite_setup(path: Path) -> float:
    """Load Django on a fresh SQLite file and migrate it; return the seconds migrate took."""
    os.environ.update(bench_env("", url=f"sqlite:///{path}"))
    import django
    from django.core.management import call_command

    django.setup()
    started = time.perf_counter()
    call_command("migrate", interactive=False, verbosity=0)
    return time.perf_counter() - started


def run_loop(args: argparse.Namespace, work: Path, migrate_s: float, started_all: float) -> int:
    import json
    import logging

    import torch
    import transformers

    from annotation.services import prompts_import
    from annotation.services.projects import project_create
    from labelers.services import user_create
    from rlhf.models import LoopSettings, ModelVersion
    from rlhf.services import loop_check, model_version_promote, model_version_register, training_run_start
    from rlhf.training import PromptRow
    from rlhf.training.tiny import load_corpus, train_demo_sft

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    corpus = load_corpus()
    rng.shuffle(corpus)
    eval_rows = corpus[: args.eval_prompts]
    train_rows = corpus[args.eval_prompts : args.eval_prompts + args.prompts * (args.rounds + 1)]
    if len(train_rows) < args.prompts * (args.rounds + 1):
        raise SystemExit(f"--prompts: the corpus has {len(corpus)} prompts, too few for that many rounds")
    eval_prompts = [PromptRow(id=f"eval{i}", text=r["instruction"]) for i, r in enumerate(eval_rows)]

    t = time.perf_counter()
    sft = train_demo_sft(work / "sft", quick=True, seed=args.seed)
    sft_s = time.perf_counter() - t
    print(f"migrate {migrate_s:.1f} s; SFT policy (train_demo_sft quick) {sft_s:.1f} s, loss {sft['loss']:.3f}")

    project = project_create(created_by=None, name="bench loop", k=K, overlap=OVERLAP)
    model_version_register(
        project=project, kind="policy", name="sft", path=sft["model_path"], is_reference=True, promote=True, actor=None
    )
    content = "\n".join(
        json.dumps(
            {"external_id": f"p{i}", "prompt": r["instruction"], "split": "val" if i % 4 == 0 else "train"}
            | ({"tags": [r["tag"]]} if r.get("tag") else {})
        )
        for i, r in enumerate(train_rows)
    )
    prompts_import(project=project, content=content, fmt="jsonl")
    LoopSettings.objects.create(
        project=project,
        auto_chain=True,
        retrain_min_comparisons=1,
        reward_min_accuracy=0.55,
        ppo_max_kl=PPO_MAX_KL,
        ppo_require_improvement=True,
        generate_prompts=args.prompts,
        max_response_tokens=RESPONSE_TOKENS,
        reward_config=REWARD_CONFIG,
        ppo_config={**PPO_CONFIG, "seed": args.seed},
        generation_config={**GENERATION_CONFIG, "seed": args.seed},
    )
    labelers = [
        Labeler(user_create(username=f"sim{i}", password=None), sigma, random.Random(args.seed * 100 + i))
        for i, sigma in enumerate(LABELER_NOISE)
    ]
    print(
        f"hidden utility: words per response, capped at {CAP_WORDS}; labelers sigma "
        f"{', '.join(f'{s:g}' for s in LABELER_NOISE)} words; overlap {OVERLAP}; "
        f"eval: {len(eval_prompts)} prompts x {EVAL_K} samples, seed {EVAL_SEED + args.seed}"
    )
    print(f"reward config {json.dumps(REWARD_CONFIG)}")
    print(f"ppo config {json.dumps(PPO_CONFIG)}")
    print(
        f"loop settings: reward_min_accuracy 0.55, ppo_max_kl {PPO_MAX_KL:g}, ppo_require_improvement True, "
        f"auto_chain True, generate_prompts {args.prompts}"
    )
    print()

    results: list[dict[str, Any]] = []

    # Round 0: the SFT policy writes the first batch; the labelers rank it.
    row: dict[str, Any] = {"round": 0}
    gen_run, row["generate_s"] = execute(training_run_start(project=project, kind="generate"))
    t = time.perf_counter()
    row.update(label_all(project, labelers))
    row["label_s"] = time.perf_counter() - t
    t = time.perf_counter()
    row.update(evaluate(sft["model_path"], eval_prompts, args.seed))
    row["evaluate_s"] = time.perf_counter() - t
    row["policy"] = "sft"
    report(row)
    results.append(row)

    for round_no in range(1, args.rounds + 1):
        row = {"round": round_no}
        reward_run = loop_check(project=project)
        if reward_run is None:
            raise SystemExit("loop_check started no reward run")
        reward_run, row["reward_s"] = execute(reward_run)
        metrics = reward_run.summary["metrics"]
        evaluation = reward_run.summary["evaluation"]
        row.update(
            rm_accuracy=metrics.get("reward/accuracy"),
            human_agreement=metrics.get("reward/human_agreement"),
            eval_pairs=metrics.get("reward/eval_pairs"),
            train_pairs=metrics.get("reward/train_pairs"),
            rm_previous=evaluation.get("promoted_accuracy"),
            rm_promoted=evaluation.get("passed"),
        )
        row["rm_by_hand"] = False
        ppo_run = queued(project, "ppo")
        row["ppo_trigger"] = "chain"
        if ppo_run is None:
            # The gate wants the new RM strictly above the promoted one on the same held-out pairs.
            # Both sit near the labelers' agreement ceiling, so that is a coin flip: the ML engineer
            # promotes the new RM (trained on more comparisons) by hand when it is within one
            # binomial standard error of the promoted one, then starts PPO by hand.
            new, old, n = row["rm_accuracy"], row["rm_previous"], row["eval_pairs"]
            if new is not None and old is not None and n and old - new <= (old * (1 - old) / n) ** 0.5:
                model_version_promote(
                    version=reward_run.output_version, actor=None, reason="bench: within one standard error"
                )
                row["rm_by_hand"] = True
            ppo_run = training_run_start(project=project, kind="ppo")
            row["ppo_trigger"] = "manual"
        ppo_run, row["ppo_s"] = execute(ppo_run)
        ppo_eval = ppo_run.summary["evaluation"]
        row.update(
            kl=ppo_eval.get("kl"),
            rm_candidate=ppo_eval.get("candidate_reward"),
            rm_baseline=ppo_eval.get("baseline_reward"),
            ppo_promoted=ppo_eval.get("passed"),
        )
        gen_run = queued(project, "generate")
        if gen_run is None:  # the PPO policy did not pass: the promoted policy writes the batch
            gen_run = training_run_start(project=project, kind="generate")
        gen_run, row["generate_s"] = execute(gen_run)
        t = time.perf_counter()
        row.update(label_all(project, labelers))
        row["label_s"] = time.perf_counter() - t
        policy = ModelVersion.objects.get(project=project, kind="policy", state="promoted")
        row["policy"] = policy.name
        t = time.perf_counter()
        row.update(evaluate(policy.path, eval_prompts, args.seed))
        row["evaluate_s"] = time.perf_counter() - t
        report(row)
        results.append(row)

    utilities = [r["utility"] for r in results]
    rises = [b > a for a, b in itertools.pairwise(utilities)]
    print()
    print("utility by round: " + " -> ".join(f"{u:.2f}" for u in utilities))
    print(
        f"rose in {sum(rises)} of {len(rises)} rounds ("
        + ", ".join(f"{b - a:+.2f}" for a, b in itertools.pairwise(utilities))
        + f"); target: rises in each of 3 rounds: {'met' if len(rises) >= 3 and all(rises) else 'not met'}"
    )
    stages = ("generate_s", "label_s", "reward_s", "ppo_s", "evaluate_s")
    totals = {s: sum(r.get(s, 0.0) for r in results) for s in stages}
    print(
        "stage totals: "
        + ", ".join(f"{s[:-2]} {v:.1f} s" for s, v in totals.items())
        + f"; whole benchmark {time.perf_counter() - started_all:.1f} s"
    )
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0 if len(rises) >= 3 and all(rises) else 1


def report(row: dict[str, Any]) -> None:
    """One round, as printed lines."""
    n = row["round"]
    print(
        f"round {n}: policy {row['policy']}: hidden utility {row['utility']:.2f} +- {row['utility_se']:.2f} "
        f"(mean words, cap {CAP_WORDS}); finished {row['finished']:.0%}; mean tokens {row['tokens']:.1f}"
    )
    if n > 0:
        print(
            f"  reward: held-out accuracy {fmt(row['rm_accuracy'])} vs human agreement "
            f"{fmt(row['human_agreement'])} on {row['eval_pairs']} pairs ({row['train_pairs']} train pairs); "
            f"previous RM {fmt(row['rm_previous'])}; promoted by the gate {row['rm_promoted']}"
            + ("; promoted by hand (within 1 SE)" if row["rm_by_hand"] else "")
        )
        print(
            f"  ppo ({row['ppo_trigger']}): KL {fmt(row['kl'])}; RM score candidate {fmt(row['rm_candidate'])} "
            f"vs baseline {fmt(row['rm_baseline'])}; promoted {row['ppo_promoted']}"
        )
    print(
        f"  labels: {row['rankings']} rankings, {row['skipped']} skips (empty response); labeler"
        f" accuracy vs hidden utility {row['labeler_accuracy']:.3f}"
    )
    stages = [("generate", "generate_s"), ("label", "label_s"), ("reward", "reward_s"), ("ppo", "ppo_s")]
    times = ", ".join(f"{name} {row[key]:.1f} s" for name, key in stages if key in row)
    print(f"  wall: {times}, evaluate {row['evaluate_s']:.1f} s; sample: {row['sample']!r}")


if __name__ == "__main__":
    sys.exit(main())
