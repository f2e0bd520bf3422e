"""A synthetic camera for surface inspection: textured parts with labelled defects.

Each frame shows one part surface — brushed ``metal``, woven ``fabric``, ``wood`` grain or matte
``plastic`` — filling the centred square of the frame (``PART_ROI``), on a dark fixture. Half of
the parts (``defect_rate``) carry one defect — a ``scratch``, ``crack``, ``stain``, ``pit``
cluster or ``dent`` — with a pixel mask of where it is. Lighting, texture phase and scale, and
the size, position and contrast of defects vary from frame to frame; some defects are faint.

Frames are reproducible: ``SurfaceGenerator(seed).sample(index)`` returns the same bytes for
the same ``(seed, index)`` whatever was sampled before, in any process, with the same NumPy
and OpenCV versions. It is the demo's live camera, the training data of the reference models
in ``models/`` and the held-out data their tests measure them on.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from agent.fsutil import atomic_write

__all__ = [
    "DEFECTS",
    "FRAME_SIZE",
    "MATERIALS",
    "PART_ROI",
    "SurfaceGenerator",
    "SurfaceSample",
    "part_roi",
    "write_dataset",
]

FRAME_SIZE: Final = (1280, 720)
"""Default frame size, (width, height)."""
PART_ROI: Final = (280, 0, 720, 720)
"""Where the part surface is in a default frame: (x, y, width, height)."""
MATERIALS: Final = ("metal", "fabric", "wood", "plastic")
DEFECTS: Final = ("scratch", "crack", "stain", "pit", "dent")

Image = npt.NDArray[np.uint8]
Field = npt.NDArray[np.float32]
Rng = np.random.Generator

_NOISE_TILE = 1024  # side of the per-generator sensor-noise tile that frames crop from


@dataclass(frozen=True)
class SurfaceSample:
    """One frame. ``mask`` is 255 exactly on the defect's pixels (all zero for a good part)."""

    image: Image
    """H×W×3 uint8, BGR."""
    mask: Image
    """H×W uint8, 255 where defective."""
    defect: str | None
    """``None`` for a good part, else one of ``DEFECTS``."""
    material: str
    index: int

    @property
    def defective(self) -> bool:
        return self.defect is not None


