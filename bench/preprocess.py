"""What image preprocessing costs per frame: the naive OpenCV pipeline against edgefleet's nodes.

The frame: a 1280×720 quality-90 JPEG of a brushed, machined steel part (streaks, grain, a bore,
engraved text, illumination fall-off, sensor noise), generated here. The job: crop the centred
720×720 part, resize to 224×224, normalise with ImageNet's mean/std to a (3, 224, 224) float32
tensor.

- ``naive``: ``cv2.imdecode`` at full resolution, crop, ``cv2.resize`` with ``INTER_AREA``,
  NumPy normalisation (``(rgb / 255 − mean) / std``, transposed to CHW);
- ``workflow``: ``image_decode → crop → resize → normalize`` compiled and run by ``Executor``;
- ``direct``: the same nodes' code called without the engine (``load_image``, ``crop``,
  ``resize``, ``Normalizer``).

Each run is timed alone; the three alternate in batches so that drift on a noisy machine hits
all alike. A second, grainier frame (high-gain sensor noise) shows how the ratio depends on the
JPEG's bit rate: entropy decoding, which no reduced decode avoids, grows with it.

Run: ``.venv/bin/python bench/preprocess.py [--runs N]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.imaging import Normalizer, load_image, resize
from agent.workflow import CompileOptions, Executor, builtin_registry, compile_workflow

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
ROI = (280, 0, 720, 720)
SIZE = (224, 224)

GRAPH = {
    "id": "preprocess",
    "nodes": [
        {"id": "decode", "type": "image_decode", "config": {"source": "$.image"}},
        {
            "id": "crop",
            "type": "crop",
            "config": {"image": "$.nodes.decode", "x": 280, "y": 0, "width": 720, "height": 720},
        },
        {"id": "resize", "type": "resize", "config": {"image": "$.nodes.crop", "width": 224, "height": 224}},
        {"id": "normalize", "type": "normalize", "config": {"image": "$.nodes.resize"}},
    ],
    "edges": [
        {"source": "decode", "target": "crop"},
        {"source": "crop", "target": "resize"},
        {"source": "resize", "target": "normalize"},
    ],
}


def brushed_steel(noise: float, width: int = 1280, height: int = 720, seed: int = 0) -> npt.NDArray[np.uint8]:
    """A machined, brushed steel part under a ring light; ``noise`` is the sensor noise σ."""
    rng = np.random.default_rng(seed)
    streaks = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 30, 0.8)
    streaks *= 16 / streaks.std()
    grain = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 1.5)
    grain *= 6 / grain.std()
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 165 - 70 * (((xx - 0.45 * width) / width) ** 2 + ((yy - 0.4 * height) / height) ** 2)
    grey = light + streaks + grain
    frame = np.clip(np.stack([grey * 0.96, grey, grey * 1.03 + 2], axis=-1), 0, 255).astype(np.uint8)
    cx, cy = width // 2, height // 2
    cv2.circle(frame, (cx, cy), height // 7, (45, 48, 50), -1, cv2.LINE_AA)
    cv2.circle(frame, (cx, cy), height // 7 + 6, (205, 210, 212), 3, cv2.LINE_AA)
    cv2.line(frame, (width // 10, height // 5), (width // 3, height // 4), (70, 70, 72), 2, cv2.LINE_AA)
    cv2.putText(frame, "LOT 4711-B", (width // 12, height - height // 8), cv2.FONT_HERSHEY_SIMPLEX,
                height / 400, (60, 60, 64), 3, cv2.LINE_AA)  # fmt: skip
    return np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)


def naive_steps(data: bytes) -> tuple[Callable[[], Any], Callable[[], Any], Callable[[], Any]]:
    """The naive pipeline's three stages, each a closure over the previous stage's output."""
    buffer = np.frombuffer(data, np.uint8)
    full = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    x, y, w, h = ROI
    small = cv2.resize(full[y : y + h, x : x + w], SIZE, interpolation=cv2.INTER_AREA)
    return (
        lambda: cv2.imdecode(buffer, cv2.IMREAD_COLOR),
        lambda: cv2.resize(full[y : y + h, x : x + w], SIZE, interpolation=cv2.INTER_AREA),
        lambda: normalise_naive(small),
    )


def normalise_naive(bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    rgb = bgr[:, :, ::-1].astype(np.float32) / 255.0
    return np.ascontiguousarray(((rgb - MEAN) / STD).transpose(2, 0, 1))


def naive(data: bytes) -> npt.NDArray[np.float32]:
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    x, y, w, h = ROI
    small = cv2.resize(full[y : y + h, x : x + w], SIZE, interpolation=cv2.INTER_AREA)
    return normalise_naive(small)


NORMALIZER = Normalizer(MEAN.tolist(), STD.tolist())


def direct(data: bytes) -> npt.NDArray[Any]:
    image = load_image(data).crop(*ROI)
    return NORMALIZER(resize(image, *SIZE).pixels())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stats_ms(samples: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(samples) * 1e3, "p99_ms": percentile(samples, 0.99) * 1e3}


def measure(cases: dict[str, Callable[[], Any]], runs: int, batch: int = 50) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in cases}
    clock = time.perf_counter
    for fn in cases.values():  # warm up
        for _ in range(20):
            fn()
    done = 0
    while done < runs:
        for name, fn in cases.items():
            samples = times[name]
            for _ in range(batch):
                t0 = clock()
                fn()
                samples.append(clock() - t0)
        done += batch
    return times


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    samples = measure({"x": fn}, runs)["x"]
    return statistics.median(samples) * 1e3


def bench_frame(data: bytes, runs: int, executor: Executor) -> dict[str, Any]:
    plan = compile_workflow(GRAPH, CompileOptions(registry=builtin_registry()))
    doc = {"image": data}
    result = executor.run(plan, doc)
    assert result.ok, result.error
    reference = naive(data)
    tensor = result.outputs["normalize"]
    small_naive = cv2.resize(
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, 280:1000],
        SIZE,
        interpolation=cv2.INTER_AREA,
    ).astype(np.float64)
    small_fast = result.outputs["resize"].pixels().astype(np.float64)
    mse = float(np.mean((small_naive - small_fast) ** 2))

    times = measure(
        {
            "naive": lambda: naive(data),
            "workflow": lambda: executor.run(plan, doc),
            "direct": lambda: direct(data),
        },
        runs,
    )
    report: dict[str, Any] = {name: stats_ms(samples) for name, samples in times.items()}
    report["ratio_workflow_over_naive"] = {
        "median": report["workflow"]["median_ms"] / report["naive"]["median_ms"],
        "p99": report["workflow"]["p99_ms"] / report["naive"]["p99_ms"],
    }
    report["ratio_direct_over_naive_median"] = report["direct"]["median_ms"] / report["naive"]["median_ms"]

    stage_runs = max(100, runs // 4)
    decode, area, normalise = naive_steps(data)
    buffer = np.frombuffer(data, np.uint8)
    half = cv2.imdecode(buffer, cv2.IMREAD_REDUCED_COLOR_2)
    part = load_image(data).crop(*ROI)
    small = resize(part, *SIZE).pixels()
    report["stages_median_ms"] = {
        "naive_decode_full": median_ms(decode, stage_runs),
        "naive_resize_area_720_to_224": median_ms(area, stage_runs),
        "naive_normalise_numpy": median_ms(normalise, stage_runs),
        "fast_decode_half": median_ms(lambda: cv2.imdecode(buffer, cv2.IMREAD_REDUCED_COLOR_2), stage_runs),
        "fast_resize_linear_360_to_224": median_ms(
            lambda: cv2.resize(half[:, 140:500], SIZE, interpolation=cv2.INTER_LINEAR), stage_runs
        ),
        "fast_normalise_lut": median_ms(lambda: NORMALIZER(small), stage_runs),
        "decode_header_check": median_ms(lambda: load_image(data), stage_runs),
    }
    report["agreement_with_naive"] = {
        "resized_224_mean_abs_diff_grey_levels": float(np.mean(np.abs(small_naive - small_fast))),
        "resized_224_psnr_db": 10 * np.log10(255**2 / mse),
        "tensor_max_abs_diff": float(np.max(np.abs(reference - tensor))),
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="timed runs per variant")
    parser.add_argument("--out", type=Path, default=Path("bench/results/preprocess.json"))
    args = parser.parse_args()

    report: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''} "
        f"Python {platform.python_version()}, OpenCV {cv2.__version__}, {cv2.getNumThreads()} OpenCV threads",
        "runs": args.runs,
    }
    with Executor(max_workers=4) as executor:
        for name, noise, runs in (
            ("brushed_steel", 2.5, args.runs),
            ("grainy_high_gain", 6.0, args.runs // 2),
        ):
            ok, encoded = cv2.imencode(".jpg", brushed_steel(noise), [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            data = encoded.tobytes()
            frame: dict[str, Any] = {
                "jpeg": {
                    "size": "1280x720",
                    "quality": 90,
                    "sensor_noise_sigma": noise,
                    "bytes": len(data),
                    "bits_per_pixel": round(len(data) * 8 / (1280 * 720), 2),
                },
            }
            frame.update(bench_frame(data, runs, executor))
            report[name] = frame

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
