"""Reading admin-edited TOML rules files with errors that name file, line and what would be valid.

Shared by every file under `rules/` (team.toml, routing.toml, and later workflow.toml, sla.toml):

- `TomlFile.read(path)` parses a file; a syntax error becomes a `RulesError` with tomllib's line.
- `TomlFile.line_of(("rules", 3, "when", "subject"))` maps a path into the parsed data back to the
  line of the key in the text. tomllib keeps no positions, so a small scanner indexes table headers
  (`[a.b]`, `[[rules]]`, counting array-of-tables elements) and `key =` lines, skipping strings,
  comments and multi-line arrays. Keys inside inline tables are found by searching the span of the
  nearest indexed parent, so an error always lands on the nearest line that explains it.
- `Checker` collects every error of one file (never stops at the first) with helpers for the
  common ones: unknown key with the closest valid suggestion, wrong value type.

It must not know what any particular file means; that lives with the file's own module.
It reads files only when asked by a loader; it never writes.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PathKey = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_ERR_LINE = re.compile(r"\(at line (\d+), column \d+\)")


@dataclass(frozen=True)
class RulesError:
    """One problem in one rules file. `str()` gives `FILE:LINE: reason (hint)` as editors expect."""

    file: str
    line: int
    reason: str
    hint: str = ""

    def __str__(self) -> str:
        tail = f" ({self.hint})" if self.hint else ""
        return f"{self.file}:{self.line}: {self.reason}{tail}"


class RulesInvalid(Exception):
    """The rules could not be loaded. Carries every error found, not only the first."""

    def __init__(self, errors: Sequence[RulesError]) -> None:
        self.errors: tuple[RulesError, ...] = tuple(errors)
        super().__init__(format_errors(self.errors))


def being_written(*paths: Path) -> bool:
    """True when a rules file exists but is empty: an editor or `cat >` has truncated it and not
    yet written it. A hot reload then waits for the next look instead of taking "no rules" as
    the admin's new rules (and then keeping those as the last good ones when the real text
    turns out broken). A file meant to be empty can hold a comment."""
    for path in paths:
        try:
            if path.stat().st_size == 0:
                return True
        except OSError:
            continue
    return False


def format_errors(errors: Iterable[RulesError]) -> str:
    """One error per line, in the `FILE:LINE: reason (hint)` form (for logs and the admin mail)."""
    return "\n".join(str(e) for e in errors)


def suggest(word: str, valid: Iterable[str]) -> str:
    """A hint naming the closest valid word, then all valid words: "did you mean 'x'? valid: a, b"."""
    choices = sorted({str(v) for v in valid})
    listing = "valid: " + ", ".join(choices) if choices else "nothing is valid here"
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        close = [c for c in choices if c.lower() == word.lower()]
    return f"did you mean '{close[0]}'? {listing}" if close else listing


def type_name(value: object) -> str:
    """How TOML would call the type of a parsed value, for error messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


# --- the position index -------------------------------------------------------------------------


def _parse_key(text: str, i: int) -> tuple[list[str], int] | None:
    """Parse a (possibly dotted, possibly quoted) TOML key at text[i:]. Returns parts and end."""
    parts: list[str] = []
    n = len(text)
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            return None
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                return None
            try:
                parts.append(tomllib.loads(f"k = {text[i : j + 1]}")["k"])
            except tomllib.TOMLDecodeError:
                return None
            i = j + 1
        elif c == "'":
            j = text.find("'", i + 1)
            if j < 0:
                return None
            parts.append(text[i + 1 : j])
            i = j + 1
        else:
            m = _BARE_KEY.match(text, i)
            if not m:
                return None
            parts.append(m.group(0))
            i = m.end()
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == ".":
            i += 1
            continue
        return parts, i


def _scan_value(text: str, i: int, depth: int, ml: str | None) -> tuple[int, str | None]:
    """Follow brackets and strings from text[i:] to the end of the line.

    Returns the bracket depth and the open multi-line string delimiter, if any, so the index
    knows whether the next line is a continuation (not a key) or a fresh statement.
    """
    n = len(text)
    while i < n:
        if ml is not None:
            j = text.find(ml, i)
            if j < 0:
                return depth, ml
            i = j + 3
            ml = None
            continue
        c = text[i]
        if c == "#":
            break
        if text.startswith('"""', i) or text.startswith("'''", i):
            ml = text[i : i + 3]
            i += 3
            continue
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if c == "'":
            j = text.find("'", i + 1)
            i = n if j < 0 else j + 1
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, ml


