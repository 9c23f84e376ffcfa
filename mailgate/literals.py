"""What text every match of a regex must contain, to look for with `in` before running it.

A case-blind regex that fails on a long text is tried at every position of it; `in` on the
lowered text finds the plain pieces every match needs in a fraction of that time. Routing's regex
conditions and the bounce detector's wording use it.
"""

from __future__ import annotations

import re
from typing import Any

# Printable ASCII whose case-blind matches are only its own upper and lower case: an 'i' also
# matches the dotless 'ı' and an 's' the long 'ſ', whose lower case is not 'i' or 's'.
_CASE_SAFE = frozenset(chr(c) for c in range(32, 127)) - set("iIsS")


def required_literals(pattern: re.Pattern[str]) -> tuple[str, ...]:
    r"""Pieces of text, lower case, that every match of `pattern` contains: the runs of plain
    characters in its top-level sequence (and in groups within it), cut at characters whose
    case-blind matches have other lower cases. `in` on the lowered text finds them in a fraction
    of the time the regex takes to fail on a long body (an anchored, case-blind `^\s*category:`
    is tried at every position). Empty when nothing is required or the pattern cannot be read."""
    try:
        from re import _constants, _parser  # the stdlib's own parser of the pattern

        parsed = _parser.parse(pattern.pattern, pattern.flags)
    except Exception:  # noqa: BLE001 - a prefilter is an optimisation: none then
        return ()
    pieces: list[str] = []
    run: list[str] = []

    def cut() -> None:
        if len(run) >= 3:
            pieces.append("".join(run).lower())
        run.clear()

    def walk(items: Any) -> None:
        for op, av in items:
            if op is _constants.LITERAL and chr(av) in _CASE_SAFE:
                run.append(chr(av))
            elif op is _constants.SUBPATTERN:
                walk(av[-1])  # a group is part of the match: its own sequence, in place
            else:
                cut()

    walk(parsed)
    cut()
    return tuple(dict.fromkeys(pieces))
