"""Defects an outside-in trial of the integrate branch found, each checked as a person meets it:
the installed `mailgate` console script in a new process on a desk fresh from `mailgate init`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from conftest import make_mail, need
from support.console import CLEAN_ENV, MAILGATE, mailgate


def _init(root: Path) -> Path:
    mailgate(root, "init", "desk", "--desk-address", "support@localhost", "--key", "SUP")
    return root / "desk"


def test_config_check_names_the_line_of_a_bad_max_data_in_flight(tmp_path: Path) -> None:
    """`max_data_in_flight = 0` was reported at line 1, blaming max_message_size too."""
    desk = _init(tmp_path)
    config = desk / "config.toml"
    text = config.read_text().replace("lmtp = false", "max_data_in_flight = 0\nlmtp = false", 1)
    config.write_text(text)
    line = text.splitlines().index("max_data_in_flight = 0") + 1
    check = mailgate(desk, "config", "check", ok=(78,))
    assert re.search(
        rf"config\.toml:{line}: smtp\.max_data_in_flight: at least 1 byte", check.out + check.err
    ), check
    assert "max_message_size" not in check.out + check.err


def test_attachments_sweep_refuses_an_endless_grace_without_a_traceback(tmp_path: Path) -> None:
    """`--older-than inf` (or nan, or 1e308: floats argparse takes) was an OverflowError."""
    desk = _init(tmp_path)
    mailgate(desk, "db", "upgrade")
    for hours in ("inf", "nan", "1e308"):
        refused = mailgate(desk, "attachments", "sweep", "--dry-run", "--older-than", hours, ok=(64,))
        assert "at least 1 hour" in refused.err and "at most 876000" in refused.err, refused
    assert "older than 876000 h" in mailgate(desk, "attachments", "sweep", "--older-than", "876000").out


def test_config_check_refuses_an_endless_attachment_grace(tmp_path: Path) -> None:
    """TOML has inf and nan: `attachment_grace_hours = inf` passed `config check`, and the daemon's
    daily sweep would then fail on every run."""
    desk = _init(tmp_path)
    config = desk / "config.toml"
    for hours in ("inf", "nan", "1e308"):
        config.write_text(
            re.sub(r"\n\[scheduler\][^\[]*", "", config.read_text())
            + f"\n[scheduler]\nattachment_grace_hours = {hours}\n"
        )
        line = config.read_text().splitlines().index(f"attachment_grace_hours = {hours}") + 1
        check = mailgate(desk, "config", "check", ok=(78,))
        assert re.search(
            rf"config\.toml:{line}: scheduler\.attachment_grace_hours: expected (a finite number|hours from 1 to 876000)",
            check.out + check.err,
        ), check


def test_config_check_refuses_infinite_and_nan_seconds(tmp_path: Path) -> None:
    """`sla_check_seconds = inf` passed `config check`, then the daemon's worker died at start on
    an OverflowError and was restarted every few seconds, for ever."""
    desk = _init(tmp_path)
    config = desk / "config.toml"
    base = config.read_text()
    for table, key in (("scheduler", "sla_check_seconds"), ("outgoing", "retry_max_seconds")):
        for value in ("inf", "nan"):
            text = base.replace(f"[{table}]\n", f"[{table}]\n{key} = {value}\n", 1)
            if f"[{table}]" not in base:
                text = base + f"\n[{table}]\n{key} = {value}\n"
            config.write_text(text)
            line = text.splitlines().index(f"{key} = {value}") + 1
            check = mailgate(desk, "config", "check", ok=(78,))
            assert f"config.toml:{line}: {table}.{key}: expected a finite number" in check.out + check.err, (
                check
            )


def test_a_dropped_message_released_names_its_hold_and_who_dropped_it(tmp_path: Path) -> None:
    """docs/operations.md: the trail says what the message was held as. A drop undone with
    `inbox release` said only "held as dropped": the flood hold and the person who dropped it
    were lost from the ticket."""
    desk = _init(tmp_path)
    config = desk / "config.toml"
    config.write_text(config.read_text() + "\n[limits]\nnew_tickets_per_sender = 1\n")
    for n in (1, 2):
        (desk / f"m{n}.eml").write_bytes(make_mail(subject=f"request {n}", sender="ann@example.com"))
        mailgate(desk, "ingest", f"m{n}.eml")
    # the reason in plain words: not "opened 1 tickets in 2:00:00"
    assert (
        "held:flood: ann@example.com opened 1 ticket in 120 minutes: held"
        in mailgate(desk, "inbox", "show", "2").out
    )
    mailgate(desk, "inbox", "drop", "2", "--by", "bob@example.org")
    released = mailgate(desk, "inbox", "release", "2", "--by", "alice@example.org").out
    assert "inbox item 2 released by alice@example.org: ticket SUP-2 (ticket-created)" in released
    shown = mailgate(desk, "tickets", "show", "SUP-2").out
    assert (
        "alice@example.org: released inbox message 2, held as held:flood, then dropped by bob@example.org"
        in shown
    ), shown


def test_config_check_refuses_a_negative_limit(tmp_path: Path) -> None:
    """`new_tickets_per_sender = -1` passed `config check` (and then held every new mail as a
    flood); so did a negative size, count or window of any [limits] setting."""
    desk = _init(tmp_path)
    config = desk / "config.toml"
    base = config.read_text()
    for key in ("new_tickets_per_sender", "max_attachment_size", "bounce_quiet_days"):
        text = base + f"\n[limits]\n{key} = -1\n"
        config.write_text(text)
        line = text.splitlines().index(f"{key} = -1") + 1
        check = mailgate(desk, "config", "check", ok=(78,))
        assert re.search(
            rf"config\.toml:{line}: limits\.{key}: expected a whole number >= [01]\b.*, got -1$",
            check.out,
            re.M,
        ), check


def test_config_check_refuses_no_relay_timeout_or_retry_delay(tmp_path: Path) -> None:
    """`[outgoing] timeout = 0` (a socket that never waits) or a negative retry delay passed
    `config check`."""
    desk = _init(tmp_path)
    config = desk / "config.toml"
    base = config.read_text()
    for key, value in (("timeout", "0"), ("retry_base_seconds", "-5")):
        text = base.replace("[outgoing]\n", f"[outgoing]\n{key} = {value}\n", 1)
        config.write_text(text)
        line = text.splitlines().index(f"{key} = {value}") + 1
        check = mailgate(desk, "config", "check", ok=(78,))
        assert f"config.toml:{line}: outgoing.{key}: must be more than 0" in check.out, check


def test_inbox_drop_by_a_user_id_no_passwd_entry_names(tmp_path: Path) -> None:
    """Without --by, `inbox release/drop` name the login running them; run as a user id that has
    no passwd entry and no LOGNAME/USER (a container's `-u 1000`, systemd's DynamicUser) they
    stopped on a KeyError traceback. The id stands in for the name."""
    setpriv = shutil.which("setpriv")
    need(
        os.geteuid() == 0 and setpriv is not None,
        "needs root and setpriv to run as a user id without a passwd entry",
    )
    uid = 54321
    root = Path(tempfile.mkdtemp(prefix="mailgate-uid-", dir="/tmp"))  # pytest's tmp is root's alone
    try:
        root.chmod(0o777)
        desk = _init(root)
        config = desk / "config.toml"
        config.write_text(config.read_text() + "\n[limits]\nnew_tickets_per_sender = 1\n")
        for n in (1, 2):
            (desk / f"m{n}.eml").write_bytes(make_mail(subject=f"request {n}", sender="ann@example.com"))
            mailgate(desk, "ingest", f"m{n}.eml")
        for path in (root, *root.rglob("*")):
            path.chmod(0o777 if path.is_dir() else 0o666)
        env = {k: v for k, v in CLEAN_ENV.items() if k not in ("LOGNAME", "USER", "LNAME", "USERNAME")}
        assert MAILGATE
        run = subprocess.run(
            [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", MAILGATE, "inbox", "drop", "2"],
            cwd=desk,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0 and "Traceback" not in run.stderr, run
        assert f"inbox item 2 dropped by uid {uid} (it was held as held:flood" in run.stdout, run
    finally:
        shutil.rmtree(root, ignore_errors=True)
