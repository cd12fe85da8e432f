"""The base of every cnnkit layer: Keras-style build on first call, shape arithmetic.

Tensors are channels-first: ``(N, C, L)``, ``(N, C, H, W)``, ``(N, C, D, H, W)``.

A layer's input channels are inferred when it is built: at its first call, or
eagerly by ``build(input_shape)`` (``cnnkit.Sequential(..., input_shape=...)`` does
that for a whole stack, so no lazy parameter remains).

Subclasses implement:

* ``_build(input_shape)``: create parameters (``input_shape`` has the batch dim,
  possibly ``None``);
* ``call(x)``: the computation;
* ``_output_shape(input_shape)``: pure arithmetic, shapes with the batch dim;
* optionally ``count_macs(input_shape)`` and ``receptive_field_layers()`` for summaries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers.padding import (  # noqa: F401  (re-exported)
    PaddingSpec,
    normalize_padding,
    normalize_tuple,
    resolve_pads,
    symmetric,
    torch_pad_arg,
)

Shape = tuple  # tuple[int | None, ...]

_RANK_NAMES = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


#: cnnkit's layer classes by class name: the only classes ``Sequential.from_config`` (and
#: so ``cnnkit.load``) rebuilds from a saved config, entered explicitly with
#: :func:`register_layer` (``cnnkit/layers/__init__.py`` lists cnnkit's); a name read from
#: a file is looked up here, never imported.
LAYERS: dict[str, type] = {}
#: the same classes by ``module.QualName`` (two classes may share a name: the layer stack
#: ``Sequential`` and its training subclass ``cnnkit.Sequential``)
_QUALIFIED: dict[str, type] = {}


def register_layer(cls: type) -> type:
    """Let ``Sequential.from_config`` (and ``cnnkit.load``) rebuild ``cls`` from a saved
    config: ``cls(**config)`` with ``config`` from its ``get_config``. cnnkit's layers are
    listed in ``cnnkit/layers/__init__.py``; a decorator for a layer of one's own."""
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ConfigError(f"register_layer expects an nn.Module class; received {cls!r}.")
    known = LAYERS.get(cls.__name__)
    if known is not None and known is not cls and not issubclass(cls, known):
        raise ConfigError(
            f"A layer named {cls.__name__!r} is already registered "
            f"({known.__module__}.{known.__qualname__}); rename {cls.__module__}."
            f"{cls.__qualname__}."
        )
    LAYERS.setdefault(cls.__name__, cls)
    _QUALIFIED[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def layer_class(class_name: str, module: str | None = None) -> type | None:
    """The registered layer class a saved config names (``module`` picks between classes
    of one name), or None; nothing is imported."""
    if isinstance(module, str) and f"{module}.{class_name}" in _QUALIFIED:
        return _QUALIFIED[f"{module}.{class_name}"]
    return LAYERS.get(class_name)


def rank_name(spatial_dims: int) -> str:
    """Human name of the expected input layout for a number of spatial dims."""
    return _RANK_NAMES.get(spatial_dims, f"(N, C, {spatial_dims} spatial dims)")


class Layer(nn.Module):
    """Base class: a ``torch.nn.Module`` built on first call (or by ``build``).

    Attributes:
        spatial_dims: number of spatial dimensions the layer works on, or ``None``
            for layers that accept any rank (Dense, Activation, Dropout, ...).
        built: whether parameters exist.
        input_shape: the per-sample input shape given at construction (no batch dim),
            used by ``Sequential`` to build eagerly.
    """

    spatial_dims: int | None = None
    #: when True a layer with an activation returns its pre-activation output (logits);
    #: the training loop sets it on a final softmax/sigmoid layer (see cnnkit.train.heads)
    emit_logits: bool = False
    #: minimum rank (with batch) for layers with spatial_dims None
    min_rank: int = 2

    def __init__(
        self, *, input_shape: Sequence[int] | None = None, name: str | None = None
    ) -> None:
        super().__init__()
        self.built = False
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
        self.layer_name = name
        self.in_channels: int | None = None

    # ------------------------------------------------------------------ shapes

    def _expected_rank(self) -> int | None:
        return None if self.spatial_dims is None else self.spatial_dims + 2

    def _with_batch(self, input_shape: Sequence[int | None]) -> tuple[tuple, bool]:
        """Return (shape with batch dim, whether a batch dim was added)."""
        shape = tuple(None if s is None else int(s) for s in input_shape)
        rank = self._expected_rank()
        if rank is not None and len(shape) == rank - 1:
            return (None, *shape), True
        return shape, False

    def _check_shape(self, shape: tuple) -> None:
        rank = self._expected_rank()
        if rank is not None and len(shape) != rank:
            hint = ""
            if len(shape) == rank - 1:
                hint = " For a single sample add the batch dimension: x.unsqueeze(0)."
            elif rank - 2 in _RANK_NAMES and len(shape) - 2 in _RANK_NAMES:
                hint = (
                    f" A {len(shape)}-D input suggests the {len(shape) - 2}D variant of this layer."
                )
            raise ShapeError(
                f"{type(self).__name__} expects a {rank}-D input {rank_name(self.spatial_dims)}; "
                f"received shape {tuple(shape)} ({len(shape)}-D).{hint}"
            )
        if rank is None and len(shape) < self.min_rank:
            raise ShapeError(
                f"{type(self).__name__} expects an input of rank >= {self.min_rank} "
                f"(batch first); received shape {tuple(shape)}."
            )
        for i, s in enumerate(shape[1:], start=1):
            if s is not None and s < 1:
                raise ShapeError(
                    f"{type(self).__name__} received shape {tuple(shape)} with a dimension of size "
                    f"{s} at position {i}; every size must be positive."
                )
        if self.built and self.in_channels is not None and len(shape) > 1 and shape[1] is not None:
            if shape[1] != self.in_channels:
                raise ShapeError(
                    f"{type(self).__name__} was built for {self.in_channels} input channels; "
                    f"received {shape[1]} channels (shape {tuple(shape)}). Inputs are channels-first "
                    f"{rank_name(self.spatial_dims) if self.spatial_dims else '(N, C, ...)'}; "
                    "a channels-last array needs x.permute(...) or a new layer."
                )

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple:
        """Output shape for an input shape, by arithmetic only (no forward pass).

        ``input_shape`` includes the batch dimension (may be ``None``); for layers with a
        fixed number of spatial dims it may also be given without it, and the result
        then has none either.
        """
        shape, added = self._with_batch(input_shape)
        self._check_shape(shape)
        out = tuple(self._output_shape(shape))
        return out[1:] if added else out

    def _output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    # ------------------------------------------------------------------ building

    def build(self, input_shape: Sequence[int | None]) -> Layer:
        """Create the parameters for inputs of ``input_shape`` (batch dim optional)."""
        shape, _ = self._with_batch(input_shape)
        self._check_shape(shape)
        if not self.built:
            if len(shape) > 1 and shape[1] is not None:
                self.in_channels = int(shape[1])
            self._build(shape)
            self.built = True
        return self

    def _build(self, input_shape: tuple) -> None:
        """Create parameters; the default creates none."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            raise ShapeError(
                f"{type(self).__name__} expects a torch.Tensor; received {type(x).__name__}. "
                "Convert with torch.as_tensor(x, dtype=torch.float32)."
            )
        shape = tuple(x.shape)
        if not x.is_floating_point() and (hasattr(self, "filters") or hasattr(self, "units")):
            raise ShapeError(
                f"{type(self).__name__} expects a floating-point input; received dtype "
                f"{str(x.dtype).replace('torch.', '')}. Convert with x.float() (images: "
                "x.float() / 255)."
            )
        self._check_shape(
            shape
        )  # before build: build() would read a missing batch dim as per-sample
        if not self.built:
            self.build(shape)
            self._to_input_device(x)
        return self.call(x, *args, **kwargs)

    def _to_input_device(self, x: torch.Tensor) -> None:
        """After a lazy build, follow the input's device (and float64, when asked for)."""
        for p in self.parameters():
            if p.device != x.device:
                self.to(device=x.device)
            if x.dtype == torch.float64 and p.dtype != torch.float64:
                self.to(dtype=torch.float64)
            break

    def call(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ summaries

    def count_macs(self, input_shape: Sequence[int | None]) -> int:
        """Multiply-accumulates for one sample of ``input_shape``; 0 by default."""
        return 0

    def receptive_field_layers(
        self,
    ) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] | None:
        """``(kernel, stride, dilation)`` per spatial dim for each window this layer
        applies in sequence; ``[]`` for layers that do not change the field, ``None``
        for layers that see the whole input (Dense after Flatten, global pooling)."""
        return []

    def extra_repr(self) -> str:
        cfg = self.get_config() if hasattr(self, "get_config") else {}
        return ", ".join(f"{k}={v!r}" for k, v in cfg.items())


# ---------------------------------------------------------------------- argument helpers
# (kept importable from here; they live in cnnkit.layers.padding)

# ---------------------------------------------------------------------- activations


def _softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=1)


