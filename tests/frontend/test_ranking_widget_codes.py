"""The ranking widget knows every refusal after which an item can never be saved."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# 409s of the submit that a resend with the same key cannot change, all but a reused key (the
# page's own bug, kept as an error to report).
RESENDABLE = {"idempotency_key_reused"}


def _widget_codes() -> set[str]:
    source = (ROOT / "frontend/static/frontend/ranking.js").read_text(encoding="utf-8")
    found = re.search(r"const ITEM_GONE_CODES = (\[[^\]]*\]);", source)
    assert found is not None
    return set(json.loads(found.group(1)))


def _submit_conflict_codes() -> set[str]:
    tree = ast.parse((ROOT / "annotation/services/ranking.py").read_text(encoding="utf-8"))
    codes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Conflict":
            codes |= {k.value.value for k in node.keywords if k.arg == "code" and isinstance(k.value, ast.Constant)}
    return codes


def test_the_widget_drops_the_draft_on_every_final_refusal_of_the_submit():
    final = _submit_conflict_codes() - RESENDABLE
    assert final == {"set_complete", "already_submitted", "already_skipped", "lease_expired"}
    assert final | {"not_found"} == _widget_codes()
