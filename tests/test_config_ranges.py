"""Numbers in config.toml that make no sense are refused, by `mailgate config check` and by
`mailgate run` before it starts anything, naming the file, the line, the key and what it takes.
`new_tickets_per_sender = 0` held every new mail as a flood, `max_attempts = 0` quarantined a
message its worker never tried, `[imap] poll_seconds = 0` polled the server without pause, and a
port of 0 or 70000 failed only when the daemon bound or connected; all passed `config check`.
Run as an admin runs them: the console script, on a desk fresh from `mailgate init`."""

from __future__ import annotations

from pathlib import Path

from support.console import InitDesk

# What each [limits] key takes at least (config.example.toml says the same beside each key).
AT_LEAST_ONE = (
    "max_attempts",
    "new_tickets_per_sender",
    "flood_window_minutes",
    "auto_mails_per_ticket",
    "auto_mails_per_ticket_window_minutes",
    "auto_mails_per_recipient",
    "auto_mails_per_recipient_window_minutes",
    "bounce_quiet_days",
)
ZERO_MEANS = {
    "max_attachment_size": "no limit but smtp.max_message_size",
    "max_attachments": "no limit",
    "max_forward_attachments_bytes": "no attachment travels, each is named",
    "admin_notice_minutes": "every notice mailed at once",
}


def _with(desk: InitDesk, base: str, extra: str) -> int:
    """Write the config as `base` + `extra`; the line number of `extra`'s last line."""
    text = base + extra
    desk.config.write_text(text)
    return len(text.splitlines())


def test_a_limit_of_zero_that_means_nothing_is_refused_by_config_check_and_run(tmp_path: Path) -> None:
    desk = InitDesk(tmp_path)
    base = desk.config.read_text()
    for key in AT_LEAST_ONE:
        line = _with(desk, base, f"\n[limits]\n{key} = 0\n")
        check = desk.cli("config", "check", ok=(78,))
        assert f"{desk.config}:{line}: limits.{key}: expected a whole number >= 1, got 0" in check.out, check
    # the daemon refuses it too, before it listens or works: the same words, file and line
    line = _with(desk, base, "\n[limits]\nmax_attempts = 0\n")
    run = desk.cli("run", ok=(78,))
    assert (
        f"mailgate: configuration error: {desk.config}:{line}: limits.max_attempts:"
        " expected a whole number >= 1, got 0" in run.err
    ), run
    assert not desk.db.exists()
    # where 0 means something it is taken, and a negative value is refused with what 0 means
    for key, meaning in ZERO_MEANS.items():
        _with(desk, base, f"\n[limits]\n{key} = 0\n")
        assert desk.cli("config", "check").out.startswith("ok: ")
        line = _with(desk, base, f"\n[limits]\n{key} = -1\n")
        check = desk.cli("config", "check", ok=(78,))
        assert (
            f"{desk.config}:{line}: limits.{key}: expected a whole number >= 0 (0: {meaning}), got -1"
            in check.out
        ), check


def test_a_misspelt_limit_is_refused_not_ignored(tmp_path: Path) -> None:
    """`new_ticket_per_sender = 5` left the default of 20 in force without a word."""
    desk = InitDesk(tmp_path)
    line = _with(desk, desk.config.read_text(), "\n[limits]\nnew_ticket_per_sender = 5\n")
    check = desk.cli("config", "check", ok=(78,))
    assert f"{desk.config}:{line}: limits.new_ticket_per_sender: unknown setting (known: " in check.out, check
    assert "new_tickets_per_sender" in check.out


def test_a_misspelt_key_of_any_table_is_refused_and_a_retired_one_only_warned(tmp_path: Path) -> None:
    """`[smtp] prot = 2526` left the listener on 2525, `[[desks]] alias = [...]` made no alias and
    a top-level `statedir` kept the state elsewhere, all without a word; `[pipeline]
    parse_processes`, which an earlier version read, must not stop a daemon after an upgrade."""
    desk = InitDesk(tmp_path)
    base = desk.config.read_text()
    imap = '\n[[imap]]\nhost = "imap.example.com"\nuser = "support@example.com"\npol_seconds = 30\n'
    for header, line_text, where in (
        ("[smtp]", "prot = 2526", "smtp.prot"),
        ("[outgoing]", "retries = 3", "outgoing.retries"),
        ("[[desks]]", 'alias = ["help@localhost"]', "desks[0].alias"),
        (None, 'statedir = "elsewhere"', "config.statedir"),
        ("[database]", 'uri = "sqlite:///x.db"', "database.uri"),
        ("[[imap]]", "pol_seconds = 30", "imap[0].pol_seconds"),
    ):
        if header is None:
            text = f"{line_text}\n{base}"
        elif header in base.splitlines():
            text = base.replace(f"{header}\n", f"{header}\n{line_text}\n", 1)
        else:
            text = base + (imap if header == "[[imap]]" else f"\n{header}\n{line_text}\n")
        desk.config.write_text(text)
        line = text.splitlines().index(line_text) + 1
        check = desk.cli("config", "check", ok=(78,))
        assert f"{desk.config}:{line}: {where}: unknown setting (known: " in check.out, check
    run = desk.cli("run", ok=(78,))  # the daemon refuses the last one too, before it starts anything
    assert "imap[0].pol_seconds: unknown setting" in run.err, run
    assert not desk.db.exists()
    # retired: loaded, and config check says to remove it (exit 0: a warning)
    line = _with(desk, base, "\n[pipeline]\nparse_processes = 1\n")
    check = desk.cli("config", "check")
    assert f"{desk.config}:{line}" in check.out, check
    assert "pipeline.parse_processes is no longer read" in check.out, check