def part_roi(size: tuple[int, int] = FRAME_SIZE) -> tuple[int, int, int, int]:
    """The part's square (x, y, w, h) in a frame of ``size`` (width, height): the centred
    square as tall as the frame."""
    width, height = size
    if width < height or height < 64:
        raise ValueError(f"frame size {size} must be landscape and at least 64 px tall")
    return ((width - height) // 2, 0, height, height)


class SurfaceGenerator:
    """Frames of parts, reproducible per ``(seed, index)``.

    ``materials`` and ``defects`` restrict what is drawn (each is chosen uniformly);
    ``defect_rate`` is the probability that a part is defective. The part at an index does not
    depend on ``defect_rate``: two generators with the same seed, materials and defects, one
    with rate 0 and one with rate 1, give the same part at each index, good and with its defect.
    A 1280×720 frame takes about 12 ms on one x86 core.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        defect_rate: float = 0.5,
        size: tuple[int, int] = FRAME_SIZE,
        materials: Sequence[str] = MATERIALS,
        defects: Sequence[str] = DEFECTS,
    ) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if not 0.0 <= defect_rate <= 1.0:
            raise ValueError(f"defect_rate must be in [0, 1], got {defect_rate}")
        unknown = [m for m in materials if m not in MATERIALS] + [d for d in defects if d not in DEFECTS]
        if unknown or not materials or (defect_rate > 0 and not defects):
            raise ValueError(f"unknown or empty materials/defects: {unknown or 'empty'}")
        self.seed = seed
        self.defect_rate = defect_rate
        self.size = size
        self.roi = part_roi(size)
        self.materials = tuple(materials)
        self.defects = tuple(defects)
        side = self.roi[2]
        self._scale = side / 720.0
        rng = np.random.default_rng([seed, 0x5EED])
        tile = max(_NOISE_TILE, side + 64)
        self._noise = rng.standard_normal((tile, tile), dtype=np.float32)
        self._background = _fixture(rng, size, self.roi)
        axis = (np.arange(side, dtype=np.float32) - (side - 1) / 2) / (side / 2)
        self._axis = axis  # -1 .. 1 across the part, for lighting

    def sample(self, index: int) -> SurfaceSample:
        """The frame at ``index`` (>= 0); the same bytes every time for this seed."""
        if index < 0:
            raise ValueError(f"index must be >= 0, got {index}")
        # Separate streams for the draw, the texture, the defect and the light: a part drawn
        # good and the same part drawn defective differ only by the defect.
        pick, texture, damage, light = (np.random.default_rng([self.seed, index, k]) for k in range(4))
        material = self.materials[int(pick.integers(len(self.materials)))]
        defective = pick.random() < self.defect_rate
        defect = self.defects[int(pick.integers(len(self.defects)))] if defective else None
        side = self.roi[2]
        surface = _TEXTURES[material](texture, side, self._scale)
        part_mask = np.zeros((side, side), np.uint8)
        if defect is not None:
            _DEFECT_PAINTERS[defect](damage, surface, part_mask, self._scale, material)
        self._light(light, surface, material)
        gain = float(light.uniform(0.8, 1.2))
        frame = np.asarray(cv2.convertScaleAbs(self._background, alpha=gain), np.uint8)
        x, y, w, h = self.roi
        np.maximum(surface, 0, out=surface)
        frame[y : y + h, x : x + w] = cv2.merge([cv2.convertScaleAbs(channel) for channel in surface])
        mask = np.zeros(frame.shape[:2], np.uint8)
        mask[y : y + h, x : x + w] = part_mask
        return SurfaceSample(frame, mask, defect, material, index)

    def __iter__(self) -> Iterator[SurfaceSample]:
        """Frames 0, 1, 2, … forever."""
        index = 0
        while True:
            yield self.sample(index)
            index += 1

    def _light(self, rng: Rng, surface: Field, material: str) -> None:
        """Illumination (gain, gradient, vignette), optional defocus and sensor noise, in place."""
        side = surface.shape[1]
        a = self._axis
        gain = np.float32(rng.uniform(0.72, 1.22))
        gx, gy = (np.float32(v) for v in rng.uniform(-0.22, 0.22, 2))
        vignette = np.float32(rng.uniform(0.0, 0.35) / 2)
        light = (1 + gx * a)[None, :] + (gy * a)[:, None]
        light *= (1 - vignette * a * a)[None, :] - (vignette * a * a)[:, None]
        light *= gain
        surface *= light[None]
        if rng.random() < 0.3:
            sigma = float(rng.uniform(0.5, 1.1) * self._scale)
            for channel in surface:
                cv2.GaussianBlur(channel, (0, 0), sigma, dst=channel)
        sigma_noise = rng.uniform(1.5, 3.5) + (rng.uniform(1.5, 3.5) if material == "plastic" else 0.0)
        ox, oy = (int(v) for v in rng.integers(0, self._noise.shape[0] - side, 2))
        noise = self._noise[oy : oy + side, ox : ox + side] * np.float32(sigma_noise)
        surface += noise[None]


def write_dataset(
    out_dir: Path,
    count: int,
    *,
    seed: int = 0,
    defect_rate: float = 0.5,
    quality: int = 90,
    start: int = 0,
) -> Path:
    """Write frames ``start .. start+count-1`` of ``SurfaceGenerator(seed)`` to ``out_dir``:
    ``NNNNNN.jpg`` (JPEG at ``quality``), ``NNNNNN_mask.png`` and ``labels.csv`` with columns
    ``file, mask, defect, material, defective`` (``defect`` empty and ``defective`` 0 for a
    good part). Every file is written to a temporary name and renamed, so a reader never sees
    a partial file. Returns ``out_dir``."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = SurfaceGenerator(seed, defect_rate=defect_rate)
    rows: list[tuple[str, str, str, str, int]] = []
    for index in range(start, start + count):
        sample = generator.sample(index)
        name = f"{index:06d}"
        jpeg = _encode(".jpg", sample.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        atomic_write(out_dir / f"{name}.jpg", jpeg, durable=False)
        mask = _encode(".png", sample.mask, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        atomic_write(out_dir / f"{name}_mask.png", mask, durable=False)
        rows.append(
            (f"{name}.jpg", f"{name}_mask.png", sample.defect or "", sample.material, int(sample.defective))
        )
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(("file", "mask", "defect", "material", "defective"))
    writer.writerows(rows)
    atomic_write(out_dir / "labels.csv", text.getvalue().encode(), durable=False)
    return out_dir


def _encode(ext: str, image: Image, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise OSError(f"OpenCV could not encode a {ext} image")
    return buf.tobytes()


# --- textures: each returns the part surface as float32 BGR planes (3×side×side, 0..255) ----


def _smooth_noise(rng: Rng, shape: tuple[int, int], out: tuple[int, int]) -> Field:
    """Gaussian noise of ``shape`` (rows, cols) stretched to ``out`` (rows, cols) bilinearly."""
    small = rng.standard_normal(shape, dtype=np.float32)
    return np.asarray(cv2.resize(small, (out[1], out[0]), interpolation=cv2.INTER_LINEAR), np.float32)


def _maybe_transpose(rng: Rng, field: Field) -> Field:
    return np.ascontiguousarray(field.T) if rng.random() < 0.5 else field


def _colorize(gray: Field, color: npt.NDArray[np.float64]) -> Field:
    return color.astype(np.float32)[:, None, None] * gray[None]


def _metal(rng: Rng, side: int, scale: float) -> Field:
    coarse = _smooth_noise(rng, (side, int(rng.integers(4, 16))), (side, side))
    fine = _smooth_noise(rng, (side, int(rng.integers(40, 120))), (side, side))
    rows = np.arange(side, dtype=np.float32)
    band = np.float32(rng.uniform(0.1, 0.9) * side)
    width = np.float32(rng.uniform(0.1, 0.35) * side)
    sheen = np.float32(rng.uniform(0.05, 0.18)) * np.exp(-(((rows - band) / width) ** 2))
    gray = coarse * np.float32(rng.uniform(0.015, 0.035))
    gray += fine * np.float32(rng.uniform(0.01, 0.03))
    gray += (sheen + np.float32(rng.uniform(0.45, 0.75)))[:, None]
    gray = _maybe_transpose(rng, gray)
    tint = np.array([1.0 + rng.uniform(0, 0.08), 1.0 + rng.uniform(0, 0.04), 1.0]) * 255.0
    return _colorize(gray, tint)


_FABRIC_COLORS = np.array(
    [(140, 90, 50), (120, 120, 120), (150, 180, 200), (80, 120, 70), (60, 60, 160), (40, 40, 40)],
    dtype=np.float64,
)


def _fabric(rng: Rng, side: int, scale: float) -> Field:
    period = rng.uniform(5.0, 12.0) * scale
    pos = np.arange(side, dtype=np.float32) / np.float32(period)
    u = pos + np.float32(rng.uniform(0, 2))
    v = pos + np.float32(rng.uniform(0, 2))
    sign_u = 1 - 2 * (np.floor(u) % 2)
    sign_v = 1 - 2 * (np.floor(v) % 2)
    on_top = 0.5 + 0.5 * sign_u[None, :] * sign_v[:, None]  # 1 where the warp thread is on top
    across_u = np.sin(np.float32(math.pi) * (u - np.floor(u)))
    across_v = np.sin(np.float32(math.pi) * (v - np.floor(v)))
    weave = across_v[:, None] + on_top * (across_u[None, :] - across_v[:, None])
    cells = int(side / period) + 2
    gray = _smooth_noise(rng, (cells, cells), (side, side)) * np.float32(0.04)
    gray += 0.74 + 0.26 * weave
    color = _FABRIC_COLORS[int(rng.integers(len(_FABRIC_COLORS)))] * rng.uniform(0.85, 1.2, 3)
    return _colorize(gray, color)


def _wood(rng: Rng, side: int, scale: float) -> Field:
    period = np.float32(rng.uniform(16.0, 45.0) * scale)
    t = _smooth_noise(rng, (int(rng.integers(3, 7)), int(rng.integers(3, 7))), (side, side))
    t *= np.float32(rng.uniform(10, 45) * scale)
    t += (np.arange(side, dtype=np.float32) + np.float32(rng.uniform(0, period)))[:, None]
    t += np.arange(side, dtype=np.float32)[None, :] * np.float32(rng.uniform(-0.15, 0.15))
    t /= period
    t *= np.float32(2 * math.pi)
    ring = np.float32(0.5) + np.float32(0.5) * np.cos(t)  # early wood 1, late wood 0
    sharpness = np.float32(rng.uniform(0.0, 1.0))
    gray = ring * (1 - sharpness + sharpness * ring)  # narrower late-wood bands: x .. x²
    gray += _smooth_noise(rng, (side, int(rng.integers(30, 90))), (side, side)) * np.float32(0.12)
    gray = _maybe_transpose(rng, gray)
    light = np.array([110.0, 165.0, 205.0]) * rng.uniform(0.8, 1.1) * rng.uniform(0.93, 1.07, 3)
    dark = light * rng.uniform(0.55, 0.8)
    return _colorize(gray, (light - dark) * 0.9) + dark.astype(np.float32)[:, None, None]


def _plastic(rng: Rng, side: int, scale: float) -> Field:
    gray = _smooth_noise(rng, (8, 8), (side, side)) * np.float32(rng.uniform(0.005, 0.02))
    gray += 1
    return _colorize(gray, rng.uniform(40, 200, 3))


_TEXTURES: dict[str, Callable[[Rng, int, float], Field]] = {
    "metal": _metal,
    "fabric": _fabric,
    "wood": _wood,
    "plastic": _plastic,
}


# --- defects: each paints into the surface planes (in place) and marks its pixels in the mask --

Crop = tuple[slice, slice]


def _place(rng: Rng, side: int, margin: float) -> tuple[float, float]:
    m = min(margin, side / 2 - 1)
    x, y = rng.uniform(m, side - m, 2)
    return float(x), float(y)


def _square(x: float, y: float, half: int) -> Crop:
    cx, cy = int(x), int(y)
    return (slice(cy - half, cy + half), slice(cx - half, cx + half))


def _planes(surface: Field, crop: Crop) -> Field:
    return surface[:, crop[0], crop[1]]


def _stroke_alpha(
    points: npt.NDArray[np.float64], side: int, thickness: int, weights: npt.NDArray[np.float64] | None = None
) -> tuple[Crop, Field]:
    """Anti-aliased polyline coverage (0..1) on a tight crop of the part: (crop, alpha)."""
    pad = thickness + 3
    x0 = max(int(points[:, 0].min()) - pad, 0)
    y0 = max(int(points[:, 1].min()) - pad, 0)
    x1 = min(int(points[:, 0].max()) + pad + 1, side)
    y1 = min(int(points[:, 1].max()) + pad + 1, side)
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    fixed = np.round((points - (x0, y0)) * 16).astype(np.int32)
    for i in range(len(fixed) - 1):
        value = 255 if weights is None else round(255 * float(weights[i]))
        start = (int(fixed[i, 0]), int(fixed[i, 1]))
        end = (int(fixed[i + 1, 0]), int(fixed[i + 1, 1]))
        cv2.line(canvas, start, end, value, thickness, cv2.LINE_AA, 4)
    return (slice(y0, y1), slice(x0, x1)), canvas.astype(np.float32) / np.float32(255)


def _mark(mask: Image, crop: Crop, region: npt.NDArray[np.bool_], grow: int = 1) -> None:
    marked = region.astype(np.uint8) * np.uint8(255)
    if grow:
        marked = np.asarray(cv2.dilate(marked, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)), np.uint8)
    np.maximum(mask[crop], marked, out=mask[crop])


def _scratch(rng: Rng, surface: Field, mask: Image, scale: float, material: str) -> None:
    side = surface.shape[1]
    length = rng.uniform(70, 380) * scale
    x, y = _place(rng, side, length / 2 + 8)
    angle = rng.uniform(0, math.pi)
    direction = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    t = np.linspace(-0.5, 0.5, 25)[:, None]
    bend = rng.uniform(-0.12, 0.12) * length
    points = np.array([x, y]) + t * length * direction + (1 - 4 * t * t) * bend * normal
    thickness = max(1, round(int(rng.integers(2, 5)) * scale))
    phase = rng.uniform(0, 6.3) + np.linspace(0, rng.uniform(1, 6), 24)
    fade = np.clip(0.75 + 0.3 * np.sin(phase), 0.55, 1)  # the scratch fades in and out
    crop, alpha = _stroke_alpha(points, side, thickness, fade)
    bright = rng.random() < (0.6 if material == "metal" else 0.35)
    contrast = rng.uniform(50, 100) / math.sqrt(thickness) * (1 if bright else -1)
    _planes(surface, crop)[...] += alpha * np.float32(contrast)
    _mark(mask, crop, alpha > 0.3)


def _walk(
    rng: Rng, start: npt.NDArray[np.float64], heading: float, steps: int, step: float
) -> npt.NDArray[np.float64]:
    turns = heading + np.cumsum(rng.normal(0, 0.35, steps))
    moves = np.stack([np.cos(turns), np.sin(turns)], axis=1) * step
    return np.vstack([start, start + np.cumsum(moves, axis=0)])


def _crack(rng: Rng, surface: Field, mask: Image, scale: float, material: str) -> None:
    side = surface.shape[1]
    length = rng.uniform(60, 260) * scale
    step = rng.uniform(4, 8) * scale
    n = max(4, int(length / step))
    x, y = _place(rng, side, length / 2 + 8)
    points = _walk(rng, np.array([x, y]), rng.uniform(0, 2 * math.pi), n, step)
    points -= (points.mean(axis=0) - (x, y)) * 0.5
    points = np.clip(points, 2, side - 3)
    thickness = max(1, round(int(rng.integers(1, 4)) * scale))
    strokes = [(points, thickness, rng.uniform(0.4, 0.8))]
    if rng.random() < 0.5:  # a branch
        fork = int(rng.integers(1, n))
        along = points[fork] - points[fork - 1]
        heading = math.atan2(along[1], along[0]) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1)
        branch = _walk(rng, points[fork], heading, max(3, int(n * rng.uniform(0.2, 0.5))), step)
        strokes.append((np.clip(branch, 2, side - 3), max(1, thickness - 1), rng.uniform(0.3, 0.6)))
    for stroke, width, depth in strokes:
        crop, alpha = _stroke_alpha(stroke, side, width)
        _planes(surface, crop)[...] *= 1 - alpha * np.float32(depth)
        _mark(mask, crop, alpha > 0.3)


_STAIN_TINTS = np.array([(30, 60, 90), (20, 20, 20), (40, 90, 150), (150, 150, 140)], dtype=np.float32)


def _stain(rng: Rng, surface: Field, mask: Image, scale: float, material: str) -> None:
    side = surface.shape[1]
    radius = rng.uniform(14, 70) * scale
    x, y = _place(rng, side, radius * 1.4 + 4)
    half = int(radius * 1.4) + 2
    crop = _square(x, y, half)
    grid = (np.arange(2 * half, dtype=np.float32) - half) / np.float32(radius)
    theta = rng.uniform(0, math.pi)
    c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    gx, gy = grid[None, :], grid[:, None]
    aspect = np.float32(rng.uniform(0.55, 1.0))
    d = np.sqrt((c * gx + s * gy) ** 2 + ((c * gy - s * gx) / aspect) ** 2)
    d += 0.25 * _smooth_noise(rng, (6, 6), (2 * half, 2 * half))
    alpha = np.clip((1 - d) / np.float32(rng.uniform(0.15, 0.5)), 0, 1)
    tint = _STAIN_TINTS[int(rng.integers(len(_STAIN_TINTS)))]
    region = _planes(surface, crop)
    base = region.mean(axis=(1, 2))
    if abs(float(tint.mean() - base.mean())) < 60:  # a stain the colour of the part is no stain
        tint = base * np.float32(0.35)
    region += np.float32(rng.uniform(0.25, 0.6)) * alpha[None] * (tint[:, None, None] - region)
    _mark(mask, crop, alpha > 0.4, grow=0)


def _pit(rng: Rng, surface: Field, mask: Image, scale: float, material: str) -> None:
    side = surface.shape[1]
    half = int(40 * scale)
    x, y = _place(rng, side, half)
    crop = _square(x, y, half)
    grid = np.arange(2 * half, dtype=np.float32) - half
    shade = np.zeros((2 * half, 2 * half), np.float32)
    rim = np.zeros_like(shade)
    holes = np.zeros(shade.shape, dtype=bool)
    light = rng.uniform(0, 2 * math.pi)
    lx, ly = math.cos(light), math.sin(light)
    for _ in range(int(rng.integers(1, 5))):
        px, py = (float(v) for v in rng.uniform(-22, 22, 2) * scale)
        r = float(rng.uniform(3.5, 8.0) * scale)
        dist = np.sqrt((grid[None, :] - px) ** 2 + (grid[:, None] - py) ** 2)
        np.maximum(shade, np.clip(r + 0.5 - dist, 0, 1), out=shade)
        lit = np.sqrt((grid[None, :] - px - lx * r * 0.6) ** 2 + (grid[:, None] - py - ly * r * 0.6) ** 2)
        np.maximum(rim, np.clip(r + 1 - lit, 0, 1) * (dist > r * 0.8), out=rim)
        holes |= dist <= r + 0.5
    region = _planes(surface, crop)
    region *= 1 - shade * np.float32(rng.uniform(0.4, 0.75))
    region += rim * np.float32(rng.uniform(10, 35))
    _mark(mask, crop, holes | (rim > 0.3))


def _dent(rng: Rng, surface: Field, mask: Image, scale: float, material: str) -> None:
    side = surface.shape[1]
    radius = rng.uniform(18, 60) * scale
    sigma = np.float32(radius / 2)
    x, y = _place(rng, side, radius * 1.5 + 2)
    half = int(radius * 1.5) + 1
    crop = _square(x, y, half)
    grid = np.arange(2 * half, dtype=np.float32) - half
    gx = ((grid + np.float32(int(x) - x)) / sigma)[None, :]
    gy = ((grid + np.float32(int(y) - y)) / sigma)[:, None]
    bowl = np.exp(-(gx * gx + gy * gy) / 2)
    light = rng.uniform(0, 2 * math.pi)
    lx, ly = np.float32(math.cos(light)), np.float32(math.sin(light))
    strength = rng.uniform(22, 55)
    # Lambertian shading of a Gaussian bowl: its slope towards the light, peak ``strength``.
    shading = -(gx * lx + gy * ly) * bowl * np.float32(math.exp(0.5) * strength)
    shading -= bowl * np.float32(rng.uniform(0, 0.3) * strength)
    _planes(surface, crop)[...] += shading
    _mark(mask, crop, (gx * gx + gy * gy) <= 6.25, grow=0)  # out to 2.5 σ


_DEFECT_PAINTERS: dict[str, Callable[[Rng, Field, Image, float, str], None]] = {
    "scratch": _scratch,
    "crack": _crack,
    "stain": _stain,
    "pit": _pit,
    "dent": _dent,
}


def _fixture(rng: Rng, size: tuple[int, int], roi: tuple[int, int, int, int]) -> Image:
    """The dark background and clamping fixture around the part, fixed per generator."""
    width, height = size
    x, _, w, _ = roi
    frame = np.full((height, width, 3), 22, np.float32)
    frame += rng.standard_normal((height, width, 1), dtype=np.float32) * 3
    rail = max(8, x // 10)
    for left in (x - rail, x + w):
        frame[:, max(left, 0) : left + rail] = (70, 72, 75)
        for top in (height // 6, height * 5 // 6 - height // 10):
            frame[top : top + height // 10, max(left - 2 * rail, 0) : left + 3 * rail] = (95, 98, 100)
    return np.asarray(cv2.convertScaleAbs(frame), np.uint8)
