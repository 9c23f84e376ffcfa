"""The resolution mail's survey, answered by mail as its words say: the reply the mail asks for
is read as a rating, and the ticket stays resolved. The words must name the shape the reply
handler reads (the number alone on the first line): "5 great help" on one line is not a rating
there (a reply "2 more printers are broken" must reopen), and a requester who wrote it as the
old words invited ("a number from 1 to 5 and any comment") reopened the ticket and alarmed the
agents instead of rating it."""

from __future__ import annotations

import re

from conftest import RunningDaemon, Sink, body_of, reply
from support.web import CUSTOMER, open_ticket, rcpt_of, resolve


def test_the_survey_reply_the_mail_asks_for_rates_and_does_not_reopen(
    daemon: RunningDaemon, sink: Sink
) -> None:
    _, note = open_ticket(daemon, sink)
    resolution = resolve(daemon, sink, note)
    words = body_of(resolution)
    assert re.search(r"reply with the number alone on the first line", words), words
    daemon.send(
        reply(resolution, CUSTOMER, "5\ngreat help, thank you"), sender=CUSTOMER, rcpt=rcpt_of(resolution)
    )
    daemon.settle()
    [t] = daemon.tickets()
    assert (t.rating, t.rating_comment, t.status_category) == (5, "great help, thank you", "closed"), t
