"""The table behind ``cnnkit.from_keras``: one converter per Keras layer class.

A converter reads the layer's Keras config (every key it uses is taken from it; a key
left over with a non-default value is an option cnnkit lacks and raises an error naming
the layer, the key and what is supported) and returns the cnnkit layers to run, each
with the function that copies Keras' weight arrays into it (layouts converted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

import cnnkit.layers as L
from cnnkit._core.errors import CnnkitError, ConfigError
from cnnkit.layers.base import ACTIVATIONS

__all__ = ["CONVERTERS", "ELEMENTWISE", "KerasLayerError", "convert"]

Setter = Callable[[nn.Module, list, Any, str], None]
Step = tuple[nn.Module, Setter | None]

#: layers that act per element (a flattened tensor keeps its element order through them)
ELEMENTWISE = frozenset(
    {
        "Activation",
        "Dropout",
        "ReLU",
        "LeakyReLU",
        "Rescaling",
    }
)
# keys that never change what an imported layer computes
_IGNORED = {"name", "trainable", "dtype", "autocast", "build_config"}
_INITIALIZERS = {
    "GlorotUniform": "glorot_uniform",
    "GlorotNormal": "glorot_normal",
    "HeNormal": "he_normal",
    "HeUniform": "he_uniform",
    "LecunNormal": "lecun_normal",
    "LecunUniform": "lecun_uniform",
    "Orthogonal": "orthogonal",
    "Zeros": "zeros",
    "Ones": "ones",
}
_INIT_NAMES = set(_INITIALIZERS.values())


class KerasLayerError(CnnkitError):
    """A Keras layer or option that cnnkit does not have."""


class _Config:
    """Takes keys out of one layer's config; ``done()`` checks what is left."""

    def __init__(self, cls: str, cfg: dict[str, Any], where: str) -> None:
        self.cls, self.cfg, self.where = cls, dict(cfg), where
        self.used: list[str] = []
        fmt = self.cfg.pop("data_format", "channels_last")
        if fmt not in (None, "channels_last"):
            self.fail("data_format", fmt, "'channels_last' (cnnkit converts it to channels-first)")

    def fail(self, key: str, value: Any, supported: str) -> None:
        raise KerasLayerError(
            f"{self.where}: config key {key!r} = {value!r} is not supported; cnnkit's "
            f"{self.cls} supports {supported}."
        )

    def take(self, key: str, default: Any = None) -> Any:
        self.used.append(key)
        return self.cfg.pop(key, default)

    def initializer(self, key: str) -> str:
        value = self.take(key)
        if value is None:
            return "glorot_uniform" if key != "bias_initializer" else "zeros"
        name = value.get("class_name") if isinstance(value, dict) else value
        name = _INITIALIZERS.get(str(name), str(name))
        if name not in _INIT_NAMES:
            self.fail(key, value, f"the initialisers {sorted(_INIT_NAMES)}")
        return name

    def activation(self) -> str | None:
        value = self.take("activation")
        if value in (None, "linear"):
            return None
        if not isinstance(value, str) or value.lower() not in ACTIVATIONS:
            self.fail("activation", value, f"the activations {sorted(ACTIVATIONS)}")
        return value.lower()

    def done(self) -> None:
        for key, value in self.cfg.items():
            if key in _IGNORED:
                continue
            if value is None or value is False:  # an option that is off (no regulariser,
                continue  # constraint, LoRA, quantisation, noise shape, ...)
            self.fail(key, value, f"the config keys {sorted(set(self.used)) or 'none'}")


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _assign(param: torch.Tensor | None, value: np.ndarray, what: str, where: str) -> None:
    if param is None or tuple(param.shape) != tuple(value.shape):
        got = None if param is None else tuple(param.shape)
        raise ConfigError(
            f"{where}: the file's {what} of shape {tuple(value.shape)} does not fit the "
            f"cnnkit layer ({got})."
        )
    with torch.no_grad():
        param.copy_(_tensor(value))


