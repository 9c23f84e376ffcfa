"""Rendering mail bodies from the admins' jinja2 templates, as the rules snapshot in force has them.

Templates live in `templates/<event>.txt` (and optional `<event>.html`), overridable per desk in
`templates/<DESK_KEY>/`; what the admin's directory lacks comes from the shipped set. Their text
comes from the rules snapshot (mailgate/ruleset), which validated it together with the rules
files; an edit shows in the next mail once the rules source has swapped in the new snapshot.
One Environment per desk and snapshot: templates compile once per snapshot and stay cached.
"""

from __future__ import annotations

from typing import Any, Protocol

from jinja2 import Environment

from mailgate.ruleset import Snapshot, environment


class HasSnapshot(Protocol):
    """Where the renderer finds the snapshot in force (a `RulesSource`)."""

    @property
    def current(self) -> Snapshot: ...


class Renderer:
    """Renders for the pipeline and the scheduler (two threads): each render takes the snapshot
    once, and the cache of compiled templates is swapped whole with it."""

    def __init__(self, rules: HasSnapshot) -> None:
        self.rules = rules
        self._cache: tuple[Snapshot | None, dict[str, Environment]] = (None, {})

    def _env(self, desk_key: str) -> tuple[Snapshot, Environment]:
        snapshot = self.rules.current
        cached, envs = self._cache
        if snapshot is not cached:  # a new snapshot: its templates compile afresh
            envs = {}
            self._cache = (snapshot, envs)
        env = envs.get(desk_key)
        if env is None:
            env = envs[desk_key] = environment(snapshot.templates, desk_key)
        return snapshot, env

    def render(self, desk_key: str, name: str, context: dict[str, Any]) -> tuple[str, str | None]:
        """The text part, and the HTML part when the admin wrote one."""
        snapshot, env = self._env(desk_key)
        text = env.get_template(f"{name}.txt").render(context)
        if snapshot.templates.find(desk_key, f"{name}.html") is None:
            return text, None
        return text, env.get_template(f"{name}.html").render(context)
