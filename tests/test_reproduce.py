"""``cnnkit reproduce``: one run per seed, the summary's statistics, --resume, bad input.

References: NumPy's mean/std(ddof=1)/min/max over the seeds' own metrics.json files; the
file times of finished seeds (a resumed reproduction must not retrain them).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from cnnkit.cli import reproduce as rp
from cnnkit.cli import training
from cnnkit.cli.main import main
from cnnkit.train.callbacks import Callback

CONFIG = {
    "task": "classification",
    "dataset": {"name": "digits", "args": {"size": 32}},
    "model": {"name": "lenet5", "args": {}},
    "compile": {"optimizer": "adam", "learning_rate": 0.01,
                "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
    "fit": {"epochs": 2, "batch_size": 16},
    "reference": {"metric": "accuracy", "value": 0.3, "tolerance": 0.05, "source": "a test"},
}  # fmt: skip
FAST = ["--limit", "48", "--precision", "fp32", "--device", "cpu"]


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return str(path)


class Interrupt(Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def test_interrupted_reproduction_resumes_and_summary_equals_numpy(tmp_path, config, monkeypatch):
    out = tmp_path / "repro"
    original = training._callbacks
    calls = []

    def interrupt_seed_5(run, monitor, resume, *checkpoint_every):
        cbs = original(run, monitor, resume, *checkpoint_every)
        calls.append(run.name)
        if run.name == "seed-5" and not resume:
            cbs.append(Interrupt())  # after the checkpoint of epoch 1 of 2
        return cbs

    monkeypatch.setattr(training, "_callbacks", interrupt_seed_5)
    argv = ["reproduce", config, "--seed-list", "3", "5", "8", "--out", str(out), *FAST]
    assert main(argv) == 130  # interrupted in seed 5
    assert (out / "seed-3" / "metrics.json").is_file()
    assert not (out / "seed-5" / "metrics.json").exists()
    assert not (out / "seed-8").exists()
    finished = (out / "seed-3" / "metrics.json").stat().st_mtime_ns

    assert main(["reproduce", config, "--out", str(out), "--resume"]) == 0  # options from the plan
    assert calls == ["seed-3", "seed-5", "seed-5", "seed-8"]  # seed 3 was not retrained
    assert (out / "seed-3" / "metrics.json").stat().st_mtime_ns == finished
    seed5 = yaml.safe_load((out / "seed-5" / "config.yaml").read_text())
    assert seed5["resumed_with"] and seed5["seed"] == 5
    assert len((out / "seed-5" / "history.csv").read_text().strip().splitlines()) == 1 + 2

    summary = json.loads((out / "reproduce.json").read_text())
    assert summary["seeds"] == [3, 5, 8] and summary["precision"] == "fp32"
    runs = [json.loads((out / f"seed-{s}" / "metrics.json").read_text()) for s in (3, 5, 8)]
    assert summary["metrics"]["test.accuracy"]["values"] == [r["test"]["accuracy"] for r in runs]
    for name in ("accuracy", "loss", "f1_macro"):
        values = np.array([r["test"][name] for r in runs])
        stats = summary["metrics"][f"test.{name}"]
        assert stats["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert stats["std"] == pytest.approx(values.std(ddof=1), rel=1e-12, abs=1e-15)
        assert (stats["min"], stats["max"]) == (values.min(), values.max())
    acc = np.array([r["test"]["accuracy"] for r in runs])
    ref = summary["reference"]
    assert ref["within_range"] == bool(acc.min() <= 0.3 <= acc.max())
    assert ref["meets"] == bool(acc.mean() >= 0.3 - 0.05)
    assert ref["difference"] == pytest.approx(acc.mean() - 0.3)
    assert summary["cpu"]["native_bf16"] in (True, False) and "amx" in summary["cpu"]
    assert summary["wall_seconds"] > 0
    text = (out / "reproduce.md").read_text()
    assert "test.accuracy" in text and "a test" in text


def test_spread_equals_numpy():
    values = list(np.random.default_rng(0).random(7))
    s = rp.spread(values)
    assert s["mean"] == pytest.approx(np.mean(values), rel=1e-14)
    assert s["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-14)
    assert (s["min"], s["max"], s["n"]) == (min(values), max(values), 7)
    assert rp.spread([0.5])["std"] is None


def test_reference_comparison_by_hand():
    stats = {"test.error": rp.spread([0.10, 0.12, 0.14])}
    lower = {"metric": "error", "value": 0.1, "tolerance": 0.01, "source": "s",
             "direction": "lower"}  # fmt: skip
    out = rp.compare_reference(lower, stats)
    assert out["within_range"] and not out["meets"]  # mean 0.12 > 0.1 + 0.01
    assert out["difference"] == pytest.approx(0.02)
    higher = {"metric": "error", "value": 0.2, "tolerance": 0.1, "source": "s"}
    out = rp.compare_reference(higher, stats)
    assert not out["within_range"] and out["meets"]  # 0.12 >= 0.2 - 0.1
    assert rp.compare_reference({**higher, "metric": "iou"}, stats)["observed"] is None


def test_reference_per_dataset():
    from cnnkit.cli.datasets import apply_dataset_override
    from cnnkit.cli.recipes import load_config

    config = load_config("ucr-fcn1d")
    assert rp.select_reference(config)["dataset"] == "GunPoint"
    apply_dataset_override(config, "ECG200")
    assert rp.select_reference(config)["value"] == 0.9
    apply_dataset_override(config, "Wine")
    assert rp.select_reference(config) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed-list", "1", "1"], "repeats seed"),
        (["--resume"], "pass --out"),
        (["--out", "{existing}"], "already exists"),
        (["--out", "{plan}", "--resume", "--seed-list", "5", "6"], "reproduces seeds"),
        (["--out", "{plan}", "--resume", "--precision", "bf16"], "reproduces precision"),
    ],
)
def test_bad_arguments_are_clear_errors(tmp_path, config, capsys, args, message):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "x").write_text("")
    plan = tmp_path / "plan"
    plan.mkdir()
    (plan / rp.PLAN).write_text(json.dumps({"recipe": config, "dataset": None, "seeds": [0, 1],
                                            "precision": "fp32", "epochs": None, "limit": 48,
                                            "data_dir": None}))  # fmt: skip
    args = [a.format(existing=existing, plan=plan) for a in args]
    assert main(["reproduce", config, *args]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (plan / "seed-0").exists()


@pytest.mark.parametrize(
    "args", [["--seeds", "0"], ["--seeds", "2", "--seed-list", "1"], ["--seed-list", "-1"]]
)
def test_bad_seed_options_are_usage_errors(config, args):
    with pytest.raises(SystemExit) as info:
        main(["reproduce", config, *args])
    assert info.value.code == 2


def _collector():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "collect_reproductions.py"
    spec = importlib.util.spec_from_file_location("collect_reproductions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reproductions_md_is_generated_from_the_committed_summaries():
    assert _collector().main(["--check"]) == 0, "run python bench/collect_reproductions.py"


def test_collector_row_shows_spread_reference_seeds_precision_cpu_and_time():
    values = [0.96, 0.98, 1.0]
    metrics = {"test.accuracy": rp.spread(values)}
    ref = {"metric": "accuracy", "value": 1.0, "tolerance": 0.02, "source": "Paper"}
    summary = {
        "recipe": "ucr-fcn1d", "dataset": "GunPoint", "seeds": [0, 1, 2], "epochs": 200,
        "precision": "bf16", "metrics": metrics, "reference": rp.compare_reference(ref, metrics),
        "cpu": {"model": "CPU X", "amx": True, "native_bf16": True}, "wall_seconds": 90.0,
        "cpu_seconds": 60.0,
    }  # fmt: skip
    row = _collector().row(summary)
    mean, std = np.mean(values) * 100, np.std(values, ddof=1) * 100
    assert f"{mean:.2f} ± {std:.2f} % (96.00 - 100.00)" in row
    assert "| yes | yes |" in row  # 1.0 in [0.96, 1.0]; mean 0.98 >= 1.0 - 0.02
    assert "3 (0, 1, 2)" in row and "bf16" in row and "CPU X, AMX, native bf16" in row
    assert "90 s (30 s/seed); CPU 60 s" in row


def test_collector_parity_compares_bf16_with_fp32_on_the_same_seeds():
    """The parity row: fp32 mean ± std over all its seeds, the fp32 mean over the seeds
    bf16 ran, the bf16 mean ± std, whether it is within one fp32 std, and what
    --precision auto runs for the recipe (ucr-fcn1d fixes fp32 in its YAML)."""
    fp32_values, bf16_values = [1.0, 0.98, 1.0, 0.96, 1.0], [1.0, 0.94, 1.0]

    def summary(precision, values):
        metrics = {"test.accuracy": rp.spread(values)}
        runs = [{"seed": i, "metrics": {"test.accuracy": v}} for i, v in enumerate(values)]
        return {"recipe": "ucr-fcn1d", "dataset": "Coffee", "seeds": list(range(len(values))),
                "precision": precision, "metrics": metrics, "runs": runs,
                "reference": {"metric": "accuracy"}, "cpu": {"model": "CPU X"}}  # fmt: skip

    text = _collector().parity([summary("fp32", fp32_values), summary("bf16", bf16_values)])
    (row,) = [line for line in text.splitlines() if line.startswith("| `ucr-fcn1d`")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    std = np.std(fp32_values, ddof=1)
    assert cells[3] == f"{np.mean(fp32_values):.4f} ± {std:.4f} (5)"
    assert cells[4] == f"{np.mean(fp32_values[:3]):.4f}"  # seeds 0, 1, 2
    assert cells[5] == f"{np.mean(bf16_values):.4f} ± {np.std(bf16_values, ddof=1):.4f} (3)"
    assert cells[6] == (
        "yes" if abs(np.mean(bf16_values) - np.mean(fp32_values)) <= std else "**no**"
    )
    assert cells[7].startswith("fp32")


def test_collector_files_and_rows_go_by_the_precision_that_ran():
    """``--precision auto`` on a recipe that fixes fp32 ran fp32: the summary is filed and
    paired with the fp32 runs, and its row says both what ran and what was asked for."""
    collector = _collector()
    metrics = {"test.accuracy": rp.spread([1.0, 1.0])}
    base = {"recipe": "ucr-resnet1d", "dataset": "Coffee", "seeds": [0, 1], "epochs": 200,
            "metrics": metrics, "reference": {"metric": "accuracy"}, "cpu": {"model": "CPU X"},
            "wall_seconds": 10.0}  # fmt: skip
    auto = {**base, "precision": "auto", "precision_used": "fp32"}
    assert collector.canonical_name(auto) == "ucr-resnet1d-Coffee-fp32.json"
    assert "| fp32 (`--precision auto`) |" in collector.row(auto)
    on_amx = {**base, "precision": "auto", "precision_used": "bf16"}
    assert collector.canonical_name(on_amx) == "ucr-resnet1d-Coffee-bf16.json"
    explicit = {**base, "precision": "bf16", "precision_used": "bf16"}
    assert "| bf16 |" in collector.row(explicit)
    older = {**base, "precision": "fp32"}  # a summary without precision_used
    assert collector.canonical_name(older) == "ucr-resnet1d-Coffee-fp32.json"


def test_collector_refuses_a_damaged_or_oversized_summary(tmp_path):
    """Summaries are read through cnnkit's bounded JSON reader: the file is named."""
    collector = _collector()
    path = tmp_path / "x-fp32.json"
    for text, message in (('{"recipe": ', "not valid JSON"), ("[1]", "not hold a JSON object"),
                          (" " * (collector.MAX_BYTES + 1), "over the limit")):  # fmt: skip
        path.write_text(text)
        with pytest.raises(SystemExit, match=message) as info:
            collector.load_summary(path)
        assert str(path) in str(info.value)


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: cnnkit reproduce") and "--seed-list" in text
