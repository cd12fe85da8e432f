"""``report.html``: one self-contained page per run folder.

Reads what a run folder holds (``config.yaml`` with the exact ``command``,
``metrics.json``, ``history.csv``, ``summary.txt``, ``environment.json``,
``plots/*.png``), draws the learning-curve, confusion-matrix and per-class plots when
they are missing, and writes ``report.html``: inline CSS, PNGs embedded as base64 data
URIs, no JavaScript, nothing loaded from elsewhere. Every string taken from the run
(class names, file names, config values, the command) is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cnnkit._core.errors import CnnkitError, ConfigError
from cnnkit._core.json_file import MAX_RUN_FILE_BYTES, check_size, read_json
from cnnkit._core.safe_yaml import dump_yaml, load_yaml
from cnnkit.report.plots import (
    plot_confusion_matrix,
    plot_history,
    plot_per_class,
    read_history_csv,
)

__all__ = ["MODEL_PAGE", "format_value", "write_run_report"]

log = logging.getLogger("cnnkit.report")

NOT_RECORDED = "not recorded"
#: the interactive explain page of the run's model (``cnnkit explain RUN --html``), linked
#: from the report when the run folder holds it
MODEL_PAGE = "model.html"
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.2em;border-bottom:2px solid #d9dde5;
padding-bottom:4px;margin-top:32px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:6px;padding:4px 18px 14px;
margin-bottom:18px}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}
th,td{border:1px solid #d9dde5;padding:4px 10px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#eef1f6}
pre{background:#f2f4f8;border:1px solid #e1e4ea;padding:10px;overflow-x:auto;font-size:.85em;
white-space:pre-wrap;word-break:break-word}
code.cmd{display:block;background:#1d2330;color:#e8ecf3;padding:10px;border-radius:4px;
white-space:pre-wrap;word-break:break-all}
figure{display:inline-block;margin:8px 12px 8px 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #e1e4ea;background:#fff}
figcaption{font-size:.85em;color:#555}
.missing{color:#8a6d00;font-style:italic}
.meta{color:#555;font-size:.9em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def format_value(value: Any) -> str:
    """A metric as shown in the report: ints as ints, floats with 4 decimals
    (``0.98765`` -> ``0.9877``), large floats with thousands separators."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if abs(value) >= 1000:
            return f"{value:,.1f}"
        return f"{value:.4f}"
    return str(value)


