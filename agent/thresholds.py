"""Live threshold sets: named, versioned, changed while workflows run.

A ``threshold`` node reads its set on every run, so a change (from the control plane's desired
state or the device API's ``SetThreshold``) applies to the very next frame without reloading a
model or recompiling a workflow. A set is replaced whole, atomically: a run sees either the old
values or the new ones, never a mix.

A version made on the device (:meth:`ThresholdStore.set_one`, a local override) says so in
:attr:`ThresholdSet.local_base`: the version it was made on top of. The reconciler uses it to
decide whether the control plane's next version replaces the override (docs/device-api.md,
"Threshold overrides and the control plane").
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class ThresholdSet:
    name: str
    version: int
    values: Mapping[str, float] = field(default_factory=dict)
    local_base: int | None = None
    """Set when this version is a local override: the version (from the config or the control
    plane) that the first of a run of overrides was made on top of. ``None``: not overridden."""

    def for_class(self, label: str | None) -> float | None:
        """The threshold of ``label``, else the set's ``default``; ``None`` when neither."""
        if label is not None and label in self.values:
            return self.values[label]
        return self.values.get("default")


Listener = Callable[[ThresholdSet], None]


class ThresholdStore:
    """Thread-safe registry of threshold sets."""

    def __init__(self) -> None:
        self._sets: dict[str, ThresholdSet] = {}
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def get(self, name: str) -> ThresholdSet | None:
        return self._sets.get(name)

    def put(
        self,
        name: str,
        values: Mapping[str, float],
        version: int | None = None,
        *,
        rollback: bool = False,
        local_base: int | None = None,
    ) -> ThresholdSet:
        """Replace set ``name``. ``version`` defaults to one more than the current one; an
        older version than the current one is refused (a late, stale update) unless
        ``rollback`` (going back to a set that ran before, e.g. a canary's slot A).
        ``local_base`` marks the new version as a local override made on top of that version."""
        checked = _checked(name, values)
        with self._lock:
            updated = self._put(name, checked, version, rollback=rollback, local_base=local_base)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(updated)
        return updated

    def _put(
        self,
        name: str,
        values: Mapping[str, float],
        version: int | None,
        *,
        rollback: bool,
        local_base: int | None,
    ) -> ThresholdSet:
        current = self._sets.get(name)
        newest = current.version if current else 0
        if version is None:
            version = newest + 1
        elif version < newest and not rollback:
            raise ValueError(
                f"threshold set '{name}' is at version {newest}; refusing older version {version}"
            )
        updated = ThresholdSet(name, version, MappingProxyType(dict(values)), local_base)
        self._sets[name] = updated
        return updated

    def set_one(self, name: str, key: str, value: float) -> ThresholdSet:
        """Change one threshold of a set (a local override), atomically: a new version, one above
        the current one, marked with :attr:`ThresholdSet.local_base` (the base of an override
        made on top of another override is that one's base)."""
        checked = _checked(name, {key: value})
        with self._lock:
            current = self._sets.get(name)
            values = {**(current.values if current else {}), **checked}
            base = current.version if current else 0
            if current is not None and current.local_base is not None:
                base = current.local_base
            updated = self._put(name, values, None, rollback=False, local_base=base)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(updated)
        return updated

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def snapshot(self) -> dict[str, ThresholdSet]:
        return dict(self._sets)


def _checked(name: str, values: Mapping[str, float]) -> dict[str, float]:
    """``values`` as floats; ``ValueError`` naming the threshold for one that is not finite."""
    for key, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"threshold '{name}.{key}' must be a finite number, got {value!r}")
    return {key: float(value) for key, value in values.items()}
