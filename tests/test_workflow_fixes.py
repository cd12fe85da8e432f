"""Small workflow bugs (issue 15), each with the behaviour that was wrong before the fix:
learning rate 0.0, the learning rate logged per epoch, batches in .npy files, the data
download folder, input-size errors, progress output in logs, ``models --recipes``,
``device='auto'`` and bad device strings."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import cnnkit
from cnnkit import CnnkitError, ConfigError, ShapeError
from cnnkit.callbacks import Callback, TensorBoard
from cnnkit.cli.commands import read_inputs
from cnnkit.cli.main import main
from cnnkit.layers import Conv2D, Dense, Flatten
from cnnkit.models import create
from cnnkit.train.progress import ProgressBar
from cnnkit.train.schedules import step_decay
from conftest import shuffled_digits


def _tiny(classes: int = 3) -> cnnkit.Sequential:
    return cnnkit.Sequential(
        [Conv2D(2, 3, activation="relu"), Flatten(), Dense(classes, activation="softmax")],
        input_shape=(1, 6, 6),
    )


def _data(n: int = 32):
    return torch.randn(n, 1, 6, 6), torch.randint(0, 3, (n,))


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ learning rate


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_learning_rate_zero_is_honoured(optimizer):
    x, y = _data()
    model = _tiny().compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        learning_rate=0.0,
        precision="fp32",
    )
    model.fit(x[:4], y[:4], epochs=1, verbose=0)  # builds the optimizer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.optimizer.param_groups[0]["lr"] == 0.0
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.1"])
def test_bad_learning_rate_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=r"learning_rate must be .* received"):
        _tiny().compile(loss="mse", learning_rate=bad)


class _LrSeen(Callback):
    """The learning rate the optimizer really used, read at every step."""

    def __init__(self):
        self.per_epoch: dict[int, set[float]] = {}
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        lr = self.model.optimizer.param_groups[0]["lr"]
        self.per_epoch.setdefault(self.epoch, set()).add(lr)


def test_logged_learning_rate_is_the_one_each_epoch_used(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install tensorboard to test TensorBoard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x, y = _data()
    model = _tiny().compile(
        optimizer="sgd",
        loss="sparse_categorical_crossentropy",
        learning_rate=0.1,
        lr_schedule=step_decay(2, gamma=0.5),
        precision="fp32",
    )
    seen = _LrSeen()
    history = model.fit(
        x, y, epochs=4, batch_size=8, verbose=0, callbacks=[seen, TensorBoard(tmp_path)]
    )
    used = [seen.per_epoch[e].pop() for e in range(4)]
    assert all(not s for s in seen.per_epoch.values())  # one rate per epoch
    assert used == pytest.approx([0.1, 0.1, 0.05, 0.05])
    assert history.history["learning_rate"] == pytest.approx(used)
    acc = EventAccumulator(str(tmp_path / "train"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("epoch_learning_rate")] == pytest.approx(used)


# ------------------------------------------------------------------ predict inputs


def test_npy_batch_for_a_one_channel_model_is_a_batch(tmp_path):
    a = np.random.default_rng(0).random((2, 28, 28), dtype=np.float32)
    np.save(tmp_path / "two.npy", a)
    names, x, resized = read_inputs([str(tmp_path / "two.npy")], (1, 28, 28))
    assert names == [f"{tmp_path / 'two.npy'}[0]", f"{tmp_path / 'two.npy'}[1]"]
    assert x.shape == (2, 1, 28, 28) and not resized
    np.testing.assert_array_equal(x[:, 0].numpy(), a)
    np.save(tmp_path / "one.npy", a[:1])
    assert read_inputs([str(tmp_path / "one.npy")], (1, 28, 28))[1].shape == (1, 1, 28, 28)
    # three planes: an RGB image (made grey) or three grey images? refused, both named
    np.save(tmp_path / "three.npy", np.zeros((3, 28, 28), np.float32))
    with pytest.raises(CnnkitError) as err:
        read_inputs([str(tmp_path / "three.npy")], (1, 28, 28))
    text = str(err.value)
    assert "(3, 28, 28)" in text and "3 colour channels" in text and "batch of 3" in text
    # for a three-channel model (3, H, W) is one image
    np.save(tmp_path / "rgb.npy", np.zeros((3, 32, 32), np.float32))
    assert read_inputs([str(tmp_path / "rgb.npy")], (3, 32, 32))[1].shape == (1, 3, 32, 32)


@pytest.fixture(scope="module")
def softmax_run(tmp_path_factory):
    """A finished fp32 run of seed 000's MNIST CNN on 28x28 digits."""
    root = tmp_path_factory.mktemp("softmax")
    config = root / "c.yaml"
    config.write_text(
        "name: c\ntask: classification\nseed: 0\n"
        "dataset: {name: digits, args: {size: 28, test_size: 0.25}}\n"
        "model: {name: mnist_cnn, args: {}}\n"
        "compile: {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}\n"
        "fit: {epochs: 1, batch_size: 32, validation_split: 0.0}\n"
    )
    run_dir = root / "run"
    argv = ["train", str(config), "--out", str(run_dir), "--precision", "fp32", "--verbose", "0"]
    assert main([*argv, "--limit", "200", "--threads", "1"]) == 0
    return run_dir


