"""Workloads and timing for ``bench/run.py``: the decks' models trained by ``Model.fit``,
by a hand-written PyTorch loop and (optionally) by Keras 3 on the torch backend.

Every comparison runs in one process and alternates the contenders round by round
(the order rotates each round), so load from other processes hits all sides alike;
the figure is the median samples/s over rounds.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

import cnnkit
from cnnkit.layers.summary import summary
from cnnkit.models import create
from cnnkit.train.heads import emit_logits, trace_heads


@dataclass
class Workload:
    """One model: input shape, batch size, task (classes or a sigmoid mask)."""

    name: str
    shape: tuple[int, ...]
    batch: int
    kwargs: dict = field(default_factory=dict)
    classes: int = 10
    mask: bool = False  # binary segmentation (unet_small): BCE on a mask target

    def build(self) -> torch.nn.Module:
        torch.manual_seed(0)  # every contender starts from the same weights
        return create(self.name, **self.kwargs)

    @property
    def conv_rank(self) -> int:
        return len(self.shape) - 1  # 1D, 2D, 3D inputs (channels first)

    def data(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        x = torch.rand(n, *self.shape, generator=g)
        if self.mask:
            y = (torch.rand(n, 1, *self.shape[1:], generator=g) > 0.5).float()
        else:
            y = torch.randint(0, self.classes, (n,), generator=g)
        return x, y

    @property
    def loss_name(self) -> str:
        return "binary_crossentropy" if self.mask else "sparse_categorical_crossentropy"

    def macs(self) -> int:
        rows = summary(self.build(), input_shape=self.shape, print_fn=lambda *a: None)
        return int(rows.total_macs)


WORKLOADS = {
    w.name: w
    for w in [
        Workload("mnist_cnn", (1, 28, 28), 128),
        Workload("cifar_cnn", (3, 32, 32), 128),
        Workload("cifar_fcn", (3, 32, 32), 128),
        Workload("unet_small", (3, 128, 128), 8, mask=True),
        Workload("resnet18", (3, 64, 64), 32, kwargs={"num_classes": 10}),
        Workload("fcn1d", (1, 150), 64, classes=2),
        Workload("c3d_small", (3, 16, 64, 64), 8),
    ]
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(
    contenders: dict[str, Callable[[], int]], rounds: int, device: torch.device
) -> dict[str, float]:
    """Median samples/s of each contender; one warm-up call each, then ``rounds`` rounds."""
    names = list(contenders)
    for name in names:
        contenders[name]()
    synchronize(device)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            synchronize(device)
            t0 = time.perf_counter()
            samples = contenders[name]()
            synchronize(device)
            rates[name].append(samples / (time.perf_counter() - t0))
    return {n: statistics.median(v) for n, v in rates.items()}


# --------------------------------------------------------------------------- contenders


def memory_format(w: Workload, channels_last: bool) -> torch.memory_format | None:
    if not channels_last:
        return None
    return {2: torch.channels_last, 3: torch.channels_last_3d}.get(w.conv_rank)


def hand_written_trainer(
    w: Workload,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    amp: torch.dtype | None,
    channels_last: bool,
) -> Callable[[], int]:
    """The loop a PyTorch user writes: shuffle, slice, forward, loss on logits, Adam step.

    ``torch.optim.Adam(params, lr=1e-3)`` with PyTorch's defaults (on CPU the
    single-tensor kernel); autocast to ``amp`` when given; channels-last when asked.
    """
    model = w.build().to(device)
    fmt = memory_format(w, channels_last)
    if fmt is not None:
        model = model.to(memory_format=fmt)
    heads = trace_heads(model.eval(), x[:2].to(device))  # to return logits, as fit does
    model.train()
    stack = contextlib.ExitStack()
    stack.enter_context(emit_logits(heads))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = F.binary_cross_entropy_with_logits if w.mask else F.cross_entropy
    x, y = x.to(device), y.to(device)

    def epoch() -> int:
        order = torch.randperm(len(x), device=device)
        for start in range(0, len(x), w.batch):
            idx = order[start : start + w.batch]
            xb, yb = x[idx], y[idx]
            if fmt is not None:
                xb = xb.contiguous(memory_format=fmt)
            with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
                out = model(xb)
            loss = loss_fn(out.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return len(x)

    epoch.keep = stack  # type: ignore[attr-defined]  # keep the logits switch alive
    return epoch


def fit_trainer(
    w: Workload,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    precision: str,
    channels_last: bool | str,
) -> tuple[Callable[[], int], cnnkit.Model]:
    model = cnnkit.Model(w.build())
    model.compile(
        optimizer="adam",
        loss=w.loss_name,
        device=device,
        precision=precision,
        channels_last=channels_last,
    )
    x, y = x.to(device), y.to(device)

    def epoch() -> int:
        model.fit(x, y, batch_size=w.batch, epochs=1, verbose=0)
        return len(x)

    return epoch, model


def hand_written_inference(w: Workload, x: torch.Tensor, device: torch.device, batch: int):
    """fp32 eval-mode inference under ``torch.no_grad``, as a PyTorch user writes it."""
    model = w.build().to(device).eval()
    x = x.to(device)

    def run() -> int:
        with torch.no_grad():
            outs = [model(x[s : s + batch]).float().cpu() for s in range(0, len(x), batch)]
        torch.cat(outs).numpy()
        return len(x)

    return run


def predict_runner(model: cnnkit.Model, x: torch.Tensor, batch: int):
    def run() -> int:
        model.predict(x, batch_size=batch)
        return len(x)

    return run


# --------------------------------------------------------------------------- Keras 3


def keras_available() -> str | None:
    """Keras' version on the torch backend, or None (the column is skipped)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        return None
    if keras.backend.backend() != "torch":
        return None
    return keras.__version__


