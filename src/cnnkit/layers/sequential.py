"""``Sequential``: Keras' model-building API on a ``torch.nn.Sequential``.

Seed 004's CIFAR CNN ports line by line (channels-first input shape)::

    model = Sequential([
        Conv2D(32, 3, activation='relu'), MaxPooling2D(2),
        Conv2D(64, 3, activation='relu'), Conv2D(128, 3, activation='relu'),
        Flatten(), Dense(128, activation='relu'), Dense(10, activation='softmax'),
    ], input_shape=(3, 32, 32))
    model.summary()          # Total params: 2,077,130

or with ``model = Sequential(); model.add(Dense(2048, input_dim=3072, ...))``. When
an input shape is known (the ``input_shape`` argument, or the first layer's
``input_shape``/``input_dim``) every layer is built as it is added, from the previous
layer's ``compute_output_shape``, so no lazy parameter remains. Plain torch modules
(``nn.Conv2d``, ``nn.ReLU``, ...) may be mixed in; their output shape is found by
running one zero sample through them (on the ``meta`` device when they hold no state).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from cnnkit._core.errors import CnnkitError, ConfigError, ShapeError, did_you_mean, short
from cnnkit._core.registry import check_arguments
from cnnkit.layers.base import LAYERS, Layer, layer_class, register_layer

__all__ = ["Sequential", "module_output_shape"]


def _check_input_shape(input_shape: Any, owner: str = "Sequential") -> tuple[int, ...]:
    err = ConfigError(
        f"{owner} expects input_shape a tuple of positive ints without the batch dim, e.g. "
        f"(3, 32, 32) for CIFAR images; received {input_shape!r}."
        + (
            " Pass the layers as a list: Sequential([layer1, layer2])."
            if isinstance(input_shape, nn.Module)
            else ""
        )
    )
    if isinstance(input_shape, int) and not isinstance(input_shape, bool):
        input_shape = (input_shape,)
    if not isinstance(input_shape, (Sequence, torch.Size)) or isinstance(input_shape, str):
        raise err
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise err
    return tuple(int(d) for d in shape)


def _probe(module: nn.Module, shape: tuple) -> tuple:
    """Output shape (batch ``None``) of a plain torch module, by one zero sample."""
    if any(d is None for d in shape[1:]):
        raise ShapeError(
            f"Cannot infer the output shape of {type(module).__name__} for input shape "
            f"{tuple(shape)} with unknown sizes; give Sequential a full input_shape."
        )
    ref = next(itertools.chain(module.parameters(), module.buffers()), None)
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        with torch.no_grad():
            y = None
            if ref is None:
                try:
                    y = module(torch.zeros((1, *shape[1:]), device="meta"))
                except Exception:  # noqa: BLE001 - not every op has a meta kernel
                    y = None
            if y is None:
                device = ref.device if ref is not None else torch.device("cpu")
                dtype = (
                    ref.dtype
                    if ref is not None and ref.dtype.is_floating_point
                    else torch.get_default_dtype()
                )
                y = module(torch.zeros((1, *shape[1:]), device=device, dtype=dtype))
    finally:
        for m, mode in modes:
            m.training = mode
    if not isinstance(y, torch.Tensor):
        raise ShapeError(
            f"{type(module).__name__} returned {type(y).__name__}, not a tensor; only modules "
            "with one tensor output can be chained in a Sequential."
        )
    return (None, *y.shape[1:])


def module_output_shape(
    module: nn.Module, shape: Sequence[int | None], build: bool = True
) -> tuple:
    """Output shape (with batch dim) of any module for an input ``shape`` (with batch dim);
    builds cnnkit layers on the way when ``build``."""
    shape = tuple(shape)
    if isinstance(module, Sequential):
        if build:
            module.build(shape[1:])
            return module._output_shape
        return module.compute_output_shape(shape)
    if isinstance(module, Layer):
        if build:
            module.build(shape)
        return tuple(module.compute_output_shape(shape))
    return _probe(module, shape)


def _declared_input_shape(layer: nn.Module) -> tuple[int, ...] | None:
    if isinstance(layer, Sequential):
        return layer._input_shape
    if isinstance(layer, Layer):
        shape = layer.input_shape
        if shape is not None and all(isinstance(d, int) for d in shape):
            return tuple(shape)
    return None


class Sequential(nn.Sequential):
    """A linear stack of layers: a ``torch.nn.Sequential`` with Keras' ``add``,
    ``build``, ``compute_output_shape``, ``summary`` and ``get_config``.

    Args:
        layers: modules (cnnkit layers or any ``torch.nn.Module``), a list or a mapping
            ``name -> module``.
        input_shape: per-sample input shape without the batch dim, e.g. ``(3, 32, 32)``;
            if omitted, the first layer's ``input_shape`` (or ``Dense``'s ``input_dim``).
        name: the model's name, shown by ``summary`` (default ``'sequential'``).

    Indexing, ``len``, iteration and state-dict keys (``'0.weight'``) are
    ``nn.Sequential``'s. ``x (Tensor[N, *input_shape])`` -> ``Tensor[N, *output_shape]``.
    """

    def __init__(
        self,
        layers: Iterable[nn.Module] | Mapping[str, nn.Module] | nn.Module | None = None,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"Sequential expects name a string; received {name!r}.")
        self.name = name or "sequential"
        self.built = False
        self._input_shape: tuple[int, ...] | None = (
            _check_input_shape(input_shape) if input_shape is not None else None
        )
        self._output_shape: tuple | None = None
        if layers is None:
            return
        if isinstance(layers, nn.Module):
            layers = [layers]
        if isinstance(layers, Mapping):
            items: list[tuple[str | None, Any]] = list(layers.items())
        elif isinstance(layers, Iterable) and not isinstance(layers, str):
            items = [(None, layer) for layer in layers]
        else:
            raise ConfigError(
                f"Sequential expects layers a list of modules (or a mapping name -> module); "
                f"received {type(layers).__name__}."
            )
        for key, layer in items:
            self.add(layer, key=key)

    # ------------------------------------------------------------------ properties

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Per-sample input shape (no batch dim), or ``None`` if not known yet."""
        return self._input_shape

    @property
    def output_shape(self) -> tuple | None:
        """Output shape with the batch dim ``None``, once built."""
        return self._output_shape

    # ------------------------------------------------------------------ building

    def add(self, layer: nn.Module, *, key: str | None = None) -> None:
        """Append ``layer`` (Keras' ``model.add``), building it at once when the input
        shape is known."""
        if not isinstance(layer, nn.Module):
            raise ConfigError(
                f"Sequential.add expects a torch.nn.Module (a cnnkit layer, nn.ReLU(), ...); "
                f"received {type(layer).__name__}: {layer!r}."
            )
        if layer is self:
            raise ConfigError(
                "Sequential.add received the model itself; a model cannot contain itself."
            )
        key = str(len(self)) if key is None else str(key)
        if key in self._modules:
            raise ConfigError(f"Sequential already has a layer named {key!r}; use another name.")
        declared = _declared_input_shape(layer)
        first = len(self) == 0
        if first and declared is not None:
            if self._input_shape is None:
                self._input_shape = declared
            elif declared != self._input_shape:
                raise ShapeError(
                    f"Sequential has input_shape={self._input_shape} but its first layer "
                    f"{type(layer).__name__} declares input_shape={declared}."
                )
        elif declared is not None and self._output_shape is not None:
            if tuple(self._output_shape[1:]) != declared:
                raise ShapeError(
                    f"{type(layer).__name__} declares input_shape={declared} but the previous "
                    f"layer's output is {tuple(self._output_shape[1:])} (batch dim excluded)."
                )
        if self._input_shape is not None and (first or self.built):
            shape = (None, *self._input_shape) if first else self._output_shape
            out = module_output_shape(layer, shape)
            self.add_module(key, layer)
            self._output_shape = out
            self.built = True
        else:
            self.add_module(key, layer)

    def append(self, module: nn.Module) -> Sequential:
        """``nn.Sequential.append``, building like :meth:`add`."""
        self.add(module)
        return self

    def insert(self, index: int, module: nn.Module) -> Sequential:
        super().insert(index, module)
        self._rebuild()
        return self

    def __delitem__(self, idx: int | slice) -> None:
        super().__delitem__(idx)
        self._rebuild()

    def _rebuild(self) -> None:
        """Re-derive the shapes after insert/delete; an inconsistent stack is left unbuilt
        (its next forward reports the mismatch) instead of failing the edit."""
        if self._input_shape is not None and len(self):
            try:
                self.build(self._input_shape)
            except (ShapeError, ConfigError):
                self.built = False
                self._output_shape = None
        elif not len(self):
            self.built = False
            self._output_shape = None

    def build(self, input_shape: Sequence[int]) -> Sequential:
        """Build every layer for per-sample inputs of ``input_shape`` (no batch dim)."""
        shape = _check_input_shape(input_shape)
        out: tuple = (None, *shape)
        for layer in self:
            out = module_output_shape(layer, out)
        self._input_shape = shape
        self._output_shape = out
        self.built = True
        return self

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple:
        """Output shape by arithmetic (plain torch modules: one zero sample).

        ``input_shape`` includes the batch dim; if it has the rank of the model's known
        per-sample ``input_shape`` it is taken without one, and so is the result.
        """
        shape = tuple(input_shape)
        added = self._input_shape is not None and len(shape) == len(self._input_shape)
        if added:
            shape = (None, *shape)
        for layer in self:
            shape = module_output_shape(layer, shape, build=False)
        return shape[1:] if added else shape

    # ------------------------------------------------------------------ running

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.built and isinstance(x, torch.Tensor) and x.dim() > 1:
            # the first batch fixes the shapes (as Keras' build on first call)
            in_shape = tuple(x.shape[1:])
            for module in self:
                x = module(x)
            if isinstance(x, torch.Tensor) and len(self):
                self._input_shape = in_shape
                self._output_shape = (None, *x.shape[1:])
                self.built = True
            return x
        for module in self:
            x = module(x)
        return x

    # ------------------------------------------------------------------ summary, config

    def summary(self, print_fn: Callable[[str], Any] | None = None) -> list:
        """Print a Keras-like table (layer, output shape, params, MACs, receptive field)
        and return its rows; see :func:`cnnkit.layers.summary.summary`."""
        from cnnkit.layers.summary import summary as _summary

        if self._input_shape is None:
            raise ConfigError(
                "Sequential.summary needs the input shape: pass input_shape=(C, H, W) to "
                "Sequential (or to its first layer), or call model.build((3, 32, 32)) first; "
                "received none."
            )
        return _summary(self, self._input_shape, print_fn=print_fn)

    def get_config(self) -> dict[str, Any]:
        """``{'name', 'input_shape', 'layers': [{'class_name', 'module', 'config'}]}``;
        ``config`` is ``None`` for torch modules without ``get_config``."""
        layers = []
        for layer in self:
            cfg = layer.get_config() if hasattr(layer, "get_config") else None
            layers.append(
                {
                    "class_name": type(layer).__name__,
                    "module": type(layer).__module__,
                    "config": cfg,
                }
            )
        return {
            "name": self.name,
            "input_shape": list(self._input_shape) if self._input_shape is not None else None,
            "layers": layers,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Sequential:
        """Rebuild a model (fresh weights) from :meth:`get_config`'s output.

        Only registered layer classes (:data:`cnnkit.layers.base.LAYERS`: cnnkit's layers
        and nested ``Sequential``s) can be rebuilt; an entry's ``class_name`` is looked
        up there (its ``module`` is never imported) and its ``config`` must bind to the
        class's constructor and hold plain data, all checked before anything is built.
        """
        return _build(_plan_stack(cls, config, "Sequential config"))


class _Layer(NamedTuple):
    cls: type
    args: dict[str, Any]
    where: str


class _Stack(NamedTuple):
    cls: type
    children: list[_Layer | _Stack]
    input_shape: Any
    name: Any
    where: str


def _plan_stack(cls: type, config: Any, where: str) -> _Stack:
    """What a saved stack config builds, every entry checked (nested stacks too) before
    anything is imported or called."""
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"{where} must be a mapping with 'layers', 'input_shape' and 'name' (as "
            f"get_config writes); received {short(config)}."
        )
    unknown = [k for k in config if k not in ("name", "input_shape", "layers")]
    if unknown:
        raise ConfigError(
            f"{where} has the unknown key {short(unknown[0])}; expected 'layers', "
            "'input_shape' and 'name'."
        )
    entries = config.get("layers", [])
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(
            f"{where}: 'layers' must be a list of layer entries; received {short(entries)}."
        )
    children = [_layer_plan(entry, f"{where}, layer {i}") for i, entry in enumerate(entries)]
    return _Stack(cls, children, config.get("input_shape"), config.get("name"), where)


