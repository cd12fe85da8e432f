"""ONNX export: registry models round-trip through onnxruntime (an independent runtime)
with outputs equal to PyTorch's within 1e-4, at the example batch size and another one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import cnnkit
from cnnkit import CnnkitError
from cnnkit.layers import BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from cnnkit.models import create
from cnnkit.train.export import export_onnx

ort = pytest.importorskip("onnxruntime")

CASES = [
    ("mnist_cnn", {}, None),  # a Sequential from the decks
    ("lenet5", {}, None),
    ("cifar_cnn", {}, None),
    ("gap_cnn", {}, None),
    ("unet_small", {"num_classes": 2}, (3, 64, 64)),
    (
        "segnet",
        {"num_classes": 3, "base_filters": 8},
        (3, 32, 48),
    ),  # max unpooling with the pooling indices
    ("deconvnet_small", {}, None),
    ("fcn1d", {}, None),  # 1D
    ("volume_cnn", {}, None),  # 3D
]


def _run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES, ids=[c[0] for c in CASES])
def test_registry_model_round_trips_through_onnxruntime(tmp_path, name, kwargs, shape):
    torch.manual_seed(0)
    net = create(name, **kwargs)
    path = export_onnx(net, tmp_path / f"{name}.onnx", input_shape=shape)
    assert path.is_file() and path.stat().st_size > 0
    shape = shape or getattr(net, "default_input_shape", None) or net.input_shape
    x = torch.rand(3, *shape)  # another batch size than the export's example
    with torch.no_grad():
        ref = net.eval()(x)
    got = _run_onnx(path, x)
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    assert len(got) == len(refs)
    for g, r in zip(got, refs):
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=1e-4)


def test_model_method_exports_a_trained_sequential_with_batch_norm(tmp_path):
    torch.manual_seed(0)
    model = cnnkit.Sequential(
        [
            Conv2D(4, 3, activation="relu"),
            BatchNormalization(),
            MaxPooling2D(2),
            Flatten(),
            Dropout(0.5),
            Dense(3, activation="softmax"),
        ],
        input_shape=(1, 10, 10),
    )
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", device="cpu", precision="fp32"
    )  # ONNX is an fp32 graph
    x, y = torch.rand(32, 1, 10, 10), torch.randint(0, 3, (32,))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # moves the batch-norm statistics
    assert model.training  # export must restore the mode
    path = model.export_onnx(tmp_path / "seq.onnx")
    assert model.training
    (got,) = _run_onnx(path, x[:5])
    np.testing.assert_allclose(got, model.predict(x[:5]), atol=1e-4, rtol=1e-4)


def test_wrapped_model_exports_and_needs_a_shape_when_it_cannot_tell(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 4))
    model = cnnkit.Model(net)
    with pytest.raises(cnnkit.ConfigError, match="input_shape"):
        model.export_onnx(tmp_path / "m.onnx")
    path = model.export_onnx(tmp_path / "m.onnx", input_shape=(1, 8, 8))
    x = torch.rand(4, 1, 8, 8)
    (got,) = _run_onnx(path, x)
    with torch.no_grad():
        np.testing.assert_allclose(got, net(x).numpy(), atol=1e-4, rtol=1e-4)


def test_mask_rcnn_is_refused_with_the_reason(tmp_path):
    with pytest.raises(CnnkitError, match="Mask R-CNN cannot be exported"):
        export_onnx(
            create("mask_rcnn", num_classes=3, backbone="resnet18"),
            tmp_path / "m.onnx",
            input_shape=(3, 64, 64),
        )
    assert not (tmp_path / "m.onnx").exists()


class Branchy(nn.Module):
    """Data-dependent control flow: tracing records one branch only."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        y = self.conv(x)
        if x[0].sum() > 0:
            return y * 2
        return -y


def test_data_dependent_control_flow_is_caught_by_the_check(tmp_path):
    x = torch.ones(2, 1, 6, 6)
    with pytest.raises(CnnkitError, match="control flow"):
        export_onnx(Branchy(), tmp_path / "b.onnx", example_input=x)


def test_check_compares_against_pytorch(tmp_path):
    from cnnkit.train import export as export_mod

    net = create("mnist_cnn")
    path = export_onnx(net, tmp_path / "m.onnx", check=False)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        ref = net.eval()(x)
    export_mod._check(path, x, [ref], 1e-4)  # agrees
    with pytest.raises(CnnkitError, match="differs from PyTorch"):
        export_mod._check(path, x, [ref + 1e-3], 1e-4)


def test_bad_export_arguments_are_explained(tmp_path):
    net = create("mnist_cnn")
    with pytest.raises(cnnkit.ConfigError, match="model.txt"):
        export_onnx(net, tmp_path / "model.txt")
    with pytest.raises(cnnkit.ShapeError, match=r"\(1, 5, 5\)|cannot run"):
        export_onnx(net, tmp_path / "m.onnx", input_shape=(1, 5, 5))
    with pytest.raises(cnnkit.ShapeError, match="-3"):
        export_onnx(net, tmp_path / "m.onnx", input_shape=(1, -3, 28))


@pytest.mark.parametrize(("px", "aux"), [(96, True), (224, False)])
def test_googlenet_with_concatenate_round_trips_through_onnxruntime(tmp_path, px, aux):
    """Inception modules merge with Concatenate; under the exporter's tracer the sizes are
    traced tensors, which the merge's shape check must not trip over (issue 18)."""
    torch.manual_seed(0)
    net = create("googlenet", num_classes=10, aux_logits=aux)
    path = export_onnx(net, tmp_path / "googlenet.onnx", input_shape=(3, px, px))
    x = torch.rand(2, 3, px, px)
    with torch.no_grad():
        ref = net.eval()(x)
    (got,) = _run_onnx(path, x)
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-4, rtol=1e-4)


class _TwoInputs(nn.Module):
    """A toy two-input model whose branches meet in Concatenate, Add, Multiply, Average."""

    def __init__(self) -> None:
        super().__init__()
        from cnnkit.layers import Add, Average, Concatenate, Multiply

        self.a = Conv2D(4, 3, padding="same", in_channels=2)
        self.b = Conv2D(4, 1, in_channels=3)
        self.cat, self.add, self.mul, self.avg = Concatenate(), Add(), Multiply(), Average()
        self.head = Conv2D(2, 1, in_channels=8)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        a, b = self.a(x1), self.b(x2)
        merged = self.cat([self.add([a, b]), self.avg([self.mul([a, b]), a, b])])
        return self.head(merged)


def test_two_input_model_with_merges_round_trips_through_onnxruntime(tmp_path):
    torch.manual_seed(0)
    net = _TwoInputs().eval()
    x1, x2 = torch.rand(2, 2, 7, 9), torch.rand(2, 3, 7, 9)
    path = tmp_path / "two.onnx"
    with torch.no_grad():
        torch.onnx.export(
            net,
            (x1, x2),
            str(path),
            dynamo=False,
            input_names=["x1", "x2"],
            output_names=["y"],
            dynamic_axes={"x1": {0: "batch"}, "x2": {0: "batch"}, "y": {0: "batch"}},
        )
    y1, y2 = torch.rand(3, 2, 7, 9), torch.rand(3, 3, 7, 9)  # another batch size
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x1": y1.numpy(), "x2": y2.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, net(y1, y2).numpy(), atol=1e-4, rtol=1e-4)