def _take(arrays: list, n: int, where: str) -> list:
    if len(arrays) != n:
        raise ConfigError(f"{where}: expected {n} weight arrays in the file; found {len(arrays)}.")
    return arrays


def _conv_setter(nd: int) -> Setter:
    def set_(module: nn.Module, arrays: list, perm: Any, where: str) -> None:
        arrays = _take(arrays, 1 + (module.bias is not None), where)
        kernel = np.transpose(arrays[0], (nd + 1, nd, *range(nd)))  # (*k, a, b) -> (b, a, *k)
        _assign(module.weight, kernel, "kernel", where)
        if module.bias is not None:
            _assign(module.bias, arrays[1], "bias", where)

    return set_


def _depthwise(kernel: np.ndarray, nd: int) -> np.ndarray:
    """``(*k, C, dm)`` -> ``(C * dm, 1, *k)``; Keras' output channel ``c * dm + m``."""
    flat = kernel.reshape(*kernel.shape[:nd], -1)
    return np.moveaxis(flat, -1, 0)[:, None]


def _depthwise_setter(nd: int) -> Setter:
    def set_(module: nn.Module, arrays: list, perm: Any, where: str) -> None:
        arrays = _take(arrays, 1 + (module.bias is not None), where)
        _assign(module.weight, _depthwise(arrays[0], nd), "depthwise kernel", where)
        if module.bias is not None:
            _assign(module.bias, arrays[1], "bias", where)

    return set_


def _separable_setter(nd: int) -> Setter:
    def set_(module: nn.Module, arrays: list, perm: Any, where: str) -> None:
        arrays = _take(arrays, 2 + (module.bias is not None), where)
        _assign(module.depthwise_weight, _depthwise(arrays[0], nd), "depthwise kernel", where)
        point = np.transpose(arrays[1], (nd + 1, nd, *range(nd)))
        _assign(module.pointwise_weight, point, "pointwise kernel", where)
        if module.bias is not None:
            _assign(module.bias, arrays[2], "bias", where)

    return set_


def _dense_setter(module: nn.Module, arrays: list, perm: Any, where: str) -> None:
    arrays = _take(arrays, 1 + (module.bias is not None), where)
    kernel = arrays[0] if perm is None else arrays[0][perm]  # rows (H, W, C) -> (C, H, W)
    _assign(module.weight, kernel.T, "kernel", where)
    if module.bias is not None:
        _assign(module.bias, arrays[1], "bias", where)


def _bn_setter(module: nn.Module, arrays: list, perm: Any, where: str) -> None:
    arrays = _take(arrays, 2 + module.scale + module.center, where)
    if perm is not None:
        arrays = [a[perm] for a in arrays]
    i = 0
    bn = module.bn
    if module.scale:
        _assign(bn.weight if bn.affine else module.weight, arrays[i], "gamma", where)
        i += 1
    if module.center:
        _assign(bn.bias if bn.affine else module.bias, arrays[i], "beta", where)
        i += 1
    _assign(bn.running_mean, arrays[i], "moving_mean", where)
    _assign(bn.running_var, arrays[i + 1], "moving_variance", where)


def _window(c: _Config, nd: int, pool: bool = False) -> dict[str, Any]:
    if pool:
        return {
            "pool_size": c.take("pool_size", 2),
            "strides": c.take("strides"),
            "padding": c.take("padding", "valid"),
        }
    return {
        "kernel_size": c.take("kernel_size"),
        "strides": c.take("strides", 1),
        "padding": c.take("padding", "valid"),
        "dilation_rate": c.take("dilation_rate", 1),
    }


