"""Full-length learning runs of the zoo (issues 5 and 6), numbers for REPRODUCTIONS.md.

    python bench/learning_zoo.py TASK [--seeds 0 1] [--threads 1] [--minutes M]

TASK is one of:

- ``mnist1d``: the MNIST-1D paper's CNN (three Conv1D 25 maps, kernel 5/3/3, stride 2,
  then Dense 10) built from cnnkit layers, on the 4,000 / 1,000 split, trained as the
  authors' ``train.py`` does (Adam 1e-2, batch 100, 8,000 steps = 200 epochs).
- ``isbi``: ``unet_small`` on the ISBI 2012 EM slices in ``$CNNKIT_DATA/isbi2012``:
  slices 0-24 train (random 128x128 crops with flips), 25-29 held out; pixel accuracy and
  foreground (membrane) IoU on the full 512x512 held-out slices.
- ``shapes``: ``unet_small`` on ``shapes(task='segmentation')`` (384 images of 64x64 RGB,
  3 epochs; foreground = any shape), pixel accuracy and foreground IoU on 128 new images.
- ``localizer``: seed 001's localizer (``'small'`` backbone: 16-32-64-128 maps, batch
  norm, 64x64 -> 4x4 maps, GAP, two dense heads) on ``localization_mnist`` (3,000 images,
  64x64 canvas, 28x28 digits), losses [sparse CE, MSE] with weights [0.8, 0.2], Adam 3e-3
  with cosine decay over 20 epochs, batch 32; accuracy and mean box IoU (torchvision
  ``box_iou``) on 1,000 new images, beside the IoU of always predicting the mean box.
- ``char_cnn``: ``char_cnn('small', length=128)`` (Adam 1e-4, dropout 0.5) on synthetic
  topic texts (1,200 train / 500 test, 5 epochs): which of four keywords recurs among
  random words.
- ``c3d``: ``c3d_small`` on ``moving_mnist`` clips (one 12x12 digit, 8 frames of 32x32;
  512 train / 256 test, 6 epochs), label = direction of motion, keeping clips whose first
  step is clearly along the labelled axis.
- ``googlenet``: GoogLeNet with auxiliary heads (losses weighted 0.3 by ``fit``) on
  ``shapes`` classification at 64x64 (a short sanity run).

Each run prints one line: task, seed, metrics, wall seconds, threads and load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

import cnnkit
from cnnkit.data import synthetic
from cnnkit.data.text import ZHANG_ALPHABET, alphabet_index, encode_text, one_hot
from cnnkit.layers import Conv1D, Dense, Flatten
from cnnkit.models import create

KEYWORDS = ("alpha", "bravo", "delta", "gamma")


def data_root() -> Path:
    env = os.environ.get("CNNKIT_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def compile_(model, loss, lr, **kw):
    return model.compile(
        optimizer="adam", loss=loss, learning_rate=lr, device="cpu", precision="fp32", **kw
    )


def foreground_iou(pred: np.ndarray, true: np.ndarray) -> float:
    pred, true = pred.astype(bool), true.astype(bool)
    return float((pred & true).sum() / max((pred | true).sum(), 1))


# ------------------------------------------------------------------------------ tasks


def mnist1d_cnn() -> cnnkit.Sequential:
    """The MNIST-1D paper's ConvBase: 25 maps, kernels 5/3/3, stride 2, padding 1."""
    return cnnkit.Sequential(
        [
            Conv1D(25, 5, strides=2, padding=1, activation="relu"),
            Conv1D(25, 3, strides=2, padding=1, activation="relu"),
            Conv1D(25, 3, strides=2, padding=1, activation="relu"),
            Flatten(),
            Dense(10),
        ],
        input_shape=(1, 40),
    )


def run_mnist1d(seed: int, minutes: float) -> dict:
    from cnnkit.data import mnist1d

    root = Path(os.environ.get("MNIST1D_CACHE", Path.home() / ".cache" / "cnnkit"))
    train, test = mnist1d("train", root=root), mnist1d("test", root=root)
    torch.manual_seed(seed)
    model = mnist1d_cnn()
    compile_(model, "sparse_categorical_crossentropy", 1e-2, metrics=["accuracy"])
    model.fit(train.x, train.y, batch_size=100, epochs=200, verbose=0)
    return {"test_accuracy": model.evaluate(test.x, test.y)["accuracy"], "n_train": len(train.x)}


