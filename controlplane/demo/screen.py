"""The demo's screen: lines that stay, and one live area redrawn in place.

On a terminal the live area is a :class:`rich.live.Live` (transient: what it last showed goes
away when the block ends, the lines printed meanwhile stay). Elsewhere (a pipe, a CI log, a
test) nothing is redrawn: the live area's one-line summary is printed when it changes, at most
every ``every_s`` seconds, so a log shows progress without a flood.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

__all__ = ["Screen"]


class Screen:
    def __init__(self, console: Console, every_s: float = 5.0) -> None:
        self.console = console
        self.every_s = every_s
        self._live: Live | None = None
        self._last_line = ""
        self._last_at = 0.0
        self.started = time.monotonic()

    def stamp(self) -> Text:
        return Text(f"[{time.monotonic() - self.started:5.1f}s] ", style="dim")

    @contextlib.contextmanager
    def live(self) -> Iterator[Screen]:
        """The block during which :meth:`show` draws (on a terminal, in place)."""
        self._last_line = ""
        if not self.console.is_terminal:
            yield self
            return
        with Live(console=self.console, transient=True, refresh_per_second=4) as live:
            self._live = live
            try:
                yield self
            finally:
                self._live = None

    def show(self, renderable: RenderableType, line: str) -> None:
        """Draw ``renderable`` in the live area; off a terminal print ``line`` instead, when it
        changed and ``every_s`` has passed since the last one."""
        if self._live is not None:
            self._live.update(renderable)
            return
        now = time.monotonic()
        if line != self._last_line and now - self._last_at >= self.every_s:
            self.console.print(self.stamp() + Text(line, style="dim"))
            self._last_line, self._last_at = line, now

    def say(self, line: str | Text) -> None:
        """A line that stays, stamped with the time since the screen was made."""
        self.console.print(self.stamp() + (line if isinstance(line, Text) else Text.from_markup(line)))
