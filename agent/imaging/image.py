"""``Image``: the value image nodes pass along — an immutable region of a frame whose pixels are
decoded when first needed.

An image is a *source* (the whole frame: JPEG bytes not yet decoded, or a decoded array) plus a
region of it (``x``, ``y``, ``width``, ``height`` in the source's full-resolution pixels) plus
``to_frame``, the mapping from the image's coordinates back to the original camera frame.
Cropping only narrows the region; nothing is decoded until a node needs pixels. A JPEG source
can decode at 1/2, 1/4 or 1/8 of its resolution in the DCT domain, which ``resize`` uses when
the region is large enough for its target (see ``agent.imaging.resize``).

Images are immutable and may be shared by any number of threads. A source decodes each
reduction factor at most once (under a lock) and keeps the result for the images cut from it;
every array an image hands out is read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from threading import Lock
from typing import Any, ClassVar, NamedTuple, cast

import cv2
import numpy as np
import numpy.typing as npt

from agent.imaging.errors import (
    CorruptImage,
    EmptyImage,
    NotAnImage,
    RoiOutOfBounds,
    UnsupportedFormat,
    WrongChannels,
)

Pixels = npt.NDArray[np.uint8]
"""H×W×3 uint8, BGR."""

REDUCTION_FACTORS = (1, 2, 4, 8)

# EXIF orientation is never applied: pixels are used as the sensor stored them, so that the
# size read from the headers is the size decoded, and ROIs mean the same thing in every frame.
_DECODE_FLAGS = {
    1: cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION,
    2: cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION,
    4: cv2.IMREAD_REDUCED_COLOR_4 | cv2.IMREAD_IGNORE_ORIENTATION,
    8: cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION,
}


class Affine(NamedTuple):
    """An axis-aligned map ``(x, y) → (sx·x + tx, sy·y + ty)``.

    Coordinates are continuous, with pixel ``i`` spanning ``[i, i + 1)``: the top-left corner of
    the first pixel is ``(0, 0)`` and its centre ``(0.5, 0.5)``.
    """

    sx: float
    sy: float
    tx: float
    ty: float

    def apply(self, x: float, y: float) -> tuple[float, float]:
        return self.sx * x + self.tx, self.sy * y + self.ty


IDENTITY = Affine(1.0, 1.0, 0.0, 0.0)


def read_only(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A read-only view of ``array`` (the array itself when it already is one)."""
    if not array.flags.writeable:
        return array
    view = array.view()
    view.flags.writeable = False
    return view


class Source:
    """A whole frame at full resolution, decoded on demand.

    ``decoded(factor)`` returns the frame decoded at ``1/factor`` of its resolution: an
    H'×W'×3 read-only array with ``H' = ceil(height / factor)``, pixel ``i`` covering full-
    resolution pixels ``[i·factor, (i + 1)·factor)``. Only ``reducible`` sources accept factors
    other than 1.
    """

    __slots__ = ("format", "height", "origin", "width")
    reducible: ClassVar[bool] = False

    def __init__(self, format: str, width: int, height: int, origin: str) -> None:
        self.format = format
        self.width = width
        self.height = height
        self.origin = origin

    def decoded(self, factor: int) -> Pixels:
        raise NotImplementedError

    def decoded_factors(self) -> tuple[int, ...]:
        """The reduction factors decoded so far (``(1,)`` for a source that is pixels)."""
        return (1,)

    def finest_decoded(self, factor: int) -> int:
        """The smallest factor ≤ ``factor`` already decoded, or ``factor`` when there is none."""
        return 1


class ArraySource(Source):
    """A frame that is already pixels (a camera array, a decoded PNG, a resized image)."""

    __slots__ = ("_array",)

    def __init__(self, array: Pixels, format: str, origin: str) -> None:
        height, width = array.shape[:2]
        super().__init__(format, width, height, origin)
        self._array = read_only(array)

    def decoded(self, factor: int) -> Pixels:
        if factor != 1:
            raise ValueError(f"a decoded {self.format} frame cannot be reduced by {factor}")
        return self._array


