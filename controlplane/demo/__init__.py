"""``edgefleet demo``: edgefleet end to end on one machine.

- :mod:`controlplane.demo.fleet` — the harness: a Mosquitto broker, the control plane and N
  agents with synthetic cameras, in one process (the demo and end-to-end tests run on it);
- :mod:`controlplane.demo.story` — the fleet demo: model v1 on six stations, then a rollout of
  v2 that promotes and one of v3 that aborts at canary;
- :mod:`controlplane.demo.station` — ``edgefleet demo --local``: the workflow engine on the
  examples, the brief's ``order_processing``, and one inspection station, with no control plane.
"""

from __future__ import annotations

from controlplane.demo.errors import DemoError, FleetStartError, FleetTimeout, RolloutsUnavailable
from controlplane.demo.fleet import Fleet, FleetConfig

__all__ = ["DemoError", "Fleet", "FleetConfig", "FleetStartError", "FleetTimeout", "RolloutsUnavailable"]
