"""Reports: what the desk did, how fast, how well — `mailgate report`, `mailgate tickets export`,
the weekly report mail, and SVG charts for the web page (docs/reports.md).

- `figures.build_report`: every figure of a range from SQL aggregates (and the SLA clock);
  `report_of` runs it on a read of the database and keeps what it measured;
- `render`: text / CSV / JSON of a report; `svg`: charts of one, as pure functions;
- `export.export_rows`: one row per ticket, streamed in batches;
- `weekly.send_weekly`: the weekly mail to group leads and admins (run by mailgate/scheduler.py).

It sits between the edges (cli, scheduler, web) and the pipeline: it reads the store, uses the
domain's calendar and SLA clock, and queues mail only through the pipeline's Notifier.
"""

from mailgate.reports.export import EXPORT_COLUMNS, ExportFilter, export_rows, write_csv, write_json
from mailgate.reports.facts import Measured, save
from mailgate.reports.figures import BY, Report, Row, Scope, build_report, report_of
from mailgate.reports.period import Periods, parse_since, parse_until
from mailgate.reports.render import to_csv, to_json, to_text
from mailgate.reports.svg import Series, bar_chart, line_chart, report_charts

__all__ = [
    "BY",
    "EXPORT_COLUMNS",
    "ExportFilter",
    "Measured",
    "Periods",
    "Report",
    "Row",
    "Scope",
    "Series",
    "bar_chart",
    "build_report",
    "export_rows",
    "line_chart",
    "parse_since",
    "parse_until",
    "report_charts",
    "report_of",
    "save",
    "to_csv",
    "to_json",
    "to_text",
    "write_csv",
    "write_json",
]
