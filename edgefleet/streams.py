"""Streams: what :meth:`WorkflowClient.inspect` and :meth:`WorkflowClient.watch_events` return."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["Stream"]

T = TypeVar("T")


class Stream(Iterator[T], Generic[T]):
    """An open call that yields items as the endpoint sends them.

    Iterate it; the iteration ends when the endpoint ends the call or after :meth:`close`. Errors
    of the call are raised from the iteration as :class:`~edgefleet.errors.EdgefleetError`.
    :meth:`close` cancels the call and may be called from any thread (a thread blocked waiting
    for the next item then sees the iteration end); leaving a ``with`` block closes it too.
    Closing twice does nothing.
    """

    def __init__(self, items: Iterator[T], cancel: Callable[[], None]) -> None:
        self._items = items
        self._cancel = cancel
        self._lock = threading.Lock()
        self._closed = False

    def __iter__(self) -> Stream[T]:
        return self

    def __next__(self) -> T:
        return next(self._items)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Cancel the call; what was not received yet is dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._cancel()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
