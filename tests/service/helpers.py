"""Helpers of the service tests: what systemd's manager sees, and waiting without timing."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

WAIT_S = 30.0
"""How long a test waits for something that should happen at once (never asserted on)."""


class NotifyReceiver:
    """What systemd's manager sees: one datagram per notification, in order."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address
        """The ``$NOTIFY_SOCKET`` value: a path, or ``@name`` for an abstract socket."""

    def receive(self, timeout: float = WAIT_S) -> str:
        """The next datagram; fails the test when none comes."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except TimeoutError:
            pytest.fail("no notification arrived")

    def pending(self) -> list[str]:
        """Every datagram already queued, without waiting: a send that returned has queued its
        datagram, so this is exact right after the sending call."""
        messages = []
        self.sock.setblocking(False)
        while True:
            try:
                messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return messages


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail the test (naming ``what``) after ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)