class PositionIndex:
    """Maps paths in the parsed TOML data to (first line, last line) of their text, 1-based."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self._spans: dict[PathKey, list[int]] = {}
        self._build()

    def _record(self, path: PathKey, line: int) -> list[int]:
        span = self._spans.get(path)
        if span is None:
            span = [line, len(self.lines)]
            self._spans[path] = span
        return span

    def _build(self) -> None:
        arrays: dict[PathKey, int] = {}
        table: PathKey = ()
        depth, ml = 0, None
        open_key: list[int] | None = None
        open_table: list[int] | None = None
        for lineno, line in enumerate(self.lines, 1):
            if ml is not None or depth > 0:
                depth, ml = _scan_value(line, 0, depth, ml)
                continue
            stripped = line.lstrip()
            if not stripped or stripped.startswith("#"):
                continue
            indent = len(line) - len(stripped)
            if stripped.startswith("["):
                is_array = stripped.startswith("[[")
                parsed = _parse_key(line, indent + (2 if is_array else 1))
                if parsed is None:
                    continue
                for span in (open_key, open_table):
                    if span is not None and span[0] < lineno:
                        span[1] = lineno - 1
                table = self._resolve(parsed[0], is_array, arrays, lineno)
                open_table = self._record(table, lineno)
                open_key = None
                continue
            parsed = _parse_key(line, indent)
            if parsed is None or parsed[1] >= len(line) or line[parsed[1]] != "=":
                continue
            if open_key is not None:
                open_key[1] = lineno - 1
            open_key = self._record(table + tuple(parsed[0]), lineno)
            depth, ml = _scan_value(line, parsed[1] + 1, 0, None)

    def _resolve(self, parts: list[str], is_array: bool, arrays: dict[PathKey, int], lineno: int) -> PathKey:
        concrete: PathKey = ()
        for pos, part in enumerate(parts):
            concrete = (*concrete, part)
            if is_array and pos == len(parts) - 1:
                self._record(concrete, lineno)
                arrays[concrete] = arrays.get(concrete, 0) + 1
                concrete = (*concrete, arrays[concrete] - 1)
            elif concrete in arrays:
                concrete = (*concrete, arrays[concrete] - 1)
        return concrete

    def _search(self, pattern: re.Pattern[str], start: int, end: int) -> int | None:
        for lineno in range(start, min(end, len(self.lines)) + 1):
            if pattern.search(self.lines[lineno - 1]):
                return lineno
        return None

    def line_of(self, path: PathKey, needle: str | None = None) -> int:
        """The line that best explains `path`: its key line, else the nearest parent's.

        With `needle` (e.g. one bad value inside a multi-line array) the line within the key's
        span that contains it, written as a TOML string or bare.
        """
        start, end, rest = 1, len(self.lines), list(path)
        if path not in self._spans:
            # Written only through longer dotted keys (when.subject.regex = ...): the first of them.
            n = len(path)
            below = [span for key, span in self._spans.items() if len(key) > n and key[:n] == path]
            if below:
                first = min(below)
                return self._needle(first[0], max(b[1] for b in below), needle) if needle else first[0]
        for cut in range(len(path), 0, -1):
            span = self._spans.get(path[:cut])
            if span is not None:
                start, end = span
                rest = list(path[cut:])
                break
        line = start
        for part in rest:
            if not isinstance(part, str):
                continue
            quoted = re.escape(part)
            pattern = re.compile(rf"(?:^|[\s{{,.])(?:{quoted}|\"{quoted}\"|'{quoted}')\s*=")
            found = self._search(pattern, line, end)
            if found is not None:
                line = found
        if needle:
            return self._needle(line, end, needle)
        return max(line, 1)

    def _needle(self, line: int, end: int, needle: str) -> int:
        for form in (f'"{needle}"', f"'{needle}'", needle):
            found = self._search(re.compile(re.escape(form)), line, end)
            if found is not None:
                return found
        return max(line, 1)


# --- files and checkers -------------------------------------------------------------------------


@dataclass(frozen=True)
class TomlFile:
    """One parsed rules file: its display name (as errors print it), text, data and positions."""

    name: str
    text: str
    data: dict[str, Any]
    index: PositionIndex

    @classmethod
    def parse(cls, text: str, name: str) -> TomlFile:
        """Parse text; raises RulesInvalid with the syntax error's line."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            msg = str(exc)
            m = _TOML_ERR_LINE.search(msg)
            line = int(m.group(1)) if m else max(1, len(text.splitlines()))
            reason = _TOML_ERR_LINE.sub("", msg).strip()
            raise RulesInvalid(
                [RulesError(name, line, f"TOML syntax: {reason}", "see https://toml.io/en/v1.0.0")]
            ) from None
        return cls(name=name, text=text, data=data, index=PositionIndex(text))

    @classmethod
    def read(cls, path: Path, name: str | None = None) -> TomlFile:
        """Read and parse a file; raises RulesInvalid (missing, unreadable, not UTF-8, bad syntax)."""
        shown = name or str(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise RulesInvalid([RulesError(shown, 1, "file is missing")]) from None
        except UnicodeDecodeError as exc:
            raise RulesInvalid([RulesError(shown, 1, f"not UTF-8 text ({exc.reason})")]) from None
        except OSError as exc:
            raise RulesInvalid([RulesError(shown, 1, f"cannot read: {exc.strerror}")]) from None
        return cls.parse(text, shown)

    def line_of(self, path: PathKey, needle: str | None = None) -> int:
        return self.index.line_of(path, needle)


class Checker:
    """Collects the errors of one file while a module validates and compiles it."""

    def __init__(self, file: TomlFile) -> None:
        self.file = file
        self.errors: list[RulesError] = []

    def add(self, path: PathKey, reason: str, hint: str = "", needle: str | None = None) -> None:
        self.errors.append(RulesError(self.file.name, self.file.line_of(path, needle), reason, hint))

    def unknown_keys(self, path: PathKey, table: Mapping[str, Any], valid: Iterable[str], what: str) -> bool:
        """Report every key of `table` not in `valid`. Returns True when all keys were known."""
        valid = tuple(valid)
        ok = True
        for key in table:
            if key not in valid:
                self.add((*path, key), f"unknown {what} '{key}'", suggest(key, valid))
                ok = False
        return ok

    def entries(self, data: Mapping[str, Any], key: str) -> Iterator[tuple[PathKey, dict[str, Any]]]:
        """The tables of an array of tables `[[key]]`, with their paths; reports a `key` that is
        not such an array, and skips (reporting) any entry that is not a table."""
        raw = data.get(key, [])
        if not isinstance(raw, list):
            self.add((key,), f"{key} must be [[{key}]] tables")
            return
        for i, entry in enumerate(raw):
            path: PathKey = (key, i)
            if self.table(path, entry, f"a [[{key}]] entry") is not None:
                yield path, entry

    def table(self, path: PathKey, value: object, what: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.add(path, f"{what} must be a table, got {type_name(value)}")
        return None

    def string(self, path: PathKey, value: object, what: str, *, empty_ok: bool = False) -> str | None:
        if isinstance(value, str) and (empty_ok or value.strip()):
            return value
        got = "an empty string" if isinstance(value, str) else type_name(value)
        self.add(path, f"{what} must be a non-empty string, got {got}")
        return None

    def boolean(self, path: PathKey, value: object, what: str) -> bool | None:
        if isinstance(value, bool):
            return value
        self.add(path, f"{what} must be true or false, got {type_name(value)}")
        return None

    def strings(self, path: PathKey, value: object, what: str, *, single_ok: bool = True) -> list[str] | None:
        """A list of non-empty strings; a single string counts as a list of one when allowed."""
        if single_ok and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            self.add(path, f"{what} must be a non-empty list of strings, got {type_name(value)}")
            return None
        out: list[str] = []
        for item in value:
            if not isinstance(item, str) or not item.strip():
                self.add(path, f"{what}: every item must be a non-empty string, got {item!r}")
                return None
            out.append(item)
        return out
