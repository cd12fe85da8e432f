"""Published pretrained weights: where each file comes from, its checksum, how to find it
on this machine, and the preprocessing its network was trained with.

Every entry (:class:`WeightSpec`) names a model of the registry, a tag (``"imagenet"``),
the URL of the file, its sha256 and the layout of its keys (``"torchvision"`` or
``"timm"``, mapped to cnnkit's modules by :mod:`cnnkit.models.pretrained`).

Checksums: torchvision and timm name their files ``<name>-<first hex digits of the
sha256>.pth`` (torch.hub's convention, checked by ``torch.hub.download_url_to_file``).
The full digests could not be obtained here (no network), so each entry records the
digits in the file name and the check compares the file's sha256 against that prefix
(8 hex digits for torchvision's files, 9 for timm's Xception file).

Resolution order of :func:`weights_file`, the first file that exists and passes its
checksum wins:

1. ``$CNNKIT_DATA/weights/<file>`` (``~/.cache/cnnkit/weights`` without the variable);
2. torch's hub cache ``$TORCH_HOME/hub/checkpoints/<file>`` (``~/.cache/torch`` without
   it), where torchvision and timm put the same files;
3. a download into the first folder, checksummed before it is renamed into place
   (:func:`cnnkit.data.download.download_file`), unless ``$CNNKIT_OFFLINE=1``.

Offline with nothing cached, the :class:`CnnkitError` names the model, the URL, the
expected checksum and the folder to put the file in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from cnnkit._core.errors import CnnkitError, ConfigError, did_you_mean
from cnnkit.data.download import RemoteFile, checksum_problem, default_root, download_file

__all__ = [
    "WEIGHTS",
    "Preprocessing",
    "WeightSpec",
    "available_weights",
    "hub_checkpoint_dir",
    "preprocessing",
    "register_weights",
    "weights_dir",
    "weights_file",
]

OFFLINE_VAR = "CNNKIT_OFFLINE"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """The transform a weight set expects: resize the shorter side to ``resize_size``
    (``interpolation``, antialiased), centre-crop ``crop_size``, subtract ``mean`` and
    divide by ``std`` per channel, channels in ``channel_order``.

    Called on a float image ``Tensor[C, H, W]`` or a batch ``Tensor[N, C, H, W]`` with
    values in [0, 1] (what cnnkit's readers return); returns the network's input.
    ``resize_size=None`` / ``crop_size=None`` / ``mean=()`` skip those steps
    (:data:`IDENTITY` skips all three).
    """

    resize_size: int | None = 256
    crop_size: int | None = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    channel_order: str = "RGB"

    @property
    def input_size(self) -> tuple[int, int, int] | None:
        """``(channels, crop, crop)``, the input shape the network saw in training."""
        if self.crop_size is None or not self.mean:
            return None
        return (len(self.mean), self.crop_size, self.crop_size)

    def for_channels(self, channels: int) -> Preprocessing:
        """This transform for ``channels``-channel images: itself, or for 1 channel (RGB
        weights whose first kernel was summed over RGB, ``create(..., in_channels=1)``)
        the mean of the means and of the standard deviations."""
        if not self.mean or channels == len(self.mean):
            return self
        if channels == 1:
            mean, std = sum(self.mean) / len(self.mean), sum(self.std) / len(self.std)
            return replace(self, mean=(mean,), std=(std,), channel_order="L")
        raise ConfigError(
            f"Preprocessing for {len(self.mean)}-channel ({self.channel_order}) images cannot "
            f"serve {channels}-channel images; read them with mode={self.channel_order!r}."
        )

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4):
            raise ConfigError(
                "Preprocessing expects a float image Tensor[C, H, W] or a batch Tensor[N, C, "
                f"H, W] in [0, 1]; received {type(image).__name__}"
                + (f" of shape {tuple(image.shape)}." if isinstance(image, torch.Tensor) else ".")
            )
        channels = image.shape[-3]
        if self.mean and channels != len(self.mean):
            raise ConfigError(
                f"Preprocessing for {len(self.mean)}-channel ({self.channel_order}) images "
                f"received {channels} channels (shape {tuple(image.shape)}); convert the images "
                f"with mode={self.channel_order!r} when reading them."
            )
        x = image.float()
        if self.resize_size is not None:
            mode = InterpolationMode(self.interpolation)
            x = TF.resize(x, [self.resize_size], interpolation=mode, antialias=True)
        if self.crop_size is not None:
            x = TF.center_crop(x, [self.crop_size, self.crop_size])
        return TF.normalize(x, list(self.mean), list(self.std)) if self.mean else x


IMAGENET = Preprocessing()
IDENTITY = Preprocessing(None, None, (), ())


@dataclass(frozen=True)
class WeightSpec:
    """One published weight file.

    Attributes:
        model: registry name (``"resnet50"``).
        tag: the ``weights=`` value that selects it (``"imagenet"``).
        url: where the file is published.
        sha256: its full sha256, or ``""`` when only ``sha256_prefix`` is known.
        sha256_prefix: the leading hex digits of the sha256 carried by the file name.
        layout: key layout of the file (``"torchvision"``, ``"timm"``).
        preprocessing: what the network was trained on.
        kwargs: builder arguments the weights need (``{"variant": "torchvision"}``).
        top1: the publisher's ImageNet top-1 accuracy (%), for reference.
    """

    model: str
    tag: str
    url: str
    sha256: str = ""
    sha256_prefix: str = ""
    layout: str = "torchvision"
    preprocessing: Preprocessing = IMAGENET
    kwargs: dict[str, Any] = field(default_factory=dict)
    top1: float | None = None

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def remote(self) -> RemoteFile:
        return RemoteFile(
            self.file_name,
            (self.url,),
            sha256=self.sha256 or None,
            sha256_prefix=self.sha256_prefix or None,
        )


_TV = "https://download.pytorch.org/models/"
_TIMM = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-cadene/"

WEIGHTS: dict[tuple[str, str], WeightSpec] = {}


def register_weights(spec: WeightSpec, overwrite: bool = False) -> WeightSpec:
    """Add a weight set (e.g. a file of your own on a local server); duplicates are refused
    unless ``overwrite``."""
    key = (spec.model, spec.tag)
    if key in WEIGHTS and not overwrite:
        raise ConfigError(f"weights {spec.tag!r} for {spec.model!r} are already registered.")
    if not (spec.sha256 or spec.sha256_prefix):
        raise ConfigError(
            f"weights {spec.tag!r} for {spec.model!r}: give sha256 (or sha256_prefix); "
            "a file is never used without a checksum."
        )
    WEIGHTS[key] = spec
    return spec


def _tv(model: str, file: str, top1: float, tag: str = "imagenet", **extra: Any) -> None:
    prefix = file.rsplit("-", 1)[-1].removesuffix(".pth")
    register_weights(WeightSpec(model, tag, _TV + file, sha256_prefix=prefix, top1=top1, **extra))


# torchvision's IMAGENET1K_V1 files (URL, acc@1 from torchvision's weight metadata)
_tv("resnet18", "resnet18-f37072fd.pth", 69.758)
_tv("resnet34", "resnet34-b627a593.pth", 73.314)
_tv("resnet50", "resnet50-0676ba61.pth", 76.130)
_tv("resnet101", "resnet101-63fe2227.pth", 77.374)
_tv("resnet152", "resnet152-394f9c45.pth", 78.312)
# IMAGENET1K_V2 (a longer training recipe; resize 232)
_V2 = Preprocessing(resize_size=232)
_tv("resnet50", "resnet50-11ad3fa6.pth", 80.858, "imagenet-v2", preprocessing=_V2)
_tv("resnet101", "resnet101-cd907fc2.pth", 81.886, "imagenet-v2", preprocessing=_V2)
_tv("resnet152", "resnet152-f82ba261.pth", 82.284, "imagenet-v2", preprocessing=_V2)
_tv("vgg11", "vgg11-8a719046.pth", 69.020)
_tv("vgg13", "vgg13-19584684.pth", 69.928)
_tv("vgg16", "vgg16-397923af.pth", 71.592)
_tv("vgg19", "vgg19-dcbb9e9d.pth", 72.376)
_tv("vgg11_bn", "vgg11_bn-6002323d.pth", 70.370)
_tv("vgg13_bn", "vgg13_bn-abd245e5.pth", 71.586)
_tv("vgg16_bn", "vgg16_bn-6c64b313.pth", 73.360)
_tv("vgg19_bn", "vgg19_bn-c79401a0.pth", 74.218)
# torchvision's GoogLeNet weights come from Google's TensorFlow model, which expects
# (x - 0.5) / 0.5; torchvision's builder adds ``transform_input`` to turn ImageNet-normalised
# input into that. Here the preprocessing normalises that way directly (same numbers).
_tv("googlenet", "googlenet-1378be20.pth", 69.778,
    preprocessing=Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))  # fmt: skip
_tv("alexnet", "alexnet-owt-7be5be79.pth", 56.522, kwargs={"variant": "torchvision"})
# timm's legacy_xception.tf_in1k: the Keras ImageNet weights ported by Cadene, timm's keys.
# (timm also publishes them as model.safetensors on the Hugging Face hub under
# timm/legacy_xception.tf_in1k; its digest is not known here, so the GitHub file is used.)
register_weights(
    WeightSpec(
        "xception",
        "imagenet",
        _TIMM + "xception-43020ad28.pth",
        sha256_prefix="43020ad28",
        layout="timm",
        preprocessing=Preprocessing(
            resize_size=333, crop_size=299, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic"
        ),
        top1=78.892,
    )
)


def available_weights(model: str | None = None) -> list[tuple[str, str]]:
    """``(model, tag)`` pairs of the registered weight sets (of ``model`` only, if given)."""
    return sorted(k for k in WEIGHTS if model is None or k[0] == model)


def get_spec(model: str, tag: str) -> WeightSpec:
    """The :class:`WeightSpec` of ``model``'s ``tag`` weights; a clear error otherwise."""
    spec = WEIGHTS.get((model, tag))
    if spec is None:
        tags = [t for m, t in WEIGHTS if m == model]
        models = sorted({m for m, _ in WEIGHTS})
        if tags:
            raise ConfigError(
                f"{model}: no weights {tag!r}; known: {', '.join(tags)} (or a file path)."
                + did_you_mean(tag, tags)
            )
        raise ConfigError(
            f"{model}: no published weights are registered (weights={tag!r}); models with "
            f"weights: {', '.join(models)}. Pass weights=PATH for a file of your own."
        )
    return spec


def weights_dir() -> Path:
    """``$CNNKIT_DATA/weights`` (``~/.cache/cnnkit/weights``): where downloads go."""
    return default_root() / "weights"


def hub_checkpoint_dir() -> Path:
    """torch's hub cache, ``$TORCH_HOME/hub/checkpoints`` (torch.hub.get_dir())."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_file(model: str, tag: str, *, download: bool | None = None) -> Path:
    """The checked local file of ``model``'s ``tag`` weights (see the module docstring for
    the search order). ``download=None`` downloads unless ``$CNNKIT_OFFLINE=1``."""
    spec = get_spec(model, tag)
    remote = spec.remote()
    if download is None:
        download = os.environ.get(OFFLINE_VAR, "") not in ("1", "true", "yes")
    folders: Sequence[Path] = (weights_dir(), hub_checkpoint_dir())
    notes = []
    for folder in folders:
        path = folder / remote.name
        if path.is_file():
            problem = checksum_problem(path, remote)
            if problem is None:
                return path
            notes.append(f"{path} {problem}: not used")
        else:
            notes.append(f"not in {folder}")
    if download:
        try:
            return download_file(remote, folders[0])
        except CnnkitError as err:
            notes.append(f"download failed: {err}")
    else:
        notes.append(f"not downloaded (${OFFLINE_VAR}=1)")
    raise CnnkitError(
        f"{model}: the {tag!r} weights are not available. Needed: {remote.name}, "
        f"{remote.checksum_text()}, from {spec.url}. Put the file into {folders[0]} (or "
        f"{folders[1]}) and try again, or pass weights=PATH. Searched: " + "; ".join(notes) + "."
    )


def preprocessing(name: str, weights: str | os.PathLike | None = "imagenet") -> Preprocessing:
    """The transform that ``create(name, weights=weights)`` expects its input in.

    A tag gives that weight set's preprocessing; a path to a ``.pth``/``.safetensors``
    file in torchvision's (timm's) layout the family's ``"imagenet"`` preprocessing (such
    files are assumed to be trained like the published ones); ``None`` or a cnnkit saved
    model (a folder) no resizing and no normalisation (the model sees what it saw when it
    was saved: apply your own transform).
    """
    if weights is None:
        return IDENTITY
    if isinstance(weights, str) and (name, weights) in WEIGHTS:
        return WEIGHTS[(name, weights)].preprocessing
    path = Path(weights)
    if path.is_dir() or path.suffix not in (".pth", ".pt", ".safetensors"):
        if not path.exists():
            get_spec(name, str(weights))  # raises: an unknown tag
        return IDENTITY
    if (name, "imagenet") in WEIGHTS:
        return WEIGHTS[(name, "imagenet")].preprocessing
    return IMAGENET