def _log_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x, dim=1)


def _linear(x: torch.Tensor) -> torch.Tensor:
    return x


def _leaky_relu(x: torch.Tensor) -> torch.Tensor:
    """Keras' ``leaky_relu``: negative slope 0.2 (torch's default is 0.01)."""
    return nn.functional.leaky_relu(x, 0.2)


def _squareplus(x: torch.Tensor) -> torch.Tensor:
    """Keras' ``squareplus`` with ``b = 4``: ``(x + sqrt(x^2 + 4)) / 2``."""
    return (x + torch.sqrt(x * x + 4.0)) / 2


def _sparse_plus(x: torch.Tensor) -> torch.Tensor:
    """Keras' ``sparse_plus``: 0 for x <= -1, ``(x + 1)^2 / 4`` for |x| < 1, x above."""
    return torch.where(x <= -1, torch.zeros_like(x), torch.where(x < 1, (x + 1) ** 2 / 4, x))


#: Keras' string activations with Keras' default arguments (``leaky_relu``: slope 0.2,
#: ``gelu``: exact, ``soft_shrink``/``hard_shrink``: threshold 0.5); each is compared
#: with ``keras.activations.get(name)`` in tests/test_keras_parity.py
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": _linear,
    "relu": torch.relu,
    "relu6": nn.functional.relu6,
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": nn.functional.hardsigmoid,
    "tanh": torch.tanh,
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "elu": nn.functional.elu,
    "selu": nn.functional.selu,
    "gelu": nn.functional.gelu,
    "silu": nn.functional.silu,
    "swish": nn.functional.silu,
    "mish": nn.functional.mish,
    "softplus": nn.functional.softplus,
    "softsign": nn.functional.softsign,
    "leaky_relu": _leaky_relu,
    "exponential": torch.exp,
    "celu": nn.functional.celu,
    "hard_silu": nn.functional.hardswish,
    "hard_swish": nn.functional.hardswish,
    "hard_tanh": nn.functional.hardtanh,
    "log_sigmoid": nn.functional.logsigmoid,
    "tanh_shrink": nn.functional.tanhshrink,
    "soft_shrink": nn.functional.softshrink,
    "hard_shrink": nn.functional.hardshrink,
    "squareplus": _squareplus,
    "sparse_plus": _sparse_plus,
}


