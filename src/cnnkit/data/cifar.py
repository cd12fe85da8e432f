"""CIFAR-10 and CIFAR-100 from the python-version tarball or its extracted batches.

A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", tech. report,
University of Toronto, 2009. 50,000 training and 10,000 test 32x32 RGB images; CIFAR-10
has 10 classes, CIFAR-100 100 fine classes grouped in 20 coarse ones.

Each batch is a pickled dict (``data``: uint8 ``(n, 3072)`` rows of 1024 red, 1024
green, 1024 blue values, row-major; ``labels`` or ``fine_labels``/``coarse_labels``).
They are read with :class:`~cnnkit.data.safe_pickle.RestrictedUnpickler`, which builds
only plain arrays, lists, dicts, strings and numbers, so a tampered file cannot run code.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cnnkit._core.errors import CnnkitError, check_choice
from cnnkit.data.base import ArrayDataset, JointTransform
from cnnkit.data.download import (
    RemoteFile,
    checksum_problem,
    dataset_folder,
    ensure_files,
    extract_archive,
)
from cnnkit.data.safe_pickle import restricted_loads

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

_SPECS = {
    "cifar10": {
        "title": "CIFAR-10",
        "archive": RemoteFile(
            "cifar-10-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            md5="c58f30108f718f92721af3b95e74349a",
        ),
        "folder": "cifar-10-batches-py",
        "train": {
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        },
        "test": {"test_batch": "40351d587109b95175f43aff81a1287e"},
        "meta": ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
    },
    "cifar100": {
        "title": "CIFAR-100",
        "archive": RemoteFile(
            "cifar-100-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
            md5="eb9058c3a382ffc7106e4002c42a8d85",
        ),
        "folder": "cifar-100-python",
        "train": {"train": "16019d7e3df5f24257cddd939b257f8d"},
        "test": {"test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
        "meta": ("meta", "7973b15100ade9c7d40fb424638fde48"),
    },
}


def _as_str_keys(obj, source: str) -> dict:
    if not isinstance(obj, dict):
        raise CnnkitError(f"{source}: expected a pickled dict, found {type(obj).__name__}.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _names(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _parse_batch(data: bytes, source: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _as_str_keys(restricted_loads(data, source=source), source)
    if "data" not in batch or label_key not in batch:
        raise CnnkitError(
            f"{source}: a CIFAR batch needs the keys 'data' and {label_key!r}; found "
            f"{sorted(batch)}."
        )
    x = _pixels(batch["data"], source)
    y = _labels(batch[label_key], len(x), source, label_key)
    return x, y


def _pixels(data, source: str) -> np.ndarray:
    """``data`` as uint8 ``(N, 3072)``: a uint8 array of that shape, or ``N * 3072`` bytes;
    checked before anything is converted (a nested list is never walked)."""
    row = 3 * 32 * 32
    if isinstance(data, (bytes, bytearray)):
        if len(data) % row:
            raise CnnkitError(
                f"{source}: 'data' holds {len(data)} bytes, not a whole number of 3072-byte "
                "images (3x32x32)."
            )
        return np.frombuffer(bytes(data), np.uint8).reshape(-1, row)
    if not isinstance(data, np.ndarray):
        raise CnnkitError(
            f"{source}: 'data' must be a uint8 array (N, 3072) or N x 3072 bytes; found a "
            f"{type(data).__name__}."
        )
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        raise CnnkitError(
            f"{source}: 'data' must be uint8 rows of 3072 values (3x32x32), found {data.dtype} "
            f"{data.shape}."
        )
    return data


def _labels(labels, n: int, source: str, key: str) -> np.ndarray:
    """``labels`` (a list of ints or an integer array) as int64 ``(n,)``."""
    if isinstance(labels, np.ndarray):
        if labels.shape != (n,) or labels.dtype.kind not in "iu":
            raise CnnkitError(
                f"{source}: {n} images but {labels.shape} {labels.dtype} labels in {key!r}."
            )
        return labels.astype(np.int64)
    if not isinstance(labels, (list, tuple)) or len(labels) != n:
        size = f" of {len(labels)}" if isinstance(labels, (list, tuple)) else ""
        raise CnnkitError(
            f"{source}: {n} images but {key!r} is a {type(labels).__name__}{size}; expected "
            f"{n} integer labels."
        )
    bad = next(
        (v for v in labels if isinstance(v, bool) or not isinstance(v, int | np.integer)), None
    )
    if bad is not None:
        raise CnnkitError(
            f"{source}: {key!r} holds a {type(bad).__name__}; expected integer labels."
        )
    try:
        return np.asarray(labels, dtype=np.int64)
    except OverflowError:
        raise CnnkitError(f"{source}: {key!r} holds a label too large for int64.") from None


class _Source:
    """Reads named members either from a folder of batches or from the tarball."""

    def __init__(self, spec: dict, folder: Path, verify: bool, download: bool):
        self.spec, self.verify = spec, verify
        candidates = [folder / spec["folder"], folder]
        first = next(iter(spec["train"]))
        self.batches = next((c for c in candidates if (c / first).is_file()), None)
        self.tar = None
        self._cache: dict[str, bytes] | None = None
        if self.batches is None:
            archive = spec["archive"]
            try:
                path = ensure_files(
                    [archive], folder, dataset=spec["title"], download=download, verify=verify
                )[archive.name]
            except CnnkitError as err:
                raise CnnkitError(
                    f"{err}\nThe extracted batches ({', '.join([*spec['train'], *spec['test']])}) "
                    f"in {folder / spec['folder']} work as well."
                ) from None
            if download:
                extract_archive(path, folder)
                self.batches = folder / spec["folder"]
            else:
                self.tar = path

    def read(self, name: str, md5: str | None) -> tuple[bytes, str]:
        if self.batches is not None:
            path = self.batches / name
            if not path.is_file():
                raise CnnkitError(
                    f"{path} is missing (the other batches are in {self.batches}); extract "
                    f"{self.spec['archive'].name} again or download it (download=True)."
                )
            if self.verify and md5:
                problem = checksum_problem(path, RemoteFile(name, (), md5=md5))
                if problem:
                    raise CnnkitError(
                        f"{path} {problem}; it is not the published {self.spec['title']} batch. "
                        "Delete it and extract the archive again, or pass verify=False for a "
                        "file you wrote yourself."
                    )
            return path.read_bytes(), str(path)
        member = f"{self.spec['folder']}/{name}"
        if member not in self._members():
            raise CnnkitError(f"{self.tar} has no member {member!r}.")
        return self._members()[member], f"{self.tar}:{member}"

    def _members(self) -> dict[str, bytes]:
        """Every batch and meta member of the tarball, read in one pass."""
        if self._cache is None:
            wanted = {
                f"{self.spec['folder']}/{n}"
                for n in [*self.spec["train"], *self.spec["test"], self.spec["meta"][0]]
            }
            self._cache = {}
            try:
                with tarfile.open(self.tar) as tar:
                    for info in tar:
                        if info.name in wanted and info.isfile():
                            self._cache[info.name] = tar.extractfile(info).read()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
                raise CnnkitError(f"{self.tar}: truncated or corrupt archive ({err}).") from err
        return self._cache

    def exists(self, name: str) -> bool:
        if self.batches is not None:
            return (self.batches / name).is_file()
        return f"{self.spec['folder']}/{name}" in self._members()


def _cifar(
    key: str,
    root,
    split: str,
    download: bool,
    verify: bool,
    transform,
    label_key: str,
    class_key: str,
    default_classes: Sequence[str] | None,
) -> ArrayDataset:
    spec = _SPECS[key]
    split = check_choice(f"{spec['title']} split", split, ("train", "test"))
    markers = [spec["folder"], spec["archive"].name, next(iter(spec["train"]))]
    folder = dataset_folder(root, key, markers)
    source = _Source(spec, folder, verify, download)
    xs, ys = [], []
    for name, md5 in spec[split].items():
        data, where = source.read(name, md5)
        x, y = _parse_batch(data, where, label_key)
        xs.append(x)
        ys.append(y)
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    meta_name, meta_md5 = spec["meta"]
    classes = list(default_classes) if default_classes is not None else None
    if source.exists(meta_name):
        data, where = source.read(meta_name, meta_md5)
        meta = _as_str_keys(restricted_loads(data, source=where), where)
        if class_key in meta:
            classes = _names(meta[class_key])
    if classes is None:
        classes = [str(i) for i in range(int(y.max()) + 1)]
    if y.size and (y.min() < 0 or y.max() >= len(classes)):
        raise CnnkitError(
            f"{spec['title']} {split}: label {int(y.max() if y.max() >= len(classes) else y.min())}"
            f" is outside 0..{len(classes) - 1}."
        )
    images = torch.from_numpy(x).view(-1, 3, 32, 32)
    return ArrayDataset(
        images,
        torch.from_numpy(y),
        scale=1 / 255,
        classes=classes,
        transform=transform,
        name=f"{key}/{split}",
    )


def cifar10(
    root: str | os.PathLike | None = None,
    split: str = "train",
    download: bool = False,
    *,
    verify: bool = True,
    transform: JointTransform | None = None,
) -> ArrayDataset:
    """CIFAR-10 (Krizhevsky 2009): 32x32 RGB images in 10 classes.

    Args:
        root: folder holding ``cifar-10-batches-py/`` (or the batches themselves) or
            ``cifar-10-python.tar.gz``; or a folder with a ``cifar10/`` sub-folder holding
            them. Default ``$CNNKIT_DATA/cifar10`` or ``~/.cache/cnnkit/cifar10``.
        split: ``'train'`` (50,000 images) or ``'test'`` (10,000).
        download: fetch the tarball (md5-checked) and extract it into the folder.
        verify: check the tarball and each batch against the published md5 (pass
            ``False`` for files in the same format that you wrote yourself).
        transform: joint transform ``t(image, label) -> (image, label)`` per item.

    Returns:
        :class:`ArrayDataset` with ``x`` = ``Tensor[N, 3, 32, 32]`` uint8, ``y`` =
        ``Tensor[N]`` int64; items and ``tensors()`` give float32 images in [0, 1].
    """
    return _cifar(
        "cifar10", root, split, download, verify, transform,
        "labels", "label_names", CIFAR10_CLASSES,
    )  # fmt: skip


def cifar100(
    root: str | os.PathLike | None = None,
    split: str = "train",
    download: bool = False,
    *,
    label_mode: str = "fine",
    verify: bool = True,
    transform: JointTransform | None = None,
) -> ArrayDataset:
    """CIFAR-100 (Krizhevsky 2009): 32x32 RGB images, 100 fine or 20 coarse classes.

    As :func:`cifar10` (files ``cifar-100-python/{train,test,meta}`` or
    ``cifar-100-python.tar.gz``, default folder ``cifar100``), with ``label_mode``
    ``'fine'`` (100 classes) or ``'coarse'`` (20 superclasses).
    """
    label_mode = check_choice("CIFAR-100 label_mode", label_mode, ("fine", "coarse"))
    return _cifar(
        "cifar100", root, split, download, verify, transform,
        f"{label_mode}_labels", f"{label_mode}_label_names", None,
    )  # fmt: skip
