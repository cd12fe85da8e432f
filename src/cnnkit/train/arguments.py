"""Checks of the arguments of ``fit``/``evaluate``/``predict``, before any work starts.

Each wrong value is a :class:`~cnnkit.ConfigError` naming the argument, the value
received (shortened) and what would work, instead of a ``TypeError`` from ``range`` or
a ``ValueError`` from inside torch.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from cnnkit._core.errors import ConfigError

#: the message torch's batch norm raises when training on one value per channel
BATCH_OF_ONE = "Expected more than 1 value per channel when training"


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters; only the type for anything but a
    scalar or a string (never the repr of an unbounded container)."""
    if isinstance(value, str | bytes):
        text = repr(value[: limit + 1])
    elif value is None or isinstance(value, numbers.Number):
        text = repr(value)
    else:
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    return type(value).__name__


def check_batch_size(batch_size: Any) -> int:
    """A positive int (a NumPy integer is taken as the int it is); floats and bools are refused."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        hint = ""
        if isinstance(batch_size, float) and math.isfinite(batch_size) and batch_size.is_integer():
            hint = f" (pass {int(batch_size)})"
        raise ConfigError(
            f"batch_size must be a positive int{hint}; received {shown(batch_size)} "
            f"({_kind(batch_size)})."
        )
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive; received {batch_size}.")
    return int(batch_size)


def _int_at_least(name: str, value: Any, low: int, meaning: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(
            f"{name} must be an int >= {low} ({meaning}); received {shown(value)} ({_kind(value)})."
        )
    return int(value)


def check_fit_arguments(
    batch_size: Any, epochs: Any, initial_epoch: Any, validation_split: Any, drop_last: Any
) -> tuple[int, int, int]:
    """``(batch_size, epochs, initial_epoch)`` as ints, or a ConfigError.

    ``epochs=0`` (or ``initial_epoch == epochs``) trains nothing, as in Keras; a negative
    ``epochs`` or an ``initial_epoch`` past ``epochs`` is refused (Keras returns an empty
    history for both, which hides the mistake).
    """
    if (
        isinstance(validation_split, bool)
        or not isinstance(validation_split, numbers.Real)
        or not 0.0 <= validation_split < 1.0
    ):
        if isinstance(validation_split, numbers.Real) and not isinstance(validation_split, bool):
            raise ConfigError(f"validation_split must be in [0, 1); received {validation_split}.")
        raise ConfigError(
            f"validation_split must be a number in [0, 1); received {shown(validation_split)} "
            f"({_kind(validation_split)})."
        )
    batch_size = check_batch_size(batch_size)
    meaning = "the epoch to stop at, counting initial_epoch; 0 trains nothing"
    epochs = _int_at_least("epochs", epochs, 0, meaning)
    initial_epoch = _int_at_least("initial_epoch", initial_epoch, 0, "the epoch to start at")
    if initial_epoch > epochs:
        raise ConfigError(
            f"initial_epoch={initial_epoch} is past epochs={epochs}: as in Keras, epochs is "
            f"the epoch to stop at, not a number of epochs to add; pass "
            f"epochs={initial_epoch + epochs} to train {epochs} more."
        )
    if not isinstance(drop_last, bool):
        raise ConfigError(f"drop_last must be True or False; received {shown(drop_last)}.")
    return batch_size, epochs, initial_epoch


def check_drop_last(x: Any, samples: int, batch_size: int) -> None:
    """``drop_last=True`` batches arrays and Datasets; a DataLoader batches itself."""
    from torch.utils.data import DataLoader

    if isinstance(x, DataLoader):
        raise ConfigError(
            "drop_last=True applies to arrays, tensors and Datasets; received a DataLoader, "
            "which batches itself: build it with DataLoader(..., drop_last=True) instead."
        )
    if samples < batch_size:
        raise ConfigError(
            f"drop_last=True with batch_size={batch_size} and {samples} training samples "
            f"leaves no batch; pass a batch_size of at most {samples}."
        )


def _no_batch_of_one(samples: int, batch_size: int) -> int:
    """The batch size nearest ``batch_size`` that leaves no last batch of one sample."""
    for step in range(1, samples):
        for b in (batch_size + step, batch_size - step):
            if 2 <= b <= samples and samples % b != 1:
                return b
    return samples


def batch_of_one_error(err: ValueError, samples: int, batch_size: int, x: Any) -> ConfigError:
    """What torch's batch-norm ``ValueError`` on a one-sample batch means, and the fixes."""
    from torch.utils.data import DataLoader

    if isinstance(x, DataLoader):
        cause = "the DataLoader yielded a batch of 1"
        fix = "build the DataLoader with drop_last=True or a batch_size that leaves no batch of 1"
    else:
        cause = (
            f"{samples} training samples with batch_size={batch_size} leave a last batch of 1"
            if samples > 1
            else "there is 1 training sample"
        )
        fix = (
            "pass at least 2 training samples"
            if samples <= 1
            else f"pass a batch_size for which {samples} % batch_size != 1 (e.g. "
            f"batch_size={_no_batch_of_one(samples, batch_size)}), or fit(..., drop_last=True) "
            "to skip the last partial batch"
        )
    return ConfigError(
        f"BatchNormalization cannot train on a batch of 1 sample (no batch statistics): "
        f"{cause}. To fix: {fix}. (torch: {str(err)[:120]})"
    )
