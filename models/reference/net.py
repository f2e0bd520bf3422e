"""The reference inspection network (PyTorch; training only).

A small fully convolutional net that maps a 224×224 image to a 28×28 map of defect logits, one
per 8×8 cell, and an image score from the map's highest logit. The first layer also sees a
high-pass copy of the image (the image minus its local mean), so that defects stand out from
the part's colour and lighting from the first step of training. Only Conv, BatchNorm (folded at
export), Relu, AveragePool, Resize (nearest), Sub, Concat, Add, ReduceMax, Mul and Sigmoid are
used.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2 if kernel % 2 else 0
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.block = conv_bn_relu(channels, channels, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class HighPass(nn.Module):
    """The image and the image minus its local mean, stacked (3 → 6 channels).

    The local mean is taken over the 3×3 neighbourhood of 4×4 blocks (12×12 pixels) and is
    constant over each block, which the stem's 4×4 stride-4 convolution reads as one patch. Two
    strided poolings and a nearest-neighbour upsampling cost a tenth of a 12×12 box filter.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = F.avg_pool2d(x, 4)
        local = F.avg_pool2d(blocks, 3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([x, x - F.interpolate(local, scale_factor=4.0, mode="nearest")], dim=1)


def trunk() -> tuple[nn.Sequential, int]:
    """224×224×3 → 28×28×48 features: a 4×4 patch embedding of the image and its high-pass
    copy (56×56), a 3×3 convolution, a stride-2 convolution to the 8-pixel cell grid, then three
    residual 3×3 blocks dilated 1, 2 and 4 (receptive field ≈ 140 input pixels)."""
    layers = [
        HighPass(),
        conv_bn_relu(6, 32, kernel=4, stride=4),
        conv_bn_relu(32, 32),
        conv_bn_relu(32, 48, stride=2),
        Residual(48, 1),
        Residual(48, 2),
        Residual(48, 4),
    ]
    return nn.Sequential(*layers), 48


class InspectionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features, channels = trunk()
        self.head = nn.Conv2d(channels, 1, 1)
        nn.init.constant_(self.head.bias, -4.0)  # defect cells are rare
        self.score_scale = nn.Parameter(torch.ones(1))
        self.score_bias = nn.Parameter(torch.zeros(1))

    def logits(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(map logits N×1×28×28, score logits N×1)."""
        cells = self.head(self.features(image))
        peak = torch.amax(cells, dim=(2, 3))
        return cells, peak * self.score_scale + self.score_bias

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(anomaly_map, score): the ONNX outputs."""
        cells, score = self.logits(image)
        return torch.sigmoid(cells), torch.sigmoid(score)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every Conv2d → BatchNorm2d pair of ``module`` (in eval mode) into one Conv2d, in
    place; returns ``module``."""
    module.eval()
    for name, child in module.named_children():
        if isinstance(child, nn.Sequential):
            layers = list(child)
            folded: list[nn.Module] = []
            i = 0
            while i < len(layers):
                layer = layers[i]
                following = layers[i + 1] if i + 1 < len(layers) else None
                if isinstance(layer, nn.Conv2d) and isinstance(following, nn.BatchNorm2d):
                    folded.append(fuse_conv_bn_eval(layer, following))
                    i += 2
                else:
                    folded.append(fold_batchnorm(layer))
                    i += 1
            setattr(module, name, nn.Sequential(*folded))
        else:
            fold_batchnorm(child)
    return module
