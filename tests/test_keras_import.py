"""``cnnkit.from_keras``: saved Keras models imported as cnnkit models, predictions equal
to Keras' within 1e-5 (fp32).

The first tests use the committed ``tests/data/keras_small.keras`` and Keras' own
predictions stored next to it (written by ``tests/data/make_keras_fixture.py``), so they
run without Keras; the others build models in real Keras 3 (torch backend), save them,
import them and compare, and skip when Keras is absent.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnkit
from cnnkit import CnnkitError, ConfigError
from cnnkit.layers import Graph

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "keras_small.keras"
ATOL = 1e-5


def _cf(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def _outputs(y) -> list[np.ndarray]:
    ys = y if isinstance(y, (tuple, list)) else [y]
    return [t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in ys]


def _with_config(tmp_path: Path, edit) -> Path:
    """A copy of the fixture whose config.json went through ``edit(dict)``."""
    out = tmp_path / "edited.keras"
    with zipfile.ZipFile(FIXTURE) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "config.json":
                cfg = json.loads(data)
                edit(cfg)
                data = json.dumps(cfg).encode()
            dst.writestr(info.filename, data)
    return out


def _layer(cfg: dict, name: str) -> dict:
    return next(e for e in cfg["config"]["layers"] if e["config"]["name"] == name)


# ---------------------------------------------------------------------- without Keras


def test_committed_keras_file_predicts_as_keras_did():
    expected = np.load(DATA / "keras_small_expected.npz")
    model = cnnkit.from_keras(FIXTURE)
    assert isinstance(model, cnnkit.Model) and isinstance(model.module, Graph)
    assert not model.training
    with torch.no_grad():
        cls, box = model(_cf(expected["x"]))
    np.testing.assert_allclose(cls.numpy(), expected["cls"], atol=ATOL, rtol=ATOL)
    np.testing.assert_allclose(box.numpy(), expected["box"], atol=ATOL, rtol=ATOL)
    # the layers are plain cnnkit layers
    kinds = {type(m).__name__ for m in model.module.layers.values()}
    assert {"Conv2D", "SeparableConv2D", "Concatenate", "Add", "BatchNormalization"} <= kinds
    assert {"Conv2DTranspose", "DepthwiseConv2D", "Flatten", "Dense"} <= kinds


def test_cnnkit_load_reads_a_keras_file():
    expected = np.load(DATA / "keras_small_expected.npz")
    model = cnnkit.load(FIXTURE)
    with torch.no_grad():
        cls, _ = model(_cf(expected["x"]))
    np.testing.assert_allclose(cls.numpy(), expected["cls"], atol=ATOL, rtol=ATOL)


def test_unknown_layer_is_refused_naming_it(tmp_path):
    def edit(cfg):
        _layer(cfg, "cls")["class_name"] = "LayerNormalization"

    with pytest.raises(ConfigError, match=r"'cls' \(LayerNormalization\).*Supported: .*Conv2D"):
        cnnkit.from_keras(_with_config(tmp_path, edit))


def test_lambda_layer_is_refused_with_the_reason(tmp_path):
    def edit(cfg):
        _layer(cfg, "cls")["class_name"] = "Lambda"

    with pytest.raises(ConfigError, match="Lambda layers hold Python code"):
        cnnkit.from_keras(_with_config(tmp_path, edit))


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("kernel_regularizer", {"class_name": "L2", "config": {"l2": 0.01}}, "kernel_regularizer"),
        ("activation", "my_custom_act", "activation"),
        ("data_format", "channels_first", "data_format"),
        ("kernel_initializer", {"class_name": "VarianceScaling"}, "kernel_initializer"),
    ],
)
def test_unsupported_option_names_layer_key_and_supported(tmp_path, key, value, match):
    def edit(cfg):
        conv = next(e for e in cfg["config"]["layers"] if e["class_name"] == "Conv2D")
        conv["config"][key] = value

    with pytest.raises(ConfigError, match=rf"'conv2d' \(Conv2D\): config key '{match}'.*supports"):
        cnnkit.from_keras(_with_config(tmp_path, edit))


def test_files_that_are_not_keras_models_are_refused(tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(CnnkitError, match="never unpickles"):
        cnnkit.from_keras(bad)
    empty = tmp_path / "empty.keras"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("metadata.json", "{}")
    with pytest.raises(CnnkitError, match="no config.json"):
        cnnkit.from_keras(empty)
    with pytest.raises(CnnkitError, match="not valid JSON"):
        cnnkit.from_keras(_with_config_raw(tmp_path, b"{not json"))


def test_sizes_are_bounded_before_reading(tmp_path, monkeypatch):
    from cnnkit.train import keras_file

    monkeypatch.setattr(keras_file, "MAX_CONFIG_BYTES", 100)
    with pytest.raises(CnnkitError, match=r"config.json is \d+ bytes; too large"):
        cnnkit.from_keras(FIXTURE)


def test_weights_that_do_not_fit_the_config_name_the_layer(tmp_path):
    def edit(cfg):
        _layer(cfg, "cls")["config"]["units"] = 5

    with pytest.raises(ConfigError, match=r"'cls' \(Dense\): the file's kernel of shape"):
        cnnkit.from_keras(_with_config(tmp_path, edit))


def _with_config_raw(tmp_path: Path, raw: bytes) -> Path:
    out = tmp_path / "raw.keras"
    with zipfile.ZipFile(FIXTURE) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, raw if info.filename == "config.json" else src.read(info))
    return out


# ---------------------------------------------------------------------- with Keras

os.environ["KERAS_BACKEND"] = "torch"
try:
    import keras
    from keras import layers as KL

    HAVE_KERAS = keras.backend.backend() == "torch"
except ImportError:  # pragma: no cover - CI installs keras
    HAVE_KERAS = False

needs_keras = pytest.mark.skipif(not HAVE_KERAS, reason="Keras 3 (torch backend) not installed")


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = rng.standard_normal(w.shape).astype("float32") * 0.2
        if w.path.endswith(("moving_variance", "gamma")):
            v = np.abs(v) + 0.5
        w.assign(v)


def _round_trip(model, tmp_path, name="m.keras", x=None):
    path = tmp_path / name
    model.save(path)
    shape = tuple(model.inputs[0].shape[1:])
    if x is None:
        x = np.random.default_rng(1).random((2, *shape)).astype("float32")
    ky = model.predict(x, verbose=0)
    imported = cnnkit.from_keras(path)
    with torch.no_grad():
        y = imported(_cf(x) if len(shape) > 1 else torch.from_numpy(x))
    kys = [np.asarray(k) for k in (ky if isinstance(ky, list) else [ky])]
    ys = _outputs(y)
    assert len(ys) == len(kys)
    for a, b in zip(ys, kys):
        b = np.moveaxis(b, -1, 1) if b.ndim > 2 else b
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=ATOL, rtol=ATOL)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    cf_shape = (shape[-1], *shape[:-1]) if len(shape) > 1 else shape
    rows = cnnkit.summary(imported.module, cf_shape, print_fn=lambda line: None)
    assert rows.trainable_params == trainable
    return imported


@needs_keras
def test_seed000_mnist_cnn(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            KL.Conv2D(64, kernel_size=3, activation="relu"),
            KL.Conv2D(32, kernel_size=3, activation="relu"),
            KL.Flatten(),
            KL.Dense(10, activation="softmax"),
        ]
    )
    _randomise(model)
    imported = _round_trip(model, tmp_path)
    assert isinstance(imported.module, cnnkit.layers.Sequential)
    # an imported Sequential saves and loads as any cnnkit model
    imported.save(tmp_path / "saved")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(cnnkit.load(tmp_path / "saved")(x), imported(x))


@needs_keras
def test_seed004_cifar_cnn_and_fcn(tmp_path):
    cnn = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            KL.Conv2D(32, (3, 3), activation="relu"),
            KL.MaxPooling2D(pool_size=(2, 2)),
            KL.Conv2D(64, (3, 3), activation="relu"),
            KL.Conv2D(128, (3, 3), activation="relu"),
            KL.Flatten(),
            KL.Dense(128, activation="relu"),
            KL.Dense(10, activation="softmax"),
        ]
    )
    _randomise(cnn)
    _round_trip(cnn, tmp_path, "cnn.keras")
    fcn = keras.Sequential(
        [
            keras.Input((32 * 32 * 3,)),
            KL.Dense(2048, activation="relu"),
            KL.Dense(1024, activation="relu"),
            KL.Dense(512, activation="relu"),
            KL.Dense(128, activation="relu"),
            KL.Dense(10, activation="softmax"),
        ]
    )
    imported = _round_trip(fcn, tmp_path, "fcn.keras")
    total = sum(p.numel() for p in imported.parameters())
    assert total == fcn.count_params() == 8_983_434  # seed 004's summary


@needs_keras
def test_seed001_unet_functional_with_concatenate(tmp_path):
    """Seed 001's U-Net (its Lambda(x / 255) written as Rescaling), 64 px, fewer filters."""
    inputs = keras.Input((64, 64, 3))
    s = KL.Rescaling(1 / 255)(inputs)

    def block(x, f, drop):
        x = KL.Conv2D(f, (3, 3), activation="relu", kernel_initializer="he_normal", padding="same")(
            x
        )
        x = KL.Dropout(drop)(x)
        return KL.Conv2D(
            f, (3, 3), activation="relu", kernel_initializer="he_normal", padding="same"
        )(x)

    skips, x = [], s
    for f, drop in ((4, 0.1), (8, 0.1), (16, 0.2)):
        x = block(x, f, drop)
        skips.append(x)
        x = KL.MaxPooling2D((2, 2))(x)
    x = block(x, 32, 0.3)
    for f, skip in zip((16, 8, 4), reversed(skips)):
        x = KL.Conv2DTranspose(f, (2, 2), strides=(2, 2), padding="same")(x)
        x = KL.concatenate([x, skip], axis=3)
        x = block(x, f, 0.1)
    outputs = KL.Conv2D(1, (1, 1), activation="sigmoid")(x)
    model = keras.Model(inputs=[inputs], outputs=[outputs])
    _randomise(model)
    x = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3)).astype("float32")
    imported = _round_trip(model, tmp_path, x=x)
    assert isinstance(imported.module, Graph)


