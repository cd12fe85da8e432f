"""Training checkpoints and ``fit(resume_from=...)``.

The reference for resuming is the run that was never interrupted: a run stopped after
epoch k and resumed must end with bit-identical weights (CPU, deterministic mode).
"""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnkit
from cnnkit import CnnkitError, ConfigError
from cnnkit.callbacks import Callback, ModelCheckpoint, step_decay
from cnnkit.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from cnnkit.models import create
from cnnkit.train import checkpoint as ckpt_mod
from cnnkit.train.checkpoint import (
    load_training_state,
    read_checkpoint_info,
    save_training_state,
)


@pytest.fixture(scope="module")
def digits300():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:300], dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return x, torch.tensor(d.target[:300])


class Interrupt(Exception):
    pass


class StopAfter(Callback):
    """Simulates a crash right after epoch ``k`` (1-based) was checkpointed."""

    def __init__(self, k):
        self.k = k

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.k:
            raise Interrupt(f"stopped after epoch {self.k}")


def _mnist(optimizer="adam", **kw):
    model = cnnkit.Model(create("mnist_cnn"))
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        device="cpu",
        precision="fp32",
        **kw,
    )
    return model


def _dropout_seq():
    return cnnkit.Sequential(
        [
            Conv2D(6, 3, activation="relu"),
            MaxPooling2D(2),
            Flatten(),
            Dropout(0.5),
            Dense(10, activation="softmax"),
        ],
        input_shape=(1, 28, 28),
    )


def _dropout_net(**kw):
    """Dropout (global RNG), SGD with momentum and a step schedule (scheduler state)."""
    model = _dropout_seq()
    model.compile(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        lr_schedule=step_decay([2], gamma=0.3),
        device="cpu",
        precision="fp32",
        **kw,
    )
    return model


def _params(model):
    return dict(model._net.state_dict())


@pytest.mark.parametrize(
    "build,n,epochs,stop",
    [(_mnist, 300, 3, 1), (_dropout_net, 120, 3, 1)],
    ids=["mnist_cnn", "dropout_sgd_schedule"],
)
def test_resumed_run_equals_uninterrupted_run(tmp_path, digits300, build, n, epochs, stop):
    x, y = digits300[0][:n], digits300[1][:n]
    fit_kw = dict(batch_size=32, epochs=epochs, validation_split=0.2, verbose=0)

    cnnkit.seed_everything(0, deterministic=True)
    straight = build()
    h_straight = straight.fit(x, y, callbacks=[ModelCheckpoint(tmp_path / "a")], **fit_kw)

    cnnkit.seed_everything(0, deterministic=True)
    first = build()
    with pytest.raises(Interrupt):
        first.fit(x, y, callbacks=[ModelCheckpoint(tmp_path / "b"), StopAfter(stop)], **fit_kw)
    assert read_checkpoint_info(tmp_path / "b" / "last")["epoch"] == stop - 1

    # a fresh process: different seed, fresh weights, different global RNG state
    cnnkit.seed_everything(123, deterministic=True)
    resumed = build()
    assert not torch.equal(_params(resumed)["0.weight"], _params(straight)["0.weight"])
    h_resumed = resumed.fit(
        x, y, callbacks=[ModelCheckpoint(tmp_path / "b")], resume_from=tmp_path / "b", **fit_kw
    )

    a, b = _params(straight), _params(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert h_resumed.epoch == list(range(epochs)) == h_straight.epoch
    assert h_resumed.history == h_straight.history
    # the interrupted run's checkpoints, once resumed, equal the straight run's
    info_a = read_checkpoint_info(tmp_path / "a" / "last")
    info_b = read_checkpoint_info(tmp_path / "b" / "last")
    assert info_a["history"] == info_b["history"] and info_a["epoch"] == info_b["epoch"]
    opt_a, opt_b = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for pid, state in opt_a["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b["state"][pid][name]))


def _trained(tmp_path, epochs=1):
    torch.manual_seed(0)
    model = _dropout_net()
    x, y = torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,))
    model.fit(x, y, epochs=epochs, verbose=0, callbacks=[ModelCheckpoint(tmp_path, monitor="loss")])
    return model, x, y


def test_rng_states_are_restored(tmp_path):
    model, _, _ = _trained(tmp_path / "run")
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    save_training_state(tmp_path / "state", model, 0, model.history)
    expected = (random.random(), np.random.rand(3), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    load_training_state(tmp_path / "state", model)
    got = (random.random(), np.random.rand(3), torch.rand(3))
    assert got[0] == expected[0]
    assert np.array_equal(got[1], expected[1]) and torch.equal(got[2], expected[2])


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path, monkeypatch):
    model, _, _ = _trained(tmp_path)
    folder = tmp_path / "last"
    names = sorted(p.name for p in folder.iterdir())
    assert "model.json" in names and len(names) == 4
    assert all(n.endswith(".safetensors") for n in names if n != "model.json")
    manifest = json.loads((folder / "model.json").read_text())
    assert set(manifest["files"]) == {"model", "optimizer", "rng"}
    assert manifest["training"]["scheduler"]["class"] == "MultiStepLR"
    assert manifest["training"]["shuffle_seed"] == model._shuffle_seed

    def no_unpickling(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    fresh = _dropout_net()
    fresh.fit(torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,)), epochs=0, verbose=0)
    info = load_training_state(folder, fresh)
    assert info["epoch"] == 0
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))
    assert fresh.scheduler.state_dict() == model.scheduler.state_dict()
    loaded = cnnkit.load(folder)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), loaded.parameters()))


