"""The rules module: plain Python, each rule on a worked example, and the SQL fragments and the
vectorised report agreeing with the Python definitions."""

from __future__ import annotations

import ast
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from annotation import rules
from quality import metrics

ROOT = Path(__file__).resolve().parents[2]


def test_rules_imports_no_django_nor_any_app():
    forbidden = ("django", "rest_framework", "celery", "annotation", "labelers", "rlhf", "frontend", "audit", "config")
    tree = ast.parse((ROOT / "annotation" / "rules.py").read_text(encoding="utf-8"))
    names = [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
    names += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    assert [n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)] == []


def test_importing_rules_loads_no_django():
    code = (
        "import sys, annotation.rules;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_ranks_to_pairs_outcomes_and_margins():
    # 10 best, 20 and 30 tied second, 40 last
    assert rules.ranking_pairs({30: 2, 10: 1, 40: 3, 20: 2}) == [
        (10, 20, "a", 1),
        (10, 30, "a", 1),
        (10, 40, "a", 2),
        (20, 30, "tie", 0),
        (20, 40, "a", 1),
        (30, 40, "a", 1),
    ]
    assert rules.ranking_pairs({5: 2, 9: 1}) == [(5, 9, "b", 1)]
    assert (rules.pair_code(1, 2), rules.pair_code(2, 1), rules.pair_code(2, 2)) == (1, -1, 0)
    assert rules.pair_count(4) == 6 == len(rules.ranking_pairs({1: 1, 2: 2, 3: 3, 4: 4}))


@pytest.mark.parametrize(
    ("raw", "field", "message", "code"),
    [
        ({}, "ranks", "must be an object mapping each response id to its rank.", "invalid"),
        ({"x": 1, "2": 1}, "ranks", "'x' is not a response id.", "invalid"),
        ({"7": 1, "2": 1}, "ranks", "response 7 is not in this response set.", "invalid"),
        ({"1": 4, "2": 1, "3": 1}, "ranks.1", "must be a whole number from 1 to 3, got 4.", "invalid"),
        ({"1": True, "2": 1, "3": 1}, "ranks.1", "must be a whole number from 1 to 3, got True.", "invalid"),
        ({"1": 1, "2": 1}, "ranks", "response 3 has no rank; every response of the set needs one.", "incomplete"),
        (
            {"1": 1, "2": 3, "3": 3},
            "ranks",
            "ranks must be dense (1, 2, 3, ... with ties sharing a rank and no gaps); got 1, 3.",
            "invalid",
        ),
    ],
)
def test_dense_rank_validation_says_what_is_wrong(raw, field, message, code):
    with pytest.raises(rules.RuleViolation) as exc:
        rules.ranks_validate(raw, [1, 2, 3], 3)
    assert (exc.value.field, exc.value.message, exc.value.code) == (field, message, code)


def test_dense_ranks_with_ties_are_accepted():
    assert rules.ranks_validate({"1": 2, "2": 1, "3": 2}, [1, 2, 3], 3) == {1: 2, 2: 1, 3: 2}


def test_pair_agreement_counts_a_tie_as_its_own_answer():
    first = rules.ranking_codes({"1": 1, "2": 2, "3": 2}, [1, 2, 3])  # 1>2, 1>3, 2=3
    second = rules.ranking_codes({"1": 1, "2": 3, "3": 2}, [1, 2, 3])  # 1>2, 1>3, 3>2
    assert first == {(1, 2): 1, (1, 3): 1, (2, 3): 0}
    assert rules.pair_agreement(first, second) == (2, 3)
    assert rules.ranking_agreement({1: 1, 2: 2, 3: 2}, {"1": 1, "2": 3, "3": 2}) == (2, 3)
    assert rules.ranking_agreement({1: 1, 2: 2}, {"1": 1}) == (0, 0)  # no pair both rank
    assert (rules.rate(2, 3), rules.rate(0, 0)) == (0.666667, None)


def test_majority_and_consensus_rules():
    assert rules.majority_outcome({"a": 2, "b": 1}) == "a"
    assert rules.majority_outcome({"a": 1, "b": 1}) == "tie"  # a split vote
    assert rules.majority_outcome({"tie": 3, "a": 1}) == "tie"
    assert rules.consensus_good_as_gold(0.7, 0.7) and not rules.consensus_good_as_gold(0.69, 0.7)


def test_kendall_w_on_a_worked_example_and_as_the_report_computes_it():
    # Three labelers over four responses, the third with a tie (mid-ranks 1, 2.5, 2.5, 4): column
    # sums 3, 7.5, 7.5, 12 around a mean of 7.5, S = 40.5; the tie term is 2^3 - 2 = 6.
    rank_lists = [[1, 2, 3, 4], [1, 3, 2, 4], [1, 2, 2, 3]]
    expected = round(12 * 40.5 / (9 * 60 - 3 * 6), 6)
    assert expected == 0.931034
    assert rules.kendall_w(rank_lists) == expected
    ids, w = metrics.kendalls_w(np.array(rank_lists), np.array([7, 7, 7]))
    assert ids.tolist() == [7] and round(float(w[0]), 6) == expected
    rng = np.random.default_rng(0)
    for _ in range(50):
        k, m = int(rng.integers(2, 6)), int(rng.integers(2, 6))
        lists = []
        for _ in range(m):
            raw = rng.integers(1, k + 1, size=k)
            dense = {v: i + 1 for i, v in enumerate(sorted(set(raw.tolist())))}
            lists.append([dense[v] for v in raw.tolist()])
        ours = rules.kendall_w(lists)
        _, theirs = metrics.kendalls_w(np.array(lists), np.zeros(m, dtype=np.int64))
        assert (ours is None and np.isnan(theirs[0])) or ours == round(float(theirs[0]), 6)
    assert rules.kendall_w([[1, 2]]) is None and rules.kendall_w([[1, 1], [1, 1]]) is None


def _sql_value(expression: str, **columns: object) -> object:
    with sqlite3.connect(":memory:") as connection:
        names = ", ".join(f"? AS {name}" for name in columns)
        return connection.execute(f"SELECT {expression} FROM (SELECT {names})", list(columns.values())).fetchone()[0]


def test_the_sql_fragments_say_what_the_python_rules_say():
    for required in range(1, 4):
        for submitted in range(0, 4):
            for live in range(0, 3):
                free = rules.slot_free(is_gold=False, required=required, submitted=submitted, live_leases=live)
                sql = rules.sql_slot_free(required="r", submitted="s", live_leases="l")
                assert bool(_sql_value(sql, r=required, s=submitted, l=live)) == free
                complete = rules.set_complete(required=required, submitted=submitted)
                assert (
                    bool(_sql_value(rules.sql_set_complete(required="r", submitted="s"), r=required, s=submitted))
                    == complete
                )
    for is_gold in (True, False):
        assert bool(_sql_value(rules.sql_fills("g"), g=is_gold)) == rules.set_fills(is_gold=is_gold)
        assert rules.slot_free(is_gold=True, required=1, submitted=5, live_leases=5)  # gold never fills
    for outcome, code in rules.OUTCOME_CODES.items():
        assert _sql_value(rules.sql_outcome_code("o"), o=outcome) == code


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("overlap", 0, "must be at least 1."),
        ("overlap", 50, None),
        ("overlap", 51, "must be at most 50, got 51."),
        ("lease_minutes", 1440, None),
        ("lease_minutes", 1441, "must be at most 1440, got 1441."),
        ("lease_minutes", 0, "must be at least 1."),
        ("k", 10, "must be between 2 and 9, got 10."),
        ("gold_rate", 1.5, "must be between 0 and 1, got 1.5."),
        ("qualification_items", 101, "must be at most 100, got 101."),
    ],
)
def test_project_bounds(field, value, problem):
    assert rules.project_bound_problem(field, value) == problem


def test_flag_keys():
    assert rules.flags_validate([{"key": "off_topic"}]) == [{"key": "off_topic", "label": "Off topic"}]
    for flags, field, message in [
        (
            [{"key": "Off topic"}],
            "flags[0]",
            "the key 'Off topic' may hold only lower-case letters, digits and underscores (at most 50).",
        ),
        (
            [{"key": "a" * 51}],
            "flags[0]",
            f"the key '{'a' * 51}' may hold only lower-case letters, digits and underscores (at most 50).",
        ),
        ([{"key": "x"}, {"key": "x"}], "flags[1]", "key 'x' appears twice."),
        ([{"label": "x"}], "flags[0]", "needs a non-empty 'key' and a 'label'."),
    ]:
        with pytest.raises(rules.RuleViolation) as exc:
            rules.flags_validate(flags)
        assert (exc.value.field, exc.value.message) == (field, message)
