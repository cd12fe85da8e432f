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