def get_activation(
    activation: str | Callable | None,
) -> tuple[str | None, Callable[[torch.Tensor], torch.Tensor] | None]:
    """Return ``(name, fn)``; ``None`` and ``'linear'`` give ``(None, None)``.

    Softmax and log-softmax act on the channel axis (dim 1), which for channels-first
    tensors is the class axis of both dense and per-pixel outputs.
    """
    if activation is None:
        return None, None
    if isinstance(activation, str):
        key = activation.lower()
        if key not in ACTIVATIONS:
            from cnnkit._core.errors import did_you_mean

            raise ConfigError(
                f"Unknown activation {activation!r}; expected one of {', '.join(sorted(ACTIVATIONS))}."
                + did_you_mean(key, ACTIVATIONS)
            )
        if key == "linear":
            return None, None
        return key, ACTIVATIONS[key]
    if callable(activation):
        return getattr(activation, "__name__", type(activation).__name__), activation
    raise ConfigError(f"activation must be a name, a callable or None; received {activation!r}.")


# ---------------------------------------------------------------------- initializers


def _fans(weight: torch.Tensor, transposed: bool = False) -> tuple[int, int]:
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    a, b = weight.shape[1] * receptive, weight.shape[0] * receptive
    return (b, a) if transposed else (a, b)


