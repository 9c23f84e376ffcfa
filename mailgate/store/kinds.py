"""The words the store keeps in its text columns, as enums: audit event kinds (`Event.kind`),
what a participant is on a ticket (`Participant.role`) and what a stored message is
(`Message.kind`).

Each is an `enum.StrEnum` whose values are exactly the strings stored (and read back by the CLI,
the reports and the tests), so a member is written as its value and compares equal to it. A
misspelt kind is a name error at import, not a row nobody ever finds. This module only names
words: it must not grow behaviour.
"""

from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    """What an audit event (`Event.kind`) records."""

    # a new ticket and where rules sent it
    CREATED = "created"
    ROUTED = "routed"
    # a ticket's own fields, changed by commands, mail or jobs
    STATUS = "status"
    GROUP = "group"
    ASSIGN = "assign"
    PRIORITY = "priority"
    TYPE = "type"
    CATEGORY = "category"
    FIELDS = "fields"
    TAGS = "tags"
    CC = "cc"
    LINK = "link"
    MERGED = "merged"
    MERGED_INTO = "merged-into"
    # what people wrote, and what was made of it
    COMMENT = "comment"
    FIRST_RESPONSE = "first-response"
    REPLY = "reply"
    AUTO_REPLY = "auto-reply"
    RATING = "rating"
    JOINED = "joined"
    HELD = "held"
    CC_NOT_ADDED = "cc-not-added"
    COMMANDS_REFUSED = "commands-refused"
    REQUESTER = "requester"  # the ticket was made another person's (#requester, on behalf)
    COMMANDS = "commands"  # a mail of commands only: recorded, no message stored
    FORGED_AGENT = "forged-agent"
    CANNED = "canned"  # an agent's `#canned <name>` went out as (the start of) the reply
    TIME = "time"  # an agent's `#time 30m`: minutes spent on the ticket
    PARENT = "parent"  # `#parent SUP-12` (new) or `#unparent` (old, no new)
    BROADCAST = "broadcast"  # the parent's `#broadcast` reached this child's people
    SIMILAR = "similar"  # a new ticket's similar tickets, and the likely duplicate among them
    KB_SENT = "kb-sent"  # a knowledge-base article (kb_*) went to the requester
    RELEASED = "released"  # an admin let a held message through (`mailgate inbox release`)
    # delivery: bounces, unsubscribes, mail the limits held back
    BOUNCE = "bounce"
    UNSUBSCRIBED = "unsubscribed"
    MAIL_HELD = "mail-held"
    MAIL_QUIET = "mail-quiet"  # automatic mail not sent: the address bounced (BouncedAddress)
    FANOUT_LIMITED = "fanout-limited"
    # the periodic jobs (pipeline/sla_apply.py)
    SLA_WARNING = "sla-warning"
    SLA_ESCALATED = "sla-escalated"
    TRIAGE_REMINDED = "triage-reminded"
    CUSTOMER_REMINDED = "customer-reminded"
    DEFERRED_REVIEW = "deferred-review"


class Role(StrEnum):
    """What a participant is on one ticket (`Participant.role`); team roles are domain.team's."""

    REQUESTER = "requester"
    WATCHER = "watcher"
    AGENT = "agent"


class MessageKind(StrEnum):
    """Who may see a stored message (`Message.kind`)."""

    PUBLIC = "public"
    INTERNAL = "internal"  # agents only
    SYSTEM = "system"  # a bounce or an automatic reply, kept as a note
    HELD = "held"  # a stranger's mail, agents only, outside the conversation


class AdminKind(StrEnum):
    """What an admin notice is about (`AdminNotice.kind`): each kind is rate-limited on its own,
    so a flood of quarantined mail never hides a refused rules edit."""

    QUARANTINE = "quarantine"
    RULES_REFUSED = "rules-refused"
    FLOOD = "held:flood"
    LOOP = "loop"
