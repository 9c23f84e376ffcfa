"""What monitoring sees of a real daemon: per-stage latency histograms on /metrics after real mail,
and /healthz failing, with the reason, while the IMAP server is down, then passing again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, make_mail, reply, wait_until, write_config
from dovecot import Dovecot
from prometheus_client.parser import text_string_to_metric_families
from support.cli import mailgate
from support.imap import ENV, append, imap_table
from support.web import CUSTOMER, http, open_ticket, origin, rcpt_of


def stage_counts(daemon: RunningDaemon) -> dict[str, dict[str, float]]:
    """Per stage: the histogram's count, sum and +Inf bucket, as scraped from /metrics."""
    text = http("GET", f"{origin(daemon)}/metrics").text
    [family] = [m for m in text_string_to_metric_families(text) if m.name == "mailgate_stage_latency_seconds"]
    out: dict[str, dict[str, float]] = {}
    for s in family.samples:
        key = s.name.removeprefix("mailgate_stage_latency_seconds_")
        if key == "bucket" and s.labels["le"] != "+Inf":
            continue
        out.setdefault(s.labels["stage"], {})["inf" if key == "bucket" else key] = s.value
    return out


def test_metrics_show_each_stages_latency_for_real_mail(tmp_path: Path, sink: Sink) -> None:
    # The worker is a process of its own, as `mailgate run` makes it: the web side in the daemon
    # reads the timings the worker wrote, not anything kept in its own memory.
    path = write_config(tmp_path / "desk", relay_port=sink.port)
    d = RunningDaemon(path, worker="process")
    try:
        ack, _ = open_ticket(d, sink)
        d.send(reply(ack, CUSTOMER, "It still shows zero today."), sender=CUSTOMER, rcpt=rcpt_of(ack))
        d.settle()
        assert [i.disposition for i in d.inbox()] == ["ticket-created", "reply"]
        stages = stage_counts(d)
    finally:
        d.stop()
    counts = {stage: v["count"] for stage, v in stages.items()}
    assert counts == {"parse": 2, "screen": 2, "thread": 2, "new-ticket": 1, "reply": 1, "sla": 2}
    for stage, v in stages.items():
        assert v["inf"] == v["count"] and v["sum"] > 0, (stage, v)
    # The same timings are steps of each message's trace, which `mailgate inbox show` prints.
    shown = mailgate("--config", str(path), "inbox", "show", "1").stdout
    assert [line.split()[0] for line in shown.splitlines() if " took " in line and line.endswith(" ms")] == [
        "parse",
        "screen",
        "thread",
        "new-ticket",
        "sla",
    ]


@pytest.mark.imap
def test_healthz_fails_while_the_imap_server_is_down_and_recovers(
    tmp_path: Path, sink: Sink, dovecot: Dovecot
) -> None:
    path = write_config(tmp_path / "desk", relay_port=sink.port, extra=imap_table(dovecot))
    d = RunningDaemon(path, env={**ENV, "MAILGATE_WEB_PORT": "0"})
    healthz = f"{origin(d)}/healthz"
    try:
        append(dovecot, make_mail("Printer on fire"))
        wait_until(lambda: len(d.tickets()) == 1, timeout=30, what="the IMAP mail's ticket")
        [poller] = d.daemon.pollers
        assert poller.alive and poller.last_progress is not None
        assert http("GET", healthz).status == 200

        dovecot.stop()
        # poll_seconds is 2: after three intervals without a pass, the poller is stuck.
        wait_until(lambda: http("GET", healthz).status == 503, timeout=30, what="/healthz to fail")
        down = http("GET", healthz).text
        assert "IMAP poller alice stuck: no progress for" in down, down
        assert "worker" not in down and "SMTP" not in down  # only what is wrong is named

        dovecot.start()
        wait_until(lambda: http("GET", healthz).status == 200, timeout=60, what="/healthz to recover")
        append(dovecot, make_mail("Scanner jammed"))
        wait_until(lambda: len(d.tickets()) == 2, timeout=30, what="mail after the outage")
    finally:
        d.stop()
