"""Frames and the bounded queue between a source and the workflow runs it feeds.

A live camera must never make the agent fall behind: when runs are slower than the camera,
its queue drops the *oldest* frame (the freshest frame is the one worth inspecting) and counts
what it dropped. A folder of files must not lose anything: its queue blocks the reader
instead.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

QueuePolicy = Literal["drop_oldest", "block"]


@dataclass(frozen=True)
class Frame:
    """One frame: encoded bytes (JPEG/PNG from a file or an IP camera) or a decoded BGR array."""

    data: Any
    source: str
    seq: int
    timestamp: float = field(default_factory=time.time)
    meta: dict[str, Any] = field(default_factory=dict)

    def document(self, key: str = "image") -> dict[str, Any]:
        """The run input for this frame: the pixels under ``key`` and the frame's facts."""
        return {
            key: self.data,
            "frame": {"source": self.source, "seq": self.seq, "timestamp": self.timestamp, **self.meta},
        }


class FrameQueue:
    """Bounded, thread-safe FIFO of frames with a full-queue policy and counters."""

    def __init__(self, maxsize: int = 8, policy: QueuePolicy = "drop_oldest") -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.policy = policy
        self.dropped = 0
        self.accepted = 0
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, frame: Frame, timeout: float | None = None) -> bool:
        """Queue a frame. Returns False when the queue is closed (or, for ``block``, when
        ``timeout`` passed)."""
        with self._cond:
            if self.policy == "block":
                if not self._cond.wait_for(lambda: self._closed or len(self._items) < self.maxsize, timeout):
                    return False
            elif len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            if self._closed:
                return False
            self._items.append(frame)
            self.accepted += 1
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest frame; ``None`` when the queue is closed and empty, or on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                return None
            frame = self._items.popleft()
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        """No more frames; ``get`` drains what is queued, then returns ``None``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def depth(self) -> int:
        return len(self._items)
