"""Regenerate REPRODUCTIONS.md from `cnnkit reproduce` summaries.

    python bench/collect_reproductions.py                         # rewrite REPRODUCTIONS.md
    python bench/collect_reproductions.py --add runs/repro/*/reproduce.json   # keep new ones
    python bench/collect_reproductions.py --check                 # exit 1 if out of date

The summaries live in bench/reproductions/ as ``<recipe>-<dataset>-<precision>.json``
(copies of the ``reproduce.json`` a ``cnnkit reproduce ... --out DIR`` wrote; the run
folders and weights stay outside the repository). bench/reproductions/TEMPLATE.md holds
the prose; its ``{{TABLE}}``, ``{{PARITY}}``, ``{{NOT_RERUN}}`` and ``{{NOTES}}`` fields
are filled in here. Every row says the seeds, precision, CPU (AMX or not), wall and CPU
time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "bench" / "reproductions"
TEMPLATE = FOLDER / "TEMPLATE.md"
OUTPUT = ROOT / "REPRODUCTIONS.md"
MAX_BYTES = 4_000_000  # a summary is a few kB; refuse anything far larger unread

#: the recipes issue 21 asks to reproduce (recipe, dataset, seeds), in the table's order
EXPECTED = (
    ("ucr-fcn1d", "GunPoint", 5), ("ucr-fcn1d", "ECG200", 5), ("ucr-fcn1d", "Coffee", 5),
    ("ucr-resnet1d", "GunPoint", 5), ("ucr-resnet1d", "ECG200", 5),
    ("ucr-resnet1d", "Coffee", 5),
    ("digits-lenet5", "digits", 5), ("mnist1d-cnn", "mnist1d", 5), ("shapes-unet", "shapes", 5),
    ("localization-mnist", "localization_mnist", 5), ("moving-mnist-c3d", "moving_mnist", 5),
    ("shapes-maskrcnn", "shapes_instances", 3), ("mnist-cnn", "mnist", 3),
)  # fmt: skip
FILE_TIMES = (
    "† Seeds trained with `cnnkit train RECIPE --seed N --out DIR/seed-N` and collected by "
    "`cnnkit reproduce RECIPE --out DIR --resume`: their wall time comes from the run "
    "folder's file times (training and scoring, without start-up and the report) and their "
    "CPU time was not recorded."
)


def load_summary(path: Path) -> dict[str, Any]:
    from cnnkit._core.errors import CnnkitError
    from cnnkit._core.json_file import read_json

    try:  # cnnkit's bounded reader: the size is checked before the file is read
        data = read_json(path, MAX_BYTES, "a cnnkit reproduce summary")
    except CnnkitError as err:
        raise SystemExit(str(err)) from None
    if not isinstance(data, dict):
        raise SystemExit(f"{path} does not hold a JSON object: not a cnnkit reproduce summary")
    for key in ("recipe", "dataset", "seeds", "precision", "metrics", "cpu", "wall_seconds"):
        if key not in data:
            raise SystemExit(f"{path} lacks {key!r}: not a cnnkit reproduce summary")
    return data


def ran(summary: dict[str, Any]) -> str:
    """The precision the seeds trained in (``precision_used``; ``--precision auto`` may
    mean fp32, bf16 or a recipe's ``compile.precision``), else the one asked for."""
    used = summary.get("precision_used")
    return used if isinstance(used, str) else str(summary["precision"])


def _precision(summary: dict[str, Any]) -> str:
    asked = str(summary["precision"])
    return ran(summary) if asked == ran(summary) else f"{ran(summary)} (`--precision {asked}`)"


def canonical_name(summary: dict[str, Any]) -> str:
    recipe = Path(str(summary["recipe"])).stem
    return f"{recipe}-{summary['dataset']}-{ran(summary)}.json"


def add(paths: list[Path]) -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    for path in paths:
        summary = load_summary(path)
        target = FOLDER / canonical_name(summary)
        shutil.copyfile(path, target)
        print(f"{path} -> {target.relative_to(ROOT)}")


def summaries() -> list[dict[str, Any]]:
    return [load_summary(p) for p in sorted(FOLDER.glob("*.json"))]


def _pm(stats: dict[str, Any] | None, pct: bool) -> str:
    if not stats:
        return "-"
    scale, unit = (100.0, " %") if pct else (1.0, "")
    digits = 2 if pct else 4
    std = stats.get("std")
    text = f"{stats['mean'] * scale:.{digits}f}"
    if std is not None:
        text += f" ± {std * scale:.{digits}f}"
    return text + unit + f" ({stats['min'] * scale:.{digits}f} - {stats['max'] * scale:.{digits}f})"


def _is_fraction(metric: str) -> bool:
    return "accuracy" in metric


def _cpu(cpu: dict[str, Any]) -> str:
    amx = "AMX" if cpu.get("amx") else "no AMX"
    bf16 = "native bf16" if cpu.get("native_bf16") else "bf16 emulated"
    return f"{cpu.get('model')}, {amx}, {bf16}"


def _yes(flag: Any) -> str:
    return {True: "yes", False: "**no**"}.get(flag, "-")


def _from_files(s: dict[str, Any]) -> bool:
    return any(r.get("timing_from_files") for r in s.get("runs", []))


def _seconds(s: dict[str, Any]) -> str:
    n = len(s["seeds"])
    mark = " †" if _from_files(s) else ""
    wall = f"{s['wall_seconds']:.0f} s ({s['wall_seconds'] / n:.0f} s/seed){mark}"
    cpu = s.get("cpu_seconds")
    return wall + (f"; CPU {cpu:.0f} s" if cpu else "; CPU -")


def row(s: dict[str, Any]) -> str:
    ref = s.get("reference") or {}
    metric = ref.get("metric", "accuracy")
    stats = s["metrics"].get(f"test.{metric}")
    pct = _is_fraction(metric)
    if "value" in ref:
        value = f"{ref['value'] * 100:.2f} %" if pct else f"{ref['value']}"
        tol = ref.get("tolerance") or 0
        tol = f"{tol * 100:.1f} points" if pct else f"{tol}"
        reference = f"{value} (tolerance {tol}): {ref['source']}"
    else:
        reference = ref.get("text", "-")
    recipe = Path(str(s["recipe"])).stem
    return (
        f"| `{recipe}` | {s['dataset']} | {metric}: {_pm(stats, pct)} | {reference} | "
        f"{_yes(ref.get('within_range'))} | {_yes(ref.get('meets'))} | "
        f"{len(s['seeds'])} ({', '.join(str(x) for x in s['seeds'])}) | {s['epochs']} | "
        f"{_precision(s)} | {_cpu(s['cpu'])} | {_seconds(s)} |"
    )


def table(items: list[dict[str, Any]]) -> str:
    lines = [
        "| recipe | dataset | test metric: mean ± std (min - max) | reference | in range | "
        "meets | seeds | epochs | precision | CPU | wall (CPU) time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = {(r, d): i for i, (r, d, _) in enumerate(EXPECTED)}
    items = sorted(items, key=lambda s: (order.get((Path(str(s["recipe"])).stem, s["dataset"]),
                                                   99), s["recipe"], ran(s) != "fp32"))  # fmt: skip
    lines += [row(s) for s in items]
    measured = [s["cpu_seconds"] for s in items if s.get("cpu_seconds")]
    total_wall = sum(s["wall_seconds"] for s in items)
    lines += ["", f"Total over these rows: wall {total_wall / 60:.0f} min; CPU "
              f"{sum(measured) / 60:.0f} min over the {len(measured)} rows that measured it."]  # fmt: skip
    if any(_from_files(s) for s in items):
        lines += ["", FILE_TIMES]
    return "\n".join(lines)


def _auto(recipe: str) -> str:
    """What ``--precision auto`` runs for a shipped recipe: its ``compile.precision`` if it
    fixes one, else bf16 on a CPU with native bf16 (AMP on CUDA), fp32 elsewhere."""
    from cnnkit.cli.recipes import list_recipes, load_config

    if recipe not in list_recipes():
        return "-"
    fixed = load_config(recipe)["compile"].get("precision")
    return f"{fixed} (the recipe's `compile.precision`)" if fixed else "bf16 where native"


def _same_seeds(summary: dict[str, Any], seeds: list[int], metric: str) -> str:
    """Mean of ``metric`` over the runs of ``summary`` whose seed is in ``seeds``."""
    values = [r["metrics"].get(f"test.{metric}") for r in summary.get("runs", [])
              if r.get("seed") in seeds]  # fmt: skip
    values = [v for v in values if isinstance(v, (int, float))]
    return f"{sum(values) / len(values):.4f}" if len(values) == len(seeds) else "-"


def parity(items: list[dict[str, Any]]) -> str:
    """bf16 against fp32 where both ran: the bf16 mean within one fp32 std of the fp32 mean."""
    by_key: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for s in items:
        by_key.setdefault((Path(str(s["recipe"])).stem, s["dataset"]), {})[ran(s)] = s
    lines = []
    for (recipe, dataset), runs in by_key.items():
        if "fp32" not in runs or "bf16" not in runs:
            continue
        metric = (runs["fp32"].get("reference") or {}).get("metric", "accuracy")
        a = runs["fp32"]["metrics"].get(f"test.{metric}")
        b = runs["bf16"]["metrics"].get(f"test.{metric}")
        if not a or not b:
            continue
        std = a.get("std") or 0.0
        ok = abs(b["mean"] - a["mean"]) <= std
        seeds = list(runs["bf16"]["seeds"])
        lines.append(
            f"| `{recipe}` | {dataset} | {metric} | {a['mean']:.4f} ± {std:.4f} "
            f"({len(runs['fp32']['seeds'])}) | {_same_seeds(runs['fp32'], seeds, metric)} | "
            f"{b['mean']:.4f} ± {(b.get('std') or 0):.4f} ({len(seeds)}) | {_yes(ok)} | "
            f"{_auto(recipe)} | {_cpu(runs['bf16']['cpu'])} |"
        )
    if not lines:
        return ("Precision parity (`--precision bf16`): no recipe has both an fp32 and a bf16 "
                "reproduction yet.")  # fmt: skip
    head = [
        "Precision parity: the recipe with `--precision bf16` (bf16 autocast; emulated and "
        "slow on CPUs without native bf16) on seeds of its fp32 reproduction "
        "(seed counts in parentheses; the fp32 mean over those same seeds is given too). "
        "The last but one column says what `--precision auto` runs for the recipe:",
        "",
        "| recipe | dataset | metric | fp32 mean ± std (seeds) | fp32 mean, same seeds as "
        "bf16 | bf16 mean ± std (seeds) | bf16 within one fp32 std | `auto` runs | CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    return "\n".join(head + lines)


def not_rerun(items: list[dict[str, Any]]) -> str:
    done = {(Path(str(s["recipe"])).stem, s["dataset"]): len(s["seeds"]) for s in items
            if ran(s) != "bf16"}  # fmt: skip
    missing = [f"`{r}` ({d})" for r, d, _ in EXPECTED if (r, d) not in done]
    short = [f"`{r}` ({d}): {done[(r, d)]} of {n}" for r, d, n in EXPECTED
             if (r, d) in done and done[(r, d)] < n]  # fmt: skip
    out = []
    if missing:
        out.append(
            "Not re-run with `cnnkit reproduce` (no CPU time left in the session that generated "
            "this file); their single-seed figures stay in the issue-7 table below: "
            + ", ".join(missing) + "."
        )  # fmt: skip
    if short:
        out.append("Fewer seeds than issue 21 asks for (CPU time): " + "; ".join(short) + ".")
    return "\n\n".join(out)


def notes(items: list[dict[str, Any]]) -> str:
    out = []
    for s in items:
        ref = s.get("reference") or {}
        if ref.get("note"):
            out.append(f"- `{Path(str(s['recipe'])).stem}` ({s['dataset']}): {ref['note']}")
    return "\n".join(out)


def render() -> str:
    items = summaries()
    text = TEMPLATE.read_text(encoding="utf-8")
    text = text.split("-->\n", 1)[1] if text.startswith("<!--") else text
    fields = {
        "{{TABLE}}": table(items) if items else "(no summaries yet)",
        "{{PARITY}}": parity(items),
        "{{NOT_RERUN}}": not_rerun(items),
        "{{NOTES}}": notes(items),
    }
    for key, value in fields.items():
        text = text.replace(key, value)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--add", nargs="+", type=Path, default=[],
                        help="reproduce.json files to copy into bench/reproductions/")  # fmt: skip
    parser.add_argument("--check", action="store_true",
                        help="only check that REPRODUCTIONS.md is up to date")  # fmt: skip
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    add(args.add)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run python bench/collect_reproductions.py")
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
