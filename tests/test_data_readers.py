"""cnnkit.data readers against the real files in ../shared/data and self-written files.

References: the datasets' published counts (MNIST class counts, UCR sizes, ISBI slices,
balloon polygons), the files' bytes parsed independently with gzip/NumPy/Pillow,
pycocotools for RLE and polygons (NumPy brute force where it is not installed), and
scikit-learn / Pillow for the digits.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit._core.errors import CnnkitError
from cnnkit.data import (
    ZHANG_ALPHABET,
    cifar10,
    cifar100,
    coco_instances,
    digits,
    isbi2012,
    mnist,
    mnist1d,
    polygons_to_mask,
    rle_decode,
    rle_encode,
    text_csv,
    ucr,
    via_instances,
)

REPO = Path(__file__).resolve().parents[1]


def _shared(sub: str) -> Path:
    for base in (os.environ.get("CNNKIT_DATA"), REPO.parent / "shared" / "data"):
        if base and (Path(base) / sub).exists():
            return Path(base) / sub
    pytest.skip(f"real data {sub!r} not found under $CNNKIT_DATA or {REPO.parent}/shared/data")


# ---------------------------------------------------------------- MNIST (real files)

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_train_counts_and_shapes():
    ds = mnist(_shared("mnist"), "train")
    assert tuple(ds.x.shape) == (60000, 1, 28, 28) and ds.x.dtype == torch.uint8
    assert torch.bincount(ds.y).tolist() == MNIST_TRAIN_COUNTS
    assert int(ds.y[0]) == 5  # the first training digit of MNIST is a 5
    image, label = ds[0]
    assert image.dtype == torch.float32 and 0.0 <= image.min() and image.max() <= 1.0
    assert label.dtype == torch.int64


def test_mnist_test_matches_raw_bytes_and_parent_root():
    folder = _shared("mnist")
    ds = mnist(folder.parent, "test")  # a parent folder with mnist/ inside works too
    raw = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    ref = np.frombuffer(raw, np.uint8, offset=16).reshape(10000, 28, 28)
    labels = np.frombuffer(gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()),
                           np.uint8, offset=8)  # fmt: skip
    assert np.array_equal(ds.x[:, 0].numpy(), ref)
    assert np.array_equal(ds.y.numpy(), labels)
    assert torch.bincount(ds.y).tolist() == MNIST_TEST_COUNTS
    x, y = ds.tensors()
    assert x.shape == (10000, 1, 28, 28) and torch.allclose(
        x[3, 0], torch.from_numpy(ref[3].copy()) / 255
    )


def test_mnist_uncompressed_files(tmp_path):
    folder = _shared("mnist")
    for src, dst in (("t10k-images-idx3-ubyte.gz", "t10k-images.idx3-ubyte"),
                     ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte")):  # fmt: skip
        (tmp_path / dst).write_bytes(gzip.decompress((folder / src).read_bytes()))
    a, b = mnist(tmp_path, "test"), mnist(folder, "test")
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


# ---------------------------------------------------------------- CIFAR (self-written files)


def _cifar_batch(n, rng, label_keys, num_classes):
    batch = {b"batch_label": b"testing batch", b"data": rng.integers(0, 256, (n, 3072), np.uint8),
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}  # fmt: skip
    for key, k in zip(label_keys, num_classes):
        batch[key] = rng.integers(0, k, n).tolist()
    return batch


def write_cifar10(folder: Path, n: int = 12, seed: int = 0) -> dict:
    """The python-version layout: cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}."""
    rng = np.random.default_rng(seed)
    out = folder / "cifar-10-batches-py"
    out.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = _cifar_batch(n, rng, [b"labels"], [10])
        (out / name).write_bytes(pickle.dumps(batches[name], protocol=2))
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}
    (out / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


def test_cifar10_self_written_batches_and_tarball(tmp_path):
    batches = write_cifar10(tmp_path / "extracted")
    ds = cifar10(tmp_path / "extracted", "train", verify=False)
    data = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert tuple(ds.x.shape) == (60, 3, 32, 32) and ds.y.tolist() == labels
    # pixel (c, h, w) of image i is row i, value c*1024 + h*32 + w
    for i, c, h, w in [(0, 0, 0, 0), (7, 1, 5, 30), (59, 2, 31, 31)]:
        assert int(ds.x[i, c, h, w]) == int(data[i, c * 1024 + h * 32 + w])
    assert ds.classes == [f"class{i}" for i in range(10)]
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "extracted" / "cifar-10-batches-py", "cifar-10-batches-py")
    (tmp_path / "tarball").mkdir()
    os.replace(tmp_path / "cifar-10-python.tar.gz", tmp_path / "tarball" / "cifar-10-python.tar.gz")
    from_tar = cifar10(tmp_path / "tarball", "test", verify=False)
    assert torch.equal(from_tar.x.reshape(12, -1), torch.from_numpy(batches["test_batch"][b"data"]))


def test_cifar_published_checksums_reject_self_written_files(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(
        CnnkitError, match=r"data_batch_1 has md5 .*expected c99cafc152244af753f735de768cd75f"
    ):
        cifar10(tmp_path, "train")


def test_cifar100_fine_and_coarse(tmp_path):
    rng = np.random.default_rng(1)
    out = tmp_path / "cifar-100-python"
    out.mkdir()
    for name in ("train", "test"):
        batch = _cifar_batch(9, rng, [b"fine_labels", b"coarse_labels"], [100, 20])
        (out / name).write_bytes(pickle.dumps(batch, protocol=2))
        if name == "train":
            ref = batch
    fine = cifar100(tmp_path, "train", verify=False)
    coarse = cifar100(tmp_path, "train", label_mode="coarse", verify=False)
    assert fine.y.tolist() == ref[b"fine_labels"] and coarse.y.tolist() == ref[b"coarse_labels"]


def test_cifar_missing_lists_archive_md5_and_url(tmp_path):
    with pytest.raises(CnnkitError) as err:
        cifar10(tmp_path / "nothing")
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg and "c58f30108f718f92721af3b95e74349a" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert str(tmp_path / "nothing") in msg


# ---------------------------------------------------------------- ISBI 2012 (real PNGs)


def test_isbi_png_slices_and_membrane_labels():
    folder = _shared("isbi2012")
    ds = isbi2012(folder, "train")
    assert tuple(ds.x.shape) == (30, 1, 512, 512) and tuple(ds.y.shape) == (30, 512, 512)
    png = np.array(Image.open(folder / "train" / "label" / "7.png"))
    assert np.array_equal(ds.y[7].numpy(), (png == 0).astype(np.uint8))  # 0 in the PNG = membrane
    cell = isbi2012(folder, "train", positive="cell")
    assert torch.equal(cell.y, 1 - ds.y)
    image, mask = ds[3]
    assert image.shape == (1, 512, 512) and mask.dtype == torch.int64
    assert np.allclose(image[0].numpy() * 255, np.array(Image.open(folder / "train/image/3.png")))
    test = isbi2012(folder, "test")
    assert (
        tuple(test.x.shape) == (30, 1, 512, 512)
        and test.y is None
        and test[0].shape == (1, 512, 512)
    )


def test_isbi_tiff_stacks_equal_png_slices(tmp_path):
    folder = _shared("isbi2012")
    for sub, name in (("train/image", "train-volume.tif"), ("train/label", "train-labels.tif")):
        pages = [Image.open(folder / sub / f"{i}.png") for i in range(30)]
        pages[0].save(tmp_path / name, save_all=True, append_images=pages[1:])
    a, b = isbi2012(tmp_path, "train"), isbi2012(folder, "train")
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_isbi_label_value_outside_binary_names_file(tmp_path):
    for sub in ("train/image", "train/label"):
        (tmp_path / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "train/image/0.png")
    label = np.full((8, 8), 255, np.uint8)
    label[2, 3] = 128
    Image.fromarray(label).save(tmp_path / "train/label/0.png")
    with pytest.raises(CnnkitError, match=r"0\.png: label value 128"):
        isbi2012(tmp_path, "train")


# ---------------------------------------------------------------- UCR (real TSVs)


@pytest.mark.parametrize(
    "name, n_train, n_test, length, labels",
    [("GunPoint", 50, 150, 150, [1, 2]), ("ECG200", 100, 100, 96, [-1, 1]), ("Coffee", 28, 28, 286, [0, 1])],
)  # fmt: skip
def test_ucr_sizes_and_label_remap(name, n_train, n_test, length, labels):
    root = _shared("ucr")
    train, test = ucr(root, name, "train"), ucr(root, name, "test")
    assert tuple(train.x.shape) == (n_train, 1, length) and tuple(test.x.shape) == (
        n_test,
        1,
        length,
    )
    table = np.loadtxt(root / name / f"{name}_TEST.tsv", delimiter="\t")
    assert np.allclose(test.x[:, 0].numpy(), table[:, 1:], atol=1e-6)
    assert test.y.tolist() == [labels.index(int(v)) for v in table[:, 0]]
    assert train.classes == [str(v) for v in labels]
    z = ucr(root, name, "train", znorm=True).x[:, 0].double().numpy()
    assert np.allclose(z.mean(1), 0, atol=1e-5) and np.allclose(z.std(1), 1, atol=1e-4)


def test_ucr_older_txt_format(tmp_path):
    root = _shared("ucr")
    for split in ("TRAIN", "TEST"):
        table = np.loadtxt(root / "GunPoint" / f"GunPoint_{split}.tsv", delimiter="\t")
        np.savetxt(tmp_path / f"GunPoint_{split}.txt", table, fmt="%.8e")  # space-separated
    a, b = ucr(tmp_path, "GunPoint", "test"), ucr(root, "GunPoint", "test")
    assert torch.allclose(a.x, b.x, atol=1e-6) and torch.equal(a.y, b.y)


# ---------------------------------------------------------------- balloon (real VIA JSON)


def test_balloon_via_counts_and_one_item():
    root = _shared("balloon")
    train, val = via_instances(root / "train"), via_instances(root / "val")
    assert (len(train), len(val)) == (61, 13)
    assert (sum(train.instance_counts()), sum(val.instance_counts())) == (255, 50)
    i = int(np.argmin([r["file"].stat().st_size for r in val.records]))  # the smallest JPEG
    image, target = val[i]
    h, w = image.shape[1:]
    k = val.instance_counts()[i]
    assert target["masks"].shape == (k, h, w) and target["labels"].tolist() == [1] * k
    with Image.open(val.records[i]["file"]) as im:
        assert im.size == (w, h)
    for box, mask in zip(target["boxes"], target["masks"]):
        rows, cols = np.nonzero(mask.numpy())
        # the mask lies inside the polygon's extent box (pixel centres within it)
        assert box[0] <= cols.min() + 0.5 and cols.max() + 0.5 <= box[2]
        assert box[1] <= rows.min() + 0.5 and rows.max() + 0.5 <= box[3]


# ---------------------------------------------------------------- RLE and polygons


def _brute_force_polygon(xy, h, w):
    """Even-odd ray casting at every pixel centre, one pixel at a time."""
    out = np.zeros((h, w), np.uint8)
    n = len(xy)
    for i in range(h):
        for j in range(w):
            px, py, inside = j + 0.5, i + 0.5, False
            for k in range(n):
                (xa, ya), (xb, yb) = xy[k], xy[(k + 1) % n]
                if (ya > py) != (yb > py) and px < xa + (py - ya) * (xb - xa) / (yb - ya):
                    inside = not inside
            out[i, j] = inside
    return out


def test_polygon_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(15):
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(2, 9, n)
        xy = np.stack([12 + radius * np.cos(angles), 10 + radius * np.sin(angles)], 1)
        mask = polygons_to_mask([xy.ravel().tolist()], 20, 25)
        assert np.array_equal(mask, _brute_force_polygon(xy, 20, 25))


def test_rle_round_trip_and_pycocotools():
    rng = np.random.default_rng(4)
    masks = [(rng.random((h, w)) < p).astype(np.uint8)
             for h, w, p in [(1, 1, 0.5), (7, 13, 0.1), (30, 20, 0.5), (16, 16, 0.95)]]  # fmt: skip
    masks.append(np.ones((5, 6), np.uint8))
    for m in masks:
        assert np.array_equal(rle_decode(rle_encode(m)), m)
        assert np.array_equal(rle_decode(rle_encode(m, compressed=False)), m)
        counts = rle_encode(m, compressed=False)["counts"]
        flat = m.ravel(order="F")  # brute force: runs of the column-major pixels, zeros first
        runs, value, run = [], 0, 0
        for v in flat:
            if v != value:
                runs.append(run)
                value, run = v, 0
            run += 1
        assert counts == runs + [run]
    mask_api = pytest.importorskip(
        "pycocotools.mask", reason="pycocotools (test extra) not installed"
    )
    for m in masks:
        ref = mask_api.encode(np.asfortranarray(m))
        assert rle_encode(m)["counts"] == ref["counts"].decode()
        assert np.array_equal(rle_decode(ref), m)


def test_balloon_polygons_close_to_pycocotools():
    mask_api = pytest.importorskip(
        "pycocotools.mask", reason="pycocotools (test extra) not installed"
    )
    root = _shared("balloon") / "val"
    data = json.loads((root / "via_region_data.json").read_text())
    ious = []
    for entry in data.values():
        with Image.open(root / entry["filename"]) as im:
            w, h = im.size
        for region in entry["regions"].values():
            s = region["shape_attributes"]
            poly = [float(v) for xy in zip(s["all_points_x"], s["all_points_y"]) for v in xy]
            ref = mask_api.decode(mask_api.frPyObjects([poly], h, w))[..., 0].astype(bool)
            ours = polygons_to_mask([poly], h, w).astype(bool)
            ious.append((ours & ref).sum() / (ours | ref).sum())
    assert len(ious) == 50 and min(ious) > 0.97 and np.mean(ious) > 0.995


def test_coco_instances_polygon_rle_and_crowd(tmp_path):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.png")
    square = np.zeros((20, 30), np.uint8)
    square[2:6, 3:9] = 1
    blob = np.zeros((20, 30), np.uint8)
    blob[10:18, 20:26] = 1
    coco = {
        "images": [{"id": 42, "file_name": "a.png", "height": 20, "width": 30}],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 7, "bbox": [3, 2, 6, 4], "iscrowd": 0,
             "segmentation": [[3, 2, 9, 2, 9, 6, 3, 6]]},
            {"id": 2, "image_id": 42, "category_id": 3, "bbox": [20, 10, 6, 8], "iscrowd": 0,
             "segmentation": rle_encode(blob)},
            {"id": 3, "image_id": 42, "category_id": 3, "bbox": [20, 10, 6, 8], "iscrowd": 1,
             "segmentation": {"size": [20, 30], "counts": rle_encode(blob, False)["counts"]}},
        ],
    }  # fmt: skip
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    ds = coco_instances(tmp_path, tmp_path / "ann.json")
    assert ds.classes == ["__background__", "cat", "dog"]  # sorted by category id: 3, 7
    image, t = ds[0]
    assert image.shape == (3, 20, 30) and int(t["image_id"]) == 42
    assert t["labels"].tolist() == [2, 1, 1] and t["iscrowd"].tolist() == [0, 0, 1]
    assert t["boxes"][0].tolist() == [3, 2, 9, 6]
    assert np.array_equal(t["masks"][0].numpy(), square)
    assert np.array_equal(t["masks"][1].numpy(), blob) and np.array_equal(
        t["masks"][2].numpy(), blob
    )
    assert coco_instances(
        tmp_path, tmp_path / "ann.json", include_crowd=False
    ).instance_counts() == [2]


# ---------------------------------------------------------------- text (Zhang et al. 2015)


def test_zhang_alphabet_is_the_papers_70():
    assert len(ZHANG_ALPHABET) == 70 and ZHANG_ALPHABET.endswith("\n")
    assert ZHANG_ALPHABET[:36] == "abcdefghijklmnopqrstuvwxyz0123456789"
    assert len(ZHANG_ALPHABET[36:-1]) == 33 and len(set(ZHANG_ALPHABET)) == 69  # '-' twice


def test_text_csv_ag_news_layout(tmp_path):
    rows = [
        '"3","Wall St. Bears","Short-sellers, Wall Street\'s dwindling band\\nare back."\n',
        '"1","Ünïcode Title","x"\n',
        '"4","Long",' + '"' + "ab" * 600 + 'z"\n',
    ]
    (tmp_path / "train.csv").write_text("".join(rows), encoding="utf-8")
    ds = text_csv(tmp_path / "train.csv")
    assert len(ds) == 3 and ds.y.tolist() == [2, 0, 3]
    x, _ = ds[0]
    assert x.shape == (70, 1014) and x.dtype == torch.float32
    text = "wall st. bears short-sellers, wall street's dwindling band\nare back."
    for j, ch in enumerate(reversed(text)):  # backward: column 0 holds the last character
        col = x[:, j]
        if ch in ZHANG_ALPHABET:
            assert col.sum() == 1 and ZHANG_ALPHABET[int(col.argmax())] == ch
        else:
            assert col.sum() == 0  # space is not in the alphabet
    assert x[:, len(text) :].sum() == 0  # padding
    assert ZHANG_ALPHABET.rindex("-") == int(x[:, text[::-1].index("-")].argmax())
    long_x, _ = ds[2]  # 1206 characters: the last 1014 are kept
    assert long_x.sum() == 1014 and ZHANG_ALPHABET[int(long_x[:, 0].argmax())] == "z"
    forward = text_csv(tmp_path / "train.csv", backward=False, max_length=16)[0][0]
    assert (
        "".join(ZHANG_ALPHABET[int(c.argmax())] if c.sum() else " " for c in forward.T)
        == "wall st. bears s"
    )
    assert ds._codes.dtype == np.int16 and ds._codes.nbytes < 10_000  # stored compactly


def test_text_csv_class_zero_names_line(tmp_path):
    (tmp_path / "bad.csv").write_text('"1","a","b"\n"0","c","d"\n')
    with pytest.raises(CnnkitError, match=r"bad\.csv:2: class 0 is below 1"):
        text_csv(tmp_path / "bad.csv")


# ---------------------------------------------------------------- digits and MNIST-1D


def test_digits_counts_resize_and_split():
    ds = digits()
    assert tuple(ds.x.shape) == (1797, 1, 8, 8) and float(ds.x.max()) == 1.0
    assert torch.bincount(ds.y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    big = digits(28)
    assert tuple(big.x.shape) == (1797, 1, 28, 28) and 0 <= big.x.min() and big.x.max() <= 1
    ref = np.array(Image.fromarray(ds.x[5, 0].numpy(), mode="F").resize((28, 28), Image.BILINEAR))
    assert np.allclose(big.x[5, 0].numpy(), ref, atol=1e-5)
    train, test = digits(32, "train", seed=1), digits(32, "test", seed=1)
    assert (len(train), len(test)) == (1347, 450) and train.x.shape[-1] == 32
    assert abs(torch.bincount(test.y).float().std().item()) < 1.0  # stratified: ~45 per class


def test_mnist1d_generated_and_cached(tmp_path):
    pytest.importorskip("mnist1d", reason="the optional 'mnist1d' package is not installed")
    np.random.seed(123)
    random.seed(5)
    before = (np.random.get_state()[1].copy(), random.getstate())
    train = mnist1d("train", num_samples=200, root=tmp_path)
    test = mnist1d("test", num_samples=200, root=tmp_path)
    assert tuple(train.x.shape) == (160, 1, 40) and tuple(test.x.shape) == (40, 1, 40)
    assert set(train.y.tolist()) <= set(range(10)) and len(set(train.y.tolist())) == 10
    assert np.array_equal(np.random.get_state()[1], before[0]) and random.getstate() == before[1]
    assert (tmp_path / "mnist1d" / "mnist1d_n200_seed42.npz").is_file()
    again = mnist1d("train", num_samples=200, root=tmp_path)
    assert torch.equal(again.x, train.x) and torch.equal(again.y, train.y)
