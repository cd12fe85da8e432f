"""Files from others are data, never instructions (issue 22): the attacks, in subprocesses.

Every payload runs in its own Python subprocess under a memory watchdog. Each case
asserts that the subprocess

- ends in a ``CnnkitError`` (API cases) or a clean non-zero CLI exit whose stderr holds
  no traceback (CLI cases), within seconds;
- grows its resident memory by less than 500 MB over what importing cnnkit and torch
  costs (``import torch`` alone is ~0.5 GB resident with the CUDA build, so the bound is
  on what the payload adds: the bombs below reached several GB before the fixes);
- creates, changes or deletes no file anywhere in the test's scratch tree, which holds
  the attacker's targets (an extraction folder, a file to overwrite, a folder to create),
  the payload itself and the subprocess's HOME and working directory.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

MB = 1 << 20
GROWTH_LIMIT = 500 * MB  # resident memory a payload may add over the imports
PAYLOAD_SECONDS = 20.0  # time from the end of the imports to the error ("within seconds")
WALL_LIMIT = 180.0  # the whole subprocess, imports included, on a loaded 2-core CI box

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the watchdog reads /proc (Linux only)"
)

# ------------------------------------------------------------------ the harness

_CHILD = r"""
import json, os, sys, time, traceback

def rss():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

import cnnkit, cnnkit.train, cnnkit.train.loading, cnnkit.data, cnnkit.cli.main  # noqa
from cnnkit import CnnkitError
print(json.dumps({"baseline": rss()}), flush=True)
ARGS = json.loads(sys.argv[1])
PAYLOAD = open(sys.argv[2]).read()
t0 = time.perf_counter()
try:
    exec(compile(PAYLOAD, "<payload>", "exec"), {"ARGS": ARGS, "__name__": "payload"})
    out = {"outcome": "returned"}
except CnnkitError as err:
    out = {"outcome": "CnnkitError", "type": type(err).__name__, "message": str(err)[:4000]}
except BaseException as err:
    out = {"outcome": "other", "type": type(err).__name__,
           "message": traceback.format_exc()[-4000:]}
