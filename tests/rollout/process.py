"""An agent in a process of its own (``edgefleet-agent serve``), managed over a real Mosquitto broker
by a test acting as the control plane, with its artifacts on a live control plane.

``crash_plugin`` installs, for the agent process only, a node plugin (``crash_now``) whose run
kills its own process with SIGKILL: a workflow graph using it crashes the agent the way a native
fault in a model runtime would, with no hook in the agent itself."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from agent.sync.mqtt import topic
from protos import sync_pb2
from tests.mosquitto import MosquittoBroker, MqttTestClient
from tests.sync.fleet import WORKFLOW_ID, Fleet

AGENT = Path(sys.executable).parent / "edgefleet-agent"
REPO = Path(__file__).resolve().parents[2]

_PLUGIN = """
import os
import signal

from pydantic import BaseModel, ConfigDict

from agent.workflow import Node, RunContext


class CrashConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CrashNow(Node[CrashConfig]):
    type_name = "crash_now"
    config_model = CrashConfig
    summary = "Kills its own process (a crash, for rollout tests)."

    def run(self, ctx: RunContext) -> None:
        os.kill(os.getpid(), signal.SIGKILL)
"""


def crash_plugin(root: Path) -> Path:
    """A directory to put on the agent's ``PYTHONPATH``: the ``crash_now`` node plugin, installed
    as a distribution of its own (found through the ``edgefleet.nodes`` entry points)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "edgefleet_crash_node.py").write_text(_PLUGIN)
    info = root / "edgefleet_crash_node-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edgefleet-crash-node\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[edgefleet.nodes]\ncrash_now = edgefleet_crash_node:CrashNow\n")
    return root


@contextlib.contextmanager
def serve_bytes(files: dict[str, bytes]) -> Iterator[str]:
    """A plain HTTP server for ``files`` (path → bytes); yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Operator:
    """Publishes retained desired states on the broker, as the control plane does."""

    def __init__(self, broker: MosquittoBroker, device_id: str) -> None:
        self.device_id = device_id
        self.client = MqttTestClient(
            broker, broker.control_plane_user, broker.control_plane_password, client_id="rollout-tests"
        )
        assert not self.client.connect().is_failure
        self.client.subscribe(topic(device_id, "reported"))

    def publish(self, desired: sync_pb2.DesiredState) -> None:
        self.client.publish(topic(self.device_id, "desired"), desired.SerializeToString(), retain=True)

    def reports(self) -> list[sync_pb2.ReportedState]:
        reports = []
        for message in self.client.drain():
            if message.topic.endswith("/reported"):
                reports.append(sync_pb2.ReportedState.FromString(message.payload))
        return reports

    def close(self) -> None:
        self.client.close()


class AgentProcess:
    """``edgefleet-agent serve`` on a config bound to the control plane's workflow by id."""

    def __init__(
        self, root: Path, fleet: Fleet, broker: MosquittoBroker, *, plugins: Path | None = None
    ) -> None:
        self.root = root
        self.data_dir = root / "agent"
        self.results = root / "results.jsonl"
        self.log = root / "agent.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        password = broker.add_device(fleet.device_id)
        (self.data_dir / "credentials.json").write_text(
            json.dumps(
                {
                    "device_id": fleet.device_id,
                    "credential": fleet.credential,
                    "signing_public_key": fleet.public_key_pem,
                    "api_url": fleet.cp.url,
                }
            )
        )
        self.config = root / "agent.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "device_id": fleet.device_id,
                    "data_dir": str(self.data_dir),
                    "profile": "x86-cpu",
                    "results_jsonl": str(self.results),
                    "workflows": [
                        {
                            "workflow": WORKFLOW_ID,
                            "workers": 1,
                            "queue": {"size": 2, "policy": "drop_oldest"},
                            "sources": [{"type": "synthetic", "fps": 25, "seed": 7}],
                        }
                    ],
                    "sync": {
                        "mqtt_host": broker.host,
                        "mqtt_port": broker.port,
                        "mqtt_password": password,
                        "reconnect_min_s": 0.05,
                        "reconnect_max_s": 0.5,
                        "telemetry_interval_s": 1.0,
                    },
                }
            )
        )
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (str(plugins or ""), str(REPO)) if p),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(AGENT), "serve", "-c", str(self.config), "--log-level", "info"],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def lineages(self) -> list[dict[str, Any]]:
        """The lineage of every complete results line so far."""
        if not self.results.exists():
            return []
        stamps = []
        for line in self.results.read_text().splitlines():
            try:
                stamps.append(json.loads(line)["lineage"])
            except ValueError:  # the line a kill cut short
                continue
        return stamps

    def log_tail(self, lines: int = 40) -> str:
        return (
            "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""
        )
