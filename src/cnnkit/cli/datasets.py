"""The datasets a recipe can name, as in-memory train/test tensors.

Each loader takes the recipe's ``dataset.args``, the ``--data-dir`` (or ``None`` for
``$CNNKIT_DATA``) and returns a :class:`TaskData`. ``limit`` keeps the first N samples
of each split (for quick checks and tests).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit._core.errors import CnnkitError, ConfigError, did_you_mean


@dataclass
class TaskData:
    """Train and test splits; ``y`` is a tensor, a tuple of tensors or a list of dicts."""

    x_train: torch.Tensor
    y_train: Any
    x_test: torch.Tensor
    y_test: Any
    classes: list[str] | None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)


def _root(data_dir: str | None, sub: str) -> Path | None:
    """``data_dir/sub`` when it exists, else ``data_dir`` (``None``: the library default)."""
    if data_dir is None:
        return None
    base = Path(data_dir).expanduser()
    return base / sub if (base / sub).exists() else base


def _split_tensor(x: torch.Tensor, y: Any, test_fraction: float, seed: int):
    n = len(x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(n * test_fraction)))
    te, tr = order[:n_test].sort().values, order[n_test:].sort().values

    def take(v, idx):
        if isinstance(v, tuple):
            return tuple(t[idx] for t in v)
        if isinstance(v, list):
            return [v[i] for i in idx.tolist()]
        return v[idx]

    return take(x, tr), take(y, tr), take(x, te), take(y, te)


def _resize(x: torch.Tensor, size: int | None, mode: str = "bilinear") -> torch.Tensor:
    if size is None or x.shape[-1] == size:
        return x
    if mode == "nearest":
        return F.interpolate(x.float(), size=(size, size), mode="nearest").to(x.dtype)
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False).clamp_(0, 1)


def _pad_to(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Zero-pad 28x28 digits to 32x32, as LeNet-5's paper does (centred)."""
    if size is None or x.shape[-1] >= size:
        return x
    extra = size - x.shape[-1]
    lo = extra // 2
    return F.pad(x, (lo, extra - lo, lo, extra - lo))


# ------------------------------------------------------------------------ loaders


def _digits(data_dir, size: int | None = 32, test_size: float = 0.25, seed: int = 0):
    from cnnkit.data import digits

    tr = digits(size, "train", test_size=test_size, seed=seed)
    te = digits(size, "test", test_size=test_size, seed=seed)
    return TaskData(*tr.tensors(), *te.tensors(), tr.classes)


def _idx(reader: Callable, sub: str, data_dir, pad_to: int | None = None, download=False):
    root = _root(data_dir, sub)
    tr = reader(root, "train", download=download)
    te = reader(root, "test", download=download)
    (xtr, ytr), (xte, yte) = tr.tensors(), te.tensors()
    return TaskData(_pad_to(xtr, pad_to), ytr, _pad_to(xte, pad_to), yte, tr.classes)


def _mnist(data_dir, pad_to: int | None = None, download: bool = False):
    from cnnkit.data import mnist

    return _idx(mnist, "mnist", data_dir, pad_to, download)


def _fashion_mnist(data_dir, pad_to: int | None = None, download: bool = False):
    from cnnkit.data import fashion_mnist

    return _idx(fashion_mnist, "fashion_mnist", data_dir, pad_to, download)


def _cifar10(data_dir, download: bool = False):
    from cnnkit.data import cifar10

    root = _root(data_dir, "cifar10")
    tr, te = cifar10(root, "train", download=download), cifar10(root, "test", download=download)
    return TaskData(*tr.tensors(), *te.tensors(), tr.classes)


def _mnist1d(data_dir, num_samples: int = 5000, seed: int = 42):
    from cnnkit.data import mnist1d

    tr = mnist1d("train", num_samples=num_samples, seed=seed, root=data_dir)
    te = mnist1d("test", num_samples=num_samples, seed=seed, root=data_dir)
    return TaskData(*tr.tensors(), *te.tensors(), tr.classes)