def test_cli_says_once_when_it_resizes(softmax_run, tmp_path, capsys):
    capsys.readouterr()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / name)
    code, out, err = run(["predict", str(softmax_run), str(tmp_path / "a.png"),
                          str(tmp_path / "b.png")], capsys)  # fmt: skip
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if "resized" in ln]
    assert len(notes) == 1 and "28x28" in notes[0] and "a.png" in notes[0]
    assert "b.png" in notes[0] and len(out.splitlines()) == 2
    # the run's own size: no note
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "c.png")
    code, _, err = run(["predict", str(softmax_run), str(tmp_path / "c.png")], capsys)
    assert code == 0 and "resized" not in err


def test_cli_device_auto_and_bad_devices(softmax_run, capsys):
    code, out, err = run(["evaluate", str(softmax_run), "--device", "auto"], capsys)
    assert code == 0 and "accuracy" in out, err
    for command in (["evaluate", str(softmax_run)], ["predict", str(softmax_run), "x.png"]):
        code, _, err = run([*command, "--device", "gpu"], capsys)
        assert code == 2 and "'gpu'" in err and "auto" in err and "cuda:N" in err
    with pytest.raises(ConfigError, match="'gpu'.*'auto', 'cpu'"):
        cnnkit.load(softmax_run, device="gpu")
    with pytest.raises(ConfigError, match="'tpu'"):
        _tiny().compile(loss="mse", device="tpu")
    auto = cnnkit.load(softmax_run, device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(auto.parameters()).device.type == expected


def test_input_size_error_names_the_size_the_model_expects(softmax_run):
    x, y = shuffled_digits(32)
    model = cnnkit.load(softmax_run)
    for fn in (lambda: model.predict(x[:2]),):
        with pytest.raises(ShapeError) as err:
            fn()
        assert "(1, 28, 28)" in str(err.value) and "received (1, 32, 32)" in str(err.value)
    trained = cnnkit.Model(create("mnist_cnn")).compile(
        loss="sparse_categorical_crossentropy", precision="fp32"
    )
    small, labels = shuffled_digits(28)
    trained.fit(small[:8], labels[:8], epochs=1, verbose=0)
    with pytest.raises(ShapeError, match=r"built for inputs of shape \(1, 28, 28\)"):
        trained.evaluate(x[:8], y[:8])
    with pytest.raises(ShapeError, match=r"received \(1, 32, 32\)"):
        trained.fit(x[:8], y[:8], epochs=1, verbose=0)


# ------------------------------------------------------------------ data folder


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_data_command_uses_the_folder_the_reader_reads(tmp_path, monkeypatch, capsys):
    """Without --data-dir: $CNNKIT_DATA/mnist, where cnnkit.data.mnist() looks."""
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path))
    code, _, err = run(["data", "verify", "mnist"], capsys)
    assert code == 2 and str(tmp_path / "mnist") in err
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5), ("t10k", 3)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
    code, out, err = run(["data", "verify", "mnist"], capsys)
    assert code == 0, err
    assert "train 5, test 3" in out and f"files in {folder}" in out
    from cnnkit.data import mnist

    assert len(mnist(split="train")) == 5