class JpegSource(Source):
    """JPEG bytes whose size is known from the headers; decoded lazily, at any factor."""

    __slots__ = ("_cache", "_locks", "data")
    reducible = True

    def __init__(self, data: bytes, width: int, height: int, origin: str) -> None:
        super().__init__("jpeg", width, height, origin)
        self.data = data
        self._cache: dict[int, Pixels] = {}
        self._locks = {factor: Lock() for factor in REDUCTION_FACTORS}

    def decoded(self, factor: int) -> Pixels:
        pixels = self._cache.get(factor)
        if pixels is not None:
            return pixels
        with self._locks[factor]:  # one decode per factor, however many threads ask
            pixels = self._cache.get(factor)
            if pixels is None:
                pixels = self._decode(factor)
                self._cache[factor] = pixels
        return pixels

    def decoded_factors(self) -> tuple[int, ...]:
        return tuple(sorted(self._cache))

    def finest_decoded(self, factor: int) -> int:
        for candidate in REDUCTION_FACTORS:
            if candidate > factor:
                break
            if candidate in self._cache:
                return candidate
        return factor

    def _decode(self, factor: int) -> Pixels:
        buffer = np.frombuffer(self.data, np.uint8)
        pixels = cast("Pixels | None", cv2.imdecode(buffer, _DECODE_FLAGS[factor]))
        expected = (-(-self.height // factor), -(-self.width // factor), 3)
        if pixels is None:
            raise CorruptImage(
                f"corrupt JPEG from {self.origin} ({self.width}×{self.height}): the decoder rejected "
                "its image data"
            )
        if pixels.shape != expected:
            raise CorruptImage(
                f"corrupt JPEG from {self.origin}: decoded {pixels.shape[1]}×{pixels.shape[0]} at "
                f"1/{factor}, but its header says {self.width}×{self.height}"
            )
        return read_only(pixels)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Image:
    """A region of a frame. ``width``×``height`` is its size in pixels; ``x``, ``y`` place it
    in ``source``; ``to_frame`` maps its coordinates to the original camera frame's.

    Build images with ``agent.imaging.load_image`` or ``Image.from_array``.
    """

    source: Source
    x: int
    y: int
    width: int
    height: int
    to_frame: Affine = IDENTITY

    @classmethod
    def from_array(cls, array: Any, *, origin: str = "an array", format: str = "array") -> Image:
        """Wrap an H×W×3 uint8 BGR array, without copying it. The caller must not modify the
        array while the image is in use."""
        if not isinstance(array, np.ndarray):
            raise NotAnImage(f"not an image: expected an H×W×3 uint8 array, got {type(array).__name__}")
        shape = "×".join(str(side) for side in array.shape)
        if array.ndim == 2 or (array.ndim == 3 and array.shape[2] != 3):
            channels = 1 if array.ndim == 2 else array.shape[2]
            raise WrongChannels(
                f"wrong number of channels: array of shape {shape} has {channels} channel(s); "
                "H×W×3 (BGR) expected"
            )
        if array.ndim != 3:
            raise NotAnImage(f"not an image: array of shape {shape}; H×W×3 (BGR) expected")
        if array.dtype != np.uint8:
            raise UnsupportedFormat(f"unsupported format: {array.dtype} array; uint8 pixels expected")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise EmptyImage(f"zero size: array of shape {shape}")
        source = ArraySource(array, format, origin)
        return cls(source, 0, 0, source.width, source.height)

    @property
    def format(self) -> str:
        """``jpeg``, ``png``, ``array`` (from a camera) or ``resized``."""
        return self.source.format

    @property
    def origin(self) -> str:
        """Where the frame came from, for messages (e.g. ``node 'decode'``)."""
        return self.source.origin

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def crop(self, x: int, y: int, width: int, height: int) -> Image:
        """The region ``x, y, width, height`` of this image (in its pixels). Decodes nothing.

        Raises ``RoiOutOfBounds`` naming the region and this image's size.
        """
        if width < 1 or height < 1 or x < 0 or y < 0 or x + width > self.width or y + height > self.height:
            problems = []
            if width < 1 or height < 1:
                problems.append("it is empty")
            if x < 0 or y < 0:
                problems.append("it starts left of or above the image")
            if x + width > self.width:
                problems.append(f"x + width = {x + width} > {self.width}")
            if y + height > self.height:
                problems.append(f"y + height = {y + height} > {self.height}")
            raise RoiOutOfBounds(
                f"ROI x={x} y={y} width={width} height={height} does not fit in the "
                f"{self.width}×{self.height} image: {', '.join(problems)}"
            )
        sx, sy, tx, ty = self.to_frame
        return Image(
            self.source,
            self.x + x,
            self.y + y,
            width,
            height,
            Affine(sx, sy, tx + sx * x, ty + sy * y),
        )

    def pixels(self) -> Pixels:
        """The region at full resolution: a read-only H×W×3 uint8 BGR array (decoding the frame
        if needed; a view of the frame, not a copy)."""
        frame = self.source.decoded(1)
        return frame[self.y : self.y + self.height, self.x : self.x + self.width]

    def __repr__(self) -> str:
        region = ""
        if (self.x, self.y, self.width, self.height) != (0, 0, self.source.width, self.source.height):
            region = f" of {self.source.width}×{self.source.height} at ({self.x}, {self.y})"
        return f"<Image {self.width}×{self.height} {self.format}{region} from {self.origin}>"
