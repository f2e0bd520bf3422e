"""The agent's systemd unit, rendered from a device profile.

``render_unit`` writes ``edgefleet-agent.service`` for one profile: ``Type=notify`` with a
watchdog, restarts on failure with a start-rate limit, a state directory, a dedicated
unprivileged user in the groups that cameras and GPUs need, hardening, and the profile's
``service`` limits (``MemoryMax=``, ``MemoryHigh=``, ``CPUQuota=``, ``TasksMax=``). The text
depends only on the profile and :class:`UnitOptions`, so that the same inputs give the same
file (``deploy/systemd/edgefleet-agent.service`` is one such rendering).

Invalid options (a relative path, whitespace in a path, a user name systemd would refuse)
raise ``ValueError`` naming the option.
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from agent.profiles.model import Profile

UNIT_NAME = "edgefleet-agent.service"
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_CONFIG = Path("/etc/edgefleet/agent.yaml")
STATE_DIRECTORY = "edgefleet"
"""Under ``/var/lib``: the agent's default ``data_dir`` (``/var/lib/edgefleet``)."""

_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")


def default_exec_path() -> Path:
    """The ``edgefleet-agent`` of this installation: beside the running interpreter (a virtual
    environment's ``bin/``), else the one on ``PATH``, else ``/usr/local/bin/edgefleet-agent``."""
    beside = Path(sys.executable).parent / "edgefleet-agent"
    if beside.is_file():
        return beside.absolute()
    found = shutil.which("edgefleet-agent")
    return Path(found).absolute() if found else Path("/usr/local/bin/edgefleet-agent")


@dataclass(frozen=True)
class UnitOptions:
    """What the unit says besides the profile's limits."""

    exec_path: Path = field(default_factory=default_exec_path)
    """The ``edgefleet-agent`` executable (absolute)."""
    config: Path = DEFAULT_CONFIG
    """The agent's config file (absolute)."""
    user: str = "edgefleet"
    group: str = "edgefleet"
    supplementary_groups: tuple[str, ...] = ("video", "render")
    """``video``: V4L2 cameras and, on a Jetson, the GPU's device nodes; ``render``: GPU render nodes."""
    watchdog_sec: int = 30
    """``WatchdogSec=``: systemd restarts the agent when no healthy ping came for this long."""
    restart_sec: int = 5
    start_limit_interval_sec: int = 600
    start_limit_burst: int = 5
    """At most this many starts in ``start_limit_interval_sec``; then the unit stays failed."""
    timeout_start_sec: int = 300
    """Time to load models and compile workflows before ``READY=1``."""
    timeout_stop_sec: int = 90
    """Time to drain in-flight runs after SIGTERM before SIGKILL."""

    def validate(self) -> None:
        """``ValueError`` naming the first option systemd or the agent could not use."""
        for name, path in (("exec_path", self.exec_path), ("config", self.config)):
            if not path.is_absolute():
                raise ValueError(f"{name}: {path} is not an absolute path")
            if any(ch.isspace() for ch in str(path)) or '"' in str(path) or "\\" in str(path):
                raise ValueError(f"{name}: {path} contains whitespace, quotes or backslashes")
        for name, value in (("user", self.user), ("group", self.group)):
            if not _NAME.match(value):
                raise ValueError(f"{name}: {value!r} is not a valid user or group name")
        for value in self.supplementary_groups:
            if not _NAME.match(value):
                raise ValueError(f"supplementary_groups: {value!r} is not a valid group name")
        for name in (
            "watchdog_sec",
            "restart_sec",
            "start_limit_interval_sec",
            "start_limit_burst",
            "timeout_start_sec",
            "timeout_stop_sec",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")


def _escape(value: str) -> str:
    """A value for a setting that expands specifiers (``ExecStart=``, ``Description=``): ``%``
    is doubled so that systemd reads it literally. (``CPUQuota=`` expands none.)"""
    return value.replace("%", "%%")


def render_unit(profile: Profile, options: UnitOptions | None = None) -> str:
    """The unit file's text for ``profile``; ``ValueError`` for unusable ``options``."""
    options = options or UnitOptions()
    options.validate()
    limits = profile.service
    source = f"device_profiles/{profile.source.name}" if profile.source is not None else "its profile"
    groups = " ".join(options.supplementary_groups)
    return f"""\
# edgefleet agent: runs ML workflow graphs on this device.
# Rendered by `edgefleet-agent install-service` for device profile '{profile.name}'
# ({source}). Render it again rather than editing it; keep local changes
# in a drop-in (`systemctl edit edgefleet-agent`). Operating it: docs/service.md.

[Unit]
Description=edgefleet agent ({_escape(profile.name)})
After=network-online.target time-sync.target
Wants=network-online.target
StartLimitIntervalSec={options.start_limit_interval_sec}
StartLimitBurst={options.start_limit_burst}

[Service]
Type=notify
NotifyAccess=main
ExecStart={_escape(str(options.exec_path))} serve --config {_escape(str(options.config))}
Restart=on-failure
RestartSec={options.restart_sec}
WatchdogSec={options.watchdog_sec}
TimeoutStartSec={options.timeout_start_sec}
TimeoutStopSec={options.timeout_stop_sec}
KillMode=mixed

User={options.user}
Group={options.group}
SupplementaryGroups={groups}
StateDirectory={STATE_DIRECTORY}
StateDirectoryMode=0750
ConfigurationDirectory=edgefleet
ConfigurationDirectoryMode=0755
UMask=0027

# limits from the device profile's `service` section
MemoryHigh={limits.memory_high_mb}M
MemoryMax={limits.memory_max_mb}M
CPUQuota={limits.cpu_quota_percent}%
TasksMax={limits.tasks_max}

# hardening: see docs/service.md for what each line allows and why the rest stay open
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateIPC=yes
PrivateMounts=yes
ProtectHostname=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
KeyringMode=private
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"""
