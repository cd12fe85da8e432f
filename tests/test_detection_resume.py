"""Resuming Mask R-CNN training (``fit_detection(checkpoint_dir=..., resume_from=...)`` and
``cnnkit train shapes-maskrcnn --resume``): an interrupted run, continued by a fresh model
object, ends with bit for bit the weights and history of the run that was never
interrupted; a damaged checkpoint falls back to the previous one or is refused by name."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from cnnkit._core.errors import CnnkitError
from cnnkit.cli.main import main
from cnnkit.data.synthetic import shapes
from cnnkit.models import create
from cnnkit.train.detection import fit_detection

SRC = Path(__file__).resolve().parents[1] / "src"
EPOCHS = 3
# 6 images in batches of 2: the warm-up (4 iterations) crosses an epoch boundary, the
# learning rate steps down after epoch 2, and flips and shuffles draw from the generator
FIT = dict(epochs=EPOCHS, batch_size=2, lr=0.02, lr_steps=(2,), warmup_iters=4, hflip=True,
           seed=5, log_fn=lambda line: None)  # fmt: skip


def _data():
    return shapes(6, size=64, task="instance", seed=3)


def _model(init_seed: int):
    torch.manual_seed(init_seed)
    return create("mask_rcnn", num_classes=3, backbone="small")


class Stop(Exception):
    pass


def _stop_after(epoch: int):
    """A callback that aborts the run at the end of ``epoch`` (before its checkpoint)."""

    def cb(e, logs):
        if e == epoch:
            raise Stop

    return cb


def _same_history(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        if k != "time":
            assert len(a[k]) == len(b[k]) == EPOCHS, k
            assert all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a[k], b[k])), k


def _assert_same_state(model, ref_state: dict) -> None:
    state = model.state_dict()
    assert set(state) == set(ref_state)
    differ = [k for k in state if not torch.equal(state[k], ref_state[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


@pytest.fixture(scope="module")
def reference():
    """The run that is never interrupted: its final state_dict and history."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed subprocess
    x, y = _data()
    model = _model(0)
    history = fit_detection(model, x, y, **FIT)
    yield {k: v.clone() for k, v in model.state_dict().items()}, history
    torch.set_num_threads(threads)


def _interrupted(tmp_path: Path, stop_epoch: int) -> Path:
    """A run stopped at the end of ``stop_epoch``: checkpoints after epochs 0..stop_epoch-1."""
    x, y = _data()
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Stop):
        fit_detection(_model(0), x, y, checkpoint_dir=ckpt, callbacks=[_stop_after(stop_epoch)],
                      **FIT)  # fmt: skip
    return ckpt


def _resume(ckpt: Path):
    x, y = _data()
    model = _model(123)  # a fresh object, initialised differently, as in a new process
    history = fit_detection(model, x, y, checkpoint_dir=ckpt, resume_from=ckpt, **FIT)
    return model, history


def test_resumed_run_equals_the_uninterrupted_one(reference, tmp_path):
    ref_state, ref_history = reference
    ckpt = _interrupted(tmp_path, stop_epoch=1)
    assert json.loads((ckpt / "last" / "model.json").read_text())["training"]["epoch"] == 0
    fresh = _model(123).state_dict()
    assert not all(torch.equal(fresh[k], ref_state[k]) for k in ref_state if "weight" in k)
    model, history = _resume(ckpt)
    _assert_same_state(model, ref_state)
    _same_history(history, ref_history)
    assert history["lr"] == [0.02, 0.02, pytest.approx(0.002)]
    # the checkpoint written after the last epoch is the end state, readable by cnnkit.load
    import cnnkit

    loaded = cnnkit.load(ckpt / "last")
    _assert_same_state(getattr(loaded, "module", loaded), ref_state)
    # resuming a finished run trains nothing and returns the whole history
    model, again = _resume(ckpt)
    _assert_same_state(model, ref_state)
    _same_history(again, ref_history)


