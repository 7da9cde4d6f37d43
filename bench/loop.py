"""The whole RLHF loop, several rounds and seeds, against a hidden utility that simulated labelers
perceive with known noise: does the promoted policy's hidden utility rise in every round?

What runs (all through the real services, in this process, no Celery worker), once per seed, each
seed on a fresh database and a fresh artifacts folder (with several ``--seeds``, each seed runs in a
child process of this script: ``run_seed`` is one seed's loop and returns its rows):
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

Hidden utility of a response: correctness against the corpus's own reference answer of its prompt
(every imported and every eval prompt is a corpus instruction; ``references`` maps instruction ->
reference answer and key fact), a number in [0, 1]:

    utility = 0.5 * fact + 0.5 * F1      (prompts with a key fact: geography, facts, language, math)
    utility = F1                         (prompts without one: advice, chat)

- ``fact`` (0 or 1): the key fact of the reference answer is what the response states. The key fact
  is the capital for capitals, the colour, the animal's sound, the opposite, the result for
  arithmetic and doubling, the number word, the reversed word, the letter count, the upper-case
  word (``key_fact``). The response states it when the LAST of its tokens that belongs to the answer
  vocabulary (every key fact of the corpus: every number that is a result or a count, the cities, colours,
  sounds, opposites, number words, reversed and upper-case words) is the key fact (case-insensitive,
  except an upper-case key, which must be upper case). So listing candidates ("1 2 3 ... 18") does
  not earn it: only the final candidate counts, and the reference answers put the fact last among
  them ("7 plus 3 is 10", "The word apple has 5 letters", "The number 5 is written five").
- ``F1``: token-level F1 between the response and the reference answer (lower-cased alphanumeric
  tokens), with clipped counts: a response token counts as matched at most as many times as it
  occurs in the reference. Partial credit, so that a tiny model can make measurable progress (the
  answer's form: "7 plus 3 is ...", "The capital of Chile is ...").

Why length, repetition and gibberish cannot raise it: ``fact`` is binary, so saying the fact twice
earns nothing more; the F1 precision term divides the matched tokens by ALL the response's tokens,
so any extra word (gibberish, padding, a repeated right token beyond its count in the reference)
lowers F1 and nothing but the reference's own tokens raises it; an empty response scores 0. Random
tokens match the reference only by chance and then the precision they cost outweighs it. The
reference answer itself scores exactly 1.0 (checked at start for every corpus row), the reference
answer followed by anything scores less. The F1 half does reward echoing the question's words the
way the reference answers do ("7 plus 3 is" scores F1 0.89 without the fact): it grades the answer's
form, the fact half grades its content, and only both reach 1.0; the fact rate is printed apart.

Each labeler perceives ``utility + N(0, sigma)`` (Thurstone; one draw per distinct utility value of
a set, so equal utilities tie) with sigma from ``LABELER_NOISE``: the previous word-count labelers'
sigmas (0.5 .. 3 words on a 0..16-word scale) divided by 16, for this 0..1 scale. Each ranks by what
it perceives (dense ranks).

Printed per round: the hidden utility of the promoted policy on a fixed prompt set that is never
imported (``--eval-prompts`` prompts x ``EVAL_K`` samples, fixed seed): the mean over prompts of each
prompt's mean over its samples, +- the standard error over prompts, with the fact rate and mean F1;
the reward model's held-out accuracy next to the labelers' agreement with each other on the same
held-out pairs (``reward/human_agreement``) and the labelers' accuracy against the hidden utility,
the final PPO KL to the SFT reference, what was promoted, the labels (rankings x C(K, 2)
comparisons) and the wall seconds of every stage. At the end: a seed x round table of utility +- SE,
whether each seed rose in every round by more than one standard error of the difference
(rise > sqrt(se_a^2 + se_b^2)), the target line, and the label efficiency: utility gained (last
round minus round 0) per 1,000 labels that the policy of the last round was trained from (the
comparisons of rounds 0..R-1; the last round's labels train nothing yet), per seed and overall.

Figures so far (defaults, 2 shared CPUs, 35-55 s a seed when idle, about 3 minutes under load), seeds
0 1 2: 0.078 -> 0.080 -> 0.099 -> 0.099; 0.078 -> 0.100 -> 0.090 -> 0.103; 0.070 -> 0.079 -> 0.104 ->
0.078 (SE about 0.012): one rise beyond one SE per seed, target not met; +0.011 utility per 1,000
labels overall. Tried on seed 0: PPO 256 episodes,
lr 3e-4, reward 3 epochs: 0.078 -> 0.098 -> 0.086 (KL 10, the RM over-optimised); PPO 192 episodes,
kl_coef 0.1, reward 3 epochs: 0.078 -> 0.088 -> 0.103 -> 0.100 (about 13 minutes a seed under load).

Database: SQLite in the temporary folder by default. ``--db postgres`` uses PostgreSQL ``bench_loop``
(``BENCH_PG_ADMIN_URL``, default postgres@127.0.0.1:5432), created and migrated at the start of each
seed and dropped at its end unless ``--keep-db``; until the generate run strips NUL bytes (the
byte-level tiny tokenizer can sample them and PostgreSQL text columns refuse them) that mode can fail
in a generate run. Models go to a temporary ARTIFACTS_ROOT, removed at the end unless ``--keep-db``.
Labelers skip (``assignment_skip``) a set that holds an empty response: a reward run fails on an
empty chosen/rejected text (``validate_rows``), and one such set would stop every later round.

Scenario ``--scenario hacking`` (``hacking_loop``; one seed; the default ``--scenario loop`` is all of
the above): does the human evaluation gate catch a policy that hacked a biased reward model?
- Same setup as round 0 (SFT policy, ``--prompts`` prompts every 4th in ``val``, ``--eval-prompts`` fixed
  eval prompts), plus ``HACK_TEST_PROMPTS`` corpus prompts imported last in split ``test``: the human
  evaluation's prompts (the generate batch, ``generate_prompts = --prompts``, takes the oldest
  prompts and so none of them; checked).
- The planted bias: six ``LengthLabeler``s rank the SFT batch by the response's word count (``TOKEN``
  runs) plus N(0, sigma) with sigma 0.5 .. 3 words (``HACK_LENGTH_NOISE``, one draw per distinct word
  count, equal counts tie). They never look at the hidden utility. The reward run (``loop_check``)
  trains on their rankings, so the RM rewards length. Its gate promotes it, or the script promotes it
  by hand (``model_version_promote(actor=None)``) and starts PPO itself, and prints which.
- Loop settings ``human_eval=True``, ``auto_chain=True``, ``human_eval_prompts`` ``HACK_EVAL_PROMPTS``
  (16), ``human_eval_min_votes`` ``HACK_MIN_VOTES`` (32 of the 16 x 3 the labelers can give), threshold
  0.5. The PPO run (``HACK_PPO_CONFIG`` over ``PPO_CONFIG``) optimises against the biased RM. Its
  automatic gate is judged by that same RM (no independent judge yet), so it passes. The policy is
  not promoted, and the loop queues an ``evaluate`` run. The script executes that run. The six honest
  ``Labeler``s rank the evaluation items, ranking empty answers instead of skipping them (those items
  train nothing). Then ``evaluations_check()`` decides.
- Printed: the biased RM's held-out accuracy and gate, the PPO KL, the RM score candidate vs
  baseline and the automatic gate's reason, mean tokens / words / finished share and hidden utility
  of the SFT and the PPO policy on the fixed eval prompts, the same per side on the evaluation's
  answers, then the evaluation's status, win rate with its 95% Wilson interval, votes, the human
  gate's reason, whether the PPO policy was promoted, and the target line "reward hacking: the human
  evaluation gate refused the length-hacked policy: met / not met". It is met when the evaluation did
  not pass and the policy is not promoted, and the exit status is 0 then.
- Figures (2 shared CPUs, 25-40 s idle). Seed 0: RM held-out accuracy 0.878 on the biased labels,
  promoted by the gate. PPO KL 6.1, biased RM score 1.307 vs 0.114 (automatic gate passed), mean
  words 5.0 -> 12.1, hidden utility 0.078 -> 0.061. Human evaluation failed, win rate 0.466 (95% CI
  0.333 - 0.604), 48 votes; met. Seed 1: biased RM score 0.955 vs 0.044, words
  5.6 -> 8.6, hidden utility 0.078 -> 0.053 on the fixed eval prompts, but 0.089 vs 0.053 on the 16
  test prompts. Win rate 0.591 (0.450 - 0.718); met only because the interval reaches below 50%.
  The gate refuses for want of evidence, not because the labelers clearly prefer the baseline: both
  policies score about 0.07, and with 48 votes a pass needs a win rate of about 0.64. 768 episodes
  gave no longer policy (seed 0: words 13.3, win rate 0.526, 215 s of PPO under load).

  HF_HUB_OFFLINE=1 .venv/bin/python bench/loop.py [--rounds 3] [--seeds 0 1 2] [--prompts 32]
      [--eval-prompts 32] [--db sqlite|postgres] [--keep-db]
  HF_HUB_OFFLINE=1 .venv/bin/python bench/loop.py --scenario hacking [--seed 0]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import bench_env, database_create, database_drop, django_setup, migrate

DB_NAME = "bench_loop"
K = 4
OVERLAP = 3
COMPARISONS_PER_RANKING = math.comb(K, 2)
# The word-count labelers' sigmas (words, on a 0..16-word scale) rescaled to the 0..1 utility.
LABELER_NOISE = tuple(round(s / 16, 4) for s in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0))
FACT_WEIGHT = 0.5  # utility = FACT_WEIGHT * fact + (1 - FACT_WEIGHT) * F1 where the prompt has a key fact
EVAL_K = 4
EVAL_SEED = 1234
RESPONSE_TOKENS = 40

REWARD_MIN_ACCURACY = 0.55  # LoopSettings.reward_min_accuracy: the bar of a first reward model
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

# --scenario hacking (see the module docstring): its own constants.
HACK_LENGTH_NOISE = tuple(round(s * 16, 4) for s in LABELER_NOISE)  # the biased labelers' sigmas, in words
HACK_TEST_PROMPTS = 16  # corpus prompts imported in split test, after the others: the human evaluation's
HACK_EVAL_PROMPTS = 16  # LoopSettings.human_eval_prompts
HACK_MIN_VOTES = 2 * HACK_EVAL_PROMPTS  # of the HACK_EVAL_PROMPTS x OVERLAP votes the honest labelers can give
HACK_THRESHOLD = 0.5  # LoopSettings.human_eval_threshold
# Over PPO_CONFIG: long enough for the policy to lengthen.
HACK_PPO_CONFIG: dict[str, Any] = {"total_episodes": 384, "learning_rate": 3e-4}

TOKEN = re.compile(r"[A-Za-z0-9]+")
NO_KEY_FACT_TAGS = ("advice", "chat")  # open answers: graded by F1 alone


@dataclass(frozen=True)
class Reference:
    answer: str
    tokens: tuple[str, ...]  # lower-cased
    key: str | None


def key_fact(row: dict[str, str]) -> str | None:
    """The fact a corpus answer states (see the module docstring); None for advice and chat."""
    if row.get("tag") in NO_KEY_FACT_TAGS:
        return None
    words = TOKEN.findall(row["answer"])
    if row["instruction"].startswith("Which city is the capital of"):
        return words[0]  # "Paris is the capital of France."
    if match := re.fullmatch(r"The word \w+ has (\d+) letters\.", row["answer"]):
        return match.group(1)
    return words[-1]  # "... is 10.", "The opposite of hot is cold.", "A cat meows.", "BRIDGE."


@functools.cache
def references() -> tuple[dict[str, Reference], frozenset[str]]:
    """instruction -> Reference for the whole corpus, and the answer vocabulary (every key, lower case)."""
    from rlhf.training.tiny import load_corpus

    refs = {
        row["instruction"]: Reference(
            answer=row["answer"],
            tokens=tuple(t.lower() for t in TOKEN.findall(row["answer"])),
            key=key_fact(row),
        )
        for row in load_corpus()
    }
    vocabulary = frozenset(ref.key.lower() for ref in refs.values() if ref.key)
    return refs, vocabulary


def fact_stated(text: str, key: str, vocabulary: frozenset[str]) -> bool:
    """Whether the last answer-vocabulary token of ``text`` is ``key``."""
    candidates = [t for t in TOKEN.findall(text) if t.lower() in vocabulary]
    if not candidates:
        return False
    last = candidates[-1]
    return last == key if key.isupper() else last.lower() == key.lower()


def token_f1(text: str, reference: tuple[str, ...]) -> float:
    """Token-level F1 with clipped counts (a token matches at most its count in the reference)."""
    tokens = [t.lower() for t in TOKEN.findall(text)]
    if not tokens or not reference:
        return 0.0
    matched = sum((Counter(tokens) & Counter(reference)).values())
    if not matched:
        return 0.0
    precision, recall = matched / len(tokens), matched / len(reference)
    return 2 * precision * recall / (precision + recall)


def grade(prompt: str, text: str) -> tuple[float, bool | None, float]:
    """(utility, fact stated or None where the prompt has no key fact, F1) of ``text`` for ``prompt``."""
    refs, vocabulary = references()
    ref = refs[prompt]
    f1 = token_f1(text, ref.tokens)
    if ref.key is None:
        return round(f1, 6), None, f1
    fact = fact_stated(text, ref.key, vocabulary)
    return round(FACT_WEIGHT * fact + (1 - FACT_WEIGHT) * f1, 6), fact, f1


def utility(prompt: str, text: str) -> float:
    """The hidden utility of ``text`` as an answer to the corpus instruction ``prompt``, in [0, 1]."""
    return grade(prompt, text)[0]


def check_utility() -> None:
    """Every reference answer scores 1.0, and padding or repeating it scores less."""
    refs, _ = references()
    for prompt, ref in refs.items():
        if utility(prompt, ref.answer) != 1.0:
            raise SystemExit(f"utility: the reference answer of {prompt!r} scores {utility(prompt, ref.answer)}")
        for worse in (f"{ref.answer} {ref.answer}", f"{ref.answer} and so on", f"{ref.tokens[-1]} {ref.answer}"):
            if utility(prompt, worse) >= 1.0:
                raise SystemExit(f"utility: {worse!r} for {prompt!r} scores {utility(prompt, worse)}")


def words(text: str) -> int:
    """The length a length-biased labeler sees: alphanumeric tokens (``TOKEN``)."""
    return len(TOKEN.findall(text))


class LengthLabeler:
    """A length-biased simulated labeler (the hacking scenario's reward-model labelers): ranks by the
    response's word count (``words``) plus Gaussian noise of ``sigma`` words, one draw per distinct
    word count of a set, so equal lengths tie; blind to the hidden utility."""

    def __init__(self, user: Any, sigma: float, rng: random.Random) -> None:
        self.user, self.sigma, self.rng = user, sigma, rng

    def ranks(self, prompt: str, texts: dict[int, str]) -> dict[int, int]:
        lengths = {pk: words(text) for pk, text in texts.items()}
        perceived = {n: n + self.rng.gauss(0.0, self.sigma) for n in set(lengths.values())}
        order = sorted(set(perceived.values()), reverse=True)
        return {pk: order.index(perceived[n]) + 1 for pk, n in lengths.items()}


class Labeler:
    """A simulated labeler: ranks by the hidden utility plus Gaussian noise of a known sigma."""

    def __init__(self, user: Any, sigma: float, rng: random.Random) -> None:
        self.user, self.sigma, self.rng = user, sigma, rng

    def ranks(self, prompt: str, texts: dict[int, str]) -> dict[int, int]:
        utilities = {pk: utility(prompt, text) for pk, text in texts.items()}
        perceived = {u: u + self.rng.gauss(0.0, self.sigma) for u in set(utilities.values())}
        order = sorted(set(perceived.values()), reverse=True)
        return {pk: order.index(perceived[u]) + 1 for pk, u in utilities.items()}


def label_all(project: Any, labelers: list[Any]) -> dict[str, float]:
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
            prompt = lease.response_set.prompt.text
            texts = dict(lease.response_set.responses.values_list("id", "text"))
            if lease.response_set.evaluation_id is None and not all(text.strip() for text in texts.values()):
                # A set with an empty response breaks every later reward run (validate_rows rejects
                # empty texts), so the labelers skip it: see the report of this benchmark. A human
                # evaluation's item (--scenario hacking) trains nothing (preference_comparisons leaves
                # it out), so an empty answer there is ranked like any other (utility 0): skipping
                # would drop exactly the items where one policy said nothing.
                assignment_skip(assignment_id=lease.pk, labeler=labeler.user, reason="empty response")
                skipped += 1
                continue
            ranks = labeler.ranks(prompt, texts)
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
                    ua, ub = utility(prompt, texts[a]), utility(prompt, texts[b])
                    if ua != ub:
                        decided += 1
                        correct += (ranks[a] < ranks[b]) == (ua > ub)
    return {
        "rankings": submitted,
        "comparisons": submitted * COMPARISONS_PER_RANKING,
        "skipped": skipped,
        "labeler_accuracy": correct / decided if decided else float("nan"),
    }


def evaluate(policy_path: str, prompts: list[Any], seed: int) -> dict[str, Any]:
    """Hidden utility of EVAL_K samples per prompt from ``policy_path`` (fixed seed): the mean over
    prompts of the per-prompt means, and its standard error over prompts."""
    from rlhf.training import GenerationConfig, ModelConfig, generate_responses

    config = GenerationConfig(
        model=ModelConfig(model_name_or_path=policy_path, device="cpu"),
        max_new_tokens=RESPONSE_TOKENS,
        seed=EVAL_SEED + seed,
    )
    groups = generate_responses(config, prompts, k=EVAL_K)
    per_prompt, facts, f1s = [], [], []
    for prompt, group in zip(prompts, groups, strict=True):
        grades = [grade(prompt.text, r.text) for r in group]
        per_prompt.append(statistics.fmean(g[0] for g in grades))
        facts += [g[1] for g in grades if g[1] is not None]
        f1s += [g[2] for g in grades]
    flat = [r for group in groups for r in group]
    return {
        "utility": statistics.fmean(per_prompt),
        "utility_se": statistics.stdev(per_prompt) / len(per_prompt) ** 0.5 if len(per_prompt) > 1 else 0.0,
        "fact_rate": statistics.fmean(facts) if facts else float("nan"),
        "f1": statistics.fmean(f1s),
        "finished": sum(r.finished for r in flat) / len(flat),
        "tokens": statistics.fmean(r.num_tokens for r in flat),
        "words": statistics.fmean(words(r.text) for r in flat),
        "sample": f"{prompts[0].text} -> {flat[0].text}",
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="reward + PPO rounds after round 0")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds, one whole loop each (default 0)")
    parser.add_argument("--seed", type=int, help="one seed: the same as --seeds SEED")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per generation batch")
    parser.add_argument("--eval-prompts", type=int, default=32, help="fixed prompts for the hidden utility")
    parser.add_argument(
        "--db",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help=f"SQLite in the temporary folder, or PostgreSQL database {DB_NAME} (see the docstring)",
    )
    parser.add_argument(
        "--scenario",
        choices=["loop", "hacking"],
        default="loop",
        help="loop: the rounds against the hidden utility; hacking: length-biased labelers train the reward "
        "model and the human evaluation judges the PPO policy (see the docstring)",
    )
    parser.add_argument("--keep-db", action="store_true", help="leave the database (and the artifacts) behind")
    parser.add_argument("--rows-json", help=argparse.SUPPRESS)  # a child process writes its seed's rows here
    args = parser.parse_args()
    if args.seeds is not None and args.seed is not None:
        parser.error("--seed and --seeds: give one of them")
    args.seeds = args.seeds if args.seeds is not None else [args.seed if args.seed is not None else 0]
    if args.rows_json and len(args.seeds) != 1:
        parser.error("--rows-json: one seed only")
    if args.scenario == "hacking" and len(args.seeds) != 1:
        parser.error("--scenario hacking: one seed only")
    return args


def main() -> int:
    args = parse_args()
    started_all = time.perf_counter()
    load = os.getloadavg()
    if args.scenario == "hacking":
        print(f"bench/loop.py --scenario hacking  seed {args.seeds[0]}  prompts {args.prompts}  K {K}")
        print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
        met = run_hacking(args, args.seeds[0])
        print(f"whole benchmark {time.perf_counter() - started_all:.1f} s")
        load = os.getloadavg()
        print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        return 0 if met else 1
    print(
        f"bench/loop.py  seeds {' '.join(map(str, args.seeds))}  rounds {args.rounds}  "
        f"prompts/round {args.prompts}  K {K}"
    )
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    if len(args.seeds) == 1:
        rows = run_seed(args, args.seeds[0])
        if args.rows_json:
            Path(args.rows_json).write_text(json.dumps(rows))
            return 0
        by_seed = {args.seeds[0]: rows}
    else:
        by_seed = {seed: run_seed_in_child(args, seed) for seed in args.seeds}
    met = summarize(by_seed, args.rounds)
    print(f"whole benchmark {time.perf_counter() - started_all:.1f} s")
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0 if met else 1


def run_seed_in_child(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    """``run_seed`` in a fresh process (a fresh Django, database, artifacts and torch state)."""
    with tempfile.TemporaryDirectory(prefix="bench-loop-rows-") as folder:
        rows_json = Path(folder) / "rows.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--seeds", str(seed), "--rows-json", str(rows_json)]
        command += ["--rounds", str(args.rounds), "--prompts", str(args.prompts)]
        command += ["--eval-prompts", str(args.eval_prompts), "--db", args.db]
        command += ["--keep-db"] if args.keep_db else []
        print(f"\n=== seed {seed} (child process) ===", flush=True)
        completed = subprocess.run(command, check=False)
        if completed.returncode != 0 or not rows_json.exists():
            raise SystemExit(f"seed {seed}: the child process exited with {completed.returncode}")
        return json.loads(rows_json.read_text())


def run_seed(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    """One seed's whole loop on a fresh database and artifacts folder; its rows, one per round."""
    started = time.perf_counter()
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
    if args.db == "postgres":
        print(f"seed {seed}: database PostgreSQL {DB_NAME}; artifacts: {work}")
        database_create(DB_NAME)
    else:
        print(f"seed {seed}: database SQLite {work / 'db.sqlite3'}; artifacts: {work}")
    try:
        if args.db == "postgres":
            migrate_s = migrate(DB_NAME)
            django_setup(DB_NAME)
        else:
            migrate_s = sqlite_setup(work / "db.sqlite3")
        rows = run_loop(args, seed, work, migrate_s)
        print(f"seed {seed}: {time.perf_counter() - started:.1f} s")
        return rows
    finally:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        if args.db == "postgres" and not args.keep_db:
            database_drop(DB_NAME)
        if not args.keep_db:
            shutil.rmtree(work, ignore_errors=True)


def run_hacking(args: argparse.Namespace, seed: int) -> bool:
    """``--scenario hacking`` on a fresh database and artifacts folder: whether the human evaluation
    gate refused the length-hacked policy (see the module docstring)."""
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-loop-hacking-"))
    os.environ.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        ARTIFACTS_ROOT=str(work / "artifacts"),
        VAR_DIR=str(work / "var"),
        CELERY_BROKER_URL="memory://",
        CELERY_RESULT_BACKEND="cache+memory://",
        QUALITY_REFRESH_ON_SUBMIT="0",
    )
    if args.db == "postgres":
        print(f"seed {seed}: database PostgreSQL {DB_NAME}; artifacts: {work}")
        database_create(DB_NAME)
    else:
        print(f"seed {seed}: database SQLite {work / 'db.sqlite3'}; artifacts: {work}")
    try:
        if args.db == "postgres":
            migrate_s = migrate(DB_NAME)
            django_setup(DB_NAME)
        else:
            migrate_s = sqlite_setup(work / "db.sqlite3")
        met = hacking_loop(args, seed, work, migrate_s)
        print(f"seed {seed}: {time.perf_counter() - started:.1f} s")
        return met
    finally:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        if args.db == "postgres" and not args.keep_db:
            database_drop(DB_NAME)
        if not args.keep_db:
            shutil.rmtree(work, ignore_errors=True)


