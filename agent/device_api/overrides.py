"""The record of local threshold overrides: one JSON line per ``SetThreshold``, in
``<data_dir>/device_api/threshold_overrides.jsonl``.

An entry is written (and flushed to disk) before the call returns. ``reported`` is false until
the control plane has been told; :meth:`OverrideLog.unreported` is what the sync link sends and
:meth:`OverrideLog.mark_reported` what it calls once the control plane has it.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from agent.fsutil import atomic_write


@dataclass(frozen=True, slots=True)
class ThresholdOverride:
    """One local change of one threshold: what changed, to which set version, by whom."""

    id: str
    time: float
    threshold_set: str
    key: str
    value: float
    previous: float | None
    version: int
    origin: str
    actor: str = ""
    reason: str = ""
    reported: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OverrideLog:
    """Append-only JSON-lines file of :class:`ThresholdOverride`; thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, override: ThresholdOverride) -> None:
        """Write ``override`` durably (flushed and fsynced); ``OSError`` when the disk refuses."""
        line = json.dumps(override.to_dict(), sort_keys=True) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                file.write(line)
                file.flush()
                os.fsync(file.fileno())

    def entries(self) -> list[ThresholdOverride]:
        """Every recorded override, oldest first; lines that cannot be read are skipped."""
        with self._lock:
            return self._read()

    def _read(self) -> list[ThresholdOverride]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            try:
                entries.append(ThresholdOverride(**json.loads(line)))
            except (ValueError, TypeError):
                continue
        return entries

    def unreported(self) -> list[ThresholdOverride]:
        return [entry for entry in self.entries() if not entry.reported]

    def mark_reported(self, ids: set[str]) -> None:
        """Mark the overrides ``ids`` as reported to the control plane (rewrites the file
        atomically)."""
        with self._lock:
            entries = [replace(e, reported=True) if e.id in ids else e for e in self._read()]
            text = "".join(json.dumps(e.to_dict(), sort_keys=True) + "\n" for e in entries)
            atomic_write(self.path, text.encode())
