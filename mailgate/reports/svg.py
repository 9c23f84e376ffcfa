"""Charts as SVG text, for the weekly report mail and the web reports page: no JavaScript, no
fonts or scripts fetched from elsewhere, nothing but the figures given.

Each function is pure — figures in, one `<svg>` element out — so a web page can inline it and a
mail can carry it. Every label is XML-escaped (a group name is admin-written text). Each chart has
a <title> and a <desc>, and every bar or point a <title> with its value, for screen readers and
for hovering.

It must not query the database or read the clock; `report_charts` takes a finished `Report`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from mailgate.reports.figures import Report

__all__ = [
    "BUCKETS",
    "Series",
    "bar_chart",
    "bucket_counts",
    "line_chart",
    "report_charts",
    "response_distribution",
]

WIDTH, HEIGHT = 560, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 12, 28, 40
COLOURS = ("#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#c53030")


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple[float | None, ...]


def _nice_max(value: float, integer: bool = False) -> float:
    """The axis top: four gridline steps of 1, 2, 2.5 or 5 times a power of ten (whole steps for
    counts), reaching at least `value`."""
    raw = value / 4
    if raw <= 0:
        return 4.0
    magnitude = 1.0
    while magnitude * 10 <= raw:
        magnitude *= 10
    while magnitude > raw:
        magnitude /= 10
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = float(max(1, math.ceil(step)))
    return 4 * step


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _frame(title: str, desc: str, labels: Sequence[str], top: float, unit: str) -> list[str]:
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f"<desc>{escape(desc)}</desc>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{_LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    for i in range(5):
        value = top * i / 4
        y = _TOP + plot_h - plot_h * i / 4
        out.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        out.append(
            f'<text x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(value)}{escape(unit)}</text>'
        )
    n = max(len(labels), 1)
    every = max(1, -(-n // 12))  # at most a dozen labels under the axis
    for i, label in enumerate(labels):
        if i % every:
            continue
        x = _LEFT + plot_w * (i + 0.5) / n
        out.append(
            f'<text x="{x:.1f}" y="{HEIGHT - _BOTTOM + 14}" text-anchor="middle">{escape(label)}</text>'
        )
    return out


def _counts(series: Sequence[Series], unit: str) -> bool:
    return not unit and all(float(v).is_integer() for s in series for v in s.values if v is not None)


def _legend(series: Sequence[Series]) -> list[str]:
    out = []
    x = _LEFT
    for i, s in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        out.append(f'<rect x="{x}" y="{HEIGHT - 16}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{x + 14}" y="{HEIGHT - 7}">{escape(s.name)}</text>')
        x += 24 + 7 * len(s.name)
    return out


def bar_chart(
    title: str, labels: Sequence[str], series: Sequence[Series], *, unit: str = "", stacked: bool = False
) -> str:
    """Grouped (or stacked) bars, one group per label; None values draw nothing."""
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    n = max(len(labels), 1)
    if stacked:
        peak = max((sum(s.values[i] or 0 for s in series) for i in range(len(labels))), default=0)
    else:
        peak = max((v for s in series for v in s.values if v is not None), default=0)
    top = _nice_max(float(peak), _counts(series, unit))
    desc = "; ".join(
        f"{label}: "
        + ", ".join(
            f"{s.name} {'-' if s.values[i] is None else _fmt(float(s.values[i] or 0))}{unit}" for s in series
        )
        for i, label in enumerate(labels)
    )
    out = _frame(title, desc, labels, top, unit)
    slot = plot_w / n
    width = slot * 0.8 / (1 if stacked else max(len(series), 1))
    for i, label in enumerate(labels):
        base: float = _TOP + plot_h
        for j, s in enumerate(series):
            value = s.values[i]
            if value is None:
                continue
            h = plot_h * value / top
            x = _LEFT + slot * i + slot * 0.1 + (0 if stacked else width * j)
            y = base - h
            colour = COLOURS[j % len(COLOURS)]
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(label)} {escape(s.name)}: {_fmt(float(value))}{escape(unit)}</title></rect>"
            )
            if stacked:
                base = y
    out += _legend(series)
    out.append("</svg>")
    return "\n".join(out)


def line_chart(title: str, labels: Sequence[str], series: Sequence[Series], *, unit: str = "") -> str:
    """Lines with a dot per value, one per series; a None value breaks the line."""
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    n = max(len(labels), 1)
    peak = max((v for s in series for v in s.values if v is not None), default=0)
    top = _nice_max(float(peak))
    desc = "; ".join(
        f"{label}: "
        + ", ".join(
            f"{s.name} {'-' if s.values[i] is None else _fmt(float(s.values[i] or 0))}{unit}" for s in series
        )
        for i, label in enumerate(labels)
    )
    out = _frame(title, desc, labels, top, unit)
    for j, s in enumerate(series):
        colour = COLOURS[j % len(COLOURS)]
        points: list[str] = []
        runs: list[list[str]] = [points]
        for i, value in enumerate(s.values):
            if value is None:
                points = []
                runs.append(points)
                continue
            x = _LEFT + plot_w * (i + 0.5) / n
            y = _TOP + plot_h - plot_h * value / top
            points.append(f"{x:.1f},{y:.1f}")
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                f"<title>{escape(labels[i])} {escape(s.name)}: {_fmt(float(value))}{escape(unit)}</title></circle>"
            )
        for run in runs:
            if len(run) > 1:
                out.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="2"/>'
                )
    out += _legend(series)
    out.append("</svg>")
    return "\n".join(out)


def report_charts(report: Report) -> dict[str, str]:
    """The four pictures of a report, by name: volume and backlog over time, response times,
    SLA attainment, satisfaction (the distribution of ratings over the whole range)."""
    labels = [r.label for r in report.rows]

    def hours(value: float | None) -> float | None:
        return None if value is None else round(value / 3600, 2)

    total = report.total
    return {
        "volume": bar_chart(
            "Tickets created and backlog",
            labels,
            [
                Series("created", tuple(float(r.created) for r in report.rows)),
                Series("open at end", tuple(float(r.backlog["open"]) for r in report.rows)),
                Series("waiting at end", tuple(float(r.backlog["waiting"]) for r in report.rows)),
            ],
        ),
        "response_times": line_chart(
            "Business hours to first response and resolution (median)",
            labels,
            [
                Series("first response", tuple(hours(r.first_response.median) for r in report.rows)),
                Series("resolution", tuple(hours(r.resolution.median) for r in report.rows)),
            ],
            unit="h",
        ),
        "sla": bar_chart(
            "SLA targets met",
            labels,
            [
                Series("first response", tuple(r.attainment("first_response") for r in report.rows)),
                Series("resolution", tuple(r.attainment("resolution") for r in report.rows)),
            ],
            unit="%",
        ),
        "satisfaction": bar_chart(
            f"Ratings ({total.rating_count}, average "
            + ("-" if total.rating_average is None else f"{total.rating_average:.1f}")
            + ")",
            [f"{k}★" for k in range(1, 6)],
            [Series("ratings", tuple(float(total.ratings[k]) for k in range(1, 6)))],
        ),
    }


# Business-hours buckets of the response-time distribution: (label, upper bound in hours).
BUCKETS = (
    ("< 1h", 1.0),
    ("1-4h", 4.0),
    ("4-8h", 8.0),
    ("8-24h", 24.0),
    ("24-72h", 72.0),
    ("72h +", math.inf),
)


def bucket_counts(seconds: Sequence[float]) -> tuple[int, ...]:
    """How many durations fall in each of BUCKETS (lower bound included, upper excluded)."""
    counts = [0] * len(BUCKETS)
    for s in seconds:
        hours = s / 3600
        counts[next(i for i, (_, upper) in enumerate(BUCKETS) if hours < upper)] += 1
    return tuple(counts)


def response_distribution(report: Report) -> str:
    """How many first responses and resolutions of the whole range took how long (business
    hours): the shape behind the medians, where a few very late tickets show."""
    total = report.total
    return bar_chart(
        "How long first responses and resolutions took (business hours)",
        [label for label, _ in BUCKETS],
        [
            Series("first responses", tuple(float(n) for n in bucket_counts(total.first_response.values))),
            Series("resolutions", tuple(float(n) for n in bucket_counts(total.resolution.values))),
        ],
    )