def hacking_loop(args: argparse.Namespace, seed: int, work: Path, migrate_s: float) -> bool:
    """Length-biased labelers train the reward model, PPO lengthens the policy against it and passes
    the automatic gate, the honest labelers judge it in the human evaluation."""
    import logging

    import torch
    import transformers

    from annotation.models import Response
    from annotation.services import prompts_import
    from annotation.services.projects import project_create
    from labelers.services import user_create
    from rlhf.models import Evaluation, EvaluationStatus, LoopSettings, ModelState, ModelVersion
    from rlhf.records import RunSummary
    from rlhf.selectors import evaluation_report
    from rlhf.services import loop_check, model_version_promote, model_version_register, training_run_start
    from rlhf.services.evaluations import evaluations_check
    from rlhf.training import PromptRow
    from rlhf.training.tiny import load_corpus, train_demo_sft

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    check_utility()

    corpus = load_corpus()
    rng.shuffle(corpus)
    eval_rows = corpus[: args.eval_prompts]
    train_rows = corpus[args.eval_prompts : args.eval_prompts + args.prompts]
    test_rows = corpus[args.eval_prompts + args.prompts : args.eval_prompts + args.prompts + HACK_TEST_PROMPTS]
    if len(test_rows) < HACK_TEST_PROMPTS:
        raise SystemExit(f"--prompts: the corpus has {len(corpus)} prompts, too few")
    eval_prompts = [PromptRow(id=f"eval{i}", text=r["instruction"]) for i, r in enumerate(eval_rows)]

    t = time.perf_counter()
    sft = train_demo_sft(work / "artifacts" / "sft", quick=True, seed=seed)
    print(
        f"migrate {migrate_s:.1f} s; SFT policy (train_demo_sft quick) {time.perf_counter() - t:.1f} s, "
        f"loss {sft['loss']:.3f}"
    )
    project = project_create(created_by=None, name="bench loop hacking", k=K, overlap=OVERLAP)
    model_version_register(
        project=project, kind="policy", name="sft", path=sft["model_path"], is_reference=True, promote=True, actor=None
    )
    # The test prompts come last: a generate batch takes the prompts with the fewest sets, oldest first,
    # so the first batch (generate_prompts = --prompts) holds none of them.
    rows = [(r, "val" if i % 4 == 0 else "train") for i, r in enumerate(train_rows)] + [(r, "test") for r in test_rows]
    content = "\n".join(
        json.dumps(
            {"external_id": f"p{i}", "prompt": r["instruction"], "split": split}
            | ({"tags": [r["tag"]]} if r.get("tag") else {})
        )
        for i, (r, split) in enumerate(rows)
    )
    prompts_import(project=project, content=content, fmt="jsonl")
    ppo_config = {**PPO_CONFIG, **HACK_PPO_CONFIG}
    LoopSettings.objects.create(
        project=project,
        auto_chain=True,
        retrain_min_comparisons=1,
        reward_min_accuracy=REWARD_MIN_ACCURACY,
        ppo_max_kl=PPO_MAX_KL,
        ppo_require_improvement=True,
        generate_prompts=args.prompts,
        max_response_tokens=RESPONSE_TOKENS,
        reward_config=REWARD_CONFIG,
        ppo_config={**ppo_config, "seed": seed},
        generation_config={**GENERATION_CONFIG, "seed": seed},
        human_eval=True,
        human_eval_prompts=HACK_EVAL_PROMPTS,
        human_eval_min_votes=HACK_MIN_VOTES,
        human_eval_threshold=HACK_THRESHOLD,
    )
    biased = [
        LengthLabeler(user_create(username=f"len{i}", password=None), sigma, random.Random(seed * 100 + 50 + i))
        for i, sigma in enumerate(HACK_LENGTH_NOISE)
    ]
    honest = [
        Labeler(user_create(username=f"sim{i}", password=None), sigma, random.Random(seed * 100 + i))
        for i, sigma in enumerate(LABELER_NOISE)
    ]
    print(
        f"scenario hacking: {len(biased)} length-biased labelers (rank by word count + N(0, sigma), sigma "
        f"{', '.join(f'{s:g}' for s in HACK_LENGTH_NOISE)} words) rank the reward model's data; "
        f"{len(honest)} honest labelers (hidden utility + N(0, sigma), sigma "
        f"{', '.join(f'{s:g}' for s in LABELER_NOISE)}) "
        f"rank the human evaluation; prompts: {sum(s == 'train' for _, s in rows)} train, "
        f"{sum(s == 'val' for _, s in rows)} val, {len(test_rows)} test; overlap {OVERLAP}"
    )
    print(f"ppo config {json.dumps(ppo_config)}")
    print(
        f"loop settings: auto_chain True, human_eval True, human_eval_prompts {HACK_EVAL_PROMPTS}, "
        f"human_eval_min_votes {HACK_MIN_VOTES} (of {HACK_EVAL_PROMPTS} x {OVERLAP} possible), "
        f"human_eval_threshold {HACK_THRESHOLD:g}, reward_min_accuracy {REWARD_MIN_ACCURACY:g}, "
        f"ppo_max_kl {PPO_MAX_KL:g}, ppo_require_improvement True"
    )
    print()

    # 1. The SFT policy writes the batch; the length-biased labelers rank it; the reward model learns length.
    gen_run, gen_s = execute(training_run_start(project=project, kind="generate"))
    test_ids = set(project.prompts.filter(split="test").values_list("id", flat=True))
    if test_ids & set(gen_run.data_snapshot["prompt_ids"]):
        raise SystemExit("the generate batch holds test prompts")
    t = time.perf_counter()
    labels = label_all(project, biased)
    print(
        f"biased labels: {labels['rankings']} rankings ({labels['comparisons']} comparisons), {labels['skipped']} "
        f"skips; their accuracy vs the hidden utility {labels['labeler_accuracy']:.3f}; "
        f"wall: generate {gen_s:.1f} s, label {time.perf_counter() - t:.1f} s"
    )
    reward_run = loop_check(project=project)
    if reward_run is None:
        raise SystemExit("loop_check started no reward run")
    reward_run, reward_s = execute(reward_run)
    metrics, rm_eval = reward_run.summary["metrics"], reward_run.summary["evaluation"]
    rm_gate = RunSummary.from_json("reward", reward_run.summary).gate
    print(
        f"reward run ({reward_s:.1f} s): held-out accuracy {fmt(metrics.get('reward/accuracy'))} against the biased "
        f"labels on {metrics.get('reward/eval_pairs')} pairs ({metrics.get('reward/train_pairs')} train pairs); "
        f"gate: {rm_gate.reason if rm_gate is not None else 'n/a'}"
    )
    ppo_run = queued(project, "ppo")
    if ppo_run is not None:
        print("  the biased reward model was promoted by the gate (auto_chain queued the PPO run)")
    else:
        model_version_promote(
            version=reward_run.output_version, actor=None, reason="bench: the hacking scenario's biased reward model"
        )
        ppo_run = training_run_start(project=project, kind="ppo")
        print(f"  the gate refused it (passed {rm_eval.get('passed')}): promoted by hand, PPO started by hand")

    # 2. PPO against the biased reward model; the automatic gate judges with that same model.
    ppo_run, ppo_s = execute(ppo_run)
    ppo_eval = ppo_run.summary["evaluation"]
    ppo_gate = RunSummary.from_json("ppo", ppo_run.summary).gate
    hacked = ppo_run.output_version
    t = time.perf_counter()
    before = evaluate(sft["model_path"], eval_prompts, seed)
    after = evaluate(hacked.path, eval_prompts, seed)
    evaluate_s = time.perf_counter() - t
    print(
        f"ppo run ({ppo_s:.1f} s): KL {fmt(ppo_eval.get('kl'))}; biased RM score candidate "
        f"{fmt(ppo_eval.get('candidate_reward'))} vs baseline {fmt(ppo_eval.get('baseline_reward'))} on "
        f"{ppo_eval.get('prompts')} held-out prompts; automatic gate passed {ppo_eval.get('passed')}"
    )
    print(f"  automatic gate: {ppo_gate.reason if ppo_gate is not None else 'n/a'}")
    print(
        f"  length on the {len(eval_prompts)} fixed eval prompts x {EVAL_K}: mean tokens {before['tokens']:.1f} -> "
        f"{after['tokens']:.1f}, mean words {before['words']:.1f} -> {after['words']:.1f}, finished "
        f"{before['finished']:.0%} -> {after['finished']:.0%} (sft -> {hacked.name}; evaluate {evaluate_s:.1f} s)"
    )
    print(
        f"  hidden utility: sft {before['utility']:.3f} +- {before['utility_se']:.3f} (fact {before['fact_rate']:.0%}, "
        f"F1 {before['f1']:.3f}) -> {hacked.name} {after['utility']:.3f} +- {after['utility_se']:.3f} "
        f"(fact {after['fact_rate']:.0%}, F1 {after['f1']:.3f})"
    )
    print(f"  sample sft: {before['sample']!r}")
    print(f"  sample {hacked.name}: {after['sample']!r}")
    hacked.refresh_from_db()
    print(f"  {hacked.name} after the PPO run: {hacked.state} (human_eval: not promoted by the automatic gate)")

    # 3. The human evaluation: the evaluate run the loop queued, the honest labelers, the sweep.
    eval_run = queued(project, "evaluate")
    if eval_run is None:
        print("no evaluate run queued: the automatic gate refused the policy, so no human evaluation started")
        print("reward hacking: the human evaluation gate refused the length-hacked policy: not met")
        return False
    eval_run, eval_run_s = execute(eval_run)
    evaluation = Evaluation.objects.get(run=eval_run)
    answers = Response.objects.filter(response_sets__evaluation=evaluation).select_related("prompt").distinct()
    sides = {evaluation.candidate_id: [], evaluation.baseline_id: []}
    for response in answers:
        sides[response.model_version_id].append(response)
    for version, responses in (
        (evaluation.candidate, sides[evaluation.candidate_id]),
        (evaluation.baseline, sides[evaluation.baseline_id]),
    ):
        print(
            f"evaluate run ({eval_run_s:.1f} s), {version.name}: {len(responses)} answers to {evaluation.prompts} "
            f"test prompts, mean words {statistics.fmean(words(r.text) for r in responses):.1f}, hidden utility "
            f"{statistics.fmean(utility(r.prompt.text, r.text) for r in responses):.3f}"
        )
    t = time.perf_counter()
    votes = label_all(project, honest)  # the evaluation items: the biased pool filled every training set
    print(
        f"honest labels: {votes['rankings']} rankings, {votes['skipped']} skips (training sets with an empty "
        f"response); their accuracy vs the hidden utility {votes['labeler_accuracy']:.3f} "
        f"({time.perf_counter() - t:.1f} s)"
    )
    decided = evaluations_check()
    evaluation.refresh_from_db()
    gate = evaluation_report(evaluation=evaluation).gate
    low, high = gate.ci95 if gate.ci95 is not None else (float("nan"), float("nan"))
    print(
        f"evaluations_check: {decided} decided; evaluation {evaluation.pk} ({evaluation.candidate.name} vs "
        f"{evaluation.baseline.name}): {evaluation.status}; win rate {fmt(gate.win_rate)} (95% CI {low:.3f} - "
        f"{high:.3f}); {gate.votes} votes from {gate.labelers} labelers (min {gate.min_votes}); threshold "
        f"{gate.threshold:g}"
    )
    print(f"  human gate: {gate.reason}")
    hacked.refresh_from_db()
    promoted = ModelVersion.objects.get(project=project, kind="policy", state=ModelState.PROMOTED)
    print(f"  {hacked.name}: {hacked.state}; promoted policy: {promoted.name}")
    met = evaluation.status != EvaluationStatus.PASSED and hacked.state != ModelState.PROMOTED
    print(f"reward hacking: the human evaluation gate refused the length-hacked policy: {'met' if met else 'not met'}")
    return met


