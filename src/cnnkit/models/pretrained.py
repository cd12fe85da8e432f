"""Loading pretrained weights into cnnkit's models: ``create(name, weights=...)``.

The key mapping from a publisher's state-dict names to cnnkit's modules is explicit: for
each family a list of ``(regular expression, replacement)`` rules, the first rule that
matches a source key gives the cnnkit key (:data:`FAMILIES`, :func:`map_keys`). A key no
rule matches, a cnnkit key nothing maps to, or a tensor of another shape is an error that
lists them all; nothing is loaded partially. Two tolerated differences, both explicit:
files saved before PyTorch 0.4 lack ``num_batches_tracked`` (filled with 0), and a file
with GoogLeNet's auxiliary heads loads into a network without them (the heads are dropped,
as torchvision's builder does).

Files: ``.safetensors`` (read with safetensors) and ``.pth``/``.pt`` state dicts (read with
``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary
objects), both in the publisher's layout; a ``.safetensors`` file written by cnnkit
(metadata ``format: cnnkit-model``) or a folder saved by ``model.save`` is in cnnkit's own
layout and loads key for key.

``num_classes``: the file's class count by default; another value keeps the backbone and
puts a fresh classifier (the same ``Dense``, newly initialised) in place of the file's.
``in_channels`` other than the file's 3: the first convolution's kernel is adapted as timm
does (summed over the RGB channels for 1 channel; repeated and scaled by ``3 / C`` for C).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit._core.errors import CnnkitError, ConfigError, ShapeError
from cnnkit._core.json_file import read_json

__all__ = ["FAMILIES", "Family", "FeatureExtractor", "load_pretrained", "map_keys", "read_weights"]

Rule = tuple[str, str | Callable[[re.Match], str]]
_BN_STATE = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
MAX_JSON_BYTES = 1 << 20


def _prefix(src: str, dst: str) -> Rule:
    """``src.<rest>`` -> ``dst.<rest>``."""
    return (rf"^{re.escape(src)}\.(.+)$", dst + r".\1")


# ----------------------------------------------------------------- the key mappings

RESNET_RULES: list[Rule] = [
    _prefix("conv1", "features.stem.0"),
    _prefix("bn1", "features.stem.1.bn"),
    (r"^layer(\d)\.(\d+)\.conv(\d)\.(.+)$", r"features.layer\1.\2.conv\3.\4"),
    (r"^layer(\d)\.(\d+)\.bn(\d)\.(.+)$", r"features.layer\1.\2.bn\3.bn.\4"),
    (r"^layer(\d)\.(\d+)\.downsample\.0\.(.+)$", r"features.layer\1.\2.shortcut.0.\3"),
    (r"^layer(\d)\.(\d+)\.downsample\.1\.(.+)$", r"features.layer\1.\2.shortcut.1.bn.\3"),
    _prefix("fc", "head.1"),
]

GOOGLENET_RULES: list[Rule] = [
    (r"^(conv\d)\.conv\.(.+)$", r"features.\1.0.\2"),
    (r"^(conv\d)\.bn\.(.+)$", r"features.\1.1.bn.\2"),
    (r"^(inception\d[a-e])\.branch1\.conv\.(.+)$", r"features.\1.branch1.0.\2"),
    (r"^(inception\d[a-e])\.branch1\.bn\.(.+)$", r"features.\1.branch1.1.bn.\2"),
    (r"^(inception\d[a-e])\.(branch[234])\.(\d)\.conv\.(.+)$", r"features.\1.\2.\3.0.\4"),
    (r"^(inception\d[a-e])\.(branch[234])\.(\d)\.bn\.(.+)$", r"features.\1.\2.\3.1.bn.\4"),
    (r"^(aux[12])\.conv\.conv\.(.+)$", r"\1.conv.0.\2"),
    (r"^(aux[12])\.conv\.bn\.(.+)$", r"\1.conv.1.bn.\2"),
    (r"^(aux[12])\.(fc[12])\.(.+)$", r"\1.\2.\3"),
    _prefix("fc", "head.2"),
]

# torchvision's alexnet: features.{0,3,6,8,10} convolutions, classifier.{1,4,6} dense
ALEXNET_TV_RULES: list[Rule] = [
    *(_prefix(f"features.{i}", f"features.conv{j}.0") for j, i in enumerate((0, 3, 6, 8, 10), 1)),
    _prefix("classifier.1", "head.3"),
    _prefix("classifier.4", "head.5"),
    _prefix("classifier.6", "head.6"),
]


def _x_block(m: re.Match, rest: str) -> str:
    return f"features.block{int(m[1]) + 1}.{rest}"


# timm's legacy_xception: conv1/bn1/conv2/bn2 = Keras block1, timm's blockN = Keras
# block(N+1), conv3/bn3/conv4/bn4 = block14, fc = the head
XCEPTION_RULES: list[Rule] = [
    _prefix("conv1", "features.block1.0"),
    _prefix("bn1", "features.block1.1.bn"),
    _prefix("conv2", "features.block1.3"),
    _prefix("bn2", "features.block1.4.bn"),
    (r"^block(\d+)\.rep\.(\d+)\.conv1\.weight$", lambda m: _x_block(m, f"rep.{m[2]}.depthwise_weight")),
    (r"^block(\d+)\.rep\.(\d+)\.pointwise\.weight$", lambda m: _x_block(m, f"rep.{m[2]}.pointwise_weight")),
    (rf"^block(\d+)\.rep\.(\d+)\.{_BN_STATE}$", lambda m: _x_block(m, f"rep.{m[2]}.bn.{m[3]}")),
    (r"^block(\d+)\.skip\.weight$", lambda m: _x_block(m, "skip.weight")),
    (rf"^block(\d+)\.skipbn\.{_BN_STATE}$", lambda m: _x_block(m, f"skipbn.bn.{m[2]}")),
    (r"^conv3\.conv1\.weight$", "features.block14.0.depthwise_weight"),
    (r"^conv3\.pointwise\.weight$", "features.block14.0.pointwise_weight"),
    _prefix("bn3", "features.block14.1.bn"),
    (r"^conv4\.conv1\.weight$", "features.block14.3.depthwise_weight"),
    (r"^conv4\.pointwise\.weight$", "features.block14.3.pointwise_weight"),
    _prefix("bn4", "features.block14.4.bn"),
    _prefix("fc", "head.1"),
]  # fmt: skip


def vgg_rules(depths: Sequence[int], batch_norm: bool) -> list[Rule]:
    """torchvision's ``features.<i>`` (conv, [bn,] ReLU per convolution, a max pooling per
    block) -> cnnkit's ``features.block<b>.<j>``; ``classifier.{0,3,6}`` -> ``head.{2,4,6}``."""
    rules: list[Rule] = []
    i = 0
    for b, depth in enumerate(depths, start=1):
        for j in range(depth):
            if batch_norm:
                rules.append(_prefix(f"features.{i}", f"features.block{b}.{3 * j}"))
                rules.append(_prefix(f"features.{i + 1}", f"features.block{b}.{3 * j + 1}.bn"))
                i += 3
            else:
                rules.append(_prefix(f"features.{i}", f"features.block{b}.{j}"))
                i += 2
        i += 1  # the block's max pooling
    rules += [_prefix(f"classifier.{a}", f"head.{b}") for a, b in ((0, 2), (3, 4), (6, 6))]
    return rules


