"""A ticket's audit trail in words: one sentence per event, for `mailgate tickets show`.

Every event kind the pipeline writes (`Repo.event(ticket, kind, **data)`) is worded here and only
here, from the typed data the event carries (STYLE.md habit 12: changes are data, words are made
once). An event kind this module does not know yet still reads as a sentence, built from its
data, so a new kind never prints a Python dict.

Pure: it takes the kind, the actor and the data, and returns text. It reads no database, and it
never changes what is stored; `--json` prints the stored data as it is, for machines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mailgate.domain.commands import format_minutes

Data = Mapping[str, Any]


def _list(values: object) -> str:
    """`a, b and c` of a list; one value as it is; nothing as an empty string."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        return "" if values is None else str(values)
    items = [str(v) for v in values]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _change(what: str, d: Data) -> str:
    old, new = d.get("old"), d.get("new")
    if new in (None, ""):
        return f"cleared the {what}" + (f" (was {old})" if old else "")
    return f"set the {what} to {new}" + (f" (was {old})" if old else "")


def _created(d: Data) -> str:
    out = "opened the ticket" + (f" by {d['source']}" if d.get("source") else "")
    if d.get("status"):
        out += f", status {d['status']}"
    if d.get("watchers"):
        out += f"; watchers {_list(d['watchers'])}"
    if d.get("cc_not_added"):
        out += f"; Cc not added (over the cap): {_list(d['cc_not_added'])}"
    return out


def _routed(d: Data) -> str:
    r: Data = d.get("routing") or {}
    matched = list(r.get("matched") or [])
    rules = ("rules " if len(matched) > 1 else "rule ") + _list(matched) if matched else "no rule (triage)"
    out = f"routed to {r['group']} by {rules}" if r.get("group") else f"routed by {rules}, no group"
    if r.get("assignee"):
        reason = (r.get("assignment") or {}).get("reason")
        out += f"; assigned to {r['assignee']}" + (f" ({reason})" if reason else "")
    extras = [f"{k} {r[k]}" for k in ("priority", "type", "category") if r.get(k)]
    matrix = str(r.get("priority_reason") or "").partition(" from matrix: ")[2]
    if r.get("priority") and matrix:  # a rule's or the default's priority needs no reason
        extras[0] += f" (from matrix: {matrix})"
    if r.get("tags"):
        extras.append(f"tags {_list(r['tags'])}")
    if extras:
        out += "; " + ", ".join(extras)
    if d.get("rules_version"):
        out += f" (rules {d['rules_version']})"
    return out


def _status(d: Data) -> str:
    label = d.get("label") or f"{d.get('old')} → {d.get('new')}"
    why = d.get("why")
    return f"changed the status: {label}" + (f" ({why})" if why and why != "command" else "")


def _assign(d: Data) -> str:
    if not d.get("new"):
        return "removed the assignee" + (f" {d['old']}" if d.get("old") else "")
    return f"assigned it to {d['new']}" + (f" (was {d['old']})" if d.get("old") else "")


def _fields(d: Data) -> str:
    parts = [f"{k} to {v}" for k, v in (d.get("set") or {}).items()]
    parts += [f"cleared {k}" for k in d.get("unset") or []]
    return "set " + ", ".join(parts) if parts else "changed no field"


def _tags(d: Data) -> str:
    parts = []
    if d.get("added"):
        parts.append(f"tagged it {_list(d['added'])}")
    if d.get("removed"):
        parts.append(f"removed the tag(s) {_list(d['removed'])}")
    return "; ".join(parts) or "changed no tag"


def _cc(d: Data) -> str:
    if d.get("added"):
        return f"added {d['added']} as a watcher"
    return f"removed {d.get('removed')} from the watchers"


def _bounce(d: Data) -> str:
    kind = "permanent" if d.get("permanent") else "temporary"
    out = f"{kind} delivery failure for {_list(d.get('failed') or []) or 'an unknown address'}"
    if d.get("status"):
        out += f" (status {d['status']})"
    if d.get("muted"):
        out += f"; no more mail to {_list(d['muted'])}"
    if d.get("unproven"):
        out += f"; not proven for {_list(d['unproven'])} (it did not come to their bounce address)"
    return out


def _mail_to(what: str) -> Callable[[Data], str]:
    def word(d: Data) -> str:
        to = _list(d.get("to") or [])
        return what + (f": mailed {to}" if to else ": nobody to mail")

    return word


def _sla(what: str) -> Callable[[Data], str]:
    def word(d: Data) -> str:
        target = str(d.get("target") or "").replace("_", " ")
        to = _list(d.get("to") or [])
        return f"{what} {target} target (due {d.get('due')})" + (f": mailed {to}" if to else "")

    return word


def _held(d: Data) -> str:
    out = f"held mail from {d.get('from') or 'a stranger'} for the agents to let in"
    if d.get("why"):
        out += f" ({d['why']})"
    return out + ("; the sender was told" if d.get("told") else "")


