"""Backbones of Mask R-CNN: ResNet stages (optionally with an FPN) and a small CPU net.

Seed 003: "The authors use the first 4 stages of ResNet-50 or ResNet-101 as the backbone
network. The output of the 4th stage will now serve as the input to the Region Proposal
Network." Here:

- ``'resnet50'`` / ``'resnet18'`` without FPN: cnnkit's ResNet stem and ``layer1`` ...
  ``layer3`` (the paper's conv1 ... conv4_x, "C4"), one feature map of stride 16 with
  1024 (ResNet-50) or 256 (ResNet-18) channels.
- with ``fpn=True``: ``layer1`` ... ``layer4`` (C2 ... C5) and a feature pyramid (Lin et al.
  2017, "Feature Pyramid Networks for Object Detection"): 1x1 lateral convolutions,
  nearest-neighbour top-down upsampling and addition, a 3x3 convolution per level; four
  maps P2 ... P5 of 256 channels at strides 4, 8, 16, 32.
- ``'small'``: five 3x3 convolution + batch norm + ReLU layers (two of stride 2),
  32-64-64-64-64 maps, one map of stride 4 (receptive field 27 pixels); trains from
  scratch on a CPU on 64x64 to 128x128 images (e.g. ``cnnkit.data.synthetic.shapes``).

Every backbone maps images ``Tensor[N, C, H, W]`` to a list of feature maps and exposes
``out_channels`` (the same for every map) and ``strides`` (image pixels per cell).
"""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from cnnkit._core.errors import ConfigError, check_choice
from cnnkit.models.resnet import DEPTHS, resnet

__all__ = ["FPN", "ResNetBackbone", "SmallBackbone", "build_backbone"]


class SmallBackbone(nn.Module):
    """``(N, C, H, W) -> [(N, 2w, H/4, W/4)]``: five 3x3 conv-BN-ReLU layers (strides 2, 1,
    2, 1, 1), ``w, 2w, 2w, 2w, 2w`` maps (``w = width``)."""

    def __init__(self, in_channels: int = 3, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for filters, stride in ((width, 2), (2 * width, 1), (2 * width, 2), (2 * width, 1),
                                (2 * width, 1)):  # fmt: skip
            layers += [
                nn.Conv2d(c, filters, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(filters),
                nn.ReLU(inplace=True),
            ]
            c = filters
        self.body = nn.Sequential(*layers)
        self.out_channels = c
        self.strides = [4]

    def forward(self, x):
        return [self.body(x)]


class FPN(nn.Module):
    """Feature pyramid: ``P_l = conv3x3(lateral_l(C_l) + upsample(P_{l+1} before its 3x3))``."""

    def __init__(self, in_channels_list: list[int], out_channels: int = 256):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels_list)
        self.output = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels_list
        )

    def forward(self, features):
        inner = self.lateral[-1](features[-1])
        outs = [self.output[-1](inner)]
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral[i](features[i])
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.output[i](inner))
        return outs


class ResNetBackbone(nn.Module):
    """cnnkit's ResNet-``depth`` stages: C4 (stride 16), or C2-C5 with an FPN."""

    def __init__(self, depth: int = 50, in_channels: int = 3, fpn: bool = False,
                 fpn_channels: int = 256):  # fmt: skip
        super().__init__()
        blocks, bottleneck = DEPTHS[depth]
        net = resnet(blocks, bottleneck, num_classes=1, in_channels=in_channels)
        stages = dict(net.features.named_children())
        self.stem = stages["stem"]
        expansion = 4 if bottleneck else 1
        names = ["layer1", "layer2", "layer3", "layer4"] if fpn else ["layer1", "layer2", "layer3"]
        self.stages = nn.ModuleList(stages[n] for n in names)
        self.stage_names = names
        widths = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.fpn = FPN(widths, fpn_channels) if fpn else None
        self.out_channels = fpn_channels if fpn else widths[2]
        self.strides = [4, 8, 16, 32] if fpn else [16]

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return self.fpn(outs) if self.fpn is not None else [outs[-1]]


def build_backbone(name: str, in_channels: int = 3, fpn: bool = False) -> nn.Module:
    """``'resnet50'``, ``'resnet18'`` (optionally with an FPN) or ``'small'``."""
    name = check_choice("mask_rcnn backbone", name, ("resnet50", "resnet18", "small"))
    if name == "small":
        if fpn:
            raise ConfigError("the 'small' backbone has one feature map; use fpn=False.")
        return SmallBackbone(in_channels)
    return ResNetBackbone(int(name.removeprefix("resnet")), in_channels, fpn)
