"""The scores of a run (metrics.json), task by task: what ``cnnkit train`` and
``cnnkit evaluate`` compute after ``Model.evaluate`` on the test split.

The task-specific part comes from :data:`TASK_SCORES`, keyed by the config's ``task``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from cnnkit._core.errors import CnnkitError
from cnnkit.cli.datasets import TaskData

#: how class probabilities follow from an output, by the model's final activation
_TO_PROBABILITIES = {
    "softmax": lambda out: out,  # predict applied it (in fp32)
    "sigmoid": lambda out: out,  # per-class (multi-label) or binary probabilities
    None: lambda out: _sigmoid(out) if out.shape[1] == 1 else _softmax(out),  # from logits
}


def _sigmoid(out: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-out))


def _softmax(out: np.ndarray) -> np.ndarray:
    e = np.exp(out - out.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def as_probabilities(out: np.ndarray, activation: str | None) -> np.ndarray:
    """Class probabilities over dim 1 from ``model.predict``'s output, decided by what the
    model ends in (``model.output_activations()``), never guessed from the numbers."""
    out = np.asarray(out, dtype=np.float64)
    if activation not in _TO_PROBABILITIES:
        raise CnnkitError(
            f"Unknown output activation {activation!r}; expected softmax, sigmoid or None."
        )
    if out.ndim < 2:
        return out
    return _TO_PROBABILITIES[activation](out)


def _predictions(out: np.ndarray) -> np.ndarray:
    """Class indices from probabilities: argmax over dim 1, or > 0.5 for one channel."""
    if out.ndim >= 2 and out.shape[1] == 1:
        return (out[:, 0] > 0.5).astype(np.int64)
    return out.argmax(1)


def class_scores(truth: torch.Tensor, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Confusion matrix and per-class precision/recall/F1/IoU (pixels for segmentation)."""
    from cnnkit.metrics import UndefinedMetricWarning, confusion_matrix, report

    y_true = truth.numpy().astype(np.int64)
    if y_true.ndim == probs.ndim:  # (N, 1, H, W) binary masks
        y_true = y_true[:, 0]
    y_pred = _predictions(probs)
    cm = confusion_matrix(y_true, y_pred, num_classes=len(classes))
    with warnings.catch_warnings():  # classes absent from a small test set score 0
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        rep = report(cm)
    per_class = {
        name: {
            "precision": float(rep["precision_per_class"][i]),
            "recall": float(rep["recall_per_class"][i]),
            "f1": float(rep["f1_per_class"][i]),
            "iou": float(rep["iou_per_class"][i]),
            "support": int(rep["support"][i]),
        }
        for i, name in enumerate(classes)
    }
    summary = {
        "accuracy": float(rep["accuracy"]),
        "balanced_accuracy": float(rep["balanced_accuracy"]),
        "mean_iou": float(rep["mean_iou"]),
        "f1_macro": float(rep["f1_macro"]),
    }
    return {
        "summary": summary,
        "per_class": per_class,
        "confusion_matrix": np.asarray(cm).tolist(),
        "class_names": list(classes),
    }


def box_iou_mean(pred: np.ndarray, true: torch.Tensor) -> float:
    from cnnkit.metrics.boxes import matched_box_iou_tensor

    p = torch.from_numpy(pred).float()
    p = torch.cat([torch.minimum(p[:, :2], p[:, 2:]), torch.maximum(p[:, :2], p[:, 2:])], 1)
    return float(matched_box_iou_tensor(p, true.float()).mean())


def _classes(model, data: TaskData, batch: int, metrics: dict[str, Any], key: str = "") -> None:
    if not data.classes:
        return
    probs = model.predict(data.x_test, batch_size=batch)
    scores = class_scores(data.y_test, probs, data.classes)
    for k, v in scores.pop("summary").items():
        metrics["test"][key + k] = v
    metrics.update(scores)


def _classification(model, data: TaskData, batch: int, metrics: dict[str, Any]) -> None:
    _classes(model, data, batch, metrics)


def _segmentation(model, data: TaskData, batch: int, metrics: dict[str, Any]) -> None:
    _classes(model, data, batch, metrics, key="pixel_")


def _localization(model, data: TaskData, batch: int, metrics: dict[str, Any]) -> None:
    probs, boxes = model.predict(data.x_test, batch_size=batch)
    metrics["test"]["box_iou"] = box_iou_mean(boxes, data.y_test[1])
    scores = class_scores(data.y_test[0], probs, data.classes)
    metrics["test"]["accuracy"] = scores.pop("summary")["accuracy"]
    metrics.update(scores)


def _instance(model, data: TaskData, batch: int, metrics: dict[str, Any]) -> None:
    """COCO mAP of boxes and masks (``evaluate`` gave them; the headline three are kept)."""
    test = metrics.pop("evaluated")
    metrics["test"] = {"loss": float(test["loss"])}
    for iou in ("bbox", "segm"):
        for key in ("map", "map_50", "map_75"):
            metrics["test"][f"{iou}_{key}"] = float(test[iou][key])


#: what each task adds to ``evaluate``'s loss and metrics
TASK_SCORES = {
    "classification": _classification,
    "segmentation": _segmentation,
    "localization": _localization,
    "instance": _instance,
}


def score(model, config: dict[str, Any], data: TaskData, history: Any | None) -> dict[str, Any]:
    """metrics.json: ``test`` (evaluate + task scores), ``val`` (last epoch), extras."""
    batch = config["fit"]["batch_size"]
    test = model.evaluate(data.x_test, data.y_test, batch_size=batch)
    metrics: dict[str, Any] = {
        "test": {k: float(v) for k, v in test.items() if not isinstance(v, dict)},
        "evaluated": test,
    }
    if history is not None and history.history:
        last = {k[4:]: float(v[-1]) for k, v in history.history.items() if k.startswith("val_")}
        if last:
            metrics["val"] = last
        metrics["epochs"] = len(history.history.get("loss", []))
    TASK_SCORES[config["task"]](model, data, batch, metrics)
    metrics.pop("evaluated", None)
    return metrics
