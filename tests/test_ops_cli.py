"""The operator's commands, run as an admin runs them: `mailgate init`, `config check`, `status`,
and the promise that secrets never reach a log line."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import re
import signal
import sqlite3
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import REPO, Sink, free_port, make_mail
from support import console
from support.cli import PY, cli, mailgate

from mailgate.domain.tokens import read_token, verify_token
from mailgate.store.models import InboxItem, now_utc


@pytest.fixture
def desk(tmp_path: Path) -> Path:
    r = cli("init", str(tmp_path / "desk"), "--desk-address", "help@example.org", "--name", "Help desk")
    assert r.returncode == 0, r.stderr
    return tmp_path / "desk"


def test_init_writes_a_desk_that_checks_clean_and_makes_tickets(desk: Path) -> None:
    assert sorted(p.name for p in desk.iterdir()) == [
        ".env.example",
        "config.toml",
        "rules",
        "templates",
    ] or (
        sorted(p.name for p in desk.iterdir())
        == [".env.example", "config.toml", "rules", "state", "templates"]
    )
    assert (desk / "rules" / "team.toml").is_file() and (desk / "templates" / "acknowledgement.txt").is_file()
    assert "MAILGATE_RELAY_PASSWORD=" in (desk / ".env.example").read_text()
    cfg = str(desk / "config.toml")
    check = cli("--config", cfg, "config", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("ok: ")
    ingest = mailgate(
        "--config",
        cfg,
        "ingest",
        "-r",
        "help@example.org",
        "-f",
        "ann@acme.com",
        input=make_mail("Scanner offline", sender="ann@acme.com", to="help@example.org"),
    )
    assert ingest.returncode == 0, ingest.stderr
    tickets = cli("--config", cfg, "tickets", "list")
    assert "HELP-1" in tickets.stdout and "Scanner offline" in tickets.stdout

    # A second init into the same place refuses and changes nothing; --force rewrites.
    (desk / "templates" / "acknowledgement.txt").write_text("edited by the admin\n")
    again = cli("init", str(desk), "--desk-address", "other@example.org")
    assert again.returncode == 73
    assert "nothing written" in again.stderr
    assert (desk / "templates" / "acknowledgement.txt").read_text() == "edited by the admin\n"
    assert "help@example.org" in (desk / "config.toml").read_text()
    forced = cli("init", str(desk), "--desk-address", "other@example.org", "--key", "OTH", "--force")
    assert forced.returncode == 0
    assert 'key = "OTH"' in (desk / "config.toml").read_text()


def test_the_secret_in_the_env_beside_the_config_signs_what_a_pipe_sends(desk: Path) -> None:
    """docs/operations.md puts the secrets in /etc/mailgate/.env beside config.toml. The MTA's
    pipe (`mailgate ingest`, storing the message itself while no daemon is up) must sign the
    acknowledgement's reply address with the key the daemon reads there, and make no key of its
    own. They were in mailgate.env, read by the unit's EnvironmentFile, so by the daemon alone:
    mail the pipe processed carried tokens and links the daemon refused."""
    (desk / ".env").write_text("MAILGATE_SECRET=from-the-env-file\n")
    cfg = str(desk / "config.toml")
    raw = make_mail("Scanner offline", sender="ann@acme.com", to="help@example.org")
    console.mailgate(
        desk.parent, "--config", cfg, "ingest", "-f", "ann@acme.com", "-r", "help@example.org", stdin=raw
    )
    assert not (desk / "state" / "secret.key").exists()  # no key of its own
    with sqlite3.connect(desk / "state" / "mailgate.db") as conn:
        [(ack,)] = conn.execute("SELECT raw FROM outboxitem WHERE kind = 'acknowledgement'").fetchall()
    reply_to = email.message_from_bytes(ack, policy=email.policy.default)["Reply-To"].addresses[0]
    claim = read_token(reply_to.username.split("+", 1)[1])
    assert claim is not None and verify_token("from-the-env-file", claim, "ann@acme.com")
    # The unit and the install steps name that file, and no other environment for the daemon.
    unit = (REPO / "contrib" / "mailgate.service").read_text()
    settings = [line for line in unit.splitlines() if line and not line.startswith("#")]
    assert not [line for line in settings if line.startswith("EnvironmentFile")], settings
    assert "ExecStart=/opt/mailgate/venv/bin/mailgate --config /etc/mailgate/config.toml run" in settings
    install = (REPO / "docs" / "operations.md").read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    assert "/etc/mailgate/.env.example /etc/mailgate/.env " in install, install


def test_config_check_names_file_and_line_of_each_problem(desk: Path) -> None:
    cfg = str(desk / "config.toml")
    ack = desk / "templates" / "acknowledgement.txt"
    lines = ack.read_text().splitlines()
    lines[3] = "Your request is {{ tikcet.key }}"  # line 4: a variable no mail is given
    ack.write_text("\n".join(lines) + "\n")
    (desk / "templates" / "requester_reply.txt").write_text(
        "{# To agents. #}\n{{ from }} wrote on {{ ticket.subjct }}\n"  # line 2: a misspelt attribute
    )
    (desk / "templates" / "closed.txt").write_text("Closed.\n{% if status %}\n")  # line 2: never closed
    r = cli("--config", cfg, "config", "check")
    assert r.returncode == 65, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert any(line.startswith(f"{ack}:4: unknown variable 'tikcet'") for line in out), out
    assert any(
        line.startswith(f"{desk}/templates/requester_reply.txt:2: does not render") and "subjct" in line
        for line in out
    )
    assert any(line.startswith(f"{desk}/templates/closed.txt:") and "template syntax" in line for line in out)
    assert all(re.match(r"^/\S+:\d+: ", line) for line in out), out  # FILE:LINE: reason, every one

    # A broken rules file: the rules error with its line, still exit 65.
    team = desk / "rules" / "team.toml"
    text = team.read_text() + "\n[[agents]]\naddress = 12\n"
    team.write_text(text)
    bad = len(text.splitlines())
    r = cli("--config", cfg, "config", "check")
    assert r.returncode == 65
    out = r.stdout.splitlines()
    assert any(line.startswith(f"{team}:{bad}: ") for line in out), out
    # The templates' errors are still reported, and no guesses pile up while the rules are broken.
    assert any(line.startswith(f"{ack}:4: unknown variable 'tikcet'") for line in out), out
    assert not any("status_changed.txt" in line for line in out), out

    # config.toml itself wrong: exit 78, with the line of the bad key.
    text = (desk / "config.toml").read_text().replace('key = "HELP"', 'key = "help-desk"')
    (desk / "config.toml").write_text(text)
    key_line = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("key ="))
    r = cli("--config", cfg, "config", "check")
    assert r.returncode == 78
    assert r.stdout.startswith(f"{cfg}:{key_line}: desks[0].key:"), r.stdout

    # A misspelt worker mode is refused here, not only when `mailgate run` starts.
    (desk / "config.toml").write_text(
        text.replace('key = "help-desk"', 'key = "HELP"') + '\n[pipeline]\nworker = "proces"\n'
    )
    r = cli("--config", cfg, "config", "check")
    assert r.returncode == 78
    assert 'pipeline.worker: write "process" or "thread"' in r.stdout, r.stdout


def test_a_misspelt_security_or_scheduler_setting_is_refused_with_its_key(desk: Path) -> None:
    """A typo in `trusted_authserv_ids` would leave the default (no trusted MTA) in force and turn
    proof by DKIM/SPF off without a word: the installed command refuses the file instead."""
    cfg = desk / "config.toml"
    good = cfg.read_text()
    cfg.write_text(good + '\n[security]\ntrusted_authserv_id = ["mx.example.org"]\n')
    r = mailgate("--config", str(cfg), "config", "check")
    assert r.returncode == 78, r.stdout + r.stderr
    assert "security.trusted_authserv_id: unknown setting" in r.stdout, r.stdout

    cfg.write_text(good + '\n[security]\ntrusted_authserv_ids = "mx.example.org"\n')
    r = cli("--config", str(cfg), "config", "check")
    assert r.returncode == 78
    assert "security.trusted_authserv_ids: expected list" in r.stdout, r.stdout

    cfg.write_text(good + "\n[scheduler]\nsla_check_second = 60\n")
    r = cli("--config", str(cfg), "config", "check")
    assert r.returncode == 78
    assert "scheduler.sla_check_second: unknown setting" in r.stdout, r.stdout

    cfg.write_text(good + '\n[security]\ntrusted_authserv_ids = ["mx.example.org"]\n')
    assert cli("--config", str(cfg), "config", "check").returncode == 0
    from mailgate.config import load_config

    config = load_config(cfg, env={"MAILGATE_SECRET": "s"})
    assert config.security.trusted_authserv_ids == ("mx.example.org",)


def test_status_is_quiet_when_healthy_and_exits_1_with_reasons(desk: Path) -> None:
    cfg = str(desk / "config.toml")
    # Outgoing mail to a relay nobody listens on: the acknowledgement stays pending.
    text = (desk / "config.toml").read_text().replace('transport = "file"', 'transport = "smtp"')
    (desk / "config.toml").write_text(text.replace("port = 25\n", f"port = {free_port()}\n"))
    # Before anything ran there is no database: status says so as a status (exit 1, as for any
    # desk where no daemon runs; a monitoring check must not read it as its own failure) and
    # makes none.
    none = cli("--config", cfg, "status", "--json")
    assert none.returncode == 1 and not none.stderr, none
    st = json.loads(none.stdout)
    assert st["ok"] is False and st["no_database"].startswith("no database at"), st
    assert st["attention"][0].startswith("no daemon has run with this configuration yet"), st
    assert "start it with `mailgate run`" in st["attention"][0]
    assert st["rules_on_disk"] and (st["inbox_new"], st["outbox_pending"]) == (0, 0)
    text = mailgate("--config", cfg, "status")  # the console script, as monitoring runs it
    assert text.returncode == 1 and "Traceback" not in text.stderr, text
    assert "NOT RUNNING (never started here: nothing received yet)" in text.stdout, text.stdout
    assert not (desk / "state" / "mailgate.db").exists()
    assert cli("--config", cfg, "db", "upgrade").returncode == 0
    r = cli("--config", cfg, "status", "--json")
    assert r.returncode == 1, r.stdout + r.stderr  # no daemon runs: mail would wait for ever
    st = json.loads(r.stdout)
    assert st["ok"] is False and [a.split(":")[0] for a in st["attention"]] == ["no daemon is running"]
    assert (st["listeners"], st["daemons"]) == ([], [])  # what runs, not what the config asks for
    assert st["configured_listeners"] == ["smtp://127.0.0.1:2525"]
    assert st["rules_on_disk"] and st["rules_errors"] == []

    mailgate(
        "--config", cfg, "ingest", "-r", "help@example.org", input=make_mail("VPN", to="help@example.org")
    )
    st = json.loads(cli("--config", cfg, "status", "--json").stdout)
    assert st["outbox_pending"] >= 1 and (st["inbox_new"], st["quarantined"]) == (0, 0)
    assert st["rules_in_force"] == st["rules_on_disk"]  # the version the pipeline routed with
    assert len(st["attention"]) == 1  # only the daemon: pending for a few seconds is normal
    late = cli("--config", cfg, "status", "--max-unsent-minutes", "0")
    assert late.returncode == 1
    assert "oldest unsent mail is" in late.stdout and "ATTENTION" in late.stdout

    # One quarantined message, as the runner leaves it after a crash in a stage.
    from mailgate.config import load_config
    from mailgate.store.db import Database

    db = Database(load_config(desk / "config.toml").database_url)
    with db.session() as s:
        s.add(
            InboxItem(
                desk="HELP",
                source="pipe",
                state="failed",
                stage="parse",
                reason="boom",
                received_at=now_utc() - timedelta(minutes=1),
            )
        )
    db.dispose()
    r = cli("--config", cfg, "status", "--json")
    assert r.returncode == 1
    st = json.loads(r.stdout)
    assert st["quarantined"] == 1
    assert any("quarantined" in a and "mailgate inbox failed" in a for a in st["attention"])


def test_secrets_never_reach_the_logs(tmp_path: Path) -> None:
    """The daemon with --log-json and DEBUG, a relay that refuses our login: neither the relay
    password nor the token key appears anywhere in what it logs, and every line is JSON."""
    sink = Sink().start()
    try:
        r = cli("init", str(tmp_path / "d"), "--desk-address", "help@example.org")
        assert r.returncode == 0
        cfg = tmp_path / "d" / "config.toml"
        port = free_port()
        text = (
            cfg.read_text()
            .replace("port = 2525", f"port = {port}")
            .replace('transport = "file"', 'transport = "smtp"')
        )
        cfg.write_text(
            text.replace(
                "port = 25\n", f'port = {sink.port}\nusername = "mailgate"\nretry_base_seconds = 0.2\n'
            )
        )
        password, secret = "pw-Zx81-very-secret", "tok-key-Qq93-very-secret"
        (tmp_path / "d" / ".env").write_text(
            f"MAILGATE_RELAY_PASSWORD={password}\nMAILGATE_SECRET={secret}\n"
        )
        proc = subprocess.Popen(
            [PY, "-m", "mailgate", "--config", str(cfg), "--log-json", "--log-level", "DEBUG", "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    import smtplib

                    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
                        smtp.sendmail(
                            "ann@acme.com", ["help@example.org"], make_mail("VPN", to="help@example.org")
                        )
                    break
                except OSError:
                    time.sleep(0.1)
            # Wait for the sender to have tried the relay (aiosmtpd offers no AUTH: login is
            # refused): it logs the failure before it records the attempt on the outbox row.
            import sqlite3

            db = tmp_path / "d" / "state" / "mailgate.db"
            deadline = time.monotonic() + 30
            while True:
                with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
                    tried = conn.execute("SELECT count(*) FROM outboxitem WHERE attempts >= 1").fetchone()[0]
                if tried:
                    break
                assert time.monotonic() < deadline, "the sender never tried the relay"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
    finally:
        sink.stop()
    logs = out + err
    assert password not in logs and secret not in logs
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert records, "the daemon logged nothing"
    assert any("ticket=HELP-1" in r["msg"] for r in records), [r["msg"] for r in records]
    assert any(
        "relay" in r["msg"].lower() or "login" in r["msg"].lower() or "auth" in r["msg"].lower()
        for r in records
    )


def test_every_command_is_known_and_found_when_only_its_module_is_loaded() -> None:
    """`mailgate CMD` loads only CMD's module (an MTA pipe pays for ingest alone); a command a
    module registers but COMMANDS does not name would vanish from the command line."""
    import argparse

    from mailgate.cli import COMMANDS, build_parser

    def names(parser: argparse.ArgumentParser) -> list[str]:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return list(sub.choices)

    assert names(build_parser()) == list(COMMANDS)
    for command, module in COMMANDS.items():
        loaded = names(build_parser(["--config", "x.toml", "--log-level", "INFO", command, "--help"]))
        assert command in loaded
        assert {COMMANDS[c] for c in loaded} == {module}
