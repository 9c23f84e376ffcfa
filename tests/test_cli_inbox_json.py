"""`mailgate inbox list --json` and `inbox failed --json`: a JSON list, newest first, of what
`inbox show ID --json` prints for one message, as `tickets list --json` is the list beside
`tickets show --json`. Run as an admin's script runs it: the console script on a desk fresh from
`mailgate init`, fed by `mailgate ingest`."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_mail
from support.console import InitDesk


def test_inbox_list_json_is_the_list_of_what_inbox_show_json_prints(tmp_path: Path) -> None:
    desk = InitDesk(tmp_path)
    desk.ingest(make_mail("printer jam", sender="ann@example.com", message_id="<p1@example.com>"))
    desk.ingest(
        make_mail(
            "Automatic reply: away",
            "Back on Monday.\n",
            sender="bob@example.com",
            message_id="<ooo@example.com>",
            headers={"Auto-Submitted": "auto-replied"},
        )
    )
    listed = json.loads(desk.cli("inbox", "list", "--json").out)
    assert [(r["id"], r["state"], r["disposition"], r["ticket"]) for r in listed] == [
        (2, "done", "held:auto-reply", None),
        (1, "done", "ticket-created", "SUP-1"),
    ]
    for row in listed:  # the same fields and values as `inbox show ID --json`, trace included
        assert row == json.loads(desk.cli("inbox", "show", str(row["id"]), "--json").out)
    assert listed[0]["reason"] and listed[0]["trace"]
    assert [r["id"] for r in json.loads(desk.cli("inbox", "list", "--json", "--limit", "1").out)] == [2]
    # nothing quarantined: an empty list, not the words a person reads
    assert json.loads(desk.cli("inbox", "failed", "--json").out) == []
    assert desk.cli("inbox", "failed").out.strip() == "no failed messages"
