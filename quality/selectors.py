"""Reads of the quality app: the stored report and its CSV tables, labelers' standing, the review
queue, a set's review detail and the drill-down behind a number of the report."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Max
from django.utils import timezone

from annotation import rules
from annotation.models import Project, Ranking, ResponseSet, ResponseSetItem
from annotation.selectors import preference_sets
from labelers.models import LabelerProfile, LabelerStatus
from quality.models import AUTO_PAUSE_PREFIX, AgreementReport, LabelerQuality, ResponseSetConsensus
from quality.records import AgreementReportRecord

# Column order per table (JSON storage on PostgreSQL does not keep key order).
CSV_COLUMNS = {
    "by_labeler": [
        "labeler_id",
        "username",
        "percent_agreement",
        "pairs",
        "comparisons",
        "rankings",
        "agreement_with_consensus",
        "gold_items",
        "gold_accuracy",
        "qualification",
        "reliability",
        "position_bias",
        "fast_items",
        "intransitive_cycles",
        "median_time_ms",
    ],
    "by_labeler_pair": ["a", "b", "percent_agreement", "pairs", "cohens_kappa"],
    "by_guideline_version": ["version", "percent_agreement", "pairs", "comparisons"],
    "by_tag": ["tag", "percent_agreement", "pairs", "sets"],
    "over_time": ["date", "percent_agreement", "pairs"],
    "low_agreement_sets": ["response_set_id", "kendall_w"],
}
CSV_TABLES = tuple(CSV_COLUMNS)


@dataclass(frozen=True)
class LatestReport:
    """The newest stored report of a project and how fresh it is: ``status`` missing, fresh or
    stale, computed when, and how many rankings it has not seen."""

    status: str
    computed_at: str | None  # ISO 8601
    age_seconds: float | None
    rankings_not_included: int
    report: AgreementReportRecord | None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "computed_at": self.computed_at,
            "age_seconds": self.age_seconds,
            "rankings_not_included": self.rankings_not_included,
            "report": self.report.to_json() if self.report is not None else None,
        }


def agreement_report_latest(*, project: Project) -> LatestReport:
    """The stored report with how fresh it is: computed when, and how many rankings it has not seen."""
    report = AgreementReport.objects.filter(project=project).first()
    newest = Ranking.objects.filter(response_set__project=project).aggregate(m=Max("id"))["m"] or 0
    if report is None:
        unseen = Ranking.objects.filter(response_set__project=project).count()
        return LatestReport("missing", None, None, unseen, None)
    unseen = Ranking.objects.filter(response_set__project=project, id__gt=report.last_ranking_id).count()
    return LatestReport(
        status="fresh" if report.last_ranking_id >= newest else "stale",
        computed_at=report.computed_at.isoformat(),
        age_seconds=round((timezone.now() - report.computed_at).total_seconds(), 1),
        rankings_not_included=unseen,
        report=AgreementReportRecord.from_json(report.data),
    )


def agreement_table_csv(*, report: AgreementReportRecord, table: str) -> str:
    """One table of a report as CSV."""
    rows = report.table(table)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS[table])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# --- review and drill-down pages ------------------------------------------------------------------

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DRILLDOWN_LIMIT = 500


def labeler_standing(*, project: Project, labeler_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Each labeler's override flag and account status now (the stored report may be older)."""
    overrides = dict(
        LabelerQuality.objects.filter(project=project, labeler_id__in=labeler_ids).values_list("labeler_id", "override")
    )
    profiles: dict[int, dict[str, Any]] = {
        row["user_id"]: dict(row)
        for row in LabelerProfile.objects.filter(user_id__in=labeler_ids).values("user_id", "status", "status_reason")
    }
    out = {}
    for labeler_id in labeler_ids:
        profile: dict[str, Any] = profiles.get(labeler_id, {})
        paused = profile.get("status") == LabelerStatus.PAUSED
        out[labeler_id] = {
            "override": bool(overrides.get(labeler_id, False)),
            "paused": paused,
            "auto_paused": paused and str(profile.get("status_reason", "")).startswith(AUTO_PAUSE_PREFIX),
            "status_reason": profile.get("status_reason", ""),
        }
    return out


def _latest_low_w(project: Project) -> dict[int, float | None]:
    report = AgreementReport.objects.filter(project=project).only("data").first()
    return AgreementReportRecord.from_json(report.data).low_w if report is not None else {}


def _excerpt(text: str, limit: int = 140) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _prompt_text(prompt: Any) -> str:
    if prompt.messages:
        return " / ".join(str(message.get("content", "")) for message in prompt.messages)
    return str(prompt.text)


