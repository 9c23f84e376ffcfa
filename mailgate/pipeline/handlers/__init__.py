"""One handler per kind of inbound mail, chosen from an ordered registry (STYLE.md habit 6).

bounce → unsubscribe → agent reply → requester/watcher reply → new ticket, one module each
(bounce.py, unsubscribe.py, agent_reply.py, reply.py, new_ticket.py); what they share is in
common.py. The first whose `can_handle` says yes runs `execute`, which applies the change
through the Repo (one transaction) and queues the mail it causes. A test pins the order.
"""

from __future__ import annotations

from mailgate.pipeline.handlers.agent_reply import AgentReplyHandler
from mailgate.pipeline.handlers.bounce import BounceHandler
from mailgate.pipeline.handlers.common import LOOP_PRONE, Handler, OneEvent, Services
from mailgate.pipeline.handlers.new_ticket import NewTicketHandler
from mailgate.pipeline.handlers.reply import ReplyHandler
from mailgate.pipeline.handlers.unsubscribe import UnsubscribeHandler


def registry(services: Services) -> list[Handler]:
    """The order matters and is pinned by a test: bounces first, new tickets last. Each is one
    event for the fan-out cap (OneEvent)."""
    handlers: tuple[Handler, ...] = (
        BounceHandler(services),
        UnsubscribeHandler(services),
        AgentReplyHandler(services),
        ReplyHandler(services),
        NewTicketHandler(services),
    )
    return [OneEvent(handler, services) for handler in handlers]


__all__ = ["LOOP_PRONE", "Handler", "Services", "registry"]
