"""The rules of annotation, each written once: plain Python, no Django (a test enforces it).

Services, selectors, the quality report, the export, the pages and the hand-written SQL of the
hot path all call these (the SQL through the fragments at the end), so a rule cannot drift between
them. Ranks are dense from 1 (best); equal ranks are ties. A pair is always ``(a, b)`` with ``a``
the lower response id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

# --- outcomes of a pair ---------------------------------------------------------------------------

OUTCOME_A = "a"  # a preferred
OUTCOME_B = "b"  # b preferred
OUTCOME_TIE = "tie"
OUTCOMES = (OUTCOME_A, OUTCOME_B, OUTCOME_TIE)
# As numbers, ordered b < tie < a (the ordinal metrics need the order): +1 a preferred, -1 b, 0 a tie.
OUTCOME_CODES = {OUTCOME_A: 1, OUTCOME_TIE: 0, OUTCOME_B: -1}


def pair_code(rank_a: int, rank_b: int) -> int:
    """The decision on a pair as a number: 1 when ``a`` ranks better (lower), -1 when ``b`` does, 0 a tie."""
    return (rank_b > rank_a) - (rank_b < rank_a)


def pair_outcome(rank_a: int, rank_b: int) -> str:
    """``"a"``, ``"b"`` or ``"tie"`` for a pair ranked ``rank_a`` and ``rank_b``."""
    return {1: OUTCOME_A, -1: OUTCOME_B, 0: OUTCOME_TIE}[pair_code(rank_a, rank_b)]


def pair_margin(rank_a: int, rank_b: int) -> int:
    """The rank distance of a pair (0 for a tie)."""
    return abs(rank_a - rank_b)


def ranking_pairs(ranks: Mapping[int, int]) -> list[tuple[int, int, str, int]]:
    """``(a, b, outcome, margin)`` for each of the C(K,2) unordered pairs of a ranking, ``a`` the lower id."""
    return [
        (a, b, pair_outcome(ranks[a], ranks[b]), pair_margin(ranks[a], ranks[b]))
        for a, b in combinations(sorted(ranks), 2)
    ]


def pair_points(outcome: str, *, for_a: bool) -> float:
    """A pair's outcome as points for one of its responses (``a`` with ``for_a``, else ``b``): a win
    is 1, a tie half, a loss 0. Win rates and the model leaderboard count votes this way."""
    if outcome == OUTCOME_TIE:
        return 0.5
    return 1.0 if (outcome == OUTCOME_A) == for_a else 0.0


def pair_count(k: int) -> int:
    """C(K,2): the comparisons one ranking of K responses gives."""
    return k * (k - 1) // 2


# --- validating a ranking -------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleViolation(ValueError):
    """Input that breaks a rule: the field it is in, a human message and an error code."""

    field: str
    message: str
    code: str = "invalid"

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def response_id(key: Any) -> int | None:
    """A response id from a JSON object key, or ``None`` when it is not a whole number."""
    try:
        return int(key)
    except (TypeError, ValueError):
        return None


def ranks_dense(values: Iterable[int]) -> bool:
    """Whether the ranks used are 1, 2, 3, ... with no gap (ties share a rank)."""
    used = sorted(set(values))
    return used == list(range(1, len(used) + 1))


def ranks_validate(raw: Any, response_ids: Sequence[int], k: int) -> dict[int, int]:
    """``{response id: rank}`` from a labeler's (or an admin's reference) ranks over ``response_ids``;
    raises ``RuleViolation`` on the first problem."""
    if not isinstance(raw, dict) or not raw:
        raise RuleViolation("ranks", "must be an object mapping each response id to its rank.")
    ranks: dict[int, int] = {}
    valid = set(response_ids)
    for key, value in raw.items():
        rid = response_id(key)
        if rid is None:
            raise RuleViolation("ranks", f"'{key}' is not a response id.")
        if rid not in valid:
            raise RuleViolation("ranks", f"response {rid} is not in this response set.")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= k:
            raise RuleViolation(f"ranks.{rid}", f"must be a whole number from 1 to {k}, got {value!r}.")
        ranks[rid] = value
    missing = [rid for rid in response_ids if rid not in ranks]
    if missing:
        raise RuleViolation(
            "ranks", f"response {missing[0]} has no rank; every response of the set needs one.", code="incomplete"
        )
    if not ranks_dense(ranks.values()):
        used = sorted(set(ranks.values()))
        raise RuleViolation(
            "ranks",
            "ranks must be dense (1, 2, 3, ... with ties sharing a rank and no gaps); "
            f"got {', '.join(map(str, used))}.",
        )
    return ranks


# --- agreement ------------------------------------------------------------------------------------

Codes = dict[tuple[int, int], int]


def ranking_codes(ranks: Mapping[str, int] | Mapping[int, int], response_ids: Iterable[int]) -> Codes:
    """A ranking (keys as stored: strings, or ids) as its decisions on ``(lower id, higher id)``;
    pairs with a response it did not rank are left out."""
    by_id = {int(key): int(rank) for key, rank in ranks.items()}
    return {
        (a, b): pair_code(by_id[a], by_id[b])
        for a, b in combinations(sorted(response_ids), 2)
        if a in by_id and b in by_id
    }


def pair_agreement(first: Codes, second: Codes) -> tuple[int, int]:
    """Agreeing decisions and decisions both made: a tie is a third answer and agrees only with a tie."""
    shared = first.keys() & second.keys()
    return sum(first[key] == second[key] for key in shared), len(shared)


def ranking_agreement(ranks: Mapping[int, int], reference: Mapping[str, int]) -> tuple[int, int]:
    """Pairs of ``ranks`` decided as ``reference`` decides them, and pairs both rank (gold scoring)."""
    ids = list({*map(int, ranks), *map(int, reference)})
    return pair_agreement(ranking_codes(ranks, ids), ranking_codes(reference, ids))


def rate(agreeing: float, total: float) -> float | None:
    """``agreeing / total`` rounded as the reports store it (6 places); ``None`` without data.
    Percent agreement, agreement with consensus, win rates and gold accuracy are all this share."""
    return round(float(agreeing) / float(total), 6) if total else None


def majority_outcome(votes: Mapping[str, int]) -> str:
    """The outcome most labelers chose; a split vote between the top two is a tie."""
    ranked = sorted(votes.items(), key=lambda item: item[1], reverse=True)  # as Counter.most_common
    if len(ranked) > 1 and ranked[1][1] == ranked[0][1]:
        return OUTCOME_TIE
    return ranked[0][0]


def consensus_good_as_gold(confidence: float, threshold: float) -> bool:
    """A consensus may stand in for a gold reference when it is at least the qualification threshold."""
    return confidence >= threshold


def midranks(ranks: Sequence[int]) -> list[float]:
    """Mid-ranks of dense ranks with ties (1, 2, 2, 3 -> 1, 2.5, 2.5, 4), as Kendall's W needs them."""
    return [sum(1 for other in ranks if other < rank) + (ranks.count(rank) + 1) / 2.0 for rank in ranks]


