"""``ServiceNotifier`` against a real notification socket, as systemd's manager receives it."""

from __future__ import annotations

import logging
import socket

import pytest

from agent.service import ServiceNotifier
from tests.service.helpers import NotifyReceiver


def test_the_service_lifecycle_arrives_as_systemd_expects_it(notify_socket: NotifyReceiver) -> None:
    with ServiceNotifier.from_environ({"NOTIFY_SOCKET": notify_socket.address}) as notifier:
        assert notifier.enabled
        assert notifier.ready("serving 2 workflows on x86-cpu")
        assert notifier.status("line3: 120 runs, 0 failed")
        assert notifier.watchdog()
        assert notifier.stopping("draining 3 runs in flight")
    assert notify_socket.receive() == "READY=1\nSTATUS=serving 2 workflows on x86-cpu"
    assert notify_socket.receive() == "STATUS=line3: 120 runs, 0 failed"
    assert notify_socket.receive() == "WATCHDOG=1"
    assert notify_socket.receive() == "STOPPING=1\nSTATUS=draining 3 runs in flight"
    assert notify_socket.pending() == []


def test_abstract_namespace_sockets_are_reached(abstract_notify_socket: NotifyReceiver) -> None:
    assert abstract_notify_socket.address.startswith("@")
    with ServiceNotifier(abstract_notify_socket.address) as notifier:
        assert notifier.ready()
        assert notifier.extend_timeout(90)
    assert abstract_notify_socket.receive() == "READY=1"
    assert abstract_notify_socket.receive() == "EXTEND_TIMEOUT_USEC=90000000"


def test_a_status_is_one_line_and_is_remembered(notify_socket: NotifyReceiver) -> None:
    with ServiceNotifier(notify_socket.address) as notifier:
        notifier.status("model surface_inspection:\n  loading\tengine")
        assert notifier.last_status == "model surface_inspection: loading engine"
        notifier.status("x" * 5000)
    assert notify_socket.receive() == "STATUS=model surface_inspection: loading engine"
    long_line = notify_socket.receive()
    assert long_line.startswith("STATUS=xxx")
    assert len(long_line) < 1100


def test_outside_systemd_every_call_is_a_quiet_no_op(caplog: pytest.LogCaptureFixture) -> None:
    notifier = ServiceNotifier.from_environ({})
    assert not notifier.enabled
    assert not notifier.ready("serving")
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert caplog.records == []


def test_an_unusable_address_disables_the_notifier_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    notifier = ServiceNotifier("vsock:2:1234")
    assert not notifier.enabled
    assert not notifier.ready()
    assert "NOTIFY_SOCKET='vsock:2:1234'" in caplog.text


def test_a_vanished_socket_never_raises_and_is_logged_once(
    notify_socket: NotifyReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = ServiceNotifier(notify_socket.address)
    assert notifier.status("up")
    assert notify_socket.receive() == "STATUS=up"
    notify_socket.sock.close()
    caplog.set_level(logging.INFO, logger="agent.service.notify")
    assert not notifier.watchdog()
    assert not notifier.watchdog()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert notify_socket.address in warnings[0].getMessage()
    # systemd's socket comes back (a manager re-exec): notifications work again, and it is said
    again = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    import os

    os.unlink(notify_socket.address)
    again.bind(notify_socket.address)
    try:
        assert notifier.watchdog()
        assert again.recv(100) == b"WATCHDOG=1"
        assert "works again" in caplog.text
    finally:
        again.close()
        notifier.close()
