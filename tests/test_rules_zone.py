"""`mailgate rules check` (and `config check`) warn, as FILE:LINE, when a routing.toml still names a
`timezone` that is not the desk's zone — the zone of sla.toml's [timers] calendar, which routing's
time conditions read unless the file names its own. Desks made by an older `mailgate init` carry
`timezone = "Europe/London"` beside an sla.toml in Europe/Berlin: their after-hours rules fire an
hour off from their business hours. A warning, not an error: the rules load, exit 0.
Run as the admin runs them: the console script on a desk made by `mailgate init`."""

from __future__ import annotations

import re
from pathlib import Path

from support.console import InitDesk, mailgate


def init_desk(root: Path) -> Path:
    return InitDesk(root).dir


def put_zone(path: Path, zone: str, at_line: int) -> None:
    """`timezone = "<zone>"` as line `at_line` of the file (before its first table)."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: at_line - 1]) + f'timezone = "{zone}"\n' + "".join(lines[at_line - 1 :]))


def test_an_old_desks_london_routing_zone_is_warned_with_file_and_line(tmp_path: Path) -> None:
    desk = init_desk(tmp_path)
    assert "warning" not in mailgate(desk, "rules", "check").out  # a new desk names no zone: quiet
    put_zone(desk / "rules" / "routing.toml", "Europe/London", 3)
    run = mailgate(desk, "rules", "check")  # exit 0: valid, the rules load
    [warning] = [line for line in run.out.splitlines() if "warning" in line]
    assert warning.startswith(
        'rules/routing.toml:3: warning: timezone = "Europe/London" is not the desk\'s zone Europe/Berlin'
        " (the zone of sla.toml's [timers] calendar 'office'): the time and weekday conditions of this"
        " file read Europe/London, while business hours, digests and reports count in Europe/Berlin"
    ), warning
    assert run.out.startswith("ok: ")
    # config check shows the same, once, among its warnings, in the same FILE:LINE: warning: form
    checked = mailgate(desk, "config", "check")
    assert (
        len(
            re.findall(
                r"(?m)^rules/routing\.toml:3: warning: timezone = \"Europe/London\"",
                checked.out + checked.err,
            )
        )
        == 1
    ), checked


def test_the_desks_own_zone_is_no_warning_and_a_desks_own_file_is_checked(tmp_path: Path) -> None:
    desk = init_desk(tmp_path)
    put_zone(desk / "rules" / "routing.toml", "Europe/Berlin", 1)  # says what the desk uses: fine
    assert "warning" not in mailgate(desk, "rules", "check").out
    own = desk / "rules" / "SUP" / "routing.toml"
    own.parent.mkdir()
    own.write_text('# the support desk\n\ntimezone = "America/New_York"\n')
    out = mailgate(desk, "rules", "check").out
    assert re.search(
        r"^rules/SUP/routing\.toml:3: warning: timezone = \"America/New_York\" is not the desk's zone"
        r" Europe/Berlin",
        out,
        re.M,
    ), out


def test_without_sla_toml_the_desk_zone_is_utc(tmp_path: Path) -> None:
    desk = init_desk(tmp_path)
    (desk / "rules" / "sla.toml").unlink()
    put_zone(desk / "rules" / "routing.toml", "Europe/London", 1)
    out = mailgate(desk, "rules", "check").out
    assert 'rules/routing.toml:1: warning: timezone = "Europe/London" is not the desk\'s zone UTC' in out
    assert "(UTC: there is no sla.toml)" in out


def test_an_alias_of_the_desks_zone_is_no_warning(tmp_path: Path) -> None:
    """`Etc/UTC` is `UTC`, `Europe/Kiev` is `Europe/Kyiv`: one zone under two names of the tz
    database tells the same time, and was warned as a mismatch because the names differ."""
    desk = init_desk(tmp_path)
    routing, sla = desk / "rules" / "routing.toml", desk / "rules" / "sla.toml"
    sla.write_text(sla.read_text().replace('tz = "Europe/Berlin"', 'tz = "Europe/Kyiv"', 1))
    put_zone(routing, "Europe/Kiev", 1)
    assert "warning" not in mailgate(desk, "rules", "check").out
    assert "warning" not in mailgate(desk, "config", "check").out
    # a zone that is not the desk's is still warned
    routing.write_text(routing.read_text().replace('"Europe/Kiev"', '"Europe/Berlin"', 1))
    assert (
        'timezone = "Europe/Berlin" is not the desk\'s zone Europe/Kyiv'
        in mailgate(desk, "rules", "check").out
    )
    # without sla.toml the desk's zone is UTC, which Etc/UTC names too
    sla.unlink()
    routing.write_text(routing.read_text().replace('"Europe/Berlin"', '"Etc/UTC"', 1))
    assert "warning" not in mailgate(desk, "rules", "check").out
