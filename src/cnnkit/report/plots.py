"""The plots of a run: learning curves, confusion matrix, per-class scores, segmentation,
detection/instance and CAM overlays, feature maps and filters.

Every function draws on a fresh headless figure (matplotlib's Agg canvas, no pyplot),
saves a PNG to ``path`` and returns ``path`` as a ``Path``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit._core.errors import CnnkitError, ConfigError, ShapeError
from cnnkit.report._figure import batch, display_image, figure, gray, to_numpy

__all__ = [
    "AVERAGE_KEYS",
    "ERROR_COLOURS",
    "plot_cam",
    "plot_confusion_matrix",
    "plot_feature_maps",
    "plot_filters",
    "plot_history",
    "plot_instances",
    "plot_per_class",
    "plot_segmentation",
    "read_history_csv",
    "segmentation_errors",
]

PathLike = str | os.PathLike

#: seed 003's road figure: "Yellow are correctly identified pixels, blue false negatives
#: and red false positives"; a pixel of one foreground class predicted as another is magenta
ERROR_COLOURS = {
    "correct": (1.0, 0.85, 0.0),
    "false negative": (0.1, 0.3, 1.0),
    "false positive": (1.0, 0.1, 0.1),
    "wrong class": (0.9, 0.0, 0.9),
}
#: sklearn classification_report rows that are not classes
AVERAGE_KEYS = ("accuracy", "macro avg", "micro avg", "weighted avg", "samples avg")
_MAX_ROWS = 8  # samples drawn by the batched overlay plots


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def read_history_csv(path: PathLike) -> dict[str, list[float]]:
    """``history.csv`` (``epoch`` + one column per metric, CSVLogger's layout) as a dict
    metric -> values per epoch (``epoch`` included; empty cells become NaN)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (csv.Error, UnicodeDecodeError) as err:  # a field over csv's limit, binary data
        raise CnnkitError(f"{path} is not a history CSV ({err}).") from None
    keys = list(rows[0]) if rows else []
    return {k: [_float(r.get(k)) for r in rows] for k in keys}


def _history_dict(history: Any) -> dict[str, list[float]]:
    if isinstance(history, (str, os.PathLike)):
        return read_history_csv(history)
    if hasattr(history, "history") and isinstance(history.history, Mapping):
        history = history.history
    if not isinstance(history, Mapping):
        raise ConfigError(
            "plot_history expects a dict metric -> values per epoch, a History or the path of "
            f"a history.csv; received {type(history).__name__}."
        )
    return {str(k): [_float(v) for v in np.ravel(to_numpy(vals))] for k, vals in history.items()}


def plot_history(history: Any, path: PathLike, dpi: int = 100) -> Path:
    """Learning curves: one panel per metric with its ``val_`` twin (``loss`` and
    ``val_loss`` together), epochs on the x axis.

    ``history``: ``{metric: [value per epoch]}`` (``History.history``), a ``History``, or
    the path of a ``history.csv``; an ``epoch`` column, when present, gives the x values.
    """
    from matplotlib.ticker import MaxNLocator

    h = _history_dict(history)
    epochs = h.pop("epoch", None)
    names = [k for k in h if not k.startswith("val_")]
    names += [k for k in h if k.startswith("val_") and k[4:] not in h]
    names.sort(key=lambda k: (k.removeprefix("val_") != "loss", k))
    if not names:
        raise ConfigError("plot_history received a history without metrics.")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    with figure(path, (4.0 * cols, 3.0 * rows), dpi) as fig:
        for i, name in enumerate(names, start=1):
            ax = fig.add_subplot(rows, cols, i)
            for key, style in ((name, "-o"), ("val_" + name, "--s")):
                if key not in h or (key == "val_" + name and name.startswith("val_")):
                    continue
                ys = h[key]
                xs = epochs if epochs is not None and len(epochs) == len(ys) else range(len(ys))
                label = "validation" if key.startswith("val_") else "training"
                ax.plot(list(xs), ys, style, markersize=3, label=label)
            ax.set_title(name.removeprefix("val_"))
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
    return Path(path)


def plot_confusion_matrix(
    cm: Any,
    class_names: Sequence[str] | None = None,
    path: PathLike = "confusion_matrix.png",
    normalize: bool = False,
    dpi: int = 100,
) -> Path:
    """Heatmap of a confusion matrix (rows: true class, columns: predicted), with the
    counts (or, with ``normalize``, the fraction of each true class) written in the cells
    for up to 20 classes."""
    m = to_numpy(cm).astype(np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ShapeError(f"cm must be a square (C, C) matrix; received shape {m.shape}.")
    n = m.shape[0]
    names = [str(c) for c in (class_names if class_names is not None else range(n))]
    if len(names) != n:
        raise ShapeError(f"{len(names)} class names for a {n}x{n} confusion matrix.")
    if normalize:
        totals = m.sum(axis=1, keepdims=True)
        m = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)
    side = min(3.0 + 0.45 * n, 14.0)
    with figure(path, (side + 1.0, side), dpi) as fig:
        ax = fig.add_subplot(1, 1, 1)
        im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("confusion matrix" + (" (normalised by true class)" if normalize else ""))
        if n <= 20:
            top = m.max() if m.size else 0
            for (r, c), v in np.ndenumerate(m):
                text = f"{v:.2f}" if normalize else f"{int(round(v))}"
                colour = "white" if top and v > 0.6 * top else "black"
                ax.text(c, r, text, ha="center", va="center", fontsize=7, color=colour)
        fig.tight_layout()
    return Path(path)


def _per_class_table(
    per_class: Any, class_names: Sequence[str] | None
) -> tuple[list[str], dict[str, list[float]]]:
    """``(classes, {metric: [value per class]})`` from either accepted layout."""
    if not isinstance(per_class, Mapping) or not per_class:
        raise ConfigError(
            "plot_per_class expects {class: {metric: value}} (or scikit-learn's "
            f"classification_report(output_dict=True)); received {type(per_class).__name__}."
        )
    values = list(per_class.values())
    if all(isinstance(v, Mapping) for v in values if not isinstance(v, (int, float))):
        classes = [
            str(k)
            for k, v in per_class.items()
            if isinstance(v, Mapping) and str(k) not in AVERAGE_KEYS
        ]
        metrics: list[str] = []
        for c in classes:
            for k in per_class[c]:
                if k not in metrics and k != "support":
                    metrics.append(str(k))
        table = {k: [_float(per_class[c].get(k)) for c in classes] for k in metrics}
        return classes, table
    # {metric: [value per class]}
    table = {str(k): [_float(x) for x in np.ravel(to_numpy(v))] for k, v in per_class.items()}
    table.pop("support", None)
    n = max(len(v) for v in table.values())
    classes = [str(c) for c in (class_names if class_names is not None else range(n))]
    return classes, table


def plot_per_class(
    per_class: Any,
    path: PathLike = "per_class.png",
    class_names: Sequence[str] | None = None,
    dpi: int = 100,
) -> Path:
    """Grouped bars of per-class scores (precision, recall, F1, IoU, ...; ``support`` and
    scikit-learn's average rows are left out).

    ``per_class``: ``{class: {metric: value}}``, scikit-learn's
    ``classification_report(..., output_dict=True)``, or ``{metric: [value per class]}``
    (then ``class_names`` names the classes).
    """
    classes, table = _per_class_table(per_class, class_names)
    if not classes or not table:
        raise ConfigError("plot_per_class found no per-class scores to draw.")
    n, k = len(classes), len(table)
    width = 0.8 / k
    with figure(path, (min(2.0 + 0.6 * n * max(1, k / 2), 16.0), 3.5), dpi) as fig:
        ax = fig.add_subplot(1, 1, 1)
        x = np.arange(n)
        for i, (metric, vals) in enumerate(table.items()):
            ax.bar(x + (i - (k - 1) / 2) * width, vals, width, label=metric)
        ax.set_xticks(x, classes, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
        top = np.nanmax([np.nanmax(v) if len(v) else 0 for v in table.values()])
        ax.set_ylim(0, 1.2 if top <= 1 else top * 1.2)
        ax.set_ylabel("score")
        ax.set_title("per-class scores")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, ncol=min(k, 4), loc="upper center")
        fig.tight_layout()
    return Path(path)


def _labels(a: Any) -> np.ndarray:
    m = to_numpy(a)
    if m.dtype.kind == "f":
        m = np.rint(m)
    return m.astype(np.int64)


def segmentation_errors(truth: Any, pred: Any) -> np.ndarray:
    """``uint8 [H, W]`` error codes: 0 true negative (background in both), 1 correct
    foreground, 2 false negative (foreground predicted as background), 3 false positive
    (background predicted as foreground), 4 wrong foreground class. Class 0 is the
    background (the road figure's "no road")."""
    t, p = _labels(truth), _labels(pred)
    if t.shape != p.shape:
        raise ShapeError(f"truth {t.shape} and prediction {p.shape} differ in shape.")
    codes = np.zeros(t.shape, dtype=np.uint8)
    codes[(t == p) & (t != 0)] = 1
    codes[(t != 0) & (p == 0)] = 2
    codes[(t == 0) & (p != 0)] = 3
    codes[(t != p) & (t != 0) & (p != 0)] = 4
    return codes


def _palette(k: int) -> np.ndarray:
    """Colours of class labels: background black, binary foreground white, else tab20."""
    from matplotlib import colormaps

    if k <= 2:
        return np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    tab = colormaps["tab20"](np.arange(20))[:, :3]
    return np.vstack([[0.0, 0.0, 0.0], tab[np.arange(k - 1) % 20]])


def plot_segmentation(
    image: Any,
    truth: Any,
    pred: Any,
    path: PathLike = "segmentation.png",
    class_names: Sequence[str] | None = None,
    dpi: int = 100,
) -> Path:
    """Image / truth / prediction / errors, one row per sample (at most 8).

    The errors panel colours the pixels as seed 003's road figure: yellow correct,
    blue false negatives, red false positives (magenta: a foreground pixel given another
    foreground class), over the image in gray.

    Args:
        image: ``[C, H, W]``/``[H, W, C]``/``[H, W]``, or a batch of them.
        truth, pred: class labels ``[H, W]`` or ``[N, H, W]`` (0 = background).
    """
    truths, preds = batch(truth, 2, "truth"), batch(pred, 2, "pred")
    images = [image] if len(truths) == 1 and to_numpy(image).ndim <= 3 else list(image)
    if not len(images) == len(truths) == len(preds):
        raise ShapeError(
            f"{len(images)} images, {len(truths)} truth masks and {len(preds)} predictions."
        )
    k = int(max(_labels(truths).max(initial=0), _labels(preds).max(initial=0))) + 1
    k = max(k, len(class_names) if class_names else 2)
    pal = _palette(k)
    rows = min(len(truths), _MAX_ROWS)
    err_pal = np.array([[0, 0, 0], *ERROR_COLOURS.values()], dtype=np.float64)
    with figure(path, (10.0, 2.6 * rows + 0.6), dpi) as fig:
        axes = fig.subplots(rows, 4, squeeze=False)
        for r in range(rows):
            t, p = _labels(truths[r]), _labels(preds[r])
            img = display_image(images[r], t.shape)
            codes = segmentation_errors(t, p)
            base = np.repeat(gray(img)[..., None], 3, axis=2) * 0.6
            overlay = np.where(codes[..., None] > 0, 0.25 * base + 0.75 * err_pal[codes], base)
            panels = (img, pal[np.clip(t, 0, k - 1)], pal[np.clip(p, 0, k - 1)], overlay)
            titles = ("image", "truth", "prediction", "errors")
            for ax, panel, title in zip(axes[r], panels, titles):
                ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(title, fontsize=9)
        _legend(fig, k, pal, class_names)
    return Path(path)


def _legend(fig: Any, k: int, pal: np.ndarray, class_names: Sequence[str] | None) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=name) for name, c in ERROR_COLOURS.items()]
    if class_names:
        handles += [
            Patch(facecolor=pal[i], edgecolor="gray", label=str(n))
            for i, n in enumerate(class_names[:k])
        ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))


