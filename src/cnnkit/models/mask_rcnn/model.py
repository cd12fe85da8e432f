"""Mask R-CNN (He, Gkioxari, Dollar and Girshick, "Mask R-CNN", ICCV 2017), seed 003's case
study, with torchvision's calling convention for detection models.

Stages, each its own readable module:

1. :class:`DetectionTransform`: normalise each image, optionally resize it (shorter side
   to ``min_size``, longer side at most ``max_size``), pad the batch to a multiple of
   ``size_divisible``;
2. the backbone (:mod:`~cnnkit.models.mask_rcnn.backbone`): feature maps;
3. the region proposal network (:mod:`~cnnkit.models.mask_rcnn.rpn`): anchors,
   objectness, offsets, proposals after NMS;
4. the ROI heads (:mod:`~cnnkit.models.mask_rcnn.roi_heads`): ROIAlign, box/class head
   (``K + 1`` classes), mask head (``K`` masks of ``m x m``);
5. :meth:`DetectionTransform.postprocess`: boxes back to the input image's pixels, masks
   resized to their box and pasted into an image-sized canvas (:func:`paste_masks`).

Calling convention (as ``torchvision.models.detection.maskrcnn_resnet50_fpn``):

- train mode: ``model(images, targets)`` with ``images`` a list of ``Tensor[C, H, W]``
  float images in [0, 1] (sizes may differ) or a ``Tensor[N, C, H, W]``, and ``targets``
  one dict per image with ``boxes`` (``Tensor[K, 4]`` xyxy pixels), ``labels``
  (``Tensor[K]`` int64 in ``1..num_classes``) and ``masks`` (``Tensor[K, H, W]`` 0/1);
  returns ``{'loss_objectness', 'loss_rpn_box_reg', 'loss_classifier', 'loss_box_reg',
  'loss_mask'}``, scalar tensors to sum and backpropagate.
- eval mode: ``model(images)`` returns one dict per image with ``boxes`` (``Tensor[D, 4]``
  xyxy in the input image's pixels), ``labels`` (``Tensor[D]`` int64), ``scores``
  (``Tensor[D]``) and ``masks``: ``Tensor[D, 1, H, W]`` float probabilities (each
  detection's ``m x m`` sigmoid mask resized to its box, 0 outside it), as torchvision.
  The deck's binarisation at 0.5 is :func:`binarize_masks`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.models.mask_rcnn.anchors import AnchorGenerator
from cnnkit.models.mask_rcnn.roi_heads import RoIHeads
from cnnkit.models.mask_rcnn.rpn import RegionProposalNetwork, RPNHead

__all__ = ["DetectionTransform", "MaskRCNN", "binarize_masks", "paste_masks"]


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int):
    """``Tensor[D, 1, height, width]``: each ``masks[d, 0]`` (``m x m``) resized with bilinear
    interpolation (``align_corners=False``) to the box rounded to whole pixels
    (``round(x1) .. round(x2)``, at least one pixel) and placed there, 0 elsewhere; the part
    outside the image is cut off."""
    out = masks.new_zeros((len(masks), 1, height, width))
    for d in range(len(masks)):
        x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[d])
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        resized = F.interpolate(
            masks[d : d + 1], size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False
        )[0, 0]
        ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if ix2 > ix1 and iy2 > iy1:
            out[d, 0, iy1:iy2, ix1:ix2] = resized[iy1 - y1 : iy2 - y1, ix1 - x1 : ix2 - x1]
    return out


def binarize_masks(detections, threshold: float = 0.5):
    """The deck's binarised masks: for one dict (or a list of them) from ``model(images)``,
    ``masks[:, 0] > threshold`` as ``Tensor[D, H, W]`` bool (lists map element-wise)."""
    if isinstance(detections, (list, tuple)):
        return [binarize_masks(d, threshold) for d in detections]
    return detections["masks"][:, 0] > threshold


class DetectionTransform(nn.Module):
    """Normalise, optionally resize, and batch images; map detections back afterwards."""

    def __init__(
        self,
        min_size: int | None = None,
        max_size: int | None = None,
        image_mean: Sequence[float] = (0.485, 0.456, 0.406),
        image_std: Sequence[float] = (0.229, 0.224, 0.225),
        size_divisible: int = 32,
    ):
        super().__init__()
        self.min_size, self.max_size = min_size, max_size
        self.register_buffer("mean", torch.tensor(image_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std).view(-1, 1, 1), persistent=False)
        self.size_divisible = size_divisible

    def scale_for(self, height: int, width: int) -> float:
        if self.min_size is None and self.max_size is None:
            return 1.0
        scale = 1.0 if self.min_size is None else self.min_size / min(height, width)
        if self.max_size is not None:
            scale = min(scale, self.max_size / max(height, width))
        return scale

    def forward(self, images, targets=None):
        """``(batch Tensor[N, C, Hp, Wp], image_sizes [(h, w)], targets scaled alike)``."""
        resized, sizes, new_targets = [], [], []
        for i, img in enumerate(images):
            if img.dim() != 3 or img.shape[0] != self.mean.shape[0]:
                raise ShapeError(
                    f"images must be Tensor[C, H, W] with C = {self.mean.shape[0]}; received "
                    f"shape {tuple(img.shape)} for image {i}."
                )
            img = (img.to(self.mean.dtype) - self.mean) / self.std
            h, w = img.shape[-2:]
            scale = self.scale_for(h, w)
            if scale != 1.0:
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
                img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False)[0]
            resized.append(img)
            sizes.append(tuple(img.shape[-2:]))
            if targets is not None:
                new_targets.append(self._scale_target(targets[i], (h, w), sizes[-1]))
        d = self.size_divisible
        hp = max(s[0] for s in sizes)
        wp = max(s[1] for s in sizes)
        hp, wp = -(-hp // d) * d, -(-wp // d) * d
        batch = resized[0].new_zeros((len(resized), resized[0].shape[0], hp, wp))
        for b, img in zip(batch, resized):
            b[:, : img.shape[1], : img.shape[2]].copy_(img)
        return batch, sizes, (new_targets if targets is not None else None)

    @staticmethod
    def _scale_target(target, old, new):
        boxes = target["boxes"].float()
        masks = target["masks"]
        if tuple(old) != tuple(new):
            sy, sx = new[0] / old[0], new[1] / old[1]
            boxes = boxes * boxes.new_tensor([sx, sy, sx, sy])
            if len(masks):
                masks = F.interpolate(masks[:, None].float(), size=new, mode="nearest")[:, 0]
        return {"boxes": boxes, "labels": target["labels"], "masks": masks}

    def postprocess(self, detections, image_sizes, original_sizes):
        """Boxes scaled to the original images; masks pasted at the original size."""
        for det, new, old in zip(detections, image_sizes, original_sizes):
            sy, sx = old[0] / new[0], old[1] / new[1]
            det["boxes"] = det["boxes"] * det["boxes"].new_tensor([sx, sy, sx, sy])
            det["masks"] = paste_masks(det["masks"], det["boxes"], int(old[0]), int(old[1]))
        return detections


class MaskRCNN(nn.Module):
    """Mask R-CNN for ``num_classes`` foreground classes (see the module docstring).

    Args:
        backbone: a module mapping ``Tensor[N, C, H, W]`` to a list of feature maps, with
            ``out_channels`` and ``strides`` attributes
            (:func:`~cnnkit.models.mask_rcnn.backbone.build_backbone`).
        num_classes: ``K`` foreground classes (labels ``1..K``; the class head has ``K + 1``).
        anchor_generator: anchors (one size tuple per backbone level).
        objectness: ``'sigmoid'`` (``k`` scores) or ``'softmax'`` (``2k`` scores).
        transform: the :class:`DetectionTransform`.
        rpn_kwargs / roi_kwargs: options of :class:`RegionProposalNetwork` /
            :class:`RoIHeads` (e.g. ``pooler='pool'`` for ROIPool, ``loss_weights``).
    """

    task = "instance_segmentation"

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        anchor_generator: AnchorGenerator,
        objectness: str = "sigmoid",
        transform: DetectionTransform | None = None,
        rpn_kwargs: dict | None = None,
        roi_kwargs: dict | None = None,
    ):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive int; received {num_classes!r}.")
        if len(anchor_generator.sizes) != len(backbone.strides):
            raise ConfigError(
                f"the backbone gives {len(backbone.strides)} feature maps but the anchors have "
                f"{len(anchor_generator.sizes)} size levels ({anchor_generator.sizes})."
            )
        self.num_classes = num_classes
        self.transform = transform or DetectionTransform()
        self.backbone = backbone
        head = RPNHead(backbone.out_channels, anchor_generator.num_anchors_per_location, objectness)
        self.rpn = RegionProposalNetwork(anchor_generator, head, **(rpn_kwargs or {}))
        self.roi_heads = RoIHeads(backbone.out_channels, num_classes, **(roi_kwargs or {}))

    def forward(self, images, targets=None):
        """Train: dict of losses; eval: list of detection dicts (see the module docstring)."""
        if self.training and targets is None:
            raise ConfigError(
                "MaskRCNN in train mode needs targets: model(images, targets); call "
                "model.eval() for detections."
            )
        if targets is not None and len(targets) != len(images):
            raise ConfigError(f"{len(images)} images but {len(targets)} targets.")
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        batch, image_sizes, targets = self.transform(images, targets)
        features = self.backbone(batch)
        strides = self.backbone.strides
        proposals, rpn_losses = self.rpn(features, strides, image_sizes, targets)
        detections, roi_losses = self.roi_heads(features, strides, proposals, image_sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return self.transform.postprocess(detections, image_sizes, original_sizes)