def _ucr(data_dir, name: str = "GunPoint", znorm: bool = True):
    from cnnkit.data import ucr

    root = _root(data_dir, "ucr")
    tr, te = ucr(root, name, "train", znorm), ucr(root, name, "test", znorm)
    return TaskData(*tr.tensors(), *te.tensors(), tr.classes)


def _isbi2012(data_dir, size: int | None = 128, test_fraction: float = 0.2, seed: int = 0):
    from cnnkit.data import isbi2012

    ds = isbi2012(_root(data_dir, "isbi2012"), "train")
    x, y = ds.tensors()
    x = _resize(x, size)
    y = _resize(y[:, None].float(), size, "nearest")  # (N, 1, H, W) 0/1 floats for BCE
    return TaskData(*_split_tensor(x, y, test_fraction, seed), ds.classes)


def _shapes(
    data_dir, n: int = 600, size: int = 64, task: str = "segmentation", test_fraction=0.2, seed=0
):
    from cnnkit.data.synthetic import SHAPE_NAMES, shapes

    x, y = shapes(n, size=size, task=task, seed=seed)
    names = list(SHAPE_NAMES) if task == "classification" else ["background", *SHAPE_NAMES]
    return TaskData(*_split_tensor(x, y, test_fraction, seed), names)


def _localization_mnist(
    data_dir, n: int = 3000, canvas: int = 56, digit_size: int = 28, test_fraction=0.2, seed=0
):
    from cnnkit.data.synthetic import localization_mnist

    x, labels, boxes = localization_mnist(n, canvas=canvas, digit_size=digit_size, seed=seed)
    y = (labels, boxes / canvas)  # the sigmoid box head predicts normalised corners
    return TaskData(*_split_tensor(x, y, test_fraction, seed), [str(d) for d in range(10)])


def _moving_mnist(
    data_dir, n: int = 800, frames: int = 8, size: int = 32, digit_size: int = 14, seed: int = 0,
    test_fraction: float = 0.2,
):  # fmt: skip
    from cnnkit.data.synthetic import moving_mnist

    x, y = moving_mnist(
        n, frames=frames, size=size, num_digits=1, digit_size=digit_size,
        label="direction", seed=seed,
    )  # fmt: skip
    return TaskData(*_split_tensor(x, y, test_fraction, seed), ["right", "down", "left", "up"])


AG_NEWS_CLASSES = ["World", "Sports", "Business", "Sci/Tech"]


def _ag_news(data_dir, max_length: int = 1014, classes: list[str] | None = None):
    from cnnkit.data import text_csv

    base = Path(data_dir).expanduser() if data_dir else None
    if base is None:
        from cnnkit.data import default_root

        base = default_root()
    candidates = [base / "ag_news", base / "ag_news_csv", base]
    folder = next((c for c in candidates if (c / "train.csv").is_file()), None)
    if folder is None:
        raise CnnkitError(
            f"AG News: no train.csv/test.csv in {', '.join(str(c) for c in candidates)}. Get "
            "ag_news_csv (Zhang et al. 2015, e.g. from the fastai or Hugging Face mirrors) and "
            "pass --data-dir to the folder holding ag_news/train.csv and ag_news/test.csv."
        )
    names = classes or AG_NEWS_CLASSES
    tr = text_csv(folder / "train.csv", max_length=max_length, classes=names)
    te = text_csv(folder / "test.csv", max_length=max_length, classes=names)
    return TaskData(*tr.tensors(), *te.tensors(), list(tr.classes))


def _shapes_instances(data_dir, n: int = 200, size: int = 64, test_fraction=0.2, seed: int = 0):
    return _shapes(data_dir, n, size, "instance", test_fraction, seed)


