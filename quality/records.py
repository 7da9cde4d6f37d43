"""The typed, versioned record of a stored agreement report (``AgreementReport.data``). Plain Python
(no Django): the refresh writes ``AgreementReportRecord.to_json()``, the API, the CSV tables and the
pages read ``AgreementReportRecord.from_json``, and nothing else interprets the stored dict.

``from_json`` reads every stored shape, including reports written before the record had a version
(``version`` missing: version 0), so old reports render as they did. ``to_json`` writes the keys in
the order the computation (``quality.agreement``, ``quality.report``) produces them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from quality.agreement import LOW_AGREEMENT_W

RECORD_VERSION = 1
POSITION_BIAS_WARN = 0.15  # how far from 0.5 the first-shown win rate may drift before it is marked
NOT_REQUIRED = "not_required"  # quality.models.QualificationState.NOT_REQUIRED, the default standing


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _float(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def _int(value: Any) -> int | None:
    return int(value) if _is_number(value) else None


def _count(value: Any) -> int:
    return int(value) if _is_number(value) else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _rows(value: Any) -> list[dict[str, Any]]:
    return [row for row in value if isinstance(row, dict)] if isinstance(value, list) else []


# --- the headline ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statistic:
    """One headline figure: its value, its bootstrap 95% interval (for the statistics that have one;
    None when the bootstrap had too little data) and what it was computed over (label pairs, raters
    per pair, sets, ranking pairs; None for the statistics that count nothing)."""

    value: float | None
    ci95: tuple[float, float] | None = None
    count: int | None = None


# Per headline statistic, in the report's order: whether it stores a 95% interval, and the key of its count.
HEADLINE_SHAPE: dict[str, tuple[bool, str | None]] = {
    "percent_agreement": (True, "pairs"),
    "percent_agreement_no_ties": (True, "pairs"),
    "krippendorff_alpha_ordinal": (True, None),
    "krippendorff_alpha_interval_ranks": (False, None),
    "fleiss_kappa": (False, "raters"),
    "kendall_w_mean": (False, "sets"),
    "kendall_tau_mean": (False, "ranking_pairs"),
    "consensus_confidence_mean": (False, None),
}


@dataclass(frozen=True)
class Headline:
    """The project's overall agreement; every statistic is None in a report of no comparisons."""

    percent_agreement: Statistic | None = None
    percent_agreement_no_ties: Statistic | None = None
    krippendorff_alpha_ordinal: Statistic | None = None
    krippendorff_alpha_interval_ranks: Statistic | None = None
    fleiss_kappa: Statistic | None = None
    kendall_w_mean: Statistic | None = None
    kendall_tau_mean: Statistic | None = None
    consensus_confidence_mean: Statistic | None = None

    def get(self, name: str) -> Statistic | None:
        """The statistic called ``name`` (a key of ``HEADLINE_SHAPE``)."""
        value: Statistic | None = getattr(self, name)
        return value

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (has_ci, count_key) in HEADLINE_SHAPE.items():
            stat = self.get(name)
            if stat is None:
                continue
            entry: dict[str, Any] = {"value": stat.value}
            if has_ci:
                entry["ci95"] = list(stat.ci95) if stat.ci95 is not None else None
            if count_key is not None:
                entry[count_key] = stat.count
            out[name] = entry
        return out

    @classmethod
    def from_json(cls, data: Any) -> Headline:
        data = _dict(data)
        stats: dict[str, Statistic] = {}
        for name, (_, count_key) in HEADLINE_SHAPE.items():
            entry = data.get(name)
            if not isinstance(entry, dict):
                continue
            ci = entry.get("ci95")
            ci95 = (float(ci[0]), float(ci[1])) if isinstance(ci, list | tuple) and len(ci) == 2 else None
            count = _int(entry.get(count_key)) if count_key is not None else None
            stats[name] = Statistic(value=_float(entry.get("value")), ci95=ci95, count=count)
        return cls(**stats)


# --- the tables -----------------------------------------------------------------------------------