def run_isbi(seed: int, minutes: float) -> dict:
    from cnnkit.data import isbi2012

    ds = isbi2012(data_root() / "isbi2012")
    x = ds.x.float() / 255.0
    y = ds.y.float()  # 1 = membrane
    x_tr, y_tr, x_te, y_te = x[:25], y[:25], x[25:], y[25:]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = cnnkit.Model(create("unet_small", in_channels=1, rescale=1.0))
    compile_(model, "binary_crossentropy", 1e-3)
    crop, batch, steps_per_round = 128, 8, 64
    start, rounds = time.perf_counter(), 0
    while time.perf_counter() - start < minutes * 60:
        idx = torch.randint(0, len(x_tr), (batch * steps_per_round,), generator=gen)
        r = torch.randint(0, 512 - crop + 1, (len(idx),), generator=gen)
        c = torch.randint(0, 512 - crop + 1, (len(idx),), generator=gen)
        xb = torch.stack([x_tr[i, :, a : a + crop, b : b + crop] for i, a, b in zip(idx, r, c)])
        yb = torch.stack([y_tr[i, None, a : a + crop, b : b + crop] for i, a, b in zip(idx, r, c)])
        flip = torch.rand(len(idx), generator=gen) < 0.5
        xb[flip], yb[flip] = xb[flip].flip(-1), yb[flip].flip(-1)
        model.fit(xb, yb, batch_size=batch, epochs=1, verbose=0)
        rounds += 1
    prob = model.predict(x_te, batch_size=1)[:, 0]
    pred, true = prob > 0.5, y_te.numpy() > 0.5
    return {
        "pixel_accuracy": float((pred == true).mean()),
        "membrane_iou": foreground_iou(pred, true),
        "cell_iou": foreground_iou(~pred, ~true),
        "train_crops": rounds * batch * steps_per_round,
    }


def run_shapes(seed: int, minutes: float) -> dict:
    x, y = synthetic.shapes(384, size=64, task="segmentation", seed=seed)
    xt, yt = synthetic.shapes(128, size=64, task="segmentation", seed=seed + 1000)
    torch.manual_seed(seed)
    model = cnnkit.Model(create("unet_small", in_channels=3, rescale=1.0))
    compile_(model, "binary_crossentropy", 1e-3)
    model.fit(x, (y > 0).float()[:, None], batch_size=8, epochs=3, verbose=0)
    pred = model.predict(xt)[:, 0] > 0.5
    true = (yt > 0).numpy()
    return {"pixel_accuracy": float((pred == true).mean()), "fg_iou": foreground_iou(pred, true)}


def run_localizer(seed: int, minutes: float) -> dict:
    canvas = 64
    x, labels, boxes = synthetic.localization_mnist(3000, canvas=canvas, seed=seed)
    xt, lt, bt = synthetic.localization_mnist(1000, canvas=canvas, seed=seed + 1000)
    torch.manual_seed(seed)
    net = create("localizer", backbone="small", num_classes=10, in_channels=1,
                 input_size=canvas, backbone_kwargs={"base_filters": 16, "batch_norm": True})  # fmt: skip
    model = cnnkit.Model(net)
    epochs = 20  # 10 give mean box IoU 0.65-0.67: the 0.8-weighted class loss drives the
    # shared features, so the box (0.94 when trained alone) improves slowly
    compile_(model, ["sparse_categorical_crossentropy", "mse"], 3e-3, loss_weights=[0.8, 0.2],
             lr_schedule=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs))  # fmt: skip
    model.fit(x, (labels, boxes / canvas), batch_size=32, epochs=epochs, verbose=0)
    probs, pred = model.predict(xt)
    iou = torchvision.ops.box_iou(torch.as_tensor(pred) * canvas, bt).diagonal()
    mean_box = boxes.mean(0, keepdim=True).expand(len(bt), 4)
    return {
        "mean_box_baseline_iou": float(torchvision.ops.box_iou(mean_box, bt).diagonal().mean()),
        "accuracy": float((probs.argmax(1) == lt.numpy()).mean()),
        "mean_box_iou": float(iou.mean()),
        "iou>=0.5": float((iou >= 0.5).float().mean()),
    }


