"""Messages per second of `mailgate.mail.parse.parse_message`, next to the stdlib parser on the same corpus.

Generates a seeded in-memory corpus (plain, multipart/alternative, HTML-only, attachments,
non-ASCII with RFC 2047 / quoted-printable / base64) and times, in the same run:
  * mailgate: parse_message(raw) — headers, addresses, body, HTML→text, reply extraction, screening
  * stdlib:   email.message_from_bytes(raw, policy=policy.default) + get_body(("plain", "html")).get_content()
Prints the figures and the exact command. Numbers are printed, never asserted.

With `--against DIR` (a checkout or `git archive` of an earlier commit, the directory holding its
`mailgate/` package) the same corpus is also parsed by that version's parse_message in a child
process, in alternating rounds with this one so both see the same machine load: the before/after
figure for a change to the parser. `--fixtures` adds the same comparison on the captured and
hand-made mails in tests/fixtures/mail (bounces, replies, HTML), where the bounce and reply
layers do their real work.

    .venv/bin/python bench/parse_bench.py [--messages N] [--seed S] [--repeat R] [--against DIR] [--fixtures]
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

from mailgate.mail.parse import parse_message

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "mail"

WORDS = [
    "printer",
    "network",
    "invoice",
    "password",
    "calendar",
    "laptop",
    "error",
    "restart",
    "access",
    "mailbox",
    "screen",
    "update",
]
NON_ASCII = [
    "Grüße",
    "Müller",
    "réponse",
    "niño",
    "città",
    "ação",
    "Größe",
    "Frånvaro",
    "打印机",
    "会議室",
    "€",
]
NAMES = ["Alice Example", "Jürgen Müller", "Céline Dubois", "王伟", "山田太郎", "Bob Builder"]


def sentence(rng: random.Random, non_ascii: bool) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
    if non_ascii:
        words[rng.randrange(len(words))] = rng.choice(NON_ASCII)
    return " ".join(words).capitalize() + "."


def body(rng: random.Random, non_ascii: bool, quoted: bool) -> str:
    text = "\n".join(sentence(rng, non_ascii) for _ in range(rng.randint(2, 8)))
    if quoted:
        old = "\n".join("> " + sentence(rng, False) for _ in range(rng.randint(3, 15)))
        text += f"\n\nOn Mon, Jan 15, 2024 at 10:23 AM Support <support@localhost> wrote:\n{old}\n"
    return text + "\n\n-- \nSigned\n"


def html_of(text: str) -> str:
    paras = "".join(f"<p>{line}</p>" for line in text.splitlines() if line and not line.startswith(">"))
    return f'<html><body><div dir="ltr">{paras}<a href="https://example.com/x">link</a></div></body></html>'


def make_message(rng: random.Random, i: int) -> bytes:
    kind = rng.choice(["plain", "alternative", "html", "attachment"])
    non_ascii = rng.random() < 0.5
    text = body(rng, non_ascii, quoted=rng.random() < 0.6)
    cte = rng.choice(["quoted-printable", "base64", "8bit"]) if non_ascii else "7bit"
    charset = "utf-8" if non_ascii else "us-ascii"

    def text_part(subtype: str, content: str) -> MIMEText:
        part = MIMEText(content, subtype, charset)
        if cte != part["Content-Transfer-Encoding"] and cte in ("quoted-printable", "base64"):
            del part["Content-Transfer-Encoding"]
            from email import encoders

            part.set_payload(content.encode(charset))
            (encoders.encode_quopri if cte == "quoted-printable" else encoders.encode_base64)(part)
        return part

    msg: EmailMessage | MIMEMultipart | MIMEText
    if kind == "plain":
        msg = text_part("plain", text)
    elif kind == "html":
        msg = text_part("html", html_of(text))
    elif kind == "alternative":
        msg = MIMEMultipart("alternative")
        msg.attach(text_part("plain", text))
        msg.attach(text_part("html", html_of(text)))
    else:
        msg = MIMEMultipart("mixed")
        msg.attach(text_part("plain", text))
        for _ in range(rng.randint(1, 3)):
            att = MIMEApplication(rng.randbytes(rng.randint(2_000, 60_000)), "pdf")
            name = (
                f"Rechnung März {rng.randint(1, 99)}.pdf" if non_ascii else f"report-{rng.randint(1, 99)}.pdf"
            )
            att.add_header("Content-Disposition", "attachment", filename=("utf-8", "", name))
            msg.attach(att)
    name = rng.choice(NAMES)
    from email.header import Header
    from email.utils import formataddr

    msg["From"] = formataddr((str(Header(name, "utf-8")), f"user{i}@example.com"))
    msg["To"] = "Support <support@localhost>"
    subject = f"Re: [SUP-{rng.randint(1, 999)}] {sentence(rng, non_ascii)}"
    msg["Subject"] = Header(subject, "utf-8").encode() if non_ascii else subject
    msg["Message-ID"] = f"<bench-{i}@example.com>"
    msg["In-Reply-To"] = f"<ack.SUP-{i}@localhost>"
    msg["References"] = f"<ack.SUP-{i}@localhost>, <n.{i}@localhost>"
    msg["Date"] = "Mon, 15 Jan 2024 10:23:00 +0100"
    return msg.as_bytes()


def stdlib_parse(raw: bytes) -> None:
    msg = message_from_bytes(raw, policy=policy.default)
    part = msg.get_body(("plain", "html"))  # type: ignore[attr-defined]
    if part is not None:
        part.get_content()
    # Touch the headers mailgate reads, so both sides do comparable header work.
    for name in ("From", "To", "Subject", "Message-ID", "In-Reply-To", "References", "Date"):
        msg.get(name)


def rate(fn: Callable[[bytes], object], corpus: list[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for raw in corpus:
            fn(raw)
        best = min(best, time.perf_counter() - start)
    return len(corpus) / best


# The child that times another version's parser: reads the corpus file given, prints msg/s.
_CHILD = """
import struct, sys, time
sys.path.insert(0, sys.argv[1])
from mailgate.mail.parse import parse_message
data = open(sys.argv[2], "rb").read()
corpus, pos = [], 0
while pos < len(data):
    (n,) = struct.unpack_from(">I", data, pos)
    corpus.append(data[pos + 4 : pos + 4 + n])
    pos += 4 + n