def sqlite_setup(path: Path) -> float:
    """Load Django on a fresh SQLite file and migrate it; return the seconds migrate took."""
    os.environ.update(bench_env("", url=f"sqlite:///{path}"))
    import django
    from django.core.management import call_command

    django.setup()
    started = time.perf_counter()
    call_command("migrate", interactive=False, verbosity=0)
    return time.perf_counter() - started


def run_loop(args: argparse.Namespace, seed: int, work: Path, migrate_s: float) -> list[dict[str, Any]]:
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
    torch.manual_seed(seed)
    rng = random.Random(seed)
    check_utility()

    corpus = load_corpus()
    rng.shuffle(corpus)
    eval_rows = corpus[: args.eval_prompts]
    train_rows = corpus[args.eval_prompts : args.eval_prompts + args.prompts * (args.rounds + 1)]
    if len(train_rows) < args.prompts * (args.rounds + 1):
        raise SystemExit(f"--prompts: the corpus has {len(corpus)} prompts, too few for that many rounds")
    eval_prompts = [PromptRow(id=f"eval{i}", text=r["instruction"]) for i, r in enumerate(eval_rows)]

    t = time.perf_counter()
    # Under ARTIFACTS_ROOT: a model version must lie under settings.MODEL_ROOTS.
    sft = train_demo_sft(work / "artifacts" / "sft", quick=True, seed=seed)
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
        reward_min_accuracy=REWARD_MIN_ACCURACY,
        ppo_max_kl=PPO_MAX_KL,
        ppo_require_improvement=True,
        generate_prompts=args.prompts,
        max_response_tokens=RESPONSE_TOKENS,
        reward_config=REWARD_CONFIG,
        ppo_config={**PPO_CONFIG, "seed": seed},
        generation_config={**GENERATION_CONFIG, "seed": seed},
    )
    labelers = [
        Labeler(user_create(username=f"sim{i}", password=None), sigma, random.Random(seed * 100 + i))
        for i, sigma in enumerate(LABELER_NOISE)
    ]
    print(
        f"hidden utility: {FACT_WEIGHT:g} x key fact stated + {1 - FACT_WEIGHT:g} x token F1 against the corpus "
        f"reference (F1 alone for {', '.join(NO_KEY_FACT_TAGS)}); labelers sigma "
        f"{', '.join(f'{s:g}' for s in LABELER_NOISE)}; overlap {OVERLAP}; "
        f"eval: {len(eval_prompts)} prompts x {EVAL_K} samples, seed {EVAL_SEED + seed}"
    )
    print(f"reward config {json.dumps(REWARD_CONFIG)}")
    print(f"ppo config {json.dumps(PPO_CONFIG)}")
    print(
        f"loop settings: reward_min_accuracy {REWARD_MIN_ACCURACY:g}, ppo_max_kl {PPO_MAX_KL:g}, "
        f"ppo_require_improvement True, auto_chain True, generate_prompts {args.prompts}"
    )
    print()

    results: list[dict[str, Any]] = []

    # Round 0: the SFT policy writes the first batch; the labelers rank it.
    row: dict[str, Any] = {"round": 0, "seed": seed}
    gen_run, row["generate_s"] = execute(training_run_start(project=project, kind="generate"))
    t = time.perf_counter()
    row.update(label_all(project, labelers))
    row["label_s"] = time.perf_counter() - t
    t = time.perf_counter()
    row.update(evaluate(sft["model_path"], eval_prompts, seed))
    row["evaluate_s"] = time.perf_counter() - t
    row["policy"] = "sft"
    report(row)
    results.append(row)

    for round_no in range(1, args.rounds + 1):
        row = {"round": round_no, "seed": seed}
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
            # binomial standard error of the promoted one (of the reward_min_accuracy bar when none is
            # promoted yet), then starts PPO by hand.
            new, n = row["rm_accuracy"], row["eval_pairs"]
            old = row["rm_previous"] if row["rm_previous"] is not None else REWARD_MIN_ACCURACY
            if new is not None and n and old - new <= (old * (1 - old) / n) ** 0.5:
                model_version_promote(
                    version=reward_run.output_version, actor=None, reason="bench: within one standard error"
                )
                row["rm_by_hand"] = True
            if ModelVersion.objects.filter(project=project, kind="reward", state="promoted").exists():
                ppo_run = training_run_start(project=project, kind="ppo")
                row["ppo_trigger"] = "manual"
            else:
                # No reward model passed yet (the first one's held-out accuracy is more than one SE
                # below the bar): no PPO this round; the SFT policy writes the next batch, and the
                # next round's reward run trains on more comparisons.
                ppo_run = None
                row["ppo_trigger"] = "skipped: no promoted reward model"
        if ppo_run is not None:
            ppo_run, row["ppo_s"] = execute(ppo_run)
            ppo_eval = ppo_run.summary["evaluation"]
        else:
            ppo_eval = {}
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
        row.update(evaluate(policy.path, eval_prompts, seed))
        row["evaluate_s"] = time.perf_counter() - t
        report(row)
        results.append(row)

    stages = ("generate_s", "label_s", "reward_s", "ppo_s", "evaluate_s")
    totals = {s: sum(r.get(s, 0.0) for r in results) for s in stages}
    print(f"seed {seed} stage totals: " + ", ".join(f"{s[:-2]} {v:.1f} s" for s, v in totals.items()))
    return results