def _forged(d: Data) -> str:
    out = f"mail claiming to be {d.get('claimed')} was not proven to come from them"
    if d.get("why"):
        out += f" ({d['why']})"
    return out + ("; its commands were not run" if d.get("commands") else "; kept as an internal note")


def _rating(d: Data) -> str:
    comment = str(d.get("comment") or "").strip()
    return f"rated it {d.get('rating')}/5" + (f': "{comment[:200]}"' if comment else "")


def _fanout(d: Data) -> str:
    return (
        f"mailed {len(d.get('mailed') or [])} people, the cap of {d.get('cap')};"
        f" not mailed: {_list(d.get('not_mailed') or [])}"
    )


# Each event kind, worded once. The actor is said before the sentence ("alice@x: assigned it to
# bob@x"); sentences without a person behind them come from "system".
WORDS: dict[str, Callable[[Data], str]] = {
    "created": _created,
    "routed": _routed,
    "status": _status,
    "group": lambda d: f"moved it to group {d.get('new')}" + (f" (was {d['old']})" if d.get("old") else ""),
    "assign": _assign,
    "priority": lambda d: _change("priority", d),
    "type": lambda d: _change("type", d),
    "category": lambda d: _change("category", d),
    "fields": _fields,
    "tags": _tags,
    "cc": _cc,
    "link": lambda d: f"linked it to {d.get('other')}",
    "merged": lambda d: f"merged {d.get('source')} into this ticket",
    "merged-into": lambda d: f"merged it into {d.get('target')}",
    "comment": lambda d: "added an internal note" if d.get("internal") else "replied to the requester",
    "first-response": lambda d: "gave the first response",
    "reply": lambda d: "replied",
    "joined": lambda d: "joined the conversation" + (f" ({d['how']})" if d.get("how") else ""),
    "held": _held,
    "released": lambda d: (
        f"released inbox message {d.get('inbox')}, held as {d.get('was')}: processed as if not held"
    ),
    "auto-reply": lambda d: (
        "sent an automatic reply, not answered" + (f" ({d['reason']})" if d.get("reason") else "")
    ),
    "bounce": _bounce,
    "unsubscribed": lambda d: "turned off their notifications",
    "cc-not-added": lambda d: f"Cc not added (over the cap): {_list(d.get('addresses') or [])}",
    "commands-refused": lambda d: (
        "commands refused, nothing changed: " + "; ".join(map(str, d.get("errors") or []))
    ),
    "forged-agent": _forged,
    "canned": lambda d: f"sent the canned reply {d.get('name')}",
    "parent": lambda d: (
        f"made {d['new']} its parent" if d.get("new") else f"removed its parent {d.get('old')}"
    ),
    "broadcast": lambda d: f"broadcast from the parent {d.get('parent')} to this ticket's people",
    "similar": lambda d: (
        (
            f"likely duplicate of {d['duplicate']} (same requester, similar subject, within a day); "
            if d.get("duplicate")
            else ""
        )
        + f"similar tickets: {_list(d.get('keys') or [])}"
    ),
    "kb-sent": lambda d: f"sent the knowledge-base article {d.get('article')}",
    "time": lambda d: f"spent {format_minutes(int(d.get('minutes') or 0))} on it",
    "rating": _rating,
    "fanout-limited": _fanout,
    "mail-held": lambda d: (
        f"did not send the {d.get('mail')} to {d.get('recipient')}"
        + (f" ({d['reason']})" if d.get("reason") else "")
    ),
    "mail-quiet": lambda d: (
        f"did not send the {d.get('mail')} to {d.get('recipient')}: it bounced"
        + (f" ({d['status']})" if d.get("status") else "")
        + (f", quiet until {d['until']}" if d.get("until") else "")
    ),
    "commands": lambda d: "ran commands: " + "; ".join(map(str, d.get("commands") or [])),
    "requester": lambda d: (
        f"made {d.get('new')} the requester"
        + (f" (was {d['old']})" if d.get("old") and d.get("old") != d.get("new") else "")
        + (f", by {d['source']}" if d.get("source") else "")
    ),
    "sla-warning": _sla("warned: close to the"),
    "sla-escalated": _sla("escalated: missed the"),
    "triage-reminded": _mail_to("reminded triage of the untouched ticket"),
    "customer-reminded": _mail_to("reminded the requester that we wait for them"),
    "deferred-review": _mail_to("deferred ticket due for review"),
}


def _generic(kind: str, d: Data) -> str:
    """An event kind not worded above: its name and its data as `key value` pairs."""
    parts = [
        f"{k.replace('_', ' ')} {_list(v) if isinstance(v, list) else v}"
        for k, v in d.items()
        if v not in (None, "", [], {})
    ]
    return kind.replace("-", " ") + (": " + ", ".join(parts) if parts else "")


def sentence(kind: str, actor: str, data: Data | None) -> str:
    """One event as a line a person reads, e.g. `system: routed to AV by rule av-keywords;
    assigned to av-lead (group lead)`."""
    word = WORDS.get(kind)
    text = word(data or {}) if word is not None else _generic(kind, data or {})
    return f"{actor or 'system'}: {text}"