def _cell(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{_e(format_value(value))}</td>'
    if isinstance(value, (dict, list)):
        return f"<td><code>{_e(json.dumps(value, default=str))}</code></td>"
    return f"<td>{_e('' if value is None else value)}</td>"


def _table(header: list[str], rows: list[list[Any]], caption: str | None = None) -> str:
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{_e(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + f"<th>{_e(row[0])}</th>" + "".join(_cell(v) for v in row[1:]) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _missing(what: str) -> str:
    return f'<p class="missing">{_e(what)}: {NOT_RECORDED}.</p>'


def _read(path: Path, kind: str) -> Any:
    """The parsed file, or ``None`` (absent, too large or unreadable; logged). JSON, CSV
    and text are bounded by :data:`MAX_RUN_FILE_BYTES`, YAML by its own
    :data:`cnnkit._core.safe_yaml.MAX_YAML_BYTES`."""
    if not path.is_file():
        return None
    try:
        if kind == "json":
            return read_json(path, MAX_RUN_FILE_BYTES, "a run folder's JSON file")
        if kind == "yaml":
            return load_yaml(path)
        check_size(path, MAX_RUN_FILE_BYTES, "a file a report reads")
        if kind == "csv":
            return read_history_csv(path)
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError, CnnkitError) as err:
        log.warning("%s could not be read: %s", path.name, err)
        return None


def _metrics_section(metrics: Any) -> str:
    if not isinstance(metrics, Mapping):
        return _missing("metrics.json")
    splits = [s for s, v in metrics.items() if isinstance(v, Mapping) and s not in ("per_class",)]
    splits.sort(key=lambda s: {"test": 0, "val": 1}.get(s, 2))
    names: list[str] = []
    for s in splits:
        names += [k for k, v in metrics[s].items() if k not in names and not isinstance(v, Mapping)]
    parts = []
    if names:
        rows = [[n, *(metrics[s].get(n, "") for s in splits)] for n in names]
        parts.append(_table(["metric", *splits], rows))
    else:
        parts.append(_missing("test and validation metrics"))
    per_class = metrics.get("per_class")
    if isinstance(per_class, Mapping) and per_class:
        classes = [c for c, v in per_class.items() if isinstance(v, Mapping)]
        cols: list[str] = []
        for c in classes:
            cols += [k for k in per_class[c] if k not in cols]
        rows = [[c, *(per_class[c].get(k, "") for k in cols)] for c in classes]
        parts.append("<h3>Per class</h3>" + _table(["class", *cols], rows))
    cm = metrics.get("confusion_matrix")
    if isinstance(cm, list) and cm and len(cm) <= 20:
        names_cm = metrics.get("class_names") or [str(i) for i in range(len(cm))]
        rows = [[f"true {n}", *row] for n, row in zip(names_cm, cm)]
        header = ["", *(f"pred {n}" for n in names_cm)]
        parts.append("<h3>Confusion matrix</h3>" + _table(header, rows))
    return "\n".join(parts)


def _history_section(history: Any) -> str:
    if not history:
        return _missing("history.csv")
    keys = list(history)
    n = max(len(v) for v in history.values())
    if n == 0:
        return _missing("history.csv (no epochs)")
    rows = [[*(history[k][i] if i < len(history[k]) else "" for k in keys)] for i in range(n)]
    rows = [[format_value(int(r[0])) if keys[0] == "epoch" else r[0], *r[1:]] for r in rows]
    shown = rows if n <= 60 else rows[:5] + [["..."] + [""] * (len(keys) - 1)] + rows[-20:]
    return _table(keys, shown)


def _figures(plots: list[Path]) -> str:
    if not plots:
        return _missing("plots")
    out = []
    for p in plots:
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        out.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{_e(p.name)}">'
            f"<figcaption>{_e(p.stem.replace('_', ' '))}</figcaption></figure>"
        )
    return "\n".join(out)


def _ensure_plots(run: Path, metrics: Any, history: Any) -> None:
    """Draw the learning curves, confusion matrix and per-class plots when missing."""
    folder = run / "plots"
    existing = {p.name for p in folder.glob("*.png")} if folder.is_dir() else set()
    jobs = []
    if history and "history.png" not in existing:
        jobs.append(("history.png", lambda p: plot_history(history, p)))
    if isinstance(metrics, Mapping):
        cm = metrics.get("confusion_matrix")
        names = metrics.get("class_names")
        if cm and "confusion_matrix.png" not in existing:
            jobs.append(("confusion_matrix.png", lambda p: plot_confusion_matrix(cm, names, p)))
        per_class = metrics.get("per_class")
        if per_class and "per_class.png" not in existing:
            jobs.append(("per_class.png", lambda p: plot_per_class(per_class, p)))
    for name, draw in jobs:
        try:
            draw(folder / name)
        except Exception as err:  # a bad file must not stop the report
            log.warning("plots/%s could not be drawn: %s", name, err)


def write_run_report(run_dir: str | os.PathLike, title: str | None = None) -> Path:
    """Write ``run_dir/report.html`` from the files of a run folder and return its path.

    Sections: results (test/val metrics, per-class scores, confusion matrix), plots
    (every ``plots/*.png``, embedded), command, training history, model summary, config,
    environment. A missing file leaves its section saying "not recorded".
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"write_run_report expects a run folder; {str(run)!r} is not a folder.")
    config = _read(run / "config.yaml", "yaml")
    metrics = _read(run / "metrics.json", "json")
    history = _read(run / "history.csv", "csv")
    summary = _read(run / "summary.txt", "text")
    env = _read(run / "environment.json", "json")
    _ensure_plots(run, metrics, history)
    plots = sorted((run / "plots").glob("*.png")) if (run / "plots").is_dir() else []
    first = ("history.png", "confusion_matrix.png", "per_class.png")
    plots.sort(key=lambda p: (first.index(p.name) if p.name in first else len(first), p.name))

    cfg = config if isinstance(config, Mapping) else None
    if title is None:
        name = cfg.get("name") if cfg else None
        title = f"cnnkit run {name or run.name}"
    command = cfg.get("command") if cfg else None
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    sections = [
        (
            "Command",
            f'<code class="cmd">{_e(command)}</code>' if command else _missing("command"),
        ),
        ("Results", _metrics_section(metrics)),
        ("Plots", _figures(plots)),
        ("Training history", _history_section(history)),
        (
            "Model summary",
            f"<pre>{_e(summary.rstrip())}</pre>" if summary else _missing("summary.txt"),
        ),
    ]
    if cfg is not None:
        body = {k: v for k, v in cfg.items() if k != "command"}
        text = dump_yaml(body, sort_keys=False, default_flow_style=None)
        sections.append(("Config", f"<pre>{_e(text)}</pre>"))
    elif config is not None:
        sections.append(("Config", f"<pre>{_e(config)}</pre>"))
    else:
        sections.append(("Config", _missing("config.yaml")))
    if isinstance(env, Mapping):
        sections.append(("Environment", _table(["", "value"], [[k, v] for k, v in env.items()])))
    else:
        sections.append(("Environment", _missing("environment.json")))

    page = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">run folder {_e(run.resolve().name)} &middot; report written {now}</p>',
    ]
    if (run / MODEL_PAGE).is_file():
        page.append(
            f'<p><a id="model-page" href="{MODEL_PAGE}">Explore the model interactively</a>: '
            "its layers, receptive fields, feature maps of test inputs and class activation "
            "maps (a page written alongside this report).</p>"
        )
    for name, content in sections:
        slug = name.lower().replace(" ", "-")
        page.append(f'<section id="{slug}"><h2>{_e(name)}</h2>\n{content}\n</section>')
    page.append("</main></body></html>")
    out = run / "report.html"
    out.write_text("\n".join(page) + "\n", encoding="utf-8")
    return out