class _Row:
    """A table row: stored as its fields, in their order."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class VersionRow(_Row):
    """Agreement on the label pairs made under one guideline version (None: no guideline)."""

    version: int | None
    percent_agreement: float | None
    pairs: int
    comparisons: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionRow:
        return cls(
            version=_int(data.get("version")) or None,
            percent_agreement=_float(data.get("percent_agreement")),
            pairs=_count(data.get("pairs")),
            comparisons=_count(data.get("comparisons")),
        )


@dataclass(frozen=True)
class TagRow(_Row):
    """Agreement on the sets whose prompt has one tag."""

    tag: str
    percent_agreement: float | None
    pairs: int
    sets: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TagRow:
        return cls(
            tag=str(data.get("tag", "")),
            percent_agreement=_float(data.get("percent_agreement")),
            pairs=_count(data.get("pairs")),
            sets=_count(data.get("sets")),
        )


@dataclass(frozen=True)
class LabelerRow(_Row):
    """One labeler: agreement with the others, their figures (None before the labeler figures were
    stored) and their gold standing when the report was computed."""

    labeler_id: int
    username: str
    percent_agreement: float | None
    pairs: int
    comparisons: int
    rankings: int
    reliability: float | None = None
    agreement_with_consensus: float | None = None
    position_bias: float | None = None
    fast_items: int | None = None
    intransitive_cycles: int | None = None
    median_time_ms: int | None = None
    gold_items: int = 0
    gold_accuracy: float | None = None
    qualification: str = NOT_REQUIRED

    @property
    def position_bias_skewed(self) -> bool:
        """The response shown first wins too often, or too rarely, to be chance."""
        return self.position_bias is not None and abs(self.position_bias - 0.5) > POSITION_BIAS_WARN

    def reliability_below(self, threshold: float | None) -> bool:
        """Below the project's reliability threshold (never when it has none)."""
        return bool(threshold) and self.reliability is not None and self.reliability < (threshold or 0.0)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelerRow:
        labeler_id = _count(data.get("labeler_id"))
        return cls(
            labeler_id=labeler_id,
            username=str(data.get("username", labeler_id)),
            percent_agreement=_float(data.get("percent_agreement")),
            pairs=_count(data.get("pairs")),
            comparisons=_count(data.get("comparisons")),
            rankings=_count(data.get("rankings")),
            reliability=_float(data.get("reliability")),
            agreement_with_consensus=_float(data.get("agreement_with_consensus")),
            position_bias=_float(data.get("position_bias")),
            fast_items=_int(data.get("fast_items")),
            intransitive_cycles=_int(data.get("intransitive_cycles")),
            median_time_ms=_int(data.get("median_time_ms")),
            gold_items=_count(data.get("gold_items")),
            gold_accuracy=_float(data.get("gold_accuracy")),
            qualification=str(data.get("qualification") or NOT_REQUIRED),
        )


@dataclass(frozen=True)
class LabelerPairRow(_Row):
    """Two labelers (``a`` < ``b``) on the label pairs both decided; Cohen's kappa once they share
    enough of them (``quality.agreement.MIN_PAIR_OVERLAP``)."""

    a: int
    b: int
    percent_agreement: float | None
    pairs: int
    cohens_kappa: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelerPairRow:
        return cls(
            a=_count(data.get("a")),
            b=_count(data.get("b")),
            percent_agreement=_float(data.get("percent_agreement")),
            pairs=_count(data.get("pairs")),
            cohens_kappa=_float(data.get("cohens_kappa")),
        )


@dataclass(frozen=True)
class DayRow(_Row):
    """Agreement on the label pairs completed on one day (ISO date)."""

    date: str
    percent_agreement: float | None
    pairs: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DayRow:
        return cls(
            date=str(data.get("date", "")),
            percent_agreement=_float(data.get("percent_agreement")),
            pairs=_count(data.get("pairs")),
        )


@dataclass(frozen=True)
class LowSetRow(_Row):
    """A response set whose Kendall's W is below the review threshold."""

    response_set_id: int
    kendall_w: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LowSetRow:
        return cls(response_set_id=_count(data.get("response_set_id")), kendall_w=_float(data.get("kendall_w")))