def plot_cam(
    image: Any,
    cam: Any,
    path: PathLike = "cam.png",
    alpha: float = 0.5,
    titles: Sequence[str] | None = None,
    dpi: int = 100,
) -> Path:
    """The image and its class activation map overlaid (jet colours, ``alpha``), one row
    per sample (at most 8). ``cam``: ``[H, W]`` or ``[N, H, W]`` in [0, 1]
    (:func:`cnnkit.interpret.cam`/``grad_cam``); ``image``: one image or a batch."""
    from matplotlib import colormaps

    cams = batch(cam, 2, "cam")
    images = [image] if len(cams) == 1 and to_numpy(image).ndim <= 3 else list(image)
    if len(images) != len(cams):
        raise ShapeError(f"{len(images)} images for {len(cams)} maps.")
    rows = min(len(cams), _MAX_ROWS)
    jet = colormaps["jet"]
    with figure(path, (5.0, 2.4 * rows), dpi) as fig:
        axes = fig.subplots(rows, 2, squeeze=False)
        for r in range(rows):
            c = np.clip(to_numpy(cams[r]).astype(np.float64), 0, 1)
            img = display_image(images[r], c.shape)
            rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
            if rgb.shape[:2] != c.shape:
                raise ShapeError(f"image {rgb.shape[:2]} and CAM {c.shape} differ in size.")
            over = (1 - alpha) * rgb + alpha * jet(c)[..., :3]
            for ax, panel, name in zip(axes[r], (img, over), ("image", "CAM")):
                ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                title = name if titles is None or name == "image" else f"CAM: {titles[r]}"
                ax.set_title(title, fontsize=9)
        fig.tight_layout()
    return Path(path)


