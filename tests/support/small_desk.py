"""The small desk several mail-through-the-daemon tests share (the `small_desk` fixture of
tests/conftest.py): one desk, SUP at support@desk.example, on the default workflow, no routing
rules; Tara triages, Theo (handle tech1) is the other agent; Carla writes with Wes on Cc."""

from __future__ import annotations

from pathlib import Path

from conftest import RunningDaemon, Sink, scenario_config

DESK = "support@desk.example"
CUSTOMER = "carla@client.example"
WATCHER = "wes@client.example"
TRIAGE = "triage@desk.example"
TECH = "tech1@desk.example"

TEAM = f"""
triage = "{TRIAGE}"
[[agents]]
address = "{TRIAGE}"
name = "Tara"
[[agents]]
address = "{TECH}"
name = "Theo"
handle = "tech1"
"""


def desk_files(root: Path, sink: Sink, *, extra: str = "") -> Path:
    """The desk's config.toml and rules under `root`, relaying to `sink` (`extra`: more config
    tables); returns the config's path, for a test that adds a rules file before it starts."""
    return scenario_config(
        root, relay_port=sink.port, desks=[(DESK, "SUP", "default")], team=TEAM, routing="", extra=extra
    )


def start_desk(root: Path, sink: Sink, *, extra: str = "") -> RunningDaemon:
    """The desk's files under `root`, and its daemon running, relaying to `sink`."""
    return RunningDaemon(desk_files(root, sink, extra=extra))
