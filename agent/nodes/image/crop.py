"""``crop``: cut a region of interest out of an image.

The region is in the input image's full-resolution pixels (``units: pixels``, whole numbers),
or in fractions of its width and height (``units: fraction``, rounded to the nearest pixel) —
whatever resolution the frame will later be decoded at. Nothing is decoded here: the output
records the region, and ``resize`` decodes only what it needs. A region that does not fit in
the image fails the node, naming the region and the image size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.nodes.image.common import BadRoi, read_image
from agent.workflow.config_types import JsonPath
from agent.workflow.context import RunContext
from agent.workflow.node import ConfigError, Node, NodeSetup

if TYPE_CHECKING:
    from agent.imaging import Image


class CropConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: JsonPath = Field(description="The image to crop, e.g. '$.nodes.decode'.")
    x: float = Field(ge=0, description="Left edge of the region.")
    y: float = Field(ge=0, description="Top edge of the region.")
    width: float = Field(gt=0, description="Width of the region.")
    height: float = Field(gt=0, description="Height of the region.")
    units: Literal["pixels", "fraction"] = Field(
        "pixels", description="Full-resolution pixels, or fractions of the image's width and height."
    )


class Crop(Node[CropConfig]):
    type_name = "crop"
    config_model = CropConfig
    summary = "Cuts a region of interest (pixels or fractions) out of an image, without decoding."

    def __init__(self, config: CropConfig, setup: NodeSetup) -> None:
        super().__init__(config, setup)
        from agent.imaging import RoiOutOfBounds

        self._roi_error = RoiOutOfBounds
        if config.units == "pixels":
            for name in ("x", "y", "width", "height"):
                if not float(getattr(config, name)).is_integer():
                    raise ConfigError(name, f"{getattr(config, name)} is not a whole number of pixels")
        else:
            for start, size in (("x", "width"), ("y", "height")):
                if getattr(config, start) + getattr(config, size) > 1.0 + 1e-9:
                    raise ConfigError(size, f"{start} + {size} exceeds 1 (the whole image)")

    def run(self, ctx: RunContext) -> Image:
        image = read_image(self.config.image.resolve(ctx), self.config.image)
        config = self.config
        if config.units == "pixels":
            x, y, width, height = int(config.x), int(config.y), int(config.width), int(config.height)
        else:
            x, right = round(config.x * image.width), round((config.x + config.width) * image.width)
            y, bottom = round(config.y * image.height), round((config.y + config.height) * image.height)
            x, y = min(x, image.width - 1), min(y, image.height - 1)
            width, height = max(1, min(right, image.width) - x), max(1, min(bottom, image.height) - y)
        try:
            return image.crop(x, y, width, height)
        except self._roi_error as exc:
            raise BadRoi(f"{config.image.text}: {exc}") from exc
