"""Bad files never pass silently: each case is a CnnkitError naming the file and the problem.

Downloads run against a local HTTP server (with Range support and a switch that cuts a
response short), so resuming, checksum failures and being offline are tested without
the network. Archives, pickles, gzip streams, masks and images are written by the tests.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit._core.errors import CnnkitError
from cnnkit.data import (
    RemoteFile,
    cifar10,
    download_file,
    ensure_files,
    extract_archive,
    fashion_mnist,
    image_folder,
    mnist,
    read_idx,
    restricted_loads,
    segmentation_folder,
)

PAYLOAD = bytes(range(256)) * 4000  # 1,024,000 bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut_after: int | None = None  # send only this many bytes of the next response
    ranges: list[str] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        if header:
            type(self).ranges.append(header)
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).cut_after
        if cut is not None:
            type(self).cut_after = None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    _Handler.files = {"/data.bin": PAYLOAD}
    _Handler.cut_after = None
    _Handler.ranges = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/data.bin"


MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


# ---------------------------------------------------------------- downloads


def test_interrupted_download_resumes_with_range(server, tmp_path):
    remote = RemoteFile("data.bin", (server + "/data.bin",), md5=MD5, sha256=SHA256)
    _Handler.cut_after = 300_000
    with pytest.raises(CnnkitError, match="could not download data.bin"):
        download_file(remote, tmp_path, timeout=10)
    part = tmp_path / "data.bin.part"
    assert part.stat().st_size == 300_000 and not (tmp_path / "data.bin").exists()
    path = download_file(remote, tmp_path, timeout=10)
    assert _Handler.ranges == ["bytes=300000-"]
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_download_with_wrong_checksum_is_deleted(server, tmp_path):
    remote = RemoteFile("data.bin", (server + "/data.bin",), md5="0" * 32)
    with pytest.raises(CnnkitError, match=f"has md5 {MD5}, expected 0{{32}}"):
        download_file(remote, tmp_path, timeout=10)
    assert list(tmp_path.iterdir()) == []


def test_offline_error_lists_files_checksums_urls_and_folder(tmp_path):
    url = _closed_port_url()
    files = [
        RemoteFile("data.bin", (url,), md5=MD5),
        RemoteFile("other.bin", (url + "2",), md5="a" * 32),
    ]
    with pytest.raises(CnnkitError) as err:
        ensure_files(files, tmp_path / "ds", dataset="Toy", download=True, timeout=5)
    msg = str(err.value)
    for text in ("data.bin", "other.bin", f"md5 {MD5}", "md5 " + "a" * 32, url, url + "2",
                 str(tmp_path / "ds"), "download failed"):  # fmt: skip
        assert text in msg


def test_present_file_with_wrong_checksum_is_not_used(server, tmp_path):
    (tmp_path / "data.bin").write_bytes(PAYLOAD[:-1] + b"x")
    remote = RemoteFile("data.bin", (server + "/data.bin",), md5=MD5)
    with pytest.raises(CnnkitError, match=f"data.bin: present but has md5 .*expected {MD5}"):
        ensure_files([remote], tmp_path, dataset="Toy")
    paths = ensure_files([remote], tmp_path, dataset="Toy", download=True, timeout=10)
    assert paths["data.bin"].read_bytes() == PAYLOAD
    assert (tmp_path / "data.bin.corrupt").exists()  # the user's copy is kept aside, not used


def test_mnist_missing_lists_both_files(tmp_path):
    with pytest.raises(CnnkitError) as err:
        mnist(tmp_path, "test")
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "9fb629c4189551a2d022fa330f9573f3" in msg
    assert "t10k-labels-idx1-ubyte.gz" in msg and "ec29112dd5afa0611ce80d1b7f02629c" in msg
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz" in msg
    assert f"Put them into {tmp_path}" in msg


# ---------------------------------------------------------------- IDX / gzip


def _idx_gz(path: Path, array: np.ndarray, code: int = 0x08, cut: int | None = None):
    raw = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    data = gzip.compress(raw)
    path.write_bytes(data[:cut] if cut else data)


def test_idx_reader_dtypes_and_self_written_fashion_mnist(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = np.array([9, 0, 3, 3, 1], np.uint8)
    _idx_gz(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _idx_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    ds = fashion_mnist(tmp_path, "test", verify=False)
    assert torch.equal(ds.x[:, 0], torch.from_numpy(images)) and ds.y.tolist() == [9, 0, 3, 3, 1]
    assert ds.classes[9] == "Ankle boot"
    with pytest.raises(
        CnnkitError, match=r"present but has md5 .*expected bef4ecab320f06d8554ea6380940ec79"
    ):
        fashion_mnist(tmp_path, "test")
    floats = rng.standard_normal((3, 4)).astype(np.float32)
    _idx_gz(tmp_path / "f.gz", floats, code=0x0D)
    assert np.array_equal(read_idx(tmp_path / "f.gz"), floats)


def test_truncated_gzip_names_file(tmp_path):
    _idx_gz(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((50, 28, 28), np.uint8), cut=40)
    _idx_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(50, np.uint8))
    with pytest.raises(
        CnnkitError, match=r"t10k-images-idx3-ubyte\.gz: the gzip stream is truncated or corrupt"
    ):
        mnist(tmp_path, "test", verify=False)


def test_corrupted_gzip_crc_names_file(tmp_path):
    path = tmp_path / "x.gz"
    _idx_gz(path, np.arange(1000, dtype=np.uint8).reshape(10, 100) % 7)
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # flip a byte of the CRC32 trailer
    path.write_bytes(bytes(data))
    with pytest.raises(CnnkitError, match=r"x\.gz: the gzip stream is truncated or corrupt"):
        read_idx(path)


def test_truncated_raw_idx_names_file(tmp_path):
    raw = bytes([0, 0, 8, 3]) + np.array([10, 28, 28], ">u4").tobytes() + bytes(28 * 28 * 9)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw)
    with pytest.raises(
        CnnkitError, match=r"t10k-images-idx3-ubyte: the header announces shape \(10, 28, 28\)"
    ):
        read_idx(tmp_path / "t10k-images-idx3-ubyte")


# ---------------------------------------------------------------- archives


def _tar_with(path: Path, name: str, data: bytes = b"x", *, link: str | None = None, kind=None):
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("good/readme.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        info = tarfile.TarInfo(name)
        if link is not None:
            info.type, info.linkname = kind or tarfile.SYMTYPE, link
            tar.addfile(info)
        else:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    "name, link, kind, message",
    [
        ("../evil.txt", None, None, r"member '\.\./evil\.txt' contains '\.\.'"),
        ("good/../../evil.txt", None, None, r"contains '\.\.'"),
        ("/tmp/evil.txt", None, None, "has an absolute path"),
        ("good/link", "../../etc/passwd", None, "points outside"),
        ("good/abs", "/etc/passwd", None, "points to the absolute path"),
        ("good/hard", "../outside", tarfile.LNKTYPE, "points outside"),
        ("good/dev", "", tarfile.CHRTYPE, "device, fifo or other special file"),
    ],
)
def test_unsafe_tar_members_are_refused(tmp_path, name, link, kind, message):
    archive = tmp_path / "a.tar.gz"
    if kind == tarfile.CHRTYPE:
        with tarfile.open(archive, "w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.type = tarfile.CHRTYPE
            tar.addfile(info)
    else:
        _tar_with(archive, name, link=link, kind=kind)
    dest = tmp_path / "out"
    with pytest.raises(CnnkitError, match=message) as err:
        extract_archive(archive, dest)
    assert str(archive) in str(err.value)
    assert not (tmp_path / "evil.txt").exists() and not (dest / "good").exists()


def test_oversize_member_refused_and_good_archive_extracted(tmp_path):
    archive = tmp_path / "a.tar.gz"
    _tar_with(archive, "good/big.bin", bytes(5000))
    with pytest.raises(CnnkitError, match=r"'good/big\.bin' is 5000 bytes, over the limit of 4096"):
        extract_archive(archive, tmp_path / "out", max_member_bytes=4096)
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out/good/big.bin").stat().st_size == 5000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good"]  # no staging left


def test_zip_traversal_refused(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr("../evil.txt", "bad")
    with pytest.raises(CnnkitError, match=r"a\.zip: member '\.\./evil\.txt' contains"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


# ---------------------------------------------------------------- pickles


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_malicious_cifar_batch_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = {b"data": _Evil(marker), b"labels": [0]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(CnnkitError, match=r"data_batch_1: the pickle asks for (posix|nt)\.system"):
        cifar10(tmp_path, verify=False)
    assert not marker.exists()
    for evil, name in ((_EvilEval(), "builtins.eval"),):
        with pytest.raises(CnnkitError, match=name):
            restricted_loads(pickle.dumps(evil), source="x.pkl")


def test_truncated_pickle_names_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)
    (folder / "data_batch_1").write_bytes(data[: len(data) // 2])
    with pytest.raises(CnnkitError, match=r"data_batch_1: truncated or not a valid pickle"):
        cifar10(tmp_path, verify=False)


# ---------------------------------------------------------------- masks and images


def _seg_folders(tmp_path: Path, mask: np.ndarray, mode: str = "L"):
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    Image.fromarray(np.zeros((*mask.shape[:2], 3), np.uint8)).save(tmp_path / "img/a.jpg")
    Image.fromarray(mask, mode).save(tmp_path / "msk/a.png")
    return tmp_path / "img", tmp_path / "msk"


def test_mask_value_out_of_range_names_file_and_value(tmp_path):
    mask = np.zeros((6, 7), np.uint8)
    mask[1, 1], mask[2, 2] = 2, 5
    images, masks = _seg_folders(tmp_path, mask)
    ok = segmentation_folder(images, masks, num_classes=6)
    assert torch.equal(ok[0][1], torch.from_numpy(mask.astype(np.int64)))
    ds = segmentation_folder(images, masks, num_classes=3)
    with pytest.raises(
        CnnkitError, match=r"a\.png: mask value 5 .* outside the class range 0\.\.2"
    ):
        ds[0]


def test_palette_masks_and_unknown_colour(tmp_path):
    palette = [(0, 0, 0), (255, 0, 0), (0, 128, 255)]
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 2] = palette[2]
    rgb[3, 0] = palette[1]
    images, masks = _seg_folders(tmp_path, rgb, "RGB")
    expected = np.zeros((4, 5), np.int64)
    expected[1, 2], expected[3, 0] = 2, 1
    assert np.array_equal(segmentation_folder(images, masks, palette)[0][1].numpy(), expected)
    rgb[0, 0] = (9, 9, 9)
    Image.fromarray(rgb).save(masks / "a.png")
    with pytest.raises(
        CnnkitError,
        match=r"a\.png: 1 pixels have colours not in the palette \(e\.g\. \(9, 9, 9\)\)",
    ):
        segmentation_folder(images, masks, palette)[0]


def test_undecodable_and_truncated_images_name_file(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "cat/good.png")
    (tmp_path / "dog/broken.jpg").write_bytes(b"this is not a jpeg")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, "PNG"
    )
    (tmp_path / "dog/truncated.png").write_bytes(buf.getvalue()[:500])
    ds = image_folder(tmp_path)
    assert ds.classes == ["cat", "dog"] and ds.targets == [0, 1, 1]
    image, label = ds[0]
    assert image.shape == (3, 8, 8) and torch.allclose(image, torch.full_like(image, 200 / 255))
    with pytest.raises(CnnkitError, match=r"broken\.jpg: cannot decode the image"):
        ds[1]
    with pytest.raises(CnnkitError, match=r"truncated\.png: cannot decode the image"):
        ds[2]


# ================================================================ issue 22: bounded parsing,
# paths inside their root, damaged files as CnnkitErrors. Each bomb is refused structurally
# (at the first alias / shared reference / over-large header), so nothing is expanded.


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------- YAML


_CONFIG_HEAD = """task: classification
dataset: {name: digits}
model: {name: lenet5}
compile: {loss: sparse_categorical_crossentropy}
fit:
  epochs: 1
