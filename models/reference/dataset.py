"""Training data for the reference models: generated frames as the model will see them.

Each frame of ``SurfaceGenerator(seed)`` goes through one of the ways a device may receive it
(as rendered; JPEG at quality 75–95 decoded at full resolution; the same decoded at half
resolution), chosen per frame from ``(seed, index)``, and is cropped and resized exactly as
``evaluate.preprocess`` does. NumPy and OpenCV only, so worker processes start fast.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

try:
    from models.reference.evaluate import DECODES, INPUT_SIZE, MAP_SIZE, crop_resize, decode, map_target
except ModuleNotFoundError:  # run as a script from models/reference/
    from evaluate import DECODES, INPUT_SIZE, MAP_SIZE, crop_resize, decode, map_target  # type: ignore[no-redef,import-not-found]

from agent.sources.synthetic import DEFECTS, MATERIALS, SurfaceGenerator


@dataclass(frozen=True)
class TrainingSet:
    crops: npt.NDArray[np.uint8]
    """N×224×224×3 uint8 BGR."""
    targets: npt.NDArray[np.uint8]
    """N×28×28, 1 where the cell holds a defect."""
    defective: npt.NDArray[np.uint8]
    defect: npt.NDArray[np.int8]
    """Index into ``DEFECTS``, -1 for a good part."""
    material: npt.NDArray[np.int8]
    """Index into ``MATERIALS``."""


_generators: dict[tuple[int, tuple[str, ...]], SurfaceGenerator] = {}


def _one(job: tuple[int, int, tuple[str, ...]]) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    seed, index, materials = job
    generator = _generators.get((seed, materials))
    if generator is None:
        cv2.setNumThreads(1)  # one worker per core
        generator = _generators[(seed, materials)] = SurfaceGenerator(seed, materials=materials)
    sample = generator.sample(index)
    rng = np.random.default_rng([seed, index, 1])
    mode = DECODES[int(rng.integers(len(DECODES)))]
    frame = decode(sample.image, mode, quality=int(rng.integers(75, 96)))
    return (
        crop_resize(frame),
        map_target(sample.mask).astype(np.uint8),
        int(sample.defective),
        DEFECTS.index(sample.defect) if sample.defect else -1,
        MATERIALS.index(sample.material),
    )


def build(count: int, seed: int, *, materials: tuple[str, ...] = MATERIALS, workers: int = 2) -> TrainingSet:
    """Frames ``0 .. count-1`` of ``SurfaceGenerator(seed, materials=materials)``; the result
    does not depend on ``workers``."""
    crops = np.empty((count, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    targets = np.empty((count, MAP_SIZE, MAP_SIZE), np.uint8)
    labels = np.empty((count, 3), np.int8)
    jobs = [(seed, index, materials) for index in range(count)]
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for index, (crop, target, defective, defect, material) in enumerate(
            pool.map(_one, jobs, chunksize=32)
        ):
            crops[index] = crop
            targets[index] = target
            labels[index] = (defective, defect, material)
    return TrainingSet(crops, targets, labels[:, 0].astype(np.uint8), labels[:, 1], labels[:, 2])
