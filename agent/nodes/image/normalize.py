"""``normalize``: turn an image into a model input tensor.

Each pixel is scaled to ``pixel_range`` (``0-1``: divided by 255; ``0-255``: as is), then
``(value − mean[c]) / std[c]``, with ``mean`` and ``std`` on that same scale and in
``channel_order`` (the defaults are ImageNet's, RGB, on 0..1). The output is a read-only NumPy
array without a batch axis: (3, H, W) for ``CHW``, (H, W, 3) for ``HWC`` — what
``model_inference`` feeds to an input such as ``image``. The per-channel arithmetic is
precomputed as a 256-entry table, so a 224×224 frame costs well under a millisecond.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.nodes.image.common import BadImage, read_image
from agent.workflow.config_types import JsonPath
from agent.workflow.context import RunContext
from agent.workflow.node import Node, NodeSetup

if TYPE_CHECKING:
    import numpy.typing as npt

Positive = Annotated[float, Field(gt=0)]


class NormalizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: JsonPath = Field(description="The image to normalise, e.g. '$.nodes.resize'.")
    mean: list[float] = Field(
        [0.485, 0.456, 0.406], min_length=3, max_length=3, description="Per-channel mean, in channel_order."
    )
    std: list[Positive] = Field(
        [0.229, 0.224, 0.225], min_length=3, max_length=3, description="Per-channel std, in channel_order."
    )
    pixel_range: Literal["0-1", "0-255"] = Field(
        "0-1", description="Scale of the pixels, and of mean and std: 0..1 (÷255) or 0..255."
    )
    channel_order: Literal["RGB", "BGR"] = Field("RGB", description="Channel order of the output.")
    layout: Literal["CHW", "HWC"] = Field("CHW", description="CHW: (3, H, W); HWC: (H, W, 3).")
    dtype: Literal["float32", "float16"] = Field("float32", description="Element type of the output.")


class Normalize(Node[NormalizeConfig]):
    type_name = "normalize"
    config_model = NormalizeConfig
    summary = "Scales, mean/std-normalises and lays out an image as a float tensor (3, H, W)."
    concurrent = True

    def __init__(self, config: NormalizeConfig, setup: NodeSetup) -> None:
        super().__init__(config, setup)
        from agent.imaging import ImageError, Normalizer

        self._image_error = ImageError
        self._normalize = Normalizer(
            config.mean,
            config.std,
            pixel_range=config.pixel_range,
            channel_order=config.channel_order,
            layout=config.layout,
            dtype=config.dtype,
        )

    def run(self, ctx: RunContext) -> npt.NDArray[Any]:
        image = read_image(self.config.image.resolve(ctx), self.config.image)
        try:
            pixels = image.pixels()
        except self._image_error as exc:
            raise BadImage(f"{self.config.image.text}: {exc}") from exc
        return self._normalize(pixels)
