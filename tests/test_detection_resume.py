"""Resuming Mask R-CNN training through ``cnnkit.Model`` (``fit(resume_from=...)`` with
``ModelCheckpoint``, and ``cnnkit train shapes-maskrcnn --resume``): an interrupted run,
continued by a fresh model object, ends with bit for bit the weights and history of the
run that was never interrupted; a damaged checkpoint falls back to the previous one or is
refused by name."""

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

import cnnkit
from cnnkit._core.errors import CnnkitError
from cnnkit.callbacks import Callback, ModelCheckpoint
from cnnkit.cli.main import main
from cnnkit.data.synthetic import SyntheticDataset, shapes
from cnnkit.data.transforms import RandomHorizontalFlip
from cnnkit.models import create
from cnnkit.train.schedules import warmup_step_decay

SRC = Path(__file__).resolve().parents[1] / "src"
EPOCHS = 3
# 6 images in batches of 2: the warm-up (4 iterations) crosses an epoch boundary, the
# learning rate steps down after epoch 2, and flips (a joint transform of the Dataset)
# and the RPN / ROI samplers draw from the global RNG
FIT = dict(epochs=EPOCHS, batch_size=2, verbose=0)


def _data():
    x, y = shapes(6, size=64, task="instance", seed=3)
    return SyntheticDataset(x, y, RandomHorizontalFlip())


def _model(init_seed: int):
    torch.manual_seed(init_seed)
    model = cnnkit.Model(create("mask_rcnn", num_classes=3, backbone="small"))
    model.compile(
        optimizer=lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9, weight_decay=1e-4),
        lr_schedule=warmup_step_decay([2], warmup_iters=4), global_clipnorm=10.0,
        precision="fp32", device="cpu",
    )  # fmt: skip
    return model


def _fit(model, ckpt=None, callbacks=(), resume=False, seed=5):
    torch.manual_seed(seed)  # the shuffle seed of fit (restored when resuming)
    cbs = [*callbacks]
    if ckpt is not None:
        cbs.append(ModelCheckpoint(ckpt, monitor="loss", save_best=False))
    return model.fit(_data(), callbacks=cbs, resume_from=str(ckpt) if resume else None, **FIT)


class Stop(Exception):
    pass


class _StopAfter(Callback):
    """Aborts the run at the end of ``epoch`` (before its checkpoint)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Stop


def _same_history(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
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
    model = _model(0)
    history = _fit(model)
    yield {k: v.clone() for k, v in model.module.state_dict().items()}, history.history
    torch.set_num_threads(threads)


def _interrupted(tmp_path: Path, stop_epoch: int) -> Path:
    """A run stopped at the end of ``stop_epoch``: checkpoints after epochs 0..stop_epoch-1."""
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Stop):
        _fit(_model(0), ckpt, callbacks=[_StopAfter(stop_epoch)])
    return ckpt


def _resume(ckpt: Path):
    model = _model(123)  # a fresh object, initialised differently, as in a new process
    history = _fit(model, ckpt, resume=True, seed=99)
    return model.module, history.history


def test_resumed_run_equals_the_uninterrupted_one(reference, tmp_path):
    ref_state, ref_history = reference
    ckpt = _interrupted(tmp_path, stop_epoch=1)
    assert json.loads((ckpt / "last" / "model.json").read_text())["training"]["epoch"] == 0
    fresh = _model(123).module.state_dict()
    assert not all(torch.equal(fresh[k], ref_state[k]) for k in ref_state if "weight" in k)
    model, history = _resume(ckpt)
    _assert_same_state(model, ref_state)
    _same_history(history, ref_history)
    # the learning rate of each epoch's first batch: in the warm-up (3 batches per epoch,
    # 4 to warm up), then stepped down by 10 after epoch 2
    warm = [0.001 + 0.999 * i / 4 for i in (0, 3)]
    assert history["learning_rate"] == pytest.approx([0.02 * warm[0], 0.02 * warm[1], 0.002])
    # the checkpoint written after the last epoch is the end state, readable by cnnkit.load
    loaded = cnnkit.load(ckpt / "last")
    _assert_same_state(getattr(loaded, "module", loaded), ref_state)
    # resuming a finished run trains nothing and returns the whole history
    model, again = _resume(ckpt)
    _assert_same_state(model, ref_state)
    _same_history(again, ref_history)


def test_without_resume_an_earlier_checkpoint_is_not_overwritten(tmp_path):
    ckpt = _interrupted(tmp_path, stop_epoch=1)
    with pytest.raises(CnnkitError, match="resume_from"):
        _fit(_model(0), ckpt)


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
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    import test_detection_resume as t

    model = t._model(0)
    calls = [0]
    forward = model.module.forward

    def killing_forward(*args, **kwargs):  # SIGKILL in the middle of epoch 2 (0-based 1)
        calls[0] += 1
        if calls[0] == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        return forward(*args, **kwargs)

    model.module.forward = killing_forward
    t._fit(model, sys.argv[1])
    """
)


def test_sigkill_mid_epoch_then_resume_is_identical(reference, tmp_path):
    ref_state, ref_history = reference
    ckpt = tmp_path / "ckpt"
    env = dict(os.environ, PYTHONPATH=str(SRC))
    tests = str(Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-c", KILLED, str(ckpt), tests], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert json.loads((ckpt / "last" / "model.json").read_text())["training"]["epoch"] == 0
    model, history = _resume(ckpt)
    _assert_same_state(model, ref_state)
    _same_history(history, ref_history)


SIGNALLED = KILLED.replace(
    "os.kill(os.getpid(), signal.SIGKILL)", "os.kill(os.getpid(), signal.SIGTERM)"
)


def test_sigterm_mid_epoch_saves_exits_143_and_resumes_identically(reference, tmp_path):
    """Issue 17 for Mask R-CNN through the one engine: SIGTERM in the middle of epoch 2
    finishes that step, checkpoints its position, exits 143; the resume ends identical."""
    ref_state, ref_history = reference
    ckpt = tmp_path / "ckpt"
    env = dict(os.environ, PYTHONPATH=str(SRC))
    tests = str(Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-c", SIGNALLED, str(ckpt), tests], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 143, proc.stderr[-3000:]
    training = json.loads((ckpt / "last" / "model.json").read_text())["training"]
    assert training["position"]["epoch"] == 1 and training["position"]["step"] >= 1
    model, history = _resume(ckpt)
    _assert_same_state(model, ref_state)
    _same_history(history, ref_history)


# ------------------------------------------------------------------------ command line


def test_cli_resume_ends_with_the_uninterrupted_weights(tmp_path, capsys, monkeypatch):
    import cnnkit.cli.training

    monkeypatch.setattr(cnnkit.cli.training, "make_plots", lambda *a: None)  # half of the time
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
    assert rows == ref_rows
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
