"""``python -m agent.service.healthcheck``: is the agent's device API serving? Exit 0 or 1.

Asks the standard gRPC health service (``grpc.health.v1.Health/Check``) of the agent's device
API on its Unix socket, ``<data dir>/device.sock``. For container health checks
(``HEALTHCHECK`` in ``Dockerfile.jetson``), monitoring scripts and people::

    python -m agent.service.healthcheck                      # /var/lib/edgefleet/device.sock
    python -m agent.service.healthcheck --socket /srv/edgefleet/device.sock --service edgefleet.v1.Device

Exit codes: 0 the service answers ``SERVING``; 1 anything else — ``NOT_SERVING``, an unknown
service, no socket, nothing listening, no answer in time — with one line on stderr that says
which; 2 bad usage. The socket defaults to ``$EDGEFLEET_DATA_DIR/device.sock``, else
``/var/lib/edgefleet/device.sock``.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path("/var/lib/edgefleet")
SOCKET_NAME = "device.sock"


@dataclass(frozen=True)
class HealthResult:
    """The answer to one health check."""

    healthy: bool
    """True only when the server answered ``SERVING``."""
    status: str
    """``SERVING``, ``NOT_SERVING``, ``UNKNOWN``, ``SERVICE_UNKNOWN`` or ``UNREACHABLE``."""
    message: str
    """One line for a person: what was asked, and what came back or why nothing did."""


def default_socket(environ: Mapping[str, str] | None = None) -> Path:
    """``$EDGEFLEET_DATA_DIR/device.sock``, else ``/var/lib/edgefleet/device.sock``."""
    env = os.environ if environ is None else environ
    data_dir = env.get("EDGEFLEET_DATA_DIR")
    return (Path(data_dir) if data_dir else DEFAULT_DATA_DIR) / SOCKET_NAME


def check_health(socket_path: Path, service: str = "", timeout_s: float = 3.0) -> HealthResult:
    """Ask the ``grpc.health.v1`` service on ``socket_path`` about ``service`` (``""``: the
    server as a whole). Never raises for what the server does or does not do: every outcome is
    a :class:`HealthResult`."""
    target = f"unix:{socket_path.absolute()}"
    what = f"service {service!r}" if service else "the server"
    try:
        mode = socket_path.stat().st_mode
    except FileNotFoundError:
        return HealthResult(
            False,
            "UNREACHABLE",
            f"no socket at {socket_path}: the agent is not running, or its device API listens elsewhere",
        )
    except OSError as exc:
        return HealthResult(False, "UNREACHABLE", f"cannot reach {socket_path}: {exc.strerror or exc}")
    if not stat.S_ISSOCK(mode):
        return HealthResult(False, "UNREACHABLE", f"{socket_path} is not a socket")

    import grpc
    from grpc_health.v1 import health_pb2  # type: ignore[import-untyped]

    try:
        with grpc.insecure_channel(target) as channel:
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            response = check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.RpcError as exc:
        # what a failed call raises is also a grpc.Call, which the stubs cannot express
        code: grpc.StatusCode | None = getattr(exc, "code", lambda: None)()
        details: str = getattr(exc, "details", lambda: None)() or str(exc)
        if code == grpc.StatusCode.NOT_FOUND:
            return HealthResult(False, "SERVICE_UNKNOWN", f"{target}: the server does not know {what}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return HealthResult(False, "UNREACHABLE", f"{target}: no answer within {timeout_s:g} s")
        if code == grpc.StatusCode.UNAVAILABLE:
            return HealthResult(
                False, "UNREACHABLE", f"{target}: nothing answers (is the agent running?): {details}"
            )
        name = code.name if code is not None else "error"
        return HealthResult(False, "UNREACHABLE", f"{target}: health check failed ({name}): {details}")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    healthy = response.status == health_pb2.HealthCheckResponse.SERVING
    return HealthResult(healthy, str(status), f"{target}: {what} is {status}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one check; print the answer (stdout when healthy, stderr otherwise); return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m agent.service.healthcheck",
        description="Exit 0 when the edgefleet agent's device API answers SERVING to a gRPC health check.",
    )
    parser.add_argument("--socket", type=Path, default=None, help="Default: <data dir>/device.sock.")
    parser.add_argument("--service", default="", help="Service name to ask about; default: the server.")
    parser.add_argument("--timeout", type=float, default=3.0, help="Seconds to wait for the answer.")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # gRPC's own log lines would only repeat ours
    result = check_health(args.socket or default_socket(), args.service, args.timeout)
    print(result.message, file=sys.stdout if result.healthy else sys.stderr)
    return 0 if result.healthy else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
