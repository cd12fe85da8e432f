"""Seeded synthetic task data: shapes, localised digits, moving digits, 1D signals.

Small, reproducible stand-ins for the course's tasks when no public data is at hand:

- :func:`shapes`: circles, squares and triangles on noisy backgrounds, for classification,
  semantic segmentation, detection and instance segmentation (targets in the format of the
  readers' ``coco_instances``: ``{'boxes': Tensor[K, 4], 'labels': Tensor[K],
  'masks': Tensor[K, H, W]}``).
- :func:`localization_mnist`: one digit pasted into a larger canvas, with its class and box
  (seed 001's classification + localisation task).
- :func:`moving_mnist`: clips of digits bouncing inside the frame (Srivastava et al. 2015,
  "Unsupervised Learning of Video Representations using LSTMs"), shaped (N, 1, T, H, W) for
  3D convolutions.
- :func:`signals`: sine / square / sawtooth / triangle / chirp series for 1D CNNs.

Every generator draws from ``numpy.random.default_rng(seed)`` only (never the global torch
or NumPy state), so the same arguments give bit-identical tensors. Drawing is vectorised
over images (NumPy broadcasting and fancy indexing); the only Python loops run over object
slots and rejection retries.

Boxes are ``(x1, y1, x2, y2)`` floats in pixel-edge coordinates, the convention of
torchvision's box transforms: an object covering columns ``a..b`` (inclusive) has
``x1 = a`` and ``x2 = b + 1``, so ``x2 - x1`` is its width in pixels.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cnnkit._core.errors import ConfigError, ShapeError, check_choice
from cnnkit.data.transforms import masks_to_boxes

__all__ = [
    "SHAPE_NAMES",
    "SIGNAL_NAMES",
    "SyntheticDataset",
    "localization_mnist",
    "moving_mnist",
    "shapes",
    "signals",
]

SHAPE_NAMES = ("circle", "square", "triangle")
"""Shape classes: index ``i`` is label ``i`` for classification, ``i + 1`` in masks/boxes."""

SIGNAL_NAMES = ("sine", "square", "sawtooth", "triangle", "chirp")
"""1D signal classes of :func:`signals`, in label order."""

_TASKS = ("classification", "segmentation", "detection", "instance")
_CHUNK = 512  # images drawn at once; fixed so results never depend on memory


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; received {value!r}.")
    return int(value)


def _non_negative(name: str, value: object) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number >= 0; received {value!r}.") from None
    if not np.isfinite(v) or v < 0:
        raise ConfigError(f"{name} must be a finite number >= 0; received {value!r}.")
    return v


# --------------------------------------------------------------------------- shapes


def _draw(cls: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, size: int) -> np.ndarray:
    """Boolean masks (M, size, size) of shapes ``cls`` (0..2) centred at (cx, cy), half-extent r.

    A pixel belongs to a shape when its centre (i + 0.5) lies inside: a disc of radius r, an
    axis-aligned square of side 2r, or an upright isosceles triangle with apex (cx, cy - r) and
    base from (cx - r, cy + r) to (cx + r, cy + r).
    """
    c = (np.arange(size, dtype=np.float32) + 0.5)[None]
    dx = c[:, None, :] - cx[:, None, None]  # (M, 1, W)
    dy = c[:, :, None] - cy[:, None, None]  # (M, H, 1)
    r = r[:, None, None]
    kind = cls[:, None, None]
    circle = dx * dx + dy * dy <= r * r
    square = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    triangle = (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    return np.where(kind == 0, circle, np.where(kind == 1, square, triangle))


def _shapes_chunk(rng, n, size, counts, channels, noise, extent):
    """One chunk of images: (images float32 (n,C,S,S), instance (n,K,S,S) bool, labels (n,K))."""
    k_max = int(counts.max())
    inst = np.zeros((n, k_max, size, size), dtype=bool)
    labels = np.zeros((n, k_max), dtype=np.int64)  # 0 = no object in this slot
    occupied = np.zeros((n, size, size), dtype=bool)
    lo, hi = extent[0] * size, extent[1] * size
    for k in range(k_max):
        pending = np.flatnonzero(counts > k)
        for _ in range(100):  # rejection: a new shape must not overlap earlier ones
            if pending.size == 0:
                break
            m = pending.size
            cls = rng.integers(0, 3, m)
            r = rng.uniform(lo, hi, m).astype(np.float32)
            cx = rng.uniform(r, size - r).astype(np.float32)
            cy = rng.uniform(r, size - r).astype(np.float32)
            mask = _draw(cls, cx, cy, r, size)
            ok = mask.any((1, 2)) & ~(mask & occupied[pending]).any((1, 2))
            done = pending[ok]
            inst[done, k] = mask[ok]
            labels[done, k] = cls[ok] + 1
            occupied[done] |= mask[ok]
            pending = pending[~ok]
    # colour table per image: slot 0 = background, slot k + 1 = shape k (shapes never overlap)
    table = np.concatenate(
        [rng.uniform(0.0, 0.35, (n, 1, channels)), rng.uniform(0.55, 1.0, (n, k_max, channels))], 1
    ).astype(np.float32)
    slot = (inst * np.arange(1, k_max + 1, dtype=np.uint8)[:, None, None]).max(1)  # (n, S, S)
    img = table[np.arange(n)[:, None, None], slot].transpose(0, 3, 1, 2)  # (n, C, S, S)
    img = img + np.float32(noise) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img, 0.0, 1.0), inst, labels


def shapes(
    n: int,
    size: int = 64,
    task: str = "classification",
    max_objects: int | None = None,
    min_objects: int = 1,
    channels: int = 3,
    noise: float = 0.05,
    extent: tuple[float, float] = (0.08, 0.2),
    seed: int = 0,
):
    """Images of circles, squares and triangles of random size, colour and position.

    Each image has a uniform random background colour (each channel in [0, 0.35]), shapes of
    random colours (each channel in [0.55, 1]) that never overlap and lie fully inside the
    frame, plus Gaussian pixel noise of std ``noise``, clipped to [0, 1]. A shape's
    half-extent is drawn from ``extent`` times ``size``.

    Args:
        n: number of images.
        size: image height and width in pixels.
        task: what the targets are (see Returns).
        max_objects: most shapes per image (default 1 for classification, 3 otherwise;
            classification requires 1). Each image gets a uniform count in
            ``[min_objects, max_objects]``; a shape that finds no free place after 100
            draws is left out.
        min_objects: fewest shapes per image (>= 1).
        channels: 1 (grey) or 3 (RGB).
        noise: standard deviation of the additive pixel noise.
        extent: (low, high) half-extent as a fraction of ``size``, within (0, 0.5).
        seed: seed of the NumPy generator.

    Returns:
        ``(x, y)`` with ``x`` Tensor[N, C, size, size] float32 in [0, 1] and ``y``:

        - ``'classification'``: Tensor[N] int64, 0 circle, 1 square, 2 triangle (SHAPE_NAMES);
        - ``'segmentation'``: Tensor[N, size, size] int64 class masks, 0 background,
          1 circle, 2 square, 3 triangle;
        - ``'detection'``: list of N dicts ``{'boxes': Tensor[K, 4] float32,
          'labels': Tensor[K] int64 in 1..3}``, each box the tight box of its shape's pixels;
        - ``'instance'``: the same dicts with ``'masks': Tensor[K, size, size] uint8`` (0/1).
    """
    task = check_choice("shapes task", task, _TASKS)
    n = _positive_int("n", n)
    size = _positive_int("size", size, 8)
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3; received {channels!r}.")
    noise = _non_negative("noise", noise)
    lo, hi = (float(e) for e in extent)
    if not 0 < lo <= hi < 0.5 or hi * size < 1:
        raise ConfigError(
            f"extent must be (low, high) with 0 < low <= high < 0.5 and high * size >= 1; "
            f"received {extent!r} for size {size}."
        )
    if max_objects is None:
        max_objects = 1 if task == "classification" else 3
    max_objects = _positive_int("max_objects", max_objects)
    min_objects = _positive_int("min_objects", min_objects)
    if task == "classification" and max_objects != 1:
        raise ConfigError(
            f"classification draws one shape per image; received max_objects={max_objects}. "
            "Use task='detection' or 'instance' for several shapes."
        )
    if min_objects > max_objects:
        raise ConfigError(f"min_objects ({min_objects}) exceeds max_objects ({max_objects}).")

    rng = np.random.default_rng(seed)
    counts = rng.integers(min_objects, max_objects + 1, n)
    xs, ys = [], []
    for start in range(0, n, _CHUNK):
        c = counts[start : start + _CHUNK]
        img, inst, labels = _shapes_chunk(rng, c.size, size, c, channels, noise, (lo, hi))
        xs.append(torch.from_numpy(img))
        if task == "classification":
            ys.append(torch.from_numpy(labels[:, 0] - 1))
        elif task == "segmentation":
            ys.append(torch.from_numpy((inst * labels[:, :, None, None]).max(1)))
        else:  # per-image selection in NumPy (torch's small indexing ops are slow per call)
            k = inst.shape[1]
            masks_u8 = inst.view(np.uint8)
            boxes = masks_to_boxes(torch.from_numpy(masks_u8.reshape(-1, size, size)))
            boxes = boxes.numpy().reshape(-1, k, 4)
            for i, lab in enumerate(labels):
                keep = lab > 0
                target = {
                    "boxes": torch.from_numpy(boxes[i, keep]),
                    "labels": torch.from_numpy(lab[keep]),
                }
                if task == "instance":
                    target["masks"] = torch.from_numpy(masks_u8[i, keep])
                ys.append(target)
    x = torch.cat(xs)
    y = ys if task in ("detection", "instance") else torch.cat(ys)
    return x, y


# --------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits as float32 in [0, 1] and int64 labels.

    Read straight from the CSV that scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``,
    what ``load_digits`` reads) so the seconds-long ``import sklearn`` is skipped; falls back
    to ``load_digits`` if the file is elsewhere.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "The default digits come from scikit-learn (sklearn.datasets.load_digits), "
            "which is not installed: pip install scikit-learn, or pass "
            "digits_source=(x, y), e.g. MNIST arrays."
        )
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        table = np.loadtxt(path, delimiter=",")
        images, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:  # pragma: no cover - a scikit-learn with another layout
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images, labels = bunch.images, bunch.target
    images = (images / 16.0).astype(np.float32)
    labels = labels.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def _digit_bank(digits_source, digit_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Digit images (M, s, s) float32 in [0, 1] and labels (M,) int64."""
    if digits_source is None:
        images, labels = (a.copy() for a in _sklearn_digits())
    else:
        try:
            images, labels = digits_source
        except (TypeError, ValueError):
            raise ConfigError(
                "digits_source must be a pair (x, y) of images (M, H, W) and labels (M,); "
                f"received {type(digits_source).__name__}."
            ) from None
        images = torch.as_tensor(images).numpy() if isinstance(images, torch.Tensor) else images
        images, labels = np.asarray(images), np.asarray(labels).astype(np.int64).reshape(-1)
        if images.ndim == 4 and images.shape[1] == 1:
            images = images[:, 0]
        if images.ndim != 3 or images.shape[0] != labels.shape[0] or images.shape[0] == 0:
            raise ShapeError(
                "digits_source must hold images (M, H, W) or (M, 1, H, W) and M labels; "
                f"received images {images.shape} and labels {labels.shape}."
            )
        scale = 255.0 if images.dtype == np.uint8 else max(float(images.max()), 1.0)
        images = np.clip(images.astype(np.float32) / scale, 0.0, 1.0)
    if images.shape[1:] != (digit_size, digit_size):
        t = F.interpolate(
            torch.from_numpy(images)[:, None], size=(digit_size, digit_size), mode="bilinear"
        )
        images = t[:, 0].clamp_(0, 1).numpy()
    empty = np.flatnonzero(~(images > 0).any((1, 2)))
    if empty.size:
        raise ConfigError(f"digits_source image {int(empty[0])} is blank (all zeros).")
    return images, labels


