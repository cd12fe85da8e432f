"""``cnnkit train CONFIG --out R --resume`` relaunched from every state of ``R``.

A scheduler relaunches the same command line after a failure; whatever state the run
folder is in (absent, empty, config but no checkpoint, a checkpoint, finished), the
relaunch must do the right thing, and a run that was interrupted must end with the
weights of the run that never was (compared bit for bit with safetensors).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import cnnkit.cli.training
from cnnkit.cli.main import main
from cnnkit.train import callbacks as cb_mod
from cnnkit.train.checkpoint import read_checkpoint_info

TINY = {
    "name": "tiny",
    "task": "classification",
    "seed": 0,
    "dataset": {"name": "digits", "args": {"size": 16, "test_size": 0.25}},
    "model": {"name": "gap_cnn", "args": {"filters": [4, 8], "strides": [1, 2]}},
    "compile": {"optimizer": "adam", "learning_rate": 0.01,
                "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
    "fit": {"epochs": 3, "batch_size": 16, "validation_split": 0.25},
}  # fmt: skip
FLAGS = ["--limit", "96", "--threads", "1", "--verbose", "0", "--precision", "fp32"]


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    # speed only; cnnkit.cli.training holds its own reference to make_plots
    monkeypatch.setattr(cnnkit.cli.training, "make_plots", lambda *a, **k: None)


def _config(folder: Path, **changes) -> Path:
    config = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        section, name = key.split("__")
        config[section][name] = value
    path = folder / ("tiny.yaml" if not changes else f"tiny-{len(list(folder.glob('*')))}.yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def _train(config: Path, out: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["train", str(config), "--out", str(out), *FLAGS, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    saved = cnnkit.cli.training.make_plots
    cnnkit.cli.training.make_plots = lambda *a, **k: None
    try:
        assert main(["train", str(_config(folder)), "--out", str(folder / "run"), *FLAGS]) == 0
    finally:
        cnnkit.cli.training.make_plots = saved
    return _weights(folder / "run")


class Crash(KeyboardInterrupt):
    """Stands for a kill: main() turns a KeyboardInterrupt into status 130."""


def _crash_at_epoch_end(monkeypatch, epoch: int, after_checkpoint: bool) -> None:
    real = cb_mod.ModelCheckpoint.on_epoch_end

    def on_epoch_end(self, e, logs=None):
        if e == epoch and not after_checkpoint:
            raise Crash()
        real(self, e, logs)
        if e == epoch:
            raise Crash()

    monkeypatch.setattr(cb_mod.ModelCheckpoint, "on_epoch_end", on_epoch_end)


def test_config_typo_creates_nothing_and_the_corrected_rerun_runs(tmp_path, capsys, reference):
    out = tmp_path / "R"
    typo = _config(tmp_path, compile__optimizer="adamm")
    code, _, err = _train(typo, out, capsys, "--resume")
    assert code == 2 and "'adamm'" in err and "'adam'" in err
    assert not out.exists()  # nothing created: a corrected rerun starts cleanly
    for key, bad, says in (("model__args", {"filters": [4, 8], "stride": [1]}, "'stride'"),
                           ("compile__loss", "sparse_crossentropy", "'sparse_crossentropy'"),
                           ("compile__metrics", ["acuracy"], "'acuracy'"),
                           ("fit__batch_size", "16", "fit.batch_size")):  # fmt: skip
        code, _, err = _train(_config(tmp_path, **{key: bad}), out, capsys, "--resume")
        assert code == 2 and says in err and not out.exists(), err
    code, _, err = _train(_config(tmp_path), out, capsys, "--resume")  # the YAML fixed
    assert code == 0, err
    assert _same(_weights(out), reference)


def test_missing_data_leaves_nothing(tmp_path, capsys):
    config = yaml.safe_load(_config(tmp_path).read_text())
    config["dataset"] = {"name": "mnist", "args": {}}
    path = tmp_path / "mnist.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["train", str(path), "--out", str(tmp_path / "R"), "--resume",
                 "--data-dir", str(tmp_path / "nodata")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "cnnkit data download mnist" in err and not (tmp_path / "R").exists()


def test_empty_folder_and_killed_before_the_first_checkpoint_start_again(
    tmp_path, capsys, monkeypatch, reference
):
    config = _config(tmp_path)
    out = tmp_path / "R"
    out.mkdir()  # an empty folder (killed right after creating it)
    with monkeypatch.context() as m:
        _crash_at_epoch_end(m, 0, after_checkpoint=False)
        code, _, _ = _train(config, out, capsys, "--resume")
    assert code == 130
    assert (out / "config.yaml").is_file() and not (out / "checkpoints" / "last").exists()
    code, _, err = _train(config, out, capsys, "--resume")  # the same command again
    assert code == 0, err
    assert _same(_weights(out), reference)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert "--resume" in saved["command"] and len(saved["resumed_with"]) == 1


def test_checkpoint_continues_and_a_finished_run_says_so(tmp_path, capsys, monkeypatch, reference):
    config = _config(tmp_path)
    out = tmp_path / "R"
    with monkeypatch.context() as m:
        _crash_at_epoch_end(m, 1, after_checkpoint=True)
        assert _train(config, out, capsys, "--resume")[0] == 130
    assert read_checkpoint_info(out / "checkpoints" / "last")["epoch"] == 1
    code, _, err = _train(config, out, capsys, "--resume")
    assert code == 0, err
    assert _same(_weights(out), reference)
    rows = (out / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + 3  # the epochs of the killed attempt are not repeated
    before = (out / "model.safetensors").stat().st_mtime_ns
    code, text, err = _train(config, out, capsys, "--resume")
    assert code == 0, err
    assert "already finished all 3 epochs" in text
    accuracy = json.loads((out / "metrics.json").read_text())["test"]["accuracy"]
    assert f"accuracy {accuracy:.4f}" in text
    assert (out / "model.safetensors").stat().st_mtime_ns == before


def test_changed_config_is_refused_naming_the_keys_unless_forced(tmp_path, capsys, monkeypatch):
    out = tmp_path / "R"
    with monkeypatch.context() as m:
        _crash_at_epoch_end(m, 0, after_checkpoint=True)
        assert _train(_config(tmp_path), out, capsys, "--resume")[0] == 130
    changed = _config(tmp_path, compile__learning_rate=0.05, fit__batch_size=8)
    code, _, err = _train(changed, out, capsys, "--resume")
    assert code == 2
    assert "compile.learning_rate: 0.01 -> 0.05" in err and "fit.batch_size: 16 -> 8" in err
    assert "--resume force" in err
    code, _, err = _train(changed, out, capsys, "--resume", "--limit", "64")
    assert code == 2 and "run.limit: 96 -> 64" in err
    # raising the epochs is not a change; lowering them is
    code, _, err = _train(_config(tmp_path), out, capsys, "--resume", "--epochs", "1")
    assert code == 2 and "fit.epochs: 3 -> 1" in err
    code, _, err = _train(changed, out, capsys, "--resume", "force")
    assert code == 0, err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["compile"]["learning_rate"] == 0.05
    assert read_checkpoint_info(out / "checkpoints" / "last")["epoch"] == 2
    code, _, err = _train(_config(tmp_path, compile__learning_rate=0.05, fit__batch_size=8),
                          out, capsys, "--resume", "--epochs", "4")  # fmt: skip
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 4


def test_foreign_folder_and_missing_out_are_refused(tmp_path, capsys):
    out = tmp_path / "R"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    code, _, err = _train(_config(tmp_path), out, capsys, "--resume")
    assert code == 2 and "thesis.tex" in err and (out / "thesis.tex").read_text() == "mine"
    code = main(["train", str(_config(tmp_path)), "--resume"])
    assert code == 2 and "--out" in capsys.readouterr().err


def test_error_before_the_first_checkpoint_says_how_to_rerun(tmp_path, capsys, monkeypatch):
    from cnnkit import CnnkitError

    def fail(self, epoch, logs=None):
        raise CnnkitError("the loss became nan in epoch 1")

    monkeypatch.setattr(cb_mod.ModelCheckpoint, "on_epoch_end", fail)
    out = tmp_path / "R"
    code, _, err = _train(_config(tmp_path), out, capsys, "--resume")
    assert code == 2 and "loss became nan" in err
    assert "holds no checkpoint yet" in err and "--resume" in err
