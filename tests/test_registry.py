"""Every registered model: builds eagerly, runs, trains, and is counted right by summary().

One parametrized test covers ``cnnkit.models.list_models()``, so a model registered
tomorrow is tested without touching this file. Each model is built with its default
arguments and checked at its documented input size (``default_input_shape``, or a
``Sequential``'s ``input_shape``). Models whose forward costs more than
``TRAIN_BUDGET_MACS`` per sample are checked at that size on the ``meta`` device (output
shape and summary: shapes without numbers), and for real (finite outputs, a gradient
for every parameter) at the largest smaller size they accept (sizes halved until
cheap, e.g. ResNet-152 at 56x56); a model that accepts no smaller size (a flatten head)
gets its training step on ``meta`` and a real inference forward at its documented size,
unless that forward would take over ~5 s (``EVAL_BUDGET_MACS``). Detection models
(``task == 'instance_segmentation'``, Mask R-CNN) follow torchvision's convention instead
(losses in train mode, detection dicts in eval mode) and get ``detector_checks``.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

from cnnkit._core.errors import ConfigError
from cnnkit.layers import summary
from cnnkit.models import MODELS, create, list_models, register_model
from cnnkit.models.base import is_conv

#: forward multiply-accumulates per sample up to which a real training step runs
TRAIN_BUDGET_MACS = 1.0e9
#: cost of the smaller input used for the real checks of costlier models
SMALL_BUDGET_MACS = 0.25e9
#: ... and up to which a real inference forward runs (C3D's 38.5 GMACs: about 2 s)
EVAL_BUDGET_MACS = 40e9


def input_shape_of(model: nn.Module) -> tuple[int, ...]:
    shape = getattr(model, "default_input_shape", None)
    if shape is None:
        shape = getattr(model, "input_shape", None)  # cnnkit.Sequential
    assert shape is not None, (
        f"{type(model).__name__} declares no input size: set default_input_shape "
        "(ImageClassifier) or input_shape (Sequential)"
    )
    return tuple(int(s) for s in shape)


def default_num_classes(name: str) -> int | None:
    param = inspect.signature(MODELS.get(name)).parameters.get("num_classes")
    if param is None or not isinstance(param.default, int):
        return None
    return param.default


def outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    assert isinstance(out, (tuple, list)), f"unexpected output type {type(out).__name__}"
    return [o for o in out if isinstance(o, torch.Tensor)]


def check_output_shape(out, batch: int, num_classes: int | None, spatial: tuple) -> None:
    """Every output has the batch; the first (the class scores) ``num_classes`` channels,
    and, for a dense prediction, one map per class of the input's rank and at most its
    size (valid-padding nets such as the original U-Net return a smaller map)."""
    outs = outputs(out)
    assert outs and all(o.shape[0] == batch for o in outs)
    if num_classes is None:
        return
    first = outs[0]
    assert first.shape[1] == num_classes, f"output {tuple(first.shape)}, expected {num_classes}"
    if first.dim() > 2:
        assert first.dim() == len(spatial) + 2
        assert all(1 <= o <= i for o, i in zip(first.shape[2:], spatial)), (
            f"output map {tuple(first.shape[2:])} for input {spatial}"
        )


def meta_macs(model: nn.Module, shape: tuple) -> int | None:
    """MACs per sample of a meta-device ``model`` by summary(), None if it rejects ``shape``."""
    try:
        return summary(model, shape, print_fn=lambda line: None).total_macs
    except (ValueError, RuntimeError):  # cnnkit's ShapeError/ConfigError are ValueErrors
        return None


def smaller_shape(model: nn.Module, shape: tuple, macs: int) -> tuple | None:
    """The largest input with every spatial size halved k times that the meta-device
    ``model`` accepts at a cost within ``SMALL_BUDGET_MACS``; None if there is none."""
    area = math.prod(shape[1:])
    for k in range(1, 7):
        spatial = tuple(s >> k for s in shape[1:])
        if min(spatial) < 1:
            return None
        if macs * math.prod(spatial) / area > SMALL_BUDGET_MACS:
            continue  # even a cost proportional to the area is over budget
        small = meta_macs(model, (shape[0], *spatial))
        if small is not None and small <= SMALL_BUDGET_MACS:
            return (shape[0], *spatial)
    return None


def train_step_checks(model: nn.Module, x: torch.Tensor, num_classes, spatial) -> None:
    """Train mode: output shape, every parameter gets a (finite, off meta) gradient."""
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x)
    check_output_shape(out, len(x), num_classes, spatial)
    loss = sum((o.float() * torch.randn_like(o.float())).sum() for o in outputs(out))
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    if x.device.type != "meta":
        assert all(torch.isfinite(o).all() for o in outputs(out))
        bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
        assert not bad, f"non-finite gradients: {bad[:5]}"


def summary_checks(model: nn.Module, shape: tuple) -> int:
    """summary() totals equal the parameter count; returns its MACs per sample."""
    rows = summary(model, shape, print_fn=lambda line: None)
    total = sum(p.numel() for p in model.parameters())
    assert rows.total_params == total
    # every parameter is reached by a row: each parameterised module ran in the forward
    assert sum(r.params for r in rows) == total
    return rows.total_macs


def interface_checks(model: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
    """forward == forward_head(forward_features), last_conv, forward_stages, where offered
    (``out`` is the eval-mode ``model(x)``)."""
    model.eval()
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        with torch.no_grad():
            split = model.forward_head(model.forward_features(x))
        if x.device.type == "meta":
            assert split.shape == out.shape
        else:
            torch.testing.assert_close(split, out)
    if any(is_conv(m) for m in model.modules()) and hasattr(type(model), "last_conv"):
        assert is_conv(model.last_conv)
    if x.device.type != "meta" and hasattr(model, "forward_stages"):
        with torch.no_grad():
            stages = model.forward_stages(x)
        assert list(stages) == list(getattr(model, "stage_names", stages))


def eval_checks(
    model: nn.Module, x: torch.Tensor, num_classes, spatial, interface: bool = True
) -> None:
    """Eval mode: output shape, finite outputs (off meta), the interface."""
    with torch.no_grad():
        out = model.eval()(x)
    check_output_shape(out, len(x), num_classes, spatial)
    if x.device.type != "meta":
        assert all(torch.isfinite(o).all() for o in outputs(out))
    if interface:
        interface_checks(model, x, out)


#: small configurations of detection models (Mask R-CNN) for the real forward passes
DETECTOR_CONFIGS = (
    dict(backbone="small"),
    dict(backbone="resnet18", fpn=True, min_size=96, max_size=96),
)


def detector_checks(name: str) -> None:
    """A detection model (torchvision's convention): train mode returns a dict of finite
    scalar losses whose sum reaches every trainable parameter; eval mode returns one dict
    per image with boxes, labels, scores and image-sized masks."""
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 64)]
    targets = []
    for img in images:
        masks = torch.zeros(2, *img.shape[-2:], dtype=torch.uint8)
        masks[0, 8:30, 10:40] = 1
        masks[1, 30:46, 40:60] = 1
        boxes = torch.tensor([[10.0, 8, 40, 30], [40, 30, 60, 46]])
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks})
    for config in DETECTOR_CONFIGS:
        torch.manual_seed(0)
        model = create(name, num_classes=3, **config).train()
        losses = model(images, targets)
        assert isinstance(losses, dict) and losses and all(k.startswith("loss") for k in losses)
        assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        missing = [n for n, p in params if p.grad is None]
        assert not missing, f"{config}: parameters without a gradient: {missing[:5]}"
        assert all(torch.isfinite(p.grad).all() for _, p in params)
        with torch.no_grad():
            out = model.eval()(images)
        assert isinstance(out, list) and len(out) == len(images)
        for img, det in zip(images, out):
            d = len(det["boxes"])
            assert det["boxes"].shape == (d, 4)
            assert det["labels"].shape == det["scores"].shape == (d,)
            assert det["masks"].shape == (d, 1, *img.shape[-2:])


@pytest.mark.parametrize("name", list_models())
def test_registered_model(name):
    model = create(name)
    named = dict(model.named_parameters())
    lazy = [n for n, p in named.items() if isinstance(p, UninitializedParameter)]
    assert not lazy, f"lazy parameters remain after create: {lazy[:5]}"
    total = sum(p.numel() for p in named.values())
    assert total > 0
    assert sum(v.numel() for k, v in model.state_dict().items() if k in named) == total

    if getattr(model, "task", None) == "instance_segmentation":
        detector_checks(name)  # torchvision's detection convention, not a tensor -> tensor net
        return

    shape = input_shape_of(model)
    spatial = shape[1:]
    num_classes = default_num_classes(name)
    with torch.device("meta"):
        meta = create(name)
    assert sum(p.numel() for p in meta.parameters()) == total
    macs = summary_checks(meta, shape)

    if macs <= TRAIN_BUDGET_MACS:
        x = torch.randn(2, *shape)
        eval_checks(model, x, num_classes, spatial)
        train_step_checks(model, x, num_classes, spatial)
        summary_checks(model, shape)
        return

    # costly: the documented size on meta, the real numbers at a smaller size
    xm = torch.empty(2, *shape, device="meta")
    eval_checks(meta, xm, num_classes, spatial)
    small = smaller_shape(meta, shape, macs)
    if small is not None:
        x = torch.randn(2, *small)
        eval_checks(model, x, num_classes, small[1:])
        train_step_checks(model, x, num_classes, small[1:])
        return
    train_step_checks(meta, xm, num_classes, spatial)
    if macs <= EVAL_BUDGET_MACS:
        # the interface was checked on meta above
        eval_checks(model, torch.randn(1, *shape), num_classes, spatial, interface=False)


def test_duplicate_registration_is_refused():
    name = list_models()[0]
    original = MODELS.get(name)
    with pytest.raises(ConfigError, match=f"'{name}' is already registered"):

        @register_model(name)
        def impostor(num_classes: int = 10) -> nn.Module:
            return nn.Linear(1, num_classes)

    assert MODELS.get(name) is original
    assert list_models().count(name) == 1


@pytest.mark.parametrize(("typo", "meant"), [("fcn_1d", "fcn1d"), ("volume-cnn", "volume_cnn")])
def test_unknown_name_suggests_the_registered_one(typo, meant):
    with pytest.raises(ConfigError, match=f"Unknown model '{typo}'.*Did you mean.*'{meant}'"):
        create(typo)


def test_unknown_keyword_names_the_accepted_ones():
    with pytest.raises(ConfigError, match="num_classes"):
        create("fcn1d", num_clases=3)
