"""Bad input, counted: every case gets a documented cnnkit exception (a CnnkitError
subclass) whose message names the received value and says what would work; never a
bare traceback from inside torch, a hang or a silent wrong result.

Each case is ``(id, call, exception type, the received value as it must appear in the
message)``; the message must also carry a hint (what is expected, a "did you mean", or
what to do). The last test prints how many cases were tried.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import cnnkit
from cnnkit import CnnkitError, ConfigError, ShapeError, losses, metrics
from cnnkit import layers as L
from cnnkit.models import create
from cnnkit.ops import arithmetic as A
from cnnkit.train.optimizers import Named
from cnnkit.train.schedules import cosine

HINT = re.compile(
    r"expect|did you mean|must|should|needs?\b|pass |use |one of|accepts?|try|choose|"
    r"only|e\.g\.|instead|lower|check|give|at least|in \[|between|positive|valid|not a|"
    r"is not|cannot|refus|names? |delete|download",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Path], object]
    error: type[CnnkitError]
    value: str  # the received value as the message must show it


def _nan(shape=(2, 3)):
    t = torch.zeros(shape)
    t[0, 0] = math.nan
    return t


def _inf(shape=(2, 3)):
    t = torch.zeros(shape)
    t[0, 0] = math.inf
    return t


def _build(layer, shape):
    return lambda tmp: layer(torch.zeros(shape))


def _write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _idx_bytes(tmp):
    from cnnkit.data.idx import read_idx

    header = bytes([0, 0, 0x08, 3]) + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    return read_idx(_write(tmp, "t10k-images-idx3-ubyte", header + b"\0" * 100))


def _idx_magic(tmp):
    from cnnkit.data.idx import parse_idx

    return parse_idx(b"\x12\x34\x08\x01" + b"\0" * 8, source="bad.idx")


def _truncated_gz(tmp):
    from cnnkit.data.idx import read_idx

    data = gzip.compress(bytes([0, 0, 8, 1]) + (4).to_bytes(4, "big") + b"abcd")
    return read_idx(_write(tmp, "labels-idx1-ubyte.gz", data[: len(data) // 2]))


def _truncated_tar(tmp):
    from cnnkit.data.download import extract_archive

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("a.txt")
        payload = b"x" * 5000
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    data = buf.getvalue()
    return extract_archive(_write(tmp, "data.tar.gz", data[: len(data) // 2]), tmp / "out")


def _ucr_ragged(tmp):
    from cnnkit.data.ucr import read_ucr_file

    return read_ucr_file(_write(tmp, "X_TRAIN.tsv", b"1\t0.5\t0.25\n2\t0.5\n"))


def _ucr_text(tmp):
    from cnnkit.data.ucr import read_ucr_file

    return read_ucr_file(_write(tmp, "X_TEST.tsv", b"1\t0.5\tabc\n"))


def _cifar_junk(tmp):
    from cnnkit.data.cifar import _parse_batch

    return _parse_batch(b"\x80\x04not a pickle", "data_batch_1", "labels")


def _image(tmp):
    from cnnkit.data.images import load_image

    return load_image(_write(tmp, "cat.png", b"\x89PNG\r\n\x1a\nnot really"))


def _via(tmp, regions):
    from cnnkit.data.coco import via_instances

    _write(tmp / "via", "img.png", b"")
    ann = {"img.png1": {"filename": "img.png", "size": 1, "regions": regions}}
    _write(tmp / "via", "via_region_data.json", json.dumps(ann).encode())
    return via_instances(tmp / "via")


def _coco_json(tmp):
    from cnnkit.data.coco import coco_instances

    (tmp / "images").mkdir()
    return coco_instances(tmp / "images", _write(tmp, "instances.json", b'{"images": [1, 2'))


def _empty_folder(tmp):
    from cnnkit.data.folders import image_folder

    (tmp / "empty").mkdir()
    return image_folder(tmp / "empty")


def _fit(x, y, optimizer="adam", **kw):
    model = cnnkit.Model(create("mnist_cnn"))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", device="cpu")
    return model.fit(x, y, epochs=1, verbose=0, **kw)


def _yaml(tmp, text):
    from cnnkit.cli.recipes import load_config

    return load_config(str(_write(tmp, "recipe.yaml", text.encode())))


X28 = torch.zeros(4, 1, 28, 28)
Y4 = torch.tensor([0, 1, 2, 3])


def _a_file(folder: Path) -> str:
    path = folder / "not-a-checkpoint.txt"
    path.write_text("a file, not a checkpoint folder")
    return str(path)


def _compiled(optimizer="adam", **kw):
    model = cnnkit.Model(create("mnist_cnn"))
    return model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                         device="cpu", **kw)  # fmt: skip


def _fit_args(**kw):
    return _compiled().fit(X28, Y4, verbose=0, **{"epochs": 1, **kw})


def _instance_with_rate(rate):
    module = create("mnist_cnn")
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    optimizer.param_groups[0]["lr"] = rate  # changed after torch checked it
    return cnnkit.Model(module).compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                                        device="cpu")  # fmt: skip


def _batchnorm_net():
    net = cnnkit.Sequential([L.Flatten(input_shape=(1, 4, 4)), L.Dense(8),
                             L.BatchNormalization(), L.Dense(3)])  # fmt: skip
    return net.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cpu")


class _NamedImages(torch.utils.data.Dataset):
    """Images labelled with class names, not ids."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return X28[i], ["cat", "dog"][i % 2]