def initialize(
    weight: torch.Tensor,
    initializer: str | Callable,
    *,
    transposed: bool = False,
    fans: tuple[int, int] | None = None,
) -> None:
    """Fill ``weight`` in place, Keras-named.

    ``'glorot_uniform'`` (Keras' default), ``'glorot_normal'``, ``'he_normal'``,
    ``'he_uniform'``, ``'lecun_normal'``, ``'lecun_uniform'``, ``'orthogonal'``,
    ``'zeros'``, ``'ones'``, ``'torch'`` (PyTorch's own default for conv/linear), or a
    callable taking the tensor.

    ``fans=(fan_in, fan_out)`` overrides the fans read from the PyTorch layout
    (``(out, in, *k)``: ``fan_in = in * prod(k)``, ``fan_out = out * prod(k)``, which
    equal Keras' for dense, convolution and transposed-convolution kernels); the
    depthwise layers pass Keras' fans of a ``(*k, C, depth_multiplier)`` kernel.
    """
    with torch.no_grad():
        if callable(initializer) and not isinstance(initializer, str):
            initializer(weight)
            return
        if not isinstance(initializer, str):
            raise ConfigError(
                f"initializer must be a name or a callable; received {initializer!r}."
            )
        name = initializer.lower()
        if fans is not None:
            fan_in, fan_out = fans
        elif weight.dim() >= 2:
            fan_in, fan_out = _fans(weight, transposed)
        else:
            fan_in, fan_out = weight.numel(), weight.numel()
        if name == "glorot_uniform":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            weight.uniform_(-limit, limit)
        elif name == "glorot_normal":
            std = math.sqrt(2.0 / (fan_in + fan_out))
            nn.init.trunc_normal_(
                weight,
                0.0,
                std / 0.87962566103423978,
                -2 * std / 0.87962566103423978,
                2 * std / 0.87962566103423978,
            )
        elif name in ("he_normal", "he_uniform", "lecun_normal", "lecun_uniform"):
            scale = 2.0 if name.startswith("he") else 1.0
            if name.endswith("uniform"):
                limit = math.sqrt(3.0 * scale / fan_in)
                weight.uniform_(-limit, limit)
            else:
                std = math.sqrt(scale / fan_in) / 0.87962566103423978
                nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)
        elif name == "orthogonal":
            nn.init.orthogonal_(weight)
        elif name == "zeros":
            weight.zero_()
        elif name == "ones":
            weight.fill_(1.0)
        elif name == "torch":
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        else:
            raise ConfigError(
                f"Unknown initializer {initializer!r}; expected 'glorot_uniform', 'glorot_normal', "
                "'he_normal', 'he_uniform', 'lecun_normal', 'lecun_uniform', 'orthogonal', "
                "'zeros', 'ones', 'torch' or a callable."
            )


def init_bias(bias: torch.Tensor, initializer: str | Callable, fan_in: int) -> None:
    """Fill a bias: ``'zeros'`` (Keras' default), ``'torch'`` (uniform +-1/sqrt(fan_in)),
    or any name :func:`initialize` accepts."""
    with torch.no_grad():
        if isinstance(initializer, str) and initializer.lower() == "torch":
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            bias.uniform_(-bound, bound)
        elif isinstance(initializer, str) and initializer.lower() == "zeros":
            bias.zero_()
        else:
            initialize(bias, initializer)
