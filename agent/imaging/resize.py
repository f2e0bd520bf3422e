"""Resizing an ``Image`` to a target size, decoding only as much of a JPEG as the target needs.

With ``interpolation="auto"`` (the default) on a JPEG that is not decoded yet, the frame is
decoded at the largest reduction factor 2, 4 or 8 that leaves the region at least as large as
the target (libjpeg scales in the DCT domain, which averages each block: an area filter), the
region is cut out of the reduced frame, and what remains of the scale is done with
``INTER_LINEAR`` when it is below 2 and ``INTER_AREA`` otherwise. The result matches a full
decode + ``INTER_AREA`` to within a few grey levels at a fraction of the cost. Geometry is
exact: a region whose edges do not fall on the reduced grid is sampled with an affine warp at
its true sub-pixel position (or, where ``INTER_AREA`` is needed, decoded at a factor whose grid
it does fall on).

PNGs, decoded arrays and explicitly chosen interpolations (``linear``, ``area``, ``nearest``,
``cubic``) use the full-resolution pixels and ``cv2.resize`` — the same result, bit for bit, as
``cv2.resize`` on the cropped frame, for pipelines that must match their training code.

``letterbox`` keeps the aspect ratio: the region is scaled to fit inside the target and centred
on a ``pad``-coloured canvas (the left/top margin is the floor of half the slack).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import cv2
import numpy as np

from agent.imaging.image import Affine, ArraySource, Image, Pixels

Mode = Literal["stretch", "letterbox"]
Interpolation = Literal["auto", "linear", "area", "nearest", "cubic"]

_CV_INTERPOLATION = {
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "nearest": cv2.INTER_NEAREST,
    "cubic": cv2.INTER_CUBIC,
}


@dataclass(frozen=True, slots=True)
class ResizePlan:
    """How ``resize`` will produce its output: the region is scaled to ``inner`` (width,
    height), placed at ``offset`` on a canvas of ``size``, from the frame decoded at
    ``1/factor`` with ``interpolation``; ``warp`` when the region is sampled at a sub-pixel
    position of the reduced frame."""

    size: tuple[int, int]
    inner: tuple[int, int]
    offset: tuple[int, int]
    factor: int
    interpolation: Literal["linear", "area", "nearest", "cubic"]
    warp: bool


def plan_resize(
    image: Image, width: int, height: int, *, mode: Mode = "stretch", interpolation: Interpolation = "auto"
) -> ResizePlan:
    """Choose the decode factor and interpolation for resizing ``image`` to ``width``×``height``."""
    if width < 1 or height < 1:
        raise ValueError(f"target size {width}×{height} is empty")
    rw, rh = image.width, image.height
    if mode == "letterbox":
        scale = min(width / rw, height / rh)
        inner = (min(width, max(1, round(rw * scale))), min(height, max(1, round(rh * scale))))
    else:
        inner = (width, height)
    offset = ((width - inner[0]) // 2, (height - inner[1]) // 2)
    iw, ih = inner
    if interpolation != "auto":
        return ResizePlan((width, height), inner, offset, 1, interpolation, False)
    source = image.source
    factor = 1
    if source.reducible:
        factor = next((f for f in (8, 4, 2) if rw >= iw * f and rh >= ih * f), 1)
        factor = source.finest_decoded(factor)  # a finer decode already made costs nothing
    while True:
        chosen = _auto_interpolation(rw / factor / iw, rh / factor / ih)
        aligned = all(value % factor == 0 for value in (image.x, image.y, rw, rh))
        if aligned or chosen == "linear":
            return ResizePlan((width, height), inner, offset, factor, chosen, not aligned)
        factor //= 2  # INTER_AREA needs whole pixels: use a grid the region falls on


def _auto_interpolation(scale_x: float, scale_y: float) -> Literal["linear", "area"]:
    return "area" if max(scale_x, scale_y) >= 2.0 else "linear"


def resize(
    image: Image,
    width: int,
    height: int,
    *,
    mode: Mode = "stretch",
    interpolation: Interpolation = "auto",
    pad: tuple[int, int, int] = (114, 114, 114),
) -> Image:
    """``image`` resized to ``width``×``height`` (see the module docstring); ``pad`` is the
    letterbox colour as (B, G, R). The result is decoded pixels; its ``to_frame`` still maps to
    the original frame. Raises ``CorruptImage`` if a deferred JPEG decode fails."""
    plan = plan_resize(image, width, height, mode=mode, interpolation=interpolation)
    inner = _resample(image, plan)
    (iw, ih), (ox, oy) = plan.inner, plan.offset
    if plan.inner != plan.size:
        inner = cast(
            Pixels,
            cv2.copyMakeBorder(
                inner, oy, height - ih - oy, ox, width - iw - ox, cv2.BORDER_CONSTANT, value=tuple(pad)
            ),
        )
    kx, ky = image.width / iw, image.height / ih
    sx, sy, tx, ty = image.to_frame
    to_frame = Affine(sx * kx, sy * ky, tx - sx * kx * ox, ty - sy * ky * oy)
    source = ArraySource(inner, "resized", image.origin)
    return Image(source, 0, 0, width, height, to_frame)


def _resample(image: Image, plan: ResizePlan) -> Pixels:
    factor = plan.factor
    frame = image.source.decoded(factor)
    iw, ih = plan.inner
    flag = _CV_INTERPOLATION[plan.interpolation]
    if not plan.warp:
        x, y = image.x // factor, image.y // factor
        region = frame[y : y + image.height // factor, x : x + image.width // factor]
        return cast(Pixels, cv2.resize(region, (iw, ih), interpolation=flag))
    # Output pixel u has its centre at full-resolution x + (u + 0.5)·w/iw, which is
    # (that)/factor − 0.5 in the reduced frame's pixel-centre coordinates.
    kx = image.width / factor / iw
    ky = image.height / factor / ih
    matrix = np.array(
        [
            [kx, 0.0, image.x / factor + 0.5 * kx - 0.5],
            [0.0, ky, image.y / factor + 0.5 * ky - 0.5],
        ]
    )
    warped = cv2.warpAffine(
        frame, matrix, (iw, ih), flags=flag | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )
    return cast(Pixels, warped)
