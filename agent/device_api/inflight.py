"""A thread-safe gauge with a high-water mark."""

from __future__ import annotations

import threading


class Gauge:
    """A count that goes up and down; ``peak`` is the highest it has been."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0
        self.peak = 0

    def add(self, amount: int = 1) -> None:
        with self._lock:
            self.value += amount
            self.peak = max(self.peak, self.value)

    def sub(self, amount: int = 1) -> None:
        with self._lock:
            self.value -= amount
