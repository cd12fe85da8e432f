"""What every classification model in the zoo offers, whatever its architecture.

``forward(x) == forward_head(forward_features(x))``; ``last_conv`` is the last
convolutional layer (the one CAM and Grad-CAM read); ``forward_stages(x)`` returns the
feature maps after each named stage; ``default_input_shape`` is the per-sample input
shape the paper uses (channels first), which summaries and the CLI fall back on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from cnnkit._core.errors import ConfigError

_CONV_TYPES: tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_conv(module: nn.Module) -> bool:
    """A convolution of any rank: a torch ``nn.ConvNd`` or a cnnkit conv layer."""
    if isinstance(module, _CONV_TYPES):
        return True
    from cnnkit.layers.conv import Conv1D, Conv2D, Conv3D
    from cnnkit.layers.separable import (
        DepthwiseConv1D,
        DepthwiseConv2D,
        DepthwiseConv3D,
        SeparableConv1D,
        SeparableConv2D,
        SpatialSeparableConv2D,
    )

    conv_layers = (Conv1D, Conv2D, Conv3D, SeparableConv1D, SeparableConv2D, SpatialSeparableConv2D)
    conv_layers += (DepthwiseConv1D, DepthwiseConv2D, DepthwiseConv3D)
    return isinstance(module, conv_layers)


def last_conv_of(module: nn.Module) -> nn.Module:
    """The last convolution registered in ``module`` (registration order = forward order
    for the zoo's models)."""
    last = None
    for m in module.modules():
        if is_conv(m):
            last = m
    if last is None:
        raise ConfigError(f"{type(module).__name__} has no convolutional layer.")
    return last


class ImageClassifier(nn.Module):
    """A classifier made of named feature stages and a head.

    Args:
        stages: ``(name, module)`` pairs run in order by ``forward_features``.
        head: maps the last stage's output to class scores.
        default_input_shape: the per-sample input shape (C, ...) the model expects.
    """

    def __init__(
        self,
        stages: Sequence[tuple[str, nn.Module]],
        head: nn.Module,
        default_input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict(stages))
        self.head = head
        self.default_input_shape = tuple(default_input_shape) if default_input_shape else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def last_conv(self) -> nn.Module:
        return last_conv_of(self.features)

    @property
    def stage_names(self) -> list[str]:
        return list(self.features._modules)

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature maps after each stage, keyed by stage name."""
        out: dict[str, torch.Tensor] = {}
        for name, stage in self.features.named_children():
            x = stage(x)
            out[name] = x
        return out