def _damage_truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_flip(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("part", ["model", "optimizer", "rng"])
@pytest.mark.parametrize("damage", [_damage_truncate, _damage_flip], ids=["truncated", "flipped"])
def test_damaged_checkpoint_is_refused_naming_the_file(tmp_path, part, damage):
    model, x, y = _trained(tmp_path)
    manifest = json.loads((tmp_path / "last" / "model.json").read_text())
    name = manifest["files"][part]["name"]
    damage(tmp_path / "last" / name)
    with pytest.raises(CnnkitError, match=name):
        _dropout_net().fit(x, y, epochs=2, verbose=0, resume_from=tmp_path)
    if part == "model":  # cnnkit.load checks the same checksum
        with pytest.raises(CnnkitError, match=name):
            cnnkit.load(tmp_path / "last")


def test_altered_manifest_and_missing_file_are_refused(tmp_path):
    model, x, y = _trained(tmp_path)
    path = tmp_path / "last" / "model.json"
    manifest = json.loads(path.read_text())
    original = path.read_text()
    manifest["training"]["epoch"] = 7
    path.write_text(json.dumps(manifest))
    with pytest.raises(CnnkitError, match="model.json"):
        _dropout_net().fit(x, y, epochs=2, verbose=0, resume_from=tmp_path)
    path.write_text(original[:-20])
    with pytest.raises(CnnkitError, match="model.json"):
        _dropout_net().fit(x, y, epochs=2, verbose=0, resume_from=tmp_path)
    path.write_text(original)
    (tmp_path / "last" / manifest["files"]["rng"]["name"]).unlink()
    with pytest.raises(CnnkitError, match=manifest["files"]["rng"]["name"]):
        _dropout_net().fit(x, y, epochs=2, verbose=0, resume_from=tmp_path)


def test_crash_while_writing_leaves_the_previous_checkpoint_valid(tmp_path, monkeypatch):
    model, x, y = _trained(tmp_path / "run")
    folder = tmp_path / "ck"
    save_training_state(folder, model, 0, model.history)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.fit(x, y, epochs=1, verbose=0)  # the weights move on
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    real_save = ckpt_mod.save_file
    calls = []

    def crash_on_second_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # the model file is written, the optimizer file is not
            with open(filename, "wb") as fh:
                fh.write(b"partial")
            raise OSError("disk full")
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt_mod, "save_file", crash_on_second_file)
    with pytest.raises(OSError, match="disk full"):
        save_training_state(folder, model, 1, model.history, overwrite=True)
    monkeypatch.setattr(ckpt_mod, "save_file", real_save)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # temp file removed

    fresh = _dropout_net()
    fresh.fit(x[:4], y[:4], epochs=0, verbose=0)
    assert load_training_state(folder, fresh)["epoch"] == 0
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    # the next successful save replaces it and removes the orphaned files
    save_training_state(folder, model, 1, model.history, overwrite=True)
    # the new checkpoint (manifest + 3 tensor files) and the previous one kept as a fallback
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 8, names
    assert {ckpt_mod.CONFIG, ckpt_mod.PREVIOUS} <= set(names)
    assert sum("-e00001-" in n for n in names) == 3 and sum("-e00000-" in n for n in names) == 3
    assert read_checkpoint_info(folder)["epoch"] == 1


def test_nan_loss_keeps_the_last_good_checkpoint(tmp_path):
    class Poison(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                with torch.no_grad():
                    next(self.model._net.parameters()).fill_(float("nan"))

    torch.manual_seed(0)
    model = _dropout_net()
    x, y = torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,))
    snap = []

    class Snap(Callback):
        def on_epoch_end(self, epoch, logs=None):
            snap.append({k: v.clone() for k, v in self.model.state_dict().items()})

    cbs = [ModelCheckpoint(tmp_path, monitor="loss"), Snap(), Poison()]
    with pytest.raises(CnnkitError, match="nan"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=cbs)
    assert read_checkpoint_info(tmp_path / "last")["epoch"] == 0
    loaded = cnnkit.load(tmp_path / "last")
    assert all(torch.equal(snap[0][k], v) for k, v in loaded.state_dict().items())


def test_resume_errors_name_the_problem(tmp_path, caplog):
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    # nothing saved yet (a relaunch before the first checkpoint): starts, with a warning
    with caplog.at_level("WARNING", logger="cnnkit.train"):
        history = _dropout_net().fit(x, y, epochs=1, verbose=0, resume_from=tmp_path / "nowhere")
    assert history.epoch == [0]
    assert any("nowhere holds no checkpoint yet" in r.getMessage() for r in caplog.records)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CnnkitError, match="is a file"):
        _dropout_net().fit(x, y, epochs=1, verbose=0, resume_from=tmp_path / "afile")
    saved = _dropout_net()
    saved.save(tmp_path / "plain")
    with pytest.raises(CnnkitError, match="not a training checkpoint"):
        _dropout_net().fit(x, y, epochs=1, verbose=0, resume_from=tmp_path / "plain")
    _trained(tmp_path / "run")
    other = _dropout_seq()
    other.compile(optimizer="adam", loss="sparse_categorical_crossentropy", device="cpu")
    with pytest.raises(ConfigError, match="SGD optimizer"):
        other.fit(x, y, epochs=2, verbose=0, resume_from=tmp_path / "run")


def test_modules_without_an_architecture_still_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    model = cnnkit.Model(net)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", device="cpu")
    x, y = torch.rand(20, 1, 4, 4), torch.randint(0, 3, (20,))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[ModelCheckpoint(tmp_path, monitor="loss")])
    with pytest.raises(CnnkitError, match="no architecture"):
        cnnkit.load(tmp_path / "last")
    again = cnnkit.Model(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)))
    again.compile(optimizer="adam", loss="sparse_categorical_crossentropy", device="cpu")
    history = again.fit(x, y, epochs=2, verbose=0, resume_from=tmp_path)
    assert history.epoch == [0, 1]  # nothing left to train
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
