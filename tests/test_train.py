"""The Keras workflow: compile / fit / evaluate / predict / save / load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import cnnkit
from cnnkit import CnnkitError, ConfigError
from cnnkit.layers import Conv2D, Dense, Flatten, GlobalAveragePooling2D, MaxPooling2D
from cnnkit.models import create
from cnnkit.train.data import make_source
from cnnkit.train.precision import cpu_has_native_bf16, resolve_precision
from conftest import shuffled_digits


@pytest.fixture(scope="module")
def digits28():
    return shuffled_digits(28)


def test_mnist_cnn_learns_digits_seed000(digits28):
    """Seed 000's model (Conv 64, Conv 32, Flatten, Dense 10 softmax) on sklearn digits."""
    x, y = digits28
    cnnkit.seed_everything(0)
    model = cnnkit.Model(create("mnist_cnn"))
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        precision="fp32",  # exact comparisons below; bf16: tests/test_bf16.py
    )
    history = model.fit(x[:1400], y[:1400], batch_size=32, epochs=4, verbose=0)
    assert set(history.history) == {"loss", "accuracy"} and len(history.epoch) == 4
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = model.evaluate(x[1400:], y[1400:])
    assert set(result) == {"loss", "accuracy"}
    assert result["accuracy"] >= 0.95
    # accuracy reported by evaluate equals the accuracy of predict's probabilities
    probs = model.predict(x[1400:])
    assert probs.shape == (len(x) - 1400, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    manual = float((probs.argmax(1) == y[1400:].numpy()).mean())
    assert result["accuracy"] == pytest.approx(manual)


def _small_cnn():
    return cnnkit.Sequential(
        [
            Conv2D(4, 3, activation="relu"),
            MaxPooling2D(2),
            Flatten(),
            Dense(3, activation="softmax"),
        ],
        input_shape=(1, 8, 8),
    )


def test_loss_is_computed_from_logits_no_double_softmax():
    torch.manual_seed(1)
    model = _small_cnn()
    model.compile(
        optimizer="sgd",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        precision="fp32",
    )
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 3, (40,))
    loss = model.evaluate(x, y, batch_size=16)["loss"]
    probs = torch.from_numpy(model.predict(x))
    # the reference: cross-entropy of the probabilities the model outputs
    expected = F.nll_loss(torch.log(probs.double()), y).item()
    assert loss == pytest.approx(expected, rel=1e-5)
    # a double softmax would flatten the loss towards log(3)
    double = F.cross_entropy(probs, y).item()
    assert abs(loss - double) > 1e-3 or abs(expected - double) < 1e-3


def test_categorical_crossentropy_with_one_hot_targets():
    torch.manual_seed(2)
    model = _small_cnn()
    model.compile(optimizer="adam", loss="categorical_crossentropy", precision="fp32")
    x, y = torch.randn(20, 1, 8, 8), torch.randint(0, 3, (20,))
    onehot = F.one_hot(y, 3).float().numpy()
    loss = model.evaluate(x.numpy(), onehot)["loss"]
    probs = torch.from_numpy(model.predict(x)).double()
    assert loss == pytest.approx(F.nll_loss(torch.log(probs), y).item(), rel=1e-5)


def test_sigmoid_binary_crossentropy_matches_sklearn_log_loss():
    from sklearn.metrics import log_loss

    torch.manual_seed(3)
    model = cnnkit.Model(
        nn.Sequential(nn.Flatten(), nn.Linear(16, 1), nn.Sigmoid())
    )  # plain torch modules work too
    model.compile(optimizer="adam", loss="binary_crossentropy", device="cpu", precision="fp32")
    x = torch.randn(30, 1, 4, 4)
    y = torch.randint(0, 2, (30, 1)).float()
    loss = model.evaluate(x, y)["loss"]
    p = model.predict(x)[:, 0]
    assert loss == pytest.approx(log_loss(y[:, 0].numpy(), p), rel=1e-4)


class TwoHeads(nn.Module):
    """Seed 001's classification + localisation net, in miniature."""

    def __init__(self):
        super().__init__()
        self.body = cnnkit.layers.Sequential(
            [Conv2D(4, 3, padding="same", activation="relu"), GlobalAveragePooling2D()],
            input_shape=(1, 8, 8),
        )
        self.cls = Dense(3, activation="softmax", in_features=4)
        self.box = Dense(4, activation="sigmoid", in_features=4)

    def forward(self, x):
        h = self.body(x)
        return self.cls(h), self.box(h)


def test_multi_output_weighted_losses():
    torch.manual_seed(4)
    model = cnnkit.Model(TwoHeads())
    model.compile(
        optimizer="adam",
        loss=["sparse_categorical_crossentropy", "mse"],
        loss_weights=[0.8, 0.2],
        metrics=["accuracy"],
        precision="fp32",
    )
    x = torch.randn(24, 1, 8, 8)
    y_cls, y_box = torch.randint(0, 3, (24,)), torch.rand(24, 4)
    result = model.evaluate(x, (y_cls, y_box))
    probs, boxes = (torch.from_numpy(a).double() for a in model.predict(x))
    ce = F.nll_loss(torch.log(probs), y_cls).item()
    mse = F.mse_loss(boxes, y_box.double()).item()
    assert result["loss"] == pytest.approx(0.8 * ce + 0.2 * mse, rel=1e-5)
    history = model.fit(x, (y_cls, y_box), epochs=2, batch_size=8, verbose=0)
    assert len(history.history["loss"]) == 2
    with pytest.raises(ConfigError, match="2 outputs"):
        cnnkit.Model(TwoHeads()).compile(loss="mse").fit(x, y_box, verbose=0)


