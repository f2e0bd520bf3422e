"""The gRPC device API against the agent in-process, on the reference workflow and frames.

- ``inspect``: frames/s of an ``Inspect`` stream (a client in another process, as a line system
  would be, streaming JPEG frames over the Unix socket) against the same frames run in-process
  by the agent's executor on as many threads as the server's run pool (and on one thread).
  In-process and gRPC rounds alternate so that drift hits both. Target: ≥ 0.9 × in-process.
  Also the CPU time per frame (this process; for Inspect plus the client's), which a shared,
  loaded machine disturbs much less than wall-clock time.
- ``unary``: ``RunWorkflow`` round trips over the Unix socket, one at a time; overhead = round
  trip − the run's own duration (as the executor measured it, returned in the result). Target:
  ≤ 1 ms p50. Also for a two-node workflow, where the run itself costs ~0.1 ms.

The server is the agent's own device API (its ``device_api`` settings: socket, window, run
pool), as ``edgefleet-agent serve`` runs it. Requests leave ``include_result_json`` off (the
default: results carry the summary fields) unless ``--result-json`` asks for the whole result
with every frame and call.

Run: ``.venv/bin/python bench/device_api.py [--frames 200 --rounds 5]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pickle
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = ROOT / "models" / "surface_inspection_v1.onnx"
WORKFLOW = ROOT / "examples" / "workflows" / "surface_inspection.json"
ECHO = {
    "id": "echo",
    "nodes": [
        {"id": "facts", "type": "transform", "config": {"output": {"n": "$.n"}}},
        {"id": "gate", "type": "threshold", "config": {"score": "$.n", "thresholds": {"default": 10}}},
    ],
    "edges": [{"source": "facts", "target": "gate"}],
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values) * 1e3, 3),
        "p99_ms": round(pct(values, 0.99) * 1e3, 3),
    }


def make_frames(count: int, seed: int) -> list[bytes]:
    import cv2

    from agent.sources.synthetic import SurfaceGenerator

    generator = SurfaceGenerator(seed)
    out = []
    for index in range(count):
        ok, encoded = cv2.imencode(".jpg", generator.sample(index).image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(encoded.tobytes())
    return out


# ---- the client (another process) ----------------------------------------------------------------


def client(args: argparse.Namespace) -> None:
    """Serve commands from stdin (one JSON object a line), answer each on stdout: ``inspect``
    streams every frame once through one Inspect call; ``unary`` makes ``count`` RunWorkflow
    calls one after the other."""
    import grpc

    from protos import device_pb2 as pb
    from protos import device_pb2_grpc

    frames: list[bytes] = pickle.loads(Path(args.frames_file).read_bytes())
    inspect_frames = [
        pb.InspectFrame(
            frame_id=i, workflow_id="surface_inspection", image=frame, include_result_json=args.result_json
        )
        for i, frame in enumerate(frames)
    ]
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(f"unix:{args.socket}", options=options) as channel:
        stub = device_pb2_grpc.DeviceServiceStub(channel)
        stub.GetStatus(pb.GetStatusRequest())  # connected
        for line in sys.stdin:
            command = json.loads(line)
            out: dict[str, Any]
            if command["mode"] == "inspect":
                start = time.perf_counter()
                results = list(stub.Inspect(iter(inspect_frames)))
                elapsed = time.perf_counter() - start
                assert [r.frame_id for r in results] == list(range(len(frames)))
                assert all(r.run.status == "succeeded" for r in results), results[0]
                out = {"elapsed_s": elapsed}
            else:
                count, workflow = command["count"], command["workflow"]
                if workflow == "echo":
                    calls = [
                        pb.RunWorkflowRequest(
                            workflow_id="echo",
                            input_json=json.dumps({"n": i % 20}),
                            include_result_json=args.result_json,
                        )
                        for i in range(count)
                    ]
                else:
                    calls = [
                        pb.RunWorkflowRequest(
                            workflow_id=workflow,
                            image=frames[i % len(frames)],
                            include_result_json=args.result_json,
                        )
                        for i in range(count)
                    ]
                round_trips, runs = [], []
                for request in calls:
                    start = time.perf_counter()
                    reply = stub.RunWorkflow(request)
                    round_trips.append(time.perf_counter() - start)
                    runs.append(reply.duration_ms / 1e3)
                out = {"round_trip_s": round_trips, "run_s": runs}
            sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()


class Client:
    """The client process, driven one command at a time."""

    def __init__(self, socket: Path, frames_file: Path, *, result_json: bool) -> None:
        command = [
            sys.executable,
            __file__,
            "client",
            "--socket",
            str(socket),
            "--frames-file",
            str(frames_file),
            *(["--result-json"] if result_json else []),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the client process died")
        result: dict[str, Any] = json.loads(line)
        return result

    def cpu_s(self) -> float:
        """CPU seconds the client process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


# ---- in-process baselines --------------------------------------------------------------------------


