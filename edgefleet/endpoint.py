"""Endpoint strings: which kind of endpoint, reached how.

=======================================  ==================  ==========================================
form                                     kind                transport
=======================================  ==================  ==========================================
``unix:///var/lib/edgefleet/device.sock`` device             gRPC on the agent's Unix socket (no token)
``unix:/path`` or ``unix:relative/path``  device             the same
``grpcs://host:port`` or ``host:port``    device             gRPC over TCP with TLS, bearer token
``https://host[:port]`` / ``http://…``    control plane      its REST API (dry runs), bearer token
=======================================  ==================  ==========================================

The device API serves TCP only with TLS, so ``grpc://`` (plaintext) is refused here rather than
failing at the first call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from edgefleet.errors import InvalidEndpoint

__all__ = ["Endpoint", "EndpointKind", "parse_endpoint"]

EndpointKind = Literal["device", "control_plane"]

FORMS = (
    "unix:///path/to/device.sock, unix:/path/to/device.sock, grpcs://host:port, host:port "
    "(a device), or http(s)://host[:port] (the control plane)"
)

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed endpoint.

    ``target`` is what the transport dials: a gRPC target (``unix:/path``, ``host:port``) or the
    control plane's base URL without a trailing slash. ``text`` is the string as given, used in
    error messages.
    """

    kind: EndpointKind
    transport: Literal["unix", "tls", "http"]
    target: str
    text: str

    def describe(self) -> str:
        """``device at unix:/run/…`` / ``control plane at https://…``: how errors name it."""
        kind = "device" if self.kind == "device" else "control plane"
        return f"{kind} at {self.text}"


def parse_endpoint(text: str) -> Endpoint:
    """The endpoint ``text`` names; :class:`~edgefleet.errors.InvalidEndpoint` listing the known
    forms when it has none of them."""
    value = text.strip()
    lowered = value.lower()
    if lowered.startswith("unix:"):
        rest = value[len("unix:") :]
        if rest.startswith("//"):
            rest = rest[2:]
            if not rest.startswith("/"):
                raise InvalidEndpoint(
                    f"endpoint {text!r}: unix:// takes an absolute path (unix:///var/lib/edgefleet/device.sock)"
                )
        if not rest:
            raise InvalidEndpoint(f"endpoint {text!r}: no socket path")
        return Endpoint("device", "unix", f"unix:{rest}", value)
    if lowered.startswith(("http://", "https://")):
        if not value.split("://", 1)[1].strip("/"):
            raise InvalidEndpoint(f"endpoint {text!r}: no host")
        return Endpoint("control_plane", "http", value.rstrip("/"), value)
    if lowered.startswith("grpc://"):
        raise InvalidEndpoint(
            f"endpoint {text!r}: the device API serves TCP only with TLS; use grpcs://host:port"
        )
    address = value[len("grpcs://") :] if lowered.startswith("grpcs://") else value
    match = _HOST_PORT.match(address)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise InvalidEndpoint(f"endpoint {text!r} is none of: {FORMS}")
    return Endpoint("device", "tls", address, value)
