"""Smaller, faster models for the device: INT8 (static, QDQ, per-channel) for CPUs and FP16
for GPUs, with a report of size, speed and accuracy against the FP32 original.

INT8 uses ONNX Runtime's *static* quantization: activations are calibrated on sample images
run through the same preprocessing as the workflow. ONNX Runtime's *dynamic* quantization is
not offered: on convolutional networks it ran 6–12 × slower than FP32 on the 2-core x86 CPUs
measured here.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Preprocess:
    """How a frame becomes the model's input: crop ``roi`` (x, y, w, h; whole frame when
    ``None``), resize to ``size`` (the fast path of ``agent.imaging``), normalise."""

    size: tuple[int, int] = (224, 224)
    roi: tuple[int, int, int, int] | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @cached_property
    def _normalize(self) -> Any:
        from agent.imaging import Normalizer

        return Normalizer(self.mean, self.std)

    def __call__(self, data: Any) -> np.ndarray:
        from agent.imaging import load_image, resize

        image = load_image(data, origin=str(data)[:80] if isinstance(data, Path) else "calibration image")
        if self.roi is not None:
            image = image.crop(*self.roi)
        small = resize(image, *self.size)
        return self._normalize(small.pixels())  # type: ignore[no-any-return]


def image_files(directory: Path, limit: int | None = None) -> list[Path]:
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return files[:limit] if limit else files


def _batched(name: str, tensors: Iterable[np.ndarray], batch: int) -> Iterator[dict[str, np.ndarray]]:
    import numpy as np

    chunk: list[np.ndarray] = []
    for tensor in tensors:
        chunk.append(tensor)
        if len(chunk) == batch:
            yield {name: np.stack(chunk)}
            chunk = []
    if chunk:
        yield {name: np.stack(chunk)}


def quantize_int8(
    model: Path,
    output: Path,
    tensors: Iterable[np.ndarray],
    *,
    input_name: str | None = None,
    per_channel: bool = True,
    method: str = "minmax",
    keep_head_fp32: bool = True,
) -> Path:
    """Write an INT8 QDQ model calibrated on ``tensors`` (one preprocessed sample each).

    ``method``: ``minmax``, ``entropy`` or ``percentile`` (ONNX Runtime's calibrators).
    ``keep_head_fp32``: the operators after the last Conv/MatMul/Gemm (the output head: pooling
    to a score, affine calibration, sigmoid) stay FP32. On the reference model quantising the
    head cost 0.019 AUROC and keeping it FP32 cost nothing in speed; quantising only the
    convolutions kept accuracy but lost most of the speed-up (Q/DQ between every layer).
    Tensor and node names are shortened afterwards (QDQ adds many long names).
    """
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if input_name is None:
        input_name = (
            onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        )
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    prepared = output.with_suffix(".prepared.onnx")
    try:
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        batches = _batched(input_name, tensors, batch=8)

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(batches, None)

        quantize_static(
            str(prepared),
            str(output),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            nodes_to_exclude=_head_nodes(prepared) if keep_head_fp32 else [],
        )
    finally:
        prepared.unlink(missing_ok=True)
    _compact_names(output)
    return output


def _head_nodes(path: Path) -> list[str]:
    """Names of the nodes after the last Conv/MatMul/Gemm (ONNX graphs are topologically
    sorted), giving unnamed ones a name so that they can be excluded."""
    import onnx

    model = onnx.load(str(path))
    nodes = list(model.graph.node)
    last = max((i for i, node in enumerate(nodes) if node.op_type in ("Conv", "MatMul", "Gemm")), default=-1)
    head = []
    for index, node in enumerate(nodes[last + 1 :], start=last + 1):
        if not node.name:
            node.name = f"head_{index}"
        head.append(node.name)
    onnx.save(model, str(path))
    return head


def _compact_names(path: Path) -> None:
    """Rename internal tensors to short names, drop node names, doc strings and value_info.
    Graph inputs and outputs keep their names; the computation is unchanged."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    keep = {value.name for value in graph.input} | {value.name for value in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    del graph.value_info[:]
    for initializer in graph.initializer:
        initializer.name = short(initializer.name)
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        node.input[:] = [short(name) for name in node.input]
        node.output[:] = [short(name) for name in node.output]
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def convert_fp16(model: Path, output: Path) -> Path:
    """FP16 weights and arithmetic for GPU targets; inputs and outputs stay FP32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(onnx.load(str(model)), keep_io_types=True)
    onnx.save(converted, str(output))
    return output


@dataclass(frozen=True)
class Speed:
    batch: int
    median_ms: float
    p99_ms: float
    images_per_s: float


def measure_speed(
    model: Path, sample: np.ndarray, *, batch: int = 8, runs: int = 30, threads: int | None = None
) -> Speed:
    """Latency of one batch of ``batch`` copies of ``sample`` on ONNX Runtime's CPU provider."""
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    feeds = {name: np.stack([sample] * batch)}
    for _ in range(3):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    ordered = sorted(times)
    median = statistics.median(ordered)
    return Speed(
        batch, median * 1000, ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, batch / median
    )


def scores(model: Path, tensors: Sequence[np.ndarray], output: str, batch: int = 8) -> list[float]:
    """The scalar ``output`` of ``model`` for each tensor (its first element per sample)."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    result: list[float] = []
    for start in range(0, len(tensors), batch):
        (values,) = session.run([output], {name: np.stack(tensors[start : start + batch])})
        result.extend(float(v) for v in values.reshape(len(values), -1)[:, 0])
    return result


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative,
    ties counting half (Mann–Whitney U over average ranks). ``nan`` when one class is absent."""
    import numpy as np

    values = np.asarray(scores, np.float64)
    positive = np.asarray(positives, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # runs of equal scores
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
