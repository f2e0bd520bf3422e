"""A whole edgefleet fleet in one process: broker, control plane and N agents.

:class:`Fleet` is the harness the demo (``edgefleet demo``) and end-to-end tests run on::

    with Fleet(FleetConfig(workdir, agents=6, fps=4)) as fleet:   # start() … stop()
        fleet.upload_model(MODEL_V1)
        workflow = fleet.upload_workflow(WORKFLOW_FILE)
        fleet.assign_workflow(WORKFLOW_ID, workflow["version"])
        fleet.wait_running(workflow_version=1, model_sha256=sha)

What runs, all on 127.0.0.1:

- **Mosquitto** (:class:`controlplane.broker.process.MosquittoBroker`) on a free port, with the
  configuration ``edgefleet broker-config`` writes: password logins, the per-device ACL;
- the **control plane** (:class:`controlplane.demo.server.ServedControlPlane`) on SQLite under
  ``<workdir>/controlplane``, its MQTT bridge connected to the broker; it rewrites the broker's
  password file at every enrollment and makes it reload (SIGHUP through the broker's pid file);
- an **admin token** in ``<workdir>/admin-token``; every operator call goes through the REST API
  with it (:class:`controlplane.client.ControlPlaneClient`), as ``edgefleet`` would;
- **N agents** (:class:`agent.daemon.Agent`), ``cam-1`` … ``cam-N``, enrolled with the labels
  ``line=<line>`` and ``station=<k>`` (members of the group ``config.group``), each with its own
  data directory under ``<workdir>/agents/``, a ``sync`` section (telemetry every
  ``telemetry_interval_s``) and a synthetic camera at ``fps`` (seed = station) bound to the
  workflow **by id**: frames flow once the control plane assigns it.

:meth:`Fleet.stop` stops the agents first (their final telemetry goes to their outboxes), then the
control plane, then the broker; it is idempotent and runs on any exit of the ``with`` block, a
KeyboardInterrupt included. The work directory is wiped at start when it holds an earlier run
(marked by ``.edgefleet-demo``); any other non-empty directory is refused.
:meth:`Fleet.stop_control_plane` and :meth:`Fleet.start_control_plane` (or
:meth:`Fleet.restart_control_plane`) stop and serve the control plane alone, from the same data on
the same port, under running agents.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from agent.daemon import Agent
from controlplane.broker.process import HOST, MosquittoBroker, MosquittoError, MosquittoUnavailable
from controlplane.client import ControlPlaneClient
from controlplane.demo.agents import agent_settings, write_demo_profile
from controlplane.demo.errors import FleetStartError, FleetTimeout
from controlplane.demo.server import ServedControlPlane
from controlplane.settings import ControlPlaneSettings

__all__ = ["REPO", "WORKFLOW_FILE", "WORKFLOW_ID", "DeviceView", "Fleet", "FleetConfig", "prepare_workdir"]

log = logging.getLogger("edgefleet.demo")

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_FILE = REPO / "examples" / "workflows" / "surface_inspection.json"
WORKFLOW_ID = "surface_inspection"
MARKER = ".edgefleet-demo"
POLL_S = 0.5

Json = dict[str, Any]


@dataclass(frozen=True)
class FleetConfig:
    """What to run. ``controlplane``: extra :class:`ControlPlaneSettings` fields (e.g. a faster
    controller tick); the broker, database and listen address are the harness's own."""

    workdir: Path
    agents: int = 6
    fps: float = 4.0
    defect_rate: float = 0.5
    telemetry_interval_s: float = 1.0
    line: str = "1"
    group: str = "line-1"
    port: int = 0
    controlplane: Mapping[str, Any] = field(default_factory=dict)
    prepare: bool = True
    """Wipe or create ``workdir`` at start (:func:`prepare_workdir`); False: the caller did."""

    def __post_init__(self) -> None:
        if not 1 <= self.agents <= 50:
            raise ValueError(f"agents must be 1 to 50, not {self.agents}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, not {self.fps}")


