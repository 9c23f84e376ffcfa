"""Routing rule evaluation cost per message with 10, 100 and 1,000 rules.

Messages: the 25 realistic fixtures in tests/fixtures/routing/, parsed once. Rules: generated
routing.toml files (against the shipped team.toml) in two mixes:

- keywords: every rule is a `words` test on subject/body (what admins mostly write); most are
  skipped by the per-rule word prefilter.
- mixed: 40% keywords, 20% `contains` on the body, 15% regex on the subject, 15% header
  equals, 10% sender domain; only the keyword ones can be skipped by the prefilter.

No generated rule matches a fixture, so every rule is tested: the worst case for a first-match
list. Reports µs per message for `evaluate` (trace kept raw, as the pipeline pays it), for
`evaluate` plus rendering the trace (as `rules test` and the audit event pay it), and the time
to load and compile the files.

Run:  .venv/bin/python bench/rules_bench.py
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from mailgate.domain.routing import evaluate
from mailgate.mail.parse import parse_message
from mailgate.ruleset import load as load_rules

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "routing"
GROUPS = ["IT", "AV", "Facilities", "Maintenance", "Websites", "Database Vendors", "Care Desk Team"]


def word(rng: random.Random) -> str:
    # Pronounceable non-words: they never occur in the fixtures, so no rule hits.
    return (
        "".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(3, 4))) + "x"
    )


def rule_toml(i: int, kind: str, rng: random.Random) -> str:
    name = f"r{i:04d}-{kind}"
    group = GROUPS[i % len(GROUPS)]
    if kind == "keywords":
        words = ", ".join(f'"{word(rng)}"' for _ in range(rng.randint(4, 12)))
        phrase = f'"{word(rng)} {word(rng)}"'
        cond = f"when.text.words = [{words}, {phrase}]"
    elif kind == "contains":
        cond = f'when.body.contains = ["{word(rng)}", "{word(rng)} {word(rng)}"]'
    elif kind == "regex":
        cond = f"when.subject.regex = '{word(rng)}[- ]?\\d{{3,}}'"
    elif kind == "header":
        cond = f'when.header = {{ name = "X-{word(rng).title()}", equals = "{word(rng)}" }}'
    else:
        cond = f'when.from.domain = "{word(rng)}.example"'
    return f'[[rules]]\nname = "{name}"\n{cond}\nthen = {{ group = "{group}", tags = ["t{i}"] }}\n\n'


def make_rules(directory: Path, n: int, mix: str, seed: int = 1) -> None:
    rng = random.Random(seed)
    kinds = (
        ["keywords"]
        if mix == "keywords"
        else ["keywords"] * 8 + ["contains"] * 4 + ["regex"] * 3 + ["header"] * 3 + ["domain"] * 2
    )
    text = 'timezone = "Europe/London"\n\n' + "".join(rule_toml(i, rng.choice(kinds), rng) for i in range(n))
    (directory / "routing.toml").write_text(text)


def bench(n: int, mix: str, mails: list, work: Path) -> tuple[float, float, float]:
    rules_dir = work / f"rules-{mix}-{n}"
    rules_dir.mkdir()
    shutil.copy(ROOT / "rules" / "team.toml", rules_dir / "team.toml")
    make_rules(rules_dir, n, mix)
    t0 = time.perf_counter()
    rules = load_rules(rules_dir, ROOT / "templates")
    load_ms = (time.perf_counter() - t0) * 1e3
    assert len(rules.routing.rules) == n
    now = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)
    # Enough rounds for a stable figure, fewer for the big sets; best of 5 against noise.
    rounds = max(3, 4000 // n)
    best_eval = best_trace = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(rounds):
            for mail in mails:
                d = evaluate(rules, mail, desk_address="support@localhost", now=now)
                assert not d.matched
        best_eval = min(best_eval, (time.perf_counter() - t0) / (rounds * len(mails)))
        t0 = time.perf_counter()
        for _ in range(max(1, rounds // 4)):
            for mail in mails:
                d = evaluate(rules, mail, desk_address="support@localhost", now=now)
                assert len(d.trace) == n + 1  # every rule, then the assignment
        best_trace = min(best_trace, (time.perf_counter() - t0) / (max(1, rounds // 4) * len(mails)))
    return best_eval * 1e6, best_trace * 1e6, load_ms


def main() -> int:
    mails = [parse_message(p.read_bytes()) for p in sorted(FIXTURES.glob("*.eml"))]
    print("command: .venv/bin/python bench/rules_bench.py")
    print(
        f"python {sys.version.split()[0]}, {len(mails)} messages (tests/fixtures/routing), no rule matches (all tested)"
    )
    print()
    print(f"{'mix':<9} {'rules':>6} {'evaluate µs/msg':>16} {'+ trace µs/msg':>15} {'load ms':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for mix in ("keywords", "mixed"):
            for n in (10, 100, 1000):
                ev, tr, load = bench(n, mix, mails, Path(tmp))
                print(f"{mix:<9} {n:>6} {ev:>16.1f} {tr:>15.1f} {load:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