def review_queue(*, project: Project, state: str = "needs_review") -> list[dict[str, Any]]:
    """Response sets in one review state, lowest Kendall's W first, with their consensus confidence."""
    low_w = _latest_low_w(project)
    sets = (
        ResponseSet.objects.filter(project=project, review_state=state)
        .select_related("prompt", "consensus")
        .annotate(n_rankings=Count("rankings"))
        .order_by("id")
    )
    rows = []
    for response_set in sets:
        consensus = getattr(response_set, "consensus", None)
        rows.append(
            {
                "response_set_id": response_set.pk,
                "prompt": _excerpt(_prompt_text(response_set.prompt)),
                "tags": response_set.prompt.tags or [],
                "rankings": response_set.n_rankings,
                "required": response_set.required_count,
                "kendall_w": low_w.get(response_set.pk),
                "confidence": consensus.confidence if consensus is not None else None,
                "is_gold": response_set.is_gold,
            }
        )
    rows.sort(key=lambda row: (row["kendall_w"] is None, row["kendall_w"] or 0.0, row["response_set_id"]))
    return rows


def review_counts(*, project: Project) -> dict[str, int]:
    """How many sets are in each review state (the empty state left out)."""
    counts = dict(
        ResponseSet.objects.filter(project=project)
        .exclude(review_state="")
        .values_list("review_state")
        .annotate(n=Count("id"))
        .values_list("review_state", "n")
    )
    return {state: counts.get(state, 0) for state in ("needs_review", "more_labels", "accepted")}


def response_set_review_detail(*, response_set: Any) -> dict[str, Any]:
    """Every labeler's ranking of one set side by side (responses in their canonical order), with
    Likert scores, flags, comments and time, the consensus and the set's own agreement figures."""
    project = response_set.project
    items = list(response_set.items.select_related("response").order_by("position"))
    response_ids = [item.response_id for item in items]
    letter = {pk: LETTERS[index] for index, pk in enumerate(response_ids)}
    flag_labels = {flag.get("key"): flag.get("label", flag.get("key")) for flag in project.flags or []}
    consensus = ResponseSetConsensus.objects.filter(response_set=response_set).first()
    consensus_codes = rules.ranking_codes(consensus.ranks, response_ids) if consensus is not None else {}
    rankings = list(
        Ranking.objects.filter(response_set=response_set).select_related("labeler", "guideline").order_by("id")
    )
    columns = []
    codes = []
    for ranking in rankings:
        mine = rules.ranking_codes(ranking.ranks, response_ids)
        codes.append(mine)
        agreed, total = rules.pair_agreement(mine, consensus_codes)
        columns.append(
            {
                "ranking_id": ranking.pk,
                "labeler_id": ranking.labeler_id,
                "username": ranking.labeler.get_username(),
                "guideline_version": ranking.guideline.version if ranking.guideline else None,
                "time_ms": ranking.time_spent_ms,
                "comment": ranking.comment,
                "pairwise_choice": ranking.pairwise_choice,
                "seen_order": "".join(letter.get(int(pk), "?") for pk in ranking.display_order),
                "agreement_with_consensus": rules.rate(agreed, total),
                "accepted": consensus is not None and consensus.accepted_ranking_id == ranking.pk,
                "created_at": ranking.created_at,
            }
        )
    rows = []
    for item in items:
        key = str(item.response_id)
        rows.append(
            {
                "response_id": item.response_id,
                "letter": letter[item.response_id],
                "text": item.response.text,
                "consensus_rank": consensus.ranks.get(key) if consensus is not None else None,
                "consensus_score": (consensus.scores or {}).get(key) if consensus is not None else None,
                "gold_rank": (response_set.gold_ranks or {}).get(key) if response_set.is_gold else None,
                "cells": [
                    {
                        "rank": ranking.ranks.get(key),
                        "score": (ranking.scores or {}).get(key),
                        "flags": [flag_labels.get(flag, flag) for flag in (ranking.flags or {}).get(key, [])],
                    }
                    for ranking in rankings
                ],
            }
        )
    agreed = total = 0
    for i, first in enumerate(codes):
        for second in codes[i + 1 :]:
            a, t = rules.pair_agreement(first, second)
            agreed, total = agreed + a, total + t
    rank_lists = [[int(ranking.ranks.get(str(pk), 0)) for pk in response_ids] for ranking in rankings]
    return {
        "response_set": response_set,
        "rows": rows,
        "rankings": columns,
        "consensus": None
        if consensus is None
        else {
            "confidence": consensus.confidence,
            "source": consensus.source,
            "source_label": consensus.get_source_display(),
            "accepted_ranking_id": consensus.accepted_ranking_id,
            "order": _order_text(consensus.ranks, letter),
        },
        "percent_agreement": rules.rate(agreed, total),
        "pairs": total,
        "kendall_w": rules.kendall_w(rank_lists),
        "review_state": response_set.review_state,
        "review_state_label": response_set.get_review_state_display(),
        "is_gold": response_set.is_gold,
        "gold_order": _order_text(response_set.gold_ranks or {}, letter) if response_set.is_gold else "",
    }


