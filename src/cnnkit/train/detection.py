"""Training and COCO evaluation of torchvision-style detection models (Mask R-CNN).

The model follows torchvision's convention: ``model(images, targets)`` in train mode
returns a dict of losses, ``model(images)`` in eval mode a list of detection dicts (see
:mod:`cnnkit.models.mask_rcnn`). The schedule is seed 003's: SGD with momentum 0.9,
weight decay 1e-4 and a step decay of the learning rate (He et al. 2017: 0.02, divided
by 10 after 120k of 160k iterations), here with a linear warm-up over the first
iterations (Goyal et al. 2017), which from-scratch training needs.

    history = fit_detection(model, images, targets, epochs=12, lr=0.02, lr_steps=(9,),
                            val=(val_images, val_targets))
    scores = evaluate_detection(model, val_images, val_targets)  # {'bbox': {...}, 'segm': {...}}
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable, Sequence

import torch

from cnnkit._core.errors import ConfigError, check_choice
from cnnkit.metrics import detection_map
from cnnkit.train import detection_state as state
from cnnkit.train.seed import seed_everything
from cnnkit.train.signals import Preempted, StopSignals

__all__ = ["evaluate_detection", "fit_detection", "predict_detection"]

log = logging.getLogger(__name__)


def _check_data(images, targets) -> None:
    if len(images) != len(targets):
        raise ConfigError(f"{len(images)} images but {len(targets)} targets; give one each.")
    if len(images) == 0:
        raise ConfigError("no images to train or evaluate on.")


def _to(target: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


def _hflip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    w = image.shape[-1]
    boxes = target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor(
        [w, 0, w, 0]
    )
    out = dict(target, boxes=boxes.to(target["boxes"].dtype))
    if "masks" in target:
        out["masks"] = target["masks"].flip(-1)
    return image.flip(-1), out


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
    checkpoint_every: int | None = None,
    resume_hint: str | None = None,
) -> dict[str, list[float]]:
    """Train ``model`` by SGD on ``images`` (list of ``Tensor[C, H, W]`` or a batch tensor)
    and ``targets`` (dicts with ``boxes``, ``labels``, ``masks``).

    Args:
        epochs: passes over the data, shuffled each epoch with ``seed``.
        lr, momentum, weight_decay: SGD's (seed 003: 0.02, 0.9, 1e-4).
        lr_steps: epochs after which the learning rate is multiplied by ``gamma``.
        warmup_iters: iterations of linear warm-up from ``lr / 1000`` (0: none).
        hflip: random horizontal flips of the training images (probability 1/2).
        clip_grad_norm: gradient-norm clipping (``None``: none).
        val: ``(images, targets)`` evaluated with :func:`evaluate_detection` every
            ``val_every`` epochs and after the last.
        callbacks: ``fn(epoch, logs)`` called after each epoch.
        log_fn: receives one line per epoch (default: ``logging.info``).
        checkpoint_dir: after every epoch the full training state (weights, SGD state with
            its momentum buffers, warm-up position, epoch, history, the RNG states and the
            generator of the shuffles and flips) goes to ``checkpoint_dir/last/``: a
            :mod:`cnnkit.train.checkpoint` training checkpoint (safetensors + JSON, a
            SHA-256 per tensor file, the previous one kept as a fallback) that
            ``cnnkit.load`` also reads. A checkpoint of an earlier run there is only
            replaced when this call resumes from it.
        resume_from: a ``checkpoint_dir`` (or its ``last/``) to continue from: the finished
            epochs are skipped and everything above restored, so the run ends with exactly
            the weights and history of an uninterrupted one (on the CPU; ``time`` counts on
            from the saved value). A damaged last checkpoint is refused with a warning
            naming the file and the previous one used; both damaged raise a
            :class:`CnnkitError`. With ``epochs`` already done, nothing is trained; a
            folder without a checkpoint yet starts the run. A mid-epoch checkpoint
            continues inside the epoch (same order, flips and running sums).
        checkpoint_every: also write ``last/`` every that many iterations (mid-epoch).
        resume_hint: how to continue, for the line logged when a SIGTERM/SIGINT stops the
            run: it finishes the current iteration, writes ``last/`` (with
            ``checkpoint_dir``) and raises :class:`cnnkit.train.signals.Preempted`
            (exit status 143 / 130).

    Returns:
        history: ``{name: [value per epoch]}`` with ``loss`` (the sum), each named loss,
        ``lr``, ``time`` (seconds since the start) and ``val_<bbox|segm>_<metric>`` (NaN
        for epochs without evaluation); after ``resume_from``, from the first epoch on.
    """
    _check_data(images, targets)
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive int; received {epochs!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int; received {batch_size!r}.")
    seed_everything(seed)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    schedule = state.DetectionSchedule(lr, lr_steps, gamma, warmup_iters, seed)
    gen = schedule.generator
    folder = None
    if checkpoint_dir is not None:
        folder = state.check_checkpoint_dir(checkpoint_dir, resume_from)
    n = len(images)
    run_settings = {"images": n, "batch_size": batch_size, "seed": seed}  # kept with checkpoints
    history: dict[str, list[float]] = {}
    say = log_fn or log.info
    first, offset, position = 0, 0.0, None
    if resume_from is not None:  # weights, SGD, warm-up position, generator, RNGs, history
        first, history, position = state.restore(resume_from, model, opt, schedule)
        state.warn_if_changed(resume_from, run_settings)
        offset = history["time"][-1] if history.get("time") else 0.0
        if first >= epochs:
            log.info(
                "%s already holds %d of %d epochs; nothing to train", resume_from, first, epochs
            )
    start = time.perf_counter()
    with StopSignals() as stop:
        for epoch in range(first, epochs):
            model.train()
            base_lr = schedule.base_lr(epoch)
            sums: dict[str, float] = {}
            batches = 0
            if position and position.get("epoch") == epoch and position.get("step"):
                order, batches = position["order"], int(position["step"])  # mid-epoch
                sums = {k: float(v) for k, v in position["sums"].items()}
            else:
                order = torch.randperm(n, generator=gen).tolist()
            position = None
            for b in range(batches * batch_size, n, batch_size):
                idx = order[b : b + batch_size]
                imgs = [images[i] for i in idx]
                tgts = [targets[i] for i in idx]
                if hflip:
                    flips = torch.rand(len(idx), generator=gen) < 0.5
                    pairs = [_hflip(x, t) if f else (x, t) for x, t, f in zip(imgs, tgts, flips)]
                    imgs, tgts = [p[0] for p in pairs], [p[1] for p in pairs]
                imgs = [x.to(device) for x in imgs]
                tgts = [_to(t, device) for t in tgts]
                for group in opt.param_groups:
                    group["lr"] = schedule.current_lr(epoch)
                losses = model(imgs, tgts)
                total = sum(losses.values())
                if not torch.isfinite(total):
                    raise FloatingPointError(
                        f"non-finite loss at epoch {epoch + 1}, iteration {schedule.iteration}: "
                        f"{ {k: float(v) for k, v in losses.items()} }; lower lr (now {base_lr})."
                    )
                opt.zero_grad(set_to_none=True)
                total.backward()
                if clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
                opt.step()
                schedule.iteration += 1
                batches += 1
                for k, v in {"loss": total, **losses}.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                stopping = stop.should_stop()
                due = checkpoint_every and schedule.iteration % checkpoint_every == 0
                if folder is not None and (stopping or (due and b + batch_size < n)):
                    where = {"epoch": epoch, "step": batches, "order": order, "sums": sums}
                    state.save(folder, model, opt, schedule, epoch - 1, history, run_settings,
                               position=where)  # fmt: skip
                if stopping:
                    raise _preempted(stop, folder, checkpoint_dir, epoch, batches, resume_hint)
            logs = {k: v / batches for k, v in sums.items()}
            logs["lr"] = base_lr
            if val is not None and ((epoch + 1) % val_every == 0 or epoch + 1 == epochs):
                scores = evaluate_detection(model, *val, batch_size=batch_size)
                for iou_type, res in scores.items():
                    for key in ("map", "map_50", "map_75"):
                        logs[f"val_{iou_type}_{key}"] = float(res[key])
            logs["time"] = offset + time.perf_counter() - start
            for k in set(history) | set(logs):
                history.setdefault(k, [math.nan] * epoch).append(logs.get(k, math.nan))
            say(
                f"epoch {epoch + 1}/{epochs} "
                + " ".join(f"{k}={v:.4g}" for k, v in logs.items() if not math.isnan(v))
            )
            for cb in callbacks:
                cb(epoch, logs)
            if folder is not None:  # after the callbacks: the RNG states they leave are saved
                state.save(folder, model, opt, schedule, epoch, history, run_settings,
                           position={"epoch": epoch + 1, "step": 0})  # fmt: skip
            if stop.should_stop():
                raise _preempted(stop, folder, checkpoint_dir, epoch + 1, 0, resume_hint)
    return history


def _preempted(stop, folder, checkpoint_dir, epoch, step, hint) -> Preempted:
    """The exception (and the one logged line) that ends a stopped :func:`fit_detection`."""
    name = signal.Signals(stop.signum).name
    where = f"epoch {epoch + 1}, iteration {step}" if step else f"the end of epoch {epoch}"
    if folder is None:
        text = f"stopped by {name} at {where}; no checkpoint_dir, nothing was saved"
    else:
        how = hint or f"fit_detection(..., resume_from={str(checkpoint_dir)!r})"
        text = f"stopped by {name} at {where}; checkpoint in {checkpoint_dir}; resume with {how}"
    log.warning(text)
    return Preempted(stop.signum, text, checkpoint_dir if folder else None, epoch, step)


@torch.no_grad()
def predict_detection(
    model: torch.nn.Module, images, batch_size: int = 8, mask_threshold: float | None = 0.5
) -> list[dict]:
    """Eval-mode detections of ``images`` on the CPU; masks binarised at ``mask_threshold``
    to ``Tensor[D, H, W]`` bool (``None``: the model's ``[D, 1, H, W]`` probabilities)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for b in range(0, len(images), batch_size):
            dets = model([images[i].to(device) for i in range(b, min(b + batch_size, len(images)))])
            for d in dets:
                d = {k: v.cpu() for k, v in d.items()}
                if mask_threshold is not None and "masks" in d:
                    d["masks"] = d["masks"][:, 0] > mask_threshold
                out.append(d)
    finally:
        model.train(was_training)
    return out


def evaluate_detection(
    model: torch.nn.Module,
    images,
    targets: Sequence[dict],
    iou_types: Sequence[str] = ("bbox", "segm"),
    batch_size: int = 8,
    mask_threshold: float = 0.5,
) -> dict[str, dict]:
    """COCO metrics of ``model`` on ``images``: ``{iou_type: detection_map(...)}`` (keys
    ``map``, ``map_50``, ``map_75``, per-size and recall figures), masks binarised at
    ``mask_threshold`` (the deck's 0.5) for ``'segm'``."""
    _check_data(images, targets)
    iou_types = [check_choice("iou_type", t, ("bbox", "segm")) for t in iou_types]
    preds = predict_detection(model, images, batch_size, mask_threshold)
    return {t: detection_map(preds, targets, iou_type=t) for t in iou_types}
