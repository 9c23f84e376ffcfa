"""DATA over the real listener: aiosmtpd's own reader, configured by its public options only.

mailgate once read DATA itself on aiosmtpd's private stream (for event-loop time); these
transcripts pin what a sending MTA sees now that aiosmtpd reads it: RFC 5321 4.5.2 dot-unstuffing,
the size limit answered with 552 only after the whole message was read (4.2.5) so the session
stays in step, over-long lines answered with 500 (4.5.3.1.6), and commands pipelined after the
end mark (RFC 2920) answered rather than eaten.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, make_mail, write_config
from sqlalchemy import select

from mailgate.store.models import InboxRaw

LIMIT = 20_000


@pytest.fixture
def small_daemon(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    """A daemon whose `[smtp] max_message_size` is small enough to cross in a test."""
    path = write_config(tmp_path / "desk", relay_port=sink.port)
    path.write_text(path.read_text().replace("[smtp]\n", f"[smtp]\nmax_message_size = {LIMIT}\n"))
    d = RunningDaemon(path)
    yield d
    d.stop()


class Wire:
    """A raw SMTP client: what is written is exactly what the server reads."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        assert self.reply()[0] == 220

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = self.file.readline().decode()
            assert line, "connection closed"
            lines.append(line[4:].rstrip("\r\n"))
            if line[3] == " ":
                return int(line[:3]), "\n".join(lines)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def envelope(self) -> None:
        """EHLO, MAIL, RCPT and DATA, each answered as it should be."""
        self.send(b"EHLO client.example\r\n")
        assert self.reply()[0] == 250
        self.send(b"MAIL FROM:<customer1@acme.com>\r\n")
        assert self.reply()[0] == 250
        self.send(b"RCPT TO:<support@localhost>\r\n")
        assert self.reply()[0] == 250
        self.send(b"DATA\r\n")
        assert self.reply()[0] == 354

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _wire(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_dot_stuffed_lines_are_stored_unstuffed_and_a_pipelined_command_is_answered(
    small_daemon: RunningDaemon,
) -> None:
    body = "first line\n.a line that starts with a dot\n..two dots\n."  # the last is not an end mark
    raw = _wire(make_mail("Dots", body=body))
    stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in raw.split(b"\r\n"))
    w = Wire(small_daemon.port)
    try:
        w.envelope()
        w.send(stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\nNOOP\r\n")
        assert w.reply()[0] == 250  # queued
        assert w.reply() == (250, "OK")  # NOOP, sent in the same packet as the end mark
    finally:
        w.close()
    small_daemon.settle()
    with small_daemon.db.session() as s:
        stored = s.execute(select(InboxRaw.raw)).scalar_one()
    assert b"\r\n.a line that starts with a dot\r\n..two dots\r\n." in stored
    assert stored.rstrip(b"\r\n").endswith(b"..two dots\r\n.")


def test_an_oversized_message_gets_552_after_its_end_and_the_session_stays_in_step(
    small_daemon: RunningDaemon,
) -> None:
    w = Wire(small_daemon.port)
    try:
        w.envelope()
        # Lines that look like commands inside the data: answered early, they would be read as
        # commands and their replies would come before NOOP's.
        line = b"RSET " + b"y" * 70 + b"\r\n"
        w.send(_wire(make_mail("Big")) + line * (2 * LIMIT // len(line)) + b".\r\nNOOP\r\n")
        code, text = w.reply()
        assert code == 552, text
        assert w.reply() == (250, "OK")
    finally:
        w.close()
    assert small_daemon.inbox() == []


def test_an_over_long_line_gets_500_and_the_next_message_is_taken(small_daemon: RunningDaemon) -> None:
    w = Wire(small_daemon.port)
    try:
        w.envelope()
        w.send(_wire(make_mail("Long line")) + b"z" * 1200 + b"\r\n.\r\n")  # RFC 5321 allows 998
        code, text = w.reply()
        assert code == 500, text
        w.envelope()
        w.send(_wire(make_mail("Short lines")) + b"\r\n.\r\n")
        assert w.reply()[0] == 250
    finally:
        w.close()
    small_daemon.settle()
    assert [t.subject for t in small_daemon.tickets()] == ["Short lines"]
