"""The DATA section of an SMTP or LMTP transaction, read in bulk rather than line by line.

aiosmtpd reads DATA one line at a time: one `await` per line, on a StreamReader whose 1 KB limit
pauses the socket every 2 KB. A 200 KB attachment is about 2,700 lines and costs 9.5 ms of the
event loop (bench/README.md), and no other client is served meanwhile. Here the reader looks for
the end mark itself, in pieces of up to 64 KB: a piece ends at the next line that ends in a dot,
so text costs an await per such line and base64 almost none. aiosmtpd's rules are kept: RFC 5321
4.5.2 dot-unstuffing, the size limit (552, answered after the whole message was read, 4.2.5)
and the line-length limit (500).
"""

from __future__ import annotations

import asyncio
import logging

from aiosmtpd.smtp import MISSING, SMTP, syntax

log = logging.getLogger(__name__)

END = b"\r\n.\r\n"  # CRLF, a lone dot, CRLF: the end of DATA (RFC 5321 4.1.1.4)
PIECE = 64 * 1024  # the reader's limit while DATA is read: how much is searched at a time
TOO_MUCH = "552 Error: Too much mail data"
TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"


async def read_data(
    reader: asyncio.StreamReader, size_limit: int | None, line_limit: int, piece_size: int = PIECE
) -> bytes | str:
    """The message after DATA's 354, unstuffed: its bytes, or the error reply once it was read.

    `line_limit` counts the CRLF, as aiosmtpd's `line_length_limit` does. Raises
    asyncio.IncompleteReadError when the client goes away before the end mark."""
    limit = getattr(reader, "_limit", None)  # StreamReader's buffer limit: not public API
    if limit is not None:
        reader._limit = piece_size
    try:
        parts: list[bytes] = []
        size = 0
        tail = b"\r\n"  # DATA's own line ended in CRLF: the first byte starts a line
        while True:
            try:
                piece = await reader.readuntil(b".\r\n")  # every end mark ends so; most lines don't
                ended = (tail + piece[-5:])[-5:] == END
            except asyncio.LimitOverrunError as exc:  # no dot-CRLF within PIECE bytes: take them
                piece = await reader.readexactly(exc.consumed)
                ended = False
            tail = (tail + piece[-2:])[-2:]
            if ended:
                piece = piece[:-3]  # the lone dot and its CRLF; the CRLF before it ends the last line
            size += len(piece)
            if size_limit and size > size_limit:
                parts.clear()  # keep reading to the end mark, keep nothing
            else:
                parts.append(piece)
            if ended:
                break
    finally:
        if limit is not None:
            reader._limit = limit
    if size_limit and size > size_limit:
        return TOO_MUCH
    content = b"".join(parts)
    if not lines_within(content, line_limit - 2):
        return TOO_LONG
    # RFC 5321 4.5.2: a line that starts with a dot loses that dot. Every line but the first
    # starts right after a CRLF, and "\r\n." never overlaps itself, so one replace does them all.
    if content.startswith(b"."):
        content = content[1:]
    return content.replace(b"\r\n.", b"\r\n")


def lines_within(content: bytes, longest: int) -> bool:
    """Whether every CRLF-ended line of `content` has at most `longest` bytes before its CRLF.

    Jumps to the last line end within reach each time, so a long message costs a few `rfind`
    calls per kilobyte, not a Python step per line."""
    pos, n = 0, len(content)
    while pos < n:
        end = content.rfind(b"\r\n", pos, pos + longest + 2)
        if end < 0:  # no line end within reach: fine only for a last line without one
            return n - pos <= longest
        pos = end + 2
    return True


class BulkData(SMTP):
    """aiosmtpd's SMTP server with `read_data` for DATA; mix it in before LMTP for LMTP."""

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        # The checks and replies before the data are aiosmtpd's own (aiosmtpd/smtp.py, smtp_DATA).
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            result = await read_data(self._reader, self.data_size_limit, self.line_length_limit)
        except asyncio.IncompleteReadError:
            log.info("connection closed during DATA")
            self._writer.close()
            return
        except asyncio.CancelledError:
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        if isinstance(result, str):
            await self.push(result)
            self._set_post_data_state()
            return
        self.envelope.original_content = result
        self.envelope.content = result  # mailgate's listeners run with decode_data=False
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)