# ------------------------------------------------------------------ progress, recipes


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_writes_plain_lines_when_not_a_terminal():
    log = io.StringIO()
    bar = ProgressBar(4, 1, 2, verbose=1, stream=log, interval=0.0)
    for step in range(1, 5):
        bar.update(step, 8, lambda: {"loss": 0.5})
    bar.finish({"loss": 0.5})
    text = log.getvalue()
    assert "\r" not in text and text.count("\n") == 1 and text.startswith("Epoch 1/2 - ")
    tty = _Tty()
    bar = ProgressBar(4, 1, 2, verbose=1, stream=tty, interval=0.0)
    for step in range(1, 5):
        bar.update(step, 8, lambda: {"loss": 0.5})
    bar.finish({"loss": 0.5})
    assert tty.getvalue().count("\r") >= 4


def test_fit_into_a_log_has_one_line_per_epoch(capsys):
    x, y = _data()
    _tiny().compile(loss="sparse_categorical_crossentropy", precision="fp32").fit(
        x, y, epochs=3, batch_size=4, verbose=1
    )
    out = capsys.readouterr().out
    assert "\r" not in out
    assert [ln.split(" - ")[0] for ln in out.splitlines()] == [
        "Epoch 1/3",
        "Epoch 2/3",
        "Epoch 3/3",
    ]


def test_models_recipes_lists_recipes_with_descriptions(capsys):
    from cnnkit.cli.recipes import RECIPE_DIR, list_recipes

    code, out, _ = run(["models", "--recipes"], capsys)
    assert code == 0
    assert "lenet5" not in out.split()  # the model list is `cnnkit models`
    lines = out.splitlines()[1:]
    assert [ln.split()[0] for ln in lines] == list_recipes()
    for line, name in zip(lines, list_recipes()):
        description = yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text())["description"]
        summary = line.split(None, 1)[1]
        assert " ".join(description.split()).startswith(summary) and len(summary) > 20


def test_history_stays_one_value_per_epoch_when_keys_come_and_go(tmp_path):
    """A run resumed by a cnnkit that logs more (learning_rate from epoch 3 on) ended in
    an IndexError when history.csv was written: every key now has one value per epoch,
    NaN where it was not logged, and the csv is written."""
    import csv
    import math

    from cnnkit.cli.run_folder import write_history
    from cnnkit.train.model import History

    h = History()
    h.restore({"loss": [3.0, 2.0, 1.0], "learning_rate": [0.1]}, [0, 1, 2])
    assert all(math.isnan(v) for v in h.history["learning_rate"][:2])
    assert h.history["learning_rate"][2] == 0.1
    h.append(3, {"loss": 0.5, "learning_rate": 0.05, "val_loss": 0.7})
    h.append(4, {"loss": 0.4, "val_loss": 0.6})
    assert {k: len(v) for k, v in h.history.items()} == {"loss": 5, "learning_rate": 5,
                                                          "val_loss": 5}  # fmt: skip
    assert math.isnan(h.history["learning_rate"][4]) and math.isnan(h.history["val_loss"][0])
    assert h.epoch == [0, 1, 2, 3, 4]
    write_history(tmp_path / "history.csv", h.history)
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert len(rows) == 5 and float(rows[3]["learning_rate"]) == 0.05
