"""Running the agent as a service: systemd notifications, its watchdog, its unit, its health check.

The daemon talks to systemd through two objects, both no-ops outside systemd::

    notifier = ServiceNotifier.from_environ()          # $NOTIFY_SOCKET
    watchdog = Watchdog.from_environ(notifier)         # $WATCHDOG_USEC / $WATCHDOG_PID
    watchdog.start()
    main = Heartbeat("main loop", max_silence_s=10)
    watchdog.register("main", main.check)              # the loop calls main.beat()
    notifier.ready("serving 2 workflows")              # READY=1 + STATUS=
    ...
    notifier.stopping("draining"); watchdog.stop()     # STOPPING=1

``render_unit`` writes the systemd unit from a device profile (``edgefleet-agent
install-service``); ``python -m agent.service.healthcheck`` asks the device API's gRPC health
service (the container's ``HEALTHCHECK``). Operating guide: docs/service.md.

Errors: nothing here raises for systemd's sake — a failed notification is logged and returns
``False``. ``render_unit`` and ``UnitOptions.validate`` raise ``ValueError`` naming the option;
``Watchdog.register`` raises ``ValueError`` for a name already taken.
"""

from agent.service.notify import ServiceNotifier
from agent.service.unit import UnitOptions, render_unit
from agent.service.watchdog import Heartbeat, LivenessCheck, Watchdog, WatchdogState, WorkerBeat

__all__ = [
    "Heartbeat",
    "LivenessCheck",
    "ServiceNotifier",
    "UnitOptions",
    "Watchdog",
    "WatchdogState",
    "WorkerBeat",
    "render_unit",
]