def test_dataset_and_dataloader_inputs_agree_with_arrays():
    torch.manual_seed(5)
    model = _small_cnn()
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = torch.randn(33, 1, 8, 8), torch.randint(0, 3, (33,))
    ref = model.evaluate(x, y, batch_size=8)
    ds = TensorDataset(x, y)
    for source in (ds, DataLoader(ds, batch_size=5)):
        got = model.evaluate(source, batch_size=8)
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5)
        assert got["accuracy"] == pytest.approx(ref["accuracy"])
    model.fit(ds, epochs=1, batch_size=8, verbose=0, validation_split=0.25)


def test_validation_split_takes_the_last_fraction_before_shuffling():
    x, y = torch.arange(10.0).reshape(10, 1), torch.arange(10)
    train, val = make_source(x, y).split(0.3)
    assert torch.equal(val.x[:, 0], torch.tensor([7.0, 8.0, 9.0]))
    assert torch.equal(train.y, torch.arange(7))
    model = _small_cnn()
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    xs, ys = torch.randn(20, 1, 8, 8), torch.randint(0, 3, (20,))
    h = model.fit(xs, ys, epochs=2, validation_split=0.3, verbose=0)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(6)
    model = cnnkit.Model(create("cifar_cnn", num_classes=5))
    x = torch.randn(4, 3, 32, 32)
    ref = model.predict(x)
    model.save(tmp_path / "run")
    loaded = cnnkit.load(tmp_path / "run")
    np.testing.assert_array_equal(loaded.predict(x), ref)
    # a Sequential built in code
    seq = _small_cnn()
    seq.save(tmp_path / "seq")
    again = cnnkit.load(tmp_path / "seq")
    xs = torch.randn(3, 1, 8, 8)
    np.testing.assert_array_equal(again.predict(xs), seq.predict(xs))
    # nothing saved is overwritten silently
    with pytest.raises(CnnkitError, match="refusing to overwrite"):
        seq.save(tmp_path / "seq")
    # a changed byte is refused, naming the file
    weights = tmp_path / "seq" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CnnkitError, match="model.safetensors"):
        cnnkit.load(tmp_path / "seq")


def test_bad_inputs_are_explained():
    model = _small_cnn()
    x, y = torch.randn(10, 1, 8, 8), torch.randint(0, 3, (10,))
    with pytest.raises(ConfigError, match="compile"):
        model.fit(x, y, verbose=0)
    model.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(ConfigError, match="validation_split.*1.0"):
        model.fit(x, y, validation_split=1.0, verbose=0)
    with pytest.raises(ValueError, match="10 samples.*9"):
        model.fit(x, y[:9], verbose=0)
    with pytest.raises(ConfigError, match="empty"):
        model.fit(x[:0], y[:0], verbose=0)
    with pytest.raises(ValueError, match="7"):
        model.fit(x, torch.full((10,), 7), verbose=0)  # label 7 with 3 classes
    with pytest.raises(ConfigError, match="Unknown optimizer 'adamm'"):
        _small_cnn().compile(optimizer="adamm", loss="mse").fit(x, y, verbose=0)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(CnnkitError, match="nan"):
        model.fit(bad, y, verbose=0)


def test_precision_auto_follows_the_cpu():
    auto = resolve_precision("auto", torch.device("cpu"))
    assert auto.name == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("bf16", torch.device("cpu")).dtype is torch.bfloat16
    with pytest.raises(ConfigError, match="'fp8'"):
        resolve_precision("fp8", torch.device("cpu"))


def test_bf16_autocast_trains():
    torch.manual_seed(7)
    model = _small_cnn()
    model.compile(loss="sparse_categorical_crossentropy", precision="bf16", metrics=["accuracy"])
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,))
    h = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert all(np.isfinite(h.history["loss"]))
    assert model.evaluate(x, y)["loss"] == pytest.approx(h.history["loss"][-1], rel=0.5)


def test_channels_last_same_results_and_really_used():
    x, y = torch.randn(24, 1, 8, 8), torch.randint(0, 3, (24,))
    results = {}
    for flag in (False, True):
        torch.manual_seed(8)
        model = _small_cnn()
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", channels_last=flag)
        h = model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        assert model._memory_format == (torch.channels_last if flag else None)
        results[flag] = h.history["loss"]
    np.testing.assert_allclose(results[True], results[False], rtol=1e-5)
    # 'auto' switches 2D conv nets on CPU and CUDA (oneDNN / cuDNN prefer NHWC), in fp32 too
    model = _small_cnn().compile(loss="sparse_categorical_crossentropy", precision="fp32")
    model.fit(x, y, epochs=1, verbose=0)
    assert model._memory_format is torch.channels_last
    with pytest.raises(ConfigError, match="'yes'"):
        _small_cnn().compile(loss="mse", channels_last="yes")