def _order_text(ranks: dict[str, int], letter: dict[int, str]) -> str:
    """Ranks as ``A > B = C``: best first, ties joined by ``=``."""
    groups: dict[int, list[str]] = {}
    for pk, rank in ranks.items():
        groups.setdefault(int(rank), []).append(letter.get(int(pk), "?"))
    return " > ".join(" = ".join(sorted(groups[rank])) for rank in sorted(groups))


def agreement_drilldown(
    *,
    project: Project,
    labeler_id: int | None = None,
    pair: tuple[int, int] | None = None,
    tag: str | None = None,
    version: int | None = None,
    low: bool = False,
) -> dict[str, Any]:
    """The response sets behind one number of the agreement report, each with the agreement that
    number counts on it: the pair's own decisions, the labeler's against the others, the label
    pairs made under one guideline version, or all of a set's label pairs (tag, low agreement).
    Lowest agreement first."""
    sets = preference_sets(project=project)
    if labeler_id is not None:
        sets = sets.filter(rankings__labeler_id=labeler_id)
    if pair is not None:
        sets = sets.filter(rankings__labeler_id=pair[0]).filter(rankings__labeler_id=pair[1])
    if version is not None:
        sets = sets.filter(rankings__guideline__version=version) if version else sets.filter(rankings__guideline=None)
    low_w = _latest_low_w(project)
    if low:
        sets = sets.filter(id__in=list(low_w))
    candidates = list(sets.distinct().select_related("prompt").order_by("id"))
    if tag is not None:
        # JSON containment is not portable to SQLite; tags are short lists.
        candidates = [s for s in candidates if tag in (s.prompt.tags or [])]
    by_set: dict[int, list[Ranking]] = {}
    for ranking in (
        Ranking.objects.filter(response_set_id__in=[s.pk for s in candidates])
        .select_related("guideline")
        .order_by("id")
        .only("id", "response_set_id", "labeler_id", "ranks", "guideline__version")
    ):
        by_set.setdefault(ranking.response_set_id, []).append(ranking)
    items = _set_response_ids([s.pk for s in candidates])
    rows: list[dict[str, Any]] = []
    for response_set in candidates:
        rankings = by_set.get(response_set.pk, [])
        response_ids = items.get(response_set.pk, [])
        coded = [(r, rules.ranking_codes(r.ranks, response_ids)) for r in rankings]
        agreed = total = 0
        for i, (first, first_codes) in enumerate(coded):
            for second, second_codes in coded[i + 1 :]:
                if first.labeler_id == second.labeler_id:
                    continue
                if labeler_id is not None and labeler_id not in (first.labeler_id, second.labeler_id):
                    continue
                if pair is not None and {first.labeler_id, second.labeler_id} != set(pair):
                    continue
                if version is not None and not (_version(first) == _version(second) == version):
                    continue
                a, t = rules.pair_agreement(first_codes, second_codes)
                agreed, total = agreed + a, total + t
        rows.append(
            {
                "response_set_id": response_set.pk,
                "prompt": _excerpt(_prompt_text(response_set.prompt)),
                "rankings": len(rankings),
                "percent_agreement": rules.rate(agreed, total),
                "agreeing": agreed,
                "pairs": total,
                "kendall_w": low_w.get(response_set.pk),
                "review_state": response_set.review_state,
                "review_state_label": response_set.get_review_state_display() if response_set.review_state else "",
                "is_gold": response_set.is_gold,
            }
        )
    rows.sort(
        key=lambda row: (row["percent_agreement"] is None, row["percent_agreement"] or 0.0, row["response_set_id"])
    )
    agreeing, pairs = sum(row["agreeing"] for row in rows), sum(row["pairs"] for row in rows)
    return {
        "sets": rows[:DRILLDOWN_LIMIT],
        "total": len(rows),
        "agreeing": agreeing,
        "pairs": pairs,
        "percent_agreement": rules.rate(agreeing, pairs),
        "truncated": len(rows) > DRILLDOWN_LIMIT,
    }


def _version(ranking: Ranking) -> int:
    return ranking.guideline.version if ranking.guideline is not None else 0


def _set_response_ids(set_ids: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for set_id, response_id in (
        ResponseSetItem.objects.filter(response_set_id__in=set_ids)
        .order_by("response_set_id", "position")
        .values_list("response_set_id", "response_id")
    ):
        out.setdefault(set_id, []).append(response_id)
    return out
