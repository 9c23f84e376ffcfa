"""What a change did to a ticket, as typed records (STYLE.md habit 12).

`pipeline/apply.py` returns one record per change it made, in command order; the handlers decide
with the records' types who hears of what (a requester sees a status change and a merge, not who
it was assigned to), and the mail templates print each as its line: `{{ actor }} {{ line }}.`
renders "agent1 changed the status to Resolved." `str(record)` is the only place each line is
worded. Pure data: no database, no mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mailgate.domain.commands import format_minutes
from mailgate.domain.workflow import Status


@dataclass(frozen=True)
class Change:
    """One change; `public` says whether requester and watchers are told of it."""

    public: ClassVar[bool] = False


@dataclass(frozen=True)
class StatusChanged(Change):
    old: str  # the status id it had
    new: Status
    why: str = ""  # command, first response, requester replied, merged into …

    public: ClassVar[bool] = True

    def __str__(self) -> str:
        return f"changed the status to {self.new.label}"


@dataclass(frozen=True)
class GroupSet(Change):
    group: str

    def __str__(self) -> str:
        return f"moved it to group {self.group}"


@dataclass(frozen=True)
class Unassigned(Change):
    old: str

    def __str__(self) -> str:
        return "removed the assignee"


@dataclass(frozen=True)
class Assigned(Change):
    to: str
    old: str | None = None

    def __str__(self) -> str:
        return f"assigned it to {self.to}"


@dataclass(frozen=True)
class AttributeSet(Change):
    """The ticket's priority, type or category."""

    name: str
    old: str | None
    new: str

    def __str__(self) -> str:
        return f"set the {self.name} to {self.new}"


@dataclass(frozen=True)
class FieldSet(Change):
    """A custom field (`#set plan=enterprise`)."""

    name: str
    old: str | None
    new: str

    def __str__(self) -> str:
        return f"set {self.name} to {self.new}"


@dataclass(frozen=True)
class FieldCleared(Change):
    name: str

    def __str__(self) -> str:
        return f"cleared {self.name}"


@dataclass(frozen=True)
class WatcherAdded(Change):
    address: str

    def __str__(self) -> str:
        return f"added {self.address} as a watcher"


@dataclass(frozen=True)
class RequesterSet(Change):
    """`#requester ADDRESS`: the ticket is theirs now (an agent opened it for them). The new
    requester is sent the acknowledgement; the change line itself is the desk's business."""

    address: str
    old: str

    def __str__(self) -> str:
        return f"made {self.address} the requester"


@dataclass(frozen=True)
class WatcherRemoved(Change):
    address: str

    def __str__(self) -> str:
        return f"removed {self.address} from the watchers"


@dataclass(frozen=True)
class Linked(Change):
    key: str

    def __str__(self) -> str:
        return f"linked it to {self.key}"


@dataclass(frozen=True)
class TimeSpent(Change):
    """`#time 1h15m`: the desk's bookkeeping, told to agents only."""

    minutes: int

    def __str__(self) -> str:
        return f"logged {format_minutes(self.minutes)}"


@dataclass(frozen=True)
class ParentSet(Change):
    key: str

    def __str__(self) -> str:
        return f"made {self.key} its parent"


@dataclass(frozen=True)
class ParentCleared(Change):
    old: str

    def __str__(self) -> str:
        return f"removed its parent {self.old}"


@dataclass(frozen=True)
class Merged(Change):
    into: str

    public: ClassVar[bool] = True

    def __str__(self) -> str:
        return f"merged it into {self.into}"
