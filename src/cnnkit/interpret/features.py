"""What a CNN computes inside: feature maps (via forward hooks), learned filters, and
image grids of both (``make_grid``-style NumPy arrays ready for ``imshow``/PNG).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.interpret.cam import _eval_mode, resolve_layer, unwrap
from cnnkit.models.base import is_conv

__all__ = ["feature_map_grid", "feature_maps", "filter_grid", "filters", "make_grid"]


def feature_maps(
    model: nn.Module,
    x: torch.Tensor,
    layers: nn.Module | str | Sequence[nn.Module | str] | None = None,
) -> dict[str, torch.Tensor]:
    """The outputs of chosen layers for input ``x``, captured with forward hooks.

    Args:
        model: any ``nn.Module`` (or ``cnnkit.Model``); run once in eval mode, no grad.
        x: the input batch.
        layers: a module, a ``named_modules`` name, or a sequence of them; ``None`` means
            every convolutional layer.

    Returns:
        ``{name: Tensor}`` in forward order of the requested layers (detached; the first
        tensor of a tuple output). Names are ``model.named_modules()`` names.
    """
    net = unwrap(model)
    if layers is None:
        chosen = [(n, m) for n, m in net.named_modules() if n and is_conv(m)]
        if not chosen:
            raise ConfigError(
                f"{type(net).__name__} has no convolutional layer; pass layers= (names from "
                "model.named_modules())."
            )
    else:
        items = [layers] if isinstance(layers, (str, nn.Module)) else list(layers)
        if not items:
            raise ConfigError("feature_maps received an empty list of layers.")
        chosen = [resolve_layer(net, item) for item in items]
    found: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in chosen:

        def hook(mod, inputs, output, name=name):
            out = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(out, torch.Tensor) and name not in found:
                found[name] = out.detach().clone()

        handles.append(module.register_forward_hook(hook))
    try:
        with _eval_mode(net), torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n, _ in chosen if n not in found]
    if missing:
        raise ConfigError(f"These layers did not run in the forward pass: {missing}.")
    return found


def filters(layer: nn.Module) -> torch.Tensor:
    """A convolution's learned kernels: ``Tensor[out_channels, in_channels/groups, *k]``
    (a detached float copy of its weight)."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 3:
        shape = None if not isinstance(weight, torch.Tensor) else tuple(weight.shape)
        raise ConfigError(
            f"filters expects a built convolutional layer (weight [out, in, *kernel]); "
            f"received {type(layer).__name__} with weight {shape}."
        )
    return weight.detach().float().cpu().clone()


def _to_numpy(images: Any) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    return np.asarray(images, dtype=np.float64)


def _scale(a: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(a)), float(np.max(a))
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def make_grid(
    images: Any,
    ncols: int | None = None,
    padding: int = 1,
    normalize: str | None = "each",
    pad_value: float = 1.0,
) -> np.ndarray:
    """Tile images into one array (like ``torchvision.utils.make_grid``, channels last).

    Args:
        images: ``[N, H, W]`` (gray) or ``[N, H, W, 3]`` (RGB), NumPy or torch.
        ncols: images per row (default ``ceil(sqrt(N))``).
        padding: pixels of ``pad_value`` between and around the images.
        normalize: ``'each'`` min-max scales every image to [0, 1], ``'all'`` scales them
            together, ``None`` keeps the values.

    Returns:
        ``float64 [rows*(H+p)+p, ncols*(W+p)+p]`` (``[..., 3]`` for RGB).
    """
    a = _to_numpy(images)
    if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[-1] != 3):
        raise ShapeError(f"make_grid expects [N, H, W] or [N, H, W, 3]; received {a.shape}.")
    if normalize not in ("each", "all", None):
        raise ConfigError(f"normalize must be 'each', 'all' or None; received {normalize!r}.")
    n, h, w = a.shape[:3]
    if n == 0:
        raise ShapeError("make_grid received no images.")
    if normalize == "each":
        a = np.stack([_scale(img) for img in a])
    elif normalize == "all":
        a = _scale(a)
    ncols = int(ncols) if ncols else math.ceil(math.sqrt(n))
    ncols = max(1, min(ncols, n))
    rows = math.ceil(n / ncols)
    p = int(padding)
    shape = (rows * (h + p) + p, ncols * (w + p) + p, *a.shape[3:])
    grid = np.full(shape, float(pad_value))
    for i, img in enumerate(a):
        r, c = divmod(i, ncols)
        top, left = p + r * (h + p), p + c * (w + p)
        grid[top : top + h, left : left + w] = img
    return grid


def feature_map_grid(
    maps: Any, sample: int = 0, max_maps: int = 64, ncols: int | None = None, padding: int = 1
) -> np.ndarray:
    """Grid of the channels of one sample's feature maps (each scaled to [0, 1]).

    ``maps``: ``[N, C, H, W]`` (``sample`` picks one), ``[C, H, W]``, or one sample's 1D
    maps ``[C, L]`` shown as one ``1 x L`` strip per channel.
    """
    a = _to_numpy(maps)
    if a.ndim == 4:
        a = a[sample]
    elif a.ndim == 2:
        a = a[:, None, :]
    if a.ndim != 3:
        raise ShapeError(
            f"feature_map_grid expects [N, C, H, W], [C, H, W] or 1D maps; received "
            f"{_to_numpy(maps).shape}."
        )
    return make_grid(a[:max_maps], ncols=ncols, padding=padding, normalize="each")


def filter_grid(
    layer_or_weights: Any, max_filters: int = 64, max_in: int = 16, padding: int = 1
) -> np.ndarray:
    """Grid of a convolution's kernels.

    2D kernels with 3 input channels are drawn as RGB images (one per filter, scaled
    together as in the AlexNet filter figure); other 2D kernels as one row per filter and
    one column per input channel (at most ``max_in``); 1D kernels as an ``[in, k]`` image
    per filter; 3D kernels by their middle depth slice.
    """
    w = (
        filters(layer_or_weights)
        if isinstance(layer_or_weights, nn.Module)
        else torch.as_tensor(_to_numpy(layer_or_weights))
    )
    if w.dim() == 5:
        w = w[:, :, w.shape[2] // 2]
    w = w[:max_filters]
    if w.dim() == 3:
        return make_grid(w, padding=padding, normalize="each")
    if w.dim() != 4:
        raise ShapeError(f"filter_grid expects conv weights [out, in, *k]; received {w.shape}.")
    out_c, in_c = w.shape[:2]
    if in_c == 3:
        return make_grid(w.permute(0, 2, 3, 1), padding=padding, normalize="all")
    k = min(in_c, max_in)
    tiles = w[:, :k].reshape(out_c * k, *w.shape[2:])
    return make_grid(tiles, ncols=k if k > 1 else None, padding=padding, normalize="all")