def _conv(nd: int, transposed: bool = False) -> Callable:
    def make(c: _Config, shapes: list) -> list[Step]:
        kw = _window(c, nd)
        kw["groups"] = c.take("groups", 1)
        if transposed:
            kw["output_padding"] = c.take("output_padding")
            cls = getattr(L, f"Conv{nd}DTranspose")
        else:
            cls = getattr(L, f"Conv{nd}D")
        layer = cls(
            c.take("filters"),
            activation=c.activation(),
            use_bias=c.take("use_bias", True),
            kernel_initializer=c.initializer("kernel_initializer"),
            bias_initializer=c.initializer("bias_initializer"),
            **kw,
        )
        return [(layer, _conv_setter(nd))]

    return make


def _depthwise_conv(nd: int) -> Callable:
    def make(c: _Config, shapes: list) -> list[Step]:
        layer = getattr(L, f"DepthwiseConv{nd}D")(
            depth_multiplier=c.take("depth_multiplier", 1),
            activation=c.activation(),
            use_bias=c.take("use_bias", True),
            depthwise_initializer=c.initializer("depthwise_initializer"),
            bias_initializer=c.initializer("bias_initializer"),
            **_window(c, nd),
        )
        return [(layer, _depthwise_setter(nd))]

    return make


def _separable_conv(nd: int) -> Callable:
    def make(c: _Config, shapes: list) -> list[Step]:
        layer = getattr(L, f"SeparableConv{nd}D")(
            c.take("filters"),
            depth_multiplier=c.take("depth_multiplier", 1),
            activation=c.activation(),
            use_bias=c.take("use_bias", True),
            depthwise_initializer=c.initializer("depthwise_initializer"),
            pointwise_initializer=c.initializer("pointwise_initializer"),
            bias_initializer=c.initializer("bias_initializer"),
            **_window(c, nd),
        )
        return [(layer, _separable_setter(nd))]

    return make


def _simple(cls_name: str, *keys: tuple[str, Any]) -> Callable:
    """A layer whose Keras config keys map one to one onto cnnkit's arguments."""

    def make(c: _Config, shapes: list) -> list[Step]:
        kwargs = {key: c.take(key, default) for key, default in keys}
        return [(getattr(L, cls_name)(**kwargs), None)]

    return make


def _dense(c: _Config, shapes: list) -> list[Step]:
    if len(shapes[0]) != 2:
        c.fail("(input)", shapes[0], "Dense on (batch, features) inputs; add a Flatten first")
    layer = L.Dense(
        c.take("units"),
        activation=c.activation(),
        use_bias=c.take("use_bias", True),
        kernel_initializer=c.initializer("kernel_initializer"),
        bias_initializer=c.initializer("bias_initializer"),
    )
    return [(layer, _dense_setter)]