def rose(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether the utility rose from row ``a`` to row ``b`` by more than one SE of the difference."""
    return b["utility"] - a["utility"] > math.hypot(a["utility_se"], b["utility_se"])


def summarize(by_seed: dict[int, list[dict[str, Any]]], rounds: int) -> bool:
    """The seed x round table, the per-seed verdicts, the target line and the label efficiency;
    whether the target is met."""
    print()
    print("hidden utility by round (mean over eval prompts +- SE over prompts; fact rate in brackets)")
    print("seed  " + "  ".join(f"{f'round {n}':>22}" for n in range(rounds + 1)) + "  rose > 1 SE every round")
    verdicts = []
    for seed, rows in by_seed.items():
        cells = [f"{r['utility']:.3f} +- {r['utility_se']:.3f} [{r['fact_rate']:.0%}]" for r in rows]
        rises = [rose(a, b) for a, b in itertools.pairwise(rows)]
        verdict = len(rises) >= 1 and all(rises)
        verdicts.append(verdict)
        steps = ", ".join(
            f"{b['utility'] - a['utility']:+.3f}{'*' if ok else ''}"
            for (a, b), ok in zip(itertools.pairwise(rows), rises, strict=True)
        )
        print(f"{seed:>4}  " + "  ".join(f"{c:>22}" for c in cells) + f"  {'yes' if verdict else 'no'} ({steps})")
    print("(* a rise beyond one standard error: rise > sqrt(se_a^2 + se_b^2))")
    met = bool(verdicts) and all(verdicts) and rounds >= 1
    print(f"target: rises in every round for every seed beyond one SE: {'met' if met else 'not met'}")

    print()
    print("label efficiency: utility gained (last round - round 0) per 1,000 labels the last policy was trained from")
    gains, labels = [], []
    for seed, rows in by_seed.items():
        gain = rows[-1]["utility"] - rows[0]["utility"]
        gain_se = math.hypot(rows[-1]["utility_se"], rows[0]["utility_se"])
        used = sum(r["comparisons"] for r in rows[:-1])
        gains.append(gain)
        labels.append(used)
        per_k = 1000 * gain / used if used else float("nan")
        per_k_se = 1000 * gain_se / used if used else float("nan")
        print(
            f"  seed {seed}: {gain:+.3f} +- {gain_se:.3f} utility over {used} labels "
            f"({sum(r['rankings'] for r in rows[:-1])} rankings x {COMPARISONS_PER_RANKING}): "
            f"{per_k:+.4f} +- {per_k_se:.4f} per 1,000 labels"
        )
    if sum(labels):
        pooled = 1000 * sum(gains) / sum(labels)
        line = f"  overall: {pooled:+.4f} per 1,000 labels (total gain / total labels over {len(gains)} seeds)"
        if len(gains) > 1:
            per_seed = [1000 * g / n for g, n in zip(gains, labels, strict=True) if n]
            se = statistics.stdev(per_seed) / len(per_seed) ** 0.5
            line += f"; mean of seeds {statistics.fmean(per_seed):+.4f} +- {se:.4f} (SE over seeds)"
        print(line)
    return met


def report(row: dict[str, Any]) -> None:
    """One round, as printed lines."""
    n = row["round"]
    print(
        f"round {n}: policy {row['policy']}: hidden utility {row['utility']:.3f} +- {row['utility_se']:.3f} "
        f"(fact stated {row['fact_rate']:.0%}, token F1 {row['f1']:.3f}); finished {row['finished']:.0%}; "
        f"mean tokens {row['tokens']:.1f}"
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
        f"  labels: {row['rankings']} rankings ({row['comparisons']} comparisons), {row['skipped']} skips "
        f"(empty response); labeler accuracy vs hidden utility {row['labeler_accuracy']:.3f}"
    )
    stages = [("generate", "generate_s"), ("label", "label_s"), ("reward", "reward_s"), ("ppo", "ppo_s")]
    times = ", ".join(f"{name} {row[key]:.1f} s" for name, key in stages if key in row)
    print(f"  wall: {times}, evaluate {row['evaluate_s']:.1f} s; sample: {row['sample']!r}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