@needs_keras
def test_localiser_with_two_heads(tmp_path):
    inp = keras.Input((32, 32, 3))
    x = KL.Conv2D(8, 3, activation="relu", padding="same")(inp)
    x = KL.SeparableConv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    avg = KL.GlobalAveragePooling2D()(x)
    class_output = KL.Dense(5, activation="softmax")(avg)
    loc_output = KL.Dense(4)(avg)
    model = keras.Model(inputs=inp, outputs=[class_output, loc_output])
    _randomise(model)
    _round_trip(model, tmp_path)


@needs_keras
def test_batchnorm_moving_statistics_after_keras_training(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 2)),
            KL.Conv2D(6, 3),
            KL.BatchNormalization(momentum=0.5),
            KL.Activation("relu"),
            KL.Flatten(),
            KL.BatchNormalization(center=False),
            KL.Dense(3),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((32, 12, 12, 2)) * 3 + 2).astype("float32")
    model.fit(x, rng.standard_normal((32, 3)).astype("float32"), epochs=2, batch_size=8, verbose=0)
    mean = keras.ops.convert_to_numpy(model.layers[1].moving_mean)
    assert np.abs(mean).max() > 0.1  # the statistics moved
    _round_trip(model, tmp_path, x=x[:4])


@needs_keras
def test_layer_zoo_1d_3d_and_reshaping(tmp_path):
    """Conv1D causal, SeparableConv1D, DepthwiseConv1D, pooling, upsampling, padding,
    cropping, Reshape, LeakyReLU, Subtract/Multiply in 1D; Conv3D stack in 3D."""
    inp = keras.Input((20, 3))
    a = KL.Conv1D(4, 3, padding="causal", dilation_rate=2)(inp)
    b = KL.SeparableConv1D(4, 2, padding="same")(inp)
    c = KL.DepthwiseConv1D(3, padding="same", depth_multiplier=1)(KL.Conv1D(4, 1)(inp))
    x = KL.Multiply()([KL.Subtract()([a, b]), KL.LeakyReLU(negative_slope=0.1)(c)])
    x = KL.ZeroPadding1D((1, 2))(KL.MaxPooling1D(2, padding="same")(x))
    x = KL.Cropping1D((2, 2))(KL.UpSampling1D(2)(x))  # 22 steps x 4 channels
    x = KL.Reshape((11, 8))(KL.Flatten()(x))  # channels-last reshapes both ways
    x = KL.Conv1DTranspose(3, 3, strides=2)(x)
    out = KL.Dense(2)(KL.GlobalMaxPooling1D()(x))
    model = keras.Model(inp, out)
    _randomise(model)
    _round_trip(model, tmp_path, "zoo1d.keras")

    vol = keras.Sequential(
        [
            keras.Input((6, 8, 8, 2)),
            KL.Conv3D(4, 3, padding="same", activation="relu"),
            KL.ZeroPadding3D(1),
            KL.MaxPooling3D(2),
            KL.UpSampling3D(2),
            KL.Cropping3D(((1, 1), (0, 2), (2, 0))),
            KL.Conv3DTranspose(2, 2, strides=2),
            KL.GlobalAveragePooling3D(),
            KL.Dense(3, activation="softmax"),
        ]
    )
    _randomise(vol)
    _round_trip(vol, tmp_path, "vol.keras")


