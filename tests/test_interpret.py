"""cnnkit.interpret: CAM (seed 003's steps), Grad-CAM, feature maps and filter grids,
checked against computations written here from the math (hooks, einsum, autograd) and
against torchvision's make_grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit._core.errors import CnnkitError, ConfigError, ShapeError
from cnnkit.interpret import (
    cam,
    feature_map_grid,
    feature_maps,
    filter_grid,
    filters,
    grad_cam,
    make_grid,
)
from cnnkit.layers import (
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    GlobalAveragePooling2D,
    ResidualBlock,
    Sequential,
)
from cnnkit.models import create
from cnnkit.models.base import ImageClassifier


def _small_gap_cnn():
    model = create("gap_cnn", filters=(8, 16, 12), strides=(1, 2, 1), input_size=16)
    return model.eval()


def _hooked_features(model: nn.Module, gap: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the GAP layer, captured independently of cnnkit.interpret."""
    seen = {}

    def hook(module, inputs, output):
        seen["f"] = inputs[0].detach()

    handle = gap.register_forward_hook(hook)
    with torch.no_grad():
        out = model(x)
    handle.remove()
    return seen["f"], out


def _minmax(a: torch.Tensor) -> torch.Tensor:
    lo = a.amin(dim=(1, 2), keepdim=True)
    hi = a.amax(dim=(1, 2), keepdim=True)
    return (a - lo) / (hi - lo)


def test_cam_follows_seed_003_steps_and_logit_identity():
    model = _small_gap_cnn()
    x = torch.randn(4, 1, 16, 16)
    gap, dense = model[3], model[4]
    f, probs = _hooked_features(model, gap, x)  # step 3: final maps [4, 12, 8, 8]
    w, b = dense.weight.detach(), dense.bias.detach()  # step 4: GAP-to-class weights
    predicted = probs.argmax(1)
    # step 5, for the predicted class: sum_k w_jk f_k
    expected_raw = torch.einsum("nkhw,nk->nhw", f, w[predicted])
    raw = cam(model, x, normalize=False, upsample=False)
    torch.testing.assert_close(raw, expected_raw, rtol=1e-5, atol=1e-5)
    # the CAM logit identity: mean(CAM_j) + b_j is the logit of every class j
    logits = torch.stack(
        [cam(model, x, j, normalize=False, upsample=False).mean((1, 2)) + b[j] for j in range(10)],
        dim=1,
    )
    torch.testing.assert_close(torch.softmax(logits, 1), probs, rtol=1e-5, atol=1e-6)
    # steps 6-7: min-max to [0, 1], then bilinear upsampling to the input size
    full = cam(model, x)
    assert full.shape == (4, 16, 16)
    expected = F.interpolate(_minmax(expected_raw)[:, None], size=(16, 16), mode="bilinear")[:, 0]
    torch.testing.assert_close(full, expected, rtol=1e-5, atol=1e-5)
    assert full.min() >= 0 and full.max() <= 1


def test_cam_class_idx_int_and_sequence():
    model = _small_gap_cnn()
    x = torch.randn(3, 1, 16, 16)
    f, _ = _hooked_features(model, model[3], x)
    w = model[4].weight.detach()
    torch.testing.assert_close(
        cam(model, x, 2, normalize=False, upsample=False),
        torch.einsum("nkhw,k->nhw", f, w[2]),
        rtol=1e-5,
        atol=1e-5,
    )
    idx = [0, 5, 9]
    torch.testing.assert_close(
        cam(model, x, idx, normalize=False, upsample=False),
        torch.einsum("nkhw,nk->nhw", f, w[idx]),
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ConfigError, match="out of range"):
        cam(model, x, 10)
    with pytest.raises(ShapeError, match="2 entries"):
        cam(model, x, [1, 2])


def test_cam_on_sequentials_with_gap_dense_head():
    keras_like = Sequential(
        [
            Conv2D(6, 3, activation="relu"),
            Conv2D(5, 3, activation="relu"),
            GlobalAveragePooling2D(),
            Dropout(0.5),
            Dense(4, activation="softmax"),
        ],
        input_shape=(2, 12, 12),
    ).eval()
    torch_only = nn.Sequential(
        nn.Conv2d(2, 5, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 4),
    ).eval()
    x = torch.randn(2, 2, 12, 12)
    for model, gap, dense in (
        (keras_like, keras_like[2], keras_like[4]),
        (torch_only, torch_only[2], torch_only[4]),
    ):
        f, out = _hooked_features(model, gap, x)
        raw = cam(model, x, normalize=False, upsample=False)
        j = out.argmax(1)
        torch.testing.assert_close(
            raw, torch.einsum("nkhw,nk->nhw", f, dense.weight.detach()[j]), rtol=1e-5, atol=1e-5
        )
        # the logit identity over all classes: mean(CAM_c) + b_c rebuilds the logits
        logits = torch.stack(
            [cam(model, x, c, normalize=False, upsample=False).mean((1, 2)) for c in range(4)], 1
        )
        logits = logits + dense.bias.detach()
        rebuilt = torch.softmax(logits, 1) if model is keras_like else logits
        torch.testing.assert_close(rebuilt, out, rtol=1e-5, atol=1e-6)
        assert cam(model, x).shape == (2, 12, 12)
    assert keras_like.training is False


