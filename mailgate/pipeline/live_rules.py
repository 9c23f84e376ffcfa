"""The rules in force: team, routing and workflows, reloaded when an admin edits the files.

A bad edit is refused: the last good rules stay in force and `refresh` returns the errors once
per edit, so the runner can log them and mail the admin. At start, invalid rules are an error:
the daemon does not start on rules it cannot trust.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from mailgate.config import Config, ConfigError, Desk
from mailgate.domain.rulesfile import RulesError, RulesInvalid, being_written
from mailgate.domain.team import Team
from mailgate.domain.workflow import Workflow, load_workflows
from mailgate.rules_loader import RulesSet, RulesWatcher, load_rules, template_names

log = logging.getLogger(__name__)
WORKFLOW_FILE = "workflow.toml"


@dataclass(frozen=True)
class Refused:
    """A rules edit that was refused: the errors, each FILE:LINE: reason."""

    errors: tuple[RulesError, ...]

    def text(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def workflow_path(config: Config) -> Path:
    """rules/workflow.toml, or the shipped presets when the admin has none (a desk that only
    routes needs no workflow file of its own)."""
    path = config.rules_dir / WORKFLOW_FILE
    if path.exists():
        return path
    return Path(__file__).resolve().parent.parent / "defaults" / "rules" / WORKFLOW_FILE


def _load_workflows(config: Config) -> dict[str, Workflow]:
    path = workflow_path(config)
    flows = load_workflows(path, template_names(config.templates_dir), name=str(path))
    for desk in config.desks:
        if desk.workflow not in flows:
            raise ConfigError(
                f"desks: desk {desk.key} uses workflow '{desk.workflow}', which {path} does not define"
                f" (defined: {', '.join(flows)})"
            )
    return flows


class LiveRules:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.rules: RulesSet = load_rules(config.rules_dir, config.templates_dir)
        self.watcher = RulesWatcher(config.rules_dir, config.templates_dir, self.rules)
        self.workflows = _load_workflows(config)
        self._wf_version = self._workflow_version()

    @property
    def team(self) -> Team:
        return self.rules.team

    @property
    def version(self) -> str:
        return f"{self.rules.version}-{self._wf_version[:6]}"

    def workflow(self, desk: Desk) -> Workflow:
        return self.workflows[desk.workflow]

    def _workflow_version(self) -> str:
        try:
            return hashlib.sha256(workflow_path(self.config).read_bytes()).hexdigest()
        except OSError:
            return ""

    def refresh(self) -> Refused | None:
        """Pick up edits. Returns the errors of a refused edit (once per edit), else None."""
        result = self.watcher.poll()
        refused: list[RulesError] = []
        if result.status == "reloaded" and result.rules is not None:
            self.rules = result.rules
            log.info("rules reloaded (version %s)", self.rules.version)
        elif result.status == "rejected":
            refused.extend(result.errors)
        version = self._workflow_version()
        if version != self._wf_version and not being_written(workflow_path(self.config)):
            self._wf_version = version
            try:
                self.workflows = _load_workflows(self.config)
                log.info("workflows reloaded")
            except RulesInvalid as exc:
                refused.extend(exc.errors)
            except ConfigError as exc:
                refused.append(RulesError(str(self.config.rules_dir / WORKFLOW_FILE), 1, str(exc)))
        if refused:
            for e in refused:
                log.error("rules edit refused, the previous rules stay in force: %s", e)
            return Refused(tuple(refused))
        return None