X9 = torch.rand(9, 1, 4, 4)
Y9 = torch.arange(9) % 3


CASES = [
    # ---------------------------------------------------------------- arithmetic
    Case("conv-inexact", lambda t: A.conv_output_size(7, 3, stride=3), ShapeError, "2.33"),
    Case("conv-kernel-too-big", lambda t: A.conv_output_size(3, 5), ShapeError, "5"),
    Case("conv-zero-stride", lambda t: A.conv_output_size(8, 3, stride=0), ShapeError, "0"),
    Case("conv-negative-padding", lambda t: A.conv_output_size(8, 3, padding=-1), ShapeError, "-1"),
    Case("conv-negative-size", lambda t: A.conv_output_size(-4, 3), ShapeError, "-4"),
    Case("pool-zero-window", lambda t: A.pool_output_size(8, 0), ShapeError, "0"),
    Case("pool-inexact", lambda t: A.pool_output_size(7, 2), ShapeError, "3.5"),
    Case("transposed-zero-stride", lambda t: A.transposed_conv_output_size(4, 3, stride=0),
         ShapeError, "0"),
    # ---------------------------------------------------------------- layers
    Case("conv2d-zero-filters", lambda t: L.Conv2D(0, 3), ConfigError, "0"),
    Case("conv2d-negative-kernel", lambda t: L.Conv2D(4, -3), ConfigError, "-3"),
    Case("conv2d-unknown-padding", lambda t: L.Conv2D(4, 3, padding="sme"), ConfigError, "sme"),
    Case("conv2d-unknown-activation", lambda t: L.Conv2D(4, 3, activation="rleu"), ConfigError,
         "rleu"),
    Case("conv2d-rank-3-input", _build(L.Conv2D(4, 3), (1, 8, 8)), ShapeError, "(1, 8, 8)"),
    Case("conv2d-wrong-channels", lambda t: L.Conv2D(4, 3, input_shape=(3, 8, 8))(
        torch.zeros(1, 1, 8, 8)), ShapeError, "1"),
    Case("conv2d-kernel-larger-than-input", _build(L.Conv2D(4, 5), (1, 1, 3, 3)), ShapeError,
         "3"),
    Case("conv1d-rank-4-input", _build(L.Conv1D(4, 3), (1, 1, 8, 8)), ShapeError, "(1, 1, 8, 8)"),
    Case("conv3d-rank-4-input", _build(L.Conv3D(4, 3), (1, 1, 8, 8)), ShapeError, "(1, 1, 8, 8)"),
    Case("maxpool-window-larger-than-input", _build(L.MaxPooling2D(4), (1, 1, 2, 2)), ShapeError,
         "2"),
    Case("maxpool-zero-window", lambda t: L.MaxPooling2D(0), ConfigError, "0"),
    Case("dense-negative-units", lambda t: L.Dense(-5), ConfigError, "-5"),
    Case("dense-wrong-features", lambda t: L.Dense(3, input_shape=(10,))(torch.zeros(2, 7)),
         ShapeError, "7"),
    Case("dropout-rate-above-one", lambda t: L.Dropout(1.5), ConfigError, "1.5"),
    Case("conv2dtranspose-zero-stride", lambda t: L.Conv2DTranspose(4, 3, strides=0), ConfigError,
         "0"),
    Case("upsampling-zero-size", lambda t: L.UpSampling2D(0), ConfigError, "0"),
    Case("batchnorm-wrong-channels", lambda t: L.BatchNormalization(input_shape=(3, 4, 4))(
        torch.zeros(2, 5, 4, 4)), ShapeError, "5"),
    Case("conv2d-integer-input", lambda t: L.Conv2D(4, 3)(
        torch.zeros(1, 1, 8, 8, dtype=torch.int64)), ShapeError, "int64"),
    # ---------------------------------------------------------------- models
    Case("unknown-model", lambda t: create("resnet19"), ConfigError, "resnet19"),
    Case("model-unknown-kwarg", lambda t: create("mnist_cnn", num_clases=3), ConfigError,
         "num_clases"),
    Case("model-wrong-input-size", lambda t: create("mnist_cnn")(torch.zeros(2, 1, 32, 32)),
         ShapeError, "32"),
    Case("model-wrong-channels", lambda t: create("mnist_cnn")(torch.zeros(2, 3, 28, 28)),
         ShapeError, "3"),
    Case("load-missing-folder", lambda t: cnnkit.load(t / "nowhere"), CnnkitError, "nowhere"),
    # ---------------------------------------------------------------- losses
    Case("ce-label-out-of-range", lambda t: losses.cross_entropy(torch.zeros(2, 3),
         torch.tensor([0, 3])), ConfigError, "3"),
    Case("ce-negative-label", lambda t: losses.cross_entropy(torch.zeros(2, 3),
         torch.tensor([0, -2])), ConfigError, "-2"),
    Case("ce-float-labels", lambda t: losses.sparse_categorical_crossentropy(
        torch.zeros(2, 3), torch.tensor([0.5, 1.0])), ConfigError, "0.5"),
    Case("ce-batch-mismatch", lambda t: losses.cross_entropy(torch.zeros(2, 3),
         torch.tensor([0, 1, 2])), ShapeError, "3"),
    Case("bce-nan-target", lambda t: losses.binary_cross_entropy(torch.zeros(2, 3), _nan()),
         ConfigError, "nan"),
    Case("mae-inf-target", lambda t: losses.mae(torch.zeros(2, 3), _inf()), ConfigError, "inf"),
    Case("bce-target-above-one", lambda t: losses.binary_cross_entropy(torch.zeros(4),
         torch.tensor([0.0, 1.0, 2.0, 0.0])), ConfigError, "2"),
    Case("mse-shape-mismatch", lambda t: losses.mse(torch.zeros(2, 3), torch.zeros(2, 4)),
         ShapeError, "(2, 4)"),
    Case("mse-nan-target", lambda t: losses.mse(torch.zeros(2, 3), _nan()), ConfigError, "nan"),
    Case("dice-mask-unknown-class", lambda t: losses.dice_loss(torch.zeros(1, 3, 4, 4),
         torch.full((1, 4, 4), 7)), ConfigError, "7"),
    Case("unknown-loss", lambda t: losses.get_loss("categorical_crossentropi"), ConfigError,
         "categorical_crossentropi"),
    # ---------------------------------------------------------------- metrics
    Case("accuracy-length-mismatch", lambda t: metrics.accuracy_score([0, 1, 2], [0, 1]),
         ShapeError, "3"),
    Case("accuracy-nan-scores", lambda t: metrics.accuracy_score([0, 1], _nan((2, 2))),
         ConfigError, "nan"),
    Case("confusion-label-out-of-range", lambda t: metrics.confusion_matrix([0, 5], [0, 1],
         num_classes=3), ConfigError, "5"),
    Case("mean-iou-unknown-class", lambda t: metrics.mean_iou(np.full((4, 4), 9),
         np.zeros((4, 4), int), num_classes=3), ConfigError, "9"),
    Case("box-x2-less-than-x1", lambda t: metrics.box_iou([[10, 0, 5, 5]], [[0, 0, 5, 5]]),
         ConfigError, "10"),
    Case("box-wrong-width", lambda t: metrics.box_iou([[0, 0, 5]], [[0, 0, 5, 5]]), ShapeError,
         "(1, 3)"),
    Case("unknown-metric", lambda t: metrics.get_metric("acuracy"), ConfigError, "acuracy"),
    Case("f1-unknown-average", lambda t: metrics.f1_score([0, 1], [0, 1], average="micr"),
         ConfigError, "micr"),
    # ---------------------------------------------------------------- workflow
    Case("fit-empty-dataset", lambda t: _fit(torch.zeros(0, 1, 28, 28), torch.zeros(0).long()),
         ConfigError, "0"),
    Case("fit-x-y-length-mismatch", lambda t: _fit(X28, Y4[:3]), ShapeError, "3"),
    Case("fit-label-out-of-range", lambda t: _fit(X28, torch.tensor([0, 1, 2, 10])), ConfigError,
         "10"),
    Case("fit-zero-batch", lambda t: _fit(X28, Y4, batch_size=0), ConfigError, "0"),
    Case("fit-validation-split-one", lambda t: _fit(X28, Y4, validation_split=1.0), ConfigError,
         "1.0"),
    Case("unknown-optimizer", lambda t: _fit(X28, Y4, optimizer="adamm"), ConfigError, "adamm"),
    Case("compile-without-loss", lambda t: cnnkit.Model(create("mnist_cnn")).compile(),
         ConfigError, "loss"),
    # (a missing or empty folder starts the run: a relaunch before the first checkpoint)
    Case("resume-from-a-file", lambda t: _fit(X28, Y4, resume_from=_a_file(t)),
         CnnkitError, "is a file"),
    # ---------------------------------------------------------------- data readers
    Case("idx-truncated", _idx_bytes, CnnkitError, "t10k-images-idx3-ubyte"),
    Case("idx-bad-magic", _idx_magic, CnnkitError, "bad.idx"),
    Case("idx-truncated-gzip", _truncated_gz, CnnkitError, "labels-idx1-ubyte.gz"),
    Case("tar-truncated", _truncated_tar, CnnkitError, "data.tar.gz"),
    Case("ucr-ragged-rows", _ucr_ragged, CnnkitError, "X_TRAIN.tsv"),
    Case("ucr-not-a-number", _ucr_text, CnnkitError, "abc"),
    Case("cifar-not-a-pickle", _cifar_junk, CnnkitError, "data_batch_1"),
    Case("image-does-not-decode", _image, CnnkitError, "cat.png"),
    Case("via-polygon-too-short", lambda t: _via(t, [{"shape_attributes": {
        "name": "polygon", "all_points_x": [1], "all_points_y": [1]}}]), CnnkitError, "img.png"),
    Case("coco-json-truncated", _coco_json, CnnkitError, "instances.json"),
    Case("empty-image-folder", _empty_folder, CnnkitError, "empty"),
    # ---------------------------------------------------------------- transforms
    Case("normalize-zero-std", lambda t: __import__("cnnkit.data.transforms").data.transforms
         .Normalize([0.5], [0.0]), ConfigError, "0.0"),
    Case("random-crop-larger-than-image", lambda t: __import__("cnnkit.data.transforms").data
         .transforms.RandomCrop(64)(torch.zeros(1, 8, 8)), ShapeError, "64"),
    Case("resize-negative", lambda t: __import__("cnnkit.data.transforms").data.transforms
         .Resize(-3), ConfigError, "-3"),
    # ---------------------------------------------------------------- YAML recipe files
    Case("yaml-unknown-key", lambda t: _yaml(t, "model: mnist_cnn\nepocs: 3\n"), ConfigError,
         "epocs"),
    Case("yaml-not-a-mapping", lambda t: _yaml(t, "- 1\n- 2\n"), ConfigError, "list"),
    Case("yaml-syntax-error", lambda t: _yaml(t, "model: [mnist_cnn\n"), ConfigError,
         "recipe.yaml"),
    Case("yaml-python-tag", lambda t: _yaml(t, "model: !!python/object/apply:os.system [ls]\n"),
         ConfigError, "recipe.yaml"),
    # ---------------------------------------------------------------- issue 22: the training API's raw errors
    Case("fit-string-labels", lambda t: _fit(X28, np.array(["cat", "dog", "cat", "dog"])),
         ConfigError, "<U3"),
    Case("fit-list-of-string-labels", lambda t: _fit(X28, ["cat", "dog", "cat", "dog"]),
         ConfigError, "'cat'"),
    Case("fit-object-labels", lambda t: _fit(X28, np.array(["cat", 1, 2, 3], dtype=object)),
         ConfigError, "dtype object"),
    Case("fit-string-inputs", lambda t: _fit(np.array(["a.png"] * 4), Y4), ConfigError, "<U5"),
    Case("fit-dataset-string-labels", lambda t: _fit(_NamedImages(), None), ConfigError,
         "'cat'"),
    Case("evaluate-string-labels", lambda t: _compiled().evaluate(X28, np.array(["a", "b"] * 2)),
         ConfigError, "<U1"),
    Case("predict-string-inputs", lambda t: _compiled().predict(["img1", "img2"]), ConfigError,
         "'img1'"),
    Case("fit-float-batch-size", lambda t: _fit(X28, Y4, batch_size=32.0), ConfigError, "32.0"),
    Case("fit-bool-batch-size", lambda t: _fit(X28, Y4, batch_size=True), ConfigError, "True"),
    Case("fit-string-batch-size", lambda t: _fit(X28, Y4, batch_size="32"), ConfigError, "'32'"),
    Case("evaluate-float-batch-size", lambda t: _compiled().evaluate(X28, Y4, batch_size=2.0),
         ConfigError, "2.0"),
    Case("predict-float-batch-size", lambda t: _compiled().predict(X28, batch_size=2.5),
         ConfigError, "2.5"),
    Case("compile-negative-learning-rate", lambda t: _compiled(learning_rate=-0.1), ConfigError,
         "-0.1"),
    Case("compile-nan-learning-rate", lambda t: _compiled(learning_rate=math.nan), ConfigError,
         "nan"),
    Case("compile-learning-rate-as-option", lambda t: _compiled(Named("sgd", lr=-0.1)),
         ConfigError, "-0.1"),
    Case("compile-negative-momentum", lambda t: _compiled(Named("sgd", momentum=-0.5)),
         ConfigError, "-0.5"),
    Case("schedule-negative-floor", lambda t: _compiled(lr_schedule=cosine(10, eta_min=-0.1)),
         ConfigError, "-0.1"),
    Case("compile-optimizer-instance-negative-rate", lambda t: _instance_with_rate(-1.0),
         ConfigError, "-1.0"),
    Case("fit-optimizer-callable-negative-rate", lambda t: _fit(
        X28, Y4, optimizer=lambda p: torch.optim.SGD(p, lr=-0.1)), ConfigError, "-0.1"),
    Case("fit-batchnorm-batch-of-one", lambda t: _batchnorm_net().fit(X9, Y9, batch_size=4,
         verbose=0), ConfigError, "batch_size=4"),
    Case("fit-drop-last-leaves-no-batch", lambda t: _batchnorm_net().fit(
        X9, Y9, batch_size=16, drop_last=True, verbose=0), ConfigError, "batch_size=16"),
    Case("fit-drop-last-with-a-dataloader", lambda t: _batchnorm_net().fit(
        DataLoader(TensorDataset(X9, Y9), batch_size=4), drop_last=True, verbose=0),
         ConfigError, "DataLoader"),
    Case("fit-drop-last-not-a-bool", lambda t: _fit(X28, Y4, drop_last="yes"), ConfigError,
         "'yes'"),
    Case("fit-negative-epochs", lambda t: _fit_args(epochs=-1), ConfigError, "-1"),
    Case("fit-float-epochs", lambda t: _fit_args(epochs=2.5), ConfigError, "2.5"),
    Case("fit-bool-epochs", lambda t: _fit_args(epochs=True), ConfigError, "True"),
    Case("fit-initial-epoch-past-epochs", lambda t: _fit_args(epochs=2, initial_epoch=5),
         ConfigError, "initial_epoch=5"),
    Case("fit-negative-initial-epoch", lambda t: _fit_args(initial_epoch=-1), ConfigError, "-1"),
    Case("fit-validation-split-string", lambda t: _fit(X28, Y4, validation_split="0.2"),
         ConfigError, "'0.2'"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_explained(case, tmp_path):
    with pytest.raises(CnnkitError) as info:
        case.call(tmp_path)
    err = info.value
    assert isinstance(err, case.error), f"{type(err).__name__}: {err}"
    message = str(err)
    assert case.value.lower() in message.lower(), f"{case.value!r} not named in: {message}"
    assert HINT.search(message), f"no hint in: {message}"


# ---------------------------------------------------------------- issue 22: the good neighbours


def _small_net(batchnorm=False):
    torch.manual_seed(0)
    norm = [L.BatchNormalization()] if batchnorm else []
    net = cnnkit.Sequential([L.Conv2D(4, 3, input_shape=(1, 8, 8)), L.Flatten(), L.Dense(8),
                             *norm, L.Dense(3)])  # fmt: skip
    return net.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cpu")


def test_float16_float64_and_half_tensor_inputs_train_as_float32():
    """Inputs are used as float32 (the weights' dtype; fp16 compute is compile's
    ``precision``): fp16, fp64 and half-tensor inputs give the float32 result."""
    x16 = np.random.default_rng(0).random((12, 1, 8, 8)).astype(np.float16)
    x32 = x16.astype(np.float32)  # the same values, exactly
    y = np.arange(12) % 3

    def run(x):
        net = _small_net()
        torch.manual_seed(1)  # the shuffle order
        history = net.fit(x, y, epochs=2, batch_size=4, verbose=0).history["loss"]
        return history, net.evaluate(x, y)["loss"], net.predict(x)

    want = run(x32)
    for x in (x16, x32.astype(np.float64), torch.from_numpy(x16)):
        got = run(x)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
        assert got[1] == pytest.approx(want[1], rel=1e-6)
        assert got[2].dtype == np.float32
        np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-6)
    assert want[0][1] < want[0][0]  # it trained


def test_numpy_integer_batch_size_and_numpy_float_learning_rate_are_taken():
    """A NumPy integer is an exact int (Keras 3 refuses np.int64; cnnkit took it before
    and still does); a np.float32 learning rate was refused before issue 22."""
    net = _small_net()
    net.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cpu",
                learning_rate=np.float32(0.05))  # fmt: skip
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6) % 3
    seen = []

    class Steps:
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

    net.fit(x, y, batch_size=np.int64(2), epochs=1, verbose=0, callbacks=[Steps()])
    assert len(seen) == 3
    assert net.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert type(net.optimizer.param_groups[0]["lr"]) is float
    assert math.isfinite(net.evaluate(x, y, batch_size=np.int32(4))["loss"])
    assert net.predict(x, batch_size=np.int64(4)).shape == (6, 3)