def _tight_boxes(images: np.ndarray) -> np.ndarray:
    """Pixel-edge boxes (M, 4) of the nonzero pixels of each image (M, H, W)."""
    return masks_to_boxes(torch.from_numpy(images > 0)).numpy()


def localization_mnist(
    n: int,
    canvas: int = 64,
    digits_source=None,
    digit_size: int = 28,
    noise: float = 0.0,
    seed: int = 0,
):
    """One digit pasted at a random position of a blank canvas, with its class and box.

    Seed 001's classification + localisation task: predict the digit and the box around it.
    By default the digits are scikit-learn's 1797 bundled 8x8 digits
    (``sklearn.datasets.load_digits``), resized bilinearly to ``digit_size`` so no network
    is needed; ``digits_source=(x, y)`` uses other digits (e.g. MNIST's 28x28 arrays, uint8
    or float), resized when their size differs.

    Args:
        n: number of images.
        canvas: canvas height and width (>= digit_size).
        digits_source: None, or images (M, H, W) / (M, 1, H, W) and labels (M,).
        digit_size: side of the pasted digit patch.
        noise: std of Gaussian noise added to the whole canvas (clipped to [0, 1]).
        seed: seed of the NumPy generator.

    Returns:
        ``(x, labels, boxes)``: Tensor[N, 1, canvas, canvas] float32 in [0, 1],
        Tensor[N] int64 digit classes, Tensor[N, 4] float32 ``(x1, y1, x2, y2)``, the tight
        pixel-edge box of the pasted digit's nonzero pixels.
    """
    n = _positive_int("n", n)
    digit_size = _positive_int("digit_size", digit_size)
    canvas = _positive_int("canvas", canvas)
    noise = _non_negative("noise", noise)
    if canvas < digit_size:
        raise ConfigError(f"canvas ({canvas}) must be at least digit_size ({digit_size}).")
    bank, bank_labels = _digit_bank(digits_source, digit_size)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, bank.shape[0], n)
    oy = rng.integers(0, canvas - digit_size + 1, n)
    ox = rng.integers(0, canvas - digit_size + 1, n)
    x = np.zeros((n, canvas, canvas), dtype=np.float32)
    span = np.arange(digit_size)
    rows = (oy[:, None] + span)[:, :, None]
    cols = (ox[:, None] + span)[:, None, :]
    x[np.arange(n)[:, None, None], rows, cols] = bank[pick]
    boxes = _tight_boxes(bank)[pick] + np.stack([ox, oy, ox, oy], 1)
    if noise:
        x = np.clip(x + noise * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
    return (
        torch.from_numpy(x[:, None]),
        torch.from_numpy(bank_labels[pick]),
        torch.from_numpy(boxes.astype(np.float32)),
    )


def moving_mnist(
    n: int,
    frames: int = 16,
    size: int = 64,
    num_digits: int = 2,
    digits_source=None,
    digit_size: int = 28,
    speed: tuple[float, float] = (2.0, 5.0),
    label: str = "digits",
    return_boxes: bool = False,
    seed: int = 0,
):
    """Clips of digits moving in straight lines and bouncing off the frame's edges.

    After Srivastava et al. 2015 (Moving MNIST): each digit starts at a uniform position with
    a uniform direction and a speed drawn from ``speed`` (pixels per frame); a coordinate
    that would leave ``[0, size - digit_size]`` is reflected, so every digit stays whole in
    every frame. Overlapping digits combine by pixel-wise maximum. Digits come from
    scikit-learn's 8x8 set by default (see :func:`localization_mnist`).

    Args:
        n: number of clips.
        frames: frames per clip (T).
        size: frame height and width (> digit_size).
        num_digits: digits per clip.
        digits_source, digit_size: as in :func:`localization_mnist`.
        speed: (low, high) speed in pixels per frame.
        label: ``'digits'``: Tensor[N, num_digits] int64, the classes of the digits in
            paste order; ``'direction'``: Tensor[N] int64, the dominant axis of the first
            digit's motion at the first frame: 0 right (+x), 1 down (+y), 2 left, 3 up.
            (A bounce can reverse the motion later in the clip.)
        return_boxes: also return the per-frame tight boxes of every digit.
        seed: seed of the NumPy generator.

    Returns:
        ``(clips, labels)`` or ``(clips, labels, boxes)``: clips Tensor[N, 1, T, size, size]
        float32 in [0, 1]; boxes Tensor[N, num_digits, T, 4] float32 pixel-edge boxes.
    """
    n = _positive_int("n", n)
    frames = _positive_int("frames", frames)
    num_digits = _positive_int("num_digits", num_digits)
    digit_size = _positive_int("digit_size", digit_size)
    size = _positive_int("size", size)
    label = check_choice("moving_mnist label", label, ("digits", "direction"))
    if size <= digit_size:
        raise ConfigError(f"size ({size}) must exceed digit_size ({digit_size}).")
    s_lo, s_hi = (_non_negative("speed", s) for s in speed)
    if s_lo > s_hi:
        raise ConfigError(f"speed must be (low, high) with low <= high; received {speed!r}.")
    bank, bank_labels = _digit_bank(digits_source, digit_size)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, bank.shape[0], (n, num_digits))
    room = float(size - digit_size)
    start = rng.uniform(0, room, (n, num_digits, 2))
    angle = rng.uniform(0, 2 * np.pi, (n, num_digits))
    velocity = rng.uniform(s_lo, s_hi, (n, num_digits))[..., None] * np.stack(
        [np.cos(angle), np.sin(angle)], -1
    )
    t = np.arange(frames, dtype=np.float64)[None, None, :, None]
    q = np.mod(start[:, :, None] + velocity[:, :, None] * t, 2 * room)  # (n, D, T, 2)
    pos = np.clip(np.rint(room - np.abs(room - q)), 0, room).astype(np.int64)

    clips = np.zeros((n, frames, size, size), dtype=np.float32)
    span = np.arange(digit_size)
    n_idx = np.arange(n)[:, None, None, None]
    t_idx = np.arange(frames)[None, :, None, None]
    for d in range(num_digits):
        rows = (pos[:, d, :, 1, None] + span)[..., :, None]  # (n, T, s, 1)
        cols = (pos[:, d, :, 0, None] + span)[..., None, :]  # (n, T, 1, s)
        index = (n_idx, t_idx, rows, cols)
        clips[index] = np.maximum(clips[index], bank[pick[:, d]][:, None])

    if label == "digits":
        labels = bank_labels[pick]
    else:
        vx, vy = velocity[:, 0, 0], velocity[:, 0, 1]
        labels = np.where(
            np.abs(vx) >= np.abs(vy), np.where(vx >= 0, 0, 2), np.where(vy >= 0, 1, 3)
        )
    out = (torch.from_numpy(clips[:, None]), torch.from_numpy(labels.astype(np.int64)))
    if not return_boxes:
        return out
    tight = _tight_boxes(bank)[pick][:, :, None, :]  # (n, D, 1, 4)
    boxes = tight + np.concatenate([pos, pos], -1)
    return (*out, torch.from_numpy(boxes.astype(np.float32)))


