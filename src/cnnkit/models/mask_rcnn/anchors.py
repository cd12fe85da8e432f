"""Anchor boxes and the box coder of the region proposal network (Ren et al. 2015).

Seed 003: "Every location/'sliding window' in the final feature map is associated with
k = 15 anchor boxes of varying sizes and aspect ratios. For a convolutional feature map
of size W x H, there will be W x H x k anchor boxes. Cross-boundary anchors are ignored
during training."

An anchor of size ``s`` and aspect ratio ``r = height / width`` has ``w = s / sqrt(r)``
and ``h = s * sqrt(r)`` (area ``s^2``), centred on the feature cell's centre in image
pixels, ``((x + 0.5) * stride, (y + 0.5) * stride)``. Anchors are listed location by
location (row-major over the map), the ``k = len(sizes) * len(ratios)`` anchors of one
location together (sizes outer, ratios inner), which is the order in which
:class:`~cnnkit.models.mask_rcnn.rpn.RPNHead` lays out its ``k`` scores and ``4k`` offsets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from cnnkit._core.errors import ConfigError

__all__ = ["AnchorGenerator", "BoxCoder", "inside_image"]

#: log(1000 / 16): the largest width/height scaling a decoded offset may apply
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


class AnchorGenerator:
    """``k = len(sizes) x len(aspect_ratios)`` anchors per location of each feature map.

    Args:
        sizes: one tuple of anchor sizes (square roots of the areas, pixels) per feature
            level; default five sizes on one level, which with three ratios gives the
            deck's 15 anchors per location.
        aspect_ratios: height / width ratios (the deck's 1:1, 1:2 and 2:1).
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]] = ((32, 64, 128, 256, 512),),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    ):
        sizes = tuple(tuple(float(s) for s in level) for level in sizes)
        ratios = tuple(float(r) for r in aspect_ratios)
        if not sizes or any(not level or min(level) <= 0 for level in sizes):
            raise ConfigError(
                f"anchor sizes must be one non-empty tuple of positive sizes per feature "
                f"level; received {sizes!r}."
            )
        if len({len(level) for level in sizes}) != 1:
            raise ConfigError(f"every level needs the same number of sizes; received {sizes!r}.")
        if not ratios or min(ratios) <= 0:
            raise ConfigError(f"aspect ratios must be positive; received {aspect_ratios!r}.")
        self.sizes = sizes
        self.aspect_ratios = ratios
        self.cell_anchors = [self._cell_anchors(level) for level in sizes]

    @property
    def num_anchors_per_location(self) -> int:
        """``k``: anchors at each position of a feature map."""
        return len(self.sizes[0]) * len(self.aspect_ratios)

    def _cell_anchors(self, sizes: tuple[float, ...]) -> torch.Tensor:
        """``Tensor[k, 4]`` boxes ``(x1, y1, x2, y2)`` centred on the origin."""
        rows = []
        for s in sizes:
            for r in self.aspect_ratios:
                w, h = s / math.sqrt(r), s * math.sqrt(r)
                rows.append([-w / 2, -h / 2, w / 2, h / 2])
        return torch.tensor(rows, dtype=torch.float32)

    def grid_anchors(
        self, level: int, height: int, width: int, stride: float, device=None
    ) -> torch.Tensor:
        """``Tensor[height * width * k, 4]``: the anchors of one ``height x width`` map."""
        ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) * stride
        xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
        return (centres + self.cell_anchors[level].to(device)).reshape(-1, 4)

    def __call__(self, features: Sequence[torch.Tensor], strides: Sequence[float]) -> torch.Tensor:
        """All anchors of the feature maps ``features`` (``[N, C, H_l, W_l]`` each, with
        ``strides[l]`` image pixels per cell), concatenated level after level."""
        if len(features) != len(self.sizes):
            raise ConfigError(
                f"{len(self.sizes)} anchor size levels for {len(features)} feature maps; "
                "give one tuple of sizes per feature map."
            )
        return torch.cat(
            [
                self.grid_anchors(i, f.shape[-2], f.shape[-1], s, f.device)
                for i, (f, s) in enumerate(zip(features, strides))
            ]
        )


def inside_image(anchors: torch.Tensor, height: int, width: int, border: float = 0.0):
    """Bool mask of anchors lying inside the ``height x width`` image (``border`` pixels of
    slack): the others are the cross-boundary anchors ignored in training."""
    return (
        (anchors[:, 0] >= -border)
        & (anchors[:, 1] >= -border)
        & (anchors[:, 2] <= width + border)
        & (anchors[:, 3] <= height + border)
    )


class BoxCoder:
    """Box offsets relative to a reference box (R-CNN's parametrisation).

    ``t_x = w_x (x - x_a) / w_a``, ``t_y = w_y (y - y_a) / h_a``, ``t_w = w_w log(w / w_a)``,
    ``t_h = w_h log(h / h_a)`` with centres ``x, y`` and sizes ``w, h`` of the box and
    ``x_a, y_a, w_a, h_a`` of the reference (anchor or proposal), ``weights = (w_x, w_y,
    w_w, w_h)``: ``(1, 1, 1, 1)`` in the RPN, ``(10, 10, 5, 5)`` in the box head.
    """

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)):
        self.weights = tuple(float(w) for w in weights)

    @staticmethod
    def _centre_size(boxes: torch.Tensor):
        w = boxes[..., 2] - boxes[..., 0]
        h = boxes[..., 3] - boxes[..., 1]
        return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h

    def encode(self, boxes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Offsets ``Tensor[..., 4]`` that turn ``reference`` into ``boxes`` (both xyxy)."""
        wx, wy, ww, wh = self.weights
        x, y, w, h = self._centre_size(boxes)
        xa, ya, wa, ha = self._centre_size(reference)
        return torch.stack(
            [
                wx * (x - xa) / wa,
                wy * (y - ya) / ha,
                ww * torch.log(w / wa),
                wh * torch.log(h / ha),
            ],
            dim=-1,
        )

    def decode(self, deltas: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Boxes (xyxy) from offsets ``deltas [..., 4]`` and ``reference [..., 4]`` (the
        scale offsets clipped at log(1000/16), as in Detectron and torchvision)."""
        wx, wy, ww, wh = self.weights
        xa, ya, wa, ha = self._centre_size(reference.to(deltas.dtype))
        dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=BBOX_XFORM_CLIP)
        dh = (deltas[..., 3] / wh).clamp(max=BBOX_XFORM_CLIP)
        x, y = xa + dx * wa, ya + dy * ha
        w, h = wa * torch.exp(dw), ha * torch.exp(dh)
        return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], dim=-1)
