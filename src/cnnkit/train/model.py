"""``cnnkit.Model``: Keras' compile / fit / evaluate / predict on any ``nn.Module``.

    model = cnnkit.Model(create("mnist_cnn"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=128, epochs=3, validation_split=0.3)
    model.evaluate(x_test, y_test)   # {'loss': ..., 'accuracy': ...}

The loop adds nothing measurable to a hand-written one: in-memory data is sliced,
running sums stay on the device, the progress bar reads them only when it redraws.

One loop serves every task; where tasks differ (batches of images and target dicts, a
model that computes its own losses such as Mask R-CNN, COCO scores) it asks the task
object of :mod:`cnnkit.train.tasks`. Callbacks and checkpoints see the small interface of
:mod:`cnnkit.train.state`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from cnnkit._core.errors import CnnkitError, ConfigError, ShapeError
from cnnkit.train.arguments import (
    BATCH_OF_ONE,
    batch_of_one_error,
    check_batch_size,
    check_drop_last,
    check_fit_arguments,
)
from cnnkit.train.callbacks import CallbackList
from cnnkit.train.checkpoint import load_module, resume_training, save_model
from cnnkit.train.data import InMemory, Loader, as_input_tensor
from cnnkit.train.distributed import SINGLE, DistContext, build_step_modules, setup_distributed
from cnnkit.train.fastpath import configure as configure_fast_path
from cnnkit.train.fastpath import enabled_by_env, optimizer_description
from cnnkit.train.heads import OutputHead, trace_heads
from cnnkit.train.optimizers import check_optimizer, make_optimizer
from cnnkit.train.precision import PRECISIONS, Precision, resolve_device, resolve_precision
from cnnkit.train.progress import ProgressBar
from cnnkit.train.run_state import Progress, epoch_batches, sync_newest_checkpoint
from cnnkit.train.runtime import describe_choices, restore_runtime, runtime_record
from cnnkit.train.schedules import current_lr, step_batch, step_scheduler
from cnnkit.train.signals import catches_stop_signals, preempt
from cnnkit.train.tasks import SelfLoss, SupervisedHeads, flat_logs, task_for

log = logging.getLogger("cnnkit.train")


class History:
    """Keras' History: ``history`` maps ``loss``, ``val_loss`` and metrics to per-epoch lists."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        """Add an epoch's logs; a key missing from this epoch (or new in it) is NaN for
        the epochs without it, so every list has one value per epoch."""
        done = len(self.epoch)
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, [math.nan] * done).append(v)
        for values in self.history.values():
            values.extend([math.nan] * (done + 1 - len(values)))

    def restore(self, history: dict[str, list[float]], epochs: list[int]) -> None:
        """A saved history (a checkpoint's). A key logged only from some epoch on (a run
        resumed by a newer cnnkit that logs more) gets NaN for the epochs before it."""
        self.epoch = [int(e) for e in epochs]
        n = max([len(self.epoch), *(len(v) for v in history.values())], default=0)
        self.history = {k: [math.nan] * (n - len(v)) + list(v) for k, v in history.items()}

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


class Workflow:
    """Keras' workflow methods, mixed into :class:`Model` and ``cnnkit.Sequential``.

    ``_net`` is the module that is trained; non-child module references are kept in
    ``__dict__`` so they are not registered as submodules.
    """

    _compiled = False
    scaler: torch.amp.GradScaler | None = None
    _heads: list[OutputHead] | None = None
    _memory_format: torch.memory_format | None = None
    #: per-sample input shape the model was first run with (fit/evaluate/predict)
    _input_shape: tuple[int, ...] | None = None
    #: rank / world size of a torchrun run (``_dist.is_main``: write files, show progress)
    _dist: DistContext = SINGLE

    @property
    def _net(self) -> nn.Module:
        return self  # type: ignore[return-value]

    @property
    def _step_module(self) -> nn.Module:
        return self.__dict__.get("_step_module_ref") or self._net

    @property
    def _eval_module(self) -> nn.Module:
        ref = self.__dict__.get("_eval_module_ref")  # distributed: the module without DDP
        return self._step_module if ref is None else ref

    @property
    def compiled(self) -> bool:
        return self._compiled

    @property
    def _task(self) -> SupervisedHeads | SelfLoss:
        """What this model's task does differently (:mod:`cnnkit.train.tasks`)."""
        task = self.__dict__.get("_task_ref")
        if task is None:
            task = self.__dict__["_task_ref"] = task_for(self._net)
        return task

    def save(self, directory, overwrite: bool = False):
        """Write safetensors + JSON into ``directory``; see :func:`cnnkit.load`."""
        return save_model(self._net, directory, overwrite=overwrite, runtime=runtime_record(self))

    def export_onnx(self, path, input_shape=None, example_input=None, check=True, atol=1e-4):
        """Write an ONNX file checked against onnxruntime; see :func:`cnnkit.train.export.export_onnx`."""
        from cnnkit.train.export import export_onnx

        return export_onnx(self._net, path, input_shape, example_input, check=check, atol=atol)

    # ----------------------------------------------------------------- compile

    def compile(
        self,
        optimizer: str | torch.optim.Optimizer | Callable = "adam",
        loss: str | Callable | Sequence[str | Callable] | None = None,
        metrics: Sequence[str | Any] | None = None,
        loss_weights: Sequence[float] | dict[str, float] | None = None,
        lr_schedule: Any = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        jit_compile: bool = False,
        learning_rate: float | None = None,
        sync_batchnorm: bool = False,
        channels_last: bool | str = "auto",
        fast_path: bool = True,
        global_clipnorm: float | None = None,
    ) -> Model:
        """Choose optimizer, loss(es), metrics, device and precision.

        ``fast_path=True`` (default; environment ``CNNKIT_FASTPATH=0`` turns it off)
        applies :func:`cnnkit.train.fastpath.configure` (glibc allocator thresholds, flush
        denormals) and builds ``'adam'``/``'adamw'`` with ``fused=True`` where supported.
        What was chosen is logged by ``fit`` and kept in ``model.runtime_choices``.

        ``loss`` may be a list (one per model output) with ``loss_weights``.
        ``sync_batchnorm=True`` turns batch-norm layers into ``SyncBatchNorm`` when the
        script runs under torchrun on CUDA (batch statistics over all ranks).
        ``channels_last='auto'`` stores 2D (3D) conv nets and their inputs channels-last
        (channels_last_3d) on CUDA and CPU, where oneDNN's convolutions prefer it: with
        bf16 autocast 1.2-1.5x on AMX CPUs; in fp32 on an AVX2 CPU ``fit`` measured
        0.99-1.08x for the 2D nets and 1.6x for ``c3d_small`` (``bench/run.py``).
        ``True``/``False`` force it.

        A model that computes its own losses (``mask_rcnn``: ``model(images, targets)``
        returns a dict of them in train mode) is compiled without ``loss``; their sum is
        minimised, ``loss_weights={'loss_mask': 2.0}`` weighs them by name.
        ``global_clipnorm`` clips the norm of all gradients together (Keras' name).
        ``learning_rate`` applies to an optimizer given by name; an optimizer instance or
        callable carries its own rate, and passing both is a ``ConfigError``.
        """
        self.__dict__["_task_ref"] = task_for(self._net)
        self._task.compile(self, loss, loss_weights, metrics)
        check_optimizer(optimizer, learning_rate)  # rates, names, options: now, not at fit
        if global_clipnorm is not None and not (
            isinstance(global_clipnorm, int | float) and math.isfinite(global_clipnorm)
            and global_clipnorm > 0
        ):  # fmt: skip
            raise ConfigError(f"global_clipnorm must be > 0; received {global_clipnorm!r}.")
        self._clipnorm = global_clipnorm
        self._dist = setup_distributed(resolve_device(device))  # torchrun: process group
        self.device = self._dist.device
        self._sync_batchnorm = sync_batchnorm
        self.precision: Precision = resolve_precision(precision, self.device)
        #: fp16 autocast on CUDA: gradients are scaled so small ones do not underflow
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.needs_grad_scaler else None
        self._net.to(self.device)
        self._optimizer_spec = optimizer
        self._lr = None if learning_rate is None else float(learning_rate)
        self.optimizer: torch.optim.Optimizer | None = None
        if isinstance(optimizer, torch.optim.Optimizer):
            self.optimizer = optimizer
        self._lr_schedule = lr_schedule
        self.scheduler = None
        self._jit = jit_compile
        if channels_last not in ("auto", True, False):
            raise ConfigError(
                f"channels_last must be 'auto', True or False; received {channels_last!r}."
            )
        self._channels_last = channels_last
        self._memory_format: torch.memory_format | None = None
        self.__dict__["_step_module_ref"] = self.__dict__["_eval_module_ref"] = None
        self._heads: list[OutputHead] | None = None
        self._fast_path = bool(fast_path) and enabled_by_env()
        fast = configure_fast_path() if self._fast_path else None
        # cuDNN autotuning: fastest kernels for fixed input shapes, unless determinism is asked
        cudnn_benchmark = (
            self.device.type == "cuda"
            and self._fast_path
            and not torch.are_deterministic_algorithms_enabled()
        )
        if cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self.runtime_choices: dict[str, Any] = {
            "device": str(self.device),
            "precision": self.precision.name,
            "memory_format": "undecided (first fit/evaluate)",
            "fast_path": fast.as_dict() if fast is not None else {"enabled": False},
            "optimizer": None,
            "jit_compile": bool(jit_compile),
            "grad_scaler": self.scaler is not None,
            "cudnn_benchmark": bool(cudnn_benchmark),
        }
        self._compiled = True
        log.info("compiled on %s with precision %s", self.device, self.precision.name)
        return self

    def _choose_memory_format(self) -> torch.memory_format | None:
        """channels_last (2D) / channels_last_3d (3D) for conv nets, when asked or helpful."""
        from cnnkit.models.base import is_conv

        ranks = {
            m.weight.dim()
            for m in self._net.modules()
            if is_conv(m) and getattr(m, "weight", None) is not None
        }
        if self._channels_last is False or not ranks or len(ranks) > 1:
            return None
        helps = self.device.type in ("cuda", "cpu") or self.precision.name == "bf16"
        helps = helps and self._task.channels_last_helps
        if self._channels_last == "auto" and not helps:
            return None
        return {4: torch.channels_last, 5: torch.channels_last_3d}.get(ranks.pop())

    def _to_input(self, xb: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        device = self.device if device is None else device
        fmt = self._memory_format
        if fmt is not None and xb.dim() == (4 if fmt is torch.channels_last else 5):
            return xb.to(device, memory_format=fmt, non_blocking=True)
        return xb.to(device, non_blocking=True)

    def _require_compiled(self) -> None:
        if not self._compiled:
            raise ConfigError("Call model.compile(optimizer=..., loss=...) before fit/evaluate.")

    def _prepare(self, x_sample: torch.Tensor) -> None:
        """Build lazy layers, find output heads, create the optimizer (once)."""
        if self._heads is None:
            self._input_shape = self._task.prepare(self, x_sample)  # heads, metrics
            self._memory_format = self._choose_memory_format()
            if self._memory_format is not None:
                self._net.to(memory_format=self._memory_format)
                log.info("channels-last memory format: %s", self._memory_format)
            # torchrun: DistributedDataParallel (lazy layers are built, no optimizer yet)
            step, ev = build_step_modules(self._net, self._dist, self._jit, self._sync_batchnorm)
            self.__dict__["_step_module_ref"], self.__dict__["_eval_module_ref"] = step, ev
        if self.optimizer is None:
            self.optimizer = make_optimizer(
                self._optimizer_spec,
                self._net.parameters(),
                self._lr,
                fused=getattr(self, "_fast_path", True),
            )
        choices = self.__dict__.get("runtime_choices")
        if choices is not None:
            fmt = self._memory_format
            choices["memory_format"] = str(fmt).replace("torch.", "") if fmt else "contiguous"
            choices["optimizer"] = optimizer_description(self.optimizer)
        if self.scheduler is None and self._lr_schedule is not None:  # also for optimizer instances
            self.scheduler = (
                self._lr_schedule(self.optimizer)
                if callable(self._lr_schedule)
                else self._lr_schedule
            )

    # ----------------------------------------------------------------- one step

    def _forward(self, module: nn.Module, xb: torch.Tensor) -> Any:
        """``module(xb)``; a shape error names the input shape the model was built for."""
        with self._explain_shape_errors(xb):
            return module(xb)

    @contextlib.contextmanager
    def _explain_shape_errors(self, xb: torch.Tensor) -> Iterator[None]:
        try:
            yield
        except ShapeError as err:
            expected = self._input_shape or getattr(self._net, "_input_shape", None)
            received = tuple(xb.shape[1:])
            if not expected or tuple(expected) == received:
                raise
            raise ShapeError(
                f"This model was built for inputs of shape {tuple(expected)} per sample "
                f"(channels first); received {received}. Resize the inputs to "
                f"{tuple(expected)[1:]} (the layer said: {err})"
            ) from None

    def _backward_step(self, loss: torch.Tensor) -> None:
        """Backward pass, gradient clipping (``global_clipnorm``) and optimizer step; fp16
        on CUDA scales the loss (GradScaler)."""
        clip = getattr(self, "_clipnorm", None)
        if self.scaler is None:
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(self._net.parameters(), clip)
            self.optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self._net.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    # ----------------------------------------------------------------- fit

    @catches_stop_signals
    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int = 32,
        epochs: int = 1,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: bool = True,
        callbacks: Sequence[Any] | None = None,
        verbose: int = 1,
        initial_epoch: int = 0,
        resume_from: str | None = None,
        drop_last: bool = False,
    ) -> History:
        """Train for ``epochs`` epochs; returns a :class:`History`.

        Shuffling uses a generator seeded from the global torch RNG at the start of
        ``fit`` plus the epoch number, so every process of a distributed run (seeded
        alike) draws the same order, and a resumed run the same as an uninterrupted one.

        ``callbacks`` are ``cnnkit.callbacks`` (or any object with Keras' hooks);
        ``resume_from=dirpath`` continues from ``ModelCheckpoint(dirpath)``'s last
        checkpoint (weights, optimizer, schedule, history, shuffle seed, RNG states).

        ``epochs`` is the epoch to stop at (Keras' meaning: ``initial_epoch <= epochs``;
        0 trains nothing). ``drop_last=True`` skips each epoch's last batch when it is
        partial, e.g. a batch of one sample, on which BatchNormalization cannot train.
        Inputs are used as float32 whatever their dtype (float16, float64, ints).
        """
        self._require_compiled()
        batch_size, epochs, initial_epoch = check_fit_arguments(
            batch_size, epochs, initial_epoch, validation_split, drop_last
        )
        pin = self.device.type == "cuda"  # Datasets: pinned batches overlap the copy
        task = self._task  # what differs between tasks: batches, loss, logs
        train = task.source(x, y, pin_memory=pin)
        val = None
        if validation_split > 0:
            train, val = train.split(validation_split)
        if validation_data is not None:
            val = task.source(validation_data, what="validation_data", pin_memory=pin)
        first_x = next(iter(train.batches(2, False)))[0]
        self._prepare(first_x)
        train = self._dist.shard(train)  # torchrun: this rank's share of every epoch
        samples = len(train)
        if drop_last:
            check_drop_last(x, samples, batch_size)
        history = History()
        self.history = history  # ModelCheckpoint saves it as it grows
        callbacks = CallbackList(callbacks, model=self)
        module = self._step_module
        self.stop_training = False
        self._shuffle_seed = int(torch.randint(0, 2**62, (1,)).item())
        self._resume_from = resume_from
        log.info("fit: %s", describe_choices(getattr(self, "runtime_choices", {})))
        callbacks.on_train_begin()
        if resume_from is not None:  # weights, optimizer, schedule, history, seed, RNG
            sync_newest_checkpoint(self._dist, resume_from)  # multi-node: the newest copy
            resumed = resume_training(self, resume_from, history)  # None: nothing saved yet
            initial_epoch = initial_epoch if resumed is None else resumed
        resume_at = self.__dict__.pop("_resume_position", None) or {}  # a mid-epoch position
        progress = self._progress = Progress(resume_at.get("global_step", 0), initial_epoch)
        progress.task = task
        stop = self.__dict__["_stop_signals"]  # SIGTERM/SIGINT: stop after the step
        stop.ctx = self._dist
        for epoch in range(initial_epoch, epochs):
            callbacks.on_epoch_begin(epoch)
            self.epoch_learning_rate = current_lr(self.optimizer)  # before any schedule steps
            order_gen = torch.Generator().manual_seed(self._shuffle_seed + epoch)
            self._net.train()
            task.reset(self)
            total_loss = torch.zeros((), device=self.device)
            skip, seen = progress.begin_epoch(epoch, self._metrics, total_loss, resume_at)
            if skip:  # inside the epoch: the rate it began with (warm-up changes it per step)
                self.epoch_learning_rate = resume_at.get("learning_rate", self.epoch_learning_rate)
            progress.learning_rate = self.epoch_learning_rate
            shown = verbose if self._dist.is_main else 0  # torchrun: rank 0 only
            drop = drop_last and samples % batch_size != 0  # the last, partial batch
            bar = ProgressBar(train.num_batches(batch_size) - drop, epoch + 1, epochs, shown)
            with task.running(self):
                for step, (xb, yb) in enumerate(
                    epoch_batches(train, batch_size, shuffle, order_gen, skip, progress),
                    start=skip + 1,
                ):
                    if drop and len(xb) < batch_size:
                        break
                    try:
                        loss, n = task.batch_loss(self, module, xb, yb)  # forward, loss, metrics
                    except ValueError as err:  # BatchNormalization on one sample
                        if BATCH_OF_ONE not in str(err):
                            raise
                        raise batch_of_one_error(err, samples, batch_size, x) from None
                    self.optimizer.zero_grad(set_to_none=True)
                    self._backward_step(loss)
                    step_batch(self.scheduler)  # per-iteration schedules (warm-up)
                    total_loss += loss.detach() * n
                    seen += n
                    bar.update(step, n, lambda t=total_loss, s=seen: {"loss": (t / s).item()})
                    progress.after_step(step, seen)
                    callbacks.on_train_batch_end(step)
                    if stop.should_stop():
                        raise preempt(self, stop, callbacks, progress)
            train_loss = self._dist.mean(total_loss, seen)  # over all ranks
            if not math.isfinite(train_loss):
                raise CnnkitError(
                    f"The loss became {train_loss} in epoch {epoch + 1}; lower the learning rate "
                    "or check the inputs and labels for NaN/inf."
                )
            logs = {"loss": train_loss, **task.logs(self)}
            if self.scheduler is not None or callbacks.sets_learning_rate:
                logs["learning_rate"] = self.epoch_learning_rate  # the rate this epoch used
            if val is not None:
                val_logs = self.evaluate(_source=val, batch_size=batch_size, verbose=0)
                logs.update({"val_" + k: v for k, v in flat_logs(val_logs).items()})
            history.append(epoch, logs)  # kept even if the schedule's step below refuses
            if self.scheduler is not None:
                step_scheduler(self.scheduler, logs)  # plateau schedules read logs
            bar.finish(logs)
            progress.end_epoch()  # an epoch-end checkpoint's position: next epoch, step 0
            callbacks.on_epoch_end(epoch, logs)
            if stop.should_stop():  # signalled during validation or the checkpoint
                raise preempt(self, stop, callbacks, progress)
            if self.stop_training:
                break
        callbacks.on_train_end()
        self.history = history
        return history

    # ----------------------------------------------------------------- evaluate / predict

    @torch.no_grad()
    def evaluate(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int = 32,
        verbose: int = 0,
        _source: InMemory | Loader | None = None,
    ) -> dict[str, float]:
        """Loss and metrics on data: ``{'loss': ..., 'accuracy': ...}``; for a model that
        computes its own losses ``{'loss': ..., 'bbox': {...}, 'segm': {...}}`` with the
        COCO figures of :func:`cnnkit.metrics.detection_map` (``map``, ``map_50``, ...)."""
        self._require_compiled()
        batch_size = check_batch_size(batch_size)
        src = (
            _source
            if _source is not None
            else self._task.source(x, y, pin_memory=self.device.type == "cuda")
        )
        if self._heads is None:
            self._prepare(next(iter(src.batches(2, False)))[0])
        src = self._dist.shard(src, pad=False)  # torchrun: each sample on one rank
        logs = self._task.evaluate(self, src, batch_size)
        if verbose and self._dist.is_main:
            log.info(" - ".join(f"{k}: {v:.4f}" for k, v in flat_logs(logs).items()))
        return logs

    @torch.no_grad()
    def predict(self, x: Any, batch_size: int = 32, verbose: int = 0) -> Any:
        """The model's outputs as float32 NumPy arrays: probabilities for softmax/sigmoid
        heads, computed in fp32 from the logits whatever the precision of the body (so
        class probabilities sum to 1 within 1e-6), raw outputs otherwise. A detection
        model gives one dict per image: ``boxes``, ``labels``, ``scores``, ``masks``
        (``Tensor[D, H, W]`` bool: the mask probabilities binarised at 0.5)."""
        batch_size = check_batch_size(batch_size)
        src = self._task.predict_source(x)
        if self._compiled and self._heads is None:
            self._prepare(next(iter(src.batches(2, False)))[0])  # memory format, heads
        device = getattr(self, "device", None) or next(self._net.parameters()).device
        precision = getattr(self, "precision", None) or resolve_precision("fp32", device)
        return self._task.predict(self, src, batch_size, device, precision)

    def output_heads(self, x_sample: torch.Tensor | None = None) -> list[OutputHead]:
        """How each output is activated (``OutputHead.kind``: 'softmax', 'sigmoid' or None),
        found by one traced forward pass on ``x_sample`` the first time."""
        if self._heads is not None:
            return self._heads
        heads = self.__dict__.get("_traced_heads")
        if heads is None:
            if x_sample is None:
                raise ConfigError("output_heads() needs an input sample the first time.")
            device = next(self._net.parameters()).device
            was_training = self._net.training
            self._net.eval()
            sample = as_input_tensor(x_sample)[:2].to(device)
            with self._explain_shape_errors(sample):
                heads = trace_heads(self._net, sample)
            self._net.train(was_training)
            self.__dict__["_traced_heads"] = heads
        return heads

    def output_activations(self, x_sample: torch.Tensor | None = None) -> list[str | None]:
        """The final activation of each output, as ``predict`` applies it: 'softmax',
        'sigmoid' or None (raw outputs, e.g. logits or boxes)."""
        return [h.kind for h in self.output_heads(x_sample)]


