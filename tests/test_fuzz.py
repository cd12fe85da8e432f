"""Property tests (hypothesis): output-size arithmetic against PyTorch's shapes, layers'
``compute_output_shape`` against their real outputs, layers against the NumPy
references, and the dataset readers against random and mutated bytes (a cnnkit error
or a result; never another exception, a crash or a hang).
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cnnkit import CnnkitError, ShapeError
from cnnkit import layers as L
from cnnkit.ops import arithmetic as A
from cnnkit.ops import reference as R

# Fixed examples by default (the hypothesis profile in conftest.py); for a hunt:
#   CNNKIT_FUZZ_RANDOM=1 CNNKIT_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py
FAST = settings(
    max_examples=int(os.environ.get("CNNKIT_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
EXAMPLES: dict[str, int] = {}


def _count(name: str) -> None:
    EXAMPLES[name] = EXAMPLES.get(name, 0) + 1


def _torch_size(fn):
    try:
        return fn()
    except RuntimeError:
        return None


# ---------------------------------------------------------------- output-size arithmetic

sizes = st.integers(1, 40)
kernels = st.integers(1, 9)
strides = st.integers(1, 5)
pads = st.integers(0, 4)
dils = st.integers(1, 3)


@FAST
@given(n=sizes, k=kernels, s=strides, p=pads, d=dils)
def test_conv_output_size_floor_equals_pytorch(n, k, s, p, d):
    _count("conv floor vs torch")
    x, w = torch.zeros(1, 1, n), torch.zeros(1, 1, k)
    real = _torch_size(lambda: F.conv1d(x, w, stride=s, padding=p, dilation=d).shape[-1])
    if real is None:
        with pytest.raises(ShapeError):
            A.conv_output_size(n, k, stride=s, padding=p, dilation=d, floor=True)
    else:
        assert A.conv_output_size(n, k, stride=s, padding=p, dilation=d, floor=True) == real


@FAST
@given(n=sizes, k=kernels, s=strides, p=pads, d=dils)
def test_conv_output_size_strict_raises_exactly_when_inexact(n, k, s, p, d):
    _count("conv strict")
    span = n + 2 * p - d * (k - 1) - 1
    if span >= 0 and span % s == 0:
        assert A.conv_output_size(n, k, stride=s, padding=p, dilation=d) == span // s + 1
    else:
        with pytest.raises(ShapeError):
            A.conv_output_size(n, k, stride=s, padding=p, dilation=d)


@FAST
@given(n=sizes, k=st.integers(1, 6), s=st.integers(1, 4), p=st.integers(0, 3), d=dils)
def test_pool_output_size_floor_equals_pytorch(n, k, s, p, d):
    _count("pool floor vs torch")
    x = torch.zeros(1, 1, n)
    real = _torch_size(lambda: F.max_pool1d(x, k, stride=s, padding=p, dilation=d).shape[-1])
    if real is None:
        with pytest.raises(ShapeError):
            A.pool_output_size(n, k, stride=s, padding=p, dilation=d, floor=True)
    else:
        assert A.pool_output_size(n, k, stride=s, padding=p, dilation=d, floor=True) == real


@FAST
@given(n=sizes, k=st.integers(1, 6), s=st.integers(1, 4), p=st.integers(0, 3))
def test_pool_output_size_strict_raises_exactly_when_inexact(n, k, s, p):
    _count("pool strict")
    span = n + 2 * p - k
    if span >= 0 and span % s == 0 and 2 * p <= k:
        assert A.pool_output_size(n, k, stride=s, padding=p) == span // s + 1
    elif span < 0 or span % s:
        with pytest.raises(ShapeError):
            A.pool_output_size(n, k, stride=s, padding=p)


@FAST
@given(n=st.integers(1, 12), k=kernels, s=strides, p=pads, op=st.integers(0, 4), d=dils)
def test_transposed_conv_output_size_equals_pytorch(n, k, s, p, op, d):
    _count("transposed vs torch")
    x, w = torch.zeros(1, 1, n), torch.zeros(1, 1, k)
    real = _torch_size(
        lambda: F.conv_transpose1d(x, w, stride=s, padding=p, output_padding=op, dilation=d).shape[
            -1
        ]
    )
    if real is None or real < 1:
        with pytest.raises(ShapeError):
            A.transposed_conv_output_size(n, k, stride=s, padding=p, output_padding=op, dilation=d)
    else:
        got = A.transposed_conv_output_size(
            n, k, stride=s, padding=p, output_padding=op, dilation=d
        )
        assert got == real


# ---------------------------------------------------------------- layers


def _layer(kind, k, s, p, c_out):
    return {
        "conv1d": lambda: L.Conv1D(c_out, k, strides=s, padding=p),
        "conv2d": lambda: L.Conv2D(c_out, k, strides=s, padding=p),
        "conv3d": lambda: L.Conv3D(c_out, k, strides=s, padding=p),
        "maxpool2d": lambda: L.MaxPooling2D(k, strides=s, padding=p),
        "avgpool1d": lambda: L.AveragePooling1D(k, strides=s, padding=p),
        "transposed2d": lambda: L.Conv2DTranspose(c_out, k, strides=s, padding=p),
        "upsampling2d": lambda: L.UpSampling2D(s),
        "separable2d": lambda: L.SeparableConv2D(c_out, k, strides=s, padding=p),
    }[kind]()


RANK = {"conv1d": 1, "avgpool1d": 1, "conv3d": 3}


@FAST
@given(
    kind=st.sampled_from(
        [
            "conv1d",
            "conv2d",
            "conv3d",
            "maxpool2d",
            "avgpool1d",
            "transposed2d",
            "upsampling2d",
            "separable2d",
        ]
    ),  # fmt: skip
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    padding=st.sampled_from(["valid", "same"]),
    c_in=st.integers(1, 3),
    c_out=st.integers(1, 3),
    size=st.integers(4, 9),
    batch=st.integers(1, 2),
)
def test_compute_output_shape_equals_the_real_output(kind, k, s, padding, c_in, c_out, size, batch):
    _count("compute_output_shape")
    shape = (batch, c_in) + (size,) * RANK.get(kind, 2)
    layer = _layer(kind, k, s, padding, c_out)
    out = layer(torch.rand(shape))
    assert tuple(layer.compute_output_shape(shape)) == tuple(out.shape)


@FAST
@given(
    k=st.integers(1, 3),
    s=st.integers(1, 2),
    p=st.integers(0, 1),
    c_in=st.integers(1, 2),
    c_out=st.integers(1, 2),
    h=st.integers(3, 6),
    w=st.integers(3, 6),
    seed=st.integers(0, 2**16),
)
def test_layers_agree_with_the_numpy_references(k, s, p, c_in, c_out, h, w, seed):
    _count("layers vs reference")
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, c_in, h, w, generator=gen, dtype=torch.float64)
    xn = x.numpy()

    conv = L.Conv2D(c_out, k, strides=s, padding=p).double()
    got = conv(x).detach().numpy()
    ref = R.conv_nd(xn, conv.weight.detach().numpy(), conv.bias.detach().numpy(), s, p)
    np.testing.assert_allclose(got, ref, atol=1e-10)

    pool = L.MaxPooling2D(k, strides=s, padding=p if 2 * p <= k else 0)
    ref = R.pool_nd(xn, k, s, p if 2 * p <= k else 0, mode="max")
    np.testing.assert_allclose(pool(x).numpy(), ref, atol=1e-12)

    tconv = L.Conv2DTranspose(c_out, k, strides=s, padding=p).double()
    got = tconv(x).detach().numpy()
    ref = R.conv_transpose_nd(xn, tconv.weight.detach().numpy(), tconv.bias.detach().numpy(), s, p)
    np.testing.assert_allclose(got, ref, atol=1e-10)

    up = L.UpSampling2D(s)
    np.testing.assert_allclose(up(x).numpy(), R.upsample_nearest(xn, s), atol=0)


# ---------------------------------------------------------------- readers


def _survives(fn) -> str:
    """Run a reader: a result or a CnnkitError is fine, anything else fails the test."""
    try:
        fn()
    except CnnkitError:
        return "refused"
    return "read"


def _mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for pos, value, cut in edits:
        if not buf:
            break
        if cut:
            del buf[pos % len(buf) :]
        else:
            buf[pos % len(buf)] = value
    return bytes(buf)


edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.booleans()), max_size=4)


def _idx_sample() -> bytes:
    return (
        bytes([0, 0, 0x08, 3])
        + (2).to_bytes(4, "big")
        + (3).to_bytes(4, "big") * 2
        + bytes(range(18))
    )


@FAST
@given(data=st.one_of(st.binary(max_size=64), edits.map(lambda e: _mutate(_idx_sample(), e))))
def test_idx_reader_on_random_and_mutated_bytes(data):
    from cnnkit.data.idx import parse_idx

    _count("idx bytes")
    _survives(lambda: parse_idx(data, source="fuzz.idx"))


def _cifar_sample() -> bytes:
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}
    return pickle.dumps(batch, protocol=2)


@FAST
@given(data=st.one_of(st.binary(max_size=64), edits.map(lambda e: _mutate(_cifar_sample(), e))))
# found by CI: BYTEARRAY8 instead of PROTO, whose length field asked for a huge allocation
@example(data=_mutate(_cifar_sample(), [(0, 150, False)]))
def test_cifar_reader_on_random_and_mutated_bytes(data):
    from cnnkit.data.cifar import _parse_batch

    _count("cifar bytes")
    _survives(lambda: _parse_batch(data, "data_batch_1", "labels"))


@FAST
@given(
    data=st.one_of(
        st.binary(max_size=64), edits.map(lambda e: _mutate(b"1\t0.5\t0.25\n2\t1\t-3e2\n", e))
    )
)
def test_ucr_reader_on_random_and_mutated_bytes(data, tmp_path):
    from cnnkit.data.ucr import read_ucr_file

    _count("ucr bytes")
    path = tmp_path / "X_TRAIN.tsv"
    path.write_bytes(data)
    _survives(lambda: read_ucr_file(path))


VIA = json.dumps(
    {
        "a.png1": {
            "filename": "a.png",
            "size": 1,
            "regions": [
                {
                    "shape_attributes": {
                        "name": "polygon",
                        "all_points_x": [1, 6, 6],
                        "all_points_y": [1, 1, 6],
                    },
                    "region_attributes": {"label": "cat"},
                }
            ],
        }
    }
).encode()

COCO = json.dumps(
    {
        "images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [1, 1, 4, 4],
                "area": 16,
                "iscrowd": 0,
                "segmentation": [[1, 1, 5, 1, 5, 5]],
            }
        ],  # fmt: skip
        "categories": [{"id": 1, "name": "cat"}],
    }
).encode()


def _png(path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)


@FAST
@given(data=st.one_of(st.binary(max_size=64), edits.map(lambda e: _mutate(VIA, e))))
def test_via_reader_on_random_and_mutated_json(data, tmp_path_factory):
    from cnnkit.data.coco import via_instances

    _count("via json")
    folder = tmp_path_factory.mktemp("via")
    _png(folder / "a.png")
    (folder / "via_region_data.json").write_bytes(data)

    def read():
        ds = via_instances(folder)
        for i in range(len(ds)):
            ds[i]

    _survives(read)


@FAST
@given(data=st.one_of(st.binary(max_size=64), edits.map(lambda e: _mutate(COCO, e))))
# found by CI: a space in a key name ('image id', 'file name', 'i d') left a field missing
@example(data=_mutate(COCO, [(19523, 32, False)]))
@example(data=_mutate(COCO, [(23, 32, False)]))
@example(data=_mutate(COCO, [(14, 32, False)]))
def test_coco_reader_on_random_and_mutated_json(data, tmp_path_factory):
    from cnnkit.data.coco import coco_instances

    _count("coco json")
    folder = tmp_path_factory.mktemp("coco")
    _png(folder / "a.png")
    (folder / "instances.json").write_bytes(data)

    def read():
        ds = coco_instances(folder, folder / "instances.json")
        for i in range(len(ds)):
            ds[i]

    _survives(read)


def test_zz_fuzz_examples_counted():
    total = sum(EXAMPLES.values())
    print(f"\nfuzz examples: {total} " + ", ".join(f"{k}: {v}" for k, v in EXAMPLES.items()))
    if len(EXAMPLES) == 12:  # the whole module ran
        assert total >= 12 * 20
