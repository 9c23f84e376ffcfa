"""The regex pre-filter never skips a text the regex matches.

`required_literals` lets routing and the bounce detector skip a regex when its plain pieces are
missing from the lowered text. A piece that a match can lack would silently drop a routing rule
or miss a bounce, so hypothesis writes patterns from the constructs admins use, draws texts the
regex matches (`from_regex`), and checks that every piece is in the text as the callers lower it.
"""

from __future__ import annotations

import re

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mailgate.literals import required_literals

_plain = st.sampled_from(list("abcKkz:' -_"))
_atom = st.one_of(
    _plain,
    _plain.map(re.escape),
    st.sampled_from([".", r"\d", r"\w", r"\s", r"\b", "[ab]", "[^a]", r"\x41", r"[\]a]", "^", "$"]),
    st.sampled_from(list("isISıſİ")),  # letters whose case-blind matches lower differently
)
_quant = st.sampled_from(["", "", "", "?", "*", "+", "{0,2}", "{2}", "+?", "??"])
_piece = st.builds(lambda a, q: a + q, _atom, _quant)
_seq = st.lists(_piece, min_size=1, max_size=8).map("".join)
_group = st.builds(lambda a, b, q: f"(?:{a}|{b}){q}", _seq, _seq, _quant)
_pattern = st.lists(st.one_of(_seq, _group), min_size=1, max_size=4).map("".join)
_alternatives = st.lists(_pattern, min_size=1, max_size=2).map("|".join)


@settings(max_examples=200, deadline=None)
@given(source=_alternatives, ignorecase=st.booleans(), data=st.data())
def test_every_match_contains_every_required_piece(
    source: str, ignorecase: bool, data: st.DataObject
) -> None:
    try:
        rx = re.compile(source, re.IGNORECASE if ignorecase else 0)
    except re.error:  # e.g. a quantifier after an anchor: not a pattern anyone can load
        assume(False)
        raise
    text = data.draw(st.from_regex(rx))
    if rx.search(text) is None:  # from_regex may give texts the regex matches only in full
        return
    low = text.lower()
    for piece in required_literals(rx):
        assert piece in low, (source, text, piece)


def test_plain_wording_gives_its_pieces_and_alternatives_give_none() -> None:
    assert required_literals(re.compile(r"^\s*category:", re.IGNORECASE)) == ("category:",)
    assert required_literals(re.compile(r"Diagnostic information for administrators", re.I)) == (
        "agno",
        "nformat",
        "on for adm",
        "trator",
    )
    assert required_literals(re.compile("foo|bar")) == ()
    assert required_literals(re.compile(r"(?x) abc def")) == ()
    assert required_literals(re.compile(r"abc\x41def")) == ("abc", "def")
