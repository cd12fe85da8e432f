"""Synthetic task data: shapes, localised and moving digits, 1D signals.

Checked against independent references: NumPy bounding boxes of the masks, the area a
circle / square / triangle fills of its box (pi/4, 1, 1/2), scikit-learn's own
``load_digits``, per-class waveform properties of the signals computed in NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.data import synthetic as S
from cnnkit.data import transforms as T


def np_box(inside: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
    return [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


@pytest.fixture(scope="module")
def instance():
    return S.shapes(60, size=48, task="instance", max_objects=4, seed=7)


def test_shapes_classification_dtypes_ranges_and_classes():
    x, y = S.shapes(90, size=32, seed=1)
    assert x.shape == (90, 3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert y.shape == (90,) and y.dtype == torch.int64
    assert set(y.tolist()) == {0, 1, 2}
    # one-object instance data from the same seed draws the same images
    x2, targets = S.shapes(90, size=32, task="instance", max_objects=1, seed=1)
    assert torch.equal(x, x2)
    assert [int(t["labels"][0]) - 1 for t in targets] == y.tolist()
    grey, _ = S.shapes(4, size=32, channels=1, seed=1)
    assert grey.shape == (4, 1, 32, 32)


def test_instance_targets_boxes_masks_and_labels(instance):
    x, targets = instance
    fills = {1: [], 2: [], 3: []}
    for img, t in zip(x, targets):
        k = len(t["labels"])
        assert 1 <= k <= 4
        assert t["boxes"].shape == (k, 4) and t["boxes"].dtype == torch.float32
        assert t["masks"].shape == (k, 48, 48) and t["masks"].dtype == torch.uint8
        assert t["labels"].dtype == torch.int64 and set(t["labels"].tolist()) <= {1, 2, 3}
        masks = t["masks"].numpy().astype(bool)
        assert masks.sum(0).max() <= 1  # shapes never overlap
        for m, box, lab in zip(masks, t["boxes"].tolist(), t["labels"].tolist()):
            assert box == np_box(m)
            fills[lab].append(m.sum() / ((box[2] - box[0]) * (box[3] - box[1])))
            # the shape is brighter than the background in every channel
            inside, outside = img[:, m].mean(1), img[:, ~masks.any(0)].mean(1)
            assert bool((inside > outside + 0.1).all())
    # how much of its box a shape fills identifies the class: circle pi/4, square 1, triangle 1/2
    assert 0.68 < np.mean(fills[1]) < 0.86 and min(fills[2]) > 0.85
    assert 0.42 < np.mean(fills[3]) < 0.62 and max(fills[3]) < 0.7


def test_segmentation_is_the_union_of_instance_masks_by_label(instance):
    x, targets = instance
    xs, masks = S.shapes(60, size=48, task="segmentation", max_objects=4, seed=7)
    assert torch.equal(x, xs)
    assert masks.shape == (60, 48, 48) and masks.dtype == torch.int64
    for m, t in zip(masks, targets):
        union = (t["masks"].long() * t["labels"][:, None, None]).sum(0)
        assert torch.equal(m, union)
    xd, det = S.shapes(60, size=48, task="detection", max_objects=4, seed=7)
    assert torch.equal(xd, x) and set(det[0]) == {"boxes", "labels"}
    assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(det, targets))


def test_shapes_are_deterministic_by_seed():
    a = S.shapes(8, size=32, task="instance", seed=3)
    b = S.shapes(8, size=32, task="instance", seed=3)
    c = S.shapes(8, size=32, task="instance", seed=4)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert all(torch.equal(p["masks"], q["masks"]) for p, q in zip(a[1], b[1]))
    torch.manual_seed(123)  # the global torch state plays no part
    d = S.shapes(8, size=32, task="instance", seed=3)
    assert torch.equal(a[0], d[0])


def test_shapes_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="Did you mean 'segmentation'"):
        S.shapes(2, task="segmentaton")
    with pytest.raises(ConfigError, match="max_objects=3"):
        S.shapes(2, task="classification", max_objects=3)
    with pytest.raises(ConfigError, match="extent"):
        S.shapes(2, extent=(0.3, 0.6))


def test_shapes_through_a_joint_augmentation_stay_consistent(instance):
    x, targets = instance
    ds = S.SyntheticDataset(
        x, targets, T.Compose([T.RandomTranspose(), T.RandomHorizontalFlip(), T.RandomCrop(40)])
    )
    assert len(ds) == 60
    for i in range(10):
        torch.manual_seed(i)
        img, t = ds[i]
        assert img.shape == (3, 40, 40)
        assert len(t["boxes"]) == len(t["labels"]) == len(t["masks"])
        for m in t["masks"].numpy():
            assert m.any()
    with pytest.raises(ShapeError):
        S.SyntheticDataset(x, targets[:3])


# ----------------------------------------------------------------------------- digits


def test_localization_box_is_exactly_the_digits_nonzero_pixels():
    x, labels, boxes = S.localization_mnist(40, canvas=64, seed=2)
    assert x.shape == (40, 1, 64, 64) and x.dtype == torch.float32
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= set(range(10))
    assert float(x.min()) == 0 and float(x.max()) <= 1
    for img, box in zip(x[:, 0].numpy(), boxes.tolist()):
        assert box == np_box(img > 0)
    a = S.localization_mnist(5, seed=9)
    b = S.localization_mnist(5, seed=9)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_localization_labels_match_the_pasted_digit():
    from sklearn.datasets import load_digits

    # default digits: scikit-learn's own set, pasted at native 8x8 size here
    digits = load_digits()
    crops = {}  # every sklearn digit's tight crop -> its labels
    for img, lab in zip(digits.images / 16.0, digits.target):
        r, c = np.flatnonzero(img.any(1)), np.flatnonzero(img.any(0))
        key = np.round(img[r[0] : r[-1] + 1, c[0] : c[-1] + 1], 5).tobytes()
        crops.setdefault((r[-1] - r[0], c[-1] - c[0], key), set()).add(int(lab))
    x, labels, boxes = S.localization_mnist(30, canvas=20, digit_size=8, seed=5)
    for img, lab, box in zip(x[:, 0].numpy(), labels.tolist(), boxes.long().tolist()):
        crop = img[box[1] : box[3], box[0] : box[2]]
        key = (crop.shape[0] - 1, crop.shape[1] - 1, np.round(crop.astype(np.float64), 5).tobytes())
        assert lab in crops[key]
    # a given source: digit k is a bar k + 1 pixels wide, so the box width tells the label
    bars = np.zeros((10, 12, 12), dtype=np.uint8)
    for k in range(10):
        bars[k, 2:10, 1 : k + 2] = 255
    x, labels, boxes = S.localization_mnist(
        50, canvas=30, digits_source=(bars, np.arange(10)), digit_size=12
    )
    np.testing.assert_array_equal((boxes[:, 2] - boxes[:, 0]).numpy(), labels.numpy() + 1)
    assert float(x.max()) == 1.0


def test_moving_mnist_digits_stay_whole_in_frame():
    clips, labels, boxes = S.moving_mnist(12, frames=10, size=40, num_digits=1, digit_size=16,
                                          speed=(3, 6), return_boxes=True, seed=4)  # fmt: skip
    assert clips.shape == (12, 1, 10, 40, 40) and clips.dtype == torch.float32
    assert labels.shape == (12, 1) and boxes.shape == (12, 1, 10, 4)
    frames = clips[:, 0].numpy()
    mass = frames.sum((2, 3))
    np.testing.assert_allclose(mass, mass[:, :1].repeat(10, 1), rtol=1e-5)  # never cut off
    for clip, track in zip(frames, boxes[:, 0].tolist()):
        for frame, box in zip(clip, track):
            assert box == np_box(frame > 0)
            assert 0 <= box[0] and box[2] <= 40 and 0 <= box[1] and box[3] <= 40
        steps = np.abs(np.diff(np.array(track)[:, :2], axis=0))
        assert steps.max() <= 6 + 1 and steps.sum() > 0  # moves, within the speed limit


def test_moving_mnist_labels_and_determinism():
    bars = np.zeros((10, 12, 12), dtype=np.float32)
    for k in range(10):
        bars[k, 2:10, 1 : k + 2] = 1.0
    src = (bars, np.arange(10))
    _, labels, boxes = S.moving_mnist(20, frames=4, size=32, num_digits=2, digits_source=src,
                                      digit_size=12, return_boxes=True, seed=1)  # fmt: skip
    np.testing.assert_array_equal(
        (boxes[:, :, 0, 2] - boxes[:, :, 0, 0]).numpy(), labels.numpy() + 1
    )
    # direction: the first digit's first step along its dominant axis (fast, few bounces)
    _, direction, boxes = S.moving_mnist(200, frames=2, size=64, num_digits=1, digit_size=8,
                                         speed=(4, 4), label="direction", return_boxes=True)  # fmt: skip
    step = (boxes[:, 0, 1, :2] - boxes[:, 0, 0, :2]).numpy()
    seen = np.where(np.abs(step[:, 0]) >= np.abs(step[:, 1]),
                    np.where(step[:, 0] >= 0, 0, 2), np.where(step[:, 1] >= 0, 1, 3))  # fmt: skip
    assert (seen == direction.numpy()).mean() > 0.85
    assert set(direction.tolist()) == {0, 1, 2, 3}
    a = S.moving_mnist(3, frames=5, seed=8)
    b = S.moving_mnist(3, frames=5, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ----------------------------------------------------------------------------- signals


def _classify(series: np.ndarray) -> int:
    """Name a noiseless series by a NumPy property of its waveform."""
    d = np.diff(series)
    if len(np.unique(np.round(series, 6))) == 2:
        return 1  # square: two levels
    steps = np.round(np.abs(d), 6)
    values, counts = np.unique(steps, return_counts=True)
    if counts.max() > 0.8 * len(d):
        return 2 if (d < 0).sum() < 0.2 * len(d) else 3  # sawtooth rises, triangle both
    # sine: x[t-1] + x[t+1] is an affine function of x[t]; a chirp's is not
    a = np.stack([series[1:-1], np.ones(len(series) - 2)], 1)
    target = series[:-2] + series[2:]
    residual = target - a @ np.linalg.lstsq(a, target, rcond=None)[0]
    return 0 if np.abs(residual).max() < 1e-6 else 4


def test_signals_classes_have_their_waveforms():
    x, y = S.signals(100, length=200, num_classes=5, noise=0.0, seed=3)
    assert x.shape == (100, 1, 200) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.tolist()) == set(range(5))
    predicted = [_classify(s.astype(np.float64)) for s in x[:, 0].numpy()]
    assert predicted == y.tolist()
    a, b = S.signals(10, seed=1), S.signals(10, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    noisy, _ = S.signals(2000, length=64, noise=0.5, seed=1)
    clean, _ = S.signals(2000, length=64, noise=0.0, seed=1)
    assert abs(float((noisy - clean).std()) - 0.5) < 0.01
    assert torch.equal(S.signals(5, num_classes=2)[1] < 2, torch.ones(5, dtype=torch.bool))


def test_signal_segmentation_labels_are_piecewise_classes():
    x, y = S.signals(
        50, length=120, task="segmentation", num_classes=3, segments=(2, 4), noise=0.0, seed=2
    )
    assert y.shape == (50, 120) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= {0, 1, 2}
    changes = (y[:, 1:] != y[:, :-1]).sum(1)
    assert int(changes.max()) <= 3
    for series, labels in zip(x[:, 0].numpy(), y.numpy()):
        piece = series[labels == 1]  # square pieces take two levels only
        levels = len(np.unique(np.round(piece, 5)))
        assert levels <= 2 and (levels == 2 or piece.size < 20)
        other = series[labels == 0]  # sine pieces take many
        assert other.size < 20 or len(np.unique(np.round(other, 5))) > 5
    with pytest.raises(ConfigError, match="num_classes"):
        S.signals(3, num_classes=7)
