"""ROIAlign and ROIPool: fixed-size features of boxes (seed 003, "ROI pooling").

- ROIPool (Girshick 2015, :func:`torchvision.ops.roi_pool`): the box, rounded to feature
  cells, is split into ``s x s`` unequal sections and each is max-pooled.
- ROIAlign (He et al. 2017, :func:`torchvision.ops.roi_align` with ``aligned=True``): no
  rounding; each of the ``s x s`` bins averages ``sampling_ratio^2`` bilinear samples at
  regularly spaced points.

:func:`roi_align_separable` computes ROIAlign exactly as torchvision's kernel (same
sample points, same border rules) as two matrix products per image: bilinear sampling on
a Cartesian grid of points is separable, ``out[r, c] = W_y[r] F[c] W_x[r]^T`` with
``W_y[r] (s x H)`` and ``W_x[r] (s x W)`` the averaged 1D interpolation weights.
torchvision's CPU backward kernel is slow (about 1.5 s for 1,000 ROIs of 128 channels on
one core), the matrix products' backward takes milliseconds, so
:class:`RoIPooler` uses the separable form when gradients are needed on a CPU and
torchvision's kernel otherwise (``impl='auto'``).
"""

from __future__ import annotations

import math

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from cnnkit._core.errors import ConfigError, check_choice

__all__ = ["RoIPooler", "roi_align_separable"]

# floats held by one chunk's intermediate product [R, C, H, s]
_CHUNK_FLOATS = 2**24


def _axis_weights(start, bin_size, out: int, grid: int, size: int) -> torch.Tensor:
    """``Tensor[R, out, size]``: the mean over a bin's ``grid`` sample points of the 1D
    linear-interpolation weights on ``size`` cells (torchvision's bilinear_interpolate:
    a point below -1 or above ``size`` contributes 0, one in [-1, 0] is moved to 0, one
    past ``size - 1`` to ``size - 1``)."""
    steps = torch.arange(out, dtype=start.dtype, device=start.device)[:, None]
    offsets = (torch.arange(grid, dtype=start.dtype, device=start.device) + 0.5) / grid
    c = start[:, None, None] + bin_size[:, None, None] * (steps + offsets)  # [R, out, grid]
    valid = ((c >= -1.0) & (c <= size)).to(c.dtype)
    c = c.clamp(min=0.0)
    low = c.floor().long()
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    high = torch.where(at_end, low, low + 1)
    c = torch.where(at_end, low.to(c.dtype), c)
    frac = (c - low) * valid
    w = F.one_hot(low, size) * (valid - frac)[..., None] + F.one_hot(high, size) * frac[..., None]
    return w.mean(2)


def roi_align_separable(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int = 2,
) -> torch.Tensor:
    """``torchvision.ops.roi_align(features, rois, output_size, spatial_scale,
    sampling_ratio, aligned=True)`` by matrix products (differentiable in ``features``).

    ``rois``: ``Tensor[R, 5]`` rows ``(image index, x1, y1, x2, y2)`` in image pixels;
    ``sampling_ratio`` must be positive (torchvision's adaptive 0 is not supported).
    """
    if sampling_ratio < 1:
        raise ConfigError(f"sampling_ratio must be >= 1 here; received {sampling_ratio}.")
    s = int(output_size)
    n, ch, h, w = features.shape
    boxes = rois[:, 1:].detach().to(features.dtype) * spatial_scale - 0.5
    wy = _axis_weights(boxes[:, 1], (boxes[:, 3] - boxes[:, 1]) / s, s, sampling_ratio, h)
    wx = _axis_weights(boxes[:, 0], (boxes[:, 2] - boxes[:, 0]) / s, s, sampling_ratio, w)
    out = features.new_zeros((len(rois), ch, s, s))
    index = rois[:, 0].long()
    chunk = max(1, _CHUNK_FLOATS // max(1, ch * h * s))
    for b in range(n):
        idx = torch.nonzero(index == b).flatten()
        for part in idx.split(chunk):
            r = len(part)
            # one GEMM: F [C*H, W] @ W_x^T [W, R*s] -> [C, H, R, s]
            t = features[b].reshape(ch * h, w) @ wx[part].reshape(r * s, w).t()
            t = t.view(ch, h, r, s).permute(2, 1, 0, 3).reshape(r, h, ch * s)
            # batched: W_y [R, s, H] @ [R, H, C*s] -> [R, s, C, s] -> [R, C, s, s]
            out[part] = torch.bmm(wy[part], t).view(r, s, ch, s).permute(0, 2, 1, 3)
    return out


class RoIPooler(nn.Module):
    """Fixed-size features of boxes: ROIAlign (default) or ROIPool, on one feature map or,
    with several (an FPN), on level ``floor(4 + log2(sqrt(area) / 224))`` (Lin et al.
    2017's eq. 1), clamped to the available levels.

    ``impl`` (ROIAlign only): ``'torchvision'``, ``'separable'``
    (:func:`roi_align_separable`, the same numbers) or ``'auto'`` (separable when the
    features need a gradient on a CPU).
    """

    def __init__(self, output_size: int, mode: str = "align", sampling_ratio: int = 2,
                 impl: str = "auto"):  # fmt: skip
        super().__init__()
        self.output_size = int(output_size)
        self.mode = check_choice("ROI pooler", mode, ("align", "pool"))
        self.sampling_ratio = sampling_ratio
        self.impl = check_choice("ROIAlign impl", impl, ("auto", "torchvision", "separable"))

    def _one(self, feature, rois, stride):
        size = (self.output_size, self.output_size)
        if self.mode == "pool":
            return torchvision.ops.roi_pool(feature, rois, size, 1.0 / stride)
        separable = self.impl == "separable" or (
            self.impl == "auto" and feature.requires_grad and feature.device.type == "cpu"
        )
        if separable:
            return roi_align_separable(
                feature, rois, self.output_size, 1.0 / stride, self.sampling_ratio
            )
        return torchvision.ops.roi_align(
            feature, rois, size, 1.0 / stride, self.sampling_ratio, aligned=True
        )

    def forward(self, features, strides, boxes: list[torch.Tensor]) -> torch.Tensor:
        """``Tensor[sum(len(b) for b in boxes), C, s, s]``, boxes of image ``i`` on ``i``."""
        rois = torch.cat(
            [torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)]
        )
        if len(features) == 1:
            return self._one(features[0], rois, strides[0])
        levels = [int(round(math.log2(s))) for s in strides]
        area = (rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])
        k = torch.floor(4 + torch.log2(area.clamp(min=1e-6).sqrt() / 224) + 1e-6)
        k = k.clamp(min(levels), max(levels)).long()
        out = features[0].new_zeros(len(rois), features[0].shape[1], *(self.output_size,) * 2)
        for feature, stride, level in zip(features, strides, levels):
            idx = torch.nonzero(k == level).flatten()
            if len(idx):
                out[idx] = self._one(feature, rois[idx], stride).to(out.dtype)
        return out