def tie_term(ranks: Sequence[int]) -> int:
    """The ranking's sum over its ties of t^3 - t (t the size of each tie)."""
    return sum(ranks.count(value) ** 3 - ranks.count(value) for value in set(ranks))


def kendall_w(rank_lists: Sequence[Sequence[int]]) -> float | None:
    """Kendall's W with the tie correction for the rankings (each over the same K responses, in the
    same order) of one set; ``None`` for fewer than two rankings or no spread at all. The quality
    report computes the same W for every set at once (``quality.metrics.kendalls_w``)."""
    m = len(rank_lists)
    k = len(rank_lists[0]) if rank_lists else 0
    if m < 2 or k < 2:
        return None
    sums = [sum(column) for column in zip(*(midranks(ranks) for ranks in rank_lists), strict=True)]
    mean = m * (k + 1) / 2.0
    s = sum((total - mean) ** 2 for total in sums)
    denominator = m**2 * (k**3 - k) - m * sum(tie_term(ranks) for ranks in rank_lists)
    return round(12.0 * s / denominator, 6) if denominator > 0 else None


# --- slots and gold -------------------------------------------------------------------------------


def set_fills(*, is_gold: bool) -> bool:
    """Whether submissions fill a set up: gold sets never fill (every labeler may get them)."""
    return not is_gold


def slot_free(*, is_gold: bool, required: int, submitted: int, live_leases: int) -> bool:
    """Whether a set can take one more labeler now: submissions plus live leases below its overlap."""
    return not set_fills(is_gold=is_gold) or submitted + live_leases < required


def set_complete(*, required: int, submitted: int) -> bool:
    """Whether a (non-gold) set has all the submissions it needs."""
    return submitted >= required


# The same three rules for hand-written SQL, over the column expressions the caller names.
def sql_fills(is_gold: str) -> str:
    return f"NOT {is_gold}"


def sql_slot_free(*, required: str, submitted: str, live_leases: str) -> str:
    return f"{required} > {submitted} + ({live_leases})"


def sql_set_complete(*, required: str, submitted: str) -> str:
    return f"{submitted} >= {required}"


def sql_preference_set(evaluation: str) -> str:
    """A set's rankings are preference data (reward-model rows, the export, the agreement report)
    unless the set is a human evaluation's (``evaluation``: its evaluation column), which judges
    models and never trains them or scores labelers. The ORM's twin: ``annotation.selectors``."""
    return f"{evaluation} IS NULL"


