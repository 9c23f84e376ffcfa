"""What text every match of a regex must contain, to look for with `in` before running it.

A case-blind regex that fails on a long text is tried at every position of it; `in` on the
lowered text finds the plain pieces every match needs in a fraction of that time. Routing's regex
conditions and the bounce detector's wording use it.

It reads the pattern's source itself, with public means only (the stdlib's own regex parser module
is private and changes between Python releases). The reading is deliberately shallow: only plain
characters of the top-level sequence count, and anything it does not fully understand (groups,
classes, escapes with letters, verbose patterns, a top-level `|`) only ends a run or gives up. It
may find fewer pieces than there are, never one a match could lack: a missed piece costs a regex
run, a wrong one would silently skip a rule that matches.
"""

from __future__ import annotations

import re

# Printable ASCII whose case-blind matches are only its own upper and lower case: an 'i' also
# matches the dotless 'ı' and an 's' the long 'ſ', whose lower case is not 'i' or 's'.
_CASE_SAFE = frozenset(chr(c) for c in range(32, 127)) - set("iIsS")
_QUANTIFIERS = frozenset("*+?{")
_SHORTEST = 3  # a piece shorter than this is in almost every text: not worth an `in`
_ESCAPE_DIGITS = {"x": 2, "u": 4, "U": 8}  # \x41, \u0041, \U00000041: the digits are no literals


def required_literals(pattern: re.Pattern[str]) -> tuple[str, ...]:
    r"""Pieces of text, lower case, that every match of `pattern` contains: the runs of plain
    characters in its top-level sequence, cut at anything else and at characters whose case-blind
    matches have other lower cases. An anchored, case-blind `^\s*category:` is tried at every
    position of a long body; `"category:" in low` fails in a fraction of that time. Empty when
    nothing is required or the pattern is one this reading does not follow."""
    if pattern.flags & re.VERBOSE:  # whitespace and comments are not literals there
        return ()
    src = pattern.pattern
    pieces: list[str] = []
    run: list[str] = []

    def cut() -> None:
        if len(run) >= _SHORTEST:
            pieces.append("".join(run).lower())
        run.clear()

    def take(c: str) -> None:  # a plain character: on the run, or the end of it if not case-safe
        if c in _CASE_SAFE:
            run.append(c)
        else:
            cut()

    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c == "|":  # an alternative at the top: no piece is needed by every match
            return ()
        if c in _QUANTIFIERS:  # the character before may be absent or repeated apart: drop it
            if run:
                run.pop()
            cut()
            i = _after_braces(src, i) if c == "{" else i + 1
        elif c == "\\" and i + 1 < n:
            e = src[i + 1]
            if e.isalnum():  # \d, \b, \A, \1, \x41 …: not a plain character
                cut()
                i = _after_escape(src, i + 1)
            else:  # \. \- \\ and the like stand for themselves
                take(e)
                i += 2
        elif c == "(":
            cut()
            i = _after_group(src, i)
        elif c == "[":
            cut()
            i = _after_class(src, i)
        elif c in ".^$\\)":
            cut()
            i += 1
        else:
            take(c)
            i += 1
    cut()
    return tuple(dict.fromkeys(pieces))


def _after_escape(src: str, i: int) -> int:
    """The index after the escape whose letter or digit is at `i`."""
    e = src[i]
    if e in _ESCAPE_DIGITS:
        return i + 1 + _ESCAPE_DIGITS[e]
    if e == "N":  # \N{EM DASH}
        end = src.find("}", i)
        return len(src) if end < 0 else end + 1
    if e.isdigit():  # a back-reference or an octal escape: up to three digits
        j = i + 1
        while j < len(src) and j < i + 3 and src[j].isdigit():
            j += 1
        return j
    return i + 1


def _after_braces(src: str, i: int) -> int:
    """The index after `{m,n}` at `i` (or after a literal `{`: skipping it only loses a piece)."""
    end = src.find("}", i)
    return len(src) if end < 0 else end + 1


def _after_class(src: str, i: int) -> int:
    """The index after the character class `[...]` that opens at `i`."""
    j = i + 1
    if j < len(src) and src[j] == "^":
        j += 1
    if j < len(src) and src[j] == "]":  # a `]` first in the class is one of its characters
        j += 1
    while j < len(src):
        if src[j] == "\\":
            j += 2
        elif src[j] == "]":
            return j + 1
        else:
            j += 1
    return len(src)


def _after_group(src: str, i: int) -> int:
    """The index after the group that opens at `i`, over nested groups, classes and escapes."""
    depth, j = 0, i
    while j < len(src):
        c = src[j]
        if c == "\\":
            j += 2
            continue
        if c == "[":
            j = _after_class(src, j)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return len(src)
