"""A real ``$NOTIFY_SOCKET``: a datagram socket bound where systemd would listen."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.helpers import NotifyReceiver


@pytest.fixture
def notify_socket() -> Iterator[NotifyReceiver]:
    # a short directory: socket paths are limited to 107 bytes
    directory = Path(tempfile.mkdtemp(prefix="ef-notify-"))
    path = directory / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield NotifyReceiver(sock, str(path))
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def abstract_notify_socket() -> Iterator[NotifyReceiver]:
    name = f"edgefleet-test-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        yield NotifyReceiver(sock, "@" + name)
    finally:
        sock.close()