def keyword_texts(n: int, length: int, rng: np.random.Generator):
    """Topic-like texts: random 3-7 letter words (from letters that are not in any keyword)
    among which the class's keyword recurs, each word being the keyword with probability
    0.3; label = the keyword. A char-CNN has no pooling over the whole text (its dense
    layers see position-specific features), so a single keyword at a random place needs
    far more data than a recurring one."""
    letters = np.array(list("cfijknqsuwxyz"))
    labels = rng.integers(0, len(KEYWORDS), n)
    index = alphabet_index(ZHANG_ALPHABET)
    x = torch.zeros(n, len(ZHANG_ALPHABET), length)
    for i, k in enumerate(labels):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < length:
            if rng.random() < 0.3:
                words.append(KEYWORDS[k])
            else:
                words.append("".join(letters[rng.integers(0, len(letters), rng.integers(3, 8))]))
        codes = encode_text(" ".join(words), index, length, backward=False)
        x[i] = one_hot(codes, len(ZHANG_ALPHABET), length)
    return x, torch.from_numpy(labels)


def run_char_cnn(seed: int, minutes: float) -> dict:
    rng = np.random.default_rng(seed)
    x, y = keyword_texts(1200, 128, rng)
    xt, yt = keyword_texts(500, 128, rng)
    torch.manual_seed(seed)
    model = cnnkit.Model(create("char_cnn", size="small", num_classes=4, length=128))
    compile_(model, "sparse_categorical_crossentropy", 1e-4, metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=5, verbose=0)
    return {"test_accuracy": model.evaluate(xt, yt)["accuracy"]}


def clear_direction_clips(n: int, seed: int):
    """moving_mnist direction clips whose first step is clearly along one axis."""
    x, y, b = synthetic.moving_mnist(3 * n, frames=8, size=32, num_digits=1, digit_size=12,
                                     label="direction", return_boxes=True, speed=(2.0, 4.0),
                                     seed=seed)  # fmt: skip
    step = b[:, 0, 1, :2] - b[:, 0, 0, :2]
    d = step.abs()
    axis = d.argmax(1)
    shown = torch.where(step.gather(1, axis[:, None])[:, 0] > 0, axis, axis + 2)
    clear = (d.max(1).values >= 2 * d.min(1).values + 1) & (shown == y)  # no bounce at once
    keep = torch.nonzero(clear).squeeze(1)[:n]
    return x[keep], y[keep]


def run_c3d(seed: int, minutes: float) -> dict:
    x, y = clear_direction_clips(512, seed)
    xt, yt = clear_direction_clips(256, seed + 1000)
    torch.manual_seed(seed)
    model = cnnkit.Model(create("c3d_small", num_classes=4, in_channels=1))
    compile_(model, "sparse_categorical_crossentropy", 3e-3, metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=6, verbose=0)
    return {"test_accuracy": model.evaluate(xt, yt)["accuracy"], "n_train": len(x)}


def run_googlenet(seed: int, minutes: float) -> dict:
    x, y = synthetic.shapes(512, size=64, seed=seed)
    xt, yt = synthetic.shapes(256, size=64, seed=seed + 1000)
    torch.manual_seed(seed)
    model = cnnkit.Model(create("googlenet", num_classes=3, aux_logits=True))
    compile_(model, "sparse_categorical_crossentropy", 1e-3, metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    return {
        "train_loss_with_aux": [round(v, 3) for v in history.history["loss"]],
        "test_accuracy": model.evaluate(xt, yt)["accuracy"],
    }


TASKS = {
    "mnist1d": run_mnist1d,
    "isbi": run_isbi,
    "shapes": run_shapes,
    "localizer": run_localizer,
    "char_cnn": run_char_cnn,
    "c3d": run_c3d,
    "googlenet": run_googlenet,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=8.0, help="time budget (isbi only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} thread(s)",
        flush=True,
    )
    for seed in args.seeds:
        start = time.perf_counter()
        result = TASKS[args.task](seed, args.minutes)
        seconds = time.perf_counter() - start
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
        print(f"{args.task} seed={seed} {shown} wall={seconds:.0f}s load=({load})", flush=True)


if __name__ == "__main__":
    main()
