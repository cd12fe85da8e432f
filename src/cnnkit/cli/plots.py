"""The plots of a run folder (``plots/``), drawn by :mod:`cnnkit.report`.

Each plot is optional: a missing plotting function or a plot that fails is logged as a
warning and the run's other files stay as they are.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.cli.run_folder import PLOTS
from cnnkit.cli.scores import as_probabilities

log = logging.getLogger("cnnkit.cli")

#: examples drawn in overlay plots
EXAMPLES = 4


def _report_fn(name: str):
    import cnnkit.report

    return getattr(cnnkit.report, name, None)


def _save(fig_or_path: Any, path: Path) -> None:
    """Accept a plotting function returning a Figure (saved here) or a path (already saved)."""
    if hasattr(fig_or_path, "savefig"):
        import matplotlib.pyplot as plt

        fig_or_path.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig_or_path)


def _plot(name: str, path: Path, *args: Any, **kwargs: Any) -> bool:
    fn = _report_fn(name)
    if fn is None:
        log.warning("cnnkit.report.%s is not available; %s not drawn", name, path.name)
        return False
    try:
        _save(fn(*args, path=path, **kwargs), path)
    except Exception as err:  # a plot must never lose a finished training
        log.warning("%s could not be drawn: %s", path.name, err)
        return False
    return True


def _segmentation(folder: Path, model: Any, data: Any, n: int) -> None:
    x = data.x_test[:n]
    probs = model.predict(x)
    pred = (probs[:, 0] > 0.5).astype(np.int64) if probs.shape[1] == 1 else probs.argmax(1)
    truth = data.y_test[:n].numpy()
    truth = truth[:, 0] if truth.ndim == 4 else truth
    _plot("plot_segmentation", folder / "segmentation.png", x.numpy(), truth, pred,
          class_names=data.classes)  # fmt: skip


def _classification(folder: Path, model: Any, data: Any, n: int) -> None:
    if data.x_test.dim() == 4:
        cam_examples(model, data.x_test[:n], folder / "cam.png", data.classes)


def _instance(folder: Path, model: Any, data: Any, n: int) -> None:
    pred = model.predict(data.x_test[:1])[0]
    _plot("plot_instances", folder / "instances.png", data.x_test[0], pred,
          target=data.y_test[0], class_names=data.classes)  # fmt: skip


#: the example plots of each task (drawn when the test split is not empty)
TASK_PLOTS = {
    "classification": _classification,
    "segmentation": _segmentation,
    "instance": _instance,
}


def make_plots(run: Path, config: dict, model: Any, data: Any, history: Any, metrics: dict) -> None:
    """Learning curves, confusion matrix + per-class scores where the task has classes,
    and the task's examples (:data:`TASK_PLOTS`): CAMs (classification), overlays
    (segmentation), instance overlays."""
    folder = run / PLOTS
    folder.mkdir(exist_ok=True)
    _plot("plot_history", folder / "history.png", history.history)
    if "confusion_matrix" in metrics:
        cm = np.asarray(metrics["confusion_matrix"])
        names = metrics.get("class_names")
        _plot("plot_confusion_matrix", folder / "confusion_matrix.png", cm, class_names=names)
        _plot("plot_per_class", folder / "per_class.png", metrics["per_class"])
    n = min(EXAMPLES, len(data.x_test))
    examples = TASK_PLOTS.get(config["task"])
    if examples is not None and n:
        examples(folder, model, data, n)


def cam_examples(model: Any, x: Any, path: Path, classes: list[str] | None = None) -> bool:
    """CAM (GAP + one dense layer) or else Grad-CAM overlays of ``x``."""
    import cnnkit.interpret as interpret

    net = getattr(model, "module", model)
    from cnnkit.models.base import is_conv

    if not any(is_conv(m) for m in net.modules()):
        log.info("no convolution in the model (e.g. cifar_fcn): no class activation maps")
        return False
    maps, method = None, None
    for fn_name in ("cam", "grad_cam"):
        fn = getattr(interpret, fn_name, None)
        if fn is None:
            continue
        try:
            maps, method = fn(net, x), {"cam": "CAM", "grad_cam": "Grad-CAM"}[fn_name]
            break
        except Exception as err:  # e.g. CAM on a net without GAP: try Grad-CAM next
            log.info("%s not applicable: %s", fn_name, err)
    if maps is None:
        log.warning("no class activation map for this model; %s not drawn", path.name)
        return False
    maps = maps.detach().cpu().numpy() if hasattr(maps, "detach") else np.asarray(maps)
    probs = as_probabilities(model.predict(x), model.output_activations(x)[0])
    titles = []
    for p in probs:
        k = int(p.argmax())
        name = classes[k] if classes and k < len(classes) else str(k)
        titles.append(f"{name} ({100 * p[k]:.0f}%), {method}")
    return _plot("plot_cam", path, x.detach().cpu().numpy(), maps, titles=titles)
