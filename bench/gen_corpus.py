"""A seeded, deterministic corpus of support mail for the benchmarks, with a manifest of the truth.

About 70% new requests from many senders and 30% replies (threaded by subject tag, In-Reply-To or
References, with quoted history); plain and multipart/alternative bodies of 1-8 KB; about 10% with
a 20-200 KB attachment; non-ASCII subjects, names and bodies (RFC 2047 encoded words, quoted-printable
and base64 bodies). Written as one mbox, a folder of .eml files and `manifest.json`, which says for
every message the ticket it must end on. Ticket numbers are given in arrival order per desk, so
processed in order the k-th new request becomes `<KEY>-<first_number + k - 1>`.

Same arguments, same bytes: boundaries, dates and Message-IDs come from the seed, never the clock.
No sender opens more than `max_tickets_per_sender` tickets, so mailgate's flood limit (default 20 in
two hours) never holds a request back. This module only writes files; it never talks to mailgate.

    .venv/bin/python bench/gen_corpus.py --n 2000 --seed 1 --out /tmp/corpus
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from pathlib import Path

DESK_ADDRESS = "support@localhost"
DESK_KEY = "SUP"


# Words per language, so bodies and subjects carry real non-ASCII text in several scripts.
def _words(text: str) -> list[str]:
    return text.split()


WORDS = {
    "en": _words(
        "the printer on floor three cannot reach the server since this morning and we need the invoice "
        "for march please check why my password reset link expired account locked after login attempts "
        "export of the report fails with a timeout when attaching files larger than ten megabytes"
    ),
    "de": _words(
        "der Drucker im dritten Stock erreicht den Server seit heute früh nicht mehr bitte prüfen Sie "
        "warum die Rechnung für März fehlt Zugang gesperrt nach mehreren Versuchen Größe Übersicht "
        "Änderung Straße Grüße ähnlich Lösung dringend"
    ),
    "fr": _words(
        "bonjour l'imprimante du troisième étage ne répond plus depuis ce matin merci de vérifier la "
        "facture reçue où est passé le rapport détaillé problème d'accès créé élève français"
    ),
    "ru": _words(
        "здравствуйте принтер на третьем этаже не работает с утра пожалуйста проверьте счёт за март"
    ),
    "ja": _words(
        "プリンター が 動きません 請求書 を 確認 して ください パスワード の 再設定 ログイン できません"
    ),
    "zh": _words("您好 打印机 无法 连接 服务器 请 检查 发票 密码 重置 链接 已 过期 谢谢"),
}
SUBJECTS = {
    "en": ["Printer on floor {n} offline", "Invoice {n} missing", "Cannot log in since update {n}"],
    "de": [
        "Drucker im {n}. Stock ausgefallen",
        "Rechnung Nr. {n} fehlt – bitte prüfen",
        "Zugang gesperrt ({n} Versuche)",
    ],
    "fr": [
        "Imprimante du {n}e étage hors service",
        "Facture n°{n} non reçue",
        "Accès refusé après mise à jour {n}",
    ],
    "ru": ["Принтер на {n} этаже не работает", "Счёт №{n} не получен"],
    "ja": ["プリンター {n} が動きません", "請求書 {n} について"],
    "zh": ["打印机 {n} 无法使用", "发票 {n} 未收到"],
}
LANGS = ["en", "en", "en", "de", "de", "fr", "ru", "ja", "zh"]
FIRST = ["Anna", "José", "Zoë", "Björn", "Ιωάννης", "Мария", "太郎", "Li", "Chloé", "Sam", "Priya", "Ömer"]
LAST = ["Müller", "García", "Ødegaard", "Smith", "Nakamura", "Петрова", "Dupont", "Kowalski", "Chen"]
DOMAINS = ["acme.example", "globex.example", "initech.example", "umbrella.example", "hooli.example"]
REPLY_PREFIX = ["Re: ", "RE: ", "AW: ", "Re: Re: ", "SV: ", "回复: "]
ATTACH_TYPES = [("application", "pdf", "pdf"), ("image", "png", "png"), ("text", "csv", "csv")]
EPOCH = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


@dataclass
class Entry:
    """What the manifest says about one message."""

    index: int
    message_id: str
    kind: str  # "new" or "reply"
    ticket: str  # the key it must end on, e.g. SUP-12
    thread_by: str | None  # tag, in-reply-to, references (replies only)
    sender: str
    size: int
    has_attachment: bool
    body: str  # plain, alternative
    encoding: str  # quoted-printable, base64, 8bit


@dataclass
class _Thread:
    key: str
    subject: str
    requester: tuple[str, str]
    watcher: tuple[str, str] | None
    message_ids: list[str] = field(default_factory=list)
    last_body: str = ""


@dataclass
class Corpus:
    messages: list[bytes]
    entries: list[Entry]
    params: dict[str, object]

    def manifest(self) -> dict[str, object]:
        return {
            "params": self.params,
            "desk": {"address": DESK_ADDRESS, "key": DESK_KEY},
            "count": len(self.messages),
            "new_tickets": sum(1 for e in self.entries if e.kind == "new"),
            "replies": sum(1 for e in self.entries if e.kind == "reply"),
            "with_attachment": sum(1 for e in self.entries if e.has_attachment),
            "bytes": sum(len(m) for m in self.messages),
            "messages": [asdict(e) for e in self.entries],
        }


def _text(rng: random.Random, lang: str, size: int) -> str:
    """Paragraphs of about `size` bytes (UTF-8) in one language. No line starts with "From "."""
    words = WORDS[lang]
    sep = "" if lang in ("ja", "zh") else " "
    out: list[str] = []
    total = 0
    while total < size:
        line = sep.join(rng.choice(words) for _ in range(rng.randint(6, 12))).capitalize() + "."
        out.append(line)
        total += len(line.encode()) + 1
        if rng.random() < 0.2:
            out.append("")
    return "\n".join(out) + "\n"


class _Senders:
    """Many senders; none opens more than `cap` tickets (mailgate's flood limit stays out of the way)."""

    def __init__(self, rng: random.Random, pool: int, cap: int, prefix: str) -> None:
        self.rng = rng
        self.cap = cap
        self.people = [
            (
                f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                f"{prefix}user{i}@{DOMAINS[i % len(DOMAINS)]}",
            )
            for i in range(pool)
        ]
        self.opened = [0] * pool

    def pick(self) -> tuple[str, str]:
        for _ in range(len(self.people) * 2):
            i = self.rng.randrange(len(self.people))
            if self.opened[i] < self.cap:
                self.opened[i] += 1
                return self.people[i]
        # Every sender is at the cap: grow the pool rather than trip the flood limit.
        i = len(self.people)
        self.people.append(("New Sender", f"extra{i}@{DOMAINS[0]}"))
        self.opened.append(1)
        return self.people[i]


def _quote(text: str, who: str, when: datetime) -> str:
    """Quoted history as mail clients write it ("On … wrote:" and "> " lines)."""
    lines = text.strip().splitlines()[:40]
    return f"\nOn {format_datetime(when)}, {who} wrote:\n" + "\n".join(f"> {ln}" for ln in lines) + "\n"


def _build(
    rng: random.Random,
    *,
    index: int,
    sender: tuple[str, str],
    to: str,
    cc: tuple[str, str] | None,
    subject: str,
    message_id: str,
    when: datetime,
    text: str,
    in_reply_to: str | None,
    references: list[str] | None,
    refs_with_commas: bool,
) -> tuple[bytes, bool, str, str]:
    msg = EmailMessage(policy=policy.default)
    msg["From"] = formataddr(sender)  # policy.default writes RFC 2047 encoded words for non-ASCII names
    msg["To"] = to
    if cc:
        msg["Cc"] = formataddr(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        joined = (", " if refs_with_commas else " ").join(f"<{r}>" for r in references)
        msg["References"] = joined
    msg["User-Agent"] = rng.choice(["Thunderbird/128.4", "Outlook 16.0", "Apple Mail (3774)", "K-9 Mail"])
    encoding = rng.choice(["quoted-printable", "quoted-printable", "base64", "8bit"])
    alternative = rng.random() < 0.5
    msg.set_content(text, subtype="plain", charset="utf-8", cte=encoding)
    if alternative:
        html = "<html><body>" + "".join(f"<p>{ln}</p>" for ln in text.splitlines() if ln) + "</body></html>\n"
        msg.add_alternative(
            html, subtype="html", charset="utf-8", cte=rng.choice(["quoted-printable", "base64"])
        )
    attach = rng.random() < 0.10
    if attach:
        maintype, subtype, ext = rng.choice(ATTACH_TYPES)
        payload = rng.randbytes(rng.randint(20_000, 200_000))
        name = rng.choice(["Übersicht", "report", "скриншот", "facture-été", "log"]) + f"-{index}.{ext}"
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name)
    # Fixed boundaries: the generator would otherwise draw them from the global random state.
    for n, part in enumerate(msg.walk()):
        if part.is_multipart():
            part.set_boundary(f"=_bench_{index}_{n}_=")
    return msg.as_bytes(), attach, "alternative" if alternative else "plain", encoding


def generate(
    n: int,
    seed: int = 1,
    *,
    new_ratio: float = 0.7,
    first_number: int = 1,
    max_tickets_per_sender: int = 10,
    id_prefix: str = "bench",
    desk_address: str = DESK_ADDRESS,
    desk_key: str = DESK_KEY,
    tag: str = "[{key}]",
) -> Corpus:
    """The corpus in memory: raw messages in arrival order and what each must become.

    `tag` is how a reply names its ticket in the subject: "[{key}]" gives mailgate's [SUP-12];
    "[issue{number}]" gives Roundup's designator for the same conversation (bench/roundup.py).
    """
    rng = random.Random(seed)
    senders = _Senders(rng, max(20, n // 3), max_tickets_per_sender, f"{id_prefix}.")
    threads: list[_Thread] = []
    numbers: dict[str, int] = {}
    messages: list[bytes] = []
    entries: list[Entry] = []
    when = EPOCH
    for i in range(n):
        when += timedelta(seconds=rng.randint(5, 90))
        message_id = f"{id_prefix}.{seed}.{i}@mail.{DOMAINS[i % len(DOMAINS)]}"
        lang = rng.choice(LANGS)
        body = _text(rng, lang, rng.randint(1000, 7000))
        if not threads or rng.random() < new_ratio:
            key = f"{desk_key}-{first_number + len(threads)}"
            sender = senders.pick()
            cc = None
            if rng.random() < 0.2:
                cc = (rng.choice(FIRST), f"colleague{i}@{sender[1].split('@', 1)[1]}")
            subject = rng.choice(SUBJECTS[lang]).format(n=rng.randint(2, 999))
            raw, attach, kind, enc = _build(
                rng, index=i, sender=sender, to=desk_address, cc=cc, subject=subject,
                message_id=message_id, when=when, text=body, in_reply_to=None, references=None,
                refs_with_commas=False,
            )  # fmt: skip
            numbers[key] = len(threads) + 1
            threads.append(_Thread(key, subject, sender, cc, [message_id], body))
            entries.append(Entry(i, message_id, "new", key, None, sender[1], len(raw), attach, kind, enc))
        else:
            # Recent conversations get most replies, as on a real desk.
            t = threads[max(0, len(threads) - 1 - int(rng.expovariate(1 / 40)))]
            who = t.watcher if t.watcher and rng.random() < 0.3 else t.requester
            how = rng.choice(["tag", "in-reply-to", "references"])
            prefix = rng.choice(REPLY_PREFIX)
            irt: str | None = None
            refs: list[str] | None = None
            if how == "tag":
                # No threading headers: the subject tag alone must find the ticket.
                subject = f"{prefix}{tag.format(key=t.key, number=numbers[t.key])} {t.subject}"
            elif how == "in-reply-to":
                subject = f"{prefix}{t.subject}"
                irt = t.message_ids[0]  # the original request, stored by mailgate as a ThreadRef
            else:
                subject = f"{prefix}{t.subject}"
                refs = t.message_ids[-5:]  # the conversation so far, newest last (RFC 5322 3.6.4)
            text = body[: max(300, len(body) // 2)] + _quote(t.last_body, formataddr(t.requester), when)
            raw, attach, kind, enc = _build(
                rng, index=i, sender=who, to=desk_address, cc=None, subject=subject,
                message_id=message_id, when=when, text=text, in_reply_to=irt, references=refs,
                refs_with_commas=rng.random() < 0.3,
            )  # fmt: skip
            t.message_ids.append(message_id)
            t.last_body = body
            entries.append(Entry(i, message_id, "reply", t.key, how, who[1], len(raw), attach, kind, enc))
        messages.append(raw)
    params = {
        "n": n,
        "seed": seed,
        "new_ratio": new_ratio,
        "first_number": first_number,
        "max_tickets_per_sender": max_tickets_per_sender,
        "id_prefix": id_prefix,
        "tag": tag,
    }
    return Corpus(messages, entries, params)


def mbox_bytes(corpus: Corpus) -> bytes:
    """An mbox (mboxo) of the corpus. Bodies never have lines starting "From ", so no escaping
    changes the bytes: `mailbox.mbox.get_bytes` gives back exactly the generated message."""
    out = bytearray()
    for raw, e in zip(corpus.messages, corpus.entries, strict=True):
        stamp = time.asctime((EPOCH + timedelta(minutes=e.index)).timetuple())
        assert b"\nFrom " not in raw, f"message {e.index} has a From_ line in its body"
        out += f"From {e.sender} {stamp}\n".encode() + raw
        if not raw.endswith(b"\n"):
            out += b"\n"
        out += b"\n"
    return bytes(out)


def write(corpus: Corpus, out: Path, *, eml: bool = True) -> Path:
    """Write corpus.mbox, eml/NNNNN.eml and manifest.json under `out`; returns the mbox path."""
    out.mkdir(parents=True, exist_ok=True)
    mbox = out / "corpus.mbox"
    data = mbox_bytes(corpus)
    mbox.write_bytes(data)
    if eml:
        d = out / "eml"
        d.mkdir(exist_ok=True)
        for e, raw in zip(corpus.entries, corpus.messages, strict=True):
            (d / f"{e.index:05d}.eml").write_bytes(raw)
    manifest = corpus.manifest()
    manifest["mbox_sha256"] = hashlib.sha256(data).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return mbox


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="number of messages (default 2000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--new-ratio", type=float, default=0.7, help="share of new requests (default 0.7)")
    p.add_argument("--first-number", type=int, default=1, help="number of the first new ticket")
    p.add_argument("--out", type=Path, required=True, help="directory to write into")
    p.add_argument("--no-eml", action="store_true", help="only the mbox and the manifest")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    corpus = generate(args.n, args.seed, new_ratio=args.new_ratio, first_number=args.first_number)
    mbox = write(corpus, args.out, eml=not args.no_eml)
    m = corpus.manifest()
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(
        f"wrote {mbox}: {m['count']} messages ({m['new_tickets']} new, {m['replies']} replies, "
        f"{m['with_attachment']} with attachment), {m['bytes'] / 1e6:.1f} MB in {time.perf_counter() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