"""


def _yaml_bomb(levels: int = 9) -> str:
    lines = ["  l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return _CONFIG_HEAD + "\n".join(lines) + "\n"


def test_yaml_billion_laughs_is_refused_at_its_first_alias(tmp_path):
    from cnnkit._core.errors import ConfigError
    from cnnkit.cli.recipes import load_config

    path = tmp_path / "bomb.yaml"
    path.write_text(_yaml_bomb())  # 9 levels: 9**9 = 387 million strings once expanded
    assert len(path.read_bytes()) < 1500
    before = _peak_rss_mb()
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    # line 8 holds the first alias: the loader stops there, before expanding anything
    assert f"{path}, line 8: YAML aliases (*l0) are not allowed" in str(err.value)
    assert _peak_rss_mb() - before < 200


def test_yaml_merge_keys_and_too_many_values_are_refused(tmp_path, monkeypatch):
    from cnnkit._core import safe_yaml
    from cnnkit._core.errors import ConfigError
    from cnnkit.cli.recipes import load_config

    merge = tmp_path / "merge.yaml"
    merge.write_text(_CONFIG_HEAD + "  base: &b {epochs: 2}\n  other: {<<: *b}\n")
    with pytest.raises(ConfigError, match=r"merge\.yaml, line 8: YAML aliases \(\*b\)"):
        load_config(str(merge))
    monkeypatch.setattr(safe_yaml, "MAX_YAML_NODES", 50)
    many = tmp_path / "many.yaml"
    many.write_text(_CONFIG_HEAD + "  big: [" + ", ".join(["1"] * 60) + "]\n")
    with pytest.raises(ConfigError, match=r"many\.yaml holds more than 50 YAML values"):
        load_config(str(many))
    monkeypatch.setattr(safe_yaml, "MAX_YAML_BYTES", 100)
    with pytest.raises(ConfigError, match=r"many\.yaml is \d+ bytes, over the limit of 100"):
        load_config(str(many))


def test_yaml_nested_too_deeply_is_a_config_error(tmp_path):
    from cnnkit._core.errors import ConfigError
    from cnnkit.cli.recipes import load_config

    deep = tmp_path / "deep.yaml"
    deep.write_text(_CONFIG_HEAD + "  x: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml: the YAML is nested too deeply"):
        load_config(str(deep))


def test_run_config_is_written_without_anchors_and_read_back(tmp_path):
    from cnnkit.cli.run_folder import read_config, write_config

    shared = [1, 2, 3]
    config = {"dataset": {"name": "digits", "args": {"a": shared, "b": shared}}}
    write_config(tmp_path, config, ["train", "x.yaml"])
    text = (tmp_path / "config.yaml").read_text()
    assert "&" not in text and "*" not in text
    back = read_config(tmp_path)
    assert back["dataset"] == config["dataset"] and back["command"] == "cnnkit train x.yaml"
    (tmp_path / "config.yaml").write_text("a: &x [1]\nb: *x\n")
    with pytest.raises(CnnkitError, match="YAML aliases"):
        read_config(tmp_path)


def test_shipped_recipes_hold_no_anchors():
    import yaml

    from cnnkit.cli.recipes import RECIPE_DIR, list_recipes, load_config

    for name in list_recipes():
        events = yaml.parse((RECIPE_DIR / f"{name}.yaml").read_text())
        assert not any(isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None) for e in events)
        load_config(name)  # through the bounded loader


def test_short_repr_is_exact_when_short_and_bounded_when_not():
    from cnnkit._core.errors import short_repr

    for value in (1, "abc", {"name": "x", "args": {"a": [1, (2,)]}}, (), {1}, b"\x00", None):
        assert short_repr(value) == repr(value)
    shared = [1] * 9
    for _ in range(12):  # 9**13 elements if walked
        shared = [shared] * 9
    text = short_repr(shared, limit=120)
    assert len(text) == 120 and text.startswith("[[[[") and text.endswith("...")
    assert len(short_repr("x" * 10**7)) == 200


def test_recipe_error_truncates_a_huge_value(tmp_path):
    from cnnkit._core.errors import ConfigError
    from cnnkit.cli.recipes import load_config

    path = tmp_path / "long.yaml"
    path.write_text(_CONFIG_HEAD.replace("epochs: 1", "epochs: " + "9" * 200_000 + "x"))
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    msg = str(err.value)
    assert "fit.epochs must be a positive int; received '9999" in msg and len(msg) < 600


# ---------------------------------------------------------------- pickles


def _memo_bomb(levels: int = 12) -> bytes:
    """A protocol-2 CIFAR-like dict whose 'data' is a list holding the same list 9 times,
    nested ``levels`` deep (9**(levels+1) elements to np.asarray), in a few hundred bytes."""
    out = b"\x80\x02]q\x00(" + b"K\x01" * 9 + b"e"  # memo 0 = [1] * 9
    for i in range(1, levels + 1):  # memo i = [memo i-1] * 9
        out += b"]q" + bytes([i]) + b"(" + (b"h" + bytes([i - 1])) * 9 + b"e"
    key_data, key_labels = b"X\x04\x00\x00\x00data", b"X\x06\x00\x00\x00labels"
    return b"\x80\x02}(" + key_data + out[2:] + key_labels + b"]u."


def test_cifar_memo_bomb_fails_at_the_first_shared_list(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    bomb = _memo_bomb()
    assert len(bomb) < 400
    (folder / "data_batch_1").write_bytes(bomb)
    before = _peak_rss_mb()
    with pytest.raises(
        CnnkitError,
        match=r"data_batch_1: the pickle refers a second time to a list of 9 it built before",
    ):
        cifar10(tmp_path, verify=False)
    assert _peak_rss_mb() - before < 200


def test_shared_containers_refused_shared_atoms_allowed():
    big = b"y" * 1000
    for value, kind in (([(1, 2)] * 2, "tuple of 2"), ([{1: 2}] * 2, "dict of 1"),
                        ([big, big], "bytes of 1000")):  # fmt: skip
        with pytest.raises(
            CnnkitError, match=f"x.pkl: the pickle refers a second time to a {kind}"
        ):
            restricted_loads(pickle.dumps(value, protocol=2), source="x.pkl")
    arrays = {b"a": np.arange(6, dtype=np.uint8).reshape(2, 3), b"b": np.zeros(3, np.float32)}
    for protocol in range(6):  # NumPy's own sharing (functions, dtypes, short strings) is fine
        back = restricted_loads(pickle.dumps(arrays, protocol=protocol))
        assert np.array_equal(back[b"a"], arrays[b"a"]) and back[b"b"].dtype == np.float32


def test_pickle_opcode_budget(monkeypatch):
    from cnnkit.data import safe_pickle

    monkeypatch.setattr(safe_pickle, "MAX_PICKLE_OPCODES", 100)
    with pytest.raises(CnnkitError, match=r"y\.pkl: the pickle holds more than 100 opcodes"):
        restricted_loads(pickle.dumps(list(range(200))), source="y.pkl")
    assert restricted_loads(pickle.dumps(list(range(20)))) == list(range(20))


@pytest.mark.parametrize(
    "data, labels, message",
    [
        ([[0] * 3072, [0] * 3072], [0, 1], r"'data' must be a uint8 array \(N, 3072\) or N x 3072 bytes; found a list"),
        (bytes(3072 * 2 + 5), [0, 1], r"'data' holds 6149 bytes, not a whole number of 3072-byte"),
        (np.zeros((2, 3072), np.float32), [0, 1], r"'data' must be uint8 rows of 3072 values"),
        (np.zeros((2, 3072), np.uint8), [0, "cat"], r"'labels' holds a str; expected integer labels"),
        (np.zeros((2, 3072), np.uint8), [0], r"2 images but 'labels' is a list of 1"),
        (np.zeros((2, 3072), np.uint8), np.zeros(2, np.float64), r"2 images but \(2,\) float64"),
    ],
)  # fmt: skip
def test_cifar_batch_layout_is_checked_before_converting(tmp_path, data, labels, message):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = {b"data": data, b"labels": labels}
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(CnnkitError, match=r"data_batch_1: " + message):
        cifar10(tmp_path, verify=False)


def test_cifar_batch_as_raw_bytes_loads(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    pixels = np.arange(2 * 3072, dtype=np.uint8)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"):
        batch = {b"data": pixels.tobytes(), b"labels": [3, 9]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    ds = cifar10(tmp_path, verify=False)
    assert len(ds) == 10 and ds.y.tolist() == [3, 9] * 5
    assert torch.equal(ds.x[1].reshape(-1), torch.from_numpy(pixels[3072:]))


# ---------------------------------------------------------------- IDX


def test_idx_dimensions_overflowing_int64_are_refused(tmp_path):
    raw = bytes([0, 0, 8, 4]) + np.array([1 << 16] * 4, ">u4").tobytes()  # 2**64 elements
    (tmp_path / "bomb-idx").write_bytes(raw)
    with pytest.raises(CnnkitError, match=r"bomb-idx: the header announces shape \(65536, "
                       r"65536, 65536, 65536\) \(18446744073709551616 bytes"):  # fmt: skip
        read_idx(tmp_path / "bomb-idx")
    (tmp_path / "bomb-idx.gz").write_bytes(gzip.compress(raw + bytes(1000)))
    with pytest.raises(CnnkitError, match="bomb-idx.gz: the header announces shape"):
        read_idx(tmp_path / "bomb-idx.gz")
    many = bytes([0, 0, 8, 200]) + bytes(800)
    (tmp_path / "dims-idx").write_bytes(many)
    with pytest.raises(CnnkitError, match=r"dims-idx: the IDX header announces 200 dimensions"):
        read_idx(tmp_path / "dims-idx")


def test_gzip_idx_reads_no_further_than_its_header(tmp_path):
    # 2 declared bytes followed by 50 MB of zeros: reading stops after 3 bytes of data
    raw = bytes([0, 0, 8, 1]) + np.array([2], ">u4").tobytes() + bytes(50_000_000)
    (tmp_path / "long.gz").write_bytes(gzip.compress(raw, compresslevel=1))
    before = _peak_rss_mb()
    with pytest.raises(CnnkitError, match=r"long\.gz: the header announces shape \(2,\) \(2 "
                       r"bytes of data\) but the file holds 3"):  # fmt: skip
        read_idx(tmp_path / "long.gz")
    assert _peak_rss_mb() - before < 40


# ---------------------------------------------------------------- COCO / VIA JSON


def _coco(tmp_path: Path, images=None, annotations=None, categories=None) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "images/a.png")
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 12}]
        if images is None else images,
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 3]}]
        if annotations is None else annotations,
        "categories": [{"id": 1, "name": "thing"}] if categories is None else categories,
    }  # fmt: skip
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_file_names_stay_inside_the_images_folder(tmp_path):
    from cnnkit.data import coco_instances

    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "outside.png")
    images = tmp_path / "images"
    for name, message in (
        ("../outside.png", r"image 1: '\.\./outside\.png' leads outside .*images"),
        (str(tmp_path / "outside.png"), "image 1: the file name .* is an absolute path"),
        ("link.png", r"image 1: 'link\.png' leads outside .*images"),
    ):
        path = _coco(tmp_path, images=[{"id": 1, "file_name": name}], annotations=[])
        (images / "link.png").unlink(missing_ok=True)
        (images / "link.png").symlink_to(tmp_path / "outside.png")
        with pytest.raises(CnnkitError, match=message) as err:
            coco_instances(images, path)
        assert str(path) in str(err.value)
    (images / "inner.png").symlink_to(images / "a.png")  # a link that stays inside is fine
    path = _coco(tmp_path, images=[{"id": 1, "file_name": "inner.png"}], annotations=[])
    assert coco_instances(images, path)[0][0].shape == (3, 10, 12)


def test_coco_negative_box_names_the_annotation(tmp_path):
    from cnnkit.data import coco_instances

    ann = [{"id": 77, "image_id": 1, "category_id": 1, "bbox": [5, 5, -3, 2]}]
    with pytest.raises(CnnkitError, match=r"annotation 77 has the box \[5, 5, -3, 2\] \[x, y, w, h\] "
                       "with a negative width or height"):  # fmt: skip
        coco_instances(tmp_path / "images", _coco(tmp_path, annotations=ann))


@pytest.mark.parametrize(
    "part, value, message",
    [
        ("images", {"a": 1}, r"'images' must be a list; found a dict"),
        ("images", [[1, "a.png"]], r"images\[0\] must be an object; found \[1, 'a\.png'\]"),
        ("images", [{"id": 1}], r"images\[0\] has no 'file_name'"),
        ("images", [{"id": 1, "file_name": "a.png", "height": "ten"}], r"image 1 'height' must be an integer"),
        ("images", [{"id": 1, "file_name": 7}], r"image 1: the file name 7 is not a relative path"),
        ("annotations", [{"id": 5, "image_id": 1}], r"annotation 5 has no 'category_id'"),
        ("annotations", [{"id": 5, "image_id": 1, "category_id": 1, "bbox": ["a", 1, 2, 3]}], r"annotation 5 bbox holds 'a'; expected finite numbers"),
        ("annotations", [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 2]}], r"annotation 5 bbox must be \[x, y, w, h\]"),
        ("annotations", [{"id": 5, "image_id": 1, "category_id": 1, "segmentation": [[1, 2, "x", 4, 5, 6]]}], r"annotation 5 segmentation polygon 0 holds 'x'"),
        ("annotations", [{"id": 5, "image_id": 1, "category_id": 1, "segmentation": {"counts": "abc"}}], r"annotation 5 segmentation: an RLE needs 'counts'"),
        ("annotations", [{"id": 5, "image_id": 1, "category_id": 1, "segmentation": "x"}], r"annotation 5 segmentation must be a list of polygons"),
        ("annotations", [3], r"annotations\[0\] must be an object"),
        ("categories", [{"id": 1}], r"categories\[0\] needs 'id' and 'name'"),
        ("categories", [{"id": "one", "name": "x"}], r"categories\[0\] 'id' must be an integer"),
        ("images", [{"id": "x1", "file_name": "a.png"}], r"not a well-formed COCO file: ValueError.* \(in images\[0\]\)"),
    ],
)  # fmt: skip
def test_malformed_coco_entries_are_named(tmp_path, part, value, message):
    from cnnkit.data import coco_instances

    path = _coco(tmp_path, **{part: value})
    with pytest.raises(CnnkitError, match=message) as err:
        coco_instances(tmp_path / "images", path)
    assert str(err.value).startswith(str(path))


def test_coco_rle_of_another_size_is_refused_before_decoding(tmp_path):
    from cnnkit.data import coco_instances

    rle = {"size": [60000, 60000], "counts": [3600000000]}  # 3.6 GB if decoded
    ann = [{"id": 5, "image_id": 1, "category_id": 1, "segmentation": rle}]
    ds = coco_instances(tmp_path / "images", _coco(tmp_path, annotations=ann))
    with pytest.raises(CnnkitError, match=r"a\.png: an RLE mask is \(60000, 60000\) but the "
                       r"image is \(10, 12\)"):  # fmt: skip
        ds[0]


def test_annotation_caps(tmp_path, monkeypatch):
    from cnnkit.data import coco, coco_instances

    two = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "a.png"}]
    path = _coco(tmp_path, images=two, annotations=[])
    monkeypatch.setattr(coco, "MAX_IMAGES", 1)
    with pytest.raises(CnnkitError, match=r"2 entries in 'images', over the limit of 1 "
                       r"\(cnnkit\.data\.coco\.MAX_IMAGES"):  # fmt: skip
        coco_instances(tmp_path / "images", path)
    monkeypatch.setattr(coco, "MAX_POINTS", 3)
    poly = [{"id": 5, "image_id": 1, "category_id": 1, "segmentation": [list(range(8))]}]
    with pytest.raises(CnnkitError, match=r"annotation 5 segmentation polygon 0 holds 8 numbers"):
        coco_instances(tmp_path / "images", _coco(tmp_path, annotations=poly))
    monkeypatch.setattr(coco, "MAX_JSON_BYTES", 50)
    with pytest.raises(CnnkitError, match=r"instances\.json is \d+ bytes, over the limit of 50"):
        coco_instances(tmp_path / "images", path)


def _via(tmp_path: Path, regions, filename: str = "a.png") -> Path:
    folder = tmp_path / "via"
    folder.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(folder / "a.png")
    entry = {"filename": filename, "size": 1, "regions": regions}
    (folder / "via_region_data.json").write_text(json.dumps({"a.png1": entry}))
    return folder


@pytest.mark.parametrize(
    "regions, message",
    [
        ([{"region_attributes": {}}], r"\(a\.png, region 0\): the region has no 'shape_attributes'"),
        ([{"shape_attributes": {"name": "rect", "x": 1, "y": 1, "height": 3}}], r"region 0\): a rect needs x, y, width and height; 'width' is missing"),
        ([{"shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": -2, "height": 3}}], r"region 0\): a rect with width -2\.0"),
        ([{"shape_attributes": {"name": "polygon", "all_points_x": [1, "b", 3], "all_points_y": [1, 2, 3]}}], r"region 0\): all_points_x holds 'b'"),
        ([{"shape_attributes": {"name": "polygon", "all_points_x": 5, "all_points_y": [1]}}], r"region 0\): all_points_x must be a list of numbers"),
        ([{"shape_attributes": [1, 2]}], r"region 0\): 'shape_attributes' must be an object"),
        (["polygon"], r"\(a\.png\), region 0: a region must be an object"),
        ("lots", r"\(a\.png\): 'regions' must be a list or an object"),
    ],
)  # fmt: skip
def test_malformed_via_regions_are_named(tmp_path, regions, message):
    from cnnkit.data import via_instances

    folder = _via(tmp_path, regions)
    with pytest.raises(CnnkitError, match=message) as err:
        via_instances(folder)
    assert str(folder / "via_region_data.json") in str(err.value)


def test_via_file_names_stay_inside_the_folder(tmp_path):
    from cnnkit.data import via_instances

    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "outside.png")
    folder = _via(tmp_path, [], filename="../outside.png")
    with pytest.raises(CnnkitError, match=r"entry 'a\.png1': '\.\./outside\.png' leads outside"):
        via_instances(folder)


# ---------------------------------------------------------------- folders: links that leave


def test_folder_readers_refuse_links_that_leave_their_root(tmp_path):
    mask = np.zeros((6, 7), np.uint8)
    images, masks = _seg_folders(tmp_path, mask)
    Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(tmp_path / "secret.png")
    (images / "b.png").symlink_to(tmp_path / "secret.png")
    Image.fromarray(mask).save(masks / "b.png")
    with pytest.raises(CnnkitError, match=r"segmentation_folder: image: 'b\.png' leads outside"):
        segmentation_folder(images, masks)
    root = tmp_path / "classes"
    (root / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "cat/x.png")
    assert len(image_folder(root)) == 1
    (root / "dog").symlink_to(tmp_path / "img")  # a class folder elsewhere on disk
    with pytest.raises(CnnkitError, match=r"class folder 'dog': 'dog' leads outside"):
        image_folder(root)


# ---------------------------------------------------------------- damaged archives


def test_truncated_tar_gz_is_a_cnnkit_error_and_leaves_nothing(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(3):
            data = np.random.default_rng(i).bytes(50_000)
            info = tarfile.TarInfo(f"d/f{i}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive.write_bytes(archive.read_bytes()[:60_000])
    dest = tmp_path / "out"
    with pytest.raises(CnnkitError, match=r"a\.tar\.gz: truncated or corrupt archive") as err:
        extract_archive(archive, dest)
    assert "delete it and download it again" in str(err.value)
    assert not dest.exists()  # created by the call, removed again
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept/mine.txt").write_text("x")
    with pytest.raises(CnnkitError):
        extract_archive(archive, tmp_path / "kept")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["mine.txt"]


def test_tar_member_declaring_more_data_than_it_has(tmp_path):
    for declared in (10 << 30, 200_000):
        archive = tmp_path / "a.tar"
        info = tarfile.TarInfo("big.bin")
        info.size = declared
        header = info.tobuf(tarfile.GNU_FORMAT)
        archive.write_bytes(header + bytes(512))  # the header, then one block of data
        with pytest.raises(CnnkitError, match=r"a\.tar: truncated or corrupt archive after "
                           r"member 'big\.bin' \(ReadError") as err:  # fmt: skip
            extract_archive(archive, tmp_path / "out")
        assert str(archive) in str(err.value) and not (tmp_path / "out").exists()


def test_zip_with_a_bad_crc_names_the_member(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("bad.txt", "payload-payload")
    data = archive.read_bytes()
    archive.write_bytes(data.replace(b"payload-payload", b"payload-PAYLOAD"))
    with pytest.raises(CnnkitError, match=r"a\.zip: truncated or corrupt zip archive \(member "
                       r"'bad\.txt'\): BadZipFile"):  # fmt: skip
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_archive_member_count_cap(tmp_path, monkeypatch):
    from cnnkit.data import download

    monkeypatch.setattr(download, "MAX_MEMBERS", 2)
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        for i in range(3):
            info = tarfile.TarInfo(f"f{i}")
            tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(CnnkitError, match=r"a\.tar: more than 2 members"):
        extract_archive(archive, tmp_path / "out")


# ---------------------------------------------------------------- other readers


def test_damaged_keras_zip_is_a_cnnkit_error(tmp_path):
    pytest.importorskip("h5py")
    from cnnkit.train.keras_file import read_keras_file

    path = tmp_path / "m.keras"
    config = json.dumps({"class_name": "Sequential", "config": {"layers": []}})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("config.json", config)
        zf.writestr("model.weights.h5", b"h5-weights-h5-weights")
    path.write_bytes(path.read_bytes().replace(b"h5-weights-h5-weights", b"h5-WEIGHTS-h5-weights"))
    with pytest.raises(CnnkitError, match=r"m\.keras: a damaged \.keras zip \(BadZipFile"):
        read_keras_file(path)


def test_text_csv_field_over_the_csv_limit_is_a_cnnkit_error(tmp_path):
    from cnnkit.data.text import text_csv

    path = tmp_path / "big.csv"
    path.write_text('1,"' + "a" * 200_000 + '"\n')
    with pytest.raises(CnnkitError, match=r"big\.csv: not a readable CSV \(field larger"):
        text_csv(path)


def test_decompression_bomb_image_is_a_cnnkit_error(tmp_path, monkeypatch):
    from cnnkit.data.images import load_image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels > 2 x the limit
    with pytest.raises(CnnkitError, match=r"bomb\.png: cannot decode the image"):
        load_image(tmp_path / "bomb.png")
