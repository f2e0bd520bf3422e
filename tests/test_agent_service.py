"""The agent process as a service, with its real parts wired in: systemd notifications and the
watchdog (a real ``$NOTIFY_SOCKET``), the device API on its Unix socket, Prometheus metrics, and
threshold overrides reported to a live control plane over a real Mosquitto broker.

Nothing here is timed: every wait is for something to happen (a datagram, a results line, a
row at the control plane), bounded only to fail a test that hangs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from agent.device_api import OverrideLog, ThresholdOverride
from agent.manifest import load_public_key
from agent.sync.mqtt import topic
from controlplane.store.schema import events
from protos import device_pb2 as pb
from protos import device_pb2_grpc, sync_pb2
from tests.mosquitto import MosquittoBroker, MqttTestClient
from tests.service.helpers import WAIT_S, NotifyReceiver, wait_until
from tests.sync.fleet import Agents, Fleet
from tests.sync.test_sender import Plane

AGENT = Path(sys.executable).parent / "edgefleet-agent"
REPO = Path(__file__).resolve().parents[1]
SERVING = health_pb2.HealthCheckResponse.SERVING

FRAME_LOG = {
    "id": "frame_log",
    "nodes": [
        {"id": "facts", "type": "transform", "config": {"output": {"seq": "$.frame.seq"}}},
        {"id": "gate", "type": "threshold", "config": {"score": "$.frame.seq", "threshold_set": "seq"}},
    ],
    "edges": [{"source": "facts", "target": "gate"}],
}
"""Rejects a frame whose sequence number is at or above the live threshold ``seq``."""

ECHO = {
    "id": "echo",
    "nodes": [{"id": "gate", "type": "threshold", "config": {"score": "$.n", "threshold_set": "echo"}}],
}
"""Runs only through the device API: rejects when ``n`` is at or above the live threshold."""

_HOLD_PLUGIN = """
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from agent.workflow import Node, RunContext


class HoldConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    release_file: str


class Hold(Node[HoldConfig]):
    type_name = "test_hold"
    config_model = HoldConfig
    summary = "Blocks its run until a file exists (a stuck node, for watchdog tests)."

    def run(self, ctx: RunContext) -> str:
        while not Path(self.config.release_file).exists():
            time.sleep(0.02)
        return "released"
