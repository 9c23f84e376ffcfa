"""A `Report` as people and programs read it: a text table, CSV (one header row, one row per
period or group-by value, then the total), or one JSON object with the same figures and the period.

Durations are hours with two decimals in CSV and JSON, "3h 20m" in text; percentages 0-100 with
one decimal; a figure with nothing to measure is empty (CSV), null (JSON) or "-" (text).
It must not query the database: everything comes in the `Report`.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any
from zoneinfo import ZoneInfo

from mailgate.reports.figures import CHANNELS, TARGETS, Report, Row, hours, span_text

__all__ = ["CSV_COLUMNS", "to_csv", "to_json", "to_text", "row_dict"]

CSV_COLUMNS = (
    "period",
    "created",
    *(f"created_{c}" for c in CHANNELS),
    "replies_in",
    "replies_out",
    "reopened",
    "backlog_open",
    "backlog_waiting",
    "first_response_count",
    "first_response_median_h",
    "first_response_p90_h",
    "resolution_count",
    "resolution_median_h",
    "resolution_p90_h",
    "sla_first_response_met",
    "sla_first_response_breached",
    "sla_first_response_pct",
    "sla_resolution_met",
    "sla_resolution_breached",
    "sla_resolution_pct",
    "ratings",
    "rating_avg",
    *(f"rating_{k}" for k in range(1, 6)),
    "surveyed",
    "survey_response_pct",
)


def _pct(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def row_dict(r: Row) -> dict[str, Any]:
    """One row's figures, flat, keyed as the CSV columns (the first, `period`, is the label)."""
    out: dict[str, Any] = {
        "period": r.label,
        "created": r.created,
        **{f"created_{c}": r.created_by_channel[c] for c in CHANNELS},
        "replies_in": r.replies_in,
        "replies_out": r.replies_out,
        "reopened": r.reopened,
        "backlog_open": r.backlog["open"],
        "backlog_waiting": r.backlog["waiting"],
    }
    for name, d in (("first_response", r.first_response), ("resolution", r.resolution)):
        out[f"{name}_count"] = d.count
        out[f"{name}_median_h"] = hours(d.median)
        out[f"{name}_p90_h"] = hours(d.p90)
    for t in TARGETS:
        out[f"sla_{t}_met"] = r.sla_met[t]
        out[f"sla_{t}_breached"] = r.sla_breached[t]
        out[f"sla_{t}_pct"] = _pct(r.attainment(t))
    out["ratings"] = r.rating_count
    avg = r.rating_average
    out["rating_avg"] = None if avg is None else round(avg, 2)
    for k in range(1, 6):
        out[f"rating_{k}"] = r.ratings[k]
    out["surveyed"] = r.surveyed
    out["survey_response_pct"] = _pct(r.response_rate)
    return out


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in [*report.rows, report.total]:
        writer.writerow({k: "" if v is None else v for k, v in row_dict(r).items()})
    return buf.getvalue()


def to_json(report: Report) -> str:
    p = report.periods
    data = {
        "since": p.since.isoformat(),
        "until": p.until.isoformat(),
        "timezone": p.tz,
        "by": report.by,
        "filters": {"desk": report.scope.desk, "group": report.scope.group, "agent": report.scope.agent},
        "rows": [row_dict(r) for r in report.rows],
        "total": row_dict(report.total),
        "sla_breaches_by_policy": [
            {"policy": policy, "target": target, "breaches": n}
            for (policy, target), n in sorted(report.breaches_by_policy.items())
        ],
        "comments": [
            {"ticket": c.key, "rating": c.rating, "comment": c.comment, "at": c.at.isoformat()}
            for c in report.comments
        ],
        "workload": [
            {
                "kind": w.kind,
                "name": w.name,
                "assigned": w.assigned,
                "resolved": w.resolved,
                "open_now": w.open_now,
            }
            for w in report.workload
        ],
    }
    return json.dumps(data, indent=2) + "\n"


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _table(head: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(  # noqa: E731 - a local formatter
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    return [line(head), line(["-" * w for w in widths]), *(line(b) for b in body)]


def to_text(report: Report, comments: int = 20) -> str:
    """Readable tables: volume and backlog, times, SLA, satisfaction, then breaches, workload and
    the latest `comments` comments."""
    p = report.periods
    rows = [*report.rows, report.total]
    first = report.by or "period"
    zone = ZoneInfo(p.tz)
    out = [
        f"Report {p.since.astimezone(zone):%Y-%m-%d %H:%M} – {p.until.astimezone(zone):%Y-%m-%d %H:%M}"
        f" ({p.tz}), by {report.by or 'whole range'}"
        + "".join(f", {k} {v}" for k, v in vars(report.scope).items() if v),
        "",
        "Volume and backlog (backlog at the end of each period)",
    ]
    out += _table(
        [first, "created", "smtp", "imap", "pipe", "in", "out", "reopened", "open", "waiting"],
        [
            [
                r.label,
                str(r.created),
                *(str(r.created_by_channel[c]) for c in CHANNELS),
                str(r.replies_in),
                str(r.replies_out),
                str(r.reopened),
                str(r.backlog["open"]),
                str(r.backlog["waiting"]),
            ]
            for r in rows
        ],
    )
    out += ["", "Times in business hours (first response, resolution)"]
    out += _table(
        [first, "answered", "median", "p90", "resolved", "median", "p90"],
        [
            [
                r.label,
                str(r.first_response.count),
                span_text(r.first_response.median),
                span_text(r.first_response.p90),
                str(r.resolution.count),
                span_text(r.resolution.median),
                span_text(r.resolution.p90),
            ]
            for r in rows
        ],
    )
    out += ["", "SLA attainment (targets decided in the period)"]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}%"

    out += _table(
        [first, "1st met", "breached", "1st %", "res met", "breached", "res %"],
        [
            [
                r.label,
                str(r.sla_met["first_response"]),
                str(r.sla_breached["first_response"]),
                pct(r.attainment("first_response")),
                str(r.sla_met["resolution"]),
                str(r.sla_breached["resolution"]),
                pct(r.attainment("resolution")),
            ]
            for r in rows
        ],
    )
    out += ["", "Satisfaction"]
    out += _table(
        [first, "ratings", "avg", "1", "2", "3", "4", "5", "surveyed", "answered"],
        [
            [
                r.label,
                str(r.rating_count),
                _cell(None if r.rating_average is None else f"{r.rating_average:.2f}"),
                *(str(r.ratings[k]) for k in range(1, 6)),
                str(r.surveyed),
                pct(r.response_rate),
            ]
            for r in rows
        ],
    )
    if report.breaches_by_policy:
        out += ["", "SLA breaches by policy"]
        out += _table(
            ["policy", "target", "breaches"],
            [
                [pol, tgt.replace("_", " "), str(n)]
                for (pol, tgt), n in sorted(report.breaches_by_policy.items())
            ],
        )
    if report.workload:
        out += ["", "Workload (assigned and resolved in the range, open now)"]
        out += _table(
            ["who", "kind", "assigned", "resolved", "open now"],
            [[w.name, w.kind, str(w.assigned), str(w.resolved), str(w.open_now)] for w in report.workload],
        )
    if report.comments:
        shown = report.comments[-comments:]
        out += ["", f"Comments ({len(shown)} of {len(report.comments)}, newest last)"]
        out += [f"  {c.key} {c.rating}/5 {c.at:%Y-%m-%d}: {c.comment[:200]}" for c in shown]
    return "\n".join(out) + "\n"
