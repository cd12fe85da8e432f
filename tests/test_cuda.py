"""The CUDA branches: AMP (fp16 with a GradScaler, bf16), channels-last, cuDNN autotuning,
pinned memory, metrics and callbacks on the device, checkpoints across devices.

Every test needs a CUDA GPU and is skipped without one (the CPU paths are tested
everywhere else). Exact comparisons run in fp32; mixed precision is compared with
tolerances and with the fp32 policy for what users read.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import cnnkit
from cnnkit.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint
from cnnkit.layers import BatchNormalization, Conv2D, Dense, Flatten, MaxPooling2D
from cnnkit.train.checkpoint import load_training_state
from cnnkit.train.precision import resolve_precision

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (the CUDA branches of fit/predict)"
)


def _cnn() -> cnnkit.Sequential:
    return cnnkit.Sequential(
        [
            Conv2D(8, 3, padding="same", activation="relu"),
            BatchNormalization(),
            MaxPooling2D(2),
            Flatten(),
            Dense(4, activation="softmax"),
        ],
        input_shape=(1, 8, 8),
    )


def _data(n: int = 64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    return x, y


def test_auto_means_cuda_and_amp():
    model = _cnn().compile(loss="sparse_categorical_crossentropy")
    assert model.device.type == "cuda"
    bf16 = torch.cuda.is_bf16_supported()
    assert model.precision.name == ("bf16" if bf16 else "fp16")
    assert (model.scaler is not None) == (not bf16)
    assert model.runtime_choices["cudnn_benchmark"] is True
    assert torch.backends.cudnn.benchmark


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_amp_trains_and_outputs_stay_fp32(precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    x, y = _data()
    cnnkit.seed_everything(0)
    model = _cnn().compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        precision=precision,
        device="cuda",
    )
    assert (model.scaler is not None) == (precision == "fp16")
    history = model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    probs = model.predict(x)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    result = model.evaluate(x, y)
    assert result["accuracy"] == pytest.approx(float((probs.argmax(1) == y.numpy()).mean()))
    if precision == "fp16":
        assert model.scaler.get_scale() > 0


def test_fp32_cuda_matches_fp32_cpu():
    x, y = _data()
    losses = {}
    for device in ("cpu", "cuda"):
        cnnkit.seed_everything(1)
        model = _cnn().compile(
            optimizer="sgd",
            loss="sparse_categorical_crossentropy",
            precision="fp32",
            device=device,
            channels_last=False,
        )
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        h = model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
        losses[device] = h.history["loss"]
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-4)


def test_channels_last_on_cuda():
    x, y = _data()
    model = _cnn().compile(loss="sparse_categorical_crossentropy", device="cuda")
    model.fit(x, y, epochs=1, verbose=0)
    assert model._memory_format is torch.channels_last
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.runtime_choices["memory_format"] == "channels_last"


def test_pinned_memory_for_datasets_and_metrics_on_the_device():
    x, y = _data()
    model = _cnn().compile(
        loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cuda"
    )
    seen = []

    class Probe(cnnkit.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(next(self.model.parameters()).device.type)

    history = model.fit(
        TensorDataset(x, y),
        epochs=1,
        batch_size=16,
        verbose=0,
        callbacks=[Probe(), EarlyStopping(monitor="loss", patience=3)],
    )
    assert seen and set(seen) == {"cuda"}
    assert "accuracy" in history.history
    from cnnkit.train.data import make_source

    loader = make_source(TensorDataset(x, y), pin_memory=True)
    xb, _ = next(iter(loader.batches(8, False)))
    assert xb.is_pinned()


def test_checkpoint_trained_on_cuda_loads_on_cpu_and_back(tmp_path):
    x, y = _data()
    cnnkit.seed_everything(2)
    model = _cnn().compile(loss="sparse_categorical_crossentropy", device="cuda", precision="fp32")
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        verbose=0,
        callbacks=[
            ModelCheckpoint(tmp_path / "ckpt", monitor="loss"),
            CSVLogger(tmp_path / "h.csv"),
        ],
    )
    want = model.predict(x)
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["runtime"]["precision"] == "fp32"
    on_cpu = cnnkit.load(tmp_path / "m", device="cpu")
    assert next(on_cpu.parameters()).device.type == "cpu"
    np.testing.assert_allclose(on_cpu.predict(x), want, atol=1e-4)
    back = cnnkit.load(tmp_path / "m", device="cuda")
    np.testing.assert_allclose(back.predict(x), want, atol=1e-5)
    # a training checkpoint written on CUDA resumes on the CPU
    cpu_model = _cnn().compile(
        loss="sparse_categorical_crossentropy", device="cpu", precision="fp32"
    )
    cpu_model.fit(x[:16], y[:16], epochs=1, verbose=0)
    load_training_state(tmp_path / "ckpt" / "last", cpu_model)
    np.testing.assert_allclose(cpu_model.predict(x), want, atol=1e-4)
    assert resolve_precision("auto", torch.device("cuda")).name in ("bf16", "fp16")
