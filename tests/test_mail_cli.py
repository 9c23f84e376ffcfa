"""`mailgate parse FILE [--json]` as an admin runs it: the installed console script, in a
directory of its own."""

from __future__ import annotations

import json
from pathlib import Path

from support.console import Run, mailgate

FIXTURES = Path(__file__).parent / "fixtures" / "mail"


def run(cwd: Path, *args: str) -> Run:
    return mailgate(cwd, "parse", *args, ok=(0, 66))


def test_parse_json_of_a_reply(tmp_path: Path) -> None:
    result = run(tmp_path, str(FIXTURES / "reply_german_outlook.eml"), "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["ticket_ref"] == "SUP-30"
    assert data["from_addr"] == "juergen.mueller@firma.example"
    # The sign-off and name below the text are a signature (no "-- " line): gone from the reply,
    # still in the whole body.
    assert data["reply_text"].endswith("Farbe fehlt weiterhin.")
    assert "Jürgen Müller" in data["body_text"]
    assert "bitte starten Sie den Drucker neu" in data["body_text"]
    # It only reads: no state directory, no secret key left where the admin ran it.
    assert list(tmp_path.iterdir()) == []


def test_unreadable_mail_still_prints_an_object_and_exits_0(tmp_path: Path) -> None:
    junk = tmp_path / "junk.eml"
    junk.write_bytes(b'\xff\xfe\x00\x01Content-Type: multipart/mixed; boundary="\n\n--\x80')
    result = run(tmp_path, str(junk), "--json")
    assert result.code == 0
    data = json.loads(result.out)
    assert data["errors"]


def test_missing_file_exits_66(tmp_path: Path) -> None:
    result = run(tmp_path, str(tmp_path / "nope.eml"), "--json")
    assert result.code == 66
    assert "nope.eml" in result.err


def test_human_summary(tmp_path: Path) -> None:
    result = run(tmp_path, str(FIXTURES / "bounce_qmail.eml"))
    assert result.code == 0
    out = result.out
    assert "Bounce:      olduser@customer.example 5.1.1" in out
