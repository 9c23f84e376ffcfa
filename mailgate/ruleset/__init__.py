"""One source for everything admins edit: rules/team.toml, routing.toml, workflow.toml, sla.toml
and templates/, loaded together into one immutable, validated `Snapshot` with one fingerprint.

- `load(rules_dir, templates_dir, desks)`: the one loader (daemon, `rules check`, `config check`,
  `status`, `tickets show`); raises `RulesInvalid` with every `FILE:LINE: reason`.
- `RulesSource`: the snapshot in force and the one watcher that swaps in a valid edit and refuses
  a bad one whole (source.py).
- `environment(templates, desk_key)`: the jinja2 Environment over a snapshot's templates.

Sits beside domain/ and store/: it imports the domain's file parsers and nothing of the pipeline,
so the pipeline and the edges can both use it. It never touches the database or sends mail.
"""

from mailgate.ruleset.files import SHIPPED_TEMPLATES, WORKFLOW_FILE
from mailgate.ruleset.snapshot import DeskLike, Snapshot, Templates, desk_zone, load, zone_warnings
from mailgate.ruleset.source import Refused, RulesSource
from mailgate.ruleset.templates import environment

__all__ = [
    "SHIPPED_TEMPLATES",
    "WORKFLOW_FILE",
    "DeskLike",
    "Refused",
    "RulesSource",
    "Snapshot",
    "Templates",
    "desk_zone",
    "environment",
    "load",
    "zone_warnings",
]
