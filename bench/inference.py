"""The reference inspection workflow against hand-written code, INT8 against FP32, dynamic
batching, cold start and memory — on the reference model and synthetic frames.

- ``end_to_end``: frames/s of ``examples/workflows/surface_inspection.json`` run by the engine
  (one frame at a time, on one thread) against a hand-written loop doing the same work as fast
  as plain OpenCV/NumPy/ONNX Runtime allow: reduced-resolution JPEG decode, crop, resize,
  normalise, ``session.run``, threshold. Target: ≥ 0.95 ×.
- ``int8``: the model quantised by ``agent.inference.quantize`` (static, QDQ, per-channel)
  against FP32: throughput at batch 8, size, AUROC on held-out frames. Targets: ≥ 1.3 ×,
  ≤ 30 % of the size, AUROC drop ≤ 0.01.
- ``batching``: 8 producer threads through ``model_inference`` with ``max_batch`` 8 against 1.
- ``cold_start``: ``edgefleet-agent serve`` from process start to the first result, and its
  resident memory with the model loaded, against a bare ``python -c 'import onnxruntime'``
  session creation.

Run: ``.venv/bin/python bench/inference.py [--model models/surface_inspection_v1.onnx]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime

from agent.inference.backend import BackendOptions
from agent.inference.onnxruntime_backend import OnnxRuntimeBackend
from agent.inference.quantize import Preprocess, auroc, quantize_int8, scores
from agent.inference.runtime import ModelRuntime
from agent.inference.store import ModelStore
from agent.sources.synthetic import PART_ROI, SurfaceGenerator
from agent.thresholds import ThresholdStore
from agent.workflow import CompileOptions, Executor, compile_workflow, read_document

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "examples" / "workflows" / "surface_inspection.json"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def frames(count: int, seed: int) -> tuple[list[bytes], list[bool]]:
    generator = SurfaceGenerator(seed)
    data, truth = [], []
    for index in range(count):
        sample = generator.sample(index)
        ok, encoded = cv2.imencode(".jpg", sample.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        data.append(encoded.tobytes())
        truth.append(sample.defective)
    return data, truth


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn: Callable[[bytes], Any], data: list[bytes], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        for frame in data:
            start = time.perf_counter()
            fn(frame)
            out.append(time.perf_counter() - start)
    return out


def end_to_end(model: Path, data: list[bytes], rounds: int) -> dict[str, Any]:
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x, y, w, h = PART_ROI

    def hand_written(frame: bytes) -> str:
        image = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
        part = image[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2]
        small = cv2.resize(part, (224, 224), interpolation=cv2.INTER_LINEAR)
        rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        tensor = ((rgb - MEAN) / STD).transpose(2, 0, 1)[None]
        _, score = session.run(None, {"image": np.ascontiguousarray(tensor)})
        return "reject" if float(score[0, 0]) >= 0.5 else "accept"

    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(Path(tmp))
        store.install(model, "surface_inspection", "1")
        runtime = ModelRuntime(store, [OnnxRuntimeBackend()], BackendOptions(max_batch=1))
        thresholds = ThresholdStore()
        thresholds.put("surface", {"default": 0.5})
        plan = compile_workflow(
            read_document(WORKFLOW), CompileOptions(resources={"models": runtime, "thresholds": thresholds})
        )
        with Executor() as executor:

            def engine(frame: bytes) -> str:
                result = executor.run(plan, {"image": frame})
                assert result.ok, result.error
                return str(result.outputs["gate"]["decision"])

            agree = sum(engine(f) == hand_written(f) for f in data)
            base_t: list[float] = []
            engine_t: list[float] = []
            for _ in range(rounds):  # alternate so drift hits both
                base_t += timed(hand_written, data, 1)
                engine_t += timed(engine, data, 1)
        runtime.close()
    return {
        "frames": len(data) * rounds,
        "decisions_agree": f"{agree}/{len(data)}",
        "hand_written_median_ms": round(statistics.median(base_t) * 1e3, 2),
        "hand_written_p99_ms": round(pct(base_t, 0.99) * 1e3, 2),
        "engine_median_ms": round(statistics.median(engine_t) * 1e3, 2),
        "engine_p99_ms": round(pct(engine_t, 0.99) * 1e3, 2),
        "hand_written_fps": round(len(base_t) / sum(base_t), 1),
        "engine_fps": round(len(engine_t) / sum(engine_t), 1),
        "throughput_ratio": round(sum(base_t) / sum(engine_t), 3),
    }


def int8(model: Path, data: list[bytes], truth: list[bool], calibration: list[bytes]) -> dict[str, Any]:
    preprocess = Preprocess(roi=PART_ROI)
    tensors = [preprocess(frame) for frame in data]
    with tempfile.TemporaryDirectory() as tmp:
        quantized = quantize_int8(model, Path(tmp) / "int8.onnx", (preprocess(f) for f in calibration))
        batch = np.stack(tensors[:8])
        paths = {"fp32": model, "int8": quantized}
        sessions = {
            name: onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            for name, path in paths.items()
        }
        times: dict[str, list[float]] = {name: [] for name in paths}
        for session in sessions.values():
            for _ in range(3):
                session.run(None, {"image": batch})
        for _ in range(20):  # alternate the two so that this VM's drift hits both alike
            for name, session in sessions.items():
                for _ in range(5):
                    start = time.perf_counter()
                    session.run(None, {"image": batch})
                    times[name].append(time.perf_counter() - start)
        speeds = {
            name: {
                "batch8_median_ms": round(statistics.median(times[name]) * 1e3, 2),
                "batch8_p99_ms": round(pct(times[name], 0.99) * 1e3, 2),
                "images_per_s": round(8 / statistics.median(times[name]), 1),
                "bytes": path.stat().st_size,
                "auroc": round(auroc(scores(path, tensors, "score"), truth), 4),
            }
            for name, path in paths.items()
        }
    return {
        **speeds,
        "speedup": round(speeds["int8"]["images_per_s"] / speeds["fp32"]["images_per_s"], 2),
        "size_ratio": round(speeds["int8"]["bytes"] / speeds["fp32"]["bytes"], 3),
        "auroc_drop": round(speeds["fp32"]["auroc"] - speeds["int8"]["auroc"], 4),
    }


def batching(model: Path, data: list[bytes], seconds: float = 8.0) -> dict[str, Any]:
    tensor = Preprocess(roi=PART_ROI)(data[0])
    result = {}
    for max_batch in (1, 8):
        with tempfile.TemporaryDirectory() as tmp:
            store = ModelStore(Path(tmp))
            store.install(model, "m", "1")
            runtime = ModelRuntime(
                store, [OnnxRuntimeBackend()], BackendOptions(max_batch=max_batch), max_wait_ms=2
            )
            served = runtime.get("m")
            served.infer({"image": tensor})
            latencies: list[float] = []
            stop = time.monotonic() + seconds
            lock = threading.Lock()

            def produce(
                served: Any = served, latencies: list[float] = latencies, lock: Any = lock, stop: float = stop
            ) -> None:
                while time.monotonic() < stop:
                    start = time.perf_counter()
                    served.infer({"image": tensor})
                    with lock:
                        latencies.append(time.perf_counter() - start)

            threads = [threading.Thread(target=produce) for _ in range(8)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            result[f"max_batch_{max_batch}"] = {
                "images_per_s": round(len(latencies) / elapsed, 1),
                "latency_median_ms": round(statistics.median(latencies) * 1e3, 2),
                "latency_p99_ms": round(pct(latencies, 0.99) * 1e3, 2),
                "batch_sizes": dict(sorted(served.batcher.batch_sizes.items())),
            }
            runtime.close()
    result["ratio_8_over_1"] = round(
        result["max_batch_8"]["images_per_s"] / result["max_batch_1"]["images_per_s"], 2
    )
    return result


def cold_start(model: Path) -> dict[str, Any]:
    """Process start → first result of ``edgefleet-agent serve`` (one synthetic frame), and its
    peak resident memory; against a bare onnxruntime session created and run once."""
    agent = str(Path(sys.executable).parent / "edgefleet-agent")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "agent.yaml"
        config.write_text(
            json.dumps(
                {
                    "device_id": "bench",
                    "data_dir": str(Path(tmp) / "data"),
                    "profile": "x86-cpu",
                    "models": [{"id": "surface_inspection", "version": "1", "file": str(model)}],
                    "thresholds": {"surface": {"default": 0.5}},
                    "workflows": [
                        {"file": str(WORKFLOW), "workers": 1, "sources": [{"type": "synthetic", "count": 1}]}
                    ],
                }
            )
        )
        bare = (
            "import time, numpy as np, onnxruntime as ort; s = ort.InferenceSession("
            f"{str(model)!r}, providers=['CPUExecutionProvider']); "
            "s.run(None, {'image': np.zeros((1, 3, 224, 224), np.float32)})"
        )
        out: dict[str, Any] = {}
        for name, command in (
            ("agent", [agent, "serve", "--config", str(config), "--log-level", "error"]),
            ("bare_onnxruntime", [sys.executable, "-c", bare]),
        ):
            times, rss = [], []
            for _ in range(3):
                start = time.perf_counter()
                done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], capture_output=True, text=True)
                times.append(time.perf_counter() - start)
                assert done.returncode == 0, done.stderr
                rss.append(int(done.stderr.strip().splitlines()[-1]) / 1024)
            out[name] = {
                "start_to_first_result_s": round(statistics.median(times), 2),
                "peak_rss_mib": round(statistics.median(rss), 1),
            }
        out["ratio_time"] = round(
            out["agent"]["start_to_first_result_s"] / out["bare_onnxruntime"]["start_to_first_result_s"], 2
        )
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "surface_inspection_v1.onnx")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "inference.json")
    parser.add_argument("--skip", nargs="*", default=[])
    args = parser.parse_args()

    data, _ = frames(args.frames, seed=99)
    report: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.processor()} Python {platform.python_version()}",
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
    }
    if "end_to_end" not in args.skip:
        report["end_to_end"] = end_to_end(args.model, data, args.rounds)
    if "int8" not in args.skip:
        eval_data, eval_truth = frames(400, seed=4242)
        report["int8"] = int8(args.model, eval_data, eval_truth, frames(200, seed=777)[0])
    if "batching" not in args.skip:
        report["batching"] = batching(args.model, data)
    if "cold_start" not in args.skip:
        report["cold_start"] = cold_start(args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