def _batchnorm(c: _Config, shapes: list) -> list[Step]:
    rank = len(shapes[0])
    axis = c.take("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if not isinstance(axis, int) or axis % rank != rank - 1:
        c.fail("axis", axis, "the channel axis (-1, channels-last), which becomes axis 1")
    for key in list(c.cfg):
        if key.endswith("_initializer"):
            c.take(key)  # the statistics and scales come from the file
    if c.take("renorm", False):
        c.fail("renorm", True, "renorm=False (batch renormalisation is not implemented)")
    c.take("renorm_clipping")
    c.take("renorm_momentum")
    layer = L.BatchNormalization(
        axis=1,
        momentum=c.take("momentum", 0.99),
        epsilon=c.take("epsilon", 1e-3),
        center=c.take("center", True),
        scale=c.take("scale", True),
    )
    return [(layer, _bn_setter)]


def _concatenate(c: _Config, shapes: list) -> list[Step]:
    rank = len(shapes[0])
    axis = c.take("axis", -1)
    if not isinstance(axis, int) or not -rank <= axis < rank:
        c.fail("axis", axis, f"an axis of the {rank}-D inputs")
    a = axis % rank
    if rank > 2:
        a = 1 if a == rank - 1 else (0 if a == 0 else a + 1)
    return [(L.Concatenate(axis=a), None)]


def _reshape(c: _Config, shapes: list) -> list[Step]:
    target = tuple(c.take("target_shape"))
    steps: list[Step] = []
    rank = len(shapes[0])
    if rank > 2:  # Keras reshapes channels-last data
        steps.append((L.Permute((*range(2, rank), 1)), None))
    steps.append((L.Reshape(target), None))
    if len(target) >= 2:
        k = len(target)
        steps.append((L.Permute((k, *range(1, k))), None))
    return steps


def _leaky(c: _Config, shapes: list) -> list[Step]:
    slope = c.take("negative_slope", c.take("alpha", 0.3))
    return [(L.LeakyReLU(negative_slope=slope), None)]


def _activation(c: _Config, shapes: list) -> list[Step]:
    return [(L.Activation(c.activation()), None)]


def _dropout(cls_name: str) -> Callable:
    def make(c: _Config, shapes: list) -> list[Step]:
        return [(getattr(L, cls_name)(c.take("rate")), None)]

    return make


CONVERTERS: dict[str, Callable[[_Config, list], list[Step]]] = {
    "Dense": _dense,
    "BatchNormalization": _batchnorm,
    "Concatenate": _concatenate,
    "Reshape": _reshape,
    "LeakyReLU": _leaky,
    "Activation": _activation,
    "Flatten": _simple("Flatten"),
    "ReLU": _simple("ReLU", ("max_value", None), ("negative_slope", 0.0), ("threshold", 0.0)),
    "Rescaling": _simple("Rescaling", ("scale", 1.0), ("offset", 0.0)),
    "Dropout": _dropout("Dropout"),
    "Permute": _simple("Permute", ("dims", None)),
}
for _m in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"):
    CONVERTERS[_m] = _simple(_m)
for _nd in (1, 2, 3):
    CONVERTERS[f"Conv{_nd}D"] = _conv(_nd)
    CONVERTERS[f"Conv{_nd}DTranspose"] = _conv(_nd, transposed=True)
    CONVERTERS[f"SpatialDropout{_nd}D"] = _dropout(f"SpatialDropout{_nd}D")
    for _kind in ("Max", "Average"):
        CONVERTERS[f"{_kind}Pooling{_nd}D"] = (
            lambda c, shapes, name=f"{_kind}Pooling{_nd}D", nd=_nd: [
                (getattr(L, name)(**_window(c, nd, pool=True)), None)
            ]
        )
        CONVERTERS[f"Global{_kind}Pooling{_nd}D"] = _simple(
            f"Global{_kind}Pooling{_nd}D", ("keepdims", False)
        )
    CONVERTERS[f"ZeroPadding{_nd}D"] = _simple(f"ZeroPadding{_nd}D", ("padding", 1))
    CONVERTERS[f"Cropping{_nd}D"] = _simple(f"Cropping{_nd}D", ("cropping", 1))
CONVERTERS["UpSampling1D"] = _simple("UpSampling1D", ("size", 2))
CONVERTERS["UpSampling2D"] = _simple("UpSampling2D", ("size", 2), ("interpolation", "nearest"))
CONVERTERS["UpSampling3D"] = _simple("UpSampling3D", ("size", 2))
for _nd in (1, 2):
    CONVERTERS[f"DepthwiseConv{_nd}D"] = _depthwise_conv(_nd)
    CONVERTERS[f"SeparableConv{_nd}D"] = _separable_conv(_nd)


def convert(cls: str, cfg: dict[str, Any], shapes: list, where: str) -> list[Step]:
    """The cnnkit layers (with weight setters) for one Keras layer; see the module docstring."""
    c = _Config(cls, cfg, where)
    if cls.startswith(("Dropout", "SpatialDropout")):
        c.take("seed")
    try:
        steps = CONVERTERS[cls](c, shapes)
    except ConfigError as err:
        raise KerasLayerError(f"{where}: {err}") from None
    c.done()
    return steps
