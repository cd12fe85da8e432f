"""Segmentation models and the localiser (issue 6): shapes, gradients, the papers' size
arithmetic and parameter counts, SegNet's index routing, the dilated receptive field,
overlap-tile prediction, and short learning checks on synthetic shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cnnkit
from cnnkit._core.errors import ShapeError
from cnnkit.layers import Dropout
from cnnkit.layers.base import Layer
from cnnkit.layers.summary import summary
from cnnkit.metrics import jaccard_score, mean_box_iou, mean_iou
from cnnkit.models import create, list_models
from cnnkit.models.base import is_conv
from cnnkit.models.context import ContextModule
from cnnkit.models.fcn import bilinear_kernel, fcn_crop_offsets
from cnnkit.models.unet import mirror_pad, predict_tiled, unet_input_size, unet_output_size
from cnnkit.ops.arithmetic import (
    conv_output_size,
    conv_params,
    dense_params,
    pool_output_size,
    receptive_field,
    transposed_conv_output_size,
)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# (name, kwargs, input shape, output shape) at CPU size
CASES = [
    ("fcn32s", dict(num_classes=3, base_filters=4, fc_units=16), (2, 3, 32, 40), (2, 3, 32, 40)),
    ("fcn16s", dict(num_classes=3, base_filters=4, fc_units=16), (2, 3, 37, 29), (2, 3, 37, 29)),
    ("fcn8s", dict(num_classes=3, base_filters=4, fc_units=16), (2, 3, 32, 40), (2, 3, 32, 40)),
    ("segnet", dict(num_classes=3, base_filters=4), (2, 3, 32, 64), (2, 3, 32, 64)),
    ("segnet", dict(num_classes=3, base_filters=4), (1, 3, 45, 70), (1, 3, 45, 70)),
    ("deconvnet_small", dict(num_classes=3), (1, 3, 64, 96), (1, 3, 64, 96)),
    ("unet", dict(depth=3, base_filters=4), (2, 1, 60, 68), (2, 2, 20, 28)),
    ("unet", dict(padding="same", depth=3, base_filters=4, num_classes=3), (2, 1, 32, 24),
     (2, 3, 32, 24)),
    ("unet_small", dict(), (1, 3, 32, 32), (1, 1, 32, 32)),
    ("dilated_context", dict(num_classes=4, base_filters=4), (2, 3, 32, 40), (2, 4, 32, 40)),
    ("unet3d", dict(num_classes=2, in_channels=1, base_filters=4, depth=3, padding="same"),
     (1, 1, 16, 16, 8), (1, 2, 16, 16, 8)),
    ("unet3d", dict(num_classes=2, in_channels=1, base_filters=2, depth=2), (1, 1, 20, 20, 24),
     (1, 2, 4, 4, 8)),
    ("vnet", dict(base_filters=4, depth=3, kernel_size=3), (1, 1, 16, 8, 16), (1, 2, 16, 8, 16)),
]  # fmt: skip


@pytest.mark.parametrize("name,kwargs,shape,out_shape", CASES)
def test_shapes_and_gradients(name, kwargs, shape, out_shape):
    model = create(name, **kwargs)
    built = [m for m in model.modules() if isinstance(m, Layer) and hasattr(m, "weight")]
    assert built and all(m.built for m in built)  # nothing left to build lazily
    before = n_params(model)
    x = torch.randn(*shape, requires_grad=True)
    y = model(x)
    assert tuple(y.shape) == out_shape
    assert n_params(model) == before
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_registered_names():
    names = {"fcn32s", "fcn16s", "fcn8s", "segnet", "deconvnet", "deconvnet_small", "unet"}
    names |= {"unet_small", "dilated_context", "unet3d", "vnet", "localizer"}
    assert names <= set(list_models())


def test_sizes_that_do_not_fit_are_refused():
    with torch.device("meta"):
        paper_unet = create("unet")
    with pytest.raises(ShapeError, match="572"):  # the error names nearby sides that work
        paper_unet(torch.zeros(1, 1, 570, 572, device="meta"))
    with pytest.raises(ShapeError, match="multiples of 32"):
        create("deconvnet_small")(torch.zeros(1, 3, 48, 64))
    with pytest.raises(ShapeError, match="multiples of 8"):
        create("dilated_context")(torch.zeros(1, 3, 36, 32))
    with pytest.raises(ShapeError, match="388, 404"):
        unet_input_size(390)


# ------------------------------------------------------------------------ FCN


def test_fcn_crop_offsets_are_the_prototxt_values():
    # the authors' fcn32s/16s/8s prototxts crop at 19; 5 and 27; 5, 9 and 31
    assert fcn_crop_offsets() == {
        "upscore32": 19, "score_pool4": 5, "upscore16": 27, "score_pool3": 9, "upscore8": 31,
    }  # fmt: skip


def test_fcn_parameter_counts():
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        vgg_features = n_params(torchvision.models.vgg16().features)
        models = {n: create(n) for n in ("fcn32s", "fcn16s", "fcn8s")}
    assert vgg_features == 14_714_688
    k = 21
    fc = conv_params(512, 4096, 7) + conv_params(4096, 4096, 1) + conv_params(4096, k, 1)
    up = {s: conv_params(k, k, s, bias=False) for s in (4, 16, 32, 64)}
    expected = {
        "fcn32s": up[64],
        "fcn16s": up[4] + conv_params(512, k, 1) + up[32],
        "fcn8s": 2 * up[4] + conv_params(512, k, 1) + conv_params(256, k, 1) + up[16],
    }
    for name, model in models.items():
        assert n_params(model.features) == vgg_features
        assert n_params(model) == vgg_features + fc + expected[name], name
    assert n_params(models["fcn8s"]) == 134_489_759


def test_fcn_upsampling_starts_as_bilinear_interpolation():
    model = create("fcn8s", num_classes=3, base_filters=4, fc_units=16)
    x = torch.randn(1, 3, 6, 6)
    out = model.upscore2(x)  # 4x4 stride 2: 6 -> 14, output o <-> interpolated o - 1
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[..., 2:12, 2:12], ref[..., 1:11, 1:11])
    assert bilinear_kernel(4)[1, 1] == pytest.approx(0.75**2)
    # the skip score layers start at zero: a fresh FCN-8s adds nothing from pool3/pool4
    assert model.score_pool4.weight.abs().sum() == 0 and model.score_pool3.weight.abs().sum() == 0


# ------------------------------------------------------------------------ SegNet


def test_segnet_routes_the_encoder_pooling_indices():
    model = create("segnet", num_classes=3, base_filters=4).eval()
    seen: dict = {}
    for i, (pool, unpool) in enumerate(zip(model.pools, model.unpools)):
        pool.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(("enc", i), a[0]))
        unpool.register_forward_hook(
            lambda m, a, out, i=i: seen.__setitem__(("dec", i), (a[0], out))
        )
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 96))
    for i in range(5):
        enc = seen["enc", i].numpy()  # the map pooling i saw (after ReLU)
        dec_in, dec_out = (t.numpy() for t in seen["dec", i])
        n, c, h, w = enc.shape
        windows = enc.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
        arg = windows.reshape(n, c, h // 2, w // 2, 4).argmax(-1)  # NumPy's own argmax
        expected = np.zeros_like(enc)
        rows = 2 * np.arange(h // 2)[:, None] + arg // 2
        cols = 2 * np.arange(w // 2)[None, :] + arg % 2
        nn_, cc = np.indices((n, c))
        expected[nn_[..., None, None], cc[..., None, None], rows, cols] = dec_in
        np.testing.assert_allclose(dec_out, expected, rtol=0, atol=0)
        # non-zero exactly at the argmax positions where the decoder has a value
        at_max = np.zeros(enc.shape, bool)
        at_max[nn_[..., None, None], cc[..., None, None], rows, cols] = dec_in != 0
        assert ((dec_out != 0) == at_max).all() and at_max.any()
        # the test can tell: "bed of nails" (always the top-left corner) differs
        bed = np.zeros_like(enc)
        bed[..., ::2, ::2] = dec_in
        assert not np.array_equal(bed, dec_out)


def test_segnet_parameters_by_hand():
    with torch.device("meta"):
        model = create("segnet")  # CamVid: 11 classes
    widths = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    widths += [(256, 512)] + [(512, 512)] * 5  # VGG16's 13 convolutions
    decoder = [(512, 512)] * 5 + [(512, 256), (256, 256), (256, 256), (256, 128)]
    decoder += [(128, 128), (128, 64), (64, 64)]  # conv5_3_D ... conv1_2_D
    convs = sum(conv_params(a, b, 3) for a, b in widths + decoder) + conv_params(64, 11, 3)
    bn = sum(2 * b for _, b in widths + decoder)  # gamma and beta
    assert n_params(model) == convs + bn == 29_449_355


# ------------------------------------------------------------------------ U-Net


def test_unet_572_to_388_arithmetic():
    sizes, n = [], 572
    for level in range(5):  # Fig. 1, contracting path
        n = conv_output_size(conv_output_size(n, 3), 3)
        sizes.append(n)
        if level < 4:
            n = pool_output_size(n, 2)
    for _ in range(4):  # expansive path
        n = transposed_conv_output_size(n, 2, 2, "valid")
        sizes.append(n)
        n = conv_output_size(conv_output_size(n, 3), 3)
    assert sizes == [568, 280, 136, 64, 28, 56, 104, 200, 392] and n == 388
    assert unet_output_size(572) == 388 and unet_input_size(388) == 572
    with torch.device("meta"):
        model = create("unet")
        out = model(torch.zeros(1, 1, 572, 572))
    assert tuple(out.shape) == (1, 2, 388, 388)
    assert model.tile_margin == (572 - 388) // 2 == 92


def test_unet_parameters_by_hand():
    with torch.device("meta"):
        model = create("unet")
    w = [64, 128, 256, 512, 1024]
    expected, c = 0, 1
    for f in w:
        expected += conv_params(c, f, 3) + conv_params(f, f, 3)
        c = f
    for f in reversed(w[:-1]):
        expected += conv_params(c, f, 2) + conv_params(2 * f, f, 3) + conv_params(f, f, 3)
        c = f
    expected += conv_params(64, 2, 1)
    assert n_params(model) == expected == 31_030_658


def test_unet_small_is_the_keras_model():
    model = create("unet_small")
    assert n_params(model) == 1_941_105  # Keras' model.summary() for seed 001's code
    rows = summary(model, (3, 128, 128), print_fn=lambda line: None)
    assert rows.total_params == 1_941_105
    rates = [m.rate for m in model.modules() if isinstance(m, Dropout)]
    assert rates == [0.1, 0.1, 0.2, 0.2, 0.3, 0.2, 0.2, 0.1, 0.1]
    widths = [m.filters for m in model.modules() if is_conv(m)]
    down = [16, 16, 32, 32, 64, 64, 128, 128, 256, 256]
    assert widths == down + [128, 128, 64, 64, 32, 32, 16, 16, 1]  # up-convs are not is_conv
    with torch.no_grad():
        y = model.eval()(torch.rand(1, 3, 128, 128) * 255)
    assert y.shape == (1, 1, 128, 128) and 0 < y.min() and y.max() < 1


def test_mirror_pad_matches_numpy_reflect_even_beyond_the_image():
    x = np.random.default_rng(0).random((2, 1, 5, 7))
    got = mirror_pad(torch.as_tensor(x), [(13, 2), (3, 17)]).numpy()
    np.testing.assert_array_equal(got, np.pad(x, ((0, 0), (0, 0), (13, 2), (3, 17)), "reflect"))


@pytest.mark.parametrize("tile", [20, 28])  # 20: tiles overlap (the stride is 8)
def test_predict_tiled_equals_one_pass_over_the_mirrored_image(tile):
    model = create("unet", num_classes=3, in_channels=2, depth=4, base_filters=4).double()
    model.train()
    image = np.random.default_rng(1).random((2, 52, 44))  # sides the valid net can output
    tiled = predict_tiled(model, image, tile=tile, num_classes=3)
    assert model.training  # its mode is restored
    m = model.tile_margin
    padded = np.pad(image, ((0, 0), (m, m), (m, m)), mode="reflect")
    with torch.no_grad():
        direct = model.eval()(torch.as_tensor(padded)[None])[0].numpy()
    assert tiled.shape == direct.shape == (3, 52, 44)
    np.testing.assert_allclose(tiled, direct, rtol=0, atol=1e-10)


def test_predict_tiled_batches_and_same_padding():
    model = create("unet", padding="same", depth=3, base_filters=4)
    x = torch.rand(2, 1, 37, 50)
    out = predict_tiled(model, x, tile=16)
    assert out.shape == (2, 2, 37, 50)


# ------------------------------------------------------------------------ dilated context


def test_context_module_receptive_field_and_identity_init():
    module = ContextModule(5)
    layers = [
        (k[0], s[0], d[0])
        for m in module.modules()
        if is_conv(m)
        for k, s, d in m.receptive_field_layers()
    ]
    fields = [r.receptive_field for r in receptive_field(layers)]
    assert fields == [3, 5, 9, 17, 33, 65, 67, 67]  # Yu & Koltun, Table 1
    x = torch.rand(2, 5, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(module(x), x)  # identity initialisation (basic)
        large = ContextModule(3, "large")
        xl = torch.rand(2, 3, 24, 24)
        assert (large(xl) - xl).abs().mean() < 0.05 * xl.mean()  # identity + small noise
    assert [m.filters for m in large.modules() if is_conv(m)] == [6, 6, 12, 24, 48, 96, 96, 3]


# ------------------------------------------------------------------------ volumetric


def test_unet3d_paper_sizes_and_parameters():
    with torch.device("meta"):
        out = create("unet3d")(torch.zeros(1, 3, 116, 132, 132))
        plain = create("unet3d", batch_norm=False)
    assert tuple(out.shape) == (1, 3, 28, 44, 44)  # Cicek et al.: 132x132x116 -> 44x44x28
    assert n_params(plain) == 19_069_955  # "The architecture has 19069955 parameters"


def test_vnet_trains_on_synthetic_volumes():
    torch.manual_seed(0)
    grid = torch.stack(torch.meshgrid(*[torch.arange(16.0)] * 3, indexing="ij"))
    centres = torch.randint(5, 11, (4, 3, 1, 1, 1)).float()
    y = ((grid[None] - centres).square().sum(1) <= 16).long()  # balls of radius 4
    x = y[:, None].float() + 0.2 * torch.randn(4, 1, 16, 16, 16)
    model = create("vnet", base_filters=4, depth=3, kernel_size=3)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(10):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ------------------------------------------------------------------------ localiser


def test_localizer_two_outputs():
    model = create("localizer", num_classes=10, in_channels=1)
    probs, boxes = model(torch.rand(3, 1, 28, 28))
    assert probs.shape == (3, 10) and boxes.shape == (3, 4)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    assert ((boxes > 0) & (boxes < 1)).all()
    small = create("localizer", backbone="small", num_classes=2, in_channels=3, input_size=32)
    assert [t.shape for t in small(torch.rand(2, 3, 32, 32))] == [(2, 2), (2, 4)]
    # the default backbone, 'small': 64x64 -> 4x4 maps of 128, and each corner unit of the
    # last map sees the opposite corner of the image (autograd: its receptive field spans
    # the canvas), so GAP features can tell where an object is through the zero padding
    x = torch.rand(1, 1, 64, 64, requires_grad=True)
    maps = model.backbone.eval()(x)
    assert maps.shape == (1, 128, 4, 4)
    (grad,) = torch.autograd.grad(maps[0, :, 0, 0].sum(), x)
    assert grad[0, 0, 48:, 48:].abs().sum() > 0
    # a named classifier as backbone: gap_cnn's convolutions without its GAP + Dense head
    gap = create("localizer", backbone="gap_cnn", num_classes=10, in_channels=1)
    heads = dense_params(256, 10) + dense_params(256, 4)
    assert n_params(gap) == n_params(create("gap_cnn")) - dense_params(256, 10) + heads


# ------------------------------------------------------------------------ learning


def _shapes(rng, n, size=32, box=False):
    """Noisy images with one or two bright discs/squares; masks (or one shape's box)."""
    x = rng.normal(0, 0.1, (n, 1, size, size)).astype(np.float32)
    masks = np.zeros((n, 1, size, size), np.float32)
    labels, boxes = rng.integers(0, 2, n), np.zeros((n, 4), np.float32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for _ in range(1 if box else rng.integers(1, 3)):
            s = rng.integers(10, 18) if box else 2 * rng.integers(3, 8)
            y0, x0 = rng.integers(0, size - s + 1, 2)
            r, cy, cx = s / 2, y0 + s / 2 - 0.5, x0 + s / 2 - 0.5
            if labels[i] == 0:
                m = (yy >= y0) & (yy < y0 + s) & (xx >= x0) & (xx < x0 + s)
            else:
                m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            masks[i, 0][m] = 1
            x[i, 0][m] += 1
            boxes[i] = [x0 / size, y0 / size, (x0 + s) / size, (y0 + s) / size]
    return x, masks, labels, boxes


def test_unet_learns_synthetic_shapes():
    rng = np.random.default_rng(0)
    x, y, _, _ = _shapes(rng, 192)
    xt, yt, _, _ = _shapes(rng, 48)
    net = create("unet", num_classes=1, padding="same", depth=3, base_filters=8, dropout=0.0)
    model = cnnkit.Model(net)
    model.compile(optimizer="adam", loss="binary_crossentropy", learning_rate=3e-3)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    pred = (model.predict(xt) > 0).astype(int)  # logits: foreground where > 0
    assert jaccard_score(yt.astype(int).ravel(), pred.ravel()) >= 0.8  # foreground IoU
    assert mean_iou(yt.astype(int), pred) >= 0.8


def test_localizer_learns_a_shape_box():
    rng = np.random.default_rng(0)
    x, _, labels, boxes = _shapes(rng, 512, box=True)
    xt, _, lt, bt = _shapes(rng, 200, box=True)
    backbone = {"filters": (16, 32, 64, 64), "strides": (2, 2, 2, 1)}
    net = create("localizer", backbone="gap_cnn", num_classes=2, input_size=32,
                 backbone_kwargs=backbone)  # fmt: skip
    model = cnnkit.Model(net)
    model.compile(optimizer="adam", loss=["sparse_categorical_crossentropy", "mse"],
                  loss_weights=[0.8, 0.2], learning_rate=3e-3)  # fmt: skip
    model.fit(x, (labels, boxes), batch_size=16, epochs=16, verbose=0)
    probs, pred = model.predict(xt)
    assert (probs.argmax(1) == lt).mean() >= 0.9
    assert mean_box_iou(pred, bt) >= 0.5
