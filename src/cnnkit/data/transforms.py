"""Joint augmentation of an image and its target: masks, boxes and instance masks together.

Called as ``t(image, target)`` and returning ``(image, target)``, named as torchvision
names them, and built on :mod:`torchvision.transforms.v2` where it fits: v2 receives the
image as ``tv_tensors.Image``, masks as ``tv_tensors.Mask`` and boxes as
``tv_tensors.BoundingBoxes``, draws the random parameters once per call and applies them to
all of them. So the image, its class mask, its boxes and its instance masks always move
together; masks are resampled with nearest interpolation and keep their dtype; boxes are
transformed, clipped to the image, and dropped (with their labels and masks) when they
become thinner than one pixel or their instance mask empties. The form of ``target`` is
described in :mod:`cnnkit.data._joint` (None, a label, a mask tensor, or a dict with
``'mask'``, ``'masks'``, ``'boxes'``, ``'labels'``).

The course's augmentations: flips, transposition (seed 002), rotation, scaling
(``RandomAffine(scale=...)``, ``RandomResizedCrop``), crops, the U-Net paper's elastic
deformation (:class:`ElasticTransform`, Ronneberger et al. 2015), colour and intensity
jitter, noise and normalisation. Random draws come from torch's global generator, so
``torch.manual_seed`` makes a pipeline reproducible. 1D variants (for Tensor[C, L]) and 3D
variants (for Tensor[C, T, H, W]) are re-exported from :mod:`cnnkit.data.transforms_1d` and
:mod:`cnnkit.data.transforms_3d`.

Boxes here are pixel-edge ``(x1, y1, x2, y2)``: a box around columns ``a..b`` has ``x1 = a``,
``x2 = b + 1`` (torchvision's geometric transforms assume this).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.data._joint import MIN_BOX_SIZE, JointTransform, masks_to_boxes, sanitize
from cnnkit.data.elastic import ElasticTransform
from cnnkit.data.transforms_1d import Jitter, Scaling, TimeWarp, WindowSlice
from cnnkit.data.transforms_3d import CenterCrop3D, RandomCrop3D, RandomFlip3D

__all__ = [
    "MIN_BOX_SIZE",
    "BoxesFromMasks",
    "CenterCrop",
    "CenterCrop3D",
    "ColorJitter",
    "Compose",
    "ElasticTransform",
    "GaussianNoise",
    "Jitter",
    "JointTransform",
    "Normalize",
    "RandomAffine",
    "RandomApply",
    "RandomCrop",
    "RandomCrop3D",
    "RandomFlip3D",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomTranspose",
    "RandomVerticalFlip",
    "Resize",
    "Scaling",
    "TimeWarp",
    "ToTensor",
    "TorchvisionTransform",
    "WindowSlice",
    "masks_to_boxes",
    "sanitize",
]

_MODES = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


def _mode(interpolation: str | InterpolationMode) -> InterpolationMode:
    if isinstance(interpolation, InterpolationMode):
        return interpolation
    if interpolation not in _MODES:
        raise ConfigError(
            f"interpolation must be one of {', '.join(map(repr, _MODES))}; "
            f"received {interpolation!r}."
        )
    return _MODES[interpolation]


def _fill(fill: float | Sequence[float]) -> dict:
    """Image fill as given; masks always filled with 0 (background)."""
    return {tv_tensors.Image: fill, tv_tensors.Mask: 0}


class TorchvisionTransform(JointTransform):
    """Any ``torchvision.transforms.v2`` transform applied jointly to image and target.

    Args:
        transform: a v2 transform (one call = one random draw for every part).
        geometric: whether it moves pixels (then boxes are clipped and degenerate objects
            dropped afterwards); photometric transforms see the image only.
    """

    def __init__(self, transform: Callable, geometric: bool = True):
        self.transform = transform
        self.geometric = geometric

    def apply(self, image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        if not self.geometric:
            return self.transform(tv_tensors.Image(image)).as_subclass(torch.Tensor), target
        hw = (image.shape[-2], image.shape[-1])
        parts: dict[str, Any] = {}
        for key in ("mask", "masks"):
            if key in target:
                parts[key] = tv_tensors.Mask(target[key])
        if "boxes" in target:
            parts["boxes"] = tv_tensors.BoundingBoxes(
                target["boxes"], format="XYXY", canvas_size=hw
            )
        try:
            out_image, out_parts = self.transform(tv_tensors.Image(image), parts)
        except ValueError as err:  # e.g. a crop larger than the image
            raise ShapeError(
                f"{type(self).__name__} cannot be applied to an image of shape "
                f"{tuple(image.shape)}: {err} Use a smaller size or pad_if_needed=True."
            ) from None
        out = dict(target)
        out.update({k: v.as_subclass(torch.Tensor) for k, v in out_parts.items()})
        return out_image.as_subclass(torch.Tensor), out

    def __repr__(self) -> str:
        if type(self) is TorchvisionTransform:
            return f"TorchvisionTransform({self.transform!r}, geometric={self.geometric})"
        return repr(self.transform)


class Compose:
    """Apply transforms in order: ``Compose([t1, t2])(image, target)``.

    Items are joint transforms (or any callable ``f(image, target) -> (image, target)``);
    a bare ``torchvision.transforms.v2`` transform is wrapped in
    :class:`TorchvisionTransform` (as geometric).
    """

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = [
            TorchvisionTransform(t) if isinstance(t, v2.Transform) else t for t in transforms
        ]
        for t in self.transforms:
            if not callable(t):
                raise ConfigError(f"Compose items must be callables; received {t!r}.")

    def __call__(self, image: Any, target: Any = None) -> tuple[Any, Any]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


class RandomApply(Compose):
    """Apply the composed ``transforms`` with probability ``p`` (one draw per call)."""

    def __init__(self, transforms: Sequence[Callable], p: float = 0.5):
        super().__init__(transforms)
        self.p = float(p)

    def __call__(self, image: Any, target: Any = None) -> tuple[Any, Any]:
        if torch.rand(()) >= self.p:
            return image, target
        return super().__call__(image, target)


class RandomHorizontalFlip(TorchvisionTransform):
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        super().__init__(v2.RandomHorizontalFlip(p))


class RandomVerticalFlip(TorchvisionTransform):
    """Mirror top-bottom with probability ``p``."""

    def __init__(self, p: float = 0.5):
        super().__init__(v2.RandomVerticalFlip(p))


class RandomTranspose(JointTransform):
    """Swap rows and columns (``image.T`` per channel) with probability ``p``.

    Seed 002's "transposing" augmentation; with the two flips it generates all eight
    rotations and reflections of the square. Boxes ``(x1, y1, x2, y2)`` become
    ``(y1, x1, y2, x2)``.
    """

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def apply(self, image, target):
        if torch.rand(()) >= self.p:
            return image, target
        out = dict(target)
        for key in ("mask", "masks"):
            if key in out:
                out[key] = out[key].transpose(-1, -2).contiguous()
        if "boxes" in out:
            out["boxes"] = out["boxes"][:, [1, 0, 3, 2]]
        return image.transpose(-1, -2).contiguous(), out


class RandomRotation(TorchvisionTransform):
    """Rotate by an angle drawn uniformly from ``(-degrees, degrees)`` (or ``degrees=(a, b)``).

    The image is resampled with ``interpolation``, masks with nearest; uncovered pixels get
    ``fill`` in the image and 0 in masks. Boxes become the box of the rotated box (looser
    than the rotated object; add :class:`BoxesFromMasks` to tighten them from masks).
    """

    def __init__(self, degrees, interpolation="bilinear", expand=False, center=None, fill=0.0):
        super().__init__(
            v2.RandomRotation(degrees, _mode(interpolation), expand, center, _fill(fill))
        )


class RandomAffine(TorchvisionTransform):
    """Random rotation, translation, scaling and shear (torchvision's arguments).

    ``RandomAffine(0, scale=(0.8, 1.2))`` is the course's random scaling at fixed size.
    """

    def __init__(
        self, degrees, translate=None, scale=None, shear=None, interpolation="bilinear",
        fill=0.0, center=None,
    ):  # fmt: skip
        super().__init__(
            v2.RandomAffine(
                degrees, translate, scale, shear, _mode(interpolation), _fill(fill), center
            )
        )


class _ResizeJoint(TorchvisionTransform):
    """A v2 resize-type transform whose masks are resampled with exact nearest neighbours.

    torchvision resizes masks with ``InterpolationMode.NEAREST`` (source index
    ``floor(i * scale)``), which sits up to half a source pixel off the image's
    centre-aligned bilinear resampling; here output pixel ``i`` takes source pixel
    ``floor((i + 0.5) * scale)``, the one whose area contains the output pixel's centre.
    """

    def apply(self, image, target):
        h, w = image.shape[-2:]
        tv_image = tv_tensors.Image(image)
        params = self.transform.make_params([tv_image])  # the one random draw
        out_image = self.transform.transform(tv_image, params).as_subclass(torch.Tensor)
        out = dict(target)
        if "boxes" in out:
            boxes = tv_tensors.BoundingBoxes(out["boxes"], format="XYXY", canvas_size=(h, w))
            out["boxes"] = self.transform.transform(boxes, params).as_subclass(torch.Tensor)
        top, left = params.get("top", 0), params.get("left", 0)
        crop_h, crop_w = params.get("height", h), params.get("width", w)
        new_h, new_w = out_image.shape[-2:]
        rows = top + ((torch.arange(new_h) + 0.5) * (crop_h / new_h)).floor().long()
        cols = left + ((torch.arange(new_w) + 0.5) * (crop_w / new_w)).floor().long()
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
        for key in ("mask", "masks"):
            if key in out:
                out[key] = out[key].index_select(-2, rows).index_select(-1, cols)
        return out_image, out


class RandomResizedCrop(_ResizeJoint):
    """Crop a random area fraction ``scale`` and aspect ``ratio``, resized to ``size``.

    Masks use exact nearest-neighbour resampling (see :class:`Resize`).
    """

    def __init__(
        self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bilinear",
        antialias=True,
    ):  # fmt: skip
        super().__init__(v2.RandomResizedCrop(size, scale, ratio, _mode(interpolation), antialias))


class Resize(_ResizeJoint):
    """Resize to ``size`` (an int resizes the shorter side).

    Masks take the source pixel under each output pixel's centre (nearest-exact), which
    keeps them aligned with the bilinearly resized image; torchvision's own mask resize
    (legacy nearest) can shift them by up to half a source pixel.
    """

    def __init__(self, size, interpolation="bilinear", max_size=None, antialias=True):
        sizes = [size] if isinstance(size, int) else list(size)
        if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            raise ConfigError(
                f"Resize size must be a positive int or (height, width); received {size!r}."
            )
        super().__init__(v2.Resize(size, _mode(interpolation), max_size, antialias))


class RandomCrop(TorchvisionTransform):
    """Crop a random ``size`` window (optionally padding first, image with ``fill``)."""

    def __init__(self, size, padding=None, pad_if_needed=False, fill=0.0, padding_mode="constant"):
        super().__init__(v2.RandomCrop(size, padding, pad_if_needed, _fill(fill), padding_mode))


class CenterCrop(TorchvisionTransform):
    """Crop the central ``size`` window."""

    def __init__(self, size):
        super().__init__(v2.CenterCrop(size))


class ColorJitter(TorchvisionTransform):
    """Random brightness, contrast, saturation and hue (image only; hue needs 3 channels)."""

    def __init__(self, brightness=0, contrast=0, saturation=0, hue=0):
        super().__init__(v2.ColorJitter(brightness, contrast, saturation, hue), geometric=False)


class Normalize(TorchvisionTransform):
    """``(image - mean) / std`` per channel (float images; target untouched)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        if any(not float(s) > 0 for s in std):
            raise ConfigError(f"Normalize std must be positive per channel; received std={std!r}.")
        super().__init__(v2.Normalize(list(mean), list(std)), geometric=False)


class GaussianNoise(JointTransform):
    """Add Gaussian noise ``N(mean, sigma^2)`` to a float image, clipped to [0, 1] if ``clip``."""

    geometric = False

    def __init__(self, mean: float = 0.0, sigma: float = 0.1, clip: bool = True):
        if sigma < 0:
            raise ConfigError(f"sigma must be >= 0; received {sigma!r}.")
        self.mean, self.sigma, self.clip = float(mean), float(sigma), clip

    def apply(self, image, target):
        if not image.is_floating_point():
            raise ConfigError(
                f"GaussianNoise needs a float image; received dtype {image.dtype} "
                "(apply ToTensor() first)."
            )
        noisy = image + self.mean + self.sigma * torch.randn_like(image)
        return (noisy.clamp(0, 1) if self.clip else noisy), target


class BoxesFromMasks(JointTransform):
    """Recompute ``boxes`` as the tight boxes of the instance ``masks`` (dropping empty ones).

    Put it after rotations or affine warps to replace their loose box-of-a-rotated-box.
    """

    def apply(self, image, target):
        if "masks" not in target:
            return image, target
        return image, {**target, "boxes": masks_to_boxes(target["masks"])}


def _array_image(image: Any) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        arr = image
    else:
        arr = np.asarray(image)  # PIL images convert to (H, W[, C]) arrays
        if arr.dtype == object or arr.ndim not in (2, 3):
            raise ShapeError(
                f"ToTensor needs an (H, W) or (H, W, C) array or a PIL image; received "
                f"{type(image).__name__} of shape {arr.shape}."
            )
        arr = torch.from_numpy(
            np.ascontiguousarray(arr if arr.ndim == 2 else arr.transpose(2, 0, 1))
        )
    if arr.dtype == torch.uint8:
        return arr.float().div_(255)
    if arr.dtype == torch.bool or not arr.is_floating_point():
        raise ConfigError(f"ToTensor expects uint8 or float images; received dtype {arr.dtype}.")
    return arr.float()


def _tensor_target(target: Any) -> Any:
    if target is None or isinstance(target, (int, float)):
        return target
    if isinstance(target, Mapping):
        out = dict(target)
        for key, dtype in (
            ("boxes", torch.float32),
            ("labels", torch.int64),
            ("masks", torch.uint8),
        ):
            if key in out and not isinstance(out[key], torch.Tensor):
                out[key] = torch.as_tensor(np.asarray(out[key]), dtype=dtype)
        if "mask" in out and not isinstance(out["mask"], torch.Tensor):
            out["mask"] = torch.as_tensor(np.asarray(out["mask"]).astype(np.int64))
        return out
    if isinstance(target, torch.Tensor):
        return target
    arr = np.asarray(target)
    return torch.from_numpy(arr.astype(np.int64) if arr.dtype != bool else arr)


class ToTensor:
    """Convert a PIL image or (H, W[, C]) array to float32 Tensor[C, H, W] and the target to tensors.

    uint8 images are scaled to [0, 1]; float images keep their values; 2D arrays become
    Tensor[H, W]. Array masks become int64, dict ``boxes`` float32, ``labels`` int64 and
    ``masks`` uint8.
    """

    def __call__(self, image: Any, target: Any = None) -> tuple[torch.Tensor, Any]:
        return _array_image(image), _tensor_target(target)

    def __repr__(self) -> str:
        return "ToTensor()"