"""


def hold_plugin(root: Path) -> Path:
    """A directory for the agent's ``PYTHONPATH`` holding the ``test_hold`` node plugin,
    installed as a distribution of its own (found through the ``edgefleet.nodes`` entry points)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "edgefleet_hold_node.py").write_text(_HOLD_PLUGIN)
    info = root / "edgefleet_hold_node-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edgefleet-hold-node\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[edgefleet.nodes]\ntest_hold = edgefleet_hold_node:Hold\n")
    return root


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for Unix sockets (their paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ef-svc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def systemd(short_dir: Path) -> Iterator[NotifyReceiver]:
    """systemd's side of ``$NOTIFY_SOCKET``: a datagram socket bound in a short directory."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = short_dir / "notify.sock"
    sock.bind(str(path))
    yield NotifyReceiver(sock, str(path))
    sock.close()


def expect(receiver: NotifyReceiver, wanted: Callable[[str], bool], what: str) -> list[str]:
    """Read datagrams until one satisfies ``wanted``; every datagram read, that one last."""
    seen: list[str] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        seen.append(receiver.receive())
        if wanted(seen[-1]):
            return seen
    pytest.fail(f"no {what} among the notifications: {seen[-10:]}")


class ServedAgent:
    """``edgefleet-agent serve`` as systemd runs it: ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC``."""

    def __init__(
        self,
        root: Path,
        config: dict[str, Any],
        *,
        notify: NotifyReceiver,
        watchdog_usec: int,
        plugins: Path | None = None,
    ) -> None:
        self.root = root
        self.results = root / "results.jsonl"
        self.log = root / "agent.log"
        path = root / "agent.yaml"
        path.write_text(yaml.safe_dump({"results_jsonl": str(self.results), **config}))
        env = {
            **os.environ,
            "NOTIFY_SOCKET": notify.address,
            "WATCHDOG_USEC": str(watchdog_usec),
            "PYTHONPATH": os.pathsep.join(p for p in (str(plugins or ""), str(REPO)) if p),
        }
        env.pop("WATCHDOG_PID", None)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(AGENT), "serve", "--config", str(path)],
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
            )

    def lines(self, workflow: str | None = None) -> list[dict[str, Any]]:
        """The results lines written so far (of ``workflow``)."""
        if not self.results.exists():
            return []
        lines = []
        for text in self.results.read_text().splitlines():
            try:
                line = json.loads(text)
            except ValueError:  # being written
                continue
            if workflow is None or line["workflow"]["id"] == workflow:
                lines.append(line)
        return lines

    def logged(self, text: str) -> bool:
        return text in self.log.read_text()

    def terminate(self) -> dict[str, Any]:
        """SIGTERM, then the summary it prints on a clean exit."""
        self.process.send_signal(signal.SIGTERM)
        stdout, _ = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, self.log.read_text()[-3000:]
        summary: dict[str, Any] = json.loads(stdout)
        return summary

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=30)


def frame_workflow(root: Path, name: str, document: dict[str, Any]) -> str:
    path = root / f"{name}.json"
    path.write_text(json.dumps(document))
    return str(path)


def decision(line: dict[str, Any]) -> str:
    return str(line["outputs"]["gate"]["decision"])


def health(socket_path: Path) -> int:
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service="edgefleet.v1.DeviceService"), timeout=30)
        return int(response.status)


def serving(socket_path: Path) -> bool:
    """The device API's health says SERVING (not yet, while it cannot answer)."""
    try:
        return health(socket_path) == SERVING
    except grpc.RpcError:
        return False


def run_echo(device: device_pb2_grpc.DeviceServiceStub, n: int) -> pb.WorkflowRun:
    run: pb.WorkflowRun = device.RunWorkflow(
        pb.RunWorkflowRequest(workflow_id="echo", input_json=json.dumps({"n": n})), timeout=30
    )
    return run


# ---- systemd, the device API and metrics, one agent process --------------------------------------


def test_a_served_agent_notifies_systemd_serves_its_api_and_metrics_and_drains(
    tmp_path: Path, short_dir: Path, systemd: NotifyReceiver
) -> None:
    socket_path = short_dir / "device.sock"
    config = {
        "device_id": "line1-cam1",
        "data_dir": str(tmp_path / "data"),
        "profile": "x86-cpu",
        "thresholds": {"seq": {"default": 10}, "echo": {"default": 10}},
        "device_api": {"socket_path": str(socket_path), "shutdown_grace_s": 1},
        "metrics": {"port": 0},
        "workflows": [
            {
                "file": frame_workflow(tmp_path, "frame_log", FRAME_LOG),
                "workers": 2,
                "queue": {"size": 4, "policy": "block"},
                "sources": [{"type": "synthetic", "fps": 40, "encode": "raw"}],
            },
            {"file": frame_workflow(tmp_path, "echo", ECHO), "workers": 1},
        ],
    }
    agent = ServedAgent(tmp_path, config, notify=systemd, watchdog_usec=400_000)
    try:
        assert systemd.receive() == "STATUS=starting: loading models, compiling workflows"
        ready = expect(systemd, lambda m: m.startswith("READY=1"), "READY=1")[-1]
        assert ready == "READY=1\nSTATUS=serving 2 workflows (profile x86-cpu)"
        expect(systemd, lambda m: m == "WATCHDOG=1", "watchdog ping")

        wait_until(lambda: len(agent.lines("frame_log")) >= 12, "frames with seq 10 and 11 (rejected)")
        # the device API answers on its socket while the agent runs
        wait_until(lambda: serving(socket_path), "the device API's health to say SERVING")
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            device = device_pb2_grpc.DeviceServiceStub(channel)  # type: ignore[no-untyped-call]
            assert run_echo(device, 5).decision == "accept"
            response = device.SetThreshold(
                pb.SetThresholdRequest(
                    threshold_set="echo", key="default", value=3, actor="line-engineer", reason="glare"
                ),
                timeout=30,
            )
            assert (response.override.version, dict(response.values)) == (2, {"default": 3.0})
            assert run_echo(device, 5).decision == "reject"  # the very next run decides on 3

            # a frame source's runs take an override from their next frame on
            device.SetThreshold(
                pb.SetThresholdRequest(threshold_set="seq", key="default", value=1e9), timeout=30
            )
        wait_until(
            lambda: any(line["lineage"]["threshold_version"] == 2 for line in agent.lines("frame_log")),
            "a frame run on the overridden threshold set",
        )
        overridden = [line for line in agent.lines("frame_log") if line["lineage"]["threshold_version"] == 2]
        assert {decision(line) for line in overridden} == {"accept"}
        assert any(decision(line) == "reject" for line in agent.lines("frame_log"))  # seq ≥ 10 before
        logged = OverrideLog(tmp_path / "data" / "device_api" / "threshold_overrides.jsonl").entries()
        assert [(o.threshold_set, o.key, o.value, o.previous, o.actor, o.reason) for o in logged] == [
            ("echo", "default", 3.0, 10.0, "line-engineer", "glare"),
            ("seq", "default", 1e9, 10.0, "", ""),
        ]
        assert agent.logged(
            "threshold override: echo.default = 3 (was 10.0), set version 2, by line-engineer"
        )

        # /metrics counts the runs of the real run path, frame sources and the API alike
        log_line = next(line for line in agent.log.read_text().splitlines() if "metrics on http://" in line)
        url = log_line.split("metrics on ")[1].strip()
        families = {f.name: f for f in text_string_to_metric_families(httpx.get(url, timeout=30).text)}
        runs = {
            (s.labels["workflow"], s.labels["outcome"]): s.value
            for s in families["edgefleet_workflow_runs"].samples
            if s.name == "edgefleet_workflow_runs_total"
        }
        assert runs[("echo", "passed")] == 1
        assert runs[("echo", "failed")] == 1
        assert runs[("frame_log", "passed")] >= 10
        capacity = {
            s.labels["workflow"]: s.value for s in families["edgefleet_queue_capacity_frames"].samples
        }
        assert capacity["frame_log"] == 4

        summary = agent.terminate()
    finally:
        agent.kill()
    seen = expect(systemd, lambda m: m == "STATUS=stopped", "the last status")
    assert "STOPPING=1\nSTATUS=draining in-flight runs" in seen
    (frame_log,) = [w for w in summary["workflows"] if w["workflow"] == "frame_log"]
    assert frame_log["runs"] == len(agent.lines("frame_log"))  # every frame taken was run and written
    assert frame_log["failed"] == 0
    assert not socket_path.exists()  # the device API is closed
    with pytest.raises(grpc.RpcError) as closed:
        health(socket_path)
    assert closed.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_stuck_run_worker_stops_the_watchdog_pings_while_the_agent_goes_on(
    tmp_path: Path, short_dir: Path, systemd: NotifyReceiver
) -> None:
    release = tmp_path / "release"
    hold = {
        "id": "hold",
        "nodes": [{"id": "hold", "type": "test_hold", "config": {"release_file": str(release)}}],
    }
    config = {
        "device_id": "line1-cam2",
        "data_dir": str(tmp_path / "data"),
        "profile": "x86-cpu",
        "thresholds": {"seq": {"default": 1e9}},
        "device_api": {"socket_path": str(short_dir / "device.sock")},
        "metrics": {"enabled": False},
        "watchdog": {"max_run_s": 0.5},
        "workflows": [
            {
                "file": frame_workflow(tmp_path, "hold", hold),
                "workers": 1,
                "sources": [{"type": "synthetic", "count": 1, "encode": "raw"}],
            },
            {
                "file": frame_workflow(tmp_path, "frame_log", FRAME_LOG),
                "workers": 1,
                "sources": [{"type": "synthetic", "fps": 40, "encode": "raw"}],
            },
        ],
    }
    agent = ServedAgent(
        tmp_path, config, notify=systemd, watchdog_usec=200_000, plugins=hold_plugin(tmp_path / "plugins")
    )
    try:
        expect(systemd, lambda m: m.startswith("READY=1"), "READY=1")
        unhealthy = expect(systemd, lambda m: m.startswith("STATUS=unhealthy"), "the unhealthy status")[-1]
        assert "workflow hold worker 0: one run has lasted" in unhealthy
        assert "main loop" not in unhealthy  # the main loop still beats
        # the other workflow keeps running frames, and no ping goes out meanwhile
        after = len(agent.lines("frame_log")) + 20
        wait_until(lambda: len(agent.lines("frame_log")) >= after, "20 more frames of the other workflow")
        assert "WATCHDOG=1" not in systemd.pending()
        assert agent.lines("hold") == []

        release.touch()  # the node returns: every check passes again, the pings resume
        seen = expect(systemd, lambda m: m == "WATCHDOG=1", "the pings to resume")
        assert "STATUS=serving 2 workflows (profile x86-cpu)" in seen  # the status line before
        assert [line["outputs"]["hold"] for line in agent.lines("hold")] == ["released"]
        assert agent.logged("watchdog: every liveness check passes again; pings resume")
        agent.terminate()
    finally:
        release.touch()
        agent.kill()


# ---- threshold overrides and the control plane ----------------------------------------------------


@pytest.fixture
def plane(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Plane]:
    """A live control plane with its MQTT bridge on a real Mosquitto broker."""
    plane = Plane(tmp_path, mosquitto)
    plane.start()
    yield plane
    plane.stop()


def control_plane_events(plane: Plane, device_id: str, kind: str) -> list[dict[str, Any]]:
    with plane.live.services.db.read() as conn:
        rows = conn.execute(sa.select(events).where(events.c.device_id == device_id, events.c.kind == kind))
        return [dict(row) for row in rows.mappings()]


def test_overrides_reach_the_control_plane_and_its_next_new_version_replaces_them(
    tmp_path: Path, short_dir: Path, plane: Plane
) -> None:
    device_id = "cam-1"
    fleet, password = enroll(plane, device_id, tmp_path / "agent")
    fleet.release_surface_inspection()  # threshold set "surface" v1: default 0.535
    operator = MqttTestClient(
        plane.broker, plane.broker.control_plane_user, plane.broker.control_plane_password, client_id="ops"
    )
    assert not operator.connect().is_failure

    def publish(desired: sync_pb2.DesiredState) -> None:
        operator.publish(topic(device_id, "desired"), desired.SerializeToString(), retain=True)

    publish(fleet.desired(1))
    # an override made while the agent was not managed yet: reported once it is
    OverrideLog(tmp_path / "agent" / "device_api" / "threshold_overrides.jsonl").append(
        ThresholdOverride(
            id="earlier",
            time=time.time(),
            threshold_set="surface",
            key="scratch",
            value=0.7,
            previous=None,
            version=2,
            origin="unix:",
            actor="commissioning",
        )
    )
    socket_path = short_dir / "device.sock"
    agents = Agents(tmp_path)
    try:
        agent = agents.start(
            fps=10,
            sync={
                "mqtt_host": plane.broker.host,
                "mqtt_port": plane.broker.port,
                "mqtt_password": password,
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.4,
                "telemetry_interval_s": 0.5,
            },
            device_api={"socket_path": str(socket_path)},
            metrics={"enabled": False},
        )
        assert agent.sync is not None

        def applied(generation: int) -> bool:
            assert agent.sync is not None
            return agent.sync.reconciler.state.generation == generation

        wait_until(lambda: applied(1), "generation 1 to be applied")
        assert dict(agent.thresholds.get("surface").values) == {"default": 0.535}  # type: ignore[union-attr]

        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            device = device_pb2_grpc.DeviceServiceStub(channel)  # type: ignore[no-untyped-call]
            override = device.SetThreshold(
                pb.SetThresholdRequest(
                    threshold_set="surface", key="default", value=0.99, actor="line-engineer", reason="glare"
                ),
                timeout=30,
            ).override
        assert override.version == 2  # the number the control plane's next version will have too

        # the override arrives at the control plane as an event (the earlier one too)
        wait_until(
            lambda: len(control_plane_events(plane, device_id, "threshold_override")) == 2,
            "both override events at the control plane",
        )
        earlier, event = sorted(
            control_plane_events(plane, device_id, "threshold_override"), key=lambda e: e["seq"]
        )
        assert (earlier["attributes"]["id"], earlier["attributes"]["actor"]) == ("earlier", "commissioning")
        assert (event["severity"], event["workflow_id"]) == ("warning", "surface_inspection")
        attributes = event["attributes"]
        assert {
            k: attributes[k] for k in ("set", "key", "value", "previous", "version", "actor", "reason")
        } == {
            "set": "surface",
            "key": "default",
            "value": 0.99,
            "previous": 0.535,
            "version": 2,
            "actor": "line-engineer",
            "reason": "glare",
        }
        assert attributes["origin"]  # the caller's peer
        assert all(entry.reported for entry in agent.overrides.entries())

        # the version the override was made on, delivered again: the override stays
        publish(fleet.desired(2))
        wait_until(lambda: applied(2), "generation 2 to be applied")
        live_set = agent.thresholds.get("surface")
        assert live_set is not None
        assert (live_set.version, dict(live_set.values), live_set.local_base) == (2, {"default": 0.99}, 1)

        # the control plane's next new version (also number 2) replaces it
        fleet.upload_thresholds("surface", {"default": 0.6})
        publish(fleet.desired(3, threshold_version=2))
        wait_until(lambda: applied(3), "generation 3 to be applied")
        live_set = agent.thresholds.get("surface")
        assert live_set is not None
        assert (live_set.version, dict(live_set.values), live_set.local_base) == (2, {"default": 0.6}, None)
        wait_until(
            lambda: bool(control_plane_events(plane, device_id, "threshold_override_replaced")),
            "the replaced-override event at the control plane",
        )
        (replaced,) = control_plane_events(plane, device_id, "threshold_override_replaced")
        assert replaced["attributes"]["replaced_values"] == {"default": 0.99}
        assert replaced["attributes"]["values"] == {"default": 0.6}
        assert replaced["lineage"]["threshold_version"] == 2

        # an override of that version, then the control plane goes back to version 1 (delivered
        # before, but not the version the override was made on): the override goes too
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            device = device_pb2_grpc.DeviceServiceStub(channel)  # type: ignore[no-untyped-call]
            device.SetThreshold(
                pb.SetThresholdRequest(threshold_set="surface", key="default", value=0.2), timeout=30
            )
        publish(fleet.desired(4, threshold_version=1))
        wait_until(lambda: applied(4), "generation 4 to be applied")
        live_set = agent.thresholds.get("surface")
        assert live_set is not None
        assert (live_set.version, dict(live_set.values), live_set.local_base) == (1, {"default": 0.535}, None)
    finally:
        agents.stop_all()
        operator.close()


def enroll(plane: Plane, device_id: str, data_dir: Path) -> tuple[Fleet, str]:
    """Enroll ``device_id`` at the control plane, write its credentials into ``data_dir`` and
    give the broker its MQTT password; the fleet and that password."""
    live = plane.live
    token = live.admin().post("/api/v1/enrollment-tokens", json={}).json()["token"]
    enrolled = live.client().post("/api/v1/enroll", json={"token": token, "device_id": device_id}).json()
    password = str(enrolled["mqtt"]["password"])
    plane.broker.add_device(device_id, password)
    pem = enrolled["signing_public_key"]
    data_dir.mkdir(parents=True)
    credentials = {
        "device_id": device_id,
        "credential": enrolled["credential"],
        "signing_public_key": pem,
        "api_url": live.url,
    }
    (data_dir / "credentials.json").write_text(json.dumps(credentials))
    return Fleet(live, device_id, enrolled["credential"], load_public_key(pem), pem, live.admin()), password
