"""rules/fields.toml: the ticket fields a desk uses, as data (issue 23 "Fields as data").

    [severity]
    label = "Severity"
    values = ["low", "medium", "high", "critical"]
    default = "medium"
    required_before_resolve = true

    [environment]
    type = "text"

A field with `values` is an enumeration: `#set severity=high` must name one of them (the agent's
error lists them) and a routing rule's `fields = { severity = "high" }` is checked against them
when the rules load. `type = "text"` takes any value. `default` is what a new ticket starts with;
`required_before_resolve` refuses a `#resolve` (any resolved status) while the field is unset.
Fields the file does not name stay free-form custom fields (`#set plan=enterprise`).

Pure: parsing and checking only; errors are `FILE:LINE: reason` like every rules file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mailgate.domain.rulesfile import Checker, RulesInvalid, TomlFile, type_name

FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
KEYS = ("label", "type", "values", "default", "required_before_resolve")
TYPES = ("choice", "text")
RESERVED = ("links", "parent")  # `#link` and `#parent` keep ticket keys in these


@dataclass(frozen=True)
class FieldDef:
    name: str
    label: str
    values: tuple[str, ...] = ()  # empty: free text
    default: str | None = None
    required_before_resolve: bool = False

    def match(self, value: str) -> str | None:
        """The allowed value `value` names (any case), as the file writes it; None when it names
        none. Text fields take any non-empty value."""
        value = value.strip()
        if not self.values:
            return value or None
        low = value.lower()
        return next((v for v in self.values if v.lower() == low), None)


@dataclass(frozen=True)
class Fields:
    """The defined fields by name; empty when the desk has no rules/fields.toml."""

    defs: Mapping[str, FieldDef] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, name: str) -> FieldDef | None:
        return self.defs.get(name)

    def defaults(self) -> dict[str, str]:
        """What a new ticket starts with (routing's own `fields` go on top)."""
        return {d.name: d.default for d in self.defs.values() if d.default is not None}

    def required(self) -> tuple[FieldDef, ...]:
        return tuple(d for d in self.defs.values() if d.required_before_resolve)


def parse_fields(file: TomlFile) -> Fields:
    """Validate and compile rules/fields.toml. Raises RulesInvalid with every error."""
    check = Checker(file)
    defs: dict[str, FieldDef] = {}
    for name, raw in file.data.items():
        path = (name,)
        table = check.table(path, raw, f"field '{name}'")
        if table is None:
            continue
        if not FIELD_NAME.match(name):
            check.add(path, f"field name '{name}' must be lowercase letters, digits and _")
            continue
        if name in RESERVED:
            check.add(path, f"field name '{name}' is reserved (#link and #parent keep ticket keys in it)")
            continue
        check.unknown_keys(path, table, KEYS, "field setting")
        values: tuple[str, ...] = ()
        if "values" in table:
            listed = check.strings((*path, "values"), table["values"], "values", single_ok=False) or []
            seen: set[str] = set()
            for v in listed:
                if v.lower() in seen:
                    check.add((*path, "values"), f"value '{v}' is listed twice", needle=v)
                seen.add(v.lower())
            values = tuple(listed)
        kind = table.get("type", "choice" if "values" in table else "text")
        if kind not in TYPES:
            check.add((*path, "type"), f"unknown field type {kind!r}", "choice (with values) or text")
        elif kind == "choice" and "values" not in table:
            check.add(path, f"field '{name}' is a choice but has no values", 'values = ["a", "b"]')
        elif kind == "text" and values:
            check.add((*path, "values"), f"field '{name}' is text: it takes no values", 'drop type = "text"')
        label = table.get("label", name.replace("_", " ").capitalize())
        if not isinstance(label, str) or not label.strip():
            check.add((*path, "label"), f"label must be a non-empty string, got {type_name(label)}")
            label = name
        default = table.get("default")
        if default is not None:
            if not isinstance(default, str) or not default.strip():
                check.add((*path, "default"), f"default must be a non-empty string, got {type_name(default)}")
                default = None
            elif values and default not in values:
                check.add(
                    (*path, "default"), f"default '{default}' is not one of the values", ", ".join(values)
                )
                default = None
        required = table.get("required_before_resolve", False)
        if check.boolean((*path, "required_before_resolve"), required, "required_before_resolve") is None:
            required = False
        defs[name] = FieldDef(name, label, values, default, bool(required))
    if check.errors:
        raise RulesInvalid(check.errors)
    return Fields(MappingProxyType(defs))