def sql_outcome_code(outcome: str) -> str:
    """``outcome`` (a column holding "a", "b" or "tie") as its number, as ``OUTCOME_CODES`` says."""
    cases = " ".join(f"WHEN '{name}' THEN {code}" for name, code in OUTCOME_CODES.items() if code)
    return f"CASE {outcome} {cases} ELSE 0 END"


# --- projects -------------------------------------------------------------------------------------

K_MIN, K_MAX = 2, 9
PAIRWISE_K = 2
OVERLAP_MIN, OVERLAP_MAX = 1, 50
LEASE_MINUTES_MIN, LEASE_MINUTES_MAX = 1, 24 * 60
QUALIFICATION_ITEMS_MIN, QUALIFICATION_ITEMS_MAX = 0, 100
RELIABILITY_MIN_LABELS_MIN = 1
SHARE_MIN, SHARE_MAX = 0.0, 1.0
SHARE_FIELDS = ("gold_rate", "qualification_threshold", "reliability_threshold", "review_kendall_w")
# field -> (lowest, highest); ``None``: no upper bound.
PROJECT_BOUNDS: dict[str, tuple[float, float | None]] = {
    "k": (K_MIN, K_MAX),
    "overlap": (OVERLAP_MIN, OVERLAP_MAX),
    "lease_minutes": (LEASE_MINUTES_MIN, LEASE_MINUTES_MAX),
    "qualification_items": (QUALIFICATION_ITEMS_MIN, QUALIFICATION_ITEMS_MAX),
    "reliability_min_labels": (RELIABILITY_MIN_LABELS_MIN, None),
    **{field: (SHARE_MIN, SHARE_MAX) for field in SHARE_FIELDS},
}


BETWEEN_FIELDS = ("k", *SHARE_FIELDS)  # their message names both bounds


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def project_bound_problem(field: str, value: float) -> str | None:
    """What is wrong with ``value`` for a bounded project setting (a message without the field), or ``None``."""
    low, high = PROJECT_BOUNDS[field]
    if field in BETWEEN_FIELDS and high is not None:
        inside = low <= value <= high
        return None if inside else f"must be between {_number(low)} and {_number(high)}, got {value}."
    if value < low:
        return f"must be at least {_number(low)}."
    if high is not None and value > high:
        return f"must be at most {_number(high)}, got {value}."
    return None


FLAG_KEY_MAX = 50
FLAG_KEY_PATTERN = rf"^[a-z0-9_]{{1,{FLAG_KEY_MAX}}}$"
_FLAG_KEY = re.compile(FLAG_KEY_PATTERN)


def flag_key_valid(key: object) -> bool:
    """A flag key: 1 to 50 lower-case ASCII letters, digits and underscores."""
    return isinstance(key, str) and _FLAG_KEY.fullmatch(key) is not None


def flag_label_default(key: str) -> str:
    return key.replace("_", " ").capitalize()


def flags_validate(flags: Any) -> list[dict[str, str]]:
    """A project's flags as ``[{key, label}]`` with unique valid keys (labels defaulted); raises
    ``RuleViolation`` naming the entry."""
    if not isinstance(flags, list):
        raise RuleViolation("flags", "must be a list of {key, label}.")
    keys: set[str] = set()
    clean = []
    for index, flag in enumerate(flags):
        if not isinstance(flag, dict) or not isinstance(flag.get("key"), str) or not flag["key"].strip():
            raise RuleViolation(f"flags[{index}]", "needs a non-empty 'key' and a 'label'.")
        key = flag["key"]
        if not flag_key_valid(key):
            raise RuleViolation(
                f"flags[{index}]",
                f"the key '{key}' may hold only lower-case letters, digits and underscores (at most {FLAG_KEY_MAX}).",
            )
        if key in keys:
            raise RuleViolation(f"flags[{index}]", f"key '{key}' appears twice.")
        keys.add(key)
        clean.append({**flag, "label": flag.get("label", flag_label_default(key))})
    return clean


def ranking_flags_validate(raw: Any, response_ids: Sequence[int], allowed: Sequence[str]) -> dict[str, list[str]]:
    """A ranking's flags ``{"<response id>": [key, ...]}``, each key one of the project's."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RuleViolation("flags", "must be an object mapping response ids to a list of flags.")
    out: dict[str, list[str]] = {}
    for key, value in raw.items():
        rid = response_id(key)
        if rid is None or rid not in response_ids:
            raise RuleViolation("flags", f"response {key} is not in this response set.")
        if not isinstance(value, list):
            raise RuleViolation(f"flags.{key}", "must be a list of flag keys.")
        for flag in value:
            if not isinstance(flag, str) or flag not in allowed:
                raise RuleViolation(f"flags.{key}", f"'{flag}' is not a flag of this project ({', '.join(allowed)}).")
        if value:
            out[str(rid)] = sorted(set(value))
    return out