def test_without_resume_an_earlier_checkpoint_is_not_overwritten(tmp_path):
    x, y = _data()
    ckpt = _interrupted(tmp_path, stop_epoch=1)
    with pytest.raises(CnnkitError, match="resume_from"):
        fit_detection(_model(0), x, y, checkpoint_dir=ckpt, **FIT)


def _damage(folder: Path, manifest: str) -> Path:
    """Truncate the weights file that ``folder/manifest`` names; returns its path."""
    name = json.loads((folder / manifest).read_text())["files"]["model"]["name"]
    path = folder / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_damaged_checkpoint_falls_back_to_the_previous_one(reference, tmp_path, caplog):
    ref_state, ref_history = reference
    ckpt = _interrupted(tmp_path, stop_epoch=2)  # last: after epoch 1, previous: after 0
    last = ckpt / "last"
    assert json.loads((last / "previous.json").read_text())["training"]["epoch"] == 0
    bad = _damage(last, "model.json")
    with caplog.at_level(logging.WARNING, logger="cnnkit.train"):
        model, history = _resume(ckpt)
    assert bad.name in caplog.text and "previous" in caplog.text
    _assert_same_state(model, ref_state)
    _same_history(history, ref_history)


def test_both_checkpoints_damaged_is_an_error_naming_the_file(tmp_path):
    ckpt = _interrupted(tmp_path, stop_epoch=2)
    last = ckpt / "last"
    bad_last = _damage(last, "model.json")
    bad_prev = _damage(last, "previous.json")
    with pytest.raises(CnnkitError) as info:
        _resume(ckpt)
    assert str(bad_last) in str(info.value) and str(bad_prev) in str(info.value)


# ------------------------------------------------------------------------ SIGKILL

KILLED = textwrap.dedent(
    r"""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from cnnkit.data.synthetic import shapes
    from cnnkit.models import create
    from cnnkit.train.detection import fit_detection

    x, y = shapes(6, size=64, task="instance", seed=3)  # as _data() and _model(0)
    torch.manual_seed(0)
    model = create("mask_rcnn", num_classes=3, backbone="small")
    calls = [0]
    forward = model.forward

    def killing_forward(*args, **kwargs):  # SIGKILL in the middle of epoch 2 (0-based 1)
        calls[0] += 1
        if calls[0] == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        return forward(*args, **kwargs)

    model.forward = killing_forward
    fit_detection(model, x, y, checkpoint_dir=sys.argv[1], **json.loads(sys.argv[2]))  # FIT
    """
)