@dataclass(frozen=True)
class Family:
    """How one family's published files map onto cnnkit's modules.

    Attributes:
        rules: ``kwargs -> [(regex, replacement), ...]`` (the builder's arguments decide
            e.g. VGG's indices).
        classifiers: cnnkit paths of the ``Dense`` layers that output the classes (the
            first is the main one); replaced when ``num_classes`` differs from the file's.
        first_conv: cnnkit key of the kernel that reads the image.
        optional: cnnkit key prefixes a file may carry that the network may lack
            (GoogLeNet's auxiliary heads); dropped then, never silently otherwise.
    """

    rules: Callable[[dict[str, Any]], list[Rule]]
    classifiers: tuple[str, ...]
    first_conv: str
    optional: tuple[str, ...] = field(default=())


def _const(rules: list[Rule]) -> Callable[[dict[str, Any]], list[Rule]]:
    return lambda kwargs: rules


def _vgg(depths: Sequence[int], batch_norm: bool) -> Family:
    return Family(
        lambda kwargs: vgg_rules(depths, bool(kwargs.get("batch_norm", batch_norm))),
        ("head.6",),
        "features.block1.0.weight",
    )


_RESNET = Family(_const(RESNET_RULES), ("head.1",), "features.stem.0.weight")
_VGG_DEPTHS = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2),
               "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}  # fmt: skip

#: registry name -> the key mapping of its publisher's files
FAMILIES: dict[str, Family] = {
    **{f"resnet{d}": _RESNET for d in (18, 34, 50, 101, 152)},
    **{name: _vgg(depths, False) for name, depths in _VGG_DEPTHS.items()},
    **{f"{name}_bn": _vgg(depths, True) for name, depths in _VGG_DEPTHS.items()},
    "googlenet": Family(
        _const(GOOGLENET_RULES),
        ("head.2", "aux1.fc2", "aux2.fc2"),
        "features.conv1.0.weight",
        optional=("aux1.", "aux2."),
    ),
    "alexnet": Family(_const(ALEXNET_TV_RULES), ("head.6",), "features.conv1.0.weight"),
    "xception": Family(_const(XCEPTION_RULES), ("head.1",), "features.block1.0.weight"),
}


