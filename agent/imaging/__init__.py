"""Images for inspection workflows: loading, lazy JPEG decoding, cropping, resizing, normalising.

Typical use (what the ``image_decode → crop → resize → normalize`` nodes do)::

    from agent.imaging import Normalizer, load_image, resize

    image = load_image(jpeg_bytes)                  # checks headers, reads the size; no decode
    part = image.crop(280, 0, 720, 720)             # still no decode
    small = resize(part, 224, 224)                  # decodes at 1/2 (DCT domain), 360 → 224
    tensor = Normalizer(mean, std)(small.pixels())  # (3, 224, 224) float32

Modules: ``formats`` (signatures and headers), ``image`` (the ``Image`` value and its
sources), ``inputs`` (bytes, base64, paths, arrays → ``Image``), ``resize``, ``normalize``,
``errors`` (the exception tree). Importing this package loads NumPy and OpenCV.
"""

from agent.imaging.errors import (
    CorruptImage,
    EmptyImage,
    ImageError,
    ImageFileNotFound,
    ImageTooLarge,
    NotAnImage,
    RoiOutOfBounds,
    TruncatedImage,
    UnsupportedFormat,
    WrongChannels,
)
from agent.imaging.formats import Header, read_header, sniff
from agent.imaging.image import Affine, Image, Pixels
from agent.imaging.inputs import DEFAULT_MAX_PIXELS, Kind, load_image
from agent.imaging.normalize import Normalizer
from agent.imaging.resize import Interpolation, Mode, ResizePlan, plan_resize, resize

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Affine",
    "CorruptImage",
    "EmptyImage",
    "Header",
    "Image",
    "ImageError",
    "ImageFileNotFound",
    "ImageTooLarge",
    "Interpolation",
    "Kind",
    "Mode",
    "Normalizer",
    "NotAnImage",
    "Pixels",
    "ResizePlan",
    "RoiOutOfBounds",
    "TruncatedImage",
    "UnsupportedFormat",
    "WrongChannels",
    "load_image",
    "plan_resize",
    "read_header",
    "resize",
    "sniff",
]