def test_cam_on_resnet_style_image_classifier_restores_training_mode():
    # the layout of cnnkit's resnet/googlenet: named stages, head = GAP -> Dense (no softmax)
    stages = [
        ("stem", nn.Sequential(Conv2D(8, 3, strides=2, in_channels=3), BatchNormalization())),
        ("layer1", ResidualBlock(8, 1, in_channels=8)),
        ("layer2", ResidualBlock(12, 2, in_channels=8)),
    ]
    head = nn.Sequential(GlobalAveragePooling2D(), Dense(3, in_features=12))
    model = ImageClassifier(stages, head, (3, 24, 24))
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        model(x)  # builds the lazy layers (a lazily built batch norm starts in training mode)
        model.eval()
        logits = model(x)
    model.train()
    maps = [cam(model, x, j, normalize=False, upsample=False) for j in range(3)]
    assert model.training, "cam must restore the training flag"
    rebuilt = torch.stack([m.mean((1, 2)) for m in maps], 1) + head[1].bias.detach()
    torch.testing.assert_close(rebuilt, logits, rtol=1e-4, atol=1e-5)
    assert cam(model, x).shape == (2, 24, 24)


def test_cam_refuses_models_without_gap_dense_head():
    x = torch.randn(1, 1, 28, 28)
    with pytest.raises(CnnkitError, match="grad_cam"):
        cam(create("mnist_cnn"), x)  # Flatten + Dense
    two_dense = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4), nn.Linear(4, 2)
    )
    with pytest.raises(CnnkitError, match="one dense"):
        cam(two_dense, x)
    with pytest.raises(CnnkitError, match="grad_cam"):
        cam(nn.Conv2d(1, 2, 3), x)
    with pytest.raises(ShapeError, match="unsqueeze"):
        cam(_small_gap_cnn(), torch.randn(1, 16, 16))


def test_grad_cam_is_proportional_to_cam_for_gap_dense_nets():
    model = _small_gap_cnn()
    x = torch.randn(3, 1, 16, 16)
    for j in (None, 4):
        raw_cam = cam(model, x, j, normalize=False, upsample=False)
        raw_grad = grad_cam(model, x, class_idx=j, relu=False, normalize=False, upsample=False)
        hw = raw_cam.shape[1] * raw_cam.shape[2]
        torch.testing.assert_close(raw_grad, raw_cam / hw, rtol=1e-4, atol=1e-6)
    full = grad_cam(model, x)
    expected = F.interpolate(
        _minmax(cam(model, x, normalize=False, upsample=False).clamp_min(0))[:, None],
        size=(16, 16),
        mode="bilinear",
    )[:, 0]
    torch.testing.assert_close(full, expected, rtol=1e-4, atol=1e-5)


def test_grad_cam_matches_manual_autograd_on_flatten_dense_net():
    model = create("mnist_cnn", input_size=12).eval()  # conv, conv, flatten, dense(softmax)
    x = torch.randn(3, 1, 12, 12)
    conv1, conv2, dense = model[0], model[1], model[3]
    a = conv2(conv1(x)).detach().requires_grad_(True)
    logits = F.linear(a.flatten(1), dense.weight, dense.bias)  # before the softmax
    j = logits.argmax(1)
    (g,) = torch.autograd.grad(logits.gather(1, j[:, None]).sum(), a)
    expected = torch.einsum("nkhw,nk->nhw", a.detach(), g.mean((2, 3))).clamp_min(0)
    got = grad_cam(model, x, normalize=False, upsample=False)  # default layer: last conv
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    by_name = grad_cam(model, x, layer="1", class_idx=j.tolist(), normalize=False, upsample=False)
    torch.testing.assert_close(by_name, expected, rtol=1e-4, atol=1e-6)
    assert grad_cam(model, x).shape == (3, 12, 12)
    with pytest.raises(ConfigError, match="Did you mean"):
        grad_cam(model, x, layer="l1")
    with pytest.raises(ConfigError, match="region"):
        grad_cam(model, x, region=torch.ones(8, 8))


