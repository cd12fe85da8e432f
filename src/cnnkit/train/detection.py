"""Deprecated: Mask R-CNN trains, evaluates and predicts through ``cnnkit.Model``.

    model = cnnkit.Model(create("mask_rcnn", num_classes=3, backbone="small"))
    model.compile(optimizer=lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9,
                  weight_decay=1e-4), lr_schedule=warmup_step_decay([9], warmup_iters=100),
                  global_clipnorm=10.0)
    history = model.fit(images, targets, epochs=12, batch_size=8,
                        validation_data=(val_images, val_targets))
    model.evaluate(val_images, val_targets)   # {'loss': ..., 'bbox': {...}, 'segm': {...}}

:func:`fit_detection`, :func:`evaluate_detection` and :func:`predict_detection` remain as
thin wrappers of that (with a ``DeprecationWarning``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence

import torch

from cnnkit._core.errors import ConfigError, check_choice
from cnnkit.data.synthetic import SyntheticDataset
from cnnkit.data.transforms import RandomHorizontalFlip
from cnnkit.metrics import detection_map
from cnnkit.train.callbacks import Callback, ModelCheckpoint
from cnnkit.train.model import Model
from cnnkit.train.schedules import warmup_step_decay
from cnnkit.train.seed import seed_everything

__all__ = ["evaluate_detection", "fit_detection", "predict_detection"]


def _deprecated(name: str, instead: str) -> None:
    warnings.warn(
        f"cnnkit.train.detection.{name} is deprecated; use cnnkit.Model(model).{instead}",
        DeprecationWarning,
        stacklevel=3,
    )


class _EpochEnd(Callback):
    def __init__(self, fn: Callable[[int, dict], object]) -> None:
        self.fn = fn

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self.fn(epoch, logs or {})


def fit_detection(
    model: torch.nn.Module,
    images: Sequence[torch.Tensor] | torch.Tensor,
    targets: Sequence[dict],
    *,
    epochs: int,
    batch_size: int = 8,
    lr: float = 0.02,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    lr_steps: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_iters: int = 100,
    hflip: bool = False,
    clip_grad_norm: float | None = 10.0,
    val: tuple | None = None,
    val_every: int = 1,
    callbacks: Sequence[Callable[[int, dict], object]] = (),
    log_fn: Callable[[str], object] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume_from: str | os.PathLike | None = None,
) -> dict[str, list[float]]:
    """Deprecated: ``cnnkit.Model(model)`` compiled with SGD (``lr``, ``momentum``,
    ``weight_decay``), :func:`~cnnkit.train.schedules.warmup_step_decay` (``lr_steps``,
    ``gamma``, ``warmup_iters``) and ``global_clipnorm=clip_grad_norm``, then ``fit``
    (``val`` as ``validation_data``, ``checkpoint_dir`` through ``ModelCheckpoint``,
    ``callbacks`` as ``fn(epoch, logs)`` and ``log_fn(line)`` after each epoch; ``val``
    is scored every epoch). Returns ``history.history``."""
    _deprecated("fit_detection", "compile(...).fit(images, targets, ...)")
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive int; received {epochs!r}.")
    if val_every != 1:
        raise ConfigError(
            f"Model.fit scores validation data every epoch; received val_every={val_every!r}."
        )
    seed_everything(seed)
    device = device if device is not None else next(model.parameters()).device
    wf = Model(model)
    wf.compile(
        optimizer=lambda params: torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay
        ),
        lr_schedule=warmup_step_decay(list(lr_steps), gamma, warmup_iters),
        global_clipnorm=clip_grad_norm,
        device=device,
        precision="fp32",
        channels_last=False,
    )
    cbs: list = [_EpochEnd(fn) for fn in callbacks]
    if log_fn is not None:
        cbs.append(_EpochEnd(lambda e, logs: log_fn(f"epoch {e + 1}/{epochs} " + " ".join(
            f"{k}={v:.4g}" for k, v in logs.items()))))  # fmt: skip
    if checkpoint_dir is not None:  # after the callbacks: the RNG states they leave are saved
        cbs.append(ModelCheckpoint(checkpoint_dir, monitor="loss", save_best=False))
    data = (
        (SyntheticDataset(images, targets, RandomHorizontalFlip()),) if hflip else (images, targets)
    )
    history = wf.fit(
        *data,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=val,
        callbacks=cbs,
        verbose=0,
        resume_from=None if resume_from is None else str(resume_from),
    )
    return history.history


def predict_detection(
    model: torch.nn.Module, images, batch_size: int = 8, mask_threshold: float | None = 0.5
) -> list[dict]:
    """Deprecated: ``cnnkit.Model(model).predict(images)`` (masks binarised at 0.5)."""
    _deprecated("predict_detection", "predict(images)")
    wf = Model(model)
    wf._task.mask_threshold = mask_threshold  # None: the model's [D, 1, H, W] probabilities
    was_training = model.training
    try:
        return wf.predict(images, batch_size=batch_size)
    finally:
        model.train(was_training)


def evaluate_detection(
    model: torch.nn.Module,
    images,
    targets: Sequence[dict],
    iou_types: Sequence[str] = ("bbox", "segm"),
    batch_size: int = 8,
    mask_threshold: float = 0.5,
) -> dict[str, dict]:
    """Deprecated: ``cnnkit.Model(model).evaluate(images, targets)`` without its loss."""
    _deprecated("evaluate_detection", "evaluate(images, targets)")
    iou_types = [check_choice("iou_type", t, ("bbox", "segm")) for t in iou_types]
    if len(images) != len(targets):
        raise ConfigError(f"{len(images)} images but {len(targets)} targets; give one each.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        preds = predict_detection(model, images, batch_size, mask_threshold)
    return {t: detection_map(preds, targets, iou_type=t) for t in iou_types}
