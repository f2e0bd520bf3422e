"""Errors of the imaging package.

The tree::

    ImageError                  base: the input cannot be used as an image
    ├── NotAnImage              neither JPEG nor PNG nor a known image format; bad base64
    ├── UnsupportedFormat       a known format or variant that is not decoded (GIF, 12-bit JPEG…)
    ├── TruncatedImage          a JPEG without its end-of-image marker, a PNG without IEND,
    │                           headers cut short
    ├── CorruptImage            headers that contradict themselves, or data the decoder rejects
    ├── WrongChannels           not 3 colour channels (an H×W×4 array, an RGBA PNG, CMYK…)
    ├── EmptyImage              zero width or height
    ├── ImageTooLarge           more pixels than the configured limit
    ├── ImageFileNotFound       a path that names no file
    └── RoiOutOfBounds          a region of interest that does not fit in the image

None of them is worth retrying: the same input fails the same way.
"""

from __future__ import annotations


class ImageError(Exception):
    """The input cannot be used as an image; the message says what was wrong."""


class NotAnImage(ImageError):
    """The data is not an image of a known format (or not valid base64)."""


class UnsupportedFormat(ImageError):
    """A recognised image format, or a variant of one, that edgefleet does not decode."""


class TruncatedImage(ImageError):
    """The data ends before the image does."""


class CorruptImage(ImageError):
    """The data is damaged: inconsistent headers, or pixel data the decoder rejects."""


class WrongChannels(ImageError):
    """The image does not have 3 colour channels (or grey, for encoded images)."""


class EmptyImage(ImageError):
    """The image has zero width or height."""


class ImageTooLarge(ImageError):
    """The image has more pixels than allowed."""


class ImageFileNotFound(ImageError):
    """A file path that names no file."""


class RoiOutOfBounds(ImageError):
    """A region of interest that does not lie inside the image."""
