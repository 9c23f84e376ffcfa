"""Rendering mail bodies from the admins' jinja2 templates.

Templates live in `templates/<event>.txt` (and optional `<event>.html`), overridable per desk in
`templates/<DESK_KEY>/`; what the admin's directory lacks comes from the shipped set. HTML templates autoescape; text templates need no escaping but use
StrictUndefined so a misspelt variable fails at `mailgate config check`, not in a customer's inbox.
One Environment per process: templates are compiled once and cached.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)

# The templates shipped inside the package (rules_loader.SHIPPED_TEMPLATES names the same
# directory): a path of its own here, so that the outbox does not import the rules loader and,
# through it, the domain.
SHIPPED_TEMPLATES = Path(__file__).resolve().parent.parent / "defaults" / "templates"
HTML_RECHECK_SECONDS = 5.0
EDIT_RECHECK_SECONDS = 1.0


class _Rechecked(BaseLoader):
    """The loader's templates, each asking the file system whether it was edited at most once a
    second. Jinja's own check stats the file at every render and every include: two or three
    stats for each mail sent, for edits that happen a few times a day and show a second later."""

    def __init__(self, inner: BaseLoader, every: float = EDIT_RECHECK_SECONDS) -> None:
        self.inner = inner
        self.every = every

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Any]:
        source, filename, uptodate = self.inner.get_source(environment, template)
        if uptodate is None:
            return source, filename, None
        every = self.every
        checked = time.monotonic()

        def rechecked() -> bool:
            nonlocal checked
            now = time.monotonic()
            if now - checked < every:
                return True
            checked = now
            return bool(uptodate())

        return source, filename, rechecked

    def list_templates(self) -> list[str]:
        return self.inner.list_templates()


class Renderer:
    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self._envs: dict[str, Environment] = {}
        # (desk, name) -> when we last found no HTML template. A miss walks every loader path and
        # raises; most events have no HTML part, so the answer is kept for a few seconds (an admin
        # who adds one sees it used moments later, as with any template edit).
        self._no_html: dict[tuple[str, str], float] = {}

    def _env(self, desk_key: str) -> Environment:
        env = self._envs.get(desk_key)
        if env is None:
            paths = [self.templates_dir / desk_key, self.templates_dir, SHIPPED_TEMPLATES]
            env = Environment(
                loader=_Rechecked(ChoiceLoader([FileSystemLoader(str(p)) for p in paths])),
                autoescape=select_autoescape(enabled_extensions=("html", "htm"), default_for_string=False),
                undefined=StrictUndefined,
                keep_trailing_newline=True,
                trim_blocks=True,
                lstrip_blocks=True,
            )
            self._envs[desk_key] = env
        return env

    def has(self, desk_key: str, name: str) -> bool:
        try:
            self._env(desk_key).get_template(f"{name}.txt")
        except TemplateNotFound:
            return False
        return True

    def render(self, desk_key: str, name: str, context: dict[str, Any]) -> tuple[str, str | None]:
        """The text part, and the HTML part when the admin wrote one."""
        env = self._env(desk_key)
        text = env.get_template(f"{name}.txt").render(context)
        key = (desk_key, name)
        missed = self._no_html.get(key)
        now = time.monotonic()
        if missed is not None and now - missed < HTML_RECHECK_SECONDS:
            return text, None
        try:
            html_t = env.get_template(f"{name}.html")
        except TemplateNotFound:
            self._no_html[key] = now
            return text, None
        self._no_html.pop(key, None)
        return text, html_t.render(context)
