"""Turning what users pass to ``fit``/``evaluate``/``predict`` into batches.

Arrays and tensors that fit in memory are sliced directly (no DataLoader, no
per-sample Python); ``Dataset``s and ``DataLoader``s are iterated as given.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from cnnkit._core.errors import ConfigError, ShapeError

#: NumPy dtype kinds torch takes: bool, signed/unsigned int, float, complex
_NUMERIC_KINDS = "biufc"


def _first_value(arr: np.ndarray) -> str:
    if not arr.size:
        return ""
    first = arr.flat[0]
    if isinstance(first, str | bytes):
        text = repr(first[:21])
        return f", first value {text if len(text) <= 20 else text[:17] + '...'}"
    return f", first value a {type(first).__name__}"


def _as_tensor(x: Any, what: str, targets: bool) -> torch.Tensor:
    """``x`` as a tensor; strings, objects and ragged lists are a ConfigError naming ``what``."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise ConfigError(
            f"{what} cannot be made into one array ({str(err)[:150]}); pass a NumPy array or "
            "tensor whose samples all have the same shape."
        ) from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        held = {"U": "strings", "S": "bytes", "O": "Python objects"}.get(arr.dtype.kind, "values")
        works = (
            "integer class ids (0 to C-1) or float targets (one-hot, regression); map class "
            "names to ids first, e.g. classes, y = np.unique(y, return_inverse=True)"
            if targets
            else "a float or int array or tensor (e.g. images as N x C x H x W), a Dataset or "
            "a DataLoader; decode files and text into numbers first"
        )
        raise ConfigError(
            f"{what} holds {held} (dtype {arr.dtype}{_first_value(arr)}); cnnkit needs "
            f"numbers: pass {works}."
        )
    return torch.as_tensor(arr)


def as_input_tensor(x: Any, what: str = "x") -> torch.Tensor:
    """NumPy array / tensor / nested list -> a float32 tensor.

    Ints, float64, float16 and bfloat16 become float32: the weights are float32, and
    fp16/bf16 compute is chosen by ``compile(precision=...)``, not by the input dtype.
    Strings and Python objects are a ConfigError naming ``what``.
    """
    t = _as_tensor(x, what, targets=False)
    if t.dtype != torch.float32:
        t = t.float()
    return t


def as_target_tensor(y: Any, what: str = "y") -> torch.Tensor:
    """Targets: integer class indices stay int64, everything else float32; strings and
    Python objects are a ConfigError naming ``what``."""
    t = _as_tensor(y, what, targets=True)
    if t.dtype in (torch.int8, torch.int16, torch.int32, torch.uint8, torch.int64, torch.bool):
        return t.long()
    return t.float()


def _as_targets(y: Any, what: str = "y") -> torch.Tensor | tuple[torch.Tensor, ...]:
    if isinstance(y, (list, tuple)) and y and isinstance(y[0], (np.ndarray, torch.Tensor)):
        return tuple(as_target_tensor(t, what) for t in y)
    return as_target_tensor(y, what)


def _length(y: torch.Tensor | tuple[torch.Tensor, ...]) -> int:
    return len(y[0]) if isinstance(y, tuple) else len(y)


def _index(y, idx):
    return tuple(t[idx] for t in y) if isinstance(y, tuple) else y[idx]


@dataclass
class InMemory:
    """Tensors held in memory; batches are slices."""

    x: torch.Tensor
    y: torch.Tensor | tuple[torch.Tensor, ...] | None
    #: ``batches(..., start=k)`` begins at batch ``k`` of the epoch without drawing the others
    starts_anywhere = True

    def __len__(self) -> int:
        return len(self.x)

    def batches(
        self,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
        start: int = 0,
    ) -> Iterator[tuple]:
        n = len(self.x)
        order = torch.randperm(n, generator=generator) if shuffle else None
        for begin in range(start * batch_size, n, batch_size):
            if order is None:
                sl = slice(begin, begin + batch_size)
                yield self.x[sl], (None if self.y is None else _index(self.y, sl))
            else:
                idx = order[begin : begin + batch_size]
                yield self.x[idx], (None if self.y is None else _index(self.y, idx))

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self.x) // batch_size)

    def split(self, fraction: float) -> tuple[InMemory, InMemory]:
        """Keras' validation_split: the last ``fraction`` becomes validation, before shuffling."""
        n = len(self.x)
        n_val = int(n * fraction)
        if n_val == 0 or n_val == n:
            raise ConfigError(
                f"validation_split={fraction} leaves {n - n_val} training and {n_val} validation "
                f"samples out of {n}; choose a fraction that keeps both non-empty."
            )
        cut = n - n_val
        y_tr = None if self.y is None else _index(self.y, slice(0, cut))
        y_va = None if self.y is None else _index(self.y, slice(cut, n))
        return InMemory(self.x[:cut], y_tr), InMemory(self.x[cut:], y_va)


_BATCH_X, _BATCH_Y = "the inputs of a batch", "the targets of a batch"