def test_sigkill_mid_epoch_then_resume_is_identical(reference, tmp_path):
    ref_state, ref_history = reference
    ckpt = tmp_path / "ckpt"
    env = dict(os.environ, PYTHONPATH=str(SRC))
    fit = json.dumps({k: v for k, v in FIT.items() if k != "log_fn"})
    proc = subprocess.run([sys.executable, "-c", KILLED, str(ckpt), fit], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert json.loads((ckpt / "last" / "model.json").read_text())["training"]["epoch"] == 0
    model, history = _resume(ckpt)
    _assert_same_state(model, ref_state)
    _same_history(history, ref_history)


# ------------------------------------------------------------------------ command line


def test_cli_resume_ends_with_the_uninterrupted_weights(tmp_path, capsys, monkeypatch):
    import cnnkit.cli.detection

    monkeypatch.setattr(cnnkit.cli.detection, "_plots", lambda *a: None)  # half of the time
    common = ["--limit", "8", "--verbose", "0", "--threads", "1"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", "shapes-maskrcnn", "--epochs", "2", "--out", str(full), *common]) == 0
    assert main(["train", "shapes-maskrcnn", "--epochs", "1", "--out", str(part), *common]) == 0
    first = list(csv.DictReader(open(part / "history.csv")))
    code = main(["train", "shapes-maskrcnn", "--resume", "--epochs", "2", "--out", str(part),
                 *common])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    ref, got = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert set(ref) == set(got) and all(torch.equal(ref[k], got[k]) for k in ref)
    rows = list(csv.DictReader(open(part / "history.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[0] == first[0]
    ref_rows = list(csv.DictReader(open(full / "history.csv")))
    drop = lambda r: {k: v for k, v in r.items() if k != "time"}  # noqa: E731
    assert [drop(r) for r in rows] == [drop(r) for r in ref_rows]
    config = yaml.safe_load((part / "config.yaml").read_text())
    assert config["fit"]["epochs"] == 2 and "--epochs 1" in config["command"]
    assert "--resume" in config["resumed_with"][0]
    assert json.loads((part / "metrics.json").read_text())["epochs"] == 2
    # relaunching the finished run says so, trains nothing and leaves the same weights
    code = main(["train", "shapes-maskrcnn", "--resume", "--epochs", "2", "--out", str(part),
                 *common])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "already finished all 2 epochs" in captured.out
    got = load_file(part / "model.safetensors")
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert len(yaml.safe_load((part / "config.yaml").read_text())["resumed_with"]) == 1


def test_resuming_with_other_settings_warns_with_the_values(tmp_path, caplog):
    images, targets = _data()
    ckpt = tmp_path / "ckpt"
    fit_detection(_model(0), images, targets, checkpoint_dir=ckpt, **{**FIT, "epochs": 1})
    with caplog.at_level(logging.WARNING, logger="cnnkit.train"):
        fit_detection(_model(1), images, targets, checkpoint_dir=ckpt, resume_from=ckpt,
                      **{**FIT, "epochs": 2})  # fmt: skip
    assert not [r for r in caplog.records if "other settings" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="cnnkit.train"):
        fit_detection(_model(1), images[:4], targets[:4], checkpoint_dir=ckpt, resume_from=ckpt,
                      **{**FIT, "epochs": 3, "seed": 6})  # fmt: skip
    msgs = [r.getMessage() for r in caplog.records if "other settings" in r.getMessage()]
    assert len(msgs) == 1
    assert "images: 6 -> 4" in msgs[0] and "seed: 5 -> 6" in msgs[0]
    assert "batch_size" not in msgs[0]


# ------------------------------------------------------------------------ SIGTERM, mid-epoch

SIGNALLED = KILLED.replace(
    "os.kill(os.getpid(), signal.SIGKILL)", "os.kill(os.getpid(), signal.SIGTERM)"
)


def test_sigterm_saves_mid_epoch_exits_143_and_resumes_identically(reference, tmp_path):
    ref_state, ref_history = reference
    ckpt = tmp_path / "ckpt"
    env = dict(os.environ, PYTHONPATH=str(SRC))
    fit = json.dumps({k: v for k, v in FIT.items() if k != "log_fn"})
    proc = subprocess.run([sys.executable, "-c", SIGNALLED, str(ckpt), fit], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert "stopped by SIGTERM at epoch 2, iteration 2" in proc.stderr
    training = json.loads((ckpt / "last" / "model.json").read_text())["training"]
    assert training["epoch"] == 0 and training["position"]["step"] == 2  # the 5th iteration
    model, history = _resume(ckpt)
    _assert_same_state(model, ref_state)
    _same_history(history, ref_history)


def test_checkpoint_every_resumes_inside_the_epoch(reference, tmp_path):
    ref_state, ref_history = reference
    x, y = _data()
    model = _model(0)
    calls, forward = [0], model.forward

    def crashing_forward(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 6:  # the 3rd iteration of epoch 2; the last save was after the 4th
            raise Stop
        return forward(*args, **kwargs)

    model.forward = crashing_forward
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Stop):
        fit_detection(model, x, y, checkpoint_dir=ckpt, checkpoint_every=2, **FIT)
    position = json.loads((ckpt / "last" / "model.json").read_text())["training"]["position"]
    assert position["epoch"] == 1 and position["step"] == 1
    model, history = _resume(ckpt)
    _assert_same_state(model, ref_state)
    _same_history(history, ref_history)
