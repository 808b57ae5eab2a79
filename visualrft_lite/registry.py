"""Named extension points: one definition each, read by validation, `--help` and error messages.

Every place a user names an implementation (a task, a data source, a model family, a tracker,
an optimizer, a loss type, a reward aggregation) is a `Registry`. An entry is added once, where
it is implemented, with the decorator or `add`; config validation, the CLI's choices and help,
`vrft-lite list` and every "unknown name" message read the same registry, so adding one is one
place. A plugin file (`--plugin FILE.py`) adds entries the same way the built-ins do; a name
registered twice is an error that says where each registration stands.

Pure: stdlib only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from visualrft_lite.errors import UserError, did_you_mean

T = TypeVar("T")


class UnknownName(UserError, ValueError):
    """A name that is not registered: a user's mistake, and a bad value to the code that asked."""


class DuplicateName(UserError, ValueError):
    """A name registered twice (a plugin that reuses a built-in name, or a file loaded twice)."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered implementation."""

    name: str
    value: T
    help: str
    """One line for `--help` and `vrft-lite list`."""
    where: str
    """`file:line` of the registration, for the message when a name is registered twice."""


def first_line(doc: str | None) -> str:
    """The first line of a docstring, without its trailing period."""
    return (doc or "").strip().split("\n", 1)[0].strip().rstrip(".")


def where_defined(obj: Any) -> str:
    """`file:line` where a function or class is defined ("<unknown>" for builtins and the like)."""
    target = inspect.unwrap(obj) if callable(obj) else obj
    try:
        file = inspect.getsourcefile(target) or inspect.getfile(target)
        line = inspect.getsourcelines(target)[1]
    except (TypeError, OSError):
        return "<unknown>"
    return f"{Path(file).name if 'visualrft_lite' in Path(file).parts else file}:{line}"


class Registry(Generic[T]):
    """Name -> implementation, in registration order.

    `kind` words the entries in messages ("task", "data source"); `setting` is the config key
    or option that names one ("data.task"), quoted when a value is not registered.
    """

    def __init__(self, kind: str, setting: str) -> None:
        self.kind, self.setting = kind, setting
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, value: T, *, help: str = "", where: str | None = None) -> T:
        """Register `value` under `name`; DuplicateName if the name is taken."""
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"a {self.kind} name must be a non-empty string without surrounding spaces; got {name!r}")
        where = where or where_defined(value)
        if name in self._entries:
            raise DuplicateName(f"{self.kind} {name!r} is already registered (at {self._entries[name].where}); "
                                f"choose another name")
        self._entries[name] = Entry(name, value, help or first_line(getattr(value, "__doc__", None)), where)
        return value

    def register(self, name: str, *, help: str = "") -> Callable[[T], T]:
        """Decorator form of `add`: `@REGISTRY.register("name")` above the implementation."""

        def add(value: T) -> T:
            return self.add(name, value, help=help)

        return add

    def remove(self, name: str) -> None:
        """Forget an entry (tests that register a temporary one)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The implementation registered as `name`; UnknownName naming the choices otherwise."""
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            hint = did_you_mean(str(name), self.names())
            raise UnknownName(f"unknown {self.kind} {name!r}{hint}; choose one of {self.choices()}")
        return entry.value

    __getitem__ = get

    def entry(self, name: str) -> Entry[T]:
        self.get(name)
        return self._entries[name]

    def unknown(self, name: Any, setting: str | None = None) -> str:
        """The one-line message for a setting whose value is not registered."""
        hint = did_you_mean(str(name), self.names())
        return f"{setting or self.setting} must be one of {self.choices()}; got {name!r}{hint}"

    def check(self, name: Any, setting: str | None = None) -> None:
        """ValueError (the config sections' validation error) unless `name` is registered."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(self.unknown(name, setting))

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def choices(self) -> str:
        """'a, b, c' for messages and help."""
        return ", ".join(self._entries)

    def entries(self) -> tuple[Entry[T], ...]:
        return tuple(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {self.choices()})"


def registries() -> dict[str, Registry[Any]]:
    """Every extension point's registry, by the name `vrft-lite list` gives it."""
    from visualrft_lite.data.sources import SOURCES
    from visualrft_lite.modeling.families import FAMILIES
    from visualrft_lite.objectives import LOSS_TYPES, REWARD_AGGREGATIONS
    from visualrft_lite.optim import OPTIMIZERS
    from visualrft_lite.tasks import TASKS
    from visualrft_lite.trackers import TRACKERS

    return {"tasks": TASKS, "sources": SOURCES, "families": FAMILIES, "trackers": TRACKERS, "optimizers": OPTIMIZERS,
            "losses": LOSS_TYPES, "aggregations": REWARD_AGGREGATIONS}