def test_grad_cam_segmentation_class_over_region():
    seg = Sequential(
        [
            Conv2D(4, 3, padding="same", activation="relu"),
            Conv2D(5, 3, padding="same", activation="relu"),
            Conv2D(3, 1, activation="softmax"),
        ],
        input_shape=(1, 10, 10),
    ).eval()
    x = torch.randn(2, 1, 10, 10)
    region = torch.zeros(10, 10, dtype=torch.bool)
    region[2:6, 3:8] = True
    a = seg[1](seg[0](x)).detach().requires_grad_(True)
    logits = F.conv2d(a, seg[2].weight, seg[2].bias)
    (g,) = torch.autograd.grad((logits[:, 2] * region).sum(), a, retain_graph=True)
    expected = torch.einsum("nkhw,nk->nhw", a.detach(), g.mean((2, 3))).clamp_min(0)
    got = grad_cam(seg, x, layer=seg[1], class_idx=2, region=region, normalize=False)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    whole = grad_cam(seg, x, layer=seg[1], class_idx=2, normalize=False)
    (g_all,) = torch.autograd.grad(logits[:, 2].sum(), a)
    torch.testing.assert_close(
        whole,
        torch.einsum("nkhw,nk->nhw", a.detach(), g_all.mean((2, 3))).clamp_min(0),
        rtol=1e-4,
        atol=1e-6,
    )
    with pytest.raises(ShapeError, match="region"):
        grad_cam(seg, x, class_idx=0, region=torch.ones(4, 4))


def test_feature_maps_are_the_layer_outputs():
    model = _small_gap_cnn()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        h0 = model[0](x)
        h1 = model[1](h0)
        h2 = model[2](h1)
    every = feature_maps(model, x)
    assert list(every) == ["0", "1", "2"]
    for got, ref in zip(every.values(), (h0, h1, h2)):
        torch.testing.assert_close(got, ref)
    picked = feature_maps(model, x, layers=[model[2], "0"])
    assert set(picked) == {"0", "2"}
    torch.testing.assert_close(picked["2"], h2)
    with pytest.raises(ConfigError, match="No layer named"):
        feature_maps(model, x, layers="conv9")
    grid = feature_map_grid(every["1"], sample=1, ncols=4)  # 16 maps of 8x8, 4 per row
    assert grid.shape == (4 * 9 + 1, 4 * 9 + 1)
    tile = grid[1:9, 1:9]
    ref = h1[1, 0].numpy()
    np.testing.assert_allclose(tile, (ref - ref.min()) / (ref.max() - ref.min()), atol=1e-6)


def test_filters_and_make_grid_against_torchvision():
    torchvision_utils = pytest.importorskip("torchvision.utils")
    conv = Conv2D(6, 5, input_shape=(3, 10, 10))
    w = filters(conv)
    torch.testing.assert_close(w, conv.weight.detach())
    assert w.data_ptr() != conv.weight.data_ptr()
    imgs = torch.rand(7, 4, 5)
    ours = make_grid(imgs, ncols=3, padding=2, normalize=None, pad_value=0.5)
    ref = torchvision_utils.make_grid(imgs[:, None], nrow=3, padding=2, pad_value=0.5)
    np.testing.assert_allclose(ours, ref[0].numpy(), atol=1e-7)
    rgb = filter_grid(conv)  # 3 input channels: one RGB tile per filter, scaled together
    assert rgb.shape == (2 * 6 + 1, 3 * 6 + 1, 3)
    wn = w.numpy()
    scaled = (wn - wn.min()) / (wn.max() - wn.min())
    np.testing.assert_allclose(rgb[1:6, 1:6], scaled[0].transpose(1, 2, 0), atol=1e-6)
    gray = filter_grid(Conv2D(4, 3, input_shape=(2, 8, 8)))  # 4 rows x 2 input channels
    assert gray.shape == (4 * 4 + 1, 2 * 4 + 1)
    with pytest.raises(ConfigError, match="convolutional"):
        filters(Dense(3, in_features=2))
    with pytest.raises(ShapeError):
        make_grid(np.zeros((2, 3, 3, 2)))


def test_grad_cam_default_layer_skips_a_1x1_last_conv():
    model = create("lenet5").eval()  # C5 gives 120 maps of 1x1: Grad-CAM there is one number
    x = torch.randn(2, *model.default_input_shape)
    assert feature_maps(model, x, layers="features.c5")["features.c5"].shape[2:] == (1, 1)
    at_c5 = grad_cam(model, x, layer="features.c5")
    assert float(at_c5.abs().max()) == 0.0
    default = grad_cam(model, x)
    torch.testing.assert_close(default, grad_cam(model, x, layer="features.c3"))
    assert float(default.max()) > 0.5


def test_grad_cam_reads_logits_before_a_final_torch_softmax():
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
        nn.Softmax(dim=1),
    ).eval()
    x = torch.randn(2, 1, 9, 9)
    for j in range(3):
        raw_cam = cam(net, x, j, normalize=False, upsample=False)  # from the Linear weights
        raw = grad_cam(net, x, net[0], j, relu=False, normalize=False, upsample=False)
        # the conv output is pre-ReLU here: the gradient is w_j / 49 where the ReLU passes
        a = net[0](x).detach()
        g = (a > 0).float() * net[4].weight.detach()[j][None, :, None, None] / 49
        expected = torch.einsum("nkhw,nk->nhw", a, g.mean((2, 3)))
        torch.testing.assert_close(raw, expected, rtol=1e-4, atol=1e-6)
        at_relu = grad_cam(net, x, net[1], j, relu=False, normalize=False, upsample=False)
        torch.testing.assert_close(at_relu, raw_cam / 49, rtol=1e-4, atol=1e-6)
