"""`#canned <name>`: a prepared answer from templates/canned/<name>.txt (or a `kb_*` knowledge-base
answer) rendered for one ticket, to go out before what the agent wrote under the commands.

The text comes from the rules snapshot in force, like every template, so a canned reply an agent
can name has passed `mailgate rules check`. Rendering happens inside the handler's transaction and
sends nothing: the agent-reply handler sends the result as the agent's public reply.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2 import TemplateError

from mailgate.config import Desk
from mailgate.ruleset import Snapshot, environment
from mailgate.store.models import Ticket

# A knowledge-base article is a template named kb_* (templates/kb_*.txt, which a routing rule's
# auto_reply or `#canned` sends, or templates/canned/kb_*.txt). Its title is the first line's
# `{# title: ... #}` comment, else its name ("kb_guest_wifi": "Guest wifi"). docs/workflow.md.
KB_PREFIX = "kb_"
_TITLE = re.compile(r"\A\s*\{#-?\s*title:\s*(.+?)\s*-?#\}")

# What a canned reply is given (mailgate/checks.py checks templates/canned/ against these).
CANNED_VARIABLES = frozenset({"ticket", "desk", "requester_name", "fields", "agent"})


class CannedFailed(Exception):
    """The canned reply does not render for this ticket (a kb_* answer that needs a variable only
    a new ticket's mail has): the agent is told, and nothing is sent."""


def render_canned(rules: Snapshot, desk: Desk, ticket: Ticket, name: str, agent_name: str) -> str:
    """The canned reply `name` for `ticket`, as the requester will read it (no trailing blank)."""
    context: dict[str, Any] = {
        "ticket": ticket,
        "desk": desk,
        "requester_name": ticket.requester_name,
        "fields": dict(ticket.fields or {}),
        "agent": agent_name,
    }
    try:
        template = environment(rules.templates, desk.key).get_template(rules.templates.canned_file(name))
        return template.render(context).strip()
    except TemplateError as exc:
        raise CannedFailed(f"canned reply '{name}' does not render: {exc}") from exc


def with_canned(canned: str, comment: str) -> str:
    """The reply as sent: the canned text first, then what the agent wrote under the commands."""
    return f"{canned}\n\n{comment}" if comment else canned


def is_article(name: str | None) -> bool:
    """Whether a template sent to a requester is a knowledge-base article."""
    return bool(name) and str(name).startswith(KB_PREFIX)


def article_title(rules: Snapshot, desk_key: str, name: str) -> str:
    """What the request page calls the article: its `{# title: ... #}`, else its name."""
    found = rules.templates.find(desk_key, rules.templates.canned_file(name))
    match = _TITLE.match(found.source) if found is not None else None
    if match:
        return match.group(1)
    return name.removeprefix(KB_PREFIX).replace("_", " ").strip().capitalize() or name