def in_process(executor: Any, plan: Any, frames: list[bytes], threads: int) -> float:
    """Seconds to run every frame through ``plan`` on ``threads`` threads."""
    counter = itertools.count()

    def work() -> None:
        while (i := next(counter)) < len(frames):
            result = executor.run(plan, {"image": frames[i]})
            assert result.ok, result.error

    workers = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - start


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from agent.config import load_settings
    from agent.daemon import Agent

    frames = make_frames(args.frames, seed=99)
    report: dict[str, Any] = {
        "machine": f"{platform.machine()} {_cpu()} ({os.cpu_count()} cores)",
        "python": platform.python_version(),
        "frames": args.frames,
        "rounds": args.rounds,
        "onnxruntime_threads": args.cpu_threads or "profile default",
        "include_result_json": args.result_json,
    }
    with tempfile.TemporaryDirectory(prefix="ef-bench-", dir="/tmp") as tmp:
        base = Path(tmp)
        (base / "echo.json").write_text(json.dumps(ECHO))
        config = {
            "device_id": "bench",
            "data_dir": str(base / "data"),
            "profile": "x86-cpu",
            "models": [{"id": "surface_inspection", "version": "1", "file": str(MODEL)}],
            "thresholds": {"surface": {"default": 0.535}},
            "workflows": [
                {"file": str(WORKFLOW), "workers": 1},
                {"file": str(base / "echo.json"), "workers": 1},
            ],
            # the agent's own device API server, as `edgefleet-agent serve` runs it
            "device_api": {
                "socket_path": str(base / "device.sock"),
                "inspect_window": args.window,
                "run_workers": args.workers,
            },
        }
        if args.cpu_threads:  # the x86-cpu profile with a fixed ONNX Runtime thread count
            profiles = base / "profiles"
            shutil.copytree(ROOT / "device_profiles", profiles)
            text = (profiles / "x86-cpu.yaml").read_text()
            (profiles / "x86-cpu.yaml").write_text(
                text.replace("cpu_threads: null", f"cpu_threads: {args.cpu_threads}")
            )
            config["profiles_dir"] = str(profiles)
        (base / "agent.json").write_text(json.dumps(config))
        frames_file = base / "frames.pickle"
        frames_file.write_bytes(pickle.dumps(frames))
        agent = Agent(load_settings(base / "agent.json"))
        agent.start()
        assert agent.device_api is not None, "the agent did not start its device API"
        talk = Client(agent.device_api.socket_path, frames_file, result_json=args.result_json)
        try:
            plan, executor = agent.plans()["surface_inspection"], agent.executor
            in_process(executor, plan, frames[:20], args.workers)  # warm-up
            talk(mode="inspect")
            one, many, api = [], [], []
            cpu_in, cpu_api = [], []  # CPU seconds per frame: in-process; server + client process
            for _ in range(args.rounds):  # alternate, so that this VM's drift hits all three alike
                one.append(len(frames) / in_process(executor, plan, frames, 1))
                before = _cpu_s()
                many.append(len(frames) / in_process(executor, plan, frames, args.workers))
                cpu_in.append((_cpu_s() - before) / len(frames))
                before, client_before = _cpu_s(), talk.cpu_s()
                api.append(len(frames) / talk(mode="inspect")["elapsed_s"])
                cpu_api.append((_cpu_s() - before + talk.cpu_s() - client_before) / len(frames))
            best = [max(a, b) for a, b in zip(one, many, strict=True)]
            report["inspect"] = {
                "window": args.window,
                "run_workers": args.workers,
                "in_process_1_thread_fps": [round(v, 1) for v in one],
                f"in_process_{args.workers}_threads_fps": [round(v, 1) for v in many],
                "inspect_fps": [round(v, 1) for v in api],
                "ratio_per_round_vs_best_in_process": [
                    round(a / b, 3) for a, b in zip(api, best, strict=True)
                ],
                "ratio_median": round(statistics.median(api) / statistics.median(best), 3),
                f"in_process_{args.workers}_threads_cpu_ms_per_frame": [round(v * 1e3, 2) for v in cpu_in],
                "inspect_cpu_ms_per_frame_server_and_client": [round(v * 1e3, 2) for v in cpu_api],
                "cpu_ratio_median": round(statistics.median(cpu_in) / statistics.median(cpu_api), 3),
            }
            report["unary"] = {}
            for workflow, count in (("echo", args.calls * 5), ("surface_inspection", args.calls)):
                target = agent.plans()[workflow]
                talk(mode="unary", workflow=workflow, count=20)  # warm-up
                inproc: list[float] = []
                trips: list[float] = []
                runs: list[float] = []
                batch = 25
                for first in range(0, count, batch):  # alternate batches of in-process and gRPC calls
                    for i in range(first, min(count, first + batch)):
                        document = {"n": i % 20} if workflow == "echo" else {"image": frames[i % len(frames)]}
                        start = time.perf_counter()
                        executor.run(target, document)
                        inproc.append(time.perf_counter() - start)
                    measured = talk(mode="unary", workflow=workflow, count=min(batch, count - first))
                    trips += measured["round_trip_s"]
                    runs += measured["run_s"]
                overhead = [t - r for t, r in zip(trips, runs, strict=True)]
                report["unary"][workflow] = {
                    "calls": count,
                    "in_process_run": ms(inproc),
                    "grpc_round_trip": ms(trips),
                    "run_inside_call": ms(runs),
                    "overhead_round_trip_minus_run": ms(overhead),
                    "round_trip_median_minus_in_process_median_ms": round(
                        (statistics.median(trips) - statistics.median(inproc)) * 1e3, 3
                    ),
                }
        finally:
            talk.close()
            agent.stop()  # the device API server first
    return report


def _cpu_s() -> float:
    """CPU seconds this process (every thread) has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "client"])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300, help="RunWorkflow calls on the reference workflow")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument(
        "--workers", type=int, default=2, help="the server's run pool, and in-process threads"
    )
    parser.add_argument("--cpu-threads", type=int, default=0, help="ONNX Runtime threads (0: the profile's)")
    parser.add_argument(
        "--result-json", action="store_true", help="ask for the whole result (result_json) with every run"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "device_api.json")
    # client role
    parser.add_argument("--socket", type=Path)
    parser.add_argument("--frames-file", type=Path)
    args = parser.parse_args()
    if args.role == "client":
        client(args)
        return
    report = bench(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
