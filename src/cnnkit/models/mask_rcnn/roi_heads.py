"""Stage two of Mask R-CNN: ROIAlign, the box/class head and the mask head (He et al. 2017).

Seed 003: the proposals' regions of the feature map are reshaped to a fixed size by
ROIAlign (bilinear sampling, :func:`torchvision.ops.roi_align`) or, for comparison,
ROIPool (max-pooling over unequal sections, :func:`torchvision.ops.roi_pool`). The
box/class head (two dense layers) ends in ``K + 1`` class scores (background is class 0)
and 4 box offsets for each of the ``K`` classes. The mask head (3x3 convolutions on a
``7 x 7`` ROI, a transposed convolution to ``14 x 14``, a 1x1 convolution) gives ``K``
masks of ``m x m`` (``m = 2 x mask_roi_size``), one per class, with a sigmoid.

Training: proposals (plus the true boxes) with IoU ``>= fg_iou_thresh`` (0.5) with a true
box take its class, the others are background; ``batch_size_per_image`` (512) are
sampled per image, at most ``positive_fraction`` (1/4) positive. Per ROI, seed 003's
``L = L_cls + L_box + L_mask`` with weights:

- ``loss_classifier``: the negative log-likelihood of the true class (cross-entropy over
  ``K + 1`` scores), averaged over the sampled ROIs;
- ``loss_box_reg``: smooth L1 (``beta``, default 1/9) between the true class's predicted
  offsets and the offsets (weights 10, 10, 5, 5) of its true box, summed over the 4
  values and the positive ROIs and divided by the number of sampled ROIs;
- ``loss_mask``: average binary cross-entropy over the ``m x m`` pixels of the true
  class's mask only, averaged over the positive ROIs. The target is the true mask cropped
  to the proposal and resized to ``m x m`` (:func:`mask_targets`), binarised at 0.5.

Inference: softmax class probabilities, per-class decoded boxes clipped to the image,
scores above ``score_thresh``, per-class NMS at ``nms_thresh`` and the best
``detections_per_img``; masks of the detected boxes are the sigmoid of their class's
channel (``m x m`` probabilities, pasted into the image by the model's transform).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from cnnkit.models.mask_rcnn.anchors import BoxCoder
from cnnkit.models.mask_rcnn.pooling import RoIPooler
from cnnkit.models.mask_rcnn.rpn import sample_labels

__all__ = ["BoxHead", "MaskHead", "RoIHeads", "mask_targets"]


class BoxHead(nn.Module):
    """Flatten -> Dense(representation) -> ReLU -> Dense(representation) -> ReLU, then the
    sibling ``cls_score`` (``K + 1``) and ``bbox_pred`` (``4K``, per foreground class)."""

    def __init__(self, in_features: int, num_classes: int, representation: int = 1024):
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation)
        self.fc7 = nn.Linear(representation, representation)
        self.cls_score = nn.Linear(representation, num_classes + 1)
        self.bbox_pred = nn.Linear(representation, 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x):
        x = F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))
        return self.cls_score(x), self.bbox_pred(x).view(len(x), -1, 4)


class MaskHead(nn.Module):
    """``num_convs`` 3x3 conv + ReLU, ConvTranspose 2x2 stride 2 (``s -> 2s``, the deck's
    7 -> 14) + ReLU, 1x1 conv to ``K`` mask logits."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256,
                 num_convs: int = 2):  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(num_convs):
            layers += [nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(inplace=True)]
            c = channels
        self.convs = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(c, channels, 2, stride=2)
        self.mask_logits = nn.Conv2d(channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.mask_logits(F.relu(self.upsample(self.convs(x))))


def mask_targets(
    gt_masks: torch.Tensor, boxes: torch.Tensor, matched: torch.Tensor, size: int
) -> torch.Tensor:
    """``Tensor[P, size, size]`` 0/1: the true mask ``gt_masks[matched[j]]`` cropped to
    ``boxes[j]`` and resized to ``size x size`` by bilinear sampling at the cell centres
    (ROIAlign with one sample per cell on the mask), binarised at 0.5."""
    if len(boxes) == 0:
        return gt_masks.new_zeros((0, size, size), dtype=torch.float32)
    rois = torch.cat([matched[:, None].to(boxes.dtype), boxes], 1)
    crops = torchvision.ops.roi_align(
        gt_masks[:, None].float(), rois, (size, size), 1.0, sampling_ratio=1, aligned=True
    )
    return (crops[:, 0] >= 0.5).float()


class RoIHeads(nn.Module):
    """Proposal sampling and matching, the pooler, the box/class and mask heads, losses
    and inference post-processing (see the module docstring)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        pooler: str = "align",
        box_roi_size: int = 7,
        mask_roi_size: int = 7,
        representation: int = 1024,
        mask_channels: int = 256,
        mask_convs: int = 2,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        box_beta: float = 1.0 / 9,
        loss_weights: dict[str, float] | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.box_pooler = RoIPooler(box_roi_size, pooler)
        self.mask_pooler = RoIPooler(mask_roi_size, pooler)
        self.box_head = BoxHead(in_channels * box_roi_size**2, num_classes, representation)
        self.mask_head = MaskHead(in_channels, num_classes, mask_channels, mask_convs)
        self.mask_size = 2 * mask_roi_size
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.fg_iou_thresh, self.bg_iou_thresh = fg_iou_thresh, bg_iou_thresh
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img = detections_per_img
        self.box_beta = box_beta
        self.loss_weights = {"loss_classifier": 1.0, "loss_box_reg": 1.0, "loss_mask": 1.0}
        self.loss_weights.update(loss_weights or {})

    # ----------------------------------------------------------------------- training
    def sample_proposals(self, proposals, target):
        """Sampled ROIs of one image: ``(boxes, labels, matched_gt_index)`` with label 0
        for background and the true box's class for IoU ``>= fg_iou_thresh``."""
        gt_boxes, gt_labels = target["boxes"], target["labels"]
        boxes = torch.cat([proposals, gt_boxes])
        if len(gt_boxes) == 0:
            labels = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
            matched = torch.zeros_like(labels)
        else:
            iou = torchvision.ops.box_iou(gt_boxes, boxes)
            best, matched = iou.max(0)
            labels = gt_labels[matched].clone()
            labels[best < self.bg_iou_thresh] = 0
            labels[(best >= self.bg_iou_thresh) & (best < self.fg_iou_thresh)] = -1
        pos, neg = sample_labels(labels, self.batch_size_per_image, self.positive_fraction)
        keep = torch.cat([pos, neg])
        return boxes[keep], labels[keep], matched[keep]

    def forward(self, features, strides, proposals, image_sizes, targets=None):
        """Training: ``([], losses)``; eval: ``(detections, {})``, one dict per image with
        ``boxes``, ``labels``, ``scores`` and ``masks`` (``Tensor[D, 1, m, m]`` probabilities)."""
        if self.training:
            return [], self.losses(features, strides, proposals, targets)
        return self.detect(features, strides, proposals, image_sizes), {}

    def losses(self, features, strides, proposals, targets) -> dict[str, torch.Tensor]:
        sampled = [self.sample_proposals(p, t) for p, t in zip(proposals, targets)]
        boxes = [s[0] for s in sampled]
        labels = torch.cat([s[1] for s in sampled])
        class_logits, deltas = self.box_head(self.box_pooler(features, strides, boxes))
        loss_cls = F.cross_entropy(class_logits, labels)
        pos = torch.nonzero(labels > 0).flatten()
        reg_targets = torch.cat(
            [
                self.box_coder.encode(t["boxes"][m] if len(t["boxes"]) else b, b)
                for (b, _, m), t in zip(sampled, targets)
            ]
        )
        loss_box = F.smooth_l1_loss(
            deltas[pos, labels[pos] - 1], reg_targets[pos], beta=self.box_beta, reduction="sum"
        ) / max(len(labels), 1)
        # mask branch: positive ROIs only, the true class's channel only
        pos_boxes = [b[lab > 0] for b, lab, _ in sampled]
        logits = self.mask_head(self.mask_pooler(features, strides, pos_boxes))
        if len(pos):
            mask_t = torch.cat(
                [
                    mask_targets(t["masks"], b[lab > 0], m[lab > 0], self.mask_size)
                    for (b, lab, m), t in zip(sampled, targets)
                ]
            )
            chosen = logits[torch.arange(len(pos)), labels[pos] - 1]
            loss_mask = F.binary_cross_entropy_with_logits(chosen, mask_t)
        else:
            loss_mask = logits.sum() * 0.0
        w = self.loss_weights
        return {
            "loss_classifier": w["loss_classifier"] * loss_cls,
            "loss_box_reg": w["loss_box_reg"] * loss_box,
            "loss_mask": w["loss_mask"] * loss_mask,
        }

    # ---------------------------------------------------------------------- inference
    def detect(self, features, strides, proposals, image_sizes) -> list[dict]:
        counts = [len(p) for p in proposals]
        class_logits, deltas = self.box_head(self.box_pooler(features, strides, proposals))
        probs = F.softmax(class_logits, -1)
        boxes = self.box_coder.decode(deltas, torch.cat(proposals)[:, None])  # [R, K, 4]
        results = []
        for p, b, size in zip(probs.split(counts), boxes.split(counts), image_sizes):
            b = torchvision.ops.clip_boxes_to_image(b, size).reshape(-1, 4)
            scores = p[:, 1:].reshape(-1)
            labels = torch.arange(1, self.num_classes + 1, device=b.device).repeat(len(p))
            ok = torch.nonzero(scores > self.score_thresh).flatten()
            b, scores, labels = b[ok], scores[ok], labels[ok]
            ok = torchvision.ops.remove_small_boxes(b, 1e-2)
            b, scores, labels = b[ok], scores[ok], labels[ok]
            keep = torchvision.ops.batched_nms(b, scores, labels, self.nms_thresh)
            keep = keep[: self.detections_per_img]
            results.append({"boxes": b[keep], "labels": labels[keep], "scores": scores[keep]})
        logits = self.mask_head(self.mask_pooler(features, strides, [r["boxes"] for r in results]))
        labels = torch.cat([r["labels"] for r in results])
        probs = torch.sigmoid(logits[torch.arange(len(labels)), labels - 1])[:, None]
        for r, m in zip(results, probs.split([len(r["boxes"]) for r in results])):
            r["masks"] = m
        return results
