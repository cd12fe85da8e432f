"""What differs between tasks in ``fit`` / ``evaluate`` / ``predict``, one object per kind.

``Workflow`` runs one loop for every model and asks its task at the few points where
they differ: turning the user's data into batches, the forward pass and its loss, the
per-epoch logs, evaluation and prediction. The task is chosen from :data:`TASKS` by the
wrapped module's declared ``task`` attribute, never guessed from its outputs:

- :class:`SupervisedHeads` (the default): ``model(x)`` returns one or more outputs, the
  losses and metrics of ``compile`` score them against ``y`` (Keras' convention).
- :class:`SelfLoss` (``task = 'instance_segmentation'``, cnnkit's Mask R-CNN): the model
  computes its own losses, torchvision's convention: in train mode ``model(images,
  targets)`` returns a dict of named losses, in eval mode ``model(images)`` one detection
  dict per image. ``compile`` takes no ``loss``; ``loss_weights`` is a dict by name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.losses import get_loss
from cnnkit.metrics import detection_map, get_metric
from cnnkit.train.data import InMemory, as_input_tensor, make_source
from cnnkit.train.heads import emit_logits, trace_heads
from cnnkit.train.runtime import activated

#: Keras loss names that are computed from logits
LOGIT_LOSSES = {
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "binary_crossentropy",
    "dice",
    "focal",
}


def flat_logs(logs: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{'loss': 1.0, 'bbox': {'map': 0.5}}`` -> ``{'loss': 1.0, 'bbox_map': 0.5}``:
    the numbers of (nested) logs, as History and CSV files hold them (tables by number,
    such as ``map_per_class``, are left out)."""
    out: dict[str, float] = {}
    for key, value in logs.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, Mapping):
            out.update(flat_logs(value, f"{prefix}{key}_"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[prefix + key] = float(value)
    return out


def _to_device(y: Any, device: torch.device) -> Any:
    if y is None:
        return None
    if isinstance(y, tuple):
        return tuple(t.to(device, non_blocking=True) for t in y)
    return y.to(device, non_blocking=True)


# ---------------------------------------------------------------------- supervised


class SupervisedHeads:
    """Losses and metrics from ``compile`` on the model's outputs (one per head)."""

    #: ``channels_last='auto'`` stores conv nets channels-last (inputs converted alike)
    channels_last_helps = True

    def compile(self, wf: Any, loss: Any, loss_weights: Any, metrics: Any) -> None:
        if loss is None:
            raise ConfigError(
                "compile() needs a loss, e.g. loss='sparse_categorical_crossentropy' (only a "
                "model that computes its own losses, such as mask_rcnn, takes none)."
            )
        losses = list(loss) if isinstance(loss, (list, tuple)) else [loss]
        if loss_weights is not None and (
            isinstance(loss_weights, Mapping) or len(loss_weights) != len(losses)
        ):
            raise ConfigError(
                f"loss_weights must be a list of {len(losses)} number(s), one per loss; "
                f"received {loss_weights!r}."
            )
        wf._loss_specs = losses
        wf._loss_fns = [get_loss(spec) for spec in losses]
        wf._loss_on_logits = [isinstance(s, str) and s in LOGIT_LOSSES for s in losses]
        wf._loss_weights = list(loss_weights) if loss_weights is not None else [1.0] * len(losses)
        wf._metric_specs = list(metrics or [])

    def source(self, x: Any, y: Any = None, what: str = "x", pin_memory: bool = False):
        return make_source(x, y, what=what, pin_memory=pin_memory)

    def predict_source(self, x: Any):
        return (
            make_source(x)
            if not isinstance(x, torch.Tensor)
            else InMemory(as_input_tensor(x), None)
        )

    def prepare(self, wf: Any, x_sample: torch.Tensor) -> tuple[int, ...]:
        """Trace the output heads, check one loss per head, build the metrics."""
        was_training = wf._net.training
        wf._net.eval()
        wf._heads = trace_heads(wf._net, x_sample[:2].to(wf.device))
        wf._net.train(was_training)
        if len(wf._heads) != len(wf._loss_fns):
            if len(wf._loss_fns) == 1 and len(wf._heads) > 1:
                raise ConfigError(
                    f"The model returns {len(wf._heads)} outputs but compile() got one loss; "
                    "pass one loss per output, e.g. loss=['sparse_categorical_crossentropy', 'mse']."
                )
            raise ConfigError(
                f"The model returns {len(wf._heads)} output(s) but compile() got "
                f"{len(wf._loss_fns)} losses."
            )
        wf._metrics = [get_metric(m) if isinstance(m, str) else m for m in wf._metric_specs]
        return tuple(int(d) for d in x_sample.shape[1:])

    def running(self, wf: Any):
        """The context of a pass over the data: switchable heads emit logits."""
        return emit_logits(wf._heads)

    def reset(self, wf: Any) -> None:
        for m in wf._metrics:
            m.reset()

    def running_state(self) -> dict[str, Any]:
        """What a mid-epoch checkpoint keeps of this epoch's sums (metrics: by Progress)."""
        return {}

    def restore_running_state(self, state: dict[str, Any], device: torch.device) -> None:
        """Put :meth:`running_state`'s sums back when resuming inside an epoch."""

    def batch_loss(self, wf: Any, module: nn.Module, xb: Any, yb: Any) -> tuple[torch.Tensor, int]:
        """Forward pass, the (weighted) loss and the metric updates of one batch."""
        xb = wf._to_input(xb)
        yb = _to_device(yb, wf.device)
        with wf.precision.autocast():
            out = wf._forward(module, xb)
        loss, acts = self.loss(wf, out, yb)
        target = yb[0] if isinstance(yb, tuple) else yb
        for m in wf._metrics:
            m.update(acts[0].detach(), target)
        return loss, len(xb)

    def split_aux(self, wf: Any, out: Any) -> tuple[Any, list[tuple[torch.Tensor, float]]]:
        """Auxiliary-output protocol: a module with a non-empty ``aux_loss_weights``
        (one float per auxiliary output, e.g. GoogLeNet's ``(0.3, 0.3)``) returns ``(main,
        aux_1, ..., aux_k)`` in training mode and ``main`` alone in eval mode. The
        auxiliary outputs are logits of the same task as ``main`` (a single output):
        ``loss`` adds ``w_i * loss(aux_i, y)``, metrics see ``main`` only."""
        weights = getattr(wf._net, "aux_loss_weights", ())
        if (
            not weights
            or not isinstance(out, (tuple, list))
            or len(out) != 1 + len(weights)
            or len(wf._heads) != 1
        ):
            return out, []
        return out[0], list(zip(out[1:], weights))

    def loss(self, wf: Any, out: Any, y: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out, aux = self.split_aux(wf, out)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        ys = y if isinstance(y, tuple) else (y,)
        if len(ys) != len(outs):
            raise ShapeError(
                f"The model returns {len(outs)} output(s) but {len(ys)} target(s) were given."
            )
        total = None
        acts = []
        for head, o, t, fn, on_logits, w in zip(
            wf._heads, outs, ys, wf._loss_fns, wf._loss_on_logits, wf._loss_weights
        ):
            logits = head.logits(o)
            act = head.activate(logits)  # fp32 (also renormalises a non-switchable softmax)
            value = fn(logits if on_logits else act, t)
            total = value * w if total is None else total + value * w
            acts.append(act)
        for a, w in aux:  # e.g. GoogLeNet: CE(logits) + 0.3 * (CE(aux2) + CE(aux1))
            logits = a.float()
            value = wf._loss_fns[0](
                logits if wf._loss_on_logits[0] else wf._heads[0].activate(logits), ys[0]
            )
            total = total + value * w
        return total, acts

    def logs(self, wf: Any) -> dict[str, float]:
        """The epoch's metrics (summed over the ranks of a distributed run)."""
        wf._dist.sync_metrics(wf._metrics)
        out = {}
        for m in wf._metrics:
            value = m.compute()
            if isinstance(value, torch.Tensor):
                value = value.item() if value.numel() == 1 else value
            if isinstance(value, float | int):
                out[m.name] = float(value)
        return out

    def evaluate(self, wf: Any, src: Any, batch_size: int) -> dict[str, Any]:
        wf._net.eval()
        self.reset(wf)
        total, seen = torch.zeros((), device=wf.device), 0
        with self.running(wf):
            for xb, yb in src.batches(batch_size, False):
                loss, n = self.batch_loss(wf, wf._eval_module, xb, yb)
                total += loss * n
                seen += n
        return {"loss": wf._dist.mean(total, seen), **self.logs(wf)}

    def predict(self, wf: Any, src: Any, batch_size: int, device: torch.device, precision: Any):
        """Probabilities for softmax/sigmoid heads (in fp32 from the logits), raw outputs
        otherwise, as float32 NumPy arrays."""
        first = next(iter(src.batches(2, False)))[0]
        heads = wf.output_heads(first)
        wf._net.eval()
        chunks: list = []
        with emit_logits(heads):
            for xb, _ in src.batches(batch_size, False):
                with precision.autocast():
                    out = wf._forward(wf._net, wf._to_input(xb, device))
                outs = out if isinstance(out, (tuple, list)) else (out,)
                chunks.append([activated(h, o).cpu() for h, o in zip(heads, outs)])
        merged = [torch.cat([c[i] for c in chunks]).numpy() for i in range(len(chunks[0]))]
        return merged[0] if len(merged) == 1 else merged


# ---------------------------------------------------------------------- self-loss


class Items(Sequence):
    """A list that ``InMemory`` (and a distributed shard of it) can slice like a tensor:
    an int gives one item, a slice or an index tensor/list an ``Items``."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return Items(self.items[key])
        if isinstance(key, torch.Tensor | np.ndarray | list | tuple):
            return Items([self.items[int(i)] for i in np.asarray(key).reshape(-1)])
        return self.items[key]

    def __repr__(self) -> str:
        return f"Items({len(self.items)})"


def _image(x: Any, i: int) -> torch.Tensor:
    t = as_input_tensor(x, f"image {i}")
    if t.dim() != 3:
        raise ShapeError(
            f"images must be Tensor[C, H, W] each (or one Tensor[N, C, H, W]); image {i} has "
            f"shape {tuple(t.shape)}."
        )
    return t


def _target(t: Any, i: int) -> dict:
    if not isinstance(t, Mapping) or "boxes" not in t or "labels" not in t:
        got = sorted(t) if isinstance(t, Mapping) else type(t).__name__
        raise ConfigError(
            f"targets must be one dict per image with 'boxes', 'labels' (and 'masks'), as "
            f"cnnkit.data.synthetic.shapes(task='instance') gives; target {i} is {got}."
        )
    return dict(t)


class _InstanceLoader:
    """A Dataset of ``(image, target)`` pairs (``coco_instances``, ``via_instances``),
    batched as lists in the order ``InMemory`` draws."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def batches(self, batch_size: int, shuffle: bool, generator=None) -> Iterator[tuple]:
        n = len(self)
        order = torch.randperm(n, generator=generator).tolist() if shuffle else range(n)
        order = list(order)
        for start in range(0, n, batch_size):
            pairs = [self.dataset[i] for i in order[start : start + batch_size]]
            yield Items([p[0] for p in pairs]), Items([p[1] for p in pairs])

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def split(self, fraction: float):
        raise ConfigError(
            "validation_split needs images and targets in memory; with a Dataset pass "
            "validation_data=... instead."
        )


@contextlib.contextmanager
def _loss_mode(net: nn.Module) -> Iterator[None]:
    """Train mode (the model returns its losses) with batch-norm statistics and dropout
    as in eval mode: scoring data leaves the model unchanged."""
    was = net.training
    net.train()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.modules.dropout._DropoutNd):
            m.eval()
    try:
        yield
    finally:
        net.train(was)


class SelfLoss:
    """Models that compute their own losses (torchvision's detection convention)."""

    #: what ``evaluate`` scores the detections with (``detection_map`` iou types)
    iou_types = ("bbox", "segm")
    #: the deck's binarisation of the predicted mask probabilities
    mask_threshold: float | None = 0.5
    #: the model batches the images itself (contiguous), so channels-last weights only add
    #: conversions: Mask R-CNN 'small' fit 0.95x vs 1.03x of the hand-written loop (CPU)
    channels_last_helps = False

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._seen = 0

    def compile(self, wf: Any, loss: Any, loss_weights: Any, metrics: Any) -> None:
        name = type(wf._net).__name__
        if loss is not None:
            raise ConfigError(
                f"{name} computes its own losses (model(images, targets) returns them); "
                f"compile it without loss (received loss={loss!r})."
            )
        if metrics:
            raise ConfigError(
                f"{name} is scored by evaluate() with COCO mAP (bbox and segm); compile it "
                f"without metrics (received metrics={metrics!r})."
            )
        if loss_weights is not None and not (
            isinstance(loss_weights, Mapping)
            and all(
                isinstance(w, int | float) and not isinstance(w, bool)
                for w in loss_weights.values()
            )
        ):
            raise ConfigError(
                f"loss_weights of {name} is a dict of numbers by loss name, e.g. "
                f"{{'loss_mask': 2.0}}; received {loss_weights!r}."
            )
        wf._loss_specs, wf._loss_fns, wf._loss_on_logits, wf._metric_specs = [], [], [], []
        wf._loss_weights = dict(loss_weights or {})

    def source(self, x: Any, y: Any = None, what: str = "x", pin_memory: bool = False):
        if isinstance(x, DataLoader):
            x = x.dataset
        if isinstance(x, Dataset):
            if y is not None:
                raise ConfigError("y must be None when x is a Dataset (it yields the targets).")
            return _InstanceLoader(x)
        if y is None and isinstance(x, (tuple, list)) and len(x) == 2:
            x, y = x  # validation_data=(images, targets)
        if x is None or y is None:
            raise ConfigError(
                f"{what}: give images (Tensor[N, C, H, W] or a list of Tensor[C, H, W]) and "
                "targets (one dict per image)."
            )
        images = [_image(im, i) for i, im in enumerate(x)]
        targets = [_target(t, i) for i, t in enumerate(y)]
        if len(images) != len(targets):
            raise ShapeError(f"{len(images)} images but {len(targets)} targets; give one each.")
        if not images:
            raise ConfigError(f"{what} is empty (0 images); pass at least one.")
        return InMemory(Items(images), Items(targets))

    def predict_source(self, x: Any):
        if isinstance(x, Dataset | DataLoader):
            return self.source(x)
        images = Items([_image(im, i) for i, im in enumerate(x)])
        if not len(images):
            raise ConfigError("predict() got no images; pass at least one.")
        return InMemory(images, None)

    def prepare(self, wf: Any, x_sample: Sequence[torch.Tensor]) -> tuple[int, ...]:
        wf._heads, wf._metrics = [], []
        return tuple(int(d) for d in x_sample[0].shape)

    def running(self, wf: Any):
        return contextlib.nullcontext()

    def reset(self, wf: Any) -> None:
        self._sums, self._seen = {}, 0

    def running_state(self) -> dict[str, Any]:
        """This epoch's sums of the named losses (float64 holds float32 sums exactly)."""
        sums = {k: v.detach().to("cpu", torch.float64) for k, v in self._sums.items()}
        return {"seen": self._seen, "sums": sums}

    def restore_running_state(self, state: dict[str, Any], device: torch.device) -> None:
        self._seen = int(state.get("seen", 0))
        self._sums = {k: v.to(device, torch.float32) for k, v in (state.get("sums") or {}).items()}

    def _inputs(self, wf: Any, xb: Any, yb: Any, device: torch.device | None = None):
        device = wf.device if device is None else device
        images = [wf._to_input(im, device) for im in xb]
        if yb is None:
            return images, None
        targets = [
            {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
             for k, v in t.items()}
            for t in yb
        ]  # fmt: skip
        return images, targets

    def batch_loss(self, wf: Any, module: nn.Module, xb: Any, yb: Any) -> tuple[torch.Tensor, int]:
        """The weighted sum of the model's named losses; each is kept for the epoch logs."""
        images, targets = self._inputs(wf, xb, yb)
        with wf.precision.autocast():
            losses = module(images, targets)
        if not isinstance(losses, Mapping) or not losses:
            raise ConfigError(
                f"{type(wf._net).__name__} in train mode returned {type(losses).__name__}; a "
                "model compiled without loss must return a dict of named losses from "
                "model(images, targets)."
            )
        unknown = set(wf._loss_weights) - set(losses)
        if unknown:
            raise ConfigError(
                f"loss_weights names {sorted(unknown)}, which the model does not return; "
                f"its losses are {sorted(losses)}."
            )
        n = len(images)
        total = None
        for k, v in losses.items():
            v = v.float()
            w = wf._loss_weights.get(k, 1.0)
            total = v * w if total is None else total + v * w
            part = v.detach() * n
            self._sums[k] = part if k not in self._sums else self._sums[k] + part
        self._seen += n
        return total, n

    def logs(self, wf: Any) -> dict[str, float]:
        return {k: wf._dist.mean(v, self._seen) for k, v in self._sums.items()}

    def detections(self, wf: Any, module: nn.Module, xb: Any, device, precision) -> list[dict]:
        """Eval-mode detections of one batch on the CPU, in fp32 (masks as probabilities)."""
        images, _ = self._inputs(wf, xb, None, device)
        module.eval()
        with precision.autocast():
            dets = module(images)
        return [
            {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in d.items()}
            for d in dets
        ]

    def binarize(self, det: dict) -> dict:
        """``masks`` ``[D, 1, H, W]`` probabilities -> ``[D, H, W]`` bool at 0.5 (kept as
        probabilities with ``mask_threshold = None``)."""
        if self.mask_threshold is not None and "masks" in det and det["masks"].dim() == 4:
            det = dict(det, masks=det["masks"][:, 0] > self.mask_threshold)
        return det

    def evaluate(self, wf: Any, src: Any, batch_size: int) -> dict[str, Any]:
        """``{'loss': ..., 'bbox': detection_map(...), 'segm': ...}``: the losses with the
        model in train mode (batch-norm statistics frozen), detections in eval mode."""
        net = wf._eval_module
        self.reset(wf)
        total, seen = torch.zeros((), device=wf.device), 0
        preds, truth = [], []
        for xb, yb in src.batches(batch_size, False):
            with _loss_mode(net):
                loss, n = self.batch_loss(wf, net, xb, yb)
            total += loss * n
            seen += n
            preds += [
                self.binarize(d) for d in self.detections(wf, net, xb, wf.device, wf.precision)
            ]
            truth += [{k: v for k, v in t.items()} for t in yb]
        if wf._dist.enabled:  # every rank scores all images
            gathered: list = [None] * wf._dist.world_size
            torch_dist.all_gather_object(gathered, (preds, truth))
            preds = [p for part in gathered for p in part[0]]
            truth = [t for part in gathered for t in part[1]]
        out: dict[str, Any] = {"loss": wf._dist.mean(total, seen)}
        for iou_type in self.iou_types:
            out[iou_type] = detection_map(preds, truth, iou_type=iou_type)
        return out

    def predict(self, wf: Any, src: Any, batch_size: int, device: torch.device, precision: Any):
        """One dict per image: ``boxes``, ``labels``, ``scores`` and ``masks`` (``Tensor[D,
        H, W]`` bool, the probabilities binarised at 0.5)."""
        out: list[dict] = []
        for xb, _ in src.batches(batch_size, False):
            out += [self.binarize(d) for d in self.detections(wf, wf._net, xb, device, precision)]
        return out


#: the task of a module, by its declared ``task`` attribute (default: supervised heads)
TASKS: dict[str | None, type] = {"instance_segmentation": SelfLoss}


def task_for(module: nn.Module) -> SupervisedHeads | SelfLoss:
    """A fresh task object for ``module`` (from :data:`TASKS`)."""
    return TASKS.get(getattr(module, "task", None), SupervisedHeads)()
