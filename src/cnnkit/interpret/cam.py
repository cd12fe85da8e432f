"""Class activation maps (Zhou et al. 2016) and Grad-CAM (Selvaraju et al. 2017).

Seed 003 lists the steps of a class activation map (CAM) for a net that ends in global
average pooling (GAP) and one dense layer:

1. run a forward pass with the image; take the final feature maps ``f_1 .. f_l``;
2. take the weights ``w_j1 .. w_jl`` that connect the GAP vector with class ``j``;
3. ``CAM_j = sum_k w_jk * f_k``;
4. normalise the values to ``[0, 1]``;
5. upsample (bilinear) back to the input size.

Because GAP is linear, ``mean(CAM_j) + b_j`` is the class logit. Grad-CAM needs no GAP:
it weights the maps of any layer by the spatial mean of the gradient of the class score
(the logit, before softmax/sigmoid) with respect to them, then applies a ReLU. For a
GAP + dense net those weights are ``w_jk / (H * W)``, so Grad-CAM before the ReLU is
CAM divided by the number of positions. For segmentation outputs the class score is the
class logit summed over a region of pixels.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit._core.errors import CnnkitError, ConfigError, ShapeError, did_you_mean
from cnnkit.layers.core import Activation, Dense, Flatten, Reshape
from cnnkit.layers.dropout import Dropout, SpatialDropout1D, SpatialDropout2D, SpatialDropout3D
from cnnkit.layers.global_pooling import (
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalAveragePooling3D,
)
from cnnkit.models.base import is_conv, last_conv_of

__all__ = ["cam", "grad_cam", "resolve_layer", "unwrap"]

_GAP = (GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalAveragePooling3D)
_PASS = (Flatten, Reshape, Dropout, SpatialDropout1D, SpatialDropout2D, SpatialDropout3D)
_PASS += (nn.Flatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)
_OUT_ACT = (nn.Softmax, nn.Sigmoid, nn.LogSoftmax)
_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}
_SEE_GRAD_CAM = (
    " Class activation maps need a net that ends in global average pooling and one dense "
    "layer (e.g. create('gap_cnn'), resnet18, googlenet); for any other CNN use "
    "cnnkit.interpret.grad_cam(model, x, layer=...)."
)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a ``cnnkit.Model`` (its ``_net``), else ``model`` itself."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"Expected a torch.nn.Module; received {type(model).__name__}.")
    net = getattr(model, "_net", None)
    return net if isinstance(net, nn.Module) else model


@contextlib.contextmanager
def _eval_mode(net: nn.Module) -> Iterator[None]:
    """Evaluation mode (dropout off, batch-norm running statistics) within the block."""
    was = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was)


def _flatten(modules: Sequence[nn.Module]) -> list[nn.Module]:
    """Expand nested ``nn.Sequential`` containers into their layers, in order."""
    out: list[nn.Module] = []
    for m in modules:
        if isinstance(m, nn.Sequential):
            out += _flatten(list(m))
        else:
            out.append(m)
    return out


def _is_gap(m: nn.Module) -> bool:
    if isinstance(m, _GAP):
        return True
    if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        size = m.output_size
        sizes = size if isinstance(size, (tuple, list)) else (size,)
        return all(s == 1 for s in sizes)
    return False


def _is_output_activation(m: nn.Module) -> bool:
    if isinstance(m, _OUT_ACT):
        return True
    if isinstance(m, Activation):
        return m.activation in (None, "linear", "softmax", "sigmoid", "log_softmax")
    return False


def _gap_dense_split(
    net: nn.Module,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module]:
    """``(features_fn, dense)``: the function giving the final feature maps, and the one
    dense layer after GAP. Raises CnnkitError when the net has another head."""
    name = type(net).__name__
    if hasattr(net, "forward_features") and hasattr(net, "forward_head"):
        if isinstance(getattr(net, "head_start", None), int) and isinstance(net, nn.Sequential):
            head = _flatten(list(net)[net.head_start :])
        elif isinstance(getattr(net, "head", None), nn.Module):
            head = _flatten([net.head])
        else:
            raise CnnkitError(
                f"{name} has forward_head but no head layers to read." + _SEE_GRAD_CAM
            )
        features_fn = net.forward_features
    elif isinstance(net, nn.Sequential):
        layers = _flatten(list(net))
        gaps = [i for i, m in enumerate(layers) if _is_gap(m)]
        if not gaps:
            raise CnnkitError(f"{name} has no global average pooling layer." + _SEE_GRAD_CAM)
        body, head = layers[: gaps[-1]], layers[gaps[-1] :]

        def features_fn(x: torch.Tensor) -> torch.Tensor:
            for layer in body:
                x = layer(x)
            return x

    else:
        raise CnnkitError(
            f"cam cannot find the head of {name}: it is neither a Sequential nor a model "
            "with forward_features/forward_head." + _SEE_GRAD_CAM
        )
    kinds = [type(m).__name__ for m in head]
    rest = [m for m in head[1:] if not isinstance(m, _PASS)]
    ok = (
        bool(head)
        and _is_gap(head[0])
        and len(rest) >= 1
        and isinstance(rest[0], (Dense, nn.Linear))
        and all(_is_output_activation(m) for m in rest[1:])
    )
    if not ok:
        raise CnnkitError(
            f"{name}'s head is {kinds}, not global average pooling followed by one dense "
            "layer." + _SEE_GRAD_CAM
        )
    dense = rest[0]
    if getattr(dense, "weight", None) is None:
        raise CnnkitError(f"{name}'s dense layer is not built yet; run the model once first.")
    return features_fn, dense


def _class_indices(class_idx: Any, scores: torch.Tensor) -> torch.Tensor:
    """Per-sample class indices ``Tensor[N]`` (long) from None/int/sequence."""
    n, k = scores.shape[0], scores.shape[1]
    if class_idx is None:
        return scores.argmax(dim=1)
    if isinstance(class_idx, torch.Tensor):
        idx = class_idx.reshape(-1).long().to(scores.device)
    elif isinstance(class_idx, (int,)) and not isinstance(class_idx, bool):
        idx = torch.full((n,), int(class_idx), dtype=torch.long, device=scores.device)
    elif isinstance(class_idx, Sequence) and not isinstance(class_idx, str):
        idx = torch.as_tensor([int(c) for c in class_idx], dtype=torch.long, device=scores.device)
    else:
        raise ConfigError(
            f"class_idx must be None (the predicted class), an int or one int per sample; "
            f"received {class_idx!r}."
        )
    if idx.numel() == 1 and n > 1:
        idx = idx.expand(n)
    if idx.numel() != n:
        raise ShapeError(f"class_idx has {idx.numel()} entries for a batch of {n} samples.")
    if ((idx < 0) | (idx >= k)).any():
        raise ConfigError(f"class_idx {idx.tolist()} out of range for {k} classes (0..{k - 1}).")
    return idx


def _normalize(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each sample's map to [0, 1] (a constant map becomes 0)."""
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny), 0.0)
    return out.reshape(maps.shape)


