"""``cnnkit train ... --out R --resume``: the same command line is safe to relaunch
from any state of the run folder ``R`` (what a scheduler does after a preemption).

=====================================  ===========================================
state of ``R``                         what ``--resume`` does
=====================================  ===========================================
absent or empty                        starts the run
config.yaml, no checkpoint yet         starts from the beginning (a changed config
                                       is used and the changed keys are logged)
a checkpoint                           continues from it (mid-epoch too); a config
                                       that differs (other than a raised
                                       ``fit.epochs``) is refused, naming the keys,
                                       unless ``--resume force``
all epochs trained, results written    says so and exits 0 with the final metrics
=====================================  ===========================================
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit._core.errors import CnnkitError, ConfigError, short
from cnnkit.cli import run_folder

log = logging.getLogger("cnnkit.cli")

#: what a ``cnnkit train`` run folder may hold before its first checkpoint
RUN_FILES = {
    run_folder.CONFIG,
    run_folder.CHECKPOINTS,
    run_folder.HISTORY,
    run_folder.METRICS,
    run_folder.PLOTS,
    "tensorboard",
    "model.json",
    "model.safetensors",
    "summary.txt",
    "environment.json",
    "report.html",
}
#: config keys that may differ between the run and a relaunch: descriptions only
IGNORED = ("name", "description", "reference")
#: ``run`` options that change what is trained (``data_dir`` and ``device`` may move)
RUN_OPTIONS = ("limit", "precision")


@dataclass
class RunState:
    """What a run folder holds (read only, nothing is created)."""

    path: Path
    saved: dict[str, Any] | None = None
    checkpoint: bool = False
    completed: int = 0
    mid_epoch: bool = False
    finished: bool = False
    foreign: list[str] = field(default_factory=list)


def inspect_run(out: str | os.PathLike) -> RunState:
    from cnnkit.train.checkpoint import find_checkpoint, has_checkpoint, read_checkpoint_info

    path = Path(out)
    state = RunState(path)
    if path.exists() and not path.is_dir():
        raise CnnkitError(f"--out {str(path)!r} is a file; pass a run folder.")
    if not path.is_dir():
        return state
    if (path / run_folder.CONFIG).is_file():
        state.saved = run_folder.read_config(path)
    else:
        state.foreign = sorted(p.name for p in path.iterdir() if p.name not in RUN_FILES)
    ck = path / run_folder.CHECKPOINTS
    if has_checkpoint(ck):
        state.checkpoint = True
        try:
            info = read_checkpoint_info(find_checkpoint(ck))
        except CnnkitError:  # damaged newest: fit falls back to the previous one
            info = {"epoch": -1}
        epoch, position = info.get("epoch", -1), info.get("position") or {}
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not isinstance(position, dict):
            raise CnnkitError(
                f"{ck}: the checkpoint's epoch ({short(epoch)}) or position is malformed; not "
                "a checkpoint cnnkit wrote."
            )
        state.completed = epoch + 1
        state.mid_epoch = bool(position.get("step"))
        state.finished = _finished(path, state.completed)
    return state


def _finished(path: Path, completed: int) -> bool:
    """Results of ``completed`` epochs written, the report last (removed when a run
    starts writing its results, so a kill in between leaves the run unfinished)."""
    if not (path / "report.html").is_file():
        return False
    try:
        metrics = run_folder.read_json(path / run_folder.METRICS)
    except (OSError, CnnkitError):
        return False
    return isinstance(metrics, dict) and metrics.get("epochs") == completed


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def differences(saved: dict[str, Any], new: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every config key (and run option) that differs; a raised
    ``fit.epochs`` is not a difference."""
    from cnnkit.cli.recipes import validate

    old = validate(saved, "config.yaml")
    a = _flat({k: v for k, v in old.items() if k not in IGNORED})
    b = _flat({k: v for k, v in new.items() if k not in IGNORED})
    saved_run = saved.get("run") or {}
    for key in RUN_OPTIONS:
        if key in saved_run:  # instance runs record no precision
            a[f"run.{key}"], b[f"run.{key}"] = saved_run[key], options.get(key)
    out = []
    for key in sorted(set(a) | set(b)):
        if key == "fit.epochs" and isinstance(b.get(key), int) and b[key] >= (a.get(key) or 0):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            out.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return out


def plan(args: Any, config: dict[str, Any], state: RunState) -> dict[str, Any]:
    """How ``cnnkit train --resume`` goes on from ``state``; see the module doc. Returns
    ``{'resume': bool, 'data_dir', 'limit', 'finished': bool}``; raises when it cannot."""
    saved_run = run_folder.run_options(
        (state.saved or {}).get("run"), state.path / run_folder.CONFIG
    )
    data_dir = args.data_dir if args.data_dir is not None else saved_run.get("data_dir")
    limit = args.limit if args.limit is not None else saved_run.get("limit")
    options = {"limit": limit, "precision": args.precision or "auto"}
    result = {"resume": state.checkpoint, "data_dir": data_dir, "limit": limit, "finished": False}
    if state.foreign:
        raise CnnkitError(
            f"--resume: {str(state.path)!r} holds no run (no {run_folder.CONFIG}) but other "
            f"files ({', '.join(state.foreign[:5])}); pass an empty or new folder as --out."
        )
    if state.saved is None:
        return result  # absent, empty or killed before config.yaml: start
    changed = differences(state.saved, config, options)
    if not state.checkpoint:
        if changed:
            log.warning(
                "%s holds no checkpoint yet: starting from the beginning with the new config "
                "(changed: %s)",
                state.path,
                "; ".join(changed),
            )
        return result
    if changed and args.resume != "force":
        raise ConfigError(
            f"--resume: the config differs from the run in {str(state.path)!r}: "
            f"{'; '.join(changed)}. Relaunch with the run's settings, pass `--resume force` "
            "to continue its checkpoint with the new ones, or choose another --out."
        )
    if changed:
        log.warning("--resume force: continuing %s with %s", state.path, "; ".join(changed))
    epochs = config["fit"]["epochs"]
    result["finished"] = state.finished and state.completed >= epochs and not state.mid_epoch
    return result


def print_finished(run: Path, epochs: int) -> None:
    metrics = run_folder.read_json(run / run_folder.METRICS)
    print(f"the run in {run} already finished all {epochs} epochs; nothing to do")
    test = metrics.get("test", {}) if isinstance(metrics, dict) else {}
    test = test if isinstance(test, dict) else {}
    print("test: " + ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {short(v, 40)}" for k, v in test.items()
    ))  # fmt: skip


def failure_hint(run: Path) -> str:
    """What to do after a failure: added to the error of a run without a checkpoint."""
    from cnnkit.train.checkpoint import has_checkpoint

    if not run.is_dir() or has_checkpoint(run / run_folder.CHECKPOINTS):
        return ""
    return (
        f" The run folder {str(run)!r} holds no checkpoint yet: fix the cause and rerun the "
        "same command with --out and --resume; it starts again from the beginning."
    )
