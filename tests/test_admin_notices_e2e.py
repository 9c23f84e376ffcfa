"""The admins hear what needs them (issue 19, item 9), through the real daemon with real mail
over SMTP: team.toml `admins` and config's `admin_address` are told of quarantined mail, refused
rules edits and held floods; from the no-reply system sender, `Auto-Submitted: auto-generated`;
at most one mail per kind per `[limits] admin_notice_minutes`, the rest in one digest."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, body_of, make_mail, scenario_config

from mailgate.scheduler import Scheduler

AGENT = "agent@example.com"
BOSS = "boss@example.com"  # team.toml admins
ADMIN = "admin@example.com"  # config.toml admin_address (conftest.write_config)
TEAM = f'triage = "{AGENT}"\nadmins = ["{BOSS}"]\n[[agents]]\naddress = "{AGENT}"\n'


@pytest.fixture
def desk(tmp_path: Path, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningDaemon]:
    from mailgate.pipeline import stages

    real = stages.thread

    def exploding(ctx, config, repo):  # type: ignore[no-untyped-def]
        if "explode" in ctx.mail.subject:
            raise RuntimeError("simulated bug in threading")
        return real(ctx, config, repo)

    monkeypatch.setattr(stages, "thread", exploding)
    path = scenario_config(
        tmp_path / "desk",
        relay_port=sink.port,
        desks=[("support@localhost", "SUP", "jira")],
        team=TEAM,
        extra="[limits]\nnew_tickets_per_sender = 2\n",
    )
    d = RunningDaemon(path)
    yield d
    d.stop()


def test_quarantine_tells_every_admin_once_then_one_digest(desk: RunningDaemon, sink: Sink) -> None:
    for i in range(3):
        desk.send(make_mail(f"please explode {i}"))
    desk.settle()
    assert [r.state for r in desk.inbox()] == ["failed"] * 3

    # The first quarantine goes at once, to team.toml's admins and to admin_address.
    for admin in (BOSS, ADMIN):
        [first] = sink.wait_to(admin, 1)
        assert "quarantined at thread" in str(first["Subject"])
        assert "simulated bug in threading" in body_of(first)
        assert str(first["Auto-Submitted"]) == "auto-generated"
        assert first["From"].addresses[0].addr_spec == desk.config.system_sender
    assert len(sink.to(BOSS)) == 1  # the other two wait for the quiet time

    # Quiet time over: the two others come as one digest, to each admin.
    later = datetime.now(UTC) + timedelta(minutes=16)
    assert Scheduler(desk.daemon.runner, clock=lambda: later).admin_digest() == 2
    assert Scheduler(desk.daemon.runner, clock=lambda: later).admin_digest() == 0
    desk.settle()
    for admin in (BOSS, ADMIN):
        got = sink.wait_to(admin, 2)
        assert len(got) == 2
        digest = body_of(got[1])
        assert "2 notices (quarantine)" in str(got[1]["Subject"])
        assert f"message {desk.inbox()[1].id} quarantined" in digest
        assert f"message {desk.inbox()[2].id} quarantined" in digest


def test_a_refused_rules_edit_and_a_held_flood_reach_the_team_admins(desk: RunningDaemon, sink: Sink) -> None:
    routing = desk.config.rules_dir / "routing.toml"
    routing.write_text('[[rules]]\nname = "bad"\nwhen.subject.regex = "(unclosed"\nthen = { tags = ["x"] }\n')
    desk.send(make_mail("a question"))
    desk.settle()
    [refused] = sink.wait_to(BOSS, 1)
    assert "rules edit was refused" in str(refused["Subject"])
    assert "routing.toml:" in body_of(refused)

    # A flood: the third new request within the window is held, and the admins hear of it. A
    # notice of another kind is not held back by the refused-rules mail just sent.
    for i in range(3):
        desk.send(make_mail(f"flood {i}", sender="bot@spam.example"), sender="bot@spam.example")
    desk.settle()
    flood = sink.wait_to(BOSS, 2)[-1]
    assert "flood limit" in str(flood["Subject"]) and "bot@spam.example" in body_of(flood)
    assert [str(m["Subject"]) for m in sink.wait_to(ADMIN, 2)] == [str(m["Subject"]) for m in sink.to(BOSS)]
