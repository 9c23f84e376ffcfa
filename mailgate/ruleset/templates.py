"""The jinja2 Environment that renders a snapshot's templates for one desk.

The renderer (outbox/render.py) and `mailgate config check` both build their Environment here,
so what passes the check renders in the daemon. The templates' text comes from the snapshot, not
the file system: an edit reaches mail only as part of a whole new snapshot, after it was
validated, and rendering never asks the disk whether a file changed.

HTML templates autoescape; text templates need no escaping but use StrictUndefined so a
misspelt variable fails at `mailgate config check`, not in a customer's inbox.
"""

from __future__ import annotations

from collections.abc import Callable

from jinja2 import BaseLoader, Environment, StrictUndefined, TemplateNotFound, select_autoescape

from mailgate.ruleset.snapshot import Templates


class SnapshotLoader(BaseLoader):
    """Templates of one snapshot as one desk sees them (its own directory, templates/, shipped).
    A snapshot never changes, so a compiled template is always up to date: a new snapshot gets
    a new Environment."""

    def __init__(self, templates: Templates, desk_key: str) -> None:
        self.templates = templates
        self.desk_key = desk_key

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool]]:
        found = self.templates.find(self.desk_key, template)
        if found is None:
            raise TemplateNotFound(template)
        return found.source, str(found.path), lambda: True

    def list_templates(self) -> list[str]:
        own = self.templates.desks.get(self.desk_key, {})
        return sorted({*own, *self.templates.shared, *self.templates.shipped})


def environment(templates: Templates, desk_key: str) -> Environment:
    """A new Environment over `templates` for the desk `desk_key`."""
    return Environment(
        loader=SnapshotLoader(templates, desk_key),
        autoescape=select_autoescape(enabled_extensions=("html", "htm"), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
