"""``cnnkit.Model``: Keras' compile / fit / evaluate / predict on any ``nn.Module``.

    model = cnnkit.Model(create("mnist_cnn"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=128, epochs=3, validation_split=0.3)
    model.evaluate(x_test, y_test)   # {'loss': ..., 'accuracy': ...}

The loop adds nothing measurable to a hand-written one: in-memory data is sliced,
running sums stay on the device, the progress bar reads them only when it redraws.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit._core.errors import CnnkitError, ConfigError, ShapeError
from cnnkit.losses import get_loss
from cnnkit.metrics import get_metric
from cnnkit.train.callbacks import CallbackList
from cnnkit.train.checkpoint import resume_training
from cnnkit.train.data import InMemory, Loader, as_input_tensor, make_source
from cnnkit.train.distributed import SINGLE, DistContext, build_step_modules, setup_distributed
from cnnkit.train.fastpath import configure as configure_fast_path
from cnnkit.train.fastpath import enabled_by_env, make_adam, optimizer_description
from cnnkit.train.heads import OutputHead, emit_logits, trace_heads
from cnnkit.train.precision import Precision, resolve_device, resolve_precision
from cnnkit.train.progress import ProgressBar
from cnnkit.train.run_state import Progress, epoch_batches, sync_newest_checkpoint
from cnnkit.train.schedules import step_scheduler
from cnnkit.train.signals import catches_stop_signals, preempt

log = logging.getLogger("cnnkit.train")

#: Keras loss names that are computed from logits
LOGIT_LOSSES = {
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "binary_crossentropy",
    "dice",
    "focal",
}


class History:
    """Keras' History: ``history`` maps ``loss``, ``val_loss`` and metrics to per-epoch lists."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def _make_optimizer(
    spec: Any, params, lr: float | None, fused: bool = True
) -> torch.optim.Optimizer:
    if isinstance(spec, torch.optim.Optimizer):
        return spec
    if callable(spec) and not isinstance(spec, str):
        return spec(params)
    name = str(spec).lower()
    params = list(params)
    if name in ("adam", "adamw"):  # fast path: fused=True where supported, else foreach
        return make_adam(params, lr or 1e-3, weight_decay_decoupled=name == "adamw", fused=fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr or 0.01, momentum=0.0, foreach=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr or 1e-3, foreach=True)
    raise ConfigError(
        f"Unknown optimizer {spec!r}; expected 'adam', 'adamw', 'sgd', 'rmsprop', a "
        "torch.optim.Optimizer or a callable params -> optimizer."
    )


