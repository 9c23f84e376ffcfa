"""Defects an outside-in trial of the integrate branch found, each checked as a person meets it:
the installed `mailgate` console script in a new process on a desk fresh from `mailgate init`."""

from __future__ import annotations

import re
from pathlib import Path

from support.console import mailgate


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
