"""Security: loading never executes code, archives cannot write outside their target,
downloads are checked before use, YAML is read safely, the HTML report escapes what the
user provides."""

from __future__ import annotations

import io
import pickle
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

import cnnkit
from cnnkit import CnnkitError
from cnnkit.models import create

SRC = Path(__file__).resolve().parents[1] / "src" / "cnnkit"
SOURCES = sorted(SRC.rglob("*.py"))


class Boom:
    """Unpickling this runs ``Path(marker).touch()``: proof of code execution."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _code(path: Path) -> str:
    """The source without comments (a mention in a comment is not a call)."""
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


# ---------------------------------------------------------------- grep-based guarantees


def test_every_torch_load_in_src_uses_weights_only_true():
    calls = []
    for path in SOURCES:
        for match in re.finditer(r"torch\.load\(", _code(path)):
            text = _code(path)[match.start() : match.start() + 400]
            calls.append((path.name, "weights_only=True" in text.split(")\n")[0] + text[:400]))
    assert all(ok for _, ok in calls), [name for name, ok in calls if not ok]


def test_no_unsafe_yaml_or_pickle_loading_in_src():
    offenders = []
    for path in SOURCES:
        code = _code(path)
        for line in code.splitlines():
            if re.search(r"yaml\.(unsafe_load|full_load|load_all)\(", line):
                offenders.append((path.name, line.strip()))
            if re.search(r"yaml\.load\(", line) and "SafeLoader" not in line:
                offenders.append((path.name, line.strip()))
            if re.search(r"\bpickle\.loads?\(|\bmarshal\.loads?\(|\bdill\.", line):
                offenders.append((path.name, line.strip()))
            if re.search(r"(?<![\w.])(eval|exec)\(", line):
                offenders.append((path.name, line.strip()))
    assert not offenders, offenders


# ---------------------------------------------------------------- model and run folders


def test_folder_with_only_a_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "shared_model"
    folder.mkdir()
    (folder / "model.pt").write_bytes(pickle.dumps(Boom(str(marker))))
    with pytest.raises(CnnkitError, match="never unpickles") as info:
        cnnkit.load(folder)
    assert "model.pt" in str(info.value)
    assert not marker.exists()


def test_config_pointing_at_a_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "m"
    cnnkit.Model(create("mnist_cnn")).save(folder)
    (folder / "model.pt").write_bytes(pickle.dumps(Boom(str(marker))))
    cfg = (folder / "model.json").read_text().replace('"model.safetensors"', '"model.pt"')
    (folder / "model.json").write_text(cfg)
    with pytest.raises(CnnkitError, match="model.pt"):
        cnnkit.load(folder)
    assert not marker.exists()


def test_config_cannot_name_an_arbitrary_class_or_a_path_outside(tmp_path):
    folder = tmp_path / "m"
    cnnkit.Model(create("mnist_cnn")).save(folder)
    original = (folder / "model.json").read_text()
    (folder / "model.json").write_text(
        original.replace('"model.safetensors"', '"../../etc/passwd.safetensors"')
    )
    with pytest.raises(CnnkitError, match="passwd"):
        cnnkit.load(folder)
    import json

    cfg = json.loads(original)
    cfg["architecture"] = {"kind": "config", "class": "os.system", "config": "echo hi"}
    (folder / "model.json").write_text(json.dumps(cfg))
    with pytest.raises(CnnkitError, match="os.system"):
        cnnkit.load(folder)


def test_safetensors_holds_no_code(tmp_path):
    folder = cnnkit.Model(create("mnist_cnn")).save(tmp_path / "m")
    data = (folder / "model.safetensors").read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert data[8 : 8 + header].lstrip().startswith(b"{")  # a JSON header, then raw tensors
    assert b"__reduce__" not in data and b"\x80\x04" not in data[: 8 + header]


# ---------------------------------------------------------------- archives


def _tar(path: Path, members) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(extra)
                tar.addfile(info, io.BytesIO(extra))
            else:
                info.type = {
                    "sym": tarfile.SYMTYPE,
                    "hard": tarfile.LNKTYPE,
                    "fifo": tarfile.FIFOTYPE,
                }[kind]
                info.linkname = extra or ""
                tar.addfile(info)
    return path


@pytest.mark.parametrize(
    ("name", "members"),
    [
        ("absolute", [("/tmp/cnnkit-evil.txt", "file", b"x")]),
        ("dotdot", [("data/../../evil.txt", "file", b"x")]),
        ("symlink-out", [("data/link", "sym", "/etc"), ("data/link/passwd", "file", b"x")]),
        ("symlink-dotdot", [("data/link", "sym", "../../..")]),
        ("hardlink-out", [("data/h", "hard", "/etc/passwd")]),
        ("fifo", [("data/pipe", "fifo", None)]),
    ],
)
def test_unsafe_tar_members_are_refused_and_nothing_is_written(tmp_path, name, members):
    from cnnkit.data.download import extract_archive

    archive = _tar(tmp_path / f"{name}.tar", members)
    dest = tmp_path / "dest"
    with pytest.raises(CnnkitError) as info:
        extract_archive(archive, dest)
    assert members[-1][0] in str(info.value) or members[0][0] in str(info.value)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/cnnkit-evil.txt").exists()
    written = [p for p in dest.rglob("*") if p.is_file()] if dest.exists() else []
    assert not written


def test_zip_with_absolute_or_dotdot_member_and_oversize_members_are_refused(tmp_path):
    from cnnkit.data.download import extract_archive

    for member in ("/abs.txt", "../up.txt"):
        path = tmp_path / f"z{len(member)}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(member, b"x")
        with pytest.raises(CnnkitError, match=re.escape(member)):
            extract_archive(path, tmp_path / "dest")
    big = _tar(tmp_path / "big.tar", [("data/big.bin", "file", b"0" * 4096)])
    with pytest.raises(CnnkitError, match="big.bin"):
        extract_archive(big, tmp_path / "dest2", max_member_bytes=1024)
    assert extract_archive(big, tmp_path / "dest3") and (tmp_path / "dest3/data/big.bin").stat()


def test_download_with_a_wrong_checksum_is_not_used(tmp_path):
    from cnnkit.data.download import RemoteFile, download_file

    source = tmp_path / "server" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(b"tampered content")
    remote = RemoteFile("data.bin", (source.as_uri(),), sha256="0" * 64)
    with pytest.raises(CnnkitError, match="data.bin"):
        download_file(remote, tmp_path / "cache")
    assert not (tmp_path / "cache" / "data.bin").exists()


# ---------------------------------------------------------------- YAML and the report


def test_yaml_recipe_with_a_python_tag_is_refused_without_running_it(tmp_path):
    recipes = pytest.importorskip("cnnkit.cli.recipes")
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(
        f"model: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{marker}']]\n"
    )
    with pytest.raises(CnnkitError):
        recipes.load_config(str(path))
    assert not marker.exists()


def test_html_report_escapes_user_strings(tmp_path):
    report = pytest.importorskip("cnnkit.report")
    import json

    run = tmp_path / "run"
    run.mkdir()
    evil = "<script>alert('x')</script>"
    (run / "config.yaml").write_text(
        f'name: "{evil}"\ncommand: "cnnkit train {evil}"\nclasses: ["<b>cat</b>", "dog&co"]\n'
    )
    (run / "summary.txt").write_text(f"layer <img src=x onerror=alert(1)> {evil}\n")
    (run / "environment.json").write_text(json.dumps({"host": evil}))
    page = report.write_run_report(run).read_text()
    assert "<script>" not in page and "<img src=x" not in page and "<b>cat" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;cat" in page


def test_json_files_are_read_with_a_bound_and_their_damage_named(tmp_path):
    """One reader for every JSON file cnnkit parses: over the size bound (checked before
    reading), nested past Python's parser, not UTF-8 or not JSON: a CnnkitError naming the
    file, never a RecursionError or a read of the whole file."""
    from cnnkit._core.json_file import read_json

    path = tmp_path / "m.json"
    path.write_text('{"a": [1, 2]}')
    assert read_json(path, 100, "a test file") == {"a": [1, 2]}
    with pytest.raises(CnnkitError, match=r"m\.json is 13 bytes, over the limit of 12 for a t"):
        read_json(path, 12, "a test file")
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(CnnkitError, match=r"m\.json: the JSON is nested too deeply"):
        read_json(path, 1 << 20, "a test file")
    path.write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(CnnkitError, match=r"m\.json is damaged: not UTF-8"):
        read_json(path, 100, "a test file")
    path.write_text('{"a": ')
    with pytest.raises(CnnkitError, match=r"m\.json is damaged: not valid JSON"):
        read_json(path, 100, "a test file")
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "absent.json", 100, "a test file")


def test_a_shared_run_folder_with_hostile_files_still_gets_a_report(tmp_path, caplog):
    """A report is built from files another person's run folder holds: a metrics.json
    nested 200,000 deep, a history.csv with a 1 MB field and an environment.json over the
    size bound are each reported as not recorded (and logged); the page is written."""
    from cnnkit._core.json_file import MAX_RUN_FILE_BYTES
    from cnnkit.report import html as report_html
    from cnnkit.report.plots import read_history_csv

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: shared\n")
    (run / "metrics.json").write_text("[" * 200_000 + "]" * 200_000)
    (run / "history.csv").write_text("epoch,loss\n0," + "1" * (1 << 20) + "\n")
    with open(run / "environment.json", "wb") as fh:  # sparse: no disk used
        fh.truncate(MAX_RUN_FILE_BYTES + 1)
    with pytest.raises(CnnkitError, match=r"history\.csv is not a history CSV"):
        read_history_csv(run / "history.csv")
    page = report_html.write_run_report(run).read_text()
    assert "shared" in page and "metrics.json" in page
    logged = caplog.text
    assert "nested too deeply" in logged and "not a history CSV" in logged
    assert "over the limit" in logged
