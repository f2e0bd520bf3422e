"""Recognising encoded images and reading their size without decoding them.

``read_header`` checks the structure of a JPEG (every marker segment up to the first scan, and
the end-of-image marker after it) or a PNG (signature, IHDR with its CRC, the closing IEND)
and returns the full-resolution size. It costs microseconds, so a frame can be rejected — and
its size known — before any pixel is decoded. Damage inside the compressed pixel data itself
is found only by the decoder.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Literal

from agent.imaging.errors import (
    CorruptImage,
    EmptyImage,
    NotAnImage,
    TruncatedImage,
    UnsupportedFormat,
    WrongChannels,
)

Format = Literal["jpeg", "png"]

JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
JPEG_EOI = b"\xff\xd9"

_OTHER_FORMATS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (8, b"WEBP", "WebP"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (4, b"ftypheic", "HEIF"),
    (4, b"ftypheix", "HEIF"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"qoif", "QOI"),
    (0, b"BM", "BMP"),
)

# Start-of-frame markers (C4 = DHT, C8 = JPG extension and CC = DAC are not frames).
_SOF_PROCESS = {
    0xC0: "baseline",
    0xC1: "extended sequential",
    0xC2: "progressive",
    0xC3: "lossless",
    0xC5: "differential sequential",
    0xC6: "differential progressive",
    0xC7: "differential lossless",
    0xC9: "arithmetic-coded sequential",
    0xCA: "arithmetic-coded progressive",
    0xCB: "arithmetic-coded lossless",
    0xCD: "arithmetic-coded differential sequential",
    0xCE: "arithmetic-coded differential progressive",
    0xCF: "arithmetic-coded differential lossless",
}
_SUPPORTED_SOF = (0xC0, 0xC1, 0xC2)
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: markers without a length

# PNG colour types: name, channels, allowed bit depths.
_PNG_COLOUR = {
    0: ("grey", 1, (1, 2, 4, 8, 16)),
    2: ("RGB", 3, (8, 16)),
    3: ("palette", 3, (1, 2, 4, 8)),
    4: ("grey + alpha", 2, (8, 16)),
    6: ("RGBA", 4, (8, 16)),
}


@dataclass(frozen=True, slots=True)
class Header:
    """What the headers of an encoded image say: format, full-resolution size, channels."""

    format: Format
    width: int
    height: int
    channels: int
    """Colour channels stored: 1 (grey) or 3 (colour). Grey images decode to 3 equal channels."""
    variant: str
    """E.g. ``baseline``, ``progressive``, ``8-bit RGB``."""


def sniff(data: bytes) -> str | None:
    """The format of ``data`` from its signature: ``jpeg``, ``png``, another format's name
    (``GIF``, ``TIFF``, …) or ``None`` when it is not a known image format."""
    if data.startswith(JPEG_SIGNATURE):
        return "jpeg"
    if data.startswith(PNG_SIGNATURE):
        return "png"
    for offset, signature, name in _OTHER_FORMATS:
        if data[offset : offset + len(signature)] == signature:
            return name
    return None


def read_header(data: bytes) -> Header:
    """Check the structure of a JPEG or PNG and read its size, without decoding pixels.

    Raises ``NotAnImage``, ``UnsupportedFormat``, ``TruncatedImage``, ``CorruptImage``,
    ``WrongChannels`` or ``EmptyImage``, with a message that says what was wrong.
    """
    if not data:
        raise NotAnImage("not an image: the data is empty (0 bytes)")
    kind = sniff(data)
    if kind == "jpeg":
        return _jpeg_header(data)
    if kind == "png":
        return _png_header(data)
    if kind is not None:
        raise UnsupportedFormat(f"unsupported format: {kind} image ({len(data)} bytes); JPEG or PNG expected")
    if JPEG_SIGNATURE.startswith(data) or PNG_SIGNATURE.startswith(data):
        raise TruncatedImage(f"truncated image: only the first {len(data)} byte(s) of a signature")
    head = data[:8].hex(" ")
    raise NotAnImage(f"not an image: {len(data)} bytes starting {head}, not a JPEG or PNG signature")


def _jpeg_header(data: bytes) -> Header:
    n = len(data)
    pos = 2
    frame: tuple[int, int, int, int, dict[int, int]] | None = None  # marker, w, h, ncomp, id→Tq
    quant_tables: set[int] = set()
    huffman_tables: set[tuple[int, int]] = set()  # (class 0 = DC / 1 = AC, id)
    while True:
        if pos >= n:
            raise TruncatedImage(f"truncated JPEG: the data ends inside the headers, at byte {n}")
        if data[pos] != 0xFF:
            raise CorruptImage(f"corrupt JPEG: expected a marker at byte {pos}, found 0x{data[pos]:02X}")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            raise TruncatedImage(f"truncated JPEG: the data ends inside the headers, at byte {n}")
        marker = data[pos]
        start = pos - 1
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD8, 0xD9):
            what = "a second start-of-image" if marker == 0xD8 else "end-of-image"
            raise CorruptImage(f"corrupt JPEG: {what} marker at byte {start}, before any image data")
        if pos + 2 > n:
            raise TruncatedImage(f"truncated JPEG: the data ends inside the headers, at byte {n}")
        length = (data[pos] << 8) | data[pos + 1]
        end = pos + length
        if length < 2:
            raise CorruptImage(f"corrupt JPEG: segment FF{marker:02X} at byte {start} has length {length}")
        if end > n:
            raise TruncatedImage(
                f"truncated JPEG: segment FF{marker:02X} at byte {start} runs past the end of the "
                f"data ({n} bytes)"
            )
        body = data[pos + 2 : end]
        if marker in _SOF_PROCESS:
            if frame is not None:
                raise CorruptImage(f"corrupt JPEG: a second frame header at byte {start}")
            frame = _jpeg_frame(marker, body, start)
        elif marker == 0xDB:
            quant_tables |= _jpeg_quant_tables(body, start)
        elif marker == 0xC4:
            huffman_tables |= _jpeg_huffman_tables(body, start)
        elif marker == 0xDA:
            return _jpeg_scan(data, frame, quant_tables, huffman_tables, body, start, end)
        pos = end


def _jpeg_frame(marker: int, body: bytes, start: int) -> tuple[int, int, int, int, dict[int, int]]:
    process = _SOF_PROCESS[marker]
    if marker not in _SUPPORTED_SOF:
        raise UnsupportedFormat(
            f"unsupported format: {process} JPEG (SOF{marker - 0xC0}); baseline, extended or "
            "progressive Huffman-coded JPEG expected"
        )
    if len(body) < 6:
        raise CorruptImage(f"corrupt JPEG: frame header at byte {start} is {len(body)} bytes long")
    precision, height, width, ncomp = struct.unpack_from(">BHHB", body)
    if len(body) != 6 + 3 * ncomp:
        raise CorruptImage(
            f"corrupt JPEG: frame header at byte {start} declares {ncomp} components in {len(body)} bytes"
        )
    if precision != 8:
        raise UnsupportedFormat(f"unsupported format: {precision}-bit {process} JPEG; 8-bit expected")
    if width == 0 or height == 0:
        raise EmptyImage(f"zero size: the JPEG frame header says {width}×{height}")
    if ncomp not in (1, 3):
        name = {2: " (grey + alpha?)", 4: " (CMYK or YCCK)"}.get(ncomp, "")
        raise WrongChannels(
            f"wrong number of channels: JPEG with {ncomp} colour components{name}; 1 (grey) or 3 "
            "(colour) expected"
        )
    tables: dict[int, int] = {}
    for index in range(ncomp):
        ident, sampling, table = body[6 + 3 * index : 9 + 3 * index]
        if not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 15 <= 4) or table > 3:
            raise CorruptImage(
                f"corrupt JPEG: component {ident} in the frame header at byte {start} is invalid"
            )
        tables[ident] = table
    return marker, width, height, ncomp, tables


def _jpeg_quant_tables(body: bytes, start: int) -> set[int]:
    found: set[int] = set()
    pos = 0
    while pos < len(body):
        precision, table = body[pos] >> 4, body[pos] & 15
        size = 1 + 64 * (precision + 1)
        if precision > 1 or table > 3 or pos + size > len(body):
            raise CorruptImage(f"corrupt JPEG: quantization table segment at byte {start} is invalid")
        found.add(table)
        pos += size
    return found


def _jpeg_huffman_tables(body: bytes, start: int) -> set[tuple[int, int]]:
    found: set[tuple[int, int]] = set()
    pos = 0
    while pos < len(body):
        table_class, table = body[pos] >> 4, body[pos] & 15
        counts = body[pos + 1 : pos + 17]
        total = sum(counts)
        # a prefix code: at most 2^n codes of length n, less what shorter codes took
        kraft = sum(count << (16 - length) for length, count in enumerate(counts, 1))
        if (
            table_class > 1
            or table > 3
            or len(counts) < 16
            or total > 256
            or pos + 17 + total > len(body)
            or kraft >= 1 << 16
        ):
            raise CorruptImage(f"corrupt JPEG: Huffman table segment at byte {start} is invalid")
        found.add((table_class, table))
        pos += 17 + total
    return found


def _jpeg_scan(
    data: bytes,
    frame: tuple[int, int, int, int, dict[int, int]] | None,
    quant_tables: set[int],
    huffman_tables: set[tuple[int, int]],
    body: bytes,
    start: int,
    end: int,
) -> Header:
    if frame is None:
        raise CorruptImage(f"corrupt JPEG: image data at byte {start} before any frame header")
    marker, width, height, ncomp, tables = frame
    count = body[0] if body else 0
    if len(body) != 4 + 2 * count or count == 0:
        raise CorruptImage(f"corrupt JPEG: scan header at byte {start} is invalid")
    for index in range(count):
        ident, selectors = body[1 + 2 * index], body[2 + 2 * index]
        if ident not in tables:
            raise CorruptImage(f"corrupt JPEG: scan at byte {start} uses component {ident}, not in the frame")
        if tables[ident] not in quant_tables:
            raise CorruptImage(
                f"corrupt JPEG: quantization table {tables[ident]} of component {ident} is never defined"
            )
        # Sequential scans need their Huffman tables now (progressive ones may define them
        # between scans). Without any table, the standard ones are used (Motion-JPEG).
        if marker != 0xC2 and (huffman_tables or selectors & 0xEE):
            for table_class, table in ((0, selectors >> 4), (1, selectors & 15)):
                if (table_class, table) not in huffman_tables:
                    kind = "DC" if table_class == 0 else "AC"
                    raise CorruptImage(
                        f"corrupt JPEG: {kind} Huffman table {table} of component {ident} is never defined"
                    )
    # Entropy-coded data stuffs every 0xFF with 0x00, so FF D9 after the first scan header can
    # only be the end-of-image marker.
    if data.rfind(JPEG_EOI, end) < 0:
        raise TruncatedImage(
            f"truncated JPEG: no end-of-image marker (FF D9) after the image data ({len(data)} bytes)"
        )
    return Header("jpeg", width, height, 1 if ncomp == 1 else 3, _SOF_PROCESS[marker])


def _png_header(data: bytes) -> Header:
    if len(data) < 33:
        raise TruncatedImage(f"truncated PNG: {len(data)} bytes, shorter than its header")
    length, kind = struct.unpack_from(">I4s", data, 8)
    if kind != b"IHDR" or length != 13:
        raise CorruptImage("corrupt PNG: the first chunk is not a 13-byte IHDR")
    (crc,) = struct.unpack_from(">I", data, 29)
    if zlib.crc32(data[12:29]) != crc:
        raise CorruptImage("corrupt PNG: the IHDR chunk fails its CRC check")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if width == 0 or height == 0:
        raise EmptyImage(f"zero size: the PNG header says {width}×{height}")
    if colour not in _PNG_COLOUR or depth not in _PNG_COLOUR[colour][2]:
        raise CorruptImage(f"corrupt PNG: colour type {colour} with bit depth {depth} is invalid")
    if compression != 0 or filtering != 0 or interlace > 1:
        raise CorruptImage("corrupt PNG: unknown compression, filter or interlace method in IHDR")
    name, channels, _ = _PNG_COLOUR[colour]
    if channels not in (1, 3):
        raise WrongChannels(
            f"wrong number of channels: {name} PNG ({channels} channels); grey, RGB or palette expected "
            "(save it without an alpha channel)"
        )
    if data.rfind(PNG_IEND, max(0, len(data) - 64)) < 0:
        raise TruncatedImage(f"truncated PNG: no IEND chunk at the end of the data ({len(data)} bytes)")
    return Header("png", width, height, channels, f"{depth}-bit {name}")
