"""Character quantisation of text for character-level CNNs (Zhang, Zhao, LeCun 2015).

X. Zhang, J. Zhao, Y. LeCun, "Character-level Convolutional Networks for Text
Classification", NeurIPS 2015, section 2.2: "The alphabet used in all of our models
consists of 70 characters, including 26 english letters, 10 digits, 33 other characters
and the new line character". The paper's printed list of the 33 others contains ``-``
twice (as does ``config.lua`` of the authors' Crepe code), so the 70 positions hold 69
distinct characters; as in Crepe, a repeated character sets its last position and the
first ``-`` row stays zero. Each text becomes a ``70 x l0`` one-hot matrix with
``l0 = 1014``; text is lower-cased; characters outside the alphabet (including space)
and the padding after a short text are all-zero columns.

"The character quantization order is backward so that the latest reading on characters
is always placed near the begin of the output": with ``backward=True`` (default) column
``j`` holds character ``len - 1 - j``, and of a longer text the *last* ``max_length``
characters are kept (Crepe's ``stringToTensor``); with ``backward=False`` column ``j``
holds character ``j`` and the text is cut after ``max_length``.

CSV layout (AG News, DBPedia, Yelp, ... as released with the paper): no header,
``"class","title","description"`` with 1-based class indices; the text fields are joined
by a space after turning the literal two characters ``\\n`` into a newline (as Crepe's
``csv2t7b.lua`` does; Crepe also joins the fields in reverse order, which is not done
here).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnkit._core.errors import CnnkitError, ConfigError

ZHANG_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+-=<>()[]{}\n"


def alphabet_index(alphabet: str) -> dict[str, int]:
    """Character -> row; a repeated character maps to its last position (as in Crepe)."""
    return {ch: i for i, ch in enumerate(alphabet)}


def encode_text(text: str, index: dict[str, int], max_length: int, backward: bool) -> np.ndarray:
    """``text`` -> int16 row indices ``(min(len, max_length),)``, -1 for unknown characters."""
    text = text.lower()
    text = text[::-1][:max_length] if backward else text[:max_length]
    return np.fromiter((index.get(ch, -1) for ch in text), dtype=np.int16, count=len(text))


def one_hot(codes: np.ndarray | torch.Tensor, rows: int, max_length: int) -> torch.Tensor:
    """Row indices (-1 = none) -> ``Tensor[rows, max_length]`` float32 one-hot columns."""
    codes = torch.as_tensor(np.asarray(codes), dtype=torch.long)
    out = torch.zeros(rows, max_length)
    keep = codes >= 0
    cols = torch.nonzero(keep).squeeze(1)
    out[codes[keep], cols] = 1.0
    return out


class CharTextDataset(Dataset):
    """Texts stored as compact row indices; the one-hot ``Tensor[A, L]`` is built per item.

    ``ds[i]`` is ``(Tensor[len(alphabet), max_length] float32, label int64)``;
    :meth:`codes` gives the row indices (int16, -1 = no character) of one text.
    """

    def __init__(self, codes, offsets, labels, alphabet, max_length, classes, name):
        self._codes = codes
        self._offsets = offsets
        self.y = torch.from_numpy(labels)
        self.alphabet = alphabet
        self.max_length = max_length
        self.classes = classes
        self.name = name

    def __len__(self) -> int:
        return len(self.y)

    def codes(self, index: int) -> np.ndarray:
        return self._codes[self._offsets[index] : self._offsets[index + 1]]

    def __getitem__(self, index: int):
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} texts")
        x = one_hot(self.codes(index), len(self.alphabet), self.max_length)
        return x, self.y[index]

    def tensors(self, max_bytes: int = 1 << 30) -> tuple[torch.Tensor, torch.Tensor]:
        """All one-hot inputs at once, refused when they would exceed ``max_bytes``."""
        need = len(self) * len(self.alphabet) * self.max_length * 4
        if need > max_bytes:
            raise CnnkitError(
                f"{self.name}: {len(self)} one-hot texts need {need / 2**30:.1f} GiB (over "
                f"max_bytes={max_bytes}); iterate the dataset with a DataLoader instead."
            )
        return torch.stack([self[i][0] for i in range(len(self))]), self.y.clone()


def text_csv(
    path: str | os.PathLike,
    alphabet: str = ZHANG_ALPHABET,
    max_length: int = 1014,
    *,
    backward: bool = True,
    classes: Sequence[str] | None = None,
    encoding: str = "utf-8",
) -> CharTextDataset:
    """A Zhang et al. (2015) CSV (``class, field, ...``) as one-hot character matrices.

    Args:
        path: CSV file without header: a 1-based class index, then one or more text
            fields (AG News: class, title, description).
        alphabet: one character per one-hot row (default: the paper's 70).
        max_length: columns per text (the paper's ``l0 = 1014``).
        backward: quantise from the last character to the first (the paper's order).
        classes: class names, ``classes[k]`` for label ``k`` (AG News: World, Sports,
            Business, Sci/Tech).
        encoding: text encoding of the file (undecodable bytes become unknown characters).

    Returns:
        :class:`CharTextDataset`: items ``(Tensor[len(alphabet), max_length], label)`` with
        labels ``class - 1`` in ``0..K-1``, one-hot built lazily per item.
    """
    if not alphabet:
        raise ConfigError("alphabet must hold at least one character.")
    if max_length < 1:
        raise ConfigError(f"max_length must be positive; received {max_length}.")
    path = Path(path)
    index = alphabet_index(alphabet)
    try:
        f = open(path, encoding=encoding, errors="replace", newline="")
    except FileNotFoundError:
        raise CnnkitError(f"text_csv: {path} does not exist.") from None
    with f:
        try:
            rows = _read_rows(f, path, index, max_length, backward)
        except csv.Error as err:
            raise CnnkitError(f"{path}: not a readable CSV ({err}).") from None
    chunks, lengths, labels = rows
    if not labels:
        raise CnnkitError(f"text_csv: {path} holds no rows.")
    y = np.asarray(labels, dtype=np.int64)
    k = int(y.max()) + 1
    if classes is not None and len(classes) < k:
        raise CnnkitError(f"{path}: class {k} appears but only {len(classes)} classes were named.")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    codes = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    names = list(classes) if classes is not None else [str(i + 1) for i in range(k)]
    return CharTextDataset(codes, offsets, y, alphabet, max_length, names, path.name)


def _read_rows(f, path: Path, index: dict[str, int], max_length: int, backward: bool):
    """The encoded texts, their lengths and 0-based labels of an open CSV file."""
    chunks, lengths, labels = [], [], []
    for line, row in enumerate(csv.reader(f), start=1):
        if not row:
            continue
        if len(row) < 2:
            raise CnnkitError(f"{path}:{line}: expected 'class, text, ...'; found {row!r:.80}.")
        try:
            label = int(row[0])
        except ValueError:
            raise CnnkitError(
                f"{path}:{line}: the class {row[0]!r:.80} is not an integer (1-based index)."
            ) from None
        if label < 1:
            raise CnnkitError(f"{path}:{line}: class {label} is below 1 (1-based classes).")
        text = " ".join(field.replace("\\n", "\n").strip() for field in row[1:])
        codes = encode_text(text, index, max_length, backward)
        chunks.append(codes)
        lengths.append(len(codes))
        labels.append(label - 1)
    return chunks, lengths, labels