def keras_model(name: str):
    """The seeds' Keras models (seed 000's MNIST CNN, seed 004's CIFAR CNN), NHWC."""
    import keras
    from keras import layers

    if name == "mnist_cnn":
        stack = [
            keras.Input((28, 28, 1)),
            layers.Conv2D(64, 3, activation="relu"),
            layers.Conv2D(32, 3, activation="relu"),
            layers.Flatten(),
            layers.Dense(10, activation="softmax"),
        ]
    elif name == "cifar_cnn":
        stack = [
            keras.Input((32, 32, 3)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.Conv2D(128, 3, activation="relu"),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    else:
        return None
    keras.utils.set_random_seed(0)
    model = keras.Sequential(stack)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


def keras_trainer(w: Workload, x: torch.Tensor, y: torch.Tensor) -> Callable[[], int] | None:
    model = keras_model(w.name)
    if model is None:
        return None
    xk = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())  # Keras' channels-last images
    yk = y.numpy()

    def epoch() -> int:
        model.fit(xk, yk, batch_size=w.batch, epochs=1, verbose=0, shuffle=True)
        return len(xk)

    return epoch


# --------------------------------------------------------------------------- machine


def matmul_gflops(dtype: torch.dtype, device: torch.device, n: int, rounds: int) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    reps = 4

    def run() -> int:
        for _ in range(reps):
            a @ b
        return reps

    rate = alternate({"mm": run}, rounds, device)["mm"]  # matmuls per second
    return rate * 2 * n**3 / 1e9


def cpu_description() -> dict[str, str]:
    info = {"model": "unknown", "flags": ""}
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        return info
    for line in text.splitlines():
        if line.startswith("model name") and info["model"] == "unknown":
            info["model"] = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not info["flags"]:
            flags = set(line.split(":", 1)[1].split())
            wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
            info["flags"] = " ".join(f for f in wanted if f in flags) or "none of interest"
    info["cores"] = str(os.cpu_count())
    return info


# --------------------------------------------------------------------------- Mask R-CNN


def maskrcnn_contenders(n: int, batch: int, size: int = 64) -> dict[str, Callable[[], int]]:
    """``Model.fit`` (one epoch; ``precision='fp32'`` and ``'auto'``, ``channels_last``
    left at ``'auto'``) vs the hand-written loop it replaces: SGD (lr 0.02, momentum 0.9,
    weight decay 1e-4), sum of the five losses, gradient norm clipped at 10; the 'small'
    backbone on synthetic shapes."""
    from cnnkit.data.synthetic import shapes
    from cnnkit.train.optimizers import Named

    images, targets = shapes(n, size=size, task="instance", seed=0)
    images = list(images)

    def build():
        torch.manual_seed(0)
        return create("mask_rcnn", num_classes=3, backbone="small")

    hand_model = build().train()
    opt = torch.optim.SGD(hand_model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)

    def hand() -> int:
        order = torch.randperm(n)
        for s in range(0, n, batch):
            idx = order[s : s + batch].tolist()
            losses = hand_model([images[i] for i in idx], [targets[i] for i in idx])
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(hand_model.parameters(), 10.0)
            opt.step()
        return n

    def fit_with(precision: str) -> Callable[[], int]:
        model = cnnkit.Model(build())
        model.compile(
            optimizer=Named("sgd", momentum=0.9, weight_decay=1e-4), learning_rate=0.02,
            global_clipnorm=10.0, precision=precision,
        )  # fmt: skip

        def fit() -> int:
            model.fit(images, targets, epochs=1, batch_size=batch, verbose=0)
            return n

        return fit

    return {"hand fp32": hand, "fit fp32": fit_with("fp32"), "fit auto": fit_with("auto")}
