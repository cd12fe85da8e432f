"""Mask R-CNN (He et al. 2017), seed 003's case study: ``create('mask_rcnn', num_classes=K)``.

Modules: :mod:`.anchors` (anchor boxes, box coder), :mod:`.backbone` (ResNet C4 / FPN,
small CPU net), :mod:`.rpn` (region proposal network), :mod:`.roi_heads` (ROIAlign /
ROIPool, box/class and mask heads, losses), :mod:`.model` (``MaskRCNN``, the transform,
mask pasting).
"""

from __future__ import annotations

from collections.abc import Sequence

from cnnkit.models.mask_rcnn.anchors import AnchorGenerator, BoxCoder
from cnnkit.models.mask_rcnn.backbone import build_backbone
from cnnkit.models.mask_rcnn.model import (
    DetectionTransform,
    MaskRCNN,
    binarize_masks,
    paste_masks,
)
from cnnkit.models.registry import register_model

__all__ = [
    "AnchorGenerator",
    "BoxCoder",
    "DetectionTransform",
    "MaskRCNN",
    "binarize_masks",
    "mask_rcnn",
    "paste_masks",
]

_AUTO = "auto"
# per backbone kind: anchor sizes, image resizing, RPN and ROI-head options
_DEFAULTS = {
    "small": dict(
        anchor_sizes=((8, 12, 16, 24, 32),),
        min_size=None,
        max_size=None,
        rpn=dict(batch_size_per_image=128, pre_nms_top_n=(600, 300), post_nms_top_n=(300, 100)),
        roi=dict(batch_size_per_image=64, representation=256, mask_channels=128),
    ),
    "c4": dict(
        anchor_sizes=((32, 64, 128, 256, 512),),
        min_size=800,
        max_size=1333,
        rpn=dict(),
        roi=dict(),
    ),
    "fpn": dict(
        anchor_sizes=((32,), (64,), (128,), (256,)),
        min_size=800,
        max_size=1333,
        rpn=dict(),
        roi=dict(),
    ),
}


@register_model("mask_rcnn")
def mask_rcnn(
    num_classes: int = 80,
    backbone: str = "resnet50",
    fpn: bool = False,
    in_channels: int = 3,
    anchor_sizes: Sequence[Sequence[float]] | None = None,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    objectness: str = "sigmoid",
    pooler: str = "align",
    min_size: int | None | str = _AUTO,
    max_size: int | None | str = _AUTO,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    rpn_kwargs: dict | None = None,
    roi_kwargs: dict | None = None,
) -> MaskRCNN:
    """Mask R-CNN (He, Gkioxari, Dollar, Girshick, ICCV 2017) for ``num_classes`` = ``K``
    foreground classes (labels ``1..K``; the class head has ``K + 1`` outputs).

    Input: a list of ``Tensor[C, H, W]`` float images in [0, 1] (any sizes); train mode
    also takes targets (``boxes`` xyxy, ``labels``, ``masks [K, H, W]``) and returns the
    five named losses, eval mode returns ``boxes``, ``labels``, ``scores`` and ``masks``
    (``Tensor[D, 1, H, W]`` probabilities; :func:`binarize_masks` thresholds them at 0.5).

    ``backbone``: ``'resnet50'`` / ``'resnet18'`` (cnnkit's ResNet, C4 at stride 16, or
    C2-C5 with an FPN if ``fpn``; images resized to a shorter side of 800, longer at most
    1333; 5 anchor sizes 32-512 x 3 ratios = 15 anchors per location without FPN, one size
    per level with it) or ``'small'`` (stride 4, anchor sizes 8-32, no resizing; for
    64x64 to 128x128 images on a CPU). ``objectness``: ``'sigmoid'`` (k scores) or
    ``'softmax'`` (2k); ``pooler``: ``'align'`` (ROIAlign) or ``'pool'`` (ROIPool).
    ``rpn_kwargs`` / ``roi_kwargs`` override the RPN's and ROI heads' options (thresholds,
    sample sizes, NMS, ``loss_weights``, ...).
    """
    net = build_backbone(backbone, in_channels, fpn)
    kind = "small" if backbone == "small" else ("fpn" if fpn else "c4")
    d = _DEFAULTS[kind]
    anchors = AnchorGenerator(anchor_sizes or d["anchor_sizes"], aspect_ratios)
    mean = image_mean or ((0.485, 0.456, 0.406) if in_channels == 3 else (0.5,) * in_channels)
    std = image_std or ((0.229, 0.224, 0.225) if in_channels == 3 else (0.25,) * in_channels)
    transform = DetectionTransform(
        d["min_size"] if min_size == _AUTO else min_size,
        d["max_size"] if max_size == _AUTO else max_size,
        mean,
        std,
    )
    return MaskRCNN(
        net,
        num_classes,
        anchors,
        objectness,
        transform,
        rpn_kwargs={**d["rpn"], **(rpn_kwargs or {})},
        roi_kwargs={**d["roi"], "pooler": pooler, **(roi_kwargs or {})},
    )
