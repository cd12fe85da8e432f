"""The plumbing of joint image + target transforms: target forms, box clean-up, masks_to_boxes.

A 2D joint transform is called as ``t(image, target)`` and returns ``(image, target)`` in
the forms it received:

- ``image``: Tensor[C, H, W] or Tensor[H, W], any dtype (float in [0, 1] or uint8).
- ``target``: ``None``; a class label (int, or a tensor with at most one dimension),
  passed through untouched; a mask Tensor[H, W] or Tensor[1, H, W] (class indices);
  or a dict with any of ``'mask'`` (Tensor[H, W] class mask), ``'masks'``
  (Tensor[K, H, W] instance masks), ``'boxes'`` (Tensor[K, 4] float ``x1, y1, x2, y2``
  in pixel-edge coordinates), ``'labels'`` (Tensor[K]) and per-object ``'area'``,
  ``'iscrowd'``, ``'scores'``; other keys pass through untouched.

Internally a target becomes a dict whose ``'mask'`` is Tensor[1, H, W]; after a geometric
transform, boxes are clipped to the image and objects whose box is narrower or lower than
``min_size`` pixels, or whose instance mask became empty, are dropped together with their
labels, masks and other per-object values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from cnnkit._core.errors import ConfigError, ShapeError

__all__ = ["MIN_BOX_SIZE", "PER_OBJECT_KEYS", "JointTransform", "masks_to_boxes", "sanitize"]

MIN_BOX_SIZE = 1.0
"""Boxes narrower or lower than this many pixels after a geometric transform are dropped."""

PER_OBJECT_KEYS = ("boxes", "labels", "masks", "area", "iscrowd", "scores")
"""Target keys holding one entry per object, filtered together when objects are dropped."""


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight pixel-edge boxes of masks.

    Args:
        masks: Tensor[K, H, W] (any dtype; nonzero = inside).

    Returns:
        Tensor[K, 4] float32 ``(x1, y1, x2, y2)``: a mask covering columns ``a..b`` and rows
        ``c..d`` gets ``(a, c, b + 1, d + 1)`` (torchvision.ops.masks_to_boxes gives
        ``(a, c, b, d)``); an empty mask gets ``(0, 0, 0, 0)``.
    """
    if masks.ndim != 3:
        raise ShapeError(f"masks must be Tensor[K, H, W]; received shape {tuple(masks.shape)}.")
    k, h, w = masks.shape
    if k == 0:
        return torch.zeros(0, 4, dtype=torch.float32)
    inside = masks != 0
    rows, cols = inside.any(2), inside.any(1)  # (K, H), (K, W)
    y1 = rows.int().argmax(1)
    y2 = h - rows.flip(1).int().argmax(1)
    x1 = cols.int().argmax(1)
    x2 = w - cols.flip(1).int().argmax(1)
    boxes = torch.stack([x1, y1, x2, y2], 1).float()
    return torch.where(rows.any(1, keepdim=True), boxes, torch.zeros_like(boxes))


def sanitize(
    target: dict[str, Any], canvas_size: tuple[int, int], min_size: float = MIN_BOX_SIZE
) -> dict[str, Any]:
    """Clip boxes to the canvas and drop degenerate objects with all their per-object values.

    Args:
        target: internal target dict (see the module docstring).
        canvas_size: (H, W) of the image.
        min_size: smallest kept box width and height in pixels.

    Returns:
        A new dict; an object is kept when its clipped box (if any) is at least ``min_size``
        wide and high and its instance mask (if any) has a nonzero pixel.
    """
    boxes, masks = target.get("boxes"), target.get("masks")
    if boxes is None and masks is None:
        return target
    out = dict(target)
    keep = None
    if boxes is not None:
        h, w = canvas_size
        boxes = boxes.clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        out["boxes"] = boxes
        keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    if masks is not None:
        nonempty = masks.flatten(1).any(1) if masks.numel() else masks.new_zeros(len(masks)).bool()
        keep = nonempty if keep is None else keep & nonempty
    if bool(keep.all()):
        return out
    index = torch.nonzero(keep).flatten()
    for key in PER_OBJECT_KEYS:
        value = out.get(key)
        if isinstance(value, torch.Tensor) and value.ndim and len(value) == len(keep):
            out[key] = value[index]
        elif isinstance(value, list) and len(value) == len(keep):
            out[key] = [value[i] for i in index.tolist()]
    return out


