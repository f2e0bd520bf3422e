"""Frame queues and the folder / capture / synthetic sources."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.sources.frames import Frame, FrameQueue
from agent.sources.readers import (
    CaptureSource,
    CaptureSourceSpec,
    FolderSource,
    FolderSourceSpec,
    SyntheticSource,
    SyntheticSourceSpec,
)


def frame(seq: int) -> Frame:
    return Frame(data=b"x", source="test", seq=seq)


def drain(queue: FrameQueue) -> list[Frame]:
    queue.close()
    frames = []
    while (item := queue.get(timeout=5)) is not None:
        frames.append(item)
    return frames


def test_live_queue_drops_the_oldest_and_counts() -> None:
    queue = FrameQueue(3, "drop_oldest")
    for seq in range(10):
        assert queue.put(frame(seq))
    assert queue.dropped == 7
    assert [f.seq for f in drain(queue)] == [7, 8, 9]


def test_blocking_queue_loses_nothing() -> None:
    queue = FrameQueue(2, "block")
    got: list[int] = []

    def consume() -> None:
        while (item := queue.get(timeout=5)) is not None:
            got.append(item.seq)
            time.sleep(0.001)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for seq in range(50):
        assert queue.put(frame(seq), timeout=5)
    queue.close()
    consumer.join(5)
    assert got == list(range(50))
    assert queue.dropped == 0


def test_closed_queue_refuses_and_drains() -> None:
    queue = FrameQueue(4)
    queue.put(frame(1))
    queue.close()
    assert not queue.put(frame(2))
    assert queue.get(timeout=1) is not None
    assert queue.get(timeout=1) is None


def run_source(source: threading.Thread, queue: FrameQueue) -> list[Frame]:
    source.start()
    source.join(20)
    assert not source.is_alive()
    return drain(queue)


def test_folder_source_reads_files_in_order(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.jpg", "c.png"):
        (tmp_path / name).write_bytes(name.encode())
    queue = FrameQueue(10, "block")
    frames = run_source(FolderSource("dir", FolderSourceSpec(path=tmp_path), queue), queue)
    assert [f.data for f in frames] == [b"a.jpg", b"b.jpg"]
    assert frames[0].meta["path"].endswith("a.jpg")


def test_watched_folder_picks_up_new_files_once_complete(tmp_path: Path) -> None:
    queue = FrameQueue(10, "block")
    source = FolderSource("dir", FolderSourceSpec(path=tmp_path, watch=True, poll_s=0.05), queue)
    source.start()
    (tmp_path / "1.jpg").write_bytes(b"first")
    first = queue.get(timeout=5)
    (tmp_path / "2.jpg").write_bytes(b"second")
    second = queue.get(timeout=5)
    source.stop()
    source.join(5)
    assert first is not None
    assert second is not None
    assert (first.data, second.data) == (b"first", b"second")


def test_capture_source_reads_a_video_file(tmp_path: Path) -> None:
    path = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), i * 40, np.uint8))
    writer.release()
    queue = FrameQueue(10, "block")
    frames = run_source(CaptureSource("cam", CaptureSourceSpec(uri=str(path)), queue), queue)
    assert len(frames) == 5
    assert frames[0].data.shape == (48, 64, 3)


def test_capture_source_retries_a_missing_camera_until_stopped(tmp_path: Path) -> None:
    queue = FrameQueue(2)
    source = CaptureSource("cam", CaptureSourceSpec(uri="rtsp://127.0.0.1:1/none", reconnect_s=0.05), queue)
    source.start()
    time.sleep(0.5)
    source.stop()
    source.join(10)
    assert not source.is_alive()
    assert source.errors >= 2


def test_synthetic_camera_yields_jpegs_with_ground_truth() -> None:
    queue = FrameQueue(10, "block")
    frames = run_source(SyntheticSource("synth", SyntheticSourceSpec(count=3, seed=5), queue), queue)
    assert len(frames) == 3
    assert frames[0].data[:2] == b"\xff\xd8"
    assert set(frames[0].meta["truth"]) == {"defect", "material", "index"}


@pytest.mark.parametrize("fps", [50.0])
def test_sources_honour_fps(fps: float) -> None:
    queue = FrameQueue(50, "block")
    source = SyntheticSource("synth", SyntheticSourceSpec(count=5, fps=fps, encode="raw"), queue)
    started = time.monotonic()
    run_source(source, queue)
    assert time.monotonic() - started >= 4 / fps  # paced, not as fast as possible