def _instance_panel(ax: Any, img: np.ndarray, inst: Mapping, threshold: float, names) -> None:
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    boxes = to_numpy(inst.get("boxes", np.zeros((0, 4)))).reshape(-1, 4)
    scores = inst.get("scores")
    scores = to_numpy(scores).reshape(-1) if scores is not None else np.ones(len(boxes))
    labels = inst.get("labels")
    labels = _labels(labels).reshape(-1) if labels is not None else np.zeros(len(boxes), int)
    masks = inst.get("masks")
    if masks is not None:
        masks = to_numpy(masks).astype(np.float64)
        masks = masks.reshape(-1, *masks.shape[-2:])
    keep = np.flatnonzero(scores >= threshold)
    colours = colormaps["tab10"](np.arange(10))
    h, w = img.shape[:2]
    for rank, i in enumerate(keep):
        colour = colours[rank % 10]
        if masks is not None and i < len(masks):
            m = masks[i] >= 0.5
            layer = np.zeros((h, w, 4))
            layer[m] = (*colour[:3], 0.45)
            ax.imshow(layer)
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1.5))
        lab = int(labels[i]) if i < len(labels) else 0
        name = names[lab] if names is not None and 0 <= lab < len(names) else str(lab)
        text = name if inst.get("scores") is None else f"{name} {scores[i]:.2f}"
        ax.text(
            x0,
            y0,
            text,
            fontsize=7,
            color="white",
            va="bottom",
            bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "lw": 0},
        )
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_instances(
    image: Any,
    prediction: Mapping[str, Any],
    path: PathLike = "instances.png",
    target: Mapping[str, Any] | None = None,
    score_threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
    dpi: int = 100,
) -> Path:
    """Detection / instance segmentation overlay of one image: boxes (``xyxy`` pixels),
    labels, scores and masks (``[K, H, W]`` or ``[K, 1, H, W]`` probabilities, drawn at
    0.5) of the predictions with ``score >= score_threshold``; with ``target`` the ground
    truth is drawn in a second panel (torchvision's detection dict layout)."""
    if not isinstance(prediction, Mapping):
        raise ConfigError(
            "plot_instances expects prediction a dict with 'boxes' (and 'labels', 'scores', "
            f"'masks'); received {type(prediction).__name__}."
        )
    img = display_image(image)
    panels = [("prediction", prediction, score_threshold)]
    if target is not None:
        panels.insert(0, ("truth", target, -math.inf))
    with figure(path, (4.0 * len(panels), 4.2), dpi) as fig:
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, inst, thr) in zip(axes, panels):
            _instance_panel(ax, img, inst, thr, class_names)
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
    return Path(path)