def _layer_plan(entry: Any, where: str) -> _Layer | _Stack:
    """The registered class of one saved layer entry and its checked arguments."""
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"{where} must be a mapping {{'class_name', 'module', 'config'}}; received "
            f"{short(entry)}."
        )
    unknown = [k for k in entry if k not in ("class_name", "module", "config")]
    if unknown:
        raise ConfigError(
            f"{where} has the unknown key {short(unknown[0])}; expected 'class_name', "
            "'module' and 'config'."
        )
    module_name, class_name = entry.get("module", ""), entry.get("class_name", "")
    if not isinstance(class_name, str) or not isinstance(module_name, str):
        raise ConfigError(
            f"{where}: class_name and module must be names; received "
            f"{short(class_name)} and {short(module_name)}."
        )
    klass = layer_class(class_name, module_name)
    if klass is None or entry.get("config") is None:
        named = f"{module_name}.{class_name}" if module_name else class_name
        raise ConfigError(
            f"Cannot rebuild {where} ({short(named, 120)}) from a config: only cnnkit layers "
            f"have one ({len(LAYERS)} are registered, e.g. Conv2D, Dense, Sequential). "
            "Rebuild the model in code."
            + (did_you_mean(class_name, LAYERS) if klass is None else "")
        )
    what = f"{where} ({class_name})"
    if issubclass(klass, Sequential):
        return _plan_stack(klass, entry["config"], what)
    return _Layer(klass, check_arguments(klass, entry["config"], what), what)


#: what a constructor given wrong values may raise besides a cnnkit error
_RAW_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError,
               RuntimeError)  # fmt: skip


def _build(plan: _Layer | _Stack) -> nn.Module:
    if isinstance(plan, _Stack):
        layers = [_build(child) for child in plan.children]
        args = {"layers": layers, "input_shape": plan.input_shape, "name": plan.name}
    else:
        args = plan.args
    try:
        return plan.cls(**args)
    except CnnkitError:
        raise
    except _RAW_ERRORS as err:
        raise ConfigError(
            f"{plan.where} cannot be built from its config: {short(str(err), 200)}"
        ) from None


register_layer(Sequential)