class Model(Workflow, nn.Module):
    """Wraps any ``nn.Module`` with Keras' workflow. ``Model(module)(x) == module(x)``."""

    def __init__(self, module: nn.Module) -> None:
        nn.Module.__init__(self)
        if not isinstance(module, nn.Module):
            raise ConfigError(f"Model wraps an nn.Module; received {type(module).__name__}.")
        self.module = module

    @property
    def _net(self) -> nn.Module:
        return self.module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def summary(self, input_shape: Sequence[int] | None = None, print_fn=None):
        """The layer table of the wrapped module (see :func:`cnnkit.summary`)."""
        from cnnkit.layers.summary import summary

        return summary(self.module, input_shape=input_shape, print_fn=print_fn)


def load(
    directory: str | os.PathLike,
    device: str | torch.device = "cpu",
    precision: str | None = None,
) -> nn.Module:
    """A folder written by ``save`` (or a training checkpoint) as a
    ``cnnkit.Model`` (or ``cnnkit.Sequential``); see :func:`cnnkit.train.checkpoint.load_module`.

    ``device``: ``'auto'`` (CUDA when present), ``'cpu'``, ``'cuda:N'``. The precision
    and memory format the model was compiled with are restored from model.json, so it
    predicts what it predicted before saving; ``precision='fp32'|'bf16'|'fp16'|'auto'``
    overrides the saved precision. ``cnnkit.load`` (:func:`cnnkit.train.loading.load`)
    also imports saved Keras models.
    """
    device = resolve_device(device)
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}; received {precision!r}.")
    module, config = load_module(directory, device)
    model = module if isinstance(module, Workflow) else Model(module)
    runtime = config.get("runtime") if isinstance(config.get("runtime"), dict) else None
    restore_runtime(model, runtime, device)
    if precision is not None:
        model.precision = resolve_precision(precision, device)
        model.runtime_choices["precision"] = model.precision.name
    return model
