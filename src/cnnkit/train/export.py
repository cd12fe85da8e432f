"""Export to ONNX, checked: ``export_onnx(module, path)`` writes the file with PyTorch's
TorchScript-based exporter (``dynamo=False``; the batch axis is dynamic) and, with
``check=True``, runs it in onnxruntime on an example input and compares the outputs
with PyTorch's (``|onnx - torch| <= atol + atol * |torch|``).

Max unpooling (SegNet, DeconvNet) has no ONNX export in PyTorch; during export it is
written as the scatter it is (each value to its per-plane index), which ONNX runs as
``ScatterElements``. Models whose outputs depend on the data (Mask R-CNN's proposals,
non-maximum suppression) are refused with a :class:`CnnkitError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit._core.errors import CnnkitError, ConfigError, ShapeError

log = logging.getLogger("cnnkit.train")

OPSET = 17

#: module prefixes of models that cannot be exported yet, with the reason
NOT_EXPORTABLE = {
    "cnnkit.models.mask_rcnn": (
        "Mask R-CNN cannot be exported to ONNX yet: the number of proposals and detections "
        "depends on the image (region proposals, non-maximum suppression, per-box masks)"
    ),
}


def _net(module: Any) -> nn.Module:
    net = getattr(module, "_net", module)
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"export_onnx expects an nn.Module or cnnkit.Model; received {type(module).__name__}."
        )
    return net


def _refuse_unexportable(net: nn.Module) -> None:
    for m in net.modules():
        for prefix, reason in NOT_EXPORTABLE.items():
            if type(m).__module__.startswith(prefix):
                raise CnnkitError(
                    f"{reason} ({type(m).__name__}). Export the backbone instead, or use the "
                    "PyTorch model directly."
                )


def _example(
    net: nn.Module, input_shape: Sequence[int] | None, example_input: torch.Tensor | None
) -> torch.Tensor:
    if example_input is not None:
        if not isinstance(example_input, torch.Tensor):
            example_input = torch.as_tensor(np.asarray(example_input))
        return example_input.float()
    shape = input_shape
    if shape is None:
        shape = getattr(net, "default_input_shape", None) or getattr(net, "input_shape", None)
    if shape is None:
        raise ConfigError(
            f"export_onnx cannot tell the input shape of a {type(net).__name__}; pass "
            "input_shape=(C, H, W) (without the batch dimension) or example_input=tensor."
        )
    shape = tuple(shape)
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise ShapeError(
            f"input_shape must be a tuple of positive ints without the batch dimension, e.g. "
            f"(3, 32, 32); received {input_shape!r}."
        )
    if min(shape) < 1:
        raise ShapeError(f"input_shape sizes must be positive; received {shape}.")
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, *shape, generator=gen)


def _unpool_as_scatter(dims: int):
    def unpool(x, indices, kernel_size, stride=None, padding=0, output_size=None):
        # the output size PyTorch would choose, then a scatter along the flattened plane
        out = _unpool_size(dims)(x, kernel_size, stride, padding, output_size)
        n, c = x.shape[0], x.shape[1]
        flat = torch.zeros(n, c, int(np.prod(out)), dtype=x.dtype, device=x.device)
        flat = flat.scatter(2, indices.reshape(n, c, -1), x.reshape(n, c, -1))
        return flat.reshape(n, c, *out)

    return unpool


def _unpool_size(dims: int):
    def size(x, kernel_size, stride, padding, output_size):
        from torch.nn.modules.utils import _ntuple

        k = _ntuple(dims)(kernel_size)
        s = _ntuple(dims)(stride if stride is not None else kernel_size)
        p = _ntuple(dims)(padding)
        if output_size is not None:
            return [int(v) for v in list(output_size)[-dims:]]
        spatial = x.shape[-dims:]
        return [(int(spatial[i]) - 1) * s[i] - 2 * p[i] + k[i] for i in range(dims)]

    return size


@contextlib.contextmanager
def _exportable_unpooling() -> Iterator[None]:
    from cnnkit.layers import unpooling

    saved = []
    for cls_name, dims in (("MaxUnpooling1D", 1), ("MaxUnpooling2D", 2), ("MaxUnpooling3D", 3)):
        cls = getattr(unpooling, cls_name, None)
        if cls is None:
            continue
        saved.append((cls, cls.__dict__.get("_fn")))
        fn = _unpool_as_scatter(dims)
        cls._fn = staticmethod(fn)
    try:
        yield
    finally:
        for cls, fn in saved:
            if fn is None:
                del cls._fn
            else:
                cls._fn = fn


def _outputs(out: Any) -> list[torch.Tensor]:
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if not all(isinstance(o, torch.Tensor) for o in outs):
        raise CnnkitError(
            "export_onnx exports models that return a tensor or a tuple of tensors; this one "
            f"returns {type(out).__name__}."
        )
    return outs


def export_onnx(
    module: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int] | None = None,
    example_input: torch.Tensor | None = None,
    check: bool = True,
    atol: float = 1e-4,
) -> Path:
    """Write ``module`` (an ``nn.Module`` or ``cnnkit.Model``) to the ONNX file ``path``.

    The input is ``input_shape`` (per sample, without the batch axis; default: the
    model's ``default_input_shape`` / ``input_shape``) or ``example_input`` (a batch).
    ``check=True`` runs the file in onnxruntime and raises :class:`CnnkitError` when an
    output differs from PyTorch's by more than ``atol + atol * |torch|``. Returns the path.
    """
    net = _net(module)
    _refuse_unexportable(net)
    path = Path(path)
    if path.suffix != ".onnx":
        raise ConfigError(f"export_onnx writes a .onnx file; received path {str(path)!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    x = _example(net, input_shape, example_input)
    try:
        param = next(net.parameters())
        x = x.to(param.device)
    except StopIteration:
        pass
    was_training = net.training
    net.eval()
    try:
        # the check's inputs: the example, and a batch of another size whose first
        # sample is negated (a traced data-dependent branch then shows as a mismatch)
        x2 = torch.cat([-x[:1], x, x[:1]])
        with torch.no_grad():
            try:
                expected = [_outputs(net(x)), _outputs(net(x2))]
            except (RuntimeError, ValueError) as err:
                raise ShapeError(
                    f"{type(net).__name__} cannot run on an input of shape {tuple(x.shape)}: "
                    f"{str(err).splitlines()[0]}. Pass input_shape=... that the model accepts."
                ) from None
        with torch.no_grad(), _exportable_unpooling():
            count = len(expected[0])
            names = ["output"] if count == 1 else [f"output{i}" for i in range(count)]
            axes = {"input": {0: "batch"}, **{n: {0: "batch"} for n in names}}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    torch.onnx.export(
                        net,
                        (x,),
                        str(path),
                        dynamo=False,
                        input_names=["input"],
                        output_names=names,
                        dynamic_axes=axes,
                        opset_version=OPSET,
                    )
                except Exception as err:  # the exporter raises many types
                    raise CnnkitError(
                        f"{type(net).__name__} cannot be exported to ONNX: "
                        f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err)}. "
                        "Models with data-dependent control flow or operators ONNX lacks cannot "
                        "be exported yet; use the PyTorch model directly."
                    ) from None
    finally:
        net.train(was_training)
    if check:
        _check(path, x, expected[0], atol)
        _check(path, x2, expected[1], atol)
    log.info("exported %s to %s", type(net).__name__, path)
    return path


def _check(path: Path, x: torch.Tensor, expected: list[torch.Tensor], atol: float) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(
            "export_onnx(check=True) needs onnxruntime: pip install onnxruntime (or pass "
            "check=False to skip the comparison)."
        ) from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.detach().cpu().numpy()})
    if len(got) != len(expected):  # pragma: no cover - the exporter keeps the outputs
        raise CnnkitError(
            f"{path} returns {len(got)} outputs in onnxruntime but PyTorch returns {len(expected)}."
        )
    for i, (g, e) in enumerate(zip(got, expected)):
        ref = e.detach().float().cpu().numpy()
        if g.shape != ref.shape:
            raise CnnkitError(
                f"{path}: output {i} has shape {g.shape} in onnxruntime but {ref.shape} in PyTorch."
            )
        diff = float(np.max(np.abs(g - ref) - atol * np.abs(ref))) if ref.size else 0.0
        if not diff <= atol:
            raise CnnkitError(
                f"{path}: output {i} differs from PyTorch's by up to "
                f"{float(np.max(np.abs(g - ref))):.3g} (allowed {atol:g} + {atol:g}*|value|); "
                "the exported model is not faithful (data-dependent control flow, e.g. an `if` "
                "on tensor values, is traced for one input only and cannot be exported)."
            )