def plot_feature_maps(
    maps: Any,
    path: PathLike = "feature_maps.png",
    sample: int = 0,
    max_maps: int = 32,
    dpi: int = 100,
) -> Path:
    """Grids of feature maps, one panel per layer: ``maps`` is
    :func:`cnnkit.interpret.feature_maps`' ``{name: Tensor[N, C, H, W]}`` or one tensor."""
    from cnnkit.interpret.features import feature_map_grid

    items = dict(maps) if isinstance(maps, Mapping) else {"feature maps": maps}
    if not items:
        raise ConfigError("plot_feature_maps received no feature maps.")
    cols = min(3, len(items))
    rows = math.ceil(len(items) / cols)
    with figure(path, (4.0 * cols, 4.0 * rows), dpi) as fig:
        for i, (name, fm) in enumerate(items.items(), start=1):
            grid = feature_map_grid(fm, sample=sample, max_maps=max_maps)
            ax = fig.add_subplot(rows, cols, i)
            ax.imshow(grid, cmap="viridis", vmin=0, vmax=1)
            shape = tuple(to_numpy(fm).shape)
            ax.set_title(f"{name} {shape}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
    return Path(path)


def plot_filters(layer: Any, path: PathLike = "filters.png", dpi: int = 100) -> Path:
    """The kernels of a convolution (a layer or its weight) as one image grid
    (:func:`cnnkit.interpret.filter_grid`: RGB for 3 input channels)."""
    from cnnkit.interpret.features import filter_grid

    grid = filter_grid(layer)
    with figure(path, (5.0, 5.0 * grid.shape[0] / max(grid.shape[1], 1) + 0.5), dpi) as fig:
        ax = fig.add_subplot(1, 1, 1)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(f"filters {tuple(getattr(getattr(layer, 'weight', layer), 'shape', ()))}")
        ax.set_xticks([])
        ax.set_yticks([])
        fig.tight_layout()
    return Path(path)