class Workflow:
    """Keras' workflow methods, mixed into :class:`Model` and ``cnnkit.Sequential``.

    ``_net`` is the module that is trained; non-child module references are kept in
    ``__dict__`` so they are not registered as submodules.
    """

    _compiled = False
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

    def save(self, directory, overwrite: bool = False):
        """Write safetensors + JSON into ``directory``; see :func:`cnnkit.load`."""
        from cnnkit.train.checkpoint import save_model

        return save_model(self._net, directory, overwrite=overwrite)

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
        loss_weights: Sequence[float] | None = None,
        lr_schedule: Any = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        jit_compile: bool = False,
        learning_rate: float | None = None,
        sync_batchnorm: bool = False,
        channels_last: bool | str = "auto",
        fast_path: bool = True,
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
        """
        if loss is None:
            raise ConfigError(
                "compile() needs a loss, e.g. loss='sparse_categorical_crossentropy'."
            )
        losses = list(loss) if isinstance(loss, (list, tuple)) else [loss]
        if loss_weights is not None and len(loss_weights) != len(losses):
            raise ConfigError(
                f"loss_weights has {len(loss_weights)} entries but there are {len(losses)} losses."
            )
        self._loss_specs = losses
        self._loss_fns = [get_loss(spec) for spec in losses]
        self._loss_on_logits = [isinstance(s, str) and s in LOGIT_LOSSES for s in losses]
        self._loss_weights = list(loss_weights) if loss_weights is not None else [1.0] * len(losses)
        self._metric_specs = list(metrics or [])
        self._dist = setup_distributed(resolve_device(device))  # torchrun: process group
        self.device = self._dist.device
        self._sync_batchnorm = sync_batchnorm
        self.precision: Precision = resolve_precision(precision, self.device)
        self._net.to(self.device)
        self._optimizer_spec = optimizer
        self._lr = learning_rate
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
        self.runtime_choices: dict[str, Any] = {
            "device": str(self.device),
            "precision": self.precision.name,
            "memory_format": "undecided (first fit/evaluate)",
            "fast_path": fast.as_dict() if fast is not None else {"enabled": False},
            "optimizer": None,
            "jit_compile": bool(jit_compile),
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
        if self._channels_last == "auto" and not helps:
            return None
        return {4: torch.channels_last, 5: torch.channels_last_3d}.get(ranks.pop())

    def _to_input(self, xb: torch.Tensor) -> torch.Tensor:
        fmt = self._memory_format
        if fmt is not None and xb.dim() == (4 if fmt is torch.channels_last else 5):
            return xb.to(self.device, memory_format=fmt, non_blocking=True)
        return xb.to(self.device, non_blocking=True)

    def _require_compiled(self) -> None:
        if not self._compiled:
            raise ConfigError("Call model.compile(optimizer=..., loss=...) before fit/evaluate.")

    def _prepare(self, x_sample: torch.Tensor) -> None:
        """Build lazy layers, find output heads, create the optimizer (once)."""
        if self._heads is None:
            was_training = self._net.training
            self._net.eval()
            self._heads = trace_heads(self._net, x_sample[:2].to(self.device))
            self._net.train(was_training)
            if len(self._heads) != len(self._loss_fns):
                if len(self._loss_fns) == 1 and len(self._heads) > 1:
                    raise ConfigError(
                        f"The model returns {len(self._heads)} outputs but compile() got one loss; "
                        "pass one loss per output, e.g. loss=['sparse_categorical_crossentropy', 'mse']."
                    )
                raise ConfigError(
                    f"The model returns {len(self._heads)} output(s) but compile() got "
                    f"{len(self._loss_fns)} losses."
                )
            self._metrics = [get_metric(m) if isinstance(m, str) else m for m in self._metric_specs]
            self._memory_format = self._choose_memory_format()
            if self._memory_format is not None:
                self._net.to(memory_format=self._memory_format)
                log.info("channels-last memory format: %s", self._memory_format)
            # torchrun: DistributedDataParallel (lazy layers are built, no optimizer yet)
            step, ev = build_step_modules(self._net, self._dist, self._jit, self._sync_batchnorm)
            self.__dict__["_step_module_ref"], self.__dict__["_eval_module_ref"] = step, ev
        if self.optimizer is None:
            self.optimizer = _make_optimizer(
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

    def _split_aux(self, out: Any) -> tuple[Any, list[tuple[torch.Tensor, float]]]:
        """Auxiliary-output protocol: a module with a non-empty ``aux_loss_weights``
        (one float per auxiliary output, e.g. GoogLeNet's ``(0.3, 0.3)``) returns ``(main,
        aux_1, ..., aux_k)`` in training mode and ``main`` alone in eval mode. The
        auxiliary outputs are logits of the same task as ``main`` (a single output):
        ``_loss`` adds ``w_i * loss(aux_i, y)``, metrics see ``main`` only."""
        weights = getattr(self._net, "aux_loss_weights", ())
        if (
            not weights
            or not isinstance(out, (tuple, list))
            or len(out) != 1 + len(weights)
            or len(self._heads) != 1
        ):
            return out, []
        return out[0], list(zip(out[1:], weights))

    def _loss(self, out: Any, y: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out, aux = self._split_aux(out)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        ys = y if isinstance(y, tuple) else (y,)
        if len(ys) != len(outs):
            raise ShapeError(
                f"The model returns {len(outs)} output(s) but {len(ys)} target(s) were given."
            )
        total = None
        activated = []
        for head, o, t, fn, on_logits, w in zip(
            self._heads, outs, ys, self._loss_fns, self._loss_on_logits, self._loss_weights
        ):
            logits = o.float() if head.switchable else head.to_logits(o)
            act = head.activate(logits) if head.switchable else o.float()
            value = fn(logits if on_logits else act, t)
            total = value * w if total is None else total + value * w
            activated.append(act)
        for a, w in aux:  # e.g. GoogLeNet: CE(logits) + 0.3 * (CE(aux2) + CE(aux1))
            logits = a.float()
            value = self._loss_fns[0](
                logits if self._loss_on_logits[0] else self._heads[0].activate(logits), ys[0]
            )
            total = total + value * w
        return total, activated

    def _update_metrics(self, activated: list[torch.Tensor], y: Any) -> None:
        target = y[0] if isinstance(y, tuple) else y
        for m in self._metrics:
            m.update(activated[0].detach(), target)

    def _metric_logs(self, prefix: str = "") -> dict[str, float]:
        self._dist.sync_metrics(self._metrics)
        logs = {}
        for m in self._metrics:
            value = m.compute()
            if isinstance(value, torch.Tensor):
                value = value.item() if value.numel() == 1 else value
            if isinstance(value, float | int):
                logs[prefix + m.name] = float(value)
        return logs

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
    ) -> History:
        """Train for ``epochs`` epochs; returns a :class:`History`.

        Shuffling uses a generator seeded from the global torch RNG at the start of
        ``fit`` plus the epoch number, so every process of a distributed run (seeded
        alike) draws the same order, and a resumed run the same as an uninterrupted one.

        ``callbacks`` are ``cnnkit.callbacks`` (or any object with Keras' hooks);
        ``resume_from=dirpath`` continues from ``ModelCheckpoint(dirpath)``'s last
        checkpoint (weights, optimizer, schedule, history, shuffle seed, RNG states).
        """
        self._require_compiled()
        if not 0.0 <= validation_split < 1.0:
            raise ConfigError(f"validation_split must be in [0, 1); received {validation_split}.")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive; received {batch_size}.")
        pin = self.device.type == "cuda"  # Datasets: pinned batches overlap the copy
        train = make_source(x, y, pin_memory=pin)
        val = None
        if validation_split > 0:
            train, val = train.split(validation_split)
        if validation_data is not None:
            val = make_source(validation_data, what="validation_data", pin_memory=pin)
        first_x = next(iter(train.batches(2, False)))[0]
        self._prepare(first_x)
        train = self._dist.shard(train)  # torchrun: this rank's share of every epoch
        history = History()
        self.history = history  # ModelCheckpoint saves it as it grows
        callbacks = CallbackList(callbacks, model=self)
        module = self._step_module
        self.stop_training = False
        self._shuffle_seed = int(torch.randint(0, 2**62, (1,)).item())
        self._resume_from = resume_from
        log.info("fit: %s", _describe_choices(getattr(self, "runtime_choices", {})))
        callbacks.on_train_begin()
        if resume_from is not None:  # weights, optimizer, schedule, history, seed, RNG
            sync_newest_checkpoint(self._dist, resume_from)  # multi-node: the newest copy
            resumed = resume_training(self, resume_from, history)  # None: nothing saved yet
            initial_epoch = initial_epoch if resumed is None else resumed
        resume_at = self.__dict__.pop("_resume_position", None) or {}  # a mid-epoch position
        progress = self._progress = Progress(resume_at.get("global_step", 0), initial_epoch)
        stop = self.__dict__["_stop_signals"]  # SIGTERM/SIGINT: stop after the step
        stop.ctx = self._dist
        for epoch in range(initial_epoch, epochs):
            callbacks.on_epoch_begin(epoch)
            order_gen = torch.Generator().manual_seed(self._shuffle_seed + epoch)
            self._net.train()
            for m in self._metrics:
                m.reset()
            total_loss = torch.zeros((), device=self.device)
            skip, seen = progress.begin_epoch(epoch, self._metrics, total_loss, resume_at)
            shown = verbose if self._dist.is_main else 0  # torchrun: rank 0 only
            bar = ProgressBar(train.num_batches(batch_size), epoch + 1, epochs, shown)
            with emit_logits(self._heads):
                for step, (xb, yb) in enumerate(
                    epoch_batches(train, batch_size, shuffle, order_gen, skip, progress),
                    start=skip + 1,
                ):
                    xb = self._to_input(xb)
                    yb = _to_device(yb, self.device)
                    with self.precision.autocast():
                        out = module(xb)
                    loss, activated = self._loss(out, yb)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    n = len(xb)
                    total_loss += loss.detach() * n
                    seen += n
                    self._update_metrics(activated, yb)
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
            logs = {"loss": train_loss, **self._metric_logs()}
            if val is not None:
                val_logs = self.evaluate(_source=val, batch_size=batch_size, verbose=0)
                logs.update({"val_" + k: v for k, v in val_logs.items()})
            if self.scheduler is not None:
                step_scheduler(self.scheduler, logs)  # plateau schedules read logs
            bar.finish(logs)
            history.append(epoch, logs)
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
        """Loss and metrics on data: ``{'loss': ..., 'accuracy': ...}``."""
        self._require_compiled()
        src = (
            _source
            if _source is not None
            else make_source(x, y, pin_memory=self.device.type == "cuda")
        )
        if self._heads is None:
            self._prepare(next(iter(src.batches(2, False)))[0])
        src = self._dist.shard(src, pad=False)  # torchrun: each sample on one rank
        self._net.eval()
        for m in self._metrics:
            m.reset()
        total, seen = torch.zeros((), device=self.device), 0
        with emit_logits(self._heads):
            for xb, yb in src.batches(batch_size, False):
                xb = self._to_input(xb)
                yb = _to_device(yb, self.device)
                with self.precision.autocast():
                    out = self._eval_module(xb)
                loss, activated = self._loss(out, yb)
                total += loss * len(xb)
                seen += len(xb)
                self._update_metrics(activated, yb)
        logs = {"loss": self._dist.mean(total, seen), **self._metric_logs()}
        if verbose and self._dist.is_main:
            log.info(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        return logs

    @torch.no_grad()
    def predict(
        self, x: Any, batch_size: int = 32, verbose: int = 0
    ) -> np.ndarray | list[np.ndarray]:
        """The model's outputs (probabilities for softmax/sigmoid models) as NumPy arrays."""
        device = getattr(self, "device", None) or next(self._net.parameters()).device
        precision = getattr(self, "precision", None) or resolve_precision("fp32", device)
        self._net.eval()
        src = (
            make_source(x)
            if not isinstance(x, torch.Tensor)
            else InMemory(as_input_tensor(x), None)
        )
        chunks: list = []
        for xb, _ in src.batches(batch_size, False):
            with precision.autocast():
                out = self._net(xb.to(device))
            outs = out if isinstance(out, (tuple, list)) else (out,)
            chunks.append([o.float().cpu() for o in outs])
        merged = [torch.cat([c[i] for c in chunks]).numpy() for i in range(len(chunks[0]))]
        return merged[0] if len(merged) == 1 else merged


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


def _describe_choices(choices: dict[str, Any]) -> str:
    """``precision fp32, memory format contiguous, fast path on (...), optimizer ...``."""
    fast = choices.get("fast_path", {})
    fast_text = (
        f"on (allocator: {fast.get('allocator')}, flush denormal: {fast.get('flush_denormal')})"
        if fast.get("enabled")
        else "off"
    )
    return (
        f"device {choices.get('device')}, precision {choices.get('precision')}, memory format "
        f"{choices.get('memory_format')}, fast path {fast_text}, optimizer "
        f"{choices.get('optimizer')}, jit_compile {choices.get('jit_compile')}"
    )


def _to_device(y: Any, device: torch.device) -> Any:
    if y is None:
        return None
    if isinstance(y, tuple):
        return tuple(t.to(device, non_blocking=True) for t in y)
    return y.to(device, non_blocking=True)
