"""The synthetic camera: reproducible frames, honest masks, every material and defect, datasets."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.sources.synthetic import (
    DEFECTS,
    FRAME_SIZE,
    MATERIALS,
    PART_ROI,
    SurfaceGenerator,
    SurfaceSample,
    part_roi,
    write_dataset,
)


@pytest.fixture(scope="module")
def samples() -> list[SurfaceSample]:
    generator = SurfaceGenerator(11)
    return [generator.sample(i) for i in range(300)]


def outside_roi(array: np.ndarray, roi: tuple[int, int, int, int] = PART_ROI) -> np.ndarray:
    x, y, w, h = roi
    outside = np.ones(array.shape[:2], bool)
    outside[y : y + h, x : x + w] = False
    return array[outside]


def test_roi_is_the_centred_square() -> None:
    assert FRAME_SIZE == (1280, 720)
    assert PART_ROI == (280, 0, 720, 720) == part_roi(FRAME_SIZE)
    assert part_roi((640, 360)) == (140, 0, 360, 360)
    with pytest.raises(ValueError, match="landscape"):
        part_roi((720, 1280))


def test_frame_and_mask_format(samples: list[SurfaceSample]) -> None:
    for sample in samples[:20]:
        assert sample.image.shape == (720, 1280, 3)
        assert sample.image.dtype == np.uint8
        assert sample.mask.shape == (720, 1280)
        assert sample.mask.dtype == np.uint8
        assert set(np.unique(sample.mask)) <= {0, 255}
        assert sample.material in MATERIALS
        assert sample.defect is None or sample.defect in DEFECTS
        assert sample.defective == (sample.defect is not None)


def test_same_seed_and_index_give_the_same_bytes_in_any_order() -> None:
    first = SurfaceGenerator(5).sample(7)
    other = SurfaceGenerator(5)
    for index in (3, 0, 9):
        other.sample(index)
    again = other.sample(7)
    assert first.image.tobytes() == again.image.tobytes()
    assert first.mask.tobytes() == again.mask.tobytes()
    assert (first.defect, first.material, first.index) == (again.defect, again.material, 7)


def test_different_seeds_and_indices_give_different_frames() -> None:
    base = SurfaceGenerator(5).sample(7).image
    assert not np.array_equal(base, SurfaceGenerator(6).sample(7).image)
    assert not np.array_equal(base, SurfaceGenerator(5).sample(8).image)


def test_iteration_walks_the_indices() -> None:
    generator = SurfaceGenerator(2)
    iterator = iter(generator)
    for index in range(3):
        sample = next(iterator)
        assert sample.index == index
        assert np.array_equal(sample.image, generator.sample(index).image)


def test_masks_are_non_empty_exactly_for_defective_parts_and_inside_the_part(
    samples: list[SurfaceSample],
) -> None:
    for sample in samples:
        assert bool(sample.mask.any()) == sample.defective, (sample.index, sample.defect)
        assert not outside_roi(sample.mask).any(), sample.index


def test_a_defect_changes_the_part_where_its_mask_says() -> None:
    """The same part drawn good and drawn defective differs on the mask and (almost) nowhere else."""
    good, bad = SurfaceGenerator(3, defect_rate=0.0), SurfaceGenerator(3, defect_rate=1.0)
    seen = set()
    for index in range(40):
        clean, damaged = good.sample(index), bad.sample(index)
        assert clean.material == damaged.material
        seen.add(damaged.defect)
        diff = np.abs(clean.image.astype(np.int16) - damaged.image).max(axis=2)
        # soft-edged defects (stains, dents) fade out over a few pixels past their mask
        near = cv2.dilate(damaged.mask, np.ones((15, 15), np.uint8)) > 0
        assert diff[damaged.mask > 0].mean() >= 4, (index, damaged.defect, damaged.material)
        assert (diff[~near] > 12).sum() == 0, (index, damaged.defect)
    assert seen == set(DEFECTS)


def test_every_material_and_defect_appears(samples: list[SurfaceSample]) -> None:
    materials = Counter(s.material for s in samples)
    defects = Counter(s.defect for s in samples if s.defect is not None)
    assert set(materials) == set(MATERIALS)
    assert set(defects) == set(DEFECTS)
    assert min(materials.values()) >= 40
    assert min(defects.values()) >= 15
    defective = sum(s.defective for s in samples) / len(samples)
    assert 0.4 <= defective <= 0.6


def test_defect_rate_and_restrictions() -> None:
    good = SurfaceGenerator(1, defect_rate=0.0)
    assert not any(good.sample(i).defective for i in range(10))
    bad = SurfaceGenerator(1, defect_rate=1.0, materials=["wood"], defects=["pit"])
    drawn = [bad.sample(i) for i in range(10)]
    assert {(s.material, s.defect) for s in drawn} == {("wood", "pit")}


def test_other_frame_sizes_keep_the_part_in_the_centred_square() -> None:
    generator = SurfaceGenerator(4, size=(640, 360), defect_rate=1.0)
    sample = generator.sample(0)
    assert sample.image.shape == (360, 640, 3)
    assert sample.mask.any()
    assert not outside_roi(sample.mask, generator.roi).any()


@pytest.mark.parametrize(
    "kwargs",
    [{"seed": -1}, {"defect_rate": 1.5}, {"materials": ["glass"]}, {"defects": ["burn"]}, {"materials": []}],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        SurfaceGenerator(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index"):
        SurfaceGenerator().sample(-1)


def test_write_dataset(tmp_path: Path) -> None:
    out = tmp_path / "set"
    assert write_dataset(out, 8, seed=9, quality=85) == out
    with (out / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == [f"{i:06d}.jpg" for i in range(8)]
    generator = SurfaceGenerator(9)
    for i, row in enumerate(rows):
        expected = generator.sample(i)
        image = cv2.imread(str(out / row["file"]), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_GRAYSCALE)
        assert image.shape == (720, 1280, 3)
        assert np.abs(image.astype(np.int16) - expected.image).mean() < 4  # a JPEG of the frame
        assert np.array_equal(mask, expected.mask)  # PNG: lossless
        assert row["defect"] == (expected.defect or "")
        assert row["material"] == expected.material
        assert row["defective"] == str(int(expected.defective))
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 8 * 2 + 1
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]
