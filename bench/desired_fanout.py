"""A desired-state change reaching a fleet: one workflow assignment to a group of N devices,
timed from the REST call to the last device's new desired state arriving through Mosquitto.

A real control plane (in-process uvicorn, SQLite) with its MQTT bridge and a real Mosquitto
(started like the tests start it). Devices are enrolled through the API. The devices' side is
simulated by a few MQTT connections subscribed to ``edgefleet/v1/devices/+/desired`` — what is
measured is the control plane (recompute N states, store, publish) and the broker's fan-out, not
N Python clients. Baseline, in the same run: the same subscribers receiving N retained messages
of the same size published by one raw paho client (the ceiling of this broker and client).

Target (issue 5): 1,000 devices in ≤ 5 s.

Run: ``.venv/bin/python bench/desired_fanout.py [--devices 1000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from google.protobuf.message import DecodeError
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from controlplane.settings import ControlPlaneSettings  # noqa: E402
from protos import sync_pb2  # noqa: E402
from tests.controlplane.live import live_control_plane  # noqa: E402
from tests.mosquitto import MosquittoBroker  # noqa: E402

SUBSCRIBERS = 4


class Watcher:
    """Collects, per device, the newest desired generation seen and when."""

    def __init__(self, broker: MosquittoBroker, topic: str, index: int) -> None:
        self.seen: dict[str, tuple[int, float, int]] = {}
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"watch-{index}", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(broker.control_plane_user, broker.control_plane_password)
        self.client.on_connect = lambda c, *_: (c.subscribe(f"$share/watch/{topic}", 0), self.ready.set())
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        device = message.topic.split("/")[3]
        try:
            state = sync_pb2.DesiredState.FromString(message.payload)
            workflows = len(state.workflows)
            generation = state.generation
        except DecodeError:  # the raw baseline's payloads
            workflows, generation = -1, 0
        with self.lock:
            self.seen[device] = (generation, time.perf_counter(), workflows)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_all(watchers: list[Watcher], devices: list[str], done, timeout: float = 120.0) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        merged: dict[str, tuple[int, float, int]] = {}
        for w in watchers:
            with w.lock:
                for device, seen in w.seen.items():
                    if device not in merged or seen[1] > merged[device][1]:
                        merged[device] = seen
        if all(d in merged and done(merged[d]) for d in devices):
            return max(merged[d][1] for d in devices)
        time.sleep(0.01)
    missing = [d for d in devices if d not in merged or not done(merged[d])]
    seen = [merged.get(d) for d in missing[:3]]
    raise TimeoutError(f"{len(missing)} devices did not receive it, e.g. {missing[:3]}: {seen}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="edgefleet-fanout-"))
    broker = MosquittoBroker.start(base / "broker")
    settings = ControlPlaneSettings(
        data_dir=base / "cp",
        schema_dirs=[REPO / "examples" / "schemas"],
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        mqtt_username=broker.control_plane_user,
        mqtt_password=broker.control_plane_password,
        log_json=False,
    )
    results: dict[str, list[float]] = {"control_plane_s": [], "api_call_s": [], "raw_paho_s": []}
    try:
        with live_control_plane(settings) as live:
            admin = live.admin()
            devices = [f"dev-{i:05}" for i in range(args.devices)]
            started = time.perf_counter()

            def enroll(device: str) -> None:
                token = admin.post("/api/v1/enrollment-tokens", json={}).json()["token"]
                live.client().post(
                    "/api/v1/enroll", json={"token": token, "device_id": device}
                ).raise_for_status()

            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(enroll, devices))
            print(f"enrolled {len(devices)} devices in {time.perf_counter() - started:.1f} s", flush=True)
            admin.post("/api/v1/groups", json={"name": "fleet", "selector": {}}).raise_for_status()
            admin.post(
                "/api/v1/models/surface_inspection/versions",
                content=(REPO / "models" / "surface_inspection_v1.onnx").read_bytes(),
            ).raise_for_status()
            graph = json.loads((REPO / "examples" / "workflows" / "surface_inspection.json").read_text())
            watchers = [Watcher(broker, "edgefleet/v1/devices/+/desired", i) for i in range(SUBSCRIBERS)]
            for w in watchers:
                w.ready.wait(10)
            time.sleep(1.0)
            payload_size = 0
            for round_ in range(args.rounds):
                graph["version"] = round_ + 1
                admin.post("/api/v1/workflows", json=graph).raise_for_status()
                t0 = time.perf_counter()
                admin.put(
                    "/api/v1/workflows/surface_inspection/assignments/group/fleet",
                    json={"version": round_ + 1},
                ).raise_for_status()
                api = time.perf_counter() - t0
                with live.services.db.read() as conn:
                    from controlplane import desired

                    state = desired.load(conn, devices[0])
                    assert state is not None
                    payload_size = len(state.SerializeToString())
                    target = state.generation
                last = wait_all(watchers, devices, lambda seen, g=target: seen[0] >= g)
                results["control_plane_s"].append(last - t0)
                results["api_call_s"].append(api)
                print(f"round {round_ + 1}: {last - t0:.2f} s (REST call {api:.2f} s)", flush=True)

                raw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw", protocol=mqtt.MQTTv5)
                raw.username_pw_set(broker.control_plane_user, broker.control_plane_password)
                raw.connect(broker.host, broker.port)
                raw.loop_start()
                blob = bytes(payload_size)
                for w in watchers:
                    w.client.subscribe("$share/watch/edgefleet/v1/devices/+/raw", 0)
                time.sleep(0.5)
                t0 = time.perf_counter()
                for device in devices:
                    raw.publish(f"edgefleet/v1/devices/{device}/raw", blob, qos=1)
                last = wait_all(watchers, devices, lambda seen, t=t0: seen[2] == -1 and seen[1] >= t)
                results["raw_paho_s"].append(last - t0)
                raw.loop_stop()
                raw.disconnect()
                for w in watchers:
                    w.client.unsubscribe("$share/watch/edgefleet/v1/devices/+/raw")
                    with w.lock:
                        w.seen.clear()
                time.sleep(0.5)
            for w in watchers:
                w.close()
    finally:
        broker.stop()
    summary = {
        "devices": args.devices,
        "desired_state_bytes": payload_size,
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "at": datetime.now(UTC).isoformat(),
        **{k: {"median": statistics.median(v), "max": max(v), "runs": v} for k, v in results.items()},
    }
    summary["ratio_vs_raw"] = summary["control_plane_s"]["median"] / summary["raw_paho_s"]["median"]
    print(json.dumps(summary, indent=2))
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"desired-fanout-{int(time.time())}.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
