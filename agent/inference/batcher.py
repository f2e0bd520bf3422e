"""Dynamic batching: coalesce concurrent single-sample requests into one model call.

The semantics of Triton's dynamic batcher: a batch is dispatched as soon as it holds
``max_batch`` samples, or when the oldest waiting sample has waited ``max_wait_ms``, whichever
comes first. Each caller gets back its own slice of the outputs. With ``max_batch == 1`` (or a
model without a dynamic batch axis) there is no queue: the caller's thread runs the model.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from agent.inference.backend import Session
from agent.inference.errors import InferenceError, InferenceFailed, InputMismatch
from agent.inference.store import TensorSpec

if TYPE_CHECKING:
    import numpy as np

Sample = Mapping[str, "np.ndarray"]


def numpy_dtype(spec: TensorSpec) -> np.dtype[Any]:
    """The numpy dtype of a tensor (ONNX strings are numpy objects)."""
    import numpy as np

    return np.dtype(object) if spec.dtype == "str" else np.dtype(spec.dtype)


def check_sample(inputs: tuple[TensorSpec, ...], sample: Sample, model: str) -> dict[str, np.ndarray]:
    """Validate one sample against the model inputs (names, dtype, shape without the batch
    axis) and return it with each array's batch axis removed. Raises ``InputMismatch``."""
    import numpy as np

    expected = {spec.name: spec for spec in inputs}
    missing = sorted(set(expected) - set(sample))
    extra = sorted(set(sample) - set(expected))
    if missing or extra:
        raise InputMismatch(
            f"model '{model}' takes inputs {sorted(expected)}; "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}"
        )
    checked: dict[str, np.ndarray] = {}
    for name, spec in expected.items():
        value = sample[name]
        if not isinstance(value, np.ndarray):
            raise InputMismatch(
                f"model '{model}' input '{name}' must be an array, got {type(value).__name__}"
            )
        if spec.dtype == "str" and value.dtype.kind in "OU":
            value = value.astype(object)
        elif value.dtype.name != spec.dtype:
            raise InputMismatch(
                f"model '{model}' input '{name}' expects {spec.dtype}, got {value.dtype.name}"
            )
        per_sample = spec.shape[1:] if spec.batched or (spec.shape and spec.shape[0] == 1) else spec.shape
        if value.ndim == len(per_sample) + 1 and value.shape[0] == 1:
            value = value[0]
        fixed_ok = value.ndim == len(per_sample) and all(
            not isinstance(want, int) or want == got
            for want, got in zip(per_sample, value.shape, strict=False)
        )
        if not fixed_ok:
            want_text = "×".join(str(d) if isinstance(d, int) else "?" for d in per_sample)
            raise InputMismatch(
                f"model '{model}' input '{name}' expects shape {want_text} per sample, "
                f"got {'×'.join(map(str, value.shape))}"
            )
        checked[name] = value
    return checked


class _Request:
    __slots__ = ("future", "sample")

    def __init__(self, sample: dict[str, np.ndarray]) -> None:
        self.sample = sample
        self.future: Future[dict[str, np.ndarray]] = Future()


class DynamicBatcher:
    """Runs one session for many callers. Thread-safe; ``close`` fails what is still queued."""

    def __init__(self, session: Session, *, model: str, max_batch: int = 8, max_wait_ms: float = 2.0) -> None:
        self.session = session
        self.model = model
        batched = all(spec.batched for spec in session.inputs)
        self.max_batch = max(1, max_batch) if batched else 1
        self.max_wait_s = max(0.0, max_wait_ms) / 1000
        self.batches = 0
        self.samples = 0
        self.batch_sizes: dict[int, int] = {}
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._worker: threading.Thread | None = None
        if self.max_batch > 1:
            self._worker = threading.Thread(
                target=self._serve, name=f"edgefleet-batcher-{model}", daemon=True
            )
            self._worker.start()

    def infer(self, sample: Sample, timeout: float | None = None) -> dict[str, np.ndarray]:
        """Run one sample (arrays without a batch axis) and return its outputs (likewise)."""
        checked = check_sample(self.session.inputs, sample, self.model)
        if self._worker is None:
            outputs = self._run([checked])
            return outputs[0]
        request = _Request(checked)
        with self._cond:
            if self._closed:
                raise InferenceFailed(f"model '{self.model}' is being unloaded")
            self._queue.append(request)
            self._cond.notify()
        return request.future.result(timeout)

    def _run(self, samples: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        import numpy as np

        feeds = {name: np.stack([sample[name] for sample in samples]) for name in samples[0]}
        outputs = self.session.run(feeds)
        self.batches += 1
        self.samples += len(samples)
        self.batch_sizes[len(samples)] = self.batch_sizes.get(len(samples), 0) + 1
        return [{name: value[index] for name, value in outputs.items()} for index in range(len(samples))]

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed and not self._queue:
                    return
                deadline = time.monotonic() + self.max_wait_s
                while len(self._queue) < self.max_batch and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            try:
                results = self._run([request.sample for request in batch])
            except InferenceError as exc:
                for request in batch:
                    request.future.set_exception(exc)
            except Exception as exc:  # noqa: BLE001 - a backend bug must not kill the worker
                failure = InferenceFailed(f"model '{self.model}': {type(exc).__name__}: {exc}")
                for request in batch:
                    request.future.set_exception(failure)
            else:
                for request, result in zip(batch, results, strict=True):
                    request.future.set_result(result)

    def close(self) -> None:
        """Stop taking requests; the queued ones still run, then the worker exits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30)
