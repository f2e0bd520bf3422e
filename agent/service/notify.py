"""Telling systemd how the agent is doing: the ``sd_notify`` protocol, in a few lines.

systemd hands a ``Type=notify`` service the address of a datagram socket in ``$NOTIFY_SOCKET``:
a filesystem path (``/run/systemd/notify``) or, starting with ``@``, a Linux abstract-namespace
name. Each message is one datagram of newline-separated ``KEY=VALUE`` assignments
(``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, ``STOPPING=1``). Outside systemd — no
``$NOTIFY_SOCKET`` — every call is a no-op, so the agent runs the same from a shell, in a
container or under systemd.

edgefleet speaks the protocol itself rather than through a library: it is one ``sendto``, the
pure-Python ``sdnotify`` package has not been released since 2017, and the bindings that wrap
``libsystemd`` (``cysystemd``, ``systemd-python``) need a compiler and the library's headers on
every device for the same one call.

A notification never raises: systemd going away must not take the agent with it. A failed
send is logged once and reported by the method's return value.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger(__name__)

_MAX_STATUS_CHARS = 1000
"""``systemctl status`` shows one line; longer texts are cut to keep datagrams small."""


def _socket_address(value: str) -> str | bytes | None:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value, or ``None`` for an unusable one."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_STATUS_CHARS else line[: _MAX_STATUS_CHARS - 1] + "…"


class ServiceNotifier:
    """An ``sd_notify`` client bound to one notification socket (or to none: a no-op).

    Thread-safe. ``ready``, ``status``, ``watchdog``, ``stopping`` and ``notify`` return
    ``True`` when the datagram was handed to the socket, ``False`` when there is no socket or
    the send failed. The last status text sent is kept in :attr:`last_status`.
    """

    def __init__(self, socket_path: str | None) -> None:
        """``socket_path`` is a ``$NOTIFY_SOCKET`` value (``/path`` or ``@abstract``); ``None``
        or an empty string makes a notifier that sends nothing."""
        self.socket_path = socket_path or None
        self._address = _socket_address(socket_path) if socket_path else None
        if socket_path and self._address is None:
            log.warning(
                "NOTIFY_SOCKET=%r is neither a path nor an abstract socket name: systemd will not "
                "hear from the agent",
                socket_path,
            )
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._failed = False
        self.last_status: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ServiceNotifier:
        """The notifier for ``$NOTIFY_SOCKET`` of ``environ`` (default: this process's)."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        """Whether there is a socket to notify (the agent runs under ``Type=notify``)."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode()
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.sendto(payload, self._address)
            except OSError as exc:
                if not self._failed:
                    log.warning("cannot notify systemd at %s: %s", self.socket_path, exc)
                self._failed = True
                return False
            if self._failed:
                log.info("notifying systemd at %s works again", self.socket_path)
                self._failed = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """The agent serves: ``READY=1``, with a status line when given. systemd counts the
        service as started from here (``systemctl start`` returns)."""
        if status is None:
            return self.notify("READY=1")
        self.last_status = _one_line(status)
        return self.notify("READY=1", f"STATUS={self.last_status}")

    def status(self, text: str) -> bool:
        """A line for people (``systemctl status``); newlines are folded into spaces."""
        self.last_status = _one_line(text)
        return self.notify(f"STATUS={self.last_status}")

    def watchdog(self) -> bool:
        """One keep-alive ping (``WATCHDOG=1``). Send it only from :class:`~agent.service.watchdog.Watchdog`,
        which pings only while the agent is healthy."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask systemd for ``seconds`` more before it gives up on a start or a stop in progress
        (``EXTEND_TIMEOUT_USEC``): a long model load or a long drain."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1_000_000))}")

    def stopping(self, status: str | None = None) -> bool:
        """The agent is shutting down (``STOPPING=1``), with a status line when given."""
        if status is None:
            return self.notify("STOPPING=1")
        self.last_status = _one_line(status)
        return self.notify("STOPPING=1", f"STATUS={self.last_status}")

    def close(self) -> None:
        """Close the socket; a later notification opens a new one."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def __enter__(self) -> ServiceNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