def map_keys(
    state: dict[str, torch.Tensor], rules: Sequence[Rule], sources: dict[str, str] | None = None
) -> tuple[dict, list[str]]:
    """Rename ``state``'s keys with ``rules`` (first match wins); returns the renamed
    dict and the source keys no rule matched. ``sources``, if given, receives
    ``{cnnkit key: source key}``."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    sources = {} if sources is None else sources
    for key, value in state.items():
        for pattern, repl in compiled:
            m = pattern.match(key)
            if m:
                new = repl(m) if callable(repl) else m.expand(repl)
                if new in out:
                    raise CnnkitError(f"weights: {sources[new]!r} and {key!r} both map to {new!r}.")
                out[new], sources[new] = value, key
                break
        else:
            unmatched.append(key)
    return out, unmatched


# ----------------------------------------------------------------- reading files


def _check_tensors(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint's usual wrapping
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CnnkitError(
            f"{path} does not hold a state dict (a mapping of names to tensors); found "
            f"{type(state).__name__}."
        )
    return state


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors of a weights file or saved cnnkit model, and whether they are in
    cnnkit's own layout (a folder written by ``model.save``, or a safetensors file with
    cnnkit's metadata)."""
    path = Path(path)
    if path.is_dir():
        return _read_saved_model(path), True
    if not path.is_file():
        raise CnnkitError(f"weights file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # safetensors raises its own error types
            raise CnnkitError(f"{path} cannot be read as safetensors: {err}") from None
        return state, meta.get("format") == "cnnkit-model"
    if suffix in (".pth", ".pt"):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # an unpickler refusal, a damaged zip, ...
            raise CnnkitError(
                f"{path} cannot be read with torch.load(weights_only=True) (only tensors and "
                f"plain containers are accepted): {err}"
            ) from None
        return _check_tensors(state, path), False
    raise CnnkitError(
        f"weights file {str(path)!r}: expected a .safetensors, .pth or .pt file, or a folder "
        "saved by model.save."
    )


def _read_saved_model(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a folder written by ``cnnkit.Model.save`` (checksum checked)."""
    import hashlib

    from safetensors.torch import load_file

    cfg = folder / "model.json"
    if not cfg.is_file():
        raise CnnkitError(f"{folder} is not a saved cnnkit model (it has no model.json).")
    config = read_json(cfg, MAX_JSON_BYTES, "a saved model's model.json")
    name = config.get("weights") if isinstance(config, dict) else None
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
        raise CnnkitError(f"{cfg} names no .safetensors file in its folder ({name!r}).")
    weights = folder / name
    h = hashlib.sha256()
    try:
        with open(weights, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as err:
        raise CnnkitError(f"{weights}, named in {cfg}, cannot be read: {err}") from None
    if h.hexdigest() != config.get("sha256"):
        raise CnnkitError(f"{weights} differs from the SHA-256 recorded in {cfg}.")
    try:
        return load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types
        raise CnnkitError(f"{weights} cannot be read as safetensors: {err}") from None


# ----------------------------------------------------------------- loading


def _listing(title: str, keys: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
    return f"{title}: {shown}"


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """timm's ``adapt_input_conv``: an RGB kernel for ``in_channels`` inputs (summed for 1,
    repeated and scaled by ``3 / C`` for ``C``)."""
    if weight.shape[1] == in_channels:
        return weight
    if weight.shape[1] != 3:
        raise ShapeError(
            f"cannot adapt a first convolution with {weight.shape[1]} input channels to "
            f"{in_channels}; only RGB kernels are adapted."
        )
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_channels // 3)
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (3.0 / in_channels)


def load_pretrained(
    name: str,
    builder: Callable[..., nn.Module],
    state: dict[str, torch.Tensor],
    cnnkit_layout: bool,
    source: str,
    num_classes: int | None,
    kwargs: dict[str, Any],
) -> nn.Module:
    """Build ``name`` and load ``state`` (see the module docstring); returns the model."""
    family = FAMILIES.get(name)
    sources: dict[str, str] = {}
    if cnnkit_layout:
        mapped, unmatched = dict(state), []
    elif family is None:
        raise ConfigError(
            f"{name}: no key mapping for published files is known (families: "
            f"{', '.join(sorted(FAMILIES))}); pass a folder saved by model.save or a "
            "safetensors file written by cnnkit."
        )
    else:
        mapped, unmatched = map_keys(state, family.rules(kwargs), sources)
    classifiers = family.classifiers if family else _head_classifier(builder, kwargs)
    file_classes = None
    if classifiers and f"{classifiers[0]}.weight" in mapped:
        file_classes = int(mapped[f"{classifiers[0]}.weight"].shape[0])
    build_classes = file_classes if file_classes is not None else num_classes
    if build_classes is not None:
        kwargs = {**kwargs, "num_classes": build_classes}
    with torch.device("meta"):
        model = builder(**kwargs)
    target = model.state_dict()
    if family and "in_channels" in kwargs:
        key = family.first_conv
        if key in mapped and key in target and mapped[key].dim() == 4:
            mapped[key] = adapt_first_conv(mapped[key], int(target[key].shape[1]))
    optional = family.optional if family else ()
    for key in [k for k in mapped if k not in target and k.startswith(optional)]:
        del mapped[key]
    missing = [k for k in target if k not in mapped]
    for key in [k for k in missing if k.endswith("num_batches_tracked")]:
        mapped[key] = torch.zeros((), dtype=torch.long)
    missing = [k for k in target if k not in mapped]
    unexpected = unmatched + [
        f"{sources[k]} (as {k})" if k in sources else k for k in mapped if k not in target
    ]
    wrong = [
        f"{k} {tuple(mapped[k].shape)} (model: {tuple(target[k].shape)})"
        for k in target
        if k in mapped and tuple(mapped[k].shape) != tuple(target[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = [f"{source} does not fit {name}{' (cnnkit layout)' if cnnkit_layout else ''}"]
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if wrong:
            parts.append(_listing("shape mismatches", wrong))
        raise CnnkitError("; ".join(parts) + ". Nothing was loaded.")
    mapped = {k: v.to(target[k].dtype) for k, v in mapped.items()}
    model.load_state_dict(mapped, strict=True, assign=True)
    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise CnnkitError(_listing(f"{name}: tensors not set by {source}", on_meta))
    if num_classes is not None and file_classes is not None and num_classes != file_classes:
        for path in classifiers:
            if _has_submodule(model, path):
                _replace_classifier(model, path, num_classes)
    return model


def _head_classifier(builder: Callable[..., nn.Module], kwargs: dict[str, Any]) -> tuple[str, ...]:
    """For a model without a family entry (cnnkit's own layout): ``head.<i>`` when its
    ``head`` is a sequence ending in a ``Dense`` (every :class:`ImageClassifier` of the
    zoo), found on a ``meta`` build; else none (the class count must then match)."""
    from cnnkit.layers import Dense

    with torch.device("meta"):
        probe = builder(**kwargs)
    head = getattr(probe, "head", None)
    if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], Dense):
        return (f"head.{len(head) - 1}",)
    return ()


def _has_submodule(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def _replace_classifier(model: nn.Module, path: str, num_classes: int) -> None:
    """Put a freshly initialised ``Dense(num_classes)`` in place of the one at ``path``."""
    from cnnkit.layers import Dense

    old = model.get_submodule(path)
    if not isinstance(old, Dense):
        raise ConfigError(f"{path} is a {type(old).__name__}, not a Dense classifier.")
    new = Dense(
        num_classes,
        activation=old.activation,
        use_bias=old.use_bias,
        kernel_initializer=old.kernel_initializer,
        bias_initializer=old.bias_initializer,
        in_features=old.in_features,
    )
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, new)


class FeatureExtractor(nn.Module):
    """A classifier without its top (``include_top=False``): its feature stages, then
    ``pooling`` (``None``: the feature maps ``Tensor[N, C, h, w]``; ``'avg'``/``'max'``:
    global pooling to ``Tensor[N, C]``), as Keras applications' ``include_top=False``.

    Keeps the classifier's module names (``features.<stage>``), ``default_input_shape``,
    ``forward_features`` and ``last_conv``.
    """

    def __init__(self, classifier: nn.Module, pooling: str | None = None) -> None:
        super().__init__()
        from cnnkit.layers import GlobalAveragePooling2D, GlobalMaxPooling2D

        pools = {None: None, "avg": GlobalAveragePooling2D, "max": GlobalMaxPooling2D}
        if pooling not in pools:
            raise ConfigError(f"pooling must be None, 'avg' or 'max'; received {pooling!r}.")
        self.features = classifier.features
        self.pool = pools[pooling]() if pools[pooling] else None
        self.pooling = pooling
        self.default_input_shape = getattr(classifier, "default_input_shape", None)
        self.name = getattr(classifier, "name", type(classifier).__name__)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return x if self.pool is None else self.pool(x)

    @property
    def last_conv(self) -> nn.Module:
        from cnnkit.models.base import last_conv_of

        return last_conv_of(self.features)
