"""The U-Net paper's elastic deformation, applied identically to an image and its target.

Ronneberger, Fischer and Brox 2015 ("U-Net", section 3.1): "We generate smooth deformations
using random displacement vectors on a coarse 3 by 3 grid. The displacements are sampled
from a Gaussian distribution with 10 pixels standard deviation. Per-pixel displacements are
then computed using bicubic interpolation." (torchvision's ``ElasticTransform`` instead
smooths per-pixel noise with a Gaussian, Simard et al. 2003.)

One sampling grid is built per call and used for every part of the sample, so the warp is
the same for all of them: the image is resampled with bilinear (or bicubic) interpolation,
class and instance masks with nearest and keep their dtype. Boxes become the tight boxes of
the warped instance masks, or, without masks, of each box's warped pixel footprint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnkit._core.errors import ConfigError
from cnnkit._core.errors import check_choice as _check_choice
from cnnkit.data._joint import JointTransform, masks_to_boxes

__all__ = ["ElasticTransform", "elastic_grid"]


def elastic_grid(height: int, width: int, grid: int = 3, sigma: float = 10.0) -> torch.Tensor:
    """A random U-Net warp as a ``grid_sample`` sampling grid.

    Displacements (dx, dy) ~ N(0, sigma^2) pixels are drawn at ``grid x grid`` control
    points spanning the image corner to corner, interpolated bicubically to every pixel, and
    added to the pixel centres.

    Returns:
        Tensor[1, H, W, 2] float32 of normalised (x, y) sampling positions
        (``align_corners=False`` convention).
    """
    displacement = torch.randn(1, 2, grid, grid) * sigma
    dense = F.interpolate(displacement, size=(height, width), mode="bicubic", align_corners=True)
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    sx = xs[None, :] + dense[0, 0]
    sy = ys[:, None] + dense[0, 1]
    return torch.stack([2 * sx / width - 1, 2 * sy / height - 1], -1)[None]


def _warp(x: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str) -> torch.Tensor:
    """Resample Tensor[C, H, W] (any dtype) on ``grid``; integers are rounded back."""
    if x.shape[0] == 0:
        return x.clone()
    out = F.grid_sample(
        x[None].to(torch.float32), grid, mode=mode, padding_mode=padding_mode, align_corners=False
    )[0]
    if x.is_floating_point():
        return out.to(x.dtype)
    if x.dtype == torch.bool:
        return out > 0.5
    info = torch.iinfo(x.dtype)
    return out.round().clamp(info.min, info.max).to(x.dtype)


def _box_footprints(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boolean Tensor[K, H, W]: the pixels whose centres lie inside each box."""
    ys = torch.arange(height, dtype=torch.float32)[None, :, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, None, :] + 0.5
    b = boxes[:, :, None, None]
    return (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])


class ElasticTransform(JointTransform):
    """Random smooth elastic deformation (U-Net, Ronneberger et al. 2015), the same for all parts.

    Args:
        grid: control points per side (the paper's 3).
        sigma: standard deviation of the control-point displacements in pixels (the
            paper's 10; for images much smaller than the paper's 572 px tiles, scale it down).
        interpolation: ``'bilinear'`` or ``'bicubic'`` for the image (masks: nearest).
        padding_mode: where the warp samples outside the image: ``'zeros'``, ``'border'``
            or ``'reflection'`` (same for image and masks).

    Input: image Tensor[C, H, W] (float or integer) with any target of
    :mod:`cnnkit.data._joint`; the size is unchanged.
    """

    def __init__(
        self,
        grid: int = 3,
        sigma: float = 10.0,
        interpolation: str = "bilinear",
        padding_mode: str = "zeros",
    ):
        if not isinstance(grid, int) or grid < 2:
            raise ConfigError(f"grid must be an integer >= 2 control points; received {grid!r}.")
        if sigma < 0:
            raise ConfigError(f"sigma must be >= 0 pixels; received {sigma!r}.")
        self.grid, self.sigma = grid, float(sigma)
        self.interpolation = _check_choice("interpolation", interpolation, ("bilinear", "bicubic"))
        self.padding_mode = _check_choice(
            "padding_mode", padding_mode, ("zeros", "border", "reflection")
        )

    def apply(self, image, target):
        h, w = image.shape[-2:]
        grid = elastic_grid(h, w, self.grid, self.sigma)
        out = dict(target)
        image = _warp(image, grid, self.interpolation, self.padding_mode)
        for key in ("mask", "masks"):
            if key in out:
                out[key] = _warp(out[key], grid, "nearest", self.padding_mode)
        if "boxes" in out:
            if "masks" in out:
                out["boxes"] = masks_to_boxes(out["masks"])
            else:
                footprints = _warp(
                    _box_footprints(out["boxes"], h, w), grid, "nearest", self.padding_mode
                )
                out["boxes"] = masks_to_boxes(footprints)
        return image, out
