"""What became of a message (`InboxItem.disposition`), as one enum.

`mailgate inbox list` and `inbox show` print it, the tests and an admin's queries read it: the
values are exactly the stored strings. A handler sets one on `Context.disposition`; an expected
stop (pipeline/errors.py) carries its own. This module only names outcomes.
"""

from __future__ import annotations

from enum import StrEnum


class Disposition(StrEnum):
    # a ticket made or answered
    TICKET_CREATED = "ticket-created"
    REPLY = "reply"
    REPLY_AUTO = "reply:auto"  # an automatic reply kept as a system note
    REPLY_THANKS = "reply:thanks"  # "thanks" on a closed ticket: recorded, not reopened
    REPLY_REOPENED = "reply:reopened"
    RATING = "rating"
    HELD_STRANGER = "held:stranger"  # someone not on the ticket wrote there
    # an agent's mail
    AGENT_REPLY = "agent-reply"
    AGENT_AUTO_REPLY = "agent-auto-reply"
    FORGED_AGENT = "forged-agent"
    TOKEN_RETIRED = "token-retired"
    COMMANDS_REFUSED = "commands-refused"
    # delivery
    BOUNCE = "bounce"
    UNSUBSCRIBED = "unsubscribed"
    # expected stops (pipeline/errors.py)
    REJECTED = "rejected"
    QUARANTINED = "quarantined"  # accepted, but nobody to attribute it to: a human must look
    IGNORED_LOOP = "ignored:loop"
    IGNORED_SYSTEM_MAIL = "ignored:system-mail"
    BOUNCE_UNMATCHED = "bounce:unmatched"
    HELD_FLOOD = "held:flood"
    HELD_AUTO_REPLY = "held:auto-reply"  # an out-of-office answering no ticket: not one of its own
    # an admin's decision on a held message (`mailgate inbox drop`; `release` runs it again)
    DROPPED = "dropped"