def _folder(
    data_dir,
    path: str | None = None,
    size: int | None = None,
    mode: str = "RGB",
    test_fraction: float = 0.2,
    seed: int = 0,
):
    """Your own images, ``<path>/<class name>/<image>`` (torchvision's ImageFolder layout;
    ``path`` defaults to ``--data-dir``), resized to ``size`` x ``size`` when given (the
    images must share one size otherwise), split at random into train and test."""
    from cnnkit.data import image_folder

    root = path if path is not None else data_dir
    if root is None:
        raise ConfigError(
            "dataset 'folder' needs the image folder: dataset.args.path or --data-dir "
            "(laid out as <folder>/<class name>/<image>)."
        )
    ds = image_folder(Path(root).expanduser(), mode=mode)
    images = []
    for i in range(len(ds)):
        x, _ = ds[i]
        images.append(_resize(x[None], size)[0] if size else x)
    shapes = sorted({tuple(x.shape) for x in images})
    if len(shapes) > 1:
        raise CnnkitError(
            f"dataset 'folder': the images in {root} have different sizes ({shapes[:4]}...); "
            "set dataset.args.size to resize them to one square size."
        )
    y = torch.tensor(ds.targets, dtype=torch.long)
    return TaskData(*_split_tensor(torch.stack(images), y, test_fraction, seed), list(ds.classes))


LOADERS: dict[str, Callable[..., TaskData]] = {
    "folder": _folder,
    "digits": _digits,
    "mnist": _mnist,
    "fashion_mnist": _fashion_mnist,
    "cifar10": _cifar10,
    "mnist1d": _mnist1d,
    "ucr": _ucr,
    "isbi2012": _isbi2012,
    "shapes": _shapes,
    "shapes_instances": _shapes_instances,
    "localization_mnist": _localization_mnist,
    "moving_mnist": _moving_mnist,
    "ag_news": _ag_news,
}

#: UCR archive names accepted by ``--dataset`` on a UCR recipe (any folder name works too)
UCR_EXAMPLES = ("GunPoint", "ECG200", "Coffee")


def _limit(v: Any, n: int) -> Any:
    if isinstance(v, tuple):
        return tuple(t[:n] for t in v)
    return v[:n]


def load_data(
    name: str, args: dict[str, Any], data_dir: str | None, limit: int | None = None
) -> TaskData:
    """Run the loader ``name`` with ``args``; errors name the loader's arguments."""
    if name not in LOADERS:
        raise ConfigError(
            f"unknown dataset {name!r}; expected one of {', '.join(LOADERS)}."
            + did_you_mean(name, LOADERS)
        )
    fn = LOADERS[name]
    accepted = [p for p in inspect.signature(fn).parameters if p != "data_dir"]
    for key in args:
        if key not in accepted:
            raise ConfigError(
                f"dataset {name!r} has no argument {key!r}; it accepts "
                f"{', '.join(accepted) or 'none'}.{did_you_mean(key, accepted)}"
            )
    try:
        data = fn(data_dir, **args)
    except CnnkitError as err:
        if name not in ("mnist", "fashion_mnist", "cifar10"):
            raise
        raise CnnkitError(
            f"{err}\nFrom the command line: cnnkit data download {name}"
            + (f" --data-dir {data_dir}" if data_dir else "")
        ) from None
    if limit is not None:
        data.x_train, data.y_train = data.x_train[:limit], _limit(data.y_train, limit)
        data.x_test, data.y_test = data.x_test[:limit], _limit(data.y_test, limit)
    return data


def apply_dataset_override(config: dict[str, Any], dataset: str) -> None:
    """``--dataset``: another loader (``mnist`` for the CIFAR recipes), or a UCR name."""
    current = config["dataset"]["name"]
    if dataset in LOADERS:
        if dataset != current:
            config["dataset"] = {"name": dataset, "args": {}}
        return
    if current == "ucr":
        config["dataset"]["args"]["name"] = dataset
        return
    raise ConfigError(
        f"unknown --dataset {dataset!r}; expected one of {', '.join(LOADERS)}"
        + (f" or a UCR name such as {', '.join(UCR_EXAMPLES)}" if current == "ucr" else "")
        + "."
        + did_you_mean(dataset, [*LOADERS, *UCR_EXAMPLES])
    )