def _upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``Tensor[N, *spatial]`` to ``size`` with (bi/tri)linear interpolation."""
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    mode = _MODES[maps.dim() - 1]
    return F.interpolate(maps.unsqueeze(1), size=tuple(size), mode=mode, align_corners=False)[:, 0]


def _check_input(x: Any, fn: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ConfigError(
            f"{fn} expects x a torch.Tensor [N, C, ...]; received {type(x).__name__}."
        )
    if x.dim() < 3 or x.dim() > 5:
        raise ShapeError(
            f"{fn} expects x of shape [N, C, H, W] (or [N, C, L] / [N, C, D, H, W]); received "
            f"{tuple(x.shape)}. For a single image add the batch dimension: x.unsqueeze(0)."
        )
    return x


@torch.no_grad()
def cam(
    model: nn.Module,
    x: torch.Tensor,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    *,
    normalize: bool = True,
    upsample: bool = True,
) -> torch.Tensor:
    """Class activation maps of a GAP + one-dense-layer net (seed 003, Zhou et al. 2016).

    Args:
        model: a cnnkit model (``create('gap_cnn')``, resnet, googlenet, a ``cnnkit.Model``
            wrapping one) or a ``Sequential`` whose layers end in global average pooling,
            optional Flatten/Dropout, one ``Dense``/``nn.Linear`` and an optional
            softmax/sigmoid.
        x: ``Tensor[N, C, H, W]`` (1D ``[N, C, L]`` and 3D ``[N, C, D, H, W]`` work too).
        class_idx: ``None`` (each sample's predicted class), one int for all samples or
            one int per sample.
        normalize: min-max normalise each map to ``[0, 1]`` (step 6).
        upsample: resize (bilinear) to the input's spatial size (step 7).

    Returns:
        ``Tensor[N, H, W]`` (float32). With ``normalize=False, upsample=False`` it is the
        raw ``sum_k w_jk f_k`` at the feature maps' resolution, whose mean plus the
        dense bias ``b_j`` is the class logit.

    Raises:
        CnnkitError: the model does not end in GAP + one dense layer (use ``grad_cam``).
    """
    x = _check_input(x, "cam")
    net = unwrap(model)
    features_fn, dense = _gap_dense_split(net)
    with _eval_mode(net):
        f = features_fn(x)
    if isinstance(f, (tuple, list)):
        f = f[0]
    if f.dim() < 3:
        raise ShapeError(
            f"cam needs spatial feature maps [N, C, ...] before global average pooling; "
            f"received {tuple(f.shape)}." + _SEE_GRAD_CAM
        )
    f = f.float()
    w = dense.weight.float()
    if w.shape[1] != f.shape[1]:
        raise ShapeError(
            f"The dense layer expects {w.shape[1]} features but the final maps have "
            f"{f.shape[1]} channels." + _SEE_GRAD_CAM
        )
    b = dense.bias.float() if getattr(dense, "bias", None) is not None else None
    logits = f.flatten(2).mean(dim=2) @ w.T
    if b is not None:
        logits = logits + b
    idx = _class_indices(class_idx, logits)
    maps = torch.einsum("nk...,nk->n...", f, w[idx])  # step 5: sum_k w_jk f_k
    if normalize:
        maps = _normalize(maps)
    if upsample:
        maps = _upsample(maps, x.shape[2:])
    return maps


def resolve_layer(net: nn.Module, layer: nn.Module | str | None) -> tuple[str, nn.Module]:
    """``(name, module)`` for a module, a ``named_modules`` name, or ``None`` (the last
    convolution: ``model.last_conv`` or :func:`cnnkit.models.base.last_conv_of`)."""
    named = dict(net.named_modules())
    if layer is None:
        try:
            module = getattr(net, "last_conv", None)
            if not isinstance(module, nn.Module):
                module = last_conv_of(net)
        except ConfigError as e:
            raise ConfigError(f"{e} Pass layer= (a module or a name) to grad_cam.") from None
    elif isinstance(layer, str):
        if layer not in named:
            raise ConfigError(
                f"No layer named {layer!r} in {type(net).__name__}."
                + did_you_mean(layer, [n for n in named if n])
                + " Names are those of model.named_modules()."
            )
        return layer, named[layer]
    elif isinstance(layer, nn.Module):
        module = layer
    else:
        raise ConfigError(
            f"layer must be a module, a name from named_modules() or None; received {layer!r}."
        )
    for name, m in named.items():
        if m is module:
            return name, m
    raise ConfigError(f"The layer {type(module).__name__} is not part of {type(net).__name__}.")


@torch.no_grad()
def _spatial_conv(net: nn.Module, x: torch.Tensor, last: nn.Module) -> nn.Module:
    """``last`` unless its maps have a single position (LeNet-5's C5: 120 maps of 1x1,
    where Grad-CAM is one number); then the last convolution with more positions."""
    shapes: dict[int, tuple[int, ...]] = {}
    convs = [m for m in net.modules() if is_conv(m)]
    if last not in convs:
        convs.append(last)

    def hook(mod, inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        if isinstance(out, torch.Tensor):
            shapes.setdefault(id(mod), tuple(out.shape[2:]))

    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with _eval_mode(net):
            net(x[:1])
    finally:
        for h in handles:
            h.remove()

    def positions(m: nn.Module) -> int:
        shape = shapes.get(id(m))
        return 0 if shape is None else math.prod(shape)

    if positions(last) > 1:
        return last
    ran = [m for m in convs if positions(m) > 1]
    return ran[-1] if ran else last


def _is_pre_activation_switchable(m: nn.Module) -> bool:
    return getattr(m, "activation", None) in ("softmax", "sigmoid") and hasattr(m, "emit_logits")


def _run_logits(
    net: nn.Module, x: torch.Tensor, target: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward ``x``; return ``(activations of target, output logits)``.

    The logits are the output before a final softmax/sigmoid: the input of a final
    ``nn.Softmax``/``Activation``, or the output of a Dense/Conv layer run with
    ``emit_logits``.
    """
    captured: dict[str, torch.Tensor] = {}
    produced: dict[int, tuple[nn.Module, Any, torch.Tensor]] = {}

    def grab(mod, inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        captured["a"] = out
        return out.clone() if out is output else output  # guard against in-place ops after

    def record(mod, inputs, output):
        if isinstance(output, torch.Tensor):
            produced[id(output)] = (mod, inputs[0] if inputs else None, output)

    def forward(switch: nn.Module | None) -> torch.Tensor:
        handles = [target.register_forward_hook(grab)]
        for m in net.modules():
            if next(m.children(), None) is None or hasattr(m, "emit_logits"):
                handles.append(m.register_forward_hook(record))
        prev = getattr(switch, "emit_logits", False)
        if switch is not None:
            switch.emit_logits = True
        try:
            out = net(x)
        finally:
            if switch is not None:
                switch.emit_logits = prev
            for h in handles:
                h.remove()
        return out[0] if isinstance(out, (tuple, list)) else out

    out = forward(None)
    producer, inp, seen = produced.get(id(out), (None, None, None))
    if producer is not None and seen is out:
        is_final_act = isinstance(producer, (nn.Softmax, nn.Sigmoid)) or (
            isinstance(producer, Activation) and producer.activation in ("softmax", "sigmoid")
        )
        if is_final_act and isinstance(inp, torch.Tensor):
            out = inp
        elif _is_pre_activation_switchable(producer):
            produced.clear()
            out = forward(producer)
    if "a" not in captured:
        raise ConfigError(f"The layer {type(target).__name__} did not run in the forward pass.")
    return captured["a"], out


def _region_mask(region: Any, out: torch.Tensor) -> torch.Tensor:
    spatial = tuple(out.shape[2:])
    mask = torch.as_tensor(region, device=out.device).float()
    if tuple(mask.shape) == spatial:
        mask = mask.unsqueeze(0).expand(out.shape[0], *spatial)
    if tuple(mask.shape) != (out.shape[0], *spatial):
        raise ShapeError(
            f"region must have the output's spatial shape {spatial} or {(out.shape[0], *spatial)}; "
            f"received {tuple(mask.shape)}."
        )
    return mask


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module | str | None = None,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    *,
    region: Any = None,
    relu: bool = True,
    normalize: bool = True,
    upsample: bool = True,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of any CNN, classification or segmentation.

    ``alpha_k = mean over positions of d score / d A_k``; map ``= ReLU(sum_k alpha_k A_k)``,
    normalised to [0, 1] and upsampled (bilinear) to the input size.

    Args:
        model: any ``nn.Module`` (or ``cnnkit.Model``) returning ``Tensor[N, K]`` class
            scores or ``Tensor[N, K, H', W']`` per-pixel scores; a final softmax/sigmoid is
            bypassed so the score is the logit.
        x: ``Tensor[N, C, H, W]`` (1D/3D inputs work too).
        layer: the module (or its ``named_modules`` name) whose maps ``A`` are explained;
            default the last convolution (``model.last_conv``), or, when its maps have a
            single position (LeNet-5's C5 is 1x1), the last one with more.
        class_idx: ``None`` (the predicted class: argmax of the scores, summed over the
            region for segmentation), an int, or one int per sample.
        region: segmentation only: a mask over the output pixels (``[H', W']`` or
            ``[N, H', W']``, bool or weights); the score is the class logit summed over it.
            ``None`` sums over every pixel.
        relu, normalize, upsample: the three final steps (turn off to get raw maps).

    Returns:
        ``Tensor[N, H, W]`` (float32, detached).
    """
    x = _check_input(x, "grad_cam")
    net = unwrap(model)
    _, target = resolve_layer(net, layer)
    if layer is None:
        target = _spatial_conv(net, x, target)
    with _eval_mode(net), torch.enable_grad():
        xin = x.detach().clone().requires_grad_(True)
        acts, out = _run_logits(net, xin, target)
        if not isinstance(out, torch.Tensor):
            raise ConfigError(
                f"grad_cam needs a model that returns a tensor of scores [N, K, ...]; "
                f"{type(net).__name__} returned {type(out).__name__}."
            )
        out = out.float()
        if out.dim() == 2:
            if region is not None:
                raise ConfigError(
                    "region applies to segmentation outputs [N, K, H, W]; this model returns "
                    f"{tuple(out.shape)} class scores."
                )
            scores = out
        elif out.dim() >= 3:
            mask = (
                torch.ones(out.shape[0], *out.shape[2:], device=out.device)
                if region is None
                else _region_mask(region, out)
            )
            scores = (out * mask.unsqueeze(1)).flatten(2).sum(dim=2)
        else:
            raise ShapeError(f"grad_cam needs outputs [N, K, ...]; received {tuple(out.shape)}.")
        idx = _class_indices(class_idx, scores.detach())
        score = scores.gather(1, idx[:, None]).sum()
        if acts.dim() < 3:
            raise ShapeError(
                f"grad_cam needs spatial maps [N, C, ...] from the layer; it returned "
                f"{tuple(acts.shape)}. Choose a convolutional layer."
            )
        (grads,) = torch.autograd.grad(score, acts)
    acts, grads = acts.detach().float(), grads.float()
    alpha = grads.flatten(2).mean(dim=2)
    maps = torch.einsum("nk...,nk->n...", acts, alpha)
    if relu:
        maps = maps.clamp_min(0)
    if normalize:
        maps = _normalize(maps)
    if upsample:
        maps = _upsample(maps, x.shape[2:])
    return maps