@dataclass
class Loader:
    """A Dataset or DataLoader, iterated as given.

    A Dataset gets a DataLoader with ``pin_memory`` (set by ``fit``/``evaluate`` when
    training on CUDA, so host-to-device copies can overlap) and ``num_workers``
    worker processes (default 0: the Dataset need not be picklable).
    """

    source: Dataset | DataLoader
    pin_memory: bool = False
    num_workers: int = 0

    def __len__(self) -> int:
        src = self.source.dataset if isinstance(self.source, DataLoader) else self.source
        return len(src)  # type: ignore[arg-type]

    def _loader(self, batch_size: int, shuffle: bool, generator=None) -> DataLoader:
        if isinstance(self.source, DataLoader):
            return self.source
        if shuffle and generator is not None:
            # the order InMemory and DistributedSampler (seed + epoch) draw: randperm(n, generator)
            order = torch.randperm(len(self.source), generator=generator).tolist()  # type: ignore[arg-type]
            return DataLoader(self.source, batch_size=batch_size, sampler=order, **self._options())
        return DataLoader(
            self.source,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            **self._options(),
        )

    def _options(self) -> dict:
        opts: dict = {}
        if self.pin_memory:
            opts["pin_memory"] = True
        if self.num_workers:
            opts["num_workers"] = self.num_workers
            opts["persistent_workers"] = True
        return opts

    @property
    def starts_anywhere(self) -> bool:
        """A Dataset's order comes from the generator, so ``start`` costs nothing."""
        return not isinstance(self.source, DataLoader)

    def batches(
        self, batch_size: int, shuffle: bool, generator=None, start: int = 0
    ) -> Iterator[tuple]:
        loader = self._loader(batch_size, shuffle, generator)
        if start:
            if isinstance(self.source, DataLoader):
                raise ConfigError("a DataLoader cannot start mid-epoch; drop its first batches")
            order = list(loader.sampler)[start * batch_size :]
            loader = DataLoader(
                self.source, batch_size=batch_size, sampler=order, **self._options()
            )
        # started here, not at the first next(): a DataLoader draws its seeds from the
        # global RNG when it starts, and a mid-epoch resume starts it from the epoch's state
        return self._converted(iter(loader))

    @staticmethod
    def _converted(batches: Iterator[Any]) -> Iterator[tuple]:
        for batch in batches:
            if isinstance(batch, (list, tuple)):
                x = as_input_tensor(batch[0], _BATCH_X)
                if len(batch) == 1:
                    yield x, None
                elif len(batch) == 2:
                    yield x, _as_targets(batch[1], _BATCH_Y)
                else:
                    yield x, tuple(as_target_tensor(t, _BATCH_Y) for t in batch[1:])
            else:
                yield as_input_tensor(batch, _BATCH_X), None

    def num_batches(self, batch_size: int) -> int:
        return len(self._loader(batch_size, False))

    def split(self, fraction: float) -> tuple[Loader, Loader]:
        if isinstance(self.source, DataLoader):
            raise ConfigError(
                "validation_split needs arrays, tensors or a Dataset; received a DataLoader. "
                "Pass validation_data=... instead."
            )
        n = len(self.source)  # type: ignore[arg-type]
        n_val = int(n * fraction)
        if n_val == 0 or n_val == n:
            raise ConfigError(
                f"validation_split={fraction} leaves {n - n_val} training and {n_val} validation "
                f"samples out of {n}; choose a fraction that keeps both non-empty."
            )
        opts = {"pin_memory": self.pin_memory, "num_workers": self.num_workers}
        return Loader(Subset(self.source, range(n - n_val)), **opts), Loader(
            Subset(self.source, range(n - n_val, n)), **opts
        )


def make_source(
    x: Any, y: Any = None, *, what: str = "x", pin_memory: bool = False
) -> InMemory | Loader:
    """Wrap the user's data; checks lengths and emptiness.

    ``pin_memory`` applies to Datasets (their DataLoader); in-memory tensors are sliced.
    """
    if x is None:
        raise ConfigError(f"{what} is required: pass arrays, tensors, a Dataset or a DataLoader.")
    if isinstance(x, (Dataset, DataLoader)):
        if y is not None:
            raise ConfigError(
                "y must be None when x is a Dataset or DataLoader (it yields the targets)."
            )
        src: InMemory | Loader = Loader(x, pin_memory=pin_memory)
    else:
        if isinstance(x, Sequence) and len(x) == 2 and y is None and not isinstance(x, str):
            x, y = x  # (x, y) tuples, as validation_data
        xt = as_input_tensor(x, what)
        yt = None if y is None else _as_targets(y, "y" if what == "x" else f"{what}'s targets")
        if yt is not None and _length(yt) != len(xt):
            raise ShapeError(f"x has {len(xt)} samples but y has {_length(yt)}; they must match.")
        src = InMemory(xt, yt)
    if len(src) == 0:
        raise ConfigError(
            f"{what} is empty (0 samples); nothing to train or evaluate on; pass at least one sample."
        )
    return src