# --------------------------------------------------------------------------- 1D signals


def _waveforms(phase: np.ndarray, chirp_phase: np.ndarray, num_classes: int) -> np.ndarray:
    """All class waveforms (N, K, L) from phases in cycles (N, L)."""
    frac = np.mod(phase, 1.0)
    waves = [
        np.sin(2 * np.pi * phase),
        np.where(frac < 0.5, 1.0, -1.0),
        2.0 * frac - 1.0,
        1.0 - 4.0 * np.abs(frac - 0.5),
        np.sin(2 * np.pi * chirp_phase),
    ]
    return np.stack(waves[:num_classes], 1)


def signals(
    n: int,
    length: int = 128,
    task: str = "classification",
    num_classes: int = 4,
    noise: float = 0.1,
    segments: tuple[int, int] = (2, 5),
    seed: int = 0,
):
    """Noisy periodic series for 1D CNNs: sine, square, sawtooth, triangle, chirp.

    Each series has a random frequency (2 to 8 cycles over ``length``; a chirp's frequency
    rises linearly to three times its start), phase, amplitude (0.5 to 1.5) and offset
    (|offset| <= 0.2), plus Gaussian noise of std ``noise``.

    Args:
        n: number of series.
        length: samples per series (L).
        task: ``'classification'``: one class per series; ``'segmentation'``: each series
            is cut at random points into a uniform count in ``segments`` of pieces, each of
            a random class, and labelled per time step.
        num_classes: 2..5, the first classes of SIGNAL_NAMES.
        noise: std of the additive noise.
        segments: (low, high) pieces per series for segmentation.
        seed: seed of the NumPy generator.

    Returns:
        ``(x, y)``: x Tensor[N, 1, L] float32; y Tensor[N] int64 (classification) or
        Tensor[N, L] int64 (segmentation), classes indexing SIGNAL_NAMES.
    """
    task = check_choice("signals task", task, ("classification", "segmentation"))
    n = _positive_int("n", n)
    length = _positive_int("length", length, 2)
    noise = _non_negative("noise", noise)
    if not isinstance(num_classes, int) or not 2 <= num_classes <= len(SIGNAL_NAMES):
        raise ConfigError(
            f"num_classes must be an integer in 2..{len(SIGNAL_NAMES)} "
            f"({', '.join(SIGNAL_NAMES)}); received {num_classes!r}."
        )
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)[None]
    cycles = rng.uniform(2.0, 8.0, (n, 1))
    phase0 = rng.uniform(0.0, 1.0, (n, 1))
    f0 = cycles / length
    phase = phase0 + f0 * t
    chirp_phase = phase0 + f0 * t + f0 * t * t / length  # frequency f0 -> 3 f0
    waves = _waveforms(phase, chirp_phase, num_classes)
    if task == "classification":
        y = rng.integers(0, num_classes, n)
        per_step = np.broadcast_to(y[:, None], (n, length))
    else:
        lo, hi = (_positive_int("segments", s) for s in segments)
        if lo > hi or hi > length:
            raise ConfigError(
                f"segments must be (low, high), low <= high <= length; got {segments!r}."
            )
        count = rng.integers(lo, hi + 1, n)
        cuts = np.sort(rng.uniform(0, length, (n, hi - 1)), 1)
        cuts = np.where(np.arange(hi - 1)[None] < (count - 1)[:, None], cuts, np.inf)
        piece = (t[..., None] >= cuts[:, None, :]).sum(-1)  # (n, L) piece index
        piece_class = rng.integers(0, num_classes, (n, hi))
        y = np.take_along_axis(piece_class, piece, 1)
        per_step = y
    series = np.take_along_axis(waves, per_step[:, None, :], 1)[:, 0]
    amplitude = rng.uniform(0.5, 1.5, (n, 1))
    offset = rng.uniform(-0.2, 0.2, (n, 1))
    x = amplitude * series + offset + noise * rng.standard_normal((n, length))
    return torch.from_numpy(x[:, None].astype(np.float32)), torch.from_numpy(y.astype(np.int64))


# --------------------------------------------------------------------------- Dataset


class SyntheticDataset(Dataset):
    """A map-style Dataset over generated ``(x, y)`` with an optional joint transform.

    Args:
        x: Tensor[N, ...] inputs.
        y: Tensor[N, ...] or a sequence of N targets (e.g. the dicts of :func:`shapes`).
        transform: called as ``transform(x[i], y[i])`` and returning ``(x, y)``, e.g. a
            :class:`cnnkit.data.transforms.Compose`.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor | Sequence, transform: Callable | None = None
    ):
        if len(x) != len(y):
            raise ShapeError(f"x holds {len(x)} samples but y holds {len(y)}.")
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x, y = self.x[i], self.y[i]
        if self.transform is not None:
            return self.transform(x, y)
        return x, y