def test_an_imap_poll_interval_and_ports_out_of_range_are_refused(tmp_path: Path) -> None:
    desk = InitDesk(tmp_path)
    base = desk.config.read_text()
    imap = '\n[[imap]]\nhost = "imap.example.com"\nuser = "support@example.com"\n'
    for value in ("0", "-5", "0.5"):
        line = _with(desk, base, f"{imap}poll_seconds = {value}\n")
        for args in (("config", "check"), ("run",)):
            refused = desk.cli(*args, ok=(78,))
            assert (
                f"{desk.config}:{line}: imap[0].poll_seconds: expected a number of seconds >= 1, got {value}"
                in refused.out + refused.err
            ), refused
    _with(desk, base, f"{imap}poll_seconds = 1\n")
    assert desk.cli("config", "check").out.startswith("ok: ")
    line = _with(desk, base, f"{imap}port = 0\n")
    check = desk.cli("config", "check", ok=(78,))
    assert f"{desk.config}:{line}: imap[0].port: expected a port number 1..65535, got 0" in check.out, check
    for table, port in (("smtp", desk.port), ("outgoing", 25)):
        text = base.replace(f"port = {port}\n", "port = 70000\n", 1)
        desk.config.write_text(text)
        line = text.splitlines().index("port = 70000") + 1
        check = desk.cli("config", "check", ok=(78,))
        assert (
            f"{desk.config}:{line}: {table}.port: expected a port number 1..65535, got 70000" in check.out
        ), check
    # the environment's override is checked as well: it was a ValueError traceback
    desk.config.write_text(base)
    refused = desk.cli("tickets", "list", ok=(78,), env={"MAILGATE_SMTP_PORT": "25x"})
    assert (
        "mailgate: configuration error: MAILGATE_SMTP_PORT: expected a port number 1..65535, got '25x'"
        in (refused.err)
    ), refused


def test_a_retry_maximum_below_its_base_is_refused_by_config_check_and_run(tmp_path: Path) -> None:
    """`retry_max_seconds = 10` under `retry_base_seconds = 60` loaded, and every retry waited 10 s:
    the base meant nothing. Refused with the line of the key the file sets (the other a default)."""
    desk = InitDesk(tmp_path)
    base = desk.config.read_text()
    assert "\n[outgoing]\n" in base  # init writes the table: the keys go into it
    table = base.replace(
        "\n[outgoing]\n", "\n[outgoing]\nretry_base_seconds = 60\nretry_max_seconds = 10\n", 1
    )
    desk.config.write_text(table)
    line = table.splitlines().index("retry_max_seconds = 10") + 1
    want = (
        f"{desk.config}:{line}: outgoing.retry_max_seconds: must be at least retry_base_seconds (60), not 10"
    )
    check = desk.cli("config", "check", ok=(78,))
    assert want in check.out, check
    run = desk.cli("run", ok=(78,))
    assert f"mailgate: configuration error: {want}" in run.err, run
    assert not desk.db.exists()  # refused before it stored or listened to anything
    # a base alone above the default maximum (3600) names the base, on its own line
    alone = base.replace("\n[outgoing]\n", "\n[outgoing]\nretry_base_seconds = 7200\n", 1)
    desk.config.write_text(alone)
    line = alone.splitlines().index("retry_base_seconds = 7200") + 1
    check = desk.cli("config", "check", ok=(78,))
    assert (
        f"{desk.config}:{line}: outgoing.retry_base_seconds: must be at most retry_max_seconds (3600, its default),"
        " not 7200" in check.out
    ), check
    # control: equal is a fixed wait, and fine
    desk.config.write_text(
        base.replace("\n[outgoing]\n", "\n[outgoing]\nretry_base_seconds = 60\nretry_max_seconds = 60\n", 1)
    )
    assert desk.cli("config", "check").out.startswith("ok: ")