def test_epochs_zero_trains_nothing_as_in_keras():
    net = _small_net()
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6) % 3
    net.fit(x, y, epochs=1, verbose=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert net.fit(x, y, epochs=0, verbose=0).history == {}
    assert net.fit(x, y, epochs=3, initial_epoch=3, verbose=0).history == {}
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("dataset", [False, True], ids=["arrays", "dataset"])
@pytest.mark.parametrize(("n", "drop_last", "steps"), [(9, False, 3), (9, True, 2), (8, True, 2)])
def test_drop_last_skips_only_a_partial_last_batch(n, drop_last, steps, dataset):
    x, y = torch.rand(n, 1, 8, 8), torch.arange(n) % 3
    sizes = []

    class Sizes:
        def on_train_batch_end(self, batch, logs=None):
            sizes.append(batch)

    net = _small_net(batchnorm=drop_last)  # with drop_last a batch-norm net trains on 9
    data = (TensorDataset(x, y), None) if dataset else (x, y)
    history = net.fit(*data, batch_size=4, epochs=2, drop_last=drop_last, verbose=0,
                      callbacks=[Sizes()])  # fmt: skip
    assert sizes == list(range(1, steps + 1)) * 2
    assert all(math.isfinite(v) for v in history.history["loss"])


# ---------------------------------------------------------------- the CLI

CLI_CASES = [
    ("unknown-recipe", ["train", "mnist_cnnn"], ["mnist_cnnn", "did you mean"]),
    ("unknown-model", ["summary", "mnist_cnnx"], ["mnist_cnnx", "did you mean"]),
    ("bad-epochs", ["train", "mnist-cnn", "--epochs", "-1"], ["-1", "positive"]),
    ("missing-run-folder", ["export", "/nonexistent/run", "--format", "onnx"],
     ["/nonexistent/run", "pass a folder"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "argv", "needles"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_user_errors_are_one_line_with_exit_status_2(name, argv, needles, capsys):
    main = pytest.importorskip("cnnkit.cli.main").main
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error:" in err
    for needle in needles:
        assert needle.lower() in err.lower(), err


def test_count_of_bad_inputs_tried():
    total = len(CASES) + len(CLI_CASES)
    print(f"\nbad inputs tried: {total} ({len(CASES)} API cases, {len(CLI_CASES)} CLI cases)")
    assert len({c.id for c in CASES}) == len(CASES)
    assert total >= 60
