"""DATA read in bulk gives exactly what aiosmtpd's line-by-line reader gives (RFC 5321 4.5.2).

Any wire content, cut into any pieces as TCP may deliver it, with limits small enough that
hypothesis reaches them: the message (or the same error reply), and the bytes after the end mark
left in the stream for the next command (a client that pipelines QUIT after the dot).
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.intake.smtp_data import TOO_LONG, TOO_MUCH, lines_within, read_data

# Wire lines: any bytes but CRLF (which ends a line) and never the lone dot (which ends DATA).
_line = st.binary(max_size=40).filter(lambda b: b"\r\n" not in b and b != b"." and not b.endswith(b"\r"))
_dotted = st.builds(
    lambda b: b"." + b, _line.filter(bool)
)  # a dot-stuffed line, or a client that did not stuff


def aiosmtpd_reading(lines: list[bytes], size_limit: int, line_limit: int) -> bytes | str:
    """What aiosmtpd 1.4's smtp_DATA makes of these wire lines: dot-unstuffed, CRLF kept."""
    wire = [line + b"\r\n" for line in lines]
    if sum(map(len, wire)) > size_limit:
        return TOO_MUCH
    if any(len(w) > line_limit for w in wire):
        return TOO_LONG
    return b"".join(w[1:] if w.startswith(b".") else w for w in wire)


async def _read(
    chunks: list[bytes], size_limit: int, line_limit: int, piece_size: int = 64 * 1024
) -> tuple[bytes | str, bytes]:
    reader = asyncio.StreamReader(limit=16)  # aiosmtpd's reader is small too (1001)

    async def feed() -> None:
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)  # the reader sees the stream arrive piece by piece
        reader.feed_eof()

    feeder = asyncio.ensure_future(feed())
    result = await read_data(reader, size_limit, line_limit, piece_size)
    await feeder
    return result, await reader.read()


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(st.one_of(_line, _dotted), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
    size_limit=st.sampled_from([60, 300, 10_000]),
    line_limit=st.sampled_from([12, 30, 1001]),
    pipelined=st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"]),
    piece_size=st.sampled_from([4, 9, 64 * 1024]),  # small: lines longer than a piece
)
def test_bulk_data_reads_as_aiosmtpd_does(
    lines: list[bytes], cuts: list[int], size_limit: int, line_limit: int, pipelined: bytes, piece_size: int
) -> None:
    stream = b"".join(line + b"\r\n" for line in lines) + b".\r\n" + pipelined
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    got, rest = asyncio.run(_read(chunks, size_limit, line_limit, piece_size))
    assert got == aiosmtpd_reading(lines, size_limit, line_limit)
    assert rest == pipelined  # nothing after the end mark was eaten


def test_a_large_attachment_is_read_whole_and_lines_are_checked_without_a_step_per_line() -> None:
    body = b"".join(b"%075d\r\n" % i for i in range(40_000))  # 3 MB of 77-byte lines
    got, rest = asyncio.run(_read([body[:70_000], body[70_000:], b".\r\n"], 10**8, 1001))
    assert got == body and rest == b""
    assert lines_within(body, 998)
    assert not lines_within(body[:-10] + b"x" * 1000 + b"\r\n", 998)