@needs_keras
def test_legacy_h5_full_model(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((9, 9, 2)),
            KL.Conv2D(3, 2, strides=2, padding="same"),
            KL.BatchNormalization(),
            KL.UpSampling2D(2, interpolation="bilinear"),
            KL.Flatten(),
            KL.Dropout(0.3),
            KL.Dense(4),
        ]
    )
    _randomise(model)
    path = tmp_path / "legacy.h5"
    model.save(path)
    x = np.random.default_rng(0).random((3, 9, 9, 2)).astype("float32")
    with torch.no_grad():
        y = cnnkit.load(path)(_cf(x)).numpy()
    np.testing.assert_allclose(y, model.predict(x, verbose=0), atol=ATOL, rtol=ATOL)


@needs_keras
def test_keras_saved_lambda_is_refused(tmp_path):
    inp = keras.Input((4,))
    model = keras.Model(inp, KL.Dense(2)(KL.Lambda(lambda t: t / 255)(inp)))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ConfigError, match="Lambda layers hold Python code"):
        cnnkit.from_keras(path)


@needs_keras
def test_two_input_functional_model(tmp_path):
    a_in, b_in = keras.Input((8, 8, 2)), keras.Input((8, 8, 3))
    a = KL.Conv2D(4, 3, padding="same")(a_in)
    b = KL.Conv2D(4, 1)(b_in)
    x = KL.Concatenate()([KL.Average()([a, b]), KL.Maximum()([a, b])])
    model = keras.Model([a_in, b_in], KL.Dense(2)(KL.GlobalMaxPooling2D()(x)))
    _randomise(model)
    path = tmp_path / "two.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    xa, xb = rng.random((3, 8, 8, 2), "float32"), rng.random((3, 8, 8, 3), "float32")
    imported = cnnkit.from_keras(path)
    with torch.no_grad():
        y = imported(_cf(xa), _cf(xb)).numpy()
    np.testing.assert_allclose(y, model.predict([xa, xb], verbose=0), atol=ATOL, rtol=ATOL)
