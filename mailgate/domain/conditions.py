"""Routing conditions: compiled once per rules load, tested many times per second.

A `when` table compiles into a tree of small condition objects (`Cond`). Each knows a static
description (for "miss" lines in the trace, costing nothing at test time) and, on a hit, says
what matched ("subject has word 'vpn'"), so every routing decision explains itself.

Matching is case-insensitive. Per message, `Facts` lowercases the fields once and tokenises them
into word sets lazily, so a `words` test is a set intersection and the cost of a rule does not grow
with the number of words it lists. Regexes are compiled at load, with re.IGNORECASE.

It must not read the database, files or the clock: the time of day comes in with `Facts`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailgate.domain.rulesfile import Checker, PathKey, suggest, type_name
from mailgate.literals import required_literals
from mailgate.mail.model import ParsedMail

# Bodies are scanned up to this many characters: routing keywords sit at the top of a mail, and a
# 10 MB pasted log must not make every rule cost milliseconds.
BODY_SCAN_LIMIT = 64 * 1024
# A word is a run of letters/digits; "wi-fi" and "doesn't" are also words as a whole.
TOKEN_RE = re.compile(r"\w+(?:[-']\w+)*")
PART_RE = re.compile(r"\w+")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TIME_RANGE_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

TEXT_FIELDS = ("subject", "body", "text", "from", "to", "cc", "desk", "attachment_name", "attachment_type")
ADDRESS_FIELDS = ("from", "to", "cc", "desk")
OPERATORS = ("contains", "equals", "words", "regex", "starts", "ends", "domain")
CONDITION_KEYS = (
    *TEXT_FIELDS,
    "header",
    "has_attachment",
    "weekday",
    "time",
    "timezone",
    "all",
    "any",
    "not",
)


class Facts:
    """One message's routing inputs, normalised once. Built by `Facts.of(...)`."""

    __slots__ = (
        "_local",
        "_lower",
        "_tokens",
        "attach_names",
        "attach_types",
        "has_attachment",
        "headers",
        "now",
        "text",
    )
    attach_names: tuple[str, ...]
    attach_types: tuple[str, ...]
    has_attachment: bool
    headers: dict[str, tuple[str, ...]]
    now: datetime
    text: dict[str, tuple[str, ...]]

    def __init__(self) -> None:
        self._tokens: dict[str, frozenset[str]] = {}
        self._lower: dict[str, tuple[str, ...]] = {}
        self._local: dict[tzinfo, datetime] = {}

    @classmethod
    def of(cls, mail: ParsedMail, *, desk_address: str, now: datetime) -> Facts:
        f = cls()
        f.now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
        f.text = {
            "subject": (mail.subject,),
            "body": (mail.body_text[:BODY_SCAN_LIMIT],),
            "text": (mail.subject, mail.body_text[:BODY_SCAN_LIMIT]),  # subject or body
            "from": (mail.from_addr.lower(),),
            "to": tuple(a.lower() for a in mail.to_addrs),
            "cc": tuple(a.lower() for a in mail.cc_addrs),
            "desk": (desk_address.lower(),),
            "attachment_name": tuple(a.filename for a in mail.attachments if a.filename),
            "attachment_type": tuple(a.content_type.lower() for a in mail.attachments),
        }
        headers: dict[str, tuple[str, ...]] = {}
        for name, value in mail.headers:
            key = name.lower()
            headers[key] = (*headers.get(key, ()), value)
        f.headers = headers
        f.has_attachment = bool(mail.attachments)
        return f

    def tokens(self, field: str, values: tuple[str, ...]) -> frozenset[str]:
        """The lowercase words of a field, computed on first use and kept for the other rules.

        "wi-fi" gives "wi-fi", "wi" and "fi"; "doesn't" gives "doesn't", "doesn" and "t".
        """
        got = self._tokens.get(field)
        if got is None:
            if field == "text":
                got = self.tokens("subject", self.text["subject"]) | self.tokens("body", self.text["body"])
            else:
                words: set[str] = set()
                for low in self.lower(field, values):
                    words.update(PART_RE.findall(low))
                    if "-" in low or "'" in low:
                        words.update(TOKEN_RE.findall(low))
                got = frozenset(words)
            self._tokens[field] = got
        return got

    def lower(self, field: str, values: tuple[str, ...]) -> tuple[str, ...]:
        """The lowercase values of a field, computed on first use and kept for the other rules."""
        got = self._lower.get(field)
        if got is None:
            got = tuple(_fold(v) for v in values)
            self._lower[field] = got
        return got

    def local(self, tz: tzinfo) -> datetime:
        got = self._local.get(tz)
        if got is None:
            got = self.now.astimezone(tz)
            self._local[tz] = got
        return got