@dataclass(frozen=True)
class DeviceView:
    """One device as the control plane sees it: its reported state for the workflow."""

    device_id: str
    online: bool | None
    phase: str
    generation: int
    workflow_version: int
    model_sha256: str
    rollout_id: str
    role: str
    shadow_version: int
    error: str

    @classmethod
    def of(cls, device: Json, workflow_id: str = WORKFLOW_ID) -> DeviceView:
        reported = device.get("reported_state") or {}
        statuses: list[Json] = reported.get("workflows", [])
        status: Json = next((w for w in statuses if w.get("workflow_id") == workflow_id), {})
        lineage = status.get("lineage", {})
        return cls(
            device_id=str(device["id"]),
            online=device.get("online"),
            phase=str(reported.get("phase", "—")),
            generation=int(reported.get("generation", 0)),
            workflow_version=int(status.get("active_version", 0)),
            model_sha256=str(lineage.get("model_sha256", "")),
            rollout_id=str(status.get("rollout_id") or lineage.get("rollout_id", "")),
            role=str(status.get("role") or lineage.get("cohort", "")),
            shadow_version=int(status.get("shadow_version", 0)),
            error=str(reported.get("error", "")),
        )


def prepare_workdir(workdir: Path) -> None:
    """Make ``workdir`` an empty demo work directory: create it, or wipe an earlier run's (marked
    by ``.edgefleet-demo``); :class:`FleetStartError` for a non-empty directory without the mark."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise FleetStartError(
                f"{workdir} is not empty and holds no earlier demo run ({MARKER}): "
                "give an empty or new --workdir"
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("a work directory of edgefleet demo; wiped at the next run\n")


class Fleet:
    """Broker, control plane and agents of ``config`` (see the module docstring)."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.workdir = config.workdir.resolve()
        self.broker: MosquittoBroker | None = None
        self.server: ServedControlPlane | None = None
        self.token = ""
        self._api: ControlPlaneClient | None = None
        self._controlplane_port: int | None = None
        self.agents: dict[str, Agent] = {}

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self, on_step: Callable[[str], None] | None = None) -> Fleet:
        """Start everything; ``on_step`` hears what is being started. On failure what was started
        is stopped again and :class:`FleetStartError` says what failed."""
        say = on_step or (lambda _message: None)
        try:
            if self.config.prepare:
                prepare_workdir(self.workdir)
            say("broker")
            try:
                self.broker = MosquittoBroker.start(self.workdir / "broker", persistence=False)
            except (MosquittoUnavailable, MosquittoError) as exc:  # the message says what to do
                raise FleetStartError(str(exc)) from exc
            say("control plane")
            self.server = ServedControlPlane(self._controlplane_settings(self.broker), self.config.port)
            self.server.start()
            self.token = self.server.write_admin_token(self.workdir / "admin-token")
            self._api = ControlPlaneClient(self.server.url, self.token)
            self.api.request(
                "POST",
                "/api/v1/groups",
                json={"name": self.config.group, "selector": {"line": self.config.line}},
            )
            say(f"{self.config.agents} agents")
            profiles = write_demo_profile(self.workdir / "profiles")
            for station in range(1, self.config.agents + 1):
                self._start_agent(station, profiles)
        except BaseException:
            self.stop()
            raise
        return self

    def _controlplane_settings(self, broker: MosquittoBroker) -> ControlPlaneSettings:
        data_dir = self.workdir / "controlplane"
        fixed: dict[str, Any] = {
            "data_dir": data_dir,
            "database_url": f"sqlite:///{data_dir / 'controlplane.db'}",
            "host": HOST,
            "workers": 1,
            "public_url": None,
            "tls_cert": None,
            "tls_key": None,
            "signing_key": None,
            "schema_dirs": [REPO / "examples" / "schemas"],
            "mqtt_host": broker.host,
            "mqtt_port": broker.port,
            "mqtt_username": broker.control_plane_user,
            "mqtt_password": broker.control_plane_password,
            "mqtt_tls": False,
            "mqtt_ca_file": None,
            "mqtt_cert_file": None,
            "mqtt_key_file": None,
            "mqtt_public_host": None,
            "mqtt_public_port": None,
            "broker_password_file": broker.password_file,
            "broker_pid_file": broker.pid_file,
            "migrate_on_start": True,
            "log_json": False,
        }
        return ControlPlaneSettings(**{**self.config.controlplane, **fixed})

    def _start_agent(self, station: int, profiles: Path) -> None:
        device_id = f"cam-{station}"
        labels = {"line": self.config.line, "station": str(station)}
        token = self.api.create_enrollment_token(labels=labels, note=f"demo {device_id}")["token"]
        enrolled = self.api.request(
            "POST", "/api/v1/enroll", json={"token": token, "device_id": device_id, "hostname": device_id}
        ).json()
        data_dir = self.workdir / "agents" / device_id
        data_dir.mkdir(parents=True)
        credentials = {
            "device_id": enrolled["device_id"],
            "credential": enrolled["credential"],
            "signing_public_key": enrolled["signing_public_key"],
            "signing_key_id": enrolled.get("signing_key_id"),
            "api_url": enrolled["api_url"],
            "mqtt": enrolled["mqtt"],
        }
        path = data_dir / "credentials.json"
        path.touch(mode=0o600)
        path.write_text(json.dumps(credentials, indent=2) + "\n")
        settings = agent_settings(
            device_id,
            data_dir,
            profiles_dir=profiles,
            workflow_id=WORKFLOW_ID,
            fps=self.config.fps,
            seed=station,
            defect_rate=self.config.defect_rate,
            telemetry_interval_s=self.config.telemetry_interval_s,
        )
        agent = Agent(settings)
        self.agents[device_id] = agent  # stopped by stop() even if start() fails half-way
        try:
            agent.start()
        except Exception as exc:
            raise FleetStartError(f"agent {device_id} did not start: {exc}") from exc

    def stop(self) -> None:
        """Agents, then the control plane, then the broker; idempotent, never raises for one
        part that will not stop (logged), so the others still stop."""
        agents, self.agents = self.agents, {}
        for device_id, agent in agents.items():
            try:
                agent.stop()
            except Exception:
                log.exception("agent %s did not stop cleanly", device_id)
        api, self._api = self._api, None
        if api is not None:
            api.close()
        server, self.server = self.server, None
        if server is not None:
            server.stop()
        broker, self.broker = self.broker, None
        if broker is not None:
            try:
                broker.stop()
            except MosquittoError:
                log.exception("the broker did not stop cleanly")

    def stop_control_plane(self) -> None:
        """Stop the control plane alone, as an operator stopping ``edgefleet serve`` would: the
        broker and the agents keep running (they retry what they need from it) until
        :meth:`start_control_plane` serves it again."""
        if self.server is None:
            raise RuntimeError("the control plane is not running")
        self._controlplane_port = self.server.settings.port
        api, self._api = self._api, None
        if api is not None:
            api.close()
        server, self.server = self.server, None
        server.stop()

    def start_control_plane(self) -> None:
        """Serve the stopped control plane again from the same data directory (database,
        artifacts, signing key) on the same port, so the ``api_url`` the agents were enrolled with
        stays valid; the operator client is replaced (same token). :class:`FleetStartError` when it
        does not come back."""
        if self.server is not None or self.broker is None or self._controlplane_port is None:
            raise RuntimeError("start_control_plane() follows stop_control_plane() on a started fleet")
        server = ServedControlPlane(self._controlplane_settings(self.broker), self._controlplane_port)
        server.start()
        self.server = server
        self._api = ControlPlaneClient(server.url, self.token)

    def restart_control_plane(self) -> None:
        """:meth:`stop_control_plane`, then :meth:`start_control_plane`."""
        self.stop_control_plane()
        self.start_control_plane()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- the operator's calls (REST, with the admin token) ---------------------------------------

    @property
    def api(self) -> ControlPlaneClient:
        if self._api is None:
            raise RuntimeError("the fleet is not started")
        return self._api

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("the fleet is not started")
        return self.server.url

    @property
    def device_ids(self) -> list[str]:
        return [f"cam-{station}" for station in range(1, self.config.agents + 1)]

    def upload_model(self, path: Path, name: str = WORKFLOW_ID, version: int | None = None) -> Json:
        return self.api.upload_model(name, path, version=version, description=path.name)

    def upload_workflow(self, path: Path = WORKFLOW_FILE) -> Json:
        kind = "application/yaml" if path.suffix in (".yaml", ".yml") else "application/json"
        return self.api.push_workflow(path.read_text(), kind)

    def create_thresholds(self, name: str, values: Mapping[str, float]) -> Json:
        return self.api.create_threshold_set(name, values)

    def assign_workflow(self, name: str, version: int, target: str | None = None) -> Json:
        """Assign a workflow version to a group (the fleet's group by default)."""
        body: Json = self.api.request(
            "PUT",
            f"/api/v1/workflows/{name}/assignments/group/{target or self.config.group}",
            json={"version": version},
        ).json()
        return body

    def assign_thresholds(self, name: str, version: int, target: str | None = None) -> Json:
        return self.api.assign_thresholds(name, version, "group", target or self.config.group)

    # ---- watching the fleet ----------------------------------------------------------------------

    def devices(self) -> list[DeviceView]:
        """Every device of the fleet's line, as the control plane last heard from it."""
        listing = self.api.list_devices(labels={"line": self.config.line}, all_pages=True)
        return sorted((DeviceView.of(d) for d in listing.items), key=lambda d: _station(d.device_id))

    def wait_until(
        self,
        check: Callable[[list[DeviceView]], bool],
        what: str,
        timeout_s: float,
        on_poll: Callable[[list[DeviceView]], None] | None = None,
    ) -> list[DeviceView]:
        """Poll the devices until ``check`` holds; :class:`FleetTimeout` naming ``what`` and each
        device's state when ``timeout_s`` passes first."""
        deadline = time.monotonic() + timeout_s
        while True:
            views = self.devices()
            if on_poll is not None:
                on_poll(views)
            if check(views):
                return views
            if time.monotonic() > deadline:
                states = "; ".join(
                    f"{v.device_id}: {v.phase} gen {v.generation} workflow v{v.workflow_version} "
                    f"model {v.model_sha256[:12] or '—'}" + (f" ({v.error})" if v.error else "")
                    for v in views
                )
                raise FleetTimeout(f"{what}: not within {timeout_s:.0f}s: {states}")
            time.sleep(POLL_S)

    def wait_running(
        self,
        *,
        workflow_version: int,
        model_sha256: str,
        rollout_id: str | None = None,
        timeout_s: float = 120.0,
        on_poll: Callable[[list[DeviceView]], None] | None = None,
    ) -> list[DeviceView]:
        """Until every agent reports CONVERGED on ``workflow_version`` with ``model_sha256`` (and,
        given ``rollout_id``, that rollout id: ``""`` for none, as after a promotion or an abort)."""
        wanted = set(self.device_ids)

        def check(views: list[DeviceView]) -> bool:
            done = {
                v.device_id
                for v in views
                if v.phase == "CONVERGED"
                and v.workflow_version == workflow_version
                and v.model_sha256 == model_sha256
                and (rollout_id is None or v.rollout_id == rollout_id)
            }
            return wanted <= done

        return self.wait_until(check, f"every agent running workflow v{workflow_version}", timeout_s, on_poll)

    def runs(self, workflow_id: str = WORKFLOW_ID) -> int:
        """Runs of ``workflow_id`` the control plane has stored for the group in the last hour."""
        series = self.api.request(
            "GET", f"/api/v1/groups/{self.config.group}/telemetry", params={"workflow": workflow_id}
        ).json()
        return sum(int(point["runs"]) for point in series["points"])

    def wait_runs(self, at_least: int, timeout_s: float = 60.0, workflow_id: str = WORKFLOW_ID) -> int:
        """Until the control plane has stored ``at_least`` runs of the group; returns the count."""
        deadline = time.monotonic() + timeout_s
        while (runs := self.runs(workflow_id)) < at_least:
            if time.monotonic() > deadline:
                raise FleetTimeout(f"telemetry: {runs} runs stored, not {at_least}, within {timeout_s:.0f}s")
            time.sleep(POLL_S)
        return runs


def _station(device_id: str) -> int:
    tail = device_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0
