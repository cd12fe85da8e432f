"""Stage one of Mask R-CNN: the region proposal network (Ren et al. 2015, Faster R-CNN).

Seed 003: a 3x3 convolution slides over the backbone's feature map; at each location
two sibling 1x1 convolutions give, for each of the ``k`` anchors, an objectness score
(``2k`` scores with a softmax, or ``k`` with a logistic sigmoid) and ``4k`` box offsets.
Proposals are the anchors moved by their offsets, clipped to the image, cut to the
``pre_nms_top_n`` best per feature level, thinned by non-maximum suppression and cut to
the ``post_nms_top_n`` best. Anchor shapes that are cross-boundary at every position of an
image (larger than the image) are never labelled in training, so they propose nothing
there (:meth:`RegionProposalNetwork.trainable_anchors`); otherwise such untrained scores
can outrank every trained anchor and fill the proposals with whole-image boxes.

Training (the RPN's own loss): an anchor is positive when its IoU with a true box is
``>= fg_iou_thresh`` (0.7) or it is a true box's best anchor, negative below
``bg_iou_thresh`` (0.3), ignored otherwise; cross-boundary anchors (not inside the image)
are ignored. ``batch_size_per_image`` (256) anchors are sampled per image, at most half
positive. ``loss_objectness``: binary (sigmoid) or two-class (softmax) cross-entropy over
the sampled anchors; ``loss_rpn_box_reg``: smooth L1 (``beta = 1/9``) between predicted
and target offsets of the positive anchors, summed and divided by the sampled count.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from cnnkit._core.errors import check_choice
from cnnkit.models.mask_rcnn.anchors import AnchorGenerator, BoxCoder, inside_image

__all__ = ["RPNHead", "RegionProposalNetwork", "assign_anchors", "sample_labels"]


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then a 1x1 ``cls`` conv (``k`` or ``2k`` maps) and a 1x1 ``reg``
    conv (``4k`` maps), shared by every feature level."""

    def __init__(self, in_channels: int, num_anchors: int, objectness: str = "sigmoid"):
        super().__init__()
        self.objectness = check_choice("RPN objectness", objectness, ("sigmoid", "softmax"))
        self.num_anchors = num_anchors
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        per_anchor = 1 if objectness == "sigmoid" else 2
        self.cls_logits = nn.Conv2d(in_channels, per_anchor * num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for conv in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[torch.Tensor]):
        """Per image, ``(logits [N, A, c], deltas [N, A, 4])`` with ``A`` the anchors of
        all levels in :class:`AnchorGenerator` order and ``c`` 1 (sigmoid) or 2 (softmax)."""
        logits, deltas = [], []
        for f in features:
            t = F.relu(self.conv(f))
            n, _, h, w = t.shape
            c = self.cls_logits(t).view(n, self.num_anchors, -1, h, w)
            logits.append(c.permute(0, 3, 4, 1, 2).reshape(n, h * w * self.num_anchors, -1))
            d = self.bbox_pred(t).view(n, self.num_anchors, 4, h, w)
            deltas.append(d.permute(0, 3, 4, 1, 2).reshape(n, h * w * self.num_anchors, 4))
        return torch.cat(logits, 1), torch.cat(deltas, 1)


def assign_anchors(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    image_size: tuple[int, int],
    fg_iou_thresh: float = 0.7,
    bg_iou_thresh: float = 0.3,
    allowed_border: float | None = 0.0,
):
    """Label anchors 1 (object), 0 (background) or -1 (ignored) and give each its best box.

    Returns ``(labels Tensor[A] int64, matched_boxes Tensor[A, 4])``. With
    ``allowed_border`` a number, anchors reaching further than that outside the image
    are ignored (-1); ``None`` keeps them.
    """
    labels = torch.full((len(anchors),), -1, dtype=torch.int64, device=anchors.device)
    inside = (
        inside_image(anchors, *image_size, allowed_border)
        if allowed_border is not None
        else torch.ones(len(anchors), dtype=torch.bool, device=anchors.device)
    )
    if len(gt_boxes) == 0:
        labels[inside] = 0
        return labels, torch.zeros_like(anchors)
    iou = torchvision.ops.box_iou(gt_boxes, anchors)  # [G, A]
    iou[:, ~inside] = -1.0
    best, which = iou.max(0)
    labels[(best >= 0) & (best < bg_iou_thresh)] = 0
    labels[best >= fg_iou_thresh] = 1
    # each true box's best anchors (ties included) are positive, if they overlap at all
    best_per_gt = iou.max(1, keepdim=True).values
    is_best = (iou == best_per_gt) & (best_per_gt > 0)
    labels[is_best.any(0)] = 1
    return labels, gt_boxes[which]


