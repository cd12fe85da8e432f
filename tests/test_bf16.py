"""Forced bf16: what a CPU with native bf16 (AMX) or a GPU computes, on any CPU.

bf16 autocast is emulated (slowly) on CPUs without bf16 units, so the models here are
tiny. The policy under test: the body of the network may run in bf16, everything a
user reads (final softmax/sigmoid, loss, metrics, ``predict``, ``evaluate``) is fp32,
and a saved model predicts after ``cnnkit.load`` exactly what it predicted before.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

import cnnkit
from cnnkit.cli.main import main
from cnnkit.layers import Conv2D, Dense, Flatten, MaxPooling2D
from cnnkit.train.precision import cpu_has_native_bf16, resolve_precision
from conftest import shuffled_digits


@pytest.fixture(scope="module")
def digits8():
    x, y = shuffled_digits(8)
    return x, y


def _softmax_cnn(classes: int = 10) -> cnnkit.Sequential:
    return cnnkit.Sequential(
        [
            Conv2D(8, 3, padding="same", activation="relu"),
            MaxPooling2D(2),
            Flatten(),
            Dense(classes, activation="softmax"),
        ],
        input_shape=(1, 8, 8),
    )


class TorchSoftmaxNet(nn.Module):
    """Plain torch modules ending in ``nn.Softmax``: the logits are ``body(x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 64, 10)
        )
        self.act = nn.Softmax(dim=1)

    def forward(self, x):
        return self.act(self.body(x))


def test_assume_native_bf16_switches_auto(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("CNNKIT_ASSUME_NATIVE_BF16", "1")
    assert cpu_has_native_bf16() and resolve_precision("auto", cpu).name == "bf16"
    monkeypatch.setenv("CNNKIT_ASSUME_NATIVE_BF16", "0")
    assert not cpu_has_native_bf16() and resolve_precision("auto", cpu).name == "fp32"


def test_bf16_probabilities_are_fp32_softmax_of_the_logits(digits8):
    x, y = digits8
    torch.manual_seed(0)
    net = TorchSoftmaxNet()
    model = cnnkit.Model(net).compile(loss="sparse_categorical_crossentropy", precision="bf16")
    probs = model.predict(x[:64])
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    # the reference: the same bf16 body, softmax by torch in float64
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net.body(x[:64])
    want = torch.softmax(logits.double(), dim=1).numpy()
    np.testing.assert_allclose(probs, want, atol=1e-6)


def test_bf16_fit_evaluate_metrics_are_fp32_and_close_to_fp32(digits8):
    x, y = digits8
    results = {}
    for precision in ("fp32", "bf16"):
        cnnkit.seed_everything(0)
        model = _softmax_cnn()
        model.compile(
            optimizer="adam",
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            precision=precision,
            learning_rate=3e-3,
        )
        model.fit(x[:1200], y[:1200], epochs=3, batch_size=64, verbose=0)
        result = model.evaluate(x[1200:], y[1200:], batch_size=128)
        probs = model.predict(x[1200:], batch_size=128)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
        # evaluate's accuracy is the accuracy of predict's (fp32) probabilities
        manual = float((probs.argmax(1) == y[1200:].numpy()).mean())
        assert result["accuracy"] == pytest.approx(manual)
        results[precision] = result
    assert results["fp32"]["accuracy"] > 0.8
    assert abs(results["bf16"]["accuracy"] - results["fp32"]["accuracy"]) <= 0.02


def test_bf16_save_load_predicts_identically(digits8, tmp_path):
    x, y = digits8
    cnnkit.seed_everything(1)
    model = _softmax_cnn()
    model.compile(loss="sparse_categorical_crossentropy", precision="bf16", channels_last=True)
    model.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    before = model.predict(x[:100])
    model.save(tmp_path / "m")
    runtime = json.loads((tmp_path / "m" / "model.json").read_text())["runtime"]
    assert runtime == {
        "precision": "bf16",
        "memory_format": "channels_last",
        "input_shape": [1, 8, 8],
    }
    loaded = cnnkit.load(tmp_path / "m")
    assert loaded.precision.name == "bf16" and loaded.runtime_choices["precision"] == "bf16"
    after = loaded.predict(x[:100])
    assert np.array_equal(before, after)
    # load(precision=...) overrides: fp32 predicts close to, not exactly, the bf16 numbers
    fp32 = cnnkit.load(tmp_path / "m", precision="fp32").predict(x[:100])
    assert not np.array_equal(fp32, after)
    np.testing.assert_allclose(fp32, after, atol=0.05)
    # "auto" is accepted as a device by load
    assert cnnkit.load(tmp_path / "m", device="auto").predict(x[:5]).shape == (5, 10)


def test_bf16_trained_model_exports_to_onnx(digits8, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    x, y = digits8
    cnnkit.seed_everything(2)
    model = _softmax_cnn()
    model.compile(loss="sparse_categorical_crossentropy", precision="bf16")
    model.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    model.save(tmp_path / "m")
    model.export_onnx(tmp_path / "m.onnx", input_shape=(1, 8, 8))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x[:16].numpy()})[0]
    want = cnnkit.load(tmp_path / "m", precision="fp32").predict(x[:16])  # an fp32 graph
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_cli_predict_confidences_of_a_bf16_run(tmp_path, capsys):
    """The bug: bf16 probabilities summed to 1.0012, the CLI took them for logits and
    printed softmax(p) (23.2 % for a sure digit). Confidences must equal the model's own
    fp32 softmax within one percentage point."""
    config = tmp_path / "softmax-digits.yaml"
    config.write_text(
        "name: softmax-digits\ntask: classification\nseed: 0\n"
        "dataset: {name: digits, args: {size: 28, test_size: 0.25}}\n"
        "model: {name: mnist_cnn, args: {}}\n"
        "compile: {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}\n"
        "fit: {epochs: 2, batch_size: 32, validation_split: 0.0}\n"
    )
    run = tmp_path / "run"
    argv = ["train", str(config), "--out", str(run), "--precision", "bf16", "--verbose", "0"]
    assert main([*argv, "--limit", "300", "--threads", "1"]) == 0
    capsys.readouterr()
    x, _ = shuffled_digits(28)
    batch = x[:6, 0].numpy()  # (6, 28, 28): a batch for a one-channel model
    np.save(tmp_path / "batch.npy", batch)
    assert main(["predict", str(run), str(tmp_path / "batch.npy"), "--device", "auto"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "batch.npy[" in ln]
    assert len(lines) == 6
    reference = cnnkit.load(run, precision="fp32")
    assert reference.output_activations(x[:1]) == ["softmax"]
    probs = reference.predict(x[:6])
    for line, p in zip(lines, probs):
        label, pct = re.search(r": (\d) \(([0-9.]+)%\)", line).groups()
        assert int(label) == int(p.argmax()) or p.max() - np.sort(p)[-2] < 0.02
        assert float(pct) == pytest.approx(100 * float(p.max()), abs=1.0)
    assert max(float(re.search(r"\(([0-9.]+)%\)", ln).group(1)) for ln in lines) > 30.0
