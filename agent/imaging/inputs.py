"""Turning what a run carries — encoded bytes, base64 text, a file path or a camera array — into
an ``Image``.

A JPEG is only checked and measured here (``formats.read_header``): its pixels are decoded
later, by the first consumer that knows what resolution it needs. A PNG cannot be decoded at a
reduced size, so it is decoded at once, and a damaged one fails here. Arrays are used as they
are, without a copy.
"""

from __future__ import annotations

import base64
import binascii
import errno
from pathlib import Path
from typing import Any, Literal, cast

import cv2
import numpy as np

from agent.imaging.errors import CorruptImage, ImageFileNotFound, ImageTooLarge, NotAnImage
from agent.imaging.formats import read_header
from agent.imaging.image import ArraySource, Image, JpegSource, Pixels

Kind = Literal["auto", "bytes", "base64", "path"]

DEFAULT_MAX_PIXELS = 1 << 26
"""64 MiB pixels (e.g. 8192×8192): larger frames are refused before anything is allocated."""

# base64 of the JPEG (FF D8 FF) and PNG (89 50 4E 47 0D 0A 1A 0A) signatures
_BASE64_SIGNATURES = ("/9j/", "iVBORw0KGgo")
_MAX_PATH = 4096
_PNG_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def load_image(
    value: Any, kind: Kind = "auto", *, origin: str = "the input", max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image:
    """An ``Image`` from ``value``.

    ``value`` is an H×W×3 uint8 BGR array (any ``kind``), or, as ``kind`` says: ``bytes`` of a
    JPEG or PNG; ``base64`` text (optionally a ``data:`` URL); a file ``path``. ``auto`` takes
    bytes as bytes, and a string as base64 when it is a ``data:`` URL, starts like base64 of a
    JPEG or PNG, or is longer than any path — otherwise as a path. ``origin`` names the value in
    later messages (``node 'decode'``).

    Raises an ``ImageError`` saying what was wrong; ``OSError`` when a file exists but cannot be
    read.
    """
    if isinstance(value, np.ndarray):
        return Image.from_array(value, origin=origin)
    data = _encoded_bytes(value, kind)
    header = read_header(data)
    if header.width * header.height > max_pixels:
        raise ImageTooLarge(
            f"image too large: {header.width}×{header.height} {header.format.upper()} has "
            f"{header.width * header.height} pixels, more than max_pixels ({max_pixels})"
        )
    if header.format == "jpeg":
        source = JpegSource(data, header.width, header.height, origin)
        return Image(source, 0, 0, header.width, header.height)
    pixels = cast("Pixels | None", cv2.imdecode(np.frombuffer(data, np.uint8), _PNG_FLAGS))
    if pixels is None or pixels.shape[:2] != (header.height, header.width):
        raise CorruptImage(
            f"corrupt PNG ({header.width}×{header.height}, {header.variant}): the decoder rejected its "
            "image data"
        )
    return Image(ArraySource(pixels, "png", origin), 0, 0, header.width, header.height)


def _encoded_bytes(value: Any, kind: Kind) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        if kind == "base64":
            return _from_base64(bytes(value).decode("ascii", errors="replace"))
        if kind == "path":
            return _read_file(Path(bytes(value).decode(errors="surrogateescape")))
        return bytes(value)  # a bytearray or memoryview is copied: the image must not change
    if isinstance(value, str):
        if kind == "bytes":
            raise NotAnImage(
                f"not an image: expected bytes (kind: bytes), got a string of {len(value)} characters; "
                "set kind to base64 or path"
            )
        if kind == "base64" or (kind == "auto" and _looks_like_base64(value)):
            return _from_base64(value)
        return _read_file(Path(value))
    if isinstance(value, Path) and kind in ("auto", "path"):
        return _read_file(value)
    raise NotAnImage(
        f"not an image: expected JPEG/PNG bytes, base64 text, a file path or an H×W×3 uint8 array, "
        f"got {type(value).__name__}"
    )


def _looks_like_base64(text: str) -> bool:
    return text.startswith(("data:", *_BASE64_SIGNATURES)) or len(text) > _MAX_PATH


def _from_base64(text: str) -> bytes:
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise NotAnImage(f"not an image: a data: URL without ';base64,' ({header[:60]!r})")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    compact = "".join(text.split())  # line-wrapped base64
    compact += "=" * (-len(compact) % 4)
    try:
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(compact)
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NotAnImage(f"not an image: the text is not valid base64 ({exc})") from exc


def _read_file(path: Path) -> bytes:
    shown = str(path) if len(str(path)) <= 200 else f"{str(path)[:200]}…"
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageFileNotFound(f"file not found: {shown}") from exc
    except IsADirectoryError as exc:
        raise NotAnImage(f"not an image: {shown} is a directory") from exc
    except ValueError as exc:  # an embedded NUL
        raise ImageFileNotFound(f"file not found: {shown!r} is not a usable path") from exc
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise ImageFileNotFound(f"file not found: {shown} is not a usable path") from exc
        raise
