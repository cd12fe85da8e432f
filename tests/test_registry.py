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
unless that forward would take over ~5 s (``EVAL_BUDGET_MACS``).
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter
from torch.utils.flop_counter import FlopCounterMode

from cnnkit._core.errors import ConfigError
from cnnkit.layers import summary
from cnnkit.models import MODELS, create, list_models, register_model
from cnnkit.models.base import is_conv

#: forward multiply-accumulates per sample up to which a real training step runs
TRAIN_BUDGET_MACS = 1.0e9
#: ... and up to which a real inference forward runs (C3D's 38.5 GMACs: about 2 s)
EVAL_BUDGET_MACS = 40e9


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # two OpenMP threads on a shared two-core machine can be 10-50x slower than one
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def forward_macs(model: nn.Module, shape: tuple) -> int | None:
    """Forward MACs per sample of a meta-device model, None if it rejects the shape."""
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(torch.empty(1, *shape, device="meta"))
    except (ValueError, RuntimeError):  # cnnkit's ShapeError/ConfigError are ValueErrors
        return None
    return counter.get_total_flops() // 2


def smaller_shape(model: nn.Module, shape: tuple) -> tuple | None:
    """The largest input with every spatial size halved k times that ``model`` (on meta)
    accepts within the training budget; None if none."""
    for k in range(1, 6):
        spatial = tuple(s >> k for s in shape[1:])
        if min(spatial) < 1:
            return None
        candidate = (shape[0], *spatial)
        macs = forward_macs(model, candidate)
        if macs is not None and macs <= TRAIN_BUDGET_MACS:
            return candidate
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


def summary_checks(model: nn.Module, shape: tuple) -> None:
    rows = summary(model, shape, print_fn=lambda line: None)
    total = sum(p.numel() for p in model.parameters())
    assert rows.total_params == total
    # every parameter is reached by a row: each parameterised module ran in the forward
    assert sum(r.params for r in rows) == total


def interface_checks(model: nn.Module, x: torch.Tensor) -> None:
    """forward == forward_head(forward_features), last_conv, forward_stages, where offered."""
    model.eval()
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        with torch.no_grad():
            direct = model(x)
            split = model.forward_head(model.forward_features(x))
        if x.device.type == "meta":
            assert direct.shape == split.shape
        else:
            torch.testing.assert_close(direct, split)
    if any(is_conv(m) for m in model.modules()) and hasattr(type(model), "last_conv"):
        assert is_conv(model.last_conv)
    if hasattr(model, "forward_stages") and hasattr(model, "stage_names"):
        with torch.no_grad():
            assert list(model.forward_stages(x)) == list(model.stage_names)


@pytest.mark.parametrize("name", list_models())
def test_registered_model(name):
    model = create(name)
    named = dict(model.named_parameters())
    lazy = [n for n, p in named.items() if isinstance(p, UninitializedParameter)]
    assert not lazy, f"lazy parameters remain after create: {lazy[:5]}"
    total = sum(p.numel() for p in named.values())
    assert total > 0
    assert sum(v.numel() for k, v in model.state_dict().items() if k in named) == total

    shape = input_shape_of(model)
    spatial = shape[1:]
    num_classes = default_num_classes(name)
    with torch.device("meta"):
        meta = create(name)
    assert sum(p.numel() for p in meta.parameters()) == total
    macs = forward_macs(meta, shape)
    assert macs is not None, f"{name} rejects its own documented input shape {shape}"

    if macs <= TRAIN_BUDGET_MACS:
        x = torch.randn(2, *shape)
        interface_checks(model, x)
        train_step_checks(model, x, num_classes, spatial)
        summary_checks(model, shape)
        return

    # costly: the documented size on meta, the real numbers at a smaller size
    xm = torch.empty(2, *shape, device="meta")
    with torch.no_grad():
        check_output_shape(meta.eval()(xm), 2, num_classes, spatial)
    interface_checks(meta, xm)
    summary_checks(meta, shape)
    small = smaller_shape(meta, shape)
    if small is not None:
        x = torch.randn(2, *small)
        interface_checks(model, x)
        train_step_checks(model, x, num_classes, small[1:])
        return
    train_step_checks(meta, xm, num_classes, spatial)
    if macs <= EVAL_BUDGET_MACS:
        with torch.no_grad():
            out = model.eval()(torch.randn(1, *shape))
        check_output_shape(out, 1, num_classes, spatial)
        assert all(torch.isfinite(o).all() for o in outputs(out))


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
