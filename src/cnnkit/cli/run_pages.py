"""The model page a run folder gets (``model.html``, linked from ``report.html``).

Kept apart from :mod:`cnnkit.cli.explain` (which loads finished runs through
:mod:`cnnkit.cli.training`) so that training can write the page without an import circle.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from cnnkit._core.errors import CnnkitError
from cnnkit.cli import run_folder
from cnnkit.report.html import MODEL_PAGE

log = logging.getLogger("cnnkit.cli")
#: test inputs searched for misclassified examples on a run page
RUN_EXAMPLES = 256


def _run_examples(run: Path, data: Any, report: bool) -> Any:
    from cnnkit.report.explain_model import RunExamples

    confusion = None
    metrics_path = run / "metrics.json"
    if metrics_path.is_file():
        try:
            metrics = run_folder.read_json(metrics_path)
            cm = metrics.get("confusion_matrix") if isinstance(metrics, dict) else None
            if isinstance(cm, list) and all(isinstance(r, list) for r in cm):
                confusion = [[int(v) for v in r] for r in cm]
        except (OSError, ValueError, TypeError, CnnkitError) as err:
            log.warning("metrics.json could not be read: %s", err)
    report = "report.html" if report or (run / "report.html").is_file() else None
    y = data.y_test[:RUN_EXAMPLES] if hasattr(data.y_test, "__getitem__") else None
    return RunExamples(data.x_test[:RUN_EXAMPLES], y, data.classes, confusion, report)


def write_run_model_page(
    run: Path, out: Path, model: Any, config: dict[str, Any], data: Any, report: bool = False
) -> Path:
    """``model.html`` of a run: its network, test examples, CAMs and confusion matrix."""
    from cnnkit.report.explain_model import write_model_page

    examples = _run_examples(run, data, report)
    if examples.report and out.resolve().parent != run.resolve():
        examples.report = os.path.relpath(run / "report.html", out.resolve().parent)
    shape = tuple(config.get("run", {}).get("input_shape") or data.input_shape)
    return write_model_page(out, model, shape, title=f"cnnkit run {config.get('name', run.name)}",
                            run=examples)  # fmt: skip


def write_page_after_training(run: Path, model: Any, config: dict[str, Any], data: Any) -> None:
    """``cnnkit train``: write ``model.html`` next to ``report.html`` (classification
    runs); a failure is logged, never raised."""
    if config.get("task") != "classification":
        return
    try:
        write_run_model_page(run, run / MODEL_PAGE, model, config, data, report=True)
    except Exception as err:  # noqa: BLE001 - a page must never fail a finished training
        log.warning("%s could not be written: %s: %s", MODEL_PAGE, type(err).__name__, err)
