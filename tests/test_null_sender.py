"""The null reverse path (MAIL FROM:<>) is one thing whichever intake brought it.

A delivery report, and the notifications RFC 3834 asks to be sent from the null sender, come
with MAIL FROM:<>. mailgate is the final delivery for SMTP, LMTP and a pipe, so it reads that as
the Return-Path a final delivery writes (RFC 5321 4.4): a report recognised only with it is a
bounce, and a notice from the null sender is never answered — over SMTP, over LMTP and through
`mailgate ingest --sender ""` (or pipe's MAILER-DAEMON) alike, each stored as "<>". An envelope
nobody gave (ingest without --sender) is unknown, not null: that mail is answered.
"""

from __future__ import annotations

import smtplib
import sqlite3
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, make_mail, write_config
from support.console import mailgate

RELAY = "relay@mx.acme.com"

# A Postfix-like notice in words that alone prove nothing (a person could paste them): with the
# null reverse path it is a report (mail/bounce.py, null_path and a failure subject).
NOTICE = (
    f"From: Relay <{RELAY}>\nTo: support@localhost\n"
    "Subject: Returned mail: see transcript for details\nMessage-ID: <dsn.1@mx.acme.com>\n"
    "Date: Mon, 23 Nov 2026 10:00:00 +0000\n\n"
    "Delivery to the following recipient failed:\n\n    gone@acme.com\n"
).encode()
# A system's notice, no Auto-Submitted, no Precedence: only its null sender says it is automatic.
EXPORT = make_mail("Your weekly export is ready", "The export is ready.\n", sender="reports@app.example")


def _deliver(route: str, root: Path, sink: Sink, raw: bytes, sender: str) -> None:
    """`raw` into the desk at `root` by `route`; processed once this returns."""
    cfg = root / "config.toml"
    if route in ("smtp", "lmtp"):
        if route == "lmtp":
            cfg.write_text(cfg.read_text().replace("[smtp]\n", "[smtp]\nlmtp = true\n"))
        d = RunningDaemon(cfg)
        try:
            client = smtplib.LMTP if route == "lmtp" else smtplib.SMTP
            with client("127.0.0.1", d.port, timeout=10) as conn:
                conn.sendmail(sender, ["support@localhost"], raw.replace(b"\n", b"\r\n"))
            d.settle()
        finally:
            d.stop()
        return
    args = ["--sender", sender] if route != "pipe, no sender" else []

    def pipe() -> None:
        mailgate(
            root,
            *("--config", str(cfg), "ingest", *args, "--recipient", "support@localhost"),
            stdin=raw,
            env={"MAILGATE_SECRET": "test-secret"},
        )

    if route != "pipe to the daemon":
        pipe()
        return
    d = RunningDaemon(cfg)  # up: ingest hands the message to its listener, MAIL FROM:<>
    try:
        pipe()
        d.settle()
    finally:
        d.stop()


def _rows(root: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{root / 'state' / 'mailgate.db'}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


NULL_ROUTES = [
    ("smtp", ""),
    ("lmtp", ""),
    ("pipe", ""),
    ("pipe", "MAILER-DAEMON"),
    ("pipe to the daemon", ""),
]
NULL_IDS = ["smtp", "lmtp", "pipe-empty", "pipe-mailer-daemon", "pipe-to-the-daemon"]


@pytest.mark.parametrize(("route", "sender"), NULL_ROUTES, ids=NULL_IDS)
def test_a_report_from_the_null_sender_is_a_bounce_by_every_intake(
    tmp_path: Path, sink: Sink, route: str, sender: str
) -> None:
    write_config(tmp_path, relay_port=sink.port)
    _deliver(route, tmp_path, sink, NOTICE, sender)
    # a bounce about no ticket of ours (bounce:unmatched): recorded, nothing else
    assert _rows(tmp_path, "SELECT mail_from, disposition FROM inboxitem") == [("<>", "bounce:unmatched")]
    assert _rows(tmp_path, "SELECT count(*) FROM ticket") == [(0,)]
    assert _rows(tmp_path, "SELECT count(*) FROM outboxitem") == [(0,)]  # no backscatter
    source = {"pipe to the daemon": "smtp", "pipe": "pipe"}.get(route, route)  # handed over by SMTP
    assert _rows(tmp_path, "SELECT source FROM inboxitem") == [(source,)]
    shown = mailgate(tmp_path, "--config", str(tmp_path / "config.toml"), "inbox", "show", "1").out
    assert "envelope    from <> (the null sender: a delivery report" in shown, shown


@pytest.mark.parametrize(("route", "sender"), NULL_ROUTES, ids=NULL_IDS)
def test_a_notice_from_the_null_sender_is_ticketed_and_never_answered(
    tmp_path: Path, sink: Sink, route: str, sender: str
) -> None:
    write_config(tmp_path, relay_port=sink.port)
    _deliver(route, tmp_path, sink, EXPORT, sender)
    assert _rows(tmp_path, "SELECT mail_from FROM inboxitem") == [("<>",)]
    assert _rows(tmp_path, "SELECT subject FROM ticket") == [("Your weekly export is ready",)]
    kinds = [k for (k,) in _rows(tmp_path, "SELECT kind FROM outboxitem")]
    assert "acknowledgement" not in kinds, kinds


@pytest.mark.parametrize("route", ["smtp", "lmtp", "pipe", "pipe, no sender"])
def test_control_the_same_mail_from_a_real_sender_is_answered(tmp_path: Path, sink: Sink, route: str) -> None:
    """The same notice with an envelope sender (or none given at all) is a person's mail to us."""
    write_config(tmp_path, relay_port=sink.port)
    _deliver(route, tmp_path, sink, EXPORT, "reports@app.example")
    want = "" if route == "pipe, no sender" else "reports@app.example"
    assert _rows(tmp_path, "SELECT mail_from FROM inboxitem") == [(want,)]
    assert [k for (k,) in _rows(tmp_path, "SELECT kind FROM outboxitem")].count("acknowledgement") == 1