for raw in corpus[:50]:
    parse_message(raw)  # warm up: imports, regex compilation
start = time.process_time()
for raw in corpus:
    parse_message(raw)
print(len(corpus) / (time.process_time() - start))
"""


def write_corpus(corpus: list[bytes]) -> str:
    fd, path = tempfile.mkstemp(prefix="parse-bench-", suffix=".bin")
    with os.fdopen(fd, "wb") as f:
        for raw in corpus:
            f.write(struct.pack(">I", len(raw)) + raw)
    return path


def against(corpus: list[bytes], other: str, repeat: int) -> tuple[float, float]:
    """(this version's msg/s, the other version's msg/s): best of `repeat` rounds, each version in
    a fresh child process of the same shape, alternating, timed in CPU seconds of the process (the
    machine is shared: wall time would measure the neighbours)."""
    path = write_corpus(corpus)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    here = str(Path(__file__).resolve().parent.parent)
    best = [0.0, 0.0]
    try:
        for _ in range(repeat):
            for i, root in enumerate((here, other)):
                out = subprocess.run(
                    [sys.executable, "-c", _CHILD, root, path],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=env,
                    cwd=root,
                )
                best[i] = max(best[i], float(out.stdout.strip()))
    finally:
        os.unlink(path)
    return best[0], best[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs per parser; the best is reported")
    ap.add_argument("--against", metavar="DIR", help="also time the parse_message of the mailgate/ in DIR")
    ap.add_argument("--fixtures", action="store_true", help="also compare on tests/fixtures/mail/*.eml")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    corpus = [make_message(rng, i) for i in range(args.messages)]
    size = sum(map(len, corpus))
    ours = rate(parse_message, corpus, args.repeat)
    stdlib = rate(stdlib_parse, corpus, args.repeat)
    print(f"command: {shlex.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(
        f"python: {sys.version.split()[0]}   corpus: {len(corpus)} messages, {size / 1e6:.1f} MB, seed {args.seed}"
    )
    print(f"mailgate parse_message:                       {ours:8.0f} msg/s")
    print(f"stdlib message_from_bytes(default)+get_body:  {stdlib:8.0f} msg/s")
    print(f"ratio mailgate/stdlib:                        {ours / stdlib:8.2f}")
    if args.against:
        now, before = against(corpus, os.path.abspath(args.against), args.repeat)
        print(
            f"bench corpus, this version / --against:       {now:8.0f} / {before:.0f} msg/s ({now / before - 1:+.1%})"
        )
        if args.fixtures:
            mails = [p.read_bytes() for p in sorted(FIXTURES.glob("*.eml"))] * 20
            now, before = against(mails, os.path.abspath(args.against), args.repeat)
            print(
                f"fixtures x20 ({len(mails)}), this version / --against: {now:8.0f} / {before:.0f} msg/s "
                f"({now / before - 1:+.1%})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