out["seconds"] = time.perf_counter() - t0
print(json.dumps(out), flush=True)
"""


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def _env(scratch: Path, outside: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOME=str(scratch / "home"),
        CNNKIT_DATA=str(scratch / "data"),
        MPLCONFIGDIR=str(outside / "mpl"),  # matplotlib's font cache is not an attack
        XDG_CACHE_HOME=str(outside / "cache"),
        TORCHINDUCTOR_CACHE_DIR=str(outside / "inductor"),
        PYTHONDONTWRITEBYTECODE="1",
        OMP_NUM_THREADS="1",
    )
    return env


def _watch(cmd: list[str], cwd: Path, env: dict[str, str], baseline: int | None):
    """Run ``cmd``; returns (returncode, stdout, stderr, peak RSS, baseline RSS).

    The watchdog kills the process once it holds more than baseline + GROWTH_LIMIT
    (the baseline: the child's own report after its imports, or the one given)."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out: list[str] = []
    err: list[str] = []
    t_out = threading.Thread(target=lambda: out.extend(proc.stdout))
    t_err = threading.Thread(target=lambda: err.extend(proc.stderr))
    t_out.start()
    t_err.start()
    start, peak, killed = time.monotonic(), 0, None
    base = baseline
    while proc.poll() is None:
        rss = _rss(proc.pid) or 0
        peak = max(peak, rss)
        if base is None and out:
            base = json.loads(out[0]).get("baseline")
        limit = (base if base is not None else 2048 * MB) + GROWTH_LIMIT
        if rss > limit:
            killed = (
                f"killed by the watchdog at {rss / MB:.0f} MB resident (limit {limit / MB:.0f})"
            )
            proc.kill()
        elif time.monotonic() - start > WALL_LIMIT:
            killed = f"killed after {WALL_LIMIT:.0f} s"
            proc.kill()
        time.sleep(0.01)
    t_out.join()
    t_err.join()
    if base is None and out and out[0].startswith("{"):
        base = json.loads(out[0]).get("baseline")
    assert killed is None, f"{killed}; stderr: {''.join(err)[-2000:]}"
    return proc.returncode, "".join(out), "".join(err), peak, base


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: kind, size and content hash (links: their target)."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                state[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                state[rel] = ("dir",)
            else:
                data = path.read_bytes()
                state[rel] = ("file", len(data), hashlib.sha256(data).hexdigest())
    return state


def _diff(before: dict, after: dict) -> list[str]:
    changes = [f"created {p}" for p in sorted(set(after) - set(before))]
    changes += [f"deleted {p}" for p in sorted(set(before) - set(after))]
    changes += [f"changed {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
    return changes


class Arena:
    """A scratch tree for one case: ``scratch/`` (watched) and ``outside/`` (caches)."""

    def __init__(self, tmp: Path):
        self.scratch = tmp / "scratch"
        self.outside = tmp / "outside"
        for sub in ("home", "cwd", "data", "victim"):
            (self.scratch / sub).mkdir(parents=True, exist_ok=True)
        self.outside.mkdir(exist_ok=True)
        (self.scratch / "victim" / "precious.txt").write_text("the user's own file\n")

    def api(self, payload: str, args: dict | None = None) -> dict:
        """Run ``payload`` (Python, sees ``ARGS``) after importing cnnkit; its outcome."""
        script = self.outside / "payload.py"
        script.write_text(textwrap.dedent(payload))
        before = _snapshot(self.scratch)
        rc, out, err, peak, base = _watch(
            [sys.executable, "-c", _CHILD, json.dumps(args or {}), str(script)],
            self.scratch / "cwd",
            _env(self.scratch, self.outside),
            None,
        )
        assert rc == 0 and out.strip(), f"the child failed (rc {rc}): {err[-3000:]}"
        result = json.loads(out.strip().splitlines()[-1])
        result.update(peak=peak, baseline=base)
        result["changes"] = _diff(before, _snapshot(self.scratch))
        return result

    def cli(self, argv: list[str], import_baseline: int) -> dict:
        before = _snapshot(self.scratch)
        t0 = time.monotonic()
        rc, out, err, peak, _ = _watch(
            [sys.executable, "-m", "cnnkit.cli.main", *argv],
            self.scratch / "cwd",
            _env(self.scratch, self.outside),
            import_baseline,
        )
        return {
            "rc": rc,
            "stdout": out,
            "stderr": err,
            "seconds": time.monotonic() - t0,
            "peak": peak,
            "baseline": import_baseline,
            "changes": _diff(before, _snapshot(self.scratch)),
        }


def assert_refused(result: dict, *needles: str) -> None:
    """An API case: a CnnkitError (message holding ``needles``), fast, small, no writes."""
    assert result["outcome"] == "CnnkitError", (
        f"expected a CnnkitError, got {result['outcome']} {result.get('type')}: "
        f"{result.get('message')}"
    )
    for needle in needles:
        assert needle in result["message"], (needle, result["message"])
    assert result["seconds"] < PAYLOAD_SECONDS, result["seconds"]
    assert result["peak"] - result["baseline"] < GROWTH_LIMIT, (
        f"the payload grew the process by {(result['peak'] - result['baseline']) / MB:.0f} MB"
    )
    assert result["changes"] == [], result["changes"]


def assert_cli_refused(result: dict, *needles: str) -> None:
    """A CLI case: non-zero exit, a one-line ``cnnkit: error:``, no traceback, no writes."""
    assert result["rc"] not in (0, None), result
    assert result["rc"] > 0, f"killed by signal {-result['rc']}"
    assert "Traceback" not in result["stderr"], result["stderr"][-3000:]
    assert "cnnkit: error:" in result["stderr"], result["stderr"][-3000:]
    for needle in needles:
        assert needle in result["stderr"], (needle, result["stderr"])
    assert result["peak"] - result["baseline"] < GROWTH_LIMIT, (
        f"the command grew past the import baseline by "
        f"{(result['peak'] - result['baseline']) / MB:.0f} MB"
    )
    assert result["changes"] == [], result["changes"]


@pytest.fixture(scope="module")
def import_baseline(tmp_path_factory) -> int:
    """Peak resident memory of a process that only imports the CLI (torch included)."""
    tmp = tmp_path_factory.mktemp("baseline")
    code = "import cnnkit.cli.main, cnnkit.train.loading, cnnkit.data"
    peaks = []
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0
        peaks.append(usage.ru_maxrss * 1024)
    return max(peaks)


@pytest.fixture
def arena(tmp_path) -> Arena:
    return Arena(tmp_path)


# ------------------------------------------------------------------ a saved run to tamper with


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    """A genuine run folder (config.yaml, model.json, model.safetensors) of a small
    Sequential; the cases replace parts of its model.json (the weights' SHA-256 stays
    right: the attacker writes model.json too)."""
    import yaml

    import cnnkit
    from cnnkit import layers as L

    folder = tmp_path_factory.mktemp("run") / "run"
    net = cnnkit.Sequential(
        [L.Conv2D(4, 3, activation="relu"), L.Flatten(), L.Dense(3)], input_shape=(1, 8, 8)
    )
    model = cnnkit.Model(net)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", precision="fp32")
    model.save(folder)
    config = {
        "name": "tiny",
        "task": "classification",
        "seed": 0,
        "dataset": {"name": "digits", "args": {}},
        "model": {"name": "lenet5", "args": {}},
        "compile": {"optimizer": "sgd", "loss": "sparse_categorical_crossentropy"},
        "fit": {"epochs": 1, "batch_size": 8, "validation_split": 0.0},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def _tampered_run(saved: Path, arena: Arena, edit) -> Path:
    run = arena.scratch / "shared_run"
    shutil.copytree(saved, run)
    config = json.loads((run / "model.json").read_text())
    edit(config)
    (run / "model.json").write_text(json.dumps(config))
    return run


def _evil_tar(arena: Arena) -> Path:
    path = arena.scratch / "evil.tar"
    with tarfile.open(path, "w") as tar:
        data = b"written by an attacker\n"
        info = tarfile.TarInfo("pwned.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def _evil_layers(arena: Arena) -> dict[str, dict]:
    """The layer entries of the issue: each would write into ``victim/`` if called."""
    victim = arena.scratch / "victim"
    return {
        "extract_archive": {
            "module": "cnnkit.data.download",
            "class_name": "extract_archive",
            "config": {"archive": str(_evil_tar(arena)), "dest": str(victim / "extracted")},
        },
        "plot_history": {
            "module": "cnnkit.report.plots",
            "class_name": "plot_history",
            "config": {"history": {"loss": [1.0, 0.5]}, "path": str(victim / "precious.txt")},
        },
        "prepare": {
            "module": "cnnkit.cli.run_folder",
            "class_name": "prepare",
            "config": {"out": str(victim / "made"), "name": "x", "resume": False},
        },
        "cli_main": {
            "module": "cnnkit.cli.main",
            "class_name": "main",
            "config": {
                "argv": ["train", "digits-lenet5", "--epochs", "1", "--out", str(victim / "run")]
            },
        },
    }


EVIL = ["extract_archive", "plot_history", "prepare", "cli_main"]

LOAD = """
import cnnkit
cnnkit.load(ARGS["run"])
"""


@pytest.mark.parametrize("payload", EVIL)
def test_model_json_cannot_call_functions_through_load(payload, saved_run, arena):
    entry = _evil_layers(arena)[payload]
    run = _tampered_run(
        saved_run, arena, lambda c: c["architecture"]["config"]["layers"].insert(0, entry)
    )
    assert_refused(arena.api(LOAD, {"run": str(run)}), entry["class_name"])


@pytest.mark.parametrize("payload", EVIL)
def test_model_json_cannot_call_functions_through_cli_evaluate(
    payload, saved_run, arena, import_baseline
):
    entry = _evil_layers(arena)[payload]
    run = _tampered_run(
        saved_run, arena, lambda c: c["architecture"]["config"]["layers"].insert(0, entry)
    )
    assert_cli_refused(arena.cli(["evaluate", str(run)], import_baseline), entry["class_name"])


@pytest.mark.parametrize("payload", EVIL)
def test_nested_sequential_entry_cannot_call_functions(payload, saved_run, arena):
    entry = _evil_layers(arena)[payload]

    def nest(config):
        inner = {"name": "inner", "input_shape": None, "layers": [entry]}
        config["architecture"]["config"]["layers"].append(
            {"module": "cnnkit.layers.sequential", "class_name": "Sequential", "config": inner}
        )

    run = _tampered_run(saved_run, arena, nest)
    assert_refused(arena.api(LOAD, {"run": str(run)}), entry["class_name"])


@pytest.mark.parametrize(
    "architecture",
    [
        {"kind": "config", "class": "cnnkit.data.download.extract_archive", "config": {}},
        {"kind": "registry", "name": "extract_archive", "kwargs": {}},
        {"kind": "registry", "name": "lenet5", "kwargs": {"weights": "/etc/passwd"}},
        ["not", "a", "mapping"],
        "cnnkit.cli.main.main",
        {"kind": "registry"},
        {"kind": "registry", "name": "lenet5", "kwargs": ["a", "list"]},
        {"kind": "config", "class": "cnnkit.layers.sequential.Sequential", "config": []},
    ],
    ids=[
        "class-is-a-function",
        "registry-name-is-a-function",
        "registry-weights-path",
        "architecture-list",
        "architecture-string",
        "registry-without-name",
        "registry-kwargs-list",
        "sequential-config-list",
    ],
)
def test_malformed_or_hostile_architecture_is_a_cnnkit_error(architecture, saved_run, arena):
    run = _tampered_run(saved_run, arena, lambda c: c.__setitem__("architecture", architecture))
    assert_refused(arena.api(LOAD, {"run": str(run)}))


def test_model_json_asking_for_a_huge_layer_allocates_nothing(saved_run, arena):
    """A Dense of 10**10 units (40 GB of weights) is refused from the weights file's
    header before anything is allocated."""

    def huge(config):
        dense = config["architecture"]["config"]["layers"][-1]
        assert dense["class_name"] == "Dense"
        dense["config"]["units"] = 10**10

    run = _tampered_run(saved_run, arena, huge)
    assert_refused(arena.api(LOAD, {"run": str(run)}), "values")


def test_registry_model_asking_for_huge_sizes_allocates_nothing(saved_run, arena):
    architecture = {"kind": "registry", "name": "lenet5", "kwargs": {"num_classes": 10**10}}
    run = _tampered_run(saved_run, arena, lambda c: c.__setitem__("architecture", architecture))
    assert_refused(arena.api(LOAD, {"run": str(run)}))


SWEEP = r'''
import importlib, inspect, json, pkgutil, shutil, sys
from pathlib import Path
import cnnkit
from cnnkit import CnnkitError

targets = []
for info in pkgutil.walk_packages(cnnkit.__path__, "cnnkit."):
    if info.name == "cnnkit.__main__":
        continue
    module = importlib.import_module(info.name)
    for name, obj in vars(module).items():
        if name.startswith("_") or not callable(obj):
            continue
        if getattr(obj, "__module__", None) != info.name:
            continue
        targets.append((info.name, name, obj))

codes = {}
for mod, name, obj in targets:
    fns = [obj] if inspect.isfunction(obj) else []
    if inspect.isclass(obj):
        fns = [f for f in vars(obj).values() if inspect.isfunction(f)]
    for fn in fns:
        codes[fn.__code__] = f"{mod}.{name}"
        if inspect.isclass(obj):
            codes[fn.__code__] = f"{mod}.{name}.{fn.__name__}"

entered = set()
def profile(frame, event, arg):
    if event == "call" and frame.f_code in codes:
        entered.add(codes[frame.f_code])

base = Path(ARGS["run"])
original = json.loads((base / "model.json").read_text())
work = Path(ARGS["work"])
legitimate = {
    "layer": {f"{c.__module__}.{c.__name__}" for c in cnnkit.layers.LAYERS.values()},
    "class": {"cnnkit.layers.sequential.Sequential", "cnnkit.train.sequential.Sequential"},
    "registry": set(),
}


def attempt(variant, mod, name):
    """Load the saved run with ``mod.name`` in the variant's place; (outcome, entered)."""
    cfg = json.loads(json.dumps(original))
    if variant == "layer":
        cfg["architecture"]["config"]["layers"].insert(
            0, {"module": mod, "class_name": name, "config": {}})
    elif variant == "class":
        cfg["architecture"] = {"kind": "config", "class": f"{mod}.{name}", "config": {}}
    else:
        cfg["architecture"] = {"kind": "registry", "name": name, "kwargs": {}}
    run = work / "run"
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(base, run)
    (run / "model.json").write_text(json.dumps(cfg))
    entered.clear()
    sys.setprofile(profile)
    try:
        cnnkit.load(run)
        outcome = "loaded"
    except CnnkitError:
        outcome = None
    except BaseException as err:
        outcome = f"{type(err).__name__}: {str(err)[:200]}"
    finally:
        sys.setprofile(None)
    return outcome, set(entered)


# what refusing an entry runs by itself (the error path: did_you_mean, the registry...)
refusal_path = {v: attempt(v, "cnnkit.nowhere", "NoSuchCallable")[1] for v in legitimate}
not_refused = []
for mod, name, obj in targets:
    for variant in ("layer", "class", "registry"):
        if f"{mod}.{name}" in legitimate[variant] or (
            variant == "registry" and name in cnnkit.models.list_models()
        ):
            continue  # a registered layer, model class or model is a legitimate entry
        outcome, ran = attempt(variant, mod, name)
        hits = sorted(
            c for c in ran - refusal_path[variant]
            if c == f"{mod}.{name}" or c.startswith(f"{mod}.{name}.")
        )
        if outcome or hits:
            not_refused.append(f"{variant} {mod}.{name}: {outcome or 'refused'}; ran {hits}")
shutil.rmtree(work / "run", ignore_errors=True)
if not_refused:
    raise SystemExit(f"{len(not_refused)} of {len(targets)} not refused cleanly:\n"
                     + "\n".join(not_refused[:40]))
raise CnnkitError(f"all {len(targets)} callables refused")
'''


def test_no_callable_in_cnnkit_can_be_named_by_model_json(saved_run, arena):
    """Every public function and class of every cnnkit module, named by a layer entry,
    by the architecture's class or as a registry model: refused with a CnnkitError,
    and none of its code ever runs (a profile hook watches every call)."""
    work = arena.outside / "sweep"
    work.mkdir()
    result = arena.api(SWEEP, {"run": str(saved_run), "work": str(work)})
    assert result["outcome"] == "CnnkitError", result.get("message")
    assert "callables refused" in result["message"]
    count = int(result["message"].split()[1])
    assert count > 300, count  # the sweep really walked the package
    assert result["changes"] == [], result["changes"]


def test_evaluating_a_shared_run_neither_downloads_nor_creates_its_data_folder(
    saved_run, arena, import_baseline
):
    """A run's config.yaml records the data folder and dataset arguments it was trained
    with; a shared run could point them at any folder and switch downloads on. evaluate
    reads the recorded folder only if it exists here and never downloads."""
    import yaml

    run = _tampered_run(saved_run, arena, lambda c: None)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["dataset"] = {"name": "mnist", "args": {"download": True}}
    config["run"] = {"data_dir": str(arena.scratch / "victim" / "made-by-evaluate")}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = arena.cli(["evaluate", str(run), "--device", "cpu"], import_baseline)
    assert_cli_refused(result, "mnist")
    assert "download" in result["stderr"].lower()


# ------------------------------------------------------------------ bounded parsing

BOMB_YAML = """\
name: bomb
task: classification
dataset: {name: digits}
model: {name: lenet5}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy}
fit:
  epochs: 1
  batch_size: [&a [lol, lol, lol, lol, lol, lol, lol, lol, lol],
    &b [*a, *a, *a, *a, *a, *a, *a, *a, *a], &c [*b, *b, *b, *b, *b, *b, *b, *b, *b],
    &d [*c, *c, *c, *c, *c, *c, *c, *c, *c], &e [*d, *d, *d, *d, *d, *d, *d, *d, *d],
    &f [*e, *e, *e, *e, *e, *e, *e, *e, *e], &g [*f, *f, *f, *f, *f, *f, *f, *f, *f],
    &h [*g, *g, *g, *g, *g, *g, *g, *g, *g], &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]]
"""


def test_yaml_bomb_config_is_refused_by_cnnkit_train(arena, import_baseline):
    bomb = arena.scratch / "bomb.yaml"
    bomb.write_text(BOMB_YAML)
    assert bomb.stat().st_size < 1200
    out = arena.scratch / "cwd" / "runs"
    result = arena.cli(["train", str(bomb), "--out", str(out)], import_baseline)
    assert_cli_refused(result, "bomb.yaml")
    assert len(result["stderr"]) < 5000, "the message must not expand the value"


def test_yaml_bomb_in_a_run_folder_config_is_refused_by_cli_evaluate(
    saved_run, arena, import_baseline
):
    run = _tampered_run(saved_run, arena, lambda c: None)
    (run / "config.yaml").write_text(BOMB_YAML)
    result = arena.cli(["evaluate", str(run)], import_baseline)
    assert_cli_refused(result)
    assert len(result["stderr"]) < 5000


def _cifar_bomb(levels: int = 12, width: int = 10) -> bytes:
    """A CIFAR batch ``{'data': L, 'labels': [...]}`` where ``L`` nests one list
    ``width ** levels`` times through memo references (legal pickle opcodes only)."""
    out = bytearray(b"\x80\x03}q\x00(")  # PROTO 3, EMPTY_DICT, BINPUT 0, MARK
    key = b"data"
    out += b"X" + struct.pack("<I", len(key)) + key
    out += b"]q\x01(" + b"K\x00" * width + b"e"  # level 0: [0] * width, memo 1
    for level in range(1, levels + 1):
        out += b"0"  # POP the previous level (kept in the memo)
        out += b"]" + b"q" + bytes([level + 1]) + b"("
        out += (b"h" + bytes([level])) * width + b"e"  # BINGET the previous level
    key = b"labels"
    out += b"X" + struct.pack("<I", len(key)) + key
    out += b"](" + b"K\x00" * width + b"e"
    out += b"u."  # SETITEMS, STOP
    return bytes(out)


def test_cifar_pickle_bomb_is_refused(arena):
    bomb = _cifar_bomb()
    assert len(bomb) < 400
    # the bomb is a legal pickle: the plain unpickler reads it (sharing one list)
    data = pickle.loads(bomb)
    assert set(data) == {"data", "labels"} and len(data["data"]) == 10
    folder = arena.scratch / "data" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(bomb)
    payload = """
    from cnnkit.data import cifar10
    cifar10(ARGS["root"], split="train", verify=False)
    """
    assert_refused(arena.api(payload, {"root": str(folder.parent)}), "data_batch_1")


def test_idx_header_whose_size_overflows_is_refused(arena):
    path = arena.scratch / "data" / "overflow-idx3-ubyte"
    # ubyte, 4 dims of 2**16: the product 2**64 wraps to 0 in int64
    path.write_bytes(struct.pack(">BBBB", 0, 0, 0x08, 4) + struct.pack(">4I", *[1 << 16] * 4))
    payload = """
    from cnnkit.data.idx import read_idx
    read_idx(ARGS["path"])
    """
    assert_refused(arena.api(payload, {"path": str(path)}), "overflow-idx3-ubyte")


def _coco(arena: Arena, file_name: str) -> tuple[Path, Path]:
    from PIL import Image

    images = arena.scratch / "data" / "coco" / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(images / "a.png")
    Image.new("RGB", (8, 8), (200, 0, 0)).save(arena.scratch / "victim" / "outside.png")
    ann = {
        "images": [{"id": 1, "file_name": file_name, "height": 8, "width": 8}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4],
             "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]], "area": 16, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }  # fmt: skip
    path = images.parent / "instances.json"
    path.write_text(json.dumps(ann))
    return images, path


COCO = """
from cnnkit.data import coco_instances
ds = coco_instances(ARGS["images"], ARGS["ann"])
ds[0]
"""


@pytest.mark.parametrize("where", ["dotdot", "absolute", "symlink"])
def test_coco_file_name_cannot_leave_the_images_folder(where, arena):
    outside = arena.scratch / "victim" / "outside.png"
    name = {"dotdot": "../../../victim/outside.png", "absolute": str(outside)}.get(
        where, "link.png"
    )
    images, ann = _coco(arena, name)
    if where == "symlink":
        (images / "link.png").symlink_to(outside)
    result = arena.api(COCO, {"images": str(images), "ann": str(ann)})
    assert_refused(result, str(images))


VIA = """
from cnnkit.data import via_instances
ds = via_instances(ARGS["folder"])
ds[0]
"""


@pytest.mark.parametrize(
    "entry",
    [
        {"filename": "a.png", "regions": [{"region_attributes": {}}]},
        {"filename": "a.png", "regions": [{"shape_attributes": {"name": "rect", "x": 1}}]},
        {"filename": "a.png", "regions": ["not a region"]},
        {"filename": "a.png", "regions": [{"shape_attributes": {
            "name": "polygon", "all_points_x": [1, "x", 3], "all_points_y": [1, 2, 3]}}]},
        {"filename": ["a.png"], "regions": []},
        "not an entry",
        {"filename": "../victim/outside.png", "regions": []},
    ],
    ids=["no-shape", "rect-without-width", "region-string", "non-numeric-point",
         "filename-list", "entry-string", "filename-outside"],
)  # fmt: skip
def test_malformed_via_json_is_a_cnnkit_error(entry, arena):
    from PIL import Image

    folder = arena.scratch / "data" / "balloon"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    Image.new("RGB", (8, 8)).save(arena.scratch / "data" / "victim_outside.png")
    (folder / "via_region_data.json").write_text(json.dumps({"a.png1": entry}))
    assert_refused(arena.api(VIA, {"folder": str(folder)}), "via_region_data.json")


# ------------------------------------------------------------------ damaged archives

EXTRACT = """
from cnnkit.data.download import extract_archive
extract_archive(ARGS["archive"], ARGS["dest"])
"""


def _dest(arena: Arena) -> Path:
    dest = arena.scratch / "data" / "dest"
    dest.mkdir(parents=True)
    (dest / "kept.txt").write_text("extracted before\n")
    return dest


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_truncated_tar_gz_is_a_cnnkit_error_and_leaves_nothing(arena):
    rng = np.random.default_rng(0)
    members = {f"f{i}.bin": rng.bytes(20_000) for i in range(4)}
    whole = _tar_gz(members)
    archive = arena.scratch / "data" / "cut.tar.gz"
    archive.write_bytes(whole[: len(whole) * 2 // 3])
    result = arena.api(EXTRACT, {"archive": str(archive), "dest": str(_dest(arena))})
    assert_refused(result, "cut.tar.gz")


def test_tar_member_declaring_10_gb_without_data_is_refused(arena):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("huge.bin")
        info.size = 10 << 30
        tar.addfile(info)  # the header only: no data follows
    archive = arena.scratch / "data" / "huge.tar"
    archive.write_bytes(buf.getvalue())
    result = arena.api(EXTRACT, {"archive": str(archive), "dest": str(_dest(arena))})
    assert_refused(result, "huge.tar")


def test_tar_member_declaring_more_than_it_holds_is_refused(arena):
    """Under the size limits, but the data stops early: a truncation, not a 1 GB file."""
    info = tarfile.TarInfo("short.bin")
    info.size = 1 << 30
    archive = arena.scratch / "data" / "short.tar"
    archive.write_bytes(info.tobuf(format=tarfile.GNU_FORMAT) + b"x" * 4096)
    result = arena.api(EXTRACT, {"archive": str(archive), "dest": str(_dest(arena))})
    assert_refused(result, "short.tar")


def test_zip_with_a_bad_crc_is_a_cnnkit_error_and_leaves_nothing(arena):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("a.txt", b"A" * 1000)
        zf.writestr("b.txt", b"B" * 1000)
    data = bytearray(buf.getvalue())
    data[data.index(b"B" * 1000) + 500] ^= 0xFF  # flip a byte of b.txt's data
    archive = arena.scratch / "data" / "crc.zip"
    archive.write_bytes(bytes(data))
    result = arena.api(EXTRACT, {"archive": str(archive), "dest": str(_dest(arena))})
    assert_refused(result, "crc.zip")


def test_the_payload_harness_sees_writes_and_memory(arena):
    """The harness can fail: a payload that writes a file, or allocates 1 GB, or raises
    something else, is reported."""
    wrote = arena.api(
        "from pathlib import Path\nPath(ARGS['p']).write_text('x')\n"
        "from cnnkit import CnnkitError\nraise CnnkitError('after a write')",
        {"p": str(arena.scratch / "victim" / "new.txt")},
    )
    assert wrote["outcome"] == "CnnkitError" and wrote["changes"] == ["created victim/new.txt"]
    with pytest.raises(AssertionError, match="killed by the watchdog"):
        arena.api("import numpy as np\nx = np.ones(1 << 28)\nimport time; time.sleep(5)")
    other = arena.api("raise KeyError('width')")
    assert other["outcome"] == "other" and "KeyError" in other["message"]
    with pytest.raises(AssertionError, match="expected a CnnkitError"):
        assert_refused(other)


def test_every_public_function_signature_in_the_sweep_is_real():
    """The sweep's profile hook keys on code objects: the cnnkit callables it names
    have Python code (a C builtin could run unseen)."""
    from cnnkit.data import download
    from cnnkit.report import plots

    for fn in (download.extract_archive, plots.plot_history):
        assert inspect.isfunction(fn) and fn.__code__.co_filename.endswith(".py")
