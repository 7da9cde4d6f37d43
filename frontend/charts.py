"""Chart geometry for the quality and training pages. The templates draw it as inline SVG: no chart
library to vendor, and the page reads the same with scripts off."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quality.records import DayRow

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 16, 12, 34  # room for the axis labels


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    value: float
    n: int
    text: str = ""  # the value as shown in the tooltip


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: float | None
    n: int
    href: str = ""

    @property
    def cx(self) -> float:
        return round(self.x + self.width / 2, 1)


@dataclass
class Chart:
    width: int = WIDTH
    height: int = HEIGHT
    points: list[Point] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    path: str = ""
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    reference: tuple[float, str] | None = None  # a dashed line across, e.g. the overall agreement
    left: int = LEFT
    right: int = WIDTH - RIGHT
    bottom: float = HEIGHT - BOTTOM
    show_dots: bool = True


def _y(value: float) -> float:
    """A share in 0..1 to a y coordinate (0 at the bottom)."""
    return round(TOP + (1.0 - max(0.0, min(1.0, value))) * (HEIGHT - TOP - BOTTOM), 1)


def _y_ticks() -> list[tuple[float, str]]:
    return [(_y(v / 100), f"{v}%") for v in (0, 25, 50, 75, 100)]


def agreement_over_time(rows: list[DayRow], *, overall: float | None = None) -> Chart:
    """Percent agreement per day as a line; days without label pairs leave a gap in the x axis."""
    chart = Chart(y_ticks=_y_ticks())
    dated = [
        (dt.date.fromisoformat(row.date), row.percent_agreement, row.pairs)
        for row in rows
        if row.percent_agreement is not None
    ]
    if overall is not None:
        chart.reference = (_y(overall), f"all days {overall * 100:.1f}%")
    if not dated:
        return chart
    first, last = dated[0][0], dated[-1][0]
    span = max((last - first).days, 1)
    inner = WIDTH - LEFT - RIGHT
    for day, value, pairs in dated:
        x = LEFT + inner / 2 if first == last else LEFT + inner * (day - first).days / span
        chart.points.append(Point(round(x, 1), _y(value), day.isoformat(), value, pairs))
    chart.path = "M" + " L".join(f"{p.x},{p.y}" for p in chart.points)
    step = max(1, len(chart.points) // 6)
    chart.x_ticks = [(p.x, p.label[5:]) for p in chart.points[::step]]
    return chart


def agreement_bars(items: list[tuple[str, float | None, int, str]]) -> Chart:
    """One bar per (label, share, label pairs, link), e.g. per guideline version."""
    chart = Chart(y_ticks=_y_ticks())
    if not items:
        return chart
    inner = WIDTH - LEFT - RIGHT
    slot = inner / len(items)
    width = min(60.0, slot * 0.7)
    for index, (label, value, n, href) in enumerate(items):
        x = LEFT + slot * index + (slot - width) / 2
        top = _y(value or 0.0)
        chart.bars.append(Bar(round(x, 1), top, round(width, 1), round(chart.bottom - top, 1), label, value, n, href))
        chart.x_ticks.append((round(x + width / 2, 1), label))
    return chart


def heat_color(value: float | None) -> str:
    """Red through amber to green for 0..1 agreement; grey where there is nothing to show."""
    if value is None:
        return "#f1f3f6"
    hue = round(120 * max(0.0, min(1.0, value)))
    return f"hsl({hue}, 62%, 82%)"


MAX_LINE_POINTS = 400  # a long run's series is thinned to this many points; the last one is kept
MAX_DOTS = 60


def _value_text(value: float, percent: bool) -> str:
    return f"{value * 100:.1f}%" if percent else f"{value:.4g}"


def _tick_text(value: float, percent: bool) -> str:
    return f"{value * 100:.1f}%" if percent else f"{value:.3g}"


def series_chart(
    series: list[Any] | None,
    *,
    percent: bool = False,
    reference: float | None = None,
    reference_label: str = "",
) -> Chart:
    """A metric over training steps, ``[[step, value], ...]``, as a line on an axis fitted to the
    values (and to the reference line, so that it is always in view)."""
    chart = Chart()
    pairs = [
        (float(item[0]), float(item[1]))
        for item in series or []
        if isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(v, int | float) for v in item)
    ]
    if len(pairs) > MAX_LINE_POINTS:
        stride = len(pairs) / MAX_LINE_POINTS
        pairs = [pairs[int(i * stride)] for i in range(MAX_LINE_POINTS - 1)] + [pairs[-1]]
    values = [v for _, v in pairs] + ([reference] if reference is not None else [])
    if not values:
        return chart
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.1 or 1.0
    low, high = low - pad, high + pad
    inner_h = HEIGHT - TOP - BOTTOM

    def y(value: float) -> float:
        return round(TOP + (high - value) / (high - low) * inner_h, 1)

    chart.y_ticks = [(y(low + (high - low) * i / 4), _tick_text(low + (high - low) * i / 4, percent)) for i in range(5)]
    if reference is not None:
        chart.reference = (y(reference), f"{reference_label} {_value_text(reference, percent)}".strip())
    if not pairs:
        return chart
    first, last = pairs[0][0], pairs[-1][0]
    span = (last - first) or 1.0
    inner_w = WIDTH - LEFT - RIGHT
    for step, value in pairs:
        x = LEFT + inner_w / 2 if first == last else LEFT + inner_w * (step - first) / span
        chart.points.append(
            Point(round(x, 1), y(value), f"{step:g}", value, int(step), text=_value_text(value, percent))
        )
    chart.path = "M" + " L".join(f"{p.x},{p.y}" for p in chart.points)
    chart.show_dots = len(chart.points) <= MAX_DOTS
    if first == last:
        chart.x_ticks = [(chart.points[0].x, f"{first:g}")]
    else:
        # labels on whole steps, placed where those steps are; a short run gets one per step
        ticks = max(1, min(6, int(last - first)))
        steps = sorted({round(first + span * i / ticks) for i in range(ticks + 1)})
        chart.x_ticks = [(round(LEFT + inner_w * (step - first) / span, 1), str(step)) for step in steps]
    return chart


# --- the leaderboard: one row per model version, its rating with the 95% interval as a horizontal bar


RATING_ROW = 30  # px per row
RATING_TOP, RATING_BOTTOM, RATING_RIGHT = 12, 44, 28  # bottom: tick labels and the axis title
NAME_CHARS = 28  # longer names are shortened on the chart (the table and the tooltip have them whole)
CHAR_WIDTH = 6.6  # px per character of an 11px tick label, generously
REFERENCE_RATING = 1000.0  # the ratings' mean, by construction


@dataclass(frozen=True)
class ErrorBar:
    y: float  # the row's centre line
    x: float  # the rating
    low: float  # where the 95% interval starts and ends (x); both equal x without an interval
    high: float
    label: str  # the name shown left of the row, shortened to fit
    title: str  # the tooltip: the whole name, rating and interval

    @property
    def cap_top(self) -> float:
        return round(self.y - 6, 1)

    @property
    def cap_bottom(self) -> float:
        return round(self.y + 6, 1)


@dataclass
class IntervalChart:
    width: int = WIDTH
    height: int = HEIGHT
    left: float = LEFT
    right: float = WIDTH - RATING_RIGHT
    top: float = RATING_TOP
    bottom: float = HEIGHT - RATING_BOTTOM
    bars: list[ErrorBar] = field(default_factory=list)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    reference: tuple[float, str] | None = None  # a dashed line down, at the mean rating
    x_title: str = ""

    @property
    def label_x(self) -> float:
        """Where the names end, right-aligned left of the plot."""
        return round(self.left - 8, 1)

    @property
    def tick_y(self) -> float:
        return round(self.bottom + 16, 1)

    @property
    def title_x(self) -> float:
        return round((self.left + self.right) / 2, 1)

    @property
    def title_y(self) -> float:
        return round(self.bottom + 34, 1)


def _nice_step(span: float, count: int) -> float:
    """A tick step of 1, 2 or 5 times a power of ten that cuts ``span`` into about ``count`` parts."""
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _short(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def rating_chart(rows: list[tuple[str, float, tuple[float, float] | None]]) -> IntervalChart:
    """(name, rating, 95% interval) per row, best first, as dots with horizontal error bars on a
    rating axis whose ends are ticks; the left margin fits the longest (shortened) name."""
    longest = max((len(_short(name)) for name, _, _ in rows), default=4)
    left = round(min(max(LEFT, longest * CHAR_WIDTH + 14), WIDTH / 2), 1)
    height = RATING_TOP + max(len(rows), 1) * RATING_ROW + RATING_BOTTOM
    chart = IntervalChart(height=height, left=left, bottom=height - RATING_BOTTOM, x_title="Rating (Elo scale)")
    if not rows:
        return chart
    values = [REFERENCE_RATING]
    for _, rating, ci in rows:
        values += [rating, *(ci or ())]
    low, high = min(values), max(values)
    step = _nice_step((high - low) or 100.0, 5)
    low, high = math.floor(low / step) * step, math.ceil(high / step) * step
    if high == low:
        low, high = low - step, high + step
    inner = chart.right - chart.left

    def x(value: float) -> float:
        return round(chart.left + (value - low) / (high - low) * inner, 1)

    ticks = round((high - low) / step)
    chart.x_ticks = [(x(low + step * i), f"{low + step * i:g}") for i in range(ticks + 1)]
    chart.reference = (x(REFERENCE_RATING), f"mean {REFERENCE_RATING:g}")
    for index, (name, rating, ci) in enumerate(rows):
        y = round(RATING_TOP + RATING_ROW * (index + 0.5), 1)
        interval = f", 95% interval {ci[0]:.0f} – {ci[1]:.0f}" if ci else ""
        chart.bars.append(
            ErrorBar(
                y=y,
                x=x(rating),
                low=x(ci[0]) if ci else x(rating),
                high=x(ci[1]) if ci else x(rating),
                label=_short(name),
                title=f"{name}: {rating:.0f}{interval}",
            )
        )
    return chart
