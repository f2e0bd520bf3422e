"""The demo's errors::

    DemoError
     ├── FleetStartError    the broker, the control plane or an agent did not start: the
     │                      message says which and why (mosquitto missing, port busy, …)
     ├── FleetTimeout       something waited for did not happen in time: says what, and which
     │                      devices lagged and where they were
     └── RolloutsUnavailable  the control plane has no rollout API (``/api/v1/rollouts``)

The control plane's own answers (4xx/5xx) surface as :class:`controlplane.client.ApiError`.
"""

from __future__ import annotations

__all__ = ["DemoError", "FleetStartError", "FleetTimeout", "RolloutsUnavailable"]


class DemoError(RuntimeError):
    """The demo (or a test on its harness) cannot go on."""


class FleetStartError(DemoError):
    """Part of the fleet did not start."""


class FleetTimeout(DemoError):
    """A wait on the fleet ran past its deadline."""


class RolloutsUnavailable(DemoError):
    """The control plane does not serve ``/api/v1/rollouts`` (404/405)."""
