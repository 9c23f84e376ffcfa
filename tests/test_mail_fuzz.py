"""Property tests: thousands of malformed messages per run. The parser never raises, and the
`mailgate parse --json` object is always valid JSON (UTF-8 encodable, round-trips)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgate.cli.parse import parse_to_dict
from mailgate.mail.model import ParsedMail
from mailgate.mail.parse import parse_message
from mailgate.mail.reply import extract_reply
from mailgate.mail.thanks import is_thanks_only

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "mail").glob("*.eml"))
CORPUS = [p.read_bytes() for p in FIXTURES]


def fuzz(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def check(raw: bytes) -> None:
    mail = parse_message(raw, own_addresses=["support@localhost"])
    assert isinstance(mail, ParsedMail)
    # Problems are recorded as readable notes, not as an internal step that crashed.
    crashed = [e for e in mail.errors if e.startswith(("headers:", "body:", "flags:", "message could not"))]
    assert not crashed, crashed
    data = parse_to_dict(raw, ["support@localhost"], ["SUP"])
    text = json.dumps(data, ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogates: the CLI writes UTF-8 bytes
    assert json.loads(text) == data
    for addr in data["to_addrs"] + data["cc_addrs"] + ([data["from_addr"]] if data["from_addr"] else []):
        assert addr == addr.lower() and "@" in addr and " " not in addr
    for mid in [data["message_id"], data["in_reply_to"], *data["references"]]:
        assert mid is None or ("<" not in mid and ">" not in mid)
    for att in data["attachments"]:
        assert "/" not in att["filename"] and "\n" not in att["filename"] and "\r" not in att["filename"]


@fuzz(1200)
@given(st.binary(max_size=3000))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


# Pieces real broken mail is made of: odd header names and values, encoded words with bad
# charsets or bad base64, 8-bit bytes, RFC 2231 parameters, boundaries that do or do not match.
HEADER_NAMES = st.sampled_from(
    [
        "From",
        "To",
        "Cc",
        "Subject",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Date",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "Auto-Submitted",
        "Return-Path",
        "Precedence",
        "X-Auto-Response-Suppress",
        "List-Id",
        "Reply-To",
        "Sender",
        "X-Weird header",
        "",
    ]
)
ATOMS = st.sampled_from(
    [
        b"a@b",
        b"<x@y>",
        b'"Doe, J" <J@X.ORG>',
        b"=?utf-8?B?w6k=?=",
        b"=?utf-8?B?###?=",
        b"=?x-bogus?Q?=E9?=",
        b"=?utf-8?Q?a=0D=0Ab?=",
        b"\xff\xfe",
        b"\xc3\xa9",
        b"multipart/mixed; boundary=B",
        b"multipart/report; report-type=delivery-status; boundary=B",
        b"message/rfc822",
        b"text/plain; charset=klingon",
        b"text/html",
        b"base64",
        b"quoted-printable",
        b"attachment; filename*=utf-8''%E2%80%AE%2F..%2Fx",
        b'attachment; filename="../../a"',
        b"<>",
        b"bulk",
        b"auto-replied",
        b",",
        b";",
        b" ",
        b"\r\n",
        b"\n\t",
        b"(comment",
        b'"unterminated',
        b"<a@b>,<c@d>",
    ]
)
BODY_ATOMS = st.sampled_from(
    [
        b"--B\n",
        b"--B--\n",
        b"--B\nContent-Type: text/plain\n\n",
        b"--B\nContent-Type: message/rfc822\n\n",
        b"--B\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; x@y\nAction: failed\nStatus: 5.1.1\n\n",
        b"--B\nContent-Type: text/html\n\n<p>hi<blockquote>q",
        b"> quoted\n",
        b"On Mon, X wrote:\n",
        b"-- \n",
        b"Sent from my iPhone\n",
        b"From: a\nSent: b\nTo: c\nSubject: d\n",
        b"=E9=\n",
        b"QUJD\n",
        b"\xff\x00\x80",
        b"\n",
        b"Hi. This is the qmail-send program\n<u@v>:\n",
        b"Message-ID: <orig@x>\n",
        b"text ",
        b"\r",
    ]
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    headers = draw(st.lists(st.tuples(HEADER_NAMES, st.lists(ATOMS, max_size=5)), max_size=12))
    head = b"".join(name.encode() + b": " + b"".join(value) + b"\n" for name, value in headers)
    body = b"".join(draw(st.lists(BODY_ATOMS, max_size=30)))
    sep = draw(st.sampled_from([b"\n", b"\r\n", b""]))
    return head + sep + body


@fuzz(2000)
@given(messages())
def test_structured_malformed_messages(raw: bytes) -> None:
    check(raw)


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.integers(0, 2))
        pos = draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == 0 and raw:
            del raw[pos : pos + draw(st.integers(1, 200))]
        elif op == 1:
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=20))
        elif raw:
            raw[pos] = draw(st.integers(0, 255))
    return bytes(raw)


@fuzz(1200)
@given(mutated_fixtures())
def test_mutated_real_mail(raw: bytes) -> None:
    check(raw)


def test_deep_nesting_and_many_parts_do_not_blow_up() -> None:
    deep = b"Content-Type: multipart/mixed; boundary=b0\n\n"
    for i in range(1, 400):
        deep += f"--b{i - 1}\nContent-Type: multipart/mixed; boundary=b{i}\n\n".encode()
    many = (
        b"Content-Type: multipart/mixed; boundary=B\n\n"
        + b"--B\nContent-Type: image/png\n\nx\n" * 3000
        + b"--B--\n"
    )
    for raw in (deep, many):
        mail = parse_message(raw)
        assert mail.errors
        json.dumps(parse_to_dict(raw))


@fuzz(1000)
@given(st.text(max_size=400))
def test_reply_and_thanks_never_raise_on_any_text(text: str) -> None:
    assert isinstance(extract_reply(text), str)
    assert isinstance(is_thanks_only(text), bool)
