"""Frame sources: the synthetic camera, a watched image folder, and OpenCV ``VideoCapture``
(camera index, RTSP/HTTP URL or video file).

Each source is a thread that puts ``Frame``s into a ``FrameQueue`` until it is stopped or runs
out; a source never raises into the agent: a failing camera is logged, retried with backoff,
and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.sources.frames import Frame, FrameQueue

log = logging.getLogger(__name__)


class SyntheticSourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["synthetic"] = "synthetic"
    seed: int = 0
    defect_rate: float = Field(0.5, ge=0, le=1)
    fps: float | None = Field(None, gt=0, description="Frames per second; as fast as possible when unset.")
    count: int | None = Field(None, ge=0, description="Stop after this many frames; forever when unset.")
    encode: Literal["jpeg", "raw"] = Field(
        "jpeg", description="JPEG bytes (like an IP camera) or BGR arrays."
    )


class FolderSourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["folder"] = "folder"
    path: Path
    pattern: str = "*.jpg"
    watch: bool = Field(False, description="Keep polling for new files instead of stopping at the end.")
    poll_s: float = Field(0.5, gt=0)


class CaptureSourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["capture"] = "capture"
    uri: str | int = Field(description="Camera index, RTSP/HTTP URL or video file path.")
    fps: float | None = Field(None, gt=0)
    reconnect_s: float = Field(
        2.0, gt=0, description="First wait before reopening a lost stream (doubles to 30 s)."
    )
    loop: bool = Field(False, description="Restart a video file at its end.")


SourceSpec = SyntheticSourceSpec | FolderSourceSpec | CaptureSourceSpec


class Source(threading.Thread):
    """Base: a daemon thread feeding ``queue`` from ``frames()`` until stopped or exhausted."""

    def __init__(self, name: str, queue: FrameQueue, fps: float | None = None) -> None:
        super().__init__(name=f"edgefleet-source-{name}", daemon=True)
        self.source_name = name
        self.queue = queue
        self.period = 1.0 / fps if fps else 0.0
        self.produced = 0
        self.errors = 0
        self._stop_event = threading.Event()

    def frames(self) -> Iterator[Any]:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop_event.set()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def run(self) -> None:
        next_due = time.monotonic()
        try:
            for data, meta in self.frames():
                if self.stopping:
                    break
                frame = Frame(data=data, source=self.source_name, seq=self.produced, meta=meta)
                self.produced += 1
                if not self.queue.put(frame):  # the queue was closed: nobody reads any more
                    break
                if self.period:
                    next_due += self.period
                    if self._stop_event.wait(max(0.0, next_due - time.monotonic())):
                        break
        except Exception:  # a broken source is logged, never fatal to the agent
            self.errors += 1
            log.exception("frame source %s failed", self.source_name)
        finally:
            log.info("frame source %s stopped after %d frames", self.source_name, self.produced)


class SyntheticSource(Source):
    def __init__(self, name: str, spec: SyntheticSourceSpec, queue: FrameQueue) -> None:
        super().__init__(name, queue, spec.fps)
        self.spec = spec

    def frames(self) -> Iterator[Any]:
        import cv2

        from agent.sources.synthetic import SurfaceGenerator

        generator = SurfaceGenerator(self.spec.seed, defect_rate=self.spec.defect_rate)
        index = 0
        while self.spec.count is None or index < self.spec.count:
            sample = generator.sample(index)
            data: Any = sample.image
            if self.spec.encode == "jpeg":
                ok, encoded = cv2.imencode(".jpg", sample.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
                if not ok:
                    raise RuntimeError(f"JPEG encoding of synthetic frame {index} failed")
                data = encoded.tobytes()
            yield data, {"truth": {"defect": sample.defect, "material": sample.material, "index": index}}
            index += 1


class FolderSource(Source):
    """Reads image files in name order; with ``watch`` keeps polling for new ones. A file is
    taken once its size has stopped changing (so half-copied files are not read)."""

    def __init__(self, name: str, spec: FolderSourceSpec, queue: FrameQueue) -> None:
        super().__init__(name, queue)
        self.spec = spec

    def frames(self) -> Iterator[Any]:
        seen: set[Path] = set()
        sizes: dict[Path, int] = {}
        while not self.stopping:
            fresh = []
            for path in sorted(self.spec.path.glob(self.spec.pattern)):
                if path in seen or not path.is_file():
                    continue
                size = path.stat().st_size
                if self.spec.watch and sizes.get(path) != size:
                    sizes[path] = size  # look again next poll: still being written?
                    continue
                fresh.append(path)
            for path in fresh:
                seen.add(path)
                sizes.pop(path, None)
                try:
                    yield path.read_bytes(), {"path": str(path)}
                except OSError as exc:
                    self.errors += 1
                    log.warning("frame source %s: cannot read %s: %s", self.source_name, path, exc)
            if not self.spec.watch and not sizes:
                return
            self._stop_event.wait(self.spec.poll_s)


class CaptureSource(Source):
    """OpenCV ``VideoCapture``; a lost stream is reopened with backoff (2 s doubling to 30 s)."""

    def __init__(self, name: str, spec: CaptureSourceSpec, queue: FrameQueue) -> None:
        super().__init__(name, queue, spec.fps)
        self.spec = spec
        self.reconnects = 0

    def frames(self) -> Iterator[Any]:
        import cv2

        backoff = self.spec.reconnect_s
        while not self.stopping:
            capture = cv2.VideoCapture(self.spec.uri)
            if not capture.isOpened():
                self.errors += 1
                log.warning(
                    "frame source %s: cannot open %s; retrying in %.1f s",
                    self.source_name,
                    self.spec.uri,
                    backoff,
                )
                if self._stop_event.wait(backoff):
                    return
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = self.spec.reconnect_s
            try:
                while not self.stopping:
                    ok, image = capture.read()
                    if not ok:
                        break
                    yield image, {}
            finally:
                capture.release()
            is_file = isinstance(self.spec.uri, str) and Path(self.spec.uri).is_file()
            if is_file and not self.spec.loop:
                return
            self.reconnects += 1


def make_source(name: str, spec: SourceSpec, queue: FrameQueue) -> Source:
    if isinstance(spec, SyntheticSourceSpec):
        return SyntheticSource(name, spec, queue)
    if isinstance(spec, FolderSourceSpec):
        return FolderSource(name, spec, queue)
    return CaptureSource(name, spec, queue)
