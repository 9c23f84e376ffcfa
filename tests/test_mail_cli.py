"""`mailgate parse FILE [--json]` as an admin runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "mail"


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "mailgate", "parse", *args], capture_output=True, timeout=60)


def test_parse_json_of_a_reply(tmp_path: Path) -> None:
    result = run(str(FIXTURES / "reply_german_outlook.eml"), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ticket_ref"] == "SUP-30"
    assert data["from_addr"] == "juergen.mueller@firma.example"
    # The sign-off and name below the text are a signature (no "-- " line): gone from the reply,
    # still in the whole body.
    assert data["reply_text"].endswith("Farbe fehlt weiterhin.")
    assert "Jürgen Müller" in data["body_text"]
    assert "bitte starten Sie den Drucker neu" in data["body_text"]


def test_unreadable_mail_still_prints_an_object_and_exits_0(tmp_path: Path) -> None:
    junk = tmp_path / "junk.eml"
    junk.write_bytes(b'\xff\xfe\x00\x01Content-Type: multipart/mixed; boundary="\n\n--\x80')
    result = run(str(junk), "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["errors"]


def test_missing_file_exits_66(tmp_path: Path) -> None:
    result = run(str(tmp_path / "nope.eml"), "--json")
    assert result.returncode == 66
    assert b"nope.eml" in result.stderr


def test_human_summary() -> None:
    result = run(str(FIXTURES / "bounce_qmail.eml"))
    assert result.returncode == 0
    out = result.stdout.decode()
    assert "Bounce:      olduser@customer.example 5.1.1" in out
