"""Turning uint8 BGR pixels into a model's input tensor: scale, mean/std, channel order, layout.

Every output value depends on one input byte and its channel, so the whole transform is a
256-entry table per channel, computed once; applying it is one native lookup pass per channel
(``cv2.LUT``), writing straight into the output planes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from agent.imaging.image import Pixels

PixelRange = Literal["0-1", "0-255"]
ChannelOrder = Literal["RGB", "BGR"]
Layout = Literal["CHW", "HWC"]
DType = Literal["float32", "float16"]


class Normalizer:
    """``(pixel · k − mean[c]) / std[c]`` for each output channel ``c``, with ``k = 1/255`` for
    ``pixel_range="0-1"`` and ``1`` for ``"0-255"``; ``mean`` and ``std`` are on that scale and
    in ``channel_order``. Output: a read-only array, (3, H, W) for ``CHW``, (H, W, 3) for
    ``HWC``. Thread-safe."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        pixel_range: PixelRange = "0-1",
        channel_order: ChannelOrder = "RGB",
        layout: Layout = "CHW",
        dtype: DType = "float32",
    ) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std need one value per channel (3)")
        if any(value <= 0 for value in std):
            raise ValueError("std values must be positive")
        self.layout = layout
        self.dtype = np.dtype(dtype)
        k = 1.0 / 255.0 if pixel_range == "0-1" else 1.0
        levels = np.arange(256, dtype=np.float64) * k
        tables = [((levels - m) / s).astype(self.dtype) for m, s in zip(mean, std, strict=True)]
        # output channel c reads BGR plane _planes[c]
        self._planes = (2, 1, 0) if channel_order == "RGB" else (0, 1, 2)
        self._tables = tuple(table.reshape(256, 1) for table in tables)
        self._swap = channel_order == "RGB"
        self._hwc_table = np.stack(tables, axis=-1).reshape(256, 1, 3)

    def __call__(self, pixels: Pixels) -> npt.NDArray[Any]:
        height, width = pixels.shape[:2]
        if self.layout == "HWC":
            ordered = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB) if self._swap else pixels
            out: npt.NDArray[Any] = cv2.LUT(ordered, self._hwc_table)
        else:
            out = np.empty((3, height, width), self.dtype)
            planes = cv2.split(pixels)
            for channel, (plane, table) in enumerate(zip(self._planes, self._tables, strict=True)):
                cv2.LUT(planes[plane], table, dst=out[channel])
        out.flags.writeable = False
        return out