def _check_spatial(name: str, value: object, hw: tuple[int, int], lead: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ConfigError(
            f"target[{name!r}] must be a torch.Tensor; received {type(value).__name__} "
            "(apply cnnkit.data.transforms.ToTensor() first)."
        )
    if value.ndim == 2 and name == "mask":
        value = value[None]
    if value.ndim != 3 or tuple(value.shape[-2:]) != hw or (name == "mask" and len(value) != 1):
        raise ShapeError(
            f"target[{name!r}] must be Tensor[{lead}, H, W] matching the image's (H, W) = {hw}; "
            f"received shape {tuple(value.shape)}."
        )
    return value


def unpack(image: object, target: object) -> tuple[torch.Tensor, dict[str, Any], Callable]:
    """Normalise a sample to (Tensor[C, H, W], internal dict) plus a function restoring its form."""
    if not isinstance(image, torch.Tensor):
        raise ConfigError(
            f"image must be a torch.Tensor[C, H, W]; received {type(image).__name__} "
            "(apply cnnkit.data.transforms.ToTensor() first)."
        )
    if image.ndim not in (2, 3):
        raise ShapeError(
            f"image must be Tensor[C, H, W] or Tensor[H, W]; received shape {tuple(image.shape)}."
        )
    flat_image = image.ndim == 2
    img = image[None] if flat_image else image
    hw = (img.shape[-2], img.shape[-1])

    def fix_image(out: torch.Tensor) -> torch.Tensor:
        return out[0] if flat_image else out

    if (
        target is None
        or isinstance(target, (int, float))
        or (isinstance(target, torch.Tensor) and target.ndim <= 1)
    ):
        return img, {}, lambda i, t: (fix_image(i), target)
    if isinstance(target, torch.Tensor):
        if target.ndim not in (2, 3):
            raise ShapeError(
                "A tensor target must be a label (0 or 1 dims) or a mask Tensor[H, W] / "
                f"Tensor[1, H, W]; received shape {tuple(target.shape)}."
            )
        mask = _check_spatial("mask", target if target.ndim == 3 else target[None], hw, "1")
        flat = target.ndim == 2
        return img, {"mask": mask}, lambda i, t: (fix_image(i), t["mask"][0] if flat else t["mask"])
    if isinstance(target, Mapping):
        inner = dict(target)
        flat_mask = False
        if "mask" in inner:
            flat_mask = isinstance(inner["mask"], torch.Tensor) and inner["mask"].ndim == 2
            inner["mask"] = _check_spatial("mask", inner["mask"], hw, "1")
        if "masks" in inner:
            inner["masks"] = _check_spatial("masks", inner["masks"], hw, "K")
        if "boxes" in inner:
            boxes = inner["boxes"]
            if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
                raise ShapeError(
                    "target['boxes'] must be Tensor[K, 4] (x1, y1, x2, y2); received "
                    f"{tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__}."
                )
            if "masks" in inner and len(inner["masks"]) != len(boxes):
                raise ShapeError(
                    f"target has {len(boxes)} boxes but {len(inner['masks'])} instance masks."
                )
            inner["boxes"] = boxes if boxes.is_floating_point() else boxes.float()

        def restore(i, t):
            out = dict(t)
            if flat_mask:
                out["mask"] = out["mask"][0]
            return fix_image(i), type(target)(out) if type(target) is not dict else out

        return img, inner, restore
    raise ConfigError(
        "target must be None, a label, a mask tensor or a dict with 'mask'/'masks'/'boxes'/"
        f"'labels'; received {type(target).__name__}."
    )


class JointTransform:
    """Base of 2D joint transforms: ``t(image, target) -> (image, target)``.

    Subclasses implement :meth:`apply` on the internal form (image Tensor[C, H, W], target
    dict, see the module docstring); every random draw happens once per call, so the image
    and all parts of its target see the same parameters.
    """

    geometric = True

    def __call__(self, image: Any, target: Any = None) -> tuple[Any, Any]:
        img, inner, restore = unpack(image, target)
        img, inner = self.apply(img, inner)
        if self.geometric and inner:
            inner = sanitize(inner, (img.shape[-2], img.shape[-1]))
        return restore(img, inner)

    def apply(self, image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
