"""``cnnkit reproduce RECIPE``: train a recipe once per seed, then summarise the spread.

    cnnkit reproduce ucr-fcn1d --seeds 5 --dataset ECG200 --out repro/ucr-ecg200
    cnnkit reproduce ucr-fcn1d --out repro/ucr-ecg200 --resume      # after an interruption

DIR/
    reproduce-plan.json  what is being reproduced (recipe, dataset, seeds, precision, ...)
    seed-0/ seed-1/ ...  one normal run folder per seed (``cnnkit train``'s layout)
    reproduce.json       every metric's mean, std, min and max over the seeds, the recipe's
    reproduce.md         published reference and whether it lies in the observed range

``--resume`` skips seeds whose run finished (``metrics.json`` written), continues a seed
that stopped mid-training from its last checkpoint, and starts the rest; it may add seeds
(``--seeds 5`` after a ``--seeds 3`` reproduction) but not change the others' options.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit._core.errors import CnnkitError, ConfigError
from cnnkit.cli import run_folder

log = logging.getLogger("cnnkit.cli")

PLAN = "reproduce-plan.json"
SUMMARY_JSON = "reproduce.json"
SUMMARY_MD = "reproduce.md"
#: config sections that must agree between the plan and every seed's run
COMPARED = ("task", "dataset", "model", "compile", "fit")
#: the plan entries ``--resume`` takes from the plan when the command does not repeat them
PLAN_KEYS = ("recipe", "dataset", "seeds", "precision", "epochs", "limit", "data_dir")


def seed_list(seeds: int | None, listed: list[int] | None, default: int = 5) -> list[int]:
    """``--seeds N`` (seeds 0..N-1) or ``--seed-list a b c``; 5 seeds without either."""
    if seeds is not None and listed is not None:
        raise ConfigError("pass either --seeds N or --seed-list S1 S2 ..., not both.")
    if listed is None:
        n = default if seeds is None else seeds
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"--seeds must be a positive number of seeds; received {n!r}.")
        return list(range(n))
    if not listed:
        raise ConfigError("--seed-list needs at least one seed, e.g. --seed-list 0 1 2.")
    bad = [s for s in listed if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ConfigError(f"--seed-list takes integers >= 0; received {bad[0]!r}.")
    if len(set(listed)) != len(listed):
        dup = sorted({s for s in listed if listed.count(s) > 1})
        raise ConfigError(f"--seed-list repeats seed(s) {dup}; each seed is trained once.")
    return list(listed)


def spread(values: list[float]) -> dict[str, Any]:
    """mean, std (sample standard deviation, ddof=1; None for one value), min, max, n."""
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else None,
        "min": float(arr.min()),
        "max": float(arr.max()),
        "n": int(arr.size),
        "values": [float(v) for v in arr],
    }


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a run's metrics.json as ``test.accuracy``, ``val.loss``,
    ``train_seconds``, ``epochs`` (per-class tables and matrices are left out)."""
    flat: dict[str, float] = {}
    for section in ("test", "val"):
        for key, value in (metrics.get(section) or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                flat[f"{section}.{key}"] = float(value)
    for key in ("train_seconds", "epochs", "params"):
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            flat[key] = float(value)
    return flat


def dataset_label(config: dict[str, Any]) -> str:
    """The dataset a run used: ``dataset.args.name`` when the loader takes one (a UCR
    set), else the loader's name."""
    name = config["dataset"].get("args", {}).get("name")
    return str(name) if isinstance(name, str) else str(config["dataset"]["name"])


def select_reference(config: dict[str, Any]) -> dict[str, Any] | str | None:
    """The recipe's reference for the dataset in use (a list holds one per dataset)."""
    ref = config.get("reference")
    if not isinstance(ref, list):
        if isinstance(ref, dict) and ref.get("dataset") not in (None, dataset_label(config)):
            return None
        return ref
    label = dataset_label(config).lower()
    for item in ref:
        if str(item.get("dataset", "")).lower() == label:
            return item
    return None


def compare_reference(ref: Any, metrics: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The reference with the observed spread of its metric: ``within_range`` (min <=
    value <= max), ``difference`` (mean - value) and ``meets`` (mean no more than
    ``tolerance`` below the value; ``direction: lower`` for errors: not above it)."""
    if ref is None:
        return None
    if isinstance(ref, str):
        return {"text": ref}
    out = dict(ref)
    stats = metrics.get(f"test.{ref['metric']}")
    if stats is None:
        out["observed"] = None
        return out
    value, tol = float(ref["value"]), float(ref.get("tolerance") or 0.0)
    out["observed"] = {k: stats[k] for k in ("mean", "std", "min", "max", "n")}
    out["difference"] = stats["mean"] - value
    out["within_range"] = bool(stats["min"] <= value <= stats["max"])
    if ref.get("direction") == "lower":
        out["meets"] = bool(stats["mean"] <= value + tol)
    else:
        out["meets"] = bool(stats["mean"] >= value - tol)
    return out


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and the flags that decide bf16 speed (AMX, AVX-512)."""
    from cnnkit.train.precision import cpu_has_native_bf16

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    wanted = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")
    return {
        "model": model,
        "cores": os.cpu_count(),
        "flags": [f for f in wanted if f in flags],
        "amx": "amx_bf16" in flags,
        "native_bf16": cpu_has_native_bf16(),
    }


# ------------------------------------------------------------------------ the runs


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = run_folder.read_json(path)
    except OSError as err:  # a missing file
        raise CnnkitError(f"{path} cannot be read as JSON: {err}") from None
    if not isinstance(data, dict):
        raise CnnkitError(f"{path} does not hold a JSON object.")
    return data


def _check_seed_run(run: Path, config: dict[str, Any], seed: int, precision: str) -> None:
    """A seed folder found on --resume must come from the same config, seed and precision."""
    saved = run_folder.read_config(run)
    if saved.get("seed") != seed:
        raise CnnkitError(f"{run} was trained with seed {saved.get('seed')!r}, not {seed}.")
    for key in COMPARED:
        if saved.get(key) != config.get(key):
            raise CnnkitError(
                f"{run} was trained with another {key!r} section than this reproduction "
                f"({saved.get(key)!r} vs {config.get(key)!r}); use a new --out."
            )
    used = saved.get("run", {}).get("precision")
    if used is not None and used != precision:
        raise CnnkitError(f"{run} was trained with --precision {used}, not {precision}.")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _train_seed(
    config: dict[str, Any], run: Path, seed: int, options: dict[str, Any]
) -> dict[str, Any]:
    """Train (or continue) one seed's run; returns its timing record."""
    from cnnkit.cli.training import train

    seeded = dict(config, seed=seed, name=f"{config['name']}-seed{seed}")
    resume = (run / run_folder.CONFIG).is_file() and (
        run / run_folder.CHECKPOINTS / "last"
    ).is_dir()
    if not resume and run.exists():
        shutil.rmtree(run)  # stopped before its first checkpoint: nothing to keep
    run.mkdir(parents=True, exist_ok=True)
    argv = ["train", str(options["recipe"]), "--seed", str(seed), "--out", str(run)]
    wall, cpu = time.perf_counter(), _cpu_seconds()
    train(
        seeded, run, argv, resume=resume, device=options["device"],
        precision=options["precision"], data_dir=options["data_dir"],
        limit=options["limit"], verbose=options["verbose"],
    )  # fmt: skip
    return {
        "wall_seconds": time.perf_counter() - wall,
        "cpu_seconds": _cpu_seconds() - cpu,
        "resumed": resume,
    }


def reproduce(
    config: dict[str, Any], out: Path, seeds: list[int], options: dict[str, Any], *,
    resume: bool = False, report=None,
) -> dict[str, Any]:  # fmt: skip
    """Train ``config`` once per seed under ``out`` and write the summaries; returns the
    summary. ``options``: recipe, dataset, precision, device, data_dir, limit, verbose,
    epochs, command. ``report(line)`` is told about every seed."""
    report = report or (lambda line: None)
    plan = {k: options.get(k) for k in PLAN_KEYS}
    plan["seeds"] = seeds
    plan_path = out / PLAN
    timings: dict[str, Any] = {}
    if resume and plan_path.is_file():
        saved = _read_json(plan_path)
        for key in PLAN_KEYS:
            if key == "seeds" and set(saved.get(key) or ()) <= set(seeds):
                continue  # more seeds: the finished ones are kept, the new ones trained
            if saved.get(key) != plan[key]:
                raise ConfigError(
                    f"--resume: {out} reproduces {key} {saved.get(key)!r}, not {plan[key]!r}; "
                    "repeat the original options (or leave them out) or use a new --out."
                )
        timings = saved.get("timings", {})
        if not isinstance(timings, dict):
            raise CnnkitError(f"{plan_path}: 'timings' must be a mapping; not a cnnkit plan.")
    elif not resume and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CnnkitError(
            f"{str(out)!r} already exists; pass --resume to continue that reproduction or a new "
            "--out (cnnkit never overwrites a run)."
        )
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for seed in seeds:
        run = out / f"seed-{seed}"
        if (run / run_folder.METRICS).is_file():
            if not resume:
                raise CnnkitError(f"{run} holds a finished run; pass --resume to keep it.")
            _check_seed_run(run, config, seed, options["precision"])
            report(f"seed {seed}: finished earlier, kept ({run})")
            continue
        if (run / run_folder.CONFIG).is_file():
            _check_seed_run(run, config, seed, options["precision"])
        report(f"seed {seed}: training -> {run}")
        timings[str(seed)] = _train_seed(config, run, seed, options)
        run_folder.write_json(plan_path, {**plan, "timings": timings})
        report(f"seed {seed}: done in {timings[str(seed)]['wall_seconds']:.0f} s")
    run_folder.write_json(plan_path, {**plan, "timings": timings})
    summary = summarise(config, out, seeds, options, timings)
    summary["command_seconds"] = time.perf_counter() - started
    run_folder.write_json(out / SUMMARY_JSON, summary)
    (out / SUMMARY_MD).write_text(markdown(summary), encoding="utf-8")
    return summary


def _seed_record(run: Path, seed: int, timing: dict[str, Any] | None) -> dict[str, Any]:
    metrics = _read_json(run / run_folder.METRICS)
    env_path = run / "environment.json"
    env = _read_json(env_path) if env_path.is_file() else {}
    record: dict[str, Any] = {
        "seed": seed,
        "run": run.name,
        "metrics": flat_metrics(metrics),
        "precision": env.get("precision"),
        "torch_threads": env.get("torch_threads"),
    }
    if timing:
        record.update({k: timing.get(k) for k in ("wall_seconds", "cpu_seconds", "resumed")})
    else:  # trained by an earlier command: from its files' times
        start = (run / run_folder.CONFIG).stat().st_mtime
        record["wall_seconds"] = (run / run_folder.METRICS).stat().st_mtime - start
        record["cpu_seconds"] = None
        record["timing_from_files"] = True
    return record


def summarise(
    config: dict[str, Any], out: Path, seeds: list[int], options: dict[str, Any],
    timings: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """reproduce.json's content from the finished seed folders under ``out``."""
    import torch

    from cnnkit._core import __version__

    runs = [_seed_record(out / f"seed-{s}", s, timings.get(str(s))) for s in seeds]
    names = sorted(set.intersection(*(set(r["metrics"]) for r in runs)))
    metrics = {n: spread([r["metrics"][n] for r in runs]) for n in names}
    cpu = [r["cpu_seconds"] for r in runs]
    used = sorted({str(r["precision"]) for r in runs})
    return {
        "recipe": options["recipe"],
        "name": config["name"],
        "dataset": dataset_label(config),
        "model": config["model"]["name"],
        "seeds": seeds,
        "epochs": config["fit"]["epochs"],
        "limit": options.get("limit"),
        "precision": options["precision"],
        "precision_used": used[0] if len(used) == 1 else used,
        "device": options["device"],
        "cpu": cpu_info(),
        "torch_threads": runs[0].get("torch_threads"),
        "torch": torch.__version__,
        "cnnkit": __version__,
        "metrics": metrics,
        "reference": compare_reference(select_reference(config), metrics),
        "wall_seconds": float(sum(r["wall_seconds"] for r in runs)),
        "cpu_seconds": float(sum(cpu)) if all(c is not None for c in cpu) else None,
        "runs": runs,
        "command": options.get("command"),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return str(value)


def describe_cpu(cpu: dict[str, Any]) -> str:
    native = "native bf16" if cpu.get("native_bf16") else "no native bf16 (bf16 is emulated)"
    amx = "AMX" if cpu.get("amx") else "no AMX"
    return f"{cpu.get('model')}, {cpu.get('cores')} cores, {amx}, {native}"


def markdown(summary: dict[str, Any]) -> str:
    """reproduce.md: the spread of every metric and the reference check."""
    seeds = summary["seeds"]
    lines = [
        f"# cnnkit reproduce {summary['recipe']} ({summary['dataset']})",
        "",
        f"- command: `{summary.get('command')}`",
        f"- seeds: {', '.join(str(s) for s in seeds)} ({len(seeds)})",
        f"- precision: {summary['precision']} (used: {summary['precision_used']}), "
        f"device {summary['device']}, {summary['torch_threads']} torch thread(s)",
        f"- CPU: {describe_cpu(summary['cpu'])}",
        f"- epochs: {summary['epochs']}; wall time {summary['wall_seconds']:.0f} s in all"
        + (f", CPU time {summary['cpu_seconds']:.0f} s" if summary["cpu_seconds"] else ""),
        f"- torch {summary['torch']}, cnnkit {summary['cnnkit']}",
        "",
        "| metric | mean | std | min | max |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, s in summary["metrics"].items():
        lines.append(
            f"| {name} | {_fmt(s['mean'])} | {_fmt(s['std'])} | {_fmt(s['min'])} | "
            f"{_fmt(s['max'])} |"
        )
    ref = summary.get("reference")
    lines += ["", "## Reference", ""]
    if not ref:
        lines.append("The recipe names no published figure for this dataset.")
    elif "text" in ref:
        lines.append(ref["text"])
    else:
        lines.append(f"{ref['metric']} {ref['value']} ({ref['source']}), tolerance "
                     f"{ref.get('tolerance') or 0}.")  # fmt: skip
        if ref.get("observed"):
            lines.append(
                f"Observed mean {_fmt(ref['observed']['mean'])} (difference "
                f"{ref['difference']:+.4f}); reference within the observed range: "
                f"{'yes' if ref['within_range'] else 'no'}; meets it within the tolerance: "
                f"{'yes' if ref['meets'] else 'no'}."
            )
        else:
            lines.append(f"The runs do not report test.{ref['metric']}.")
        if ref.get("note"):
            lines.append("")
            lines.append(str(ref["note"]))
    tested = [n for n in summary["metrics"] if n.startswith("test.")]
    lines += ["", "| seed | run | " + " | ".join(tested) + " | wall s |"]
    lines.append("| --- | --- | " + " | ".join("---" for _ in tested) + " | --- |")
    for r in summary["runs"]:
        cells = " | ".join(_fmt(r["metrics"].get(n)) for n in tested)
        lines.append(f"| {r['seed']} | {r['run']} | {cells} | {r['wall_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ the command


def cmd_reproduce(args: Any) -> int:
    """``cnnkit reproduce``: resolve the options (on --resume, missing ones from the plan)."""
    from cnnkit.cli.commands import _resolve

    out = Path(args.out) if args.out else None
    saved: dict[str, Any] = {}
    if args.resume:
        if out is None:
            raise CnnkitError("--resume continues the reproduction in --out; pass --out DIR.")
        if (out / PLAN).is_file():
            saved = run_folder.run_options(_read_json(out / PLAN), out / PLAN)
        elif not out.is_dir():
            raise CnnkitError(f"--resume: {str(out)!r} does not exist; drop --resume to start.")
    listed = args.seed_list
    if args.seeds is None and listed is None and "seeds" in saved:
        listed = saved["seeds"]
    seeds = seed_list(args.seeds, listed)
    for key in ("dataset", "precision", "epochs", "limit", "data_dir"):
        if getattr(args, key) is None and saved.get(key) is not None:
            setattr(args, key, saved[key])
    args.precision = args.precision or "auto"
    args.seed, args.batch_size = None, None
    config = _resolve(args)
    if out is None:
        out = run_folder.default_run_dir(f"reproduce-{config['name']}")
    options = {
        "recipe": args.recipe, "dataset": args.dataset, "seeds": seeds,
        "precision": args.precision, "epochs": args.epochs, "limit": args.limit,
        "data_dir": args.data_dir, "device": args.device, "verbose": args.verbose,
        "command": " ".join(["cnnkit", *args.argv]),
    }  # fmt: skip
    print(f"cnnkit reproduce {config['name']}: {len(seeds)} seed(s) {seeds}, "
          f"precision {args.precision} -> {out}")  # fmt: skip
    summary = reproduce(config, out, seeds, options, resume=args.resume, report=print)
    print(markdown(summary), end="")
    print(f"summary: {out / SUMMARY_JSON}, {out / SUMMARY_MD}")
    return 0