def sample_labels(
    labels: torch.Tensor, batch_size: int, positive_fraction: float, generator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of at most ``batch_size * positive_fraction`` random positives (label
    ``>= 1``) and enough random negatives (label 0) to make ``batch_size`` in all."""
    pos = torch.nonzero(labels >= 1).flatten()
    neg = torch.nonzero(labels == 0).flatten()
    n_pos = min(len(pos), int(batch_size * positive_fraction))
    n_neg = min(len(neg), batch_size - n_pos)
    pos = pos[torch.randperm(len(pos), generator=generator, device=pos.device)[:n_pos]]
    neg = neg[torch.randperm(len(neg), generator=generator, device=neg.device)[:n_neg]]
    return pos, neg


class RegionProposalNetwork(nn.Module):
    """Anchors, the RPN head, proposal decoding + NMS and (training) the RPN loss."""

    def __init__(
        self,
        anchor_generator: AnchorGenerator,
        head: RPNHead,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_top_n: tuple[int, int] = (2000, 1000),
        post_nms_top_n: tuple[int, int] = (2000, 1000),
        nms_thresh: float = 0.7,
        min_size: float = 1e-3,
        allowed_border: float | None = 0.0,
        box_beta: float = 1.0 / 9,
    ):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.fg_iou_thresh, self.bg_iou_thresh = fg_iou_thresh, bg_iou_thresh
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.pre_nms_top_n, self.post_nms_top_n = tuple(pre_nms_top_n), tuple(post_nms_top_n)
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.allowed_border = allowed_border
        self.box_beta = box_beta

    @staticmethod
    def objectness_logit(logits: torch.Tensor) -> torch.Tensor:
        """Log-odds of "object" from ``[..., 1]`` sigmoid or ``[..., 2]`` softmax logits
        (for a softmax over (background, object): ``l_object - l_background``)."""
        return logits[..., 0] if logits.shape[-1] == 1 else logits[..., 1] - logits[..., 0]

    def forward(self, features, strides, image_sizes, targets=None):
        """Proposals (``list`` of ``Tensor[P_i, 4]`` per image, detached) and the losses
        (an empty dict in eval mode)."""
        logits, deltas = self.head(features)
        anchors = self.anchor_generator(features, strides)
        per_level = [f.shape[-2] * f.shape[-1] * self.head.num_anchors for f in features]
        boxes = self.box_coder.decode(deltas.detach(), anchors.unsqueeze(0))
        scores = self.objectness_logit(logits.detach())
        proposals = [
            self._select(boxes[i], scores[i], per_level, image_sizes[i], anchors)
            for i in range(len(image_sizes))
        ]
        losses = {}
        if self.training:
            losses = self.loss(logits, deltas, anchors, targets, image_sizes)
        return proposals, losses

    def trainable_anchors(self, anchors, image_size, per_level) -> torch.Tensor:
        """Bool ``Tensor[A]``: anchors whose shape (size x ratio, one of the head's ``k``
        outputs per level) lies inside the image at one position at least. With
        ``allowed_border`` a number, the other shapes are cross-boundary at every position
        (e.g. 256-pixel anchors on a 256 x 192 image): they never get a training label, so
        their objectness is untrained and must not rank proposals. All ``True`` when
        ``allowed_border`` is ``None``."""
        if self.allowed_border is None:
            return torch.ones(len(anchors), dtype=torch.bool, device=anchors.device)
        k = self.head.num_anchors
        inside = inside_image(anchors, *image_size, self.allowed_border)
        return torch.cat(
            [
                m.view(-1, k).any(0).expand(len(m) // k, k).reshape(-1)
                for m in inside.split(per_level)
            ]
        )

    def _select(self, boxes, scores, per_level, image_size, anchors=None):
        mode = 0 if self.training else 1
        if anchors is not None:
            trainable = self.trainable_anchors(anchors, image_size, per_level)
            scores = scores.masked_fill(~trainable, float("-inf"))
        keep_boxes, keep_scores, keep_levels = [], [], []
        for level, (b, s) in enumerate(zip(boxes.split(per_level), scores.split(per_level))):
            top = s.topk(min(self.pre_nms_top_n[mode], len(s))).indices
            top = top[torch.isfinite(s[top])]
            keep_boxes.append(b[top])
            keep_scores.append(s[top])
            keep_levels.append(torch.full_like(top, level))
        b = torchvision.ops.clip_boxes_to_image(torch.cat(keep_boxes), image_size)
        s, lv = torch.cat(keep_scores), torch.cat(keep_levels)
        ok = torchvision.ops.remove_small_boxes(b, self.min_size)
        b, s, lv = b[ok], s[ok], lv[ok]
        keep = torchvision.ops.batched_nms(b, s, lv, self.nms_thresh)
        return b[keep[: self.post_nms_top_n[mode]]]

    def loss(self, logits, deltas, anchors, targets, image_sizes) -> dict[str, torch.Tensor]:
        pos_all, neg_all, target_deltas = [], [], []
        offset = 0
        for target, size in zip(targets, image_sizes):
            labels, matched = assign_anchors(
                anchors, target["boxes"], size, self.fg_iou_thresh, self.bg_iou_thresh,
                self.allowed_border,
            )  # fmt: skip
            pos, neg = sample_labels(labels, self.batch_size_per_image, self.positive_fraction)
            pos_all.append(pos + offset)
            neg_all.append(neg + offset)
            target_deltas.append(self.box_coder.encode(matched[pos], anchors[pos]))
            offset += len(anchors)
        pos, neg = torch.cat(pos_all), torch.cat(neg_all)
        flat_logits = logits.reshape(-1, logits.shape[-1])
        sampled = torch.cat([pos, neg])
        y = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
        if len(sampled) == 0:  # every anchor ignored: nothing to learn from these images
            loss_obj = flat_logits.sum() * 0.0
        elif flat_logits.shape[-1] == 1:
            loss_obj = F.binary_cross_entropy_with_logits(flat_logits[sampled, 0], y.float())
        else:
            loss_obj = F.cross_entropy(flat_logits[sampled], y)
        loss_box = F.smooth_l1_loss(
            deltas.reshape(-1, 4)[pos], torch.cat(target_deltas), beta=self.box_beta,
            reduction="sum",
        ) / max(len(sampled), 1)  # fmt: skip
        return {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_box}