class Cond(Protocol):
    """A compiled condition. `desc` says what it needs (used for misses, free at test time);
    `test` returns a short description of what matched, or None on a miss."""

    @property
    def desc(self) -> str: ...

    def test(self, facts: Facts) -> str | None: ...


def _fold(text: str) -> str:
    """Lowercase, with typographic apostrophes made plain so "doesn’t" matches "doesn't"."""
    return text.lower().replace("\u2019", "'")


def _weekday_index(text: str) -> int | None:
    low = text.strip().lower()
    for i, (short, full) in enumerate(zip(WEEKDAYS, WEEKDAY_NAMES, strict=True)):
        if low in (short, full):
            return i
    return None


def _show(values: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(f"'{v}'" for v in values[:limit])
    return shown + (f", … (+{len(values) - limit})" if len(values) > limit else "")


# --- text operators -----------------------------------------------------------------------------

# An operator test gets the field's values (original case) and their lowercase forms, and returns
# the matched fragment or None.
Op = Callable[[tuple[str, ...], tuple[str, ...], Facts, str], str | None]


def _op_contains(needles: list[str]) -> Op:
    rx = re.compile("|".join(re.escape(_fold(n)) for n in sorted(needles, key=len, reverse=True)))

    def op(values: tuple[str, ...], lows: tuple[str, ...], facts: Facts, field: str) -> str | None:
        for low in lows:
            m = rx.search(low)
            if m:
                return m.group(0)
        return None

    return op


def _op_equals(wanted: list[str]) -> Op:
    targets = frozenset(_fold(w.strip()) for w in wanted)

    def op(values: tuple[str, ...], lows: tuple[str, ...], facts: Facts, field: str) -> str | None:
        for low in lows:
            if low.strip() in targets:
                return low.strip()
        return None

    return op


def _op_words(words: list[str]) -> Op:
    # Single words are looked up in the field's token set; phrases ("out of order") and words with
    # characters a token cannot hold ("c++") fall back to one alternation regex bounded by non-word
    # characters, so "wifi" never matches inside "wifidirect".
    folded = [_fold(w.strip()) for w in words]
    single = frozenset(w for w in folded if TOKEN_RE.fullmatch(w))
    phrases = [w for w in folded if not TOKEN_RE.fullmatch(w)]
    rx = None
    # A phrase can only be present if its first word is among the field's words: one set
    # intersection skips the regex scan for almost every message.
    firsts = frozenset(PART_RE.findall(p)[0] for p in phrases if PART_RE.search(p))
    if phrases:
        alts = "|".join(
            r"\s+".join(map(re.escape, p.split())) for p in sorted(phrases, key=len, reverse=True)
        )
        rx = re.compile(rf"(?<!\w)(?:{alts})(?!\w)")
    always_scan = any(not PART_RE.search(p) for p in phrases)  # e.g. "++": nothing to pre-check

    def op(values: tuple[str, ...], lows: tuple[str, ...], facts: Facts, field: str) -> str | None:
        tokens = facts.tokens(field, values)
        if single:
            hit = single & tokens
            if hit:
                return min(hit)  # deterministic when several words hit
        if rx is not None and (always_scan or not firsts.isdisjoint(tokens)):
            for low in lows:
                m = rx.search(low)
                if m:
                    return m.group(0)
        return None

    return op


def _op_regex(patterns: list[re.Pattern[str]]) -> Op:
    checks = [(rx, required_literals(rx)) for rx in patterns]

    def op(values: tuple[str, ...], lows: tuple[str, ...], facts: Facts, field: str) -> str | None:
        for rx, needles in checks:
            for value, low in zip(values, lows, strict=True):
                if needles and not all(n in low for n in needles):
                    continue  # no match can lack these
                m = rx.search(value)
                if m:
                    return m.group(0)
        return None

    return op


def _op_affix(method: str) -> Callable[[list[str]], Op]:
    """`starts` or `ends`: the value, folded, begins or ends with one of the words."""

    def make(words: list[str]) -> Op:
        wanted = tuple(_fold(w) for w in words)

        def op(values: tuple[str, ...], lows: tuple[str, ...], facts: Facts, field: str) -> str | None:
            for low in lows:
                test = getattr(low, method)
                for w in wanted:
                    if test(w):
                        return w
            return None

        return op

    return make


_op_starts = _op_affix("startswith")
_op_ends = _op_affix("endswith")


def _op_domain(domains: list[str]) -> Op:
    # A domain matches itself and its subdomains: "example.org" takes mail from it.example.org.
    wanted = tuple(d.lower().lstrip("@").strip(".") for d in domains)

    def op(values: tuple[str, ...], lows: tuple[str, ...], facts: Facts, field: str) -> str | None:
        for low in lows:
            domain = low.rpartition("@")[2]
            for d in wanted:
                if domain == d or domain.endswith("." + d):
                    return d
        return None

    return op


_VERBS = {
    "contains": "contains",
    "equals": "is",
    "words": "has a word of",
    "regex": "matches",
    "starts": "starts with",
    "ends": "ends with",
    "domain": "domain is",
}


@dataclass(frozen=True)
class FieldCond:
    """Every operator of one field table must hold (each on any value of a list field like `to`)."""

    field: str
    label: str
    ops: tuple[tuple[str, Op], ...]  # (verb, test)
    header: str | None = None
    desc: str = ""
    pre: frozenset[str] | None = None  # see `prefilter`

    def test(self, facts: Facts) -> str | None:
        header = self.header
        if header is None:
            key = self.field
            values = facts.text[key]
        else:
            key = "h:" + header
            values = facts.headers.get(header, ())
        if not values:
            return None
        lows = facts.lower(key, values)
        ops = self.ops
        if len(ops) == 1:
            verb, op = ops[0]
            got = op(values, lows, facts, key)
            return None if got is None else f"{self.label} {verb} '{got}'"
        found: list[str] = []
        for verb, op in ops:
            got = op(values, lows, facts, key)
            if got is None:
                return None
            found.append(f"{self.label} {verb} '{got}'")
        return " and ".join(found)


@dataclass(frozen=True)
class AttachmentCond:
    wanted: bool
    desc: str = ""

    def test(self, facts: Facts) -> str | None:
        return self.desc if facts.has_attachment == self.wanted else None


@dataclass(frozen=True)
class WeekdayCond:
    days: frozenset[int]
    tz: tzinfo
    desc: str = ""

    def test(self, facts: Facts) -> str | None:
        day = facts.local(self.tz).weekday()
        return f"weekday is {WEEKDAYS[day]}" if day in self.days else None


@dataclass(frozen=True)
class TimeCond:
    """Minutes since local midnight in [start, end); a range like 18:00-08:00 wraps past midnight."""

    start: int
    end: int
    tz: tzinfo
    desc: str = ""
    text: str = ""

    def test(self, facts: Facts) -> str | None:
        local = facts.local(self.tz)
        minute = local.hour * 60 + local.minute
        inside = (
            self.start <= minute < self.end
            if self.start < self.end
            else (minute >= self.start or minute < self.end)
        )
        return f"local time {local:%H:%M} is within {self.text}" if inside else None


@dataclass(frozen=True)
class AllCond:
    children: tuple[Cond, ...]
    desc: str = ""

    def test(self, facts: Facts) -> str | None:
        found = []
        for child in self.children:
            got = child.test(facts)
            if got is None:
                return None
            found.append(got)
        return " and ".join(found) if found else "no conditions"

    def first_miss(self, facts: Facts) -> Cond | None:
        for child in self.children:
            if child.test(facts) is None:
                return child
        return None


@dataclass(frozen=True)
class AnyCond:
    children: tuple[Cond, ...]
    desc: str = ""

    def test(self, facts: Facts) -> str | None:
        for child in self.children:
            got = child.test(facts)
            if got is not None:
                return got
        return None


@dataclass(frozen=True)
class NotCond:
    child: Cond
    desc: str = ""

    def test(self, facts: Facts) -> str | None:
        return None if self.child.test(facts) is not None else self.desc


def words_prefilter(words: list[str]) -> frozenset[str] | None:
    """Words of which at least one must be among the message's words for a `words` test to hit.

    A single word must itself be present; a phrase needs at least its first word (the phrase
    regex starts at a word boundary and must match it literally). None when a phrase has no
    letters or digits to check.
    """
    out: set[str] = set()
    for w in words:
        parts = PART_RE.findall(_fold(w.strip()))
        if not parts:
            return None
        folded = _fold(w.strip())
        out.add(folded if TOKEN_RE.fullmatch(folded) else parts[0])
    return frozenset(out)


def prefilter(cond: Cond) -> frozenset[str] | None:
    """A set of words of which one must appear in the subject or body for `cond` to hit, or None.

    This lets evaluation skip most keyword rules with one set operation instead of running their
    tests (1,000 rules cost microseconds, not milliseconds). Only `words` tests on subject, body
    or text give one; `all` takes its smallest child's, `any` the union if every child has one.
    """
    if isinstance(cond, FieldCond):
        return cond.pre
    if isinstance(cond, AllCond):
        sets = [p for p in (prefilter(c) for c in cond.children) if p is not None]
        return min(sets, key=len) if sets else None
    if isinstance(cond, AnyCond):
        union: set[str] = set()
        for c in cond.children:
            p = prefilter(c)
            if p is None:
                return None
            union |= p
        return frozenset(union)
    return None


def explain_miss(cond: Cond, facts: Facts) -> str:
    """Why a rule missed: the first condition of an `all` that failed, else the whole need."""
    if isinstance(cond, AllCond):
        child = cond.first_miss(facts)
        if child is not None:
            return "needed: " + explain_miss(child, facts).removeprefix("needed: ")
    return "needed: " + cond.desc


# --- compiling a `when` table -------------------------------------------------------------------


class ConditionCompiler:
    """Turns `when` tables into Cond trees, reporting every problem to the file's Checker."""

    def __init__(self, check: Checker, default_tz: tzinfo) -> None:
        self.check = check
        self.default_tz = default_tz

    def compile(self, path: PathKey, table: dict[str, Any], tz: tzinfo | None = None) -> AllCond:
        tz = tz or self.default_tz
        if "timezone" in table:
            tz = self.timezone((*path, "timezone"), table["timezone"]) or tz
        children: list[Cond] = []
        for key, value in table.items():
            kpath = (*path, key)
            if key == "timezone":
                continue
            if key not in CONDITION_KEYS:
                self.check.add(kpath, f"unknown condition '{key}'", suggest(key, CONDITION_KEYS))
                continue
            cond = self._one(kpath, key, value, tz)
            if cond is not None:
                children.append(cond)
        desc = " and ".join(c.desc for c in children) or "no conditions"
        return AllCond(tuple(children), desc)

    def timezone(self, path: PathKey, value: object) -> tzinfo | None:
        name = self.check.string(path, value, "timezone")
        if name is None:
            return None
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.check.add(
                path, f"unknown time zone '{name}'", "an IANA name such as 'Europe/London' or 'UTC'"
            )
            return None

    def _list_of_tables(self, path: PathKey, value: object, key: str, tz: tzinfo) -> list[AllCond]:
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            self.check.add(
                path,
                f"'{key}' needs a list of condition tables, got {type_name(value)}",
                f"e.g. {key} = [{{ subject = {{ words = ['vpn'] }} }}, {{ body = {{ contains = 'vpn' }} }}]",
            )
            return []
        return [self.compile((*path, i), v, tz) for i, v in enumerate(value)]

    def _one(self, path: PathKey, key: str, value: Any, tz: tzinfo) -> Cond | None:
        if key == "all":
            kids = self._list_of_tables(path, value, key, tz)
            return AllCond(tuple(kids), "(" + " and ".join(k.desc for k in kids) + ")") if kids else None
        if key == "any":
            kids = self._list_of_tables(path, value, key, tz)
            return AnyCond(tuple(kids), "any of (" + "; ".join(k.desc for k in kids) + ")") if kids else None
        if key == "not":
            table = self.check.table(path, value, "'not'")
            if table is None:
                return None
            inner = self.compile(path, table, tz)
            return NotCond(inner, f"not ({inner.desc})")
        if key == "has_attachment":
            wanted = self.check.boolean(path, value, "has_attachment")
            if wanted is None:
                return None
            return AttachmentCond(wanted, "has an attachment" if wanted else "has no attachment")
        if key == "weekday":
            return self._weekday(path, value, tz)
        if key == "time":
            return self._time(path, value, tz)
        if key == "header":
            return self._header(path, value)
        return self._field(path, key, key, value)

    def _field(
        self, path: PathKey, field: str, label: str, value: Any, header: str | None = None
    ) -> FieldCond | None:
        # Shorthand: subject = "vpn" or ["vpn", "wifi"] means contains.
        if isinstance(value, str | list):
            value = {"contains": value}
        table = self.check.table(path, value, f"condition '{label}'")
        if table is None:
            return None
        valid_ops = OPERATORS if field in ADDRESS_FIELDS else tuple(o for o in OPERATORS if o != "domain")
        ops: list[tuple[str, Op]] = []
        descs: list[str] = []
        pre: frozenset[str] | None = None
        for op_name, arg in table.items():
            if header is not None and op_name == "name":
                continue
            opath = (*path, op_name)
            if op_name not in valid_ops:
                self.check.add(
                    opath, f"unknown match operator '{op_name}' for {label}", suggest(op_name, valid_ops)
                )
                continue
            items = self.check.strings(opath, arg, f"{label} {op_name}")
            if items is None:
                continue
            op = self._operator(opath, op_name, items)
            if op is None:
                continue
            if op_name == "words" and header is None and field in ("subject", "body", "text") and pre is None:
                pre = words_prefilter(items)
            verb = _VERBS[op_name]
            ops.append((verb if op_name != "words" else "has word", op))
            shown = f"/{items[0]}/" if op_name == "regex" and len(items) == 1 else _show(items)
            descs.append(f"{label} {verb} {shown}")
        if not ops:
            if not [k for k in table if not (header and k == "name")]:
                self.check.add(
                    path, f"condition '{label}' has no match operator", "valid: " + ", ".join(valid_ops)
                )
            return None
        return FieldCond(field, label, tuple(ops), header, " and ".join(descs), pre)

    def _operator(self, path: PathKey, name: str, items: list[str]) -> Op | None:
        if name == "regex":
            compiled = []
            for pattern in items:
                try:
                    compiled.append(re.compile(pattern, re.IGNORECASE))
                except re.error as exc:
                    self.check.add(
                        path,
                        f"bad regex '{pattern}': {exc.msg} at position {exc.pos}",
                        "Python re syntax",
                        needle=pattern,
                    )
            return _op_regex(compiled) if len(compiled) == len(items) else None
        return {
            "contains": _op_contains,
            "equals": _op_equals,
            "words": _op_words,
            "starts": _op_starts,
            "ends": _op_ends,
            "domain": _op_domain,
        }[name](items)

    def _header(self, path: PathKey, value: Any) -> FieldCond | None:
        table = self.check.table(path, value, "condition 'header'")
        if table is None:
            return None
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            self.check.add(
                path,
                "header condition needs name = 'Header-Name'",
                "e.g. header = { name = 'X-Priority', equals = '1' }",
            )
            return None
        return self._field(path, "header", f"header {name}", table, header=name.strip().lower())

    def _weekday(self, path: PathKey, value: Any, tz: tzinfo) -> WeekdayCond | None:
        days = self.check.strings(path, value, "weekday")
        if days is None:
            return None
        found: set[int] = set()
        for day in days:
            # "sat", "Saturday", or a range "mon-fri" (wrapping: "fri-mon").
            ends = [_weekday_index(part) for part in day.split("-")]
            if len(ends) > 2 or any(e is None for e in ends):
                self.check.add(
                    path,
                    f"unknown weekday '{day}'",
                    "valid: " + ", ".join(WEEKDAYS) + ", or a range like 'mon-fri'",
                    needle=day,
                )
                return None
            first, last = ends[0], ends[-1]
            assert first is not None and last is not None
            found.update((first + i) % 7 for i in range((last - first) % 7 + 1))
        names = ", ".join(WEEKDAYS[d] for d in sorted(found))
        return WeekdayCond(frozenset(found), tz, f"weekday is one of {names} ({tz})")

    def _time(self, path: PathKey, value: Any, tz: tzinfo) -> TimeCond | None:
        text = self.check.string(path, value, "time")
        if text is None:
            return None
        m = TIME_RANGE_RE.match(text)
        bad = m is None
        if m:
            h1, m1, h2, m2 = (int(x) for x in m.groups())
            bad = not (h1 <= 24 and h2 <= 24 and m1 < 60 and m2 < 60) or (h1 * 60 + m1) == (h2 * 60 + m2)
            bad = bad or max(h1 * 60 + m1, h2 * 60 + m2) > 24 * 60
        if bad or m is None:
            self.check.add(
                path,
                f"bad time range '{text}'",
                "HH:MM-HH:MM, e.g. '09:00-17:30' or '18:00-08:00' across midnight",
            )
            return None
        start, end = h1 * 60 + m1, h2 * 60 + m2
        return TimeCond(start, end, tz, f"local time within {text.strip()} ({tz})", text.strip())
