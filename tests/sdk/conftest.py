"""The SDK against real servers: the device API of a real agent (Unix socket, and TCP with TLS and
a token) and a live control plane. The fixtures are the device API's and the control plane's own."""

from __future__ import annotations

import cv2

from agent.sources.synthetic import SurfaceGenerator
from tests.controlplane.conftest import sqlite_control_plane
from tests.device_api.conftest import agent, host, server, settings, socket_dir
from tests.device_api.test_tcp import pki, tcp_server

__all__ = [
    "agent",
    "host",
    "part_jpeg",
    "pki",
    "server",
    "settings",
    "socket_dir",
    "sqlite_control_plane",
    "tcp_server",
]


def part_jpeg(defective: bool) -> bytes:
    """A camera frame (JPEG) of a synthetic part, good or defective."""
    generator = SurfaceGenerator(seed=4321)
    sample = next(s for s in (generator.sample(i) for i in range(50)) if s.defective == defective)
    ok, encoded = cv2.imencode(".jpg", sample.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()