# --- the report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgreementReportRecord:
    """A project's agreement report as stored: counts, the headline, the tables (per guideline
    version, tag, labeler, labeler pair, day; the low-agreement sets, at most 500 of them), the
    Kendall's W summary and how long it took.

    ``low_agreement_count`` and ``kendall_w_threshold`` are None in a report of no comparisons (the
    computation stops before them) and are then left out of ``to_json``; ``low_count`` and
    ``review_threshold`` are what the pages show either way."""

    n_comparisons: int = 0
    n_rankings: int = 0
    n_labelers: int = 0
    n_sets: int = 0
    tie_handling: str = ""
    headline: Headline = field(default_factory=Headline)
    by_guideline_version: list[VersionRow] = field(default_factory=list)
    by_tag: list[TagRow] = field(default_factory=list)
    by_labeler: list[LabelerRow] = field(default_factory=list)
    by_labeler_pair: list[LabelerPairRow] = field(default_factory=list)
    over_time: list[DayRow] = field(default_factory=list)
    low_agreement_sets: list[LowSetRow] = field(default_factory=list)
    low_agreement_count: int | None = None
    kendall_w_threshold: float | None = None
    seconds: float | None = None
    load_seconds: float | None = None
    computed_at: str | None = None  # ISO 8601
    version: int = RECORD_VERSION

    @property
    def low_count(self) -> int:
        """How many sets are below the threshold (the list keeps at most 500)."""
        return self.low_agreement_count if self.low_agreement_count is not None else len(self.low_agreement_sets)

    @property
    def review_threshold(self) -> float:
        """The Kendall's W below which a set goes to review when this report was computed."""
        return self.kendall_w_threshold if self.kendall_w_threshold is not None else LOW_AGREEMENT_W

    @property
    def low_w(self) -> dict[int, float | None]:
        """Kendall's W of each low-agreement set, by set id."""
        return {row.response_set_id: row.kendall_w for row in self.low_agreement_sets}

    def labeler(self, labeler_id: int) -> LabelerRow | None:
        return next((row for row in self.by_labeler if row.labeler_id == labeler_id), None)

    def table(self, name: str) -> list[dict[str, Any]]:
        """One table's rows as stored (``name``: ``by_labeler``, ``by_tag``, ...)."""
        rows: list[Any] = getattr(self, name)
        return [row.to_json() for row in rows]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "n_comparisons": self.n_comparisons,
            "n_rankings": self.n_rankings,
            "n_labelers": self.n_labelers,
            "n_sets": self.n_sets,
            "tie_handling": self.tie_handling,
            "headline": self.headline.to_json(),
        }
        for name in TABLES:
            out[name] = self.table(name)
        if self.low_agreement_count is not None:
            out["low_agreement_count"] = self.low_agreement_count
        if self.kendall_w_threshold is not None:
            out["kendall_w_threshold"] = self.kendall_w_threshold
        out.update(seconds=self.seconds, load_seconds=self.load_seconds, computed_at=self.computed_at)
        return out

    @classmethod
    def computed(cls, report: dict[str, Any]) -> AgreementReportRecord:
        """The record of a report just computed (``quality.report.project_quality``), at this version."""
        return replace(cls.from_json(report), version=RECORD_VERSION)

    @classmethod
    def from_json(cls, data: Any) -> AgreementReportRecord:
        """Any stored shape: version 1, and the dict the refresh stored before (no ``version``)."""
        data = _dict(data)
        computed_at = data.get("computed_at")
        return cls(
            n_comparisons=_count(data.get("n_comparisons")),
            n_rankings=_count(data.get("n_rankings")),
            n_labelers=_count(data.get("n_labelers")),
            n_sets=_count(data.get("n_sets")),
            tie_handling=str(data.get("tie_handling") or ""),
            headline=Headline.from_json(data.get("headline")),
            by_guideline_version=[VersionRow.from_json(r) for r in _rows(data.get("by_guideline_version"))],
            by_tag=[TagRow.from_json(r) for r in _rows(data.get("by_tag"))],
            by_labeler=[LabelerRow.from_json(r) for r in _rows(data.get("by_labeler"))],
            by_labeler_pair=[LabelerPairRow.from_json(r) for r in _rows(data.get("by_labeler_pair"))],
            over_time=[DayRow.from_json(r) for r in _rows(data.get("over_time"))],
            low_agreement_sets=[LowSetRow.from_json(r) for r in _rows(data.get("low_agreement_sets"))],
            low_agreement_count=_int(data.get("low_agreement_count")),
            kendall_w_threshold=_float(data.get("kendall_w_threshold")),
            seconds=_float(data.get("seconds")),
            load_seconds=_float(data.get("load_seconds")),
            computed_at=str(computed_at) if computed_at is not None else None,
            version=_count(data.get("version")),
        )


TABLES = ("by_guideline_version", "by_tag", "by_labeler", "by_labeler_pair", "over_time", "low_agreement_sets")
