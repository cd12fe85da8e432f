"""Issue 22, part 1: configs describe, they never call.

A saved model.json, a run folder's config.yaml and a recipe name classes, models,
callbacks and schedules; each name is looked up in a table of cnnkit's own (layers,
registered models, two Sequential classes, two callbacks, three schedules) and its
arguments are bound to the constructor before anything is built. Here every payload
of the issue (and every public callable of the package) is tried in-process: each
ends in a CnnkitError and nothing on disk changes. The subprocess versions with a
memory watchdog live in tests/test_security.py.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import pkgutil
import re
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

import cnnkit
from cnnkit import CnnkitError, ConfigError
from cnnkit.cli.main import main
from cnnkit.layers import Conv2D, Dense, Flatten, MaxPooling2D
from cnnkit.layers import Sequential as LayerStack
from cnnkit.layers.base import LAYERS
from cnnkit.models import MODELS, create
from cnnkit.train.rebuild import MODEL_CLASSES, rebuild

# ---------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file (size, SHA-256) and folder under ``root``."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = ("dir",)
        for f in filenames:
            p = Path(dirpath, f)
            data = p.read_bytes() if not p.is_symlink() else os.readlink(p).encode()
            out[str(p.relative_to(root))] = (len(data), hashlib.sha256(data).hexdigest())
    return out


def small_stack() -> cnnkit.Sequential:
    return cnnkit.Sequential([Dense(3, activation="relu"), Dense(2)], input_shape=(4,))


@pytest.fixture
def scratch(tmp_path: Path) -> dict[str, Path]:
    """A saved model folder, a run folder around another one, a victim folder holding a
    file, and a small tar archive: everything a payload could touch."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "target.png").write_bytes(b"precious")
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "hello.txt").write_text("extracted")
    archive = tmp_path / "payload.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(payload / "hello.txt", arcname="hello.txt")
    model = tmp_path / "model"
    small_stack().save(model)
    run = tmp_path / "run"
    run.mkdir()
    from cnnkit.cli.recipes import load_config
    from cnnkit.cli.run_folder import write_config

    write_config(run, load_config("digits-lenet5"), ["train", "digits-lenet5"])
    small_stack().save(run, overwrite=True)
    return {"root": tmp_path, "victim": victim, "archive": archive, "model": model, "run": run}


def with_architecture(folder: Path, arch) -> None:
    cfg = json.loads((folder / "model.json").read_text())
    cfg["architecture"] = arch
    (folder / "model.json").write_text(json.dumps(cfg))


def stack_of(*entries) -> dict:
    return {
        "kind": "config",
        "class": "cnnkit.train.sequential.Sequential",
        "config": {"name": "sequential", "input_shape": [4], "layers": list(entries)},
    }


def payloads(s: dict[str, Path]) -> dict[str, tuple[str, str, dict]]:
    """The issue's payloads: (module, name, arguments) that act when called."""
    victim = s["victim"]
    return {
        "extract_archive": (
            "cnnkit.data.download",
            "extract_archive",
            {"archive": str(s["archive"]), "dest": str(victim)},
        ),
        "plot_history": (
            "cnnkit.report.plots",
            "plot_history",
            {"history": {"loss": [1.0, 0.5]}, "path": str(victim / "target.png")},
        ),
        "prepare": (
            "cnnkit.cli.run_folder",
            "prepare",
            {"out": str(victim / "made" / "deep"), "name": "x", "resume": False},
        ),
        "main": (
            "cnnkit.cli.main",
            "main",
            {"argv": ["data", "download", "mnist", "--data-dir", str(victim / "data")]},
        ),
    }


PAYLOADS = ("extract_archive", "plot_history", "prepare", "main")


def _arch_variants(module: str, name: str, args: dict) -> list:
    return [
        stack_of({"class_name": name, "module": module, "config": args}),
        stack_of(  # nested one level down
            {"class_name": "Dense", "module": "cnnkit.layers.core", "config": {"units": 4}},
            {
                "class_name": "Sequential",
                "module": "cnnkit.layers.sequential",
                "config": {
                    "name": "inner",
                    "input_shape": None,
                    "layers": [{"class_name": name, "module": module, "config": args}],
                },
            },
        ),
        {"kind": "config", "class": f"{module}.{name}", "config": args},
        {"kind": "registry", "name": name, "kwargs": args},
        {"kind": "registry", "name": f"{module}.{name}", "kwargs": args},
    ]


# ---------------------------------------------------------------------- the payloads


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_in_model_json_are_refused_by_load_and_nothing_changes(
    scratch, payload, monkeypatch
):
    module, name, args = payloads(scratch)[payload]
    folder = scratch["model"]
    for arch in _arch_variants(module, name, args):
        with_architecture(folder, arch)
        before = snapshot(scratch["root"])
        with monkeypatch.context() as m:
            load = cnnkit.load  # resolved before import_module is blocked
            m.setattr(importlib, "import_module", _no_import)
            with pytest.raises(CnnkitError) as info:
                load(folder)
        assert name in str(info.value)
        assert snapshot(scratch["root"]) == before, arch


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_in_a_run_folder_are_refused_by_cnnkit_evaluate(scratch, payload, capsys):
    module, name, args = payloads(scratch)[payload]
    run = scratch["run"]
    for arch in _arch_variants(module, name, args)[::2]:
        with_architecture(run, arch)
        before = snapshot(scratch["root"])
        assert main(["evaluate", str(run), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert "cnnkit: error:" in err and name in err and "Traceback" not in err
        assert snapshot(scratch["root"]) == before


def _no_import(name, *args, **kwargs):
    raise AssertionError(f"importlib.import_module({name!r}) called while loading")


# ---------------------------------------------------------------------- the sweep


def _public_callables() -> list[tuple[str, str, object]]:
    found = []
    for info in pkgutil.walk_packages(cnnkit.__path__, "cnnkit."):
        if info.name.endswith("__main__"):
            continue
        try:
            mod = importlib.import_module(info.name)
        except ImportError:  # an optional dependency (onnx, h5py, tensorboard)
            continue
        for name, obj in inspect.getmembers(mod, callable):
            if name.startswith("_") or getattr(obj, "__module__", None) != info.name:
                continue
            found.append((info.name, name, obj))
    return found


def _codes(obj) -> set:
    """The code objects that run when ``obj`` is called (a class: its own methods)."""
    if isinstance(obj, type):
        return {
            f.__code__
            for f in vars(obj).values()
            if inspect.isfunction(f) and f.__module__ == obj.__module__
        }
    fn = inspect.unwrap(obj) if inspect.isfunction(obj) else None
    return {fn.__code__} if fn is not None else set()


def test_no_public_callable_of_cnnkit_can_be_named_by_a_model_json():
    callables = _public_callables()
    assert len(callables) > 500  # the whole package was walked
    watched = {}
    for module, name, obj in callables:
        for code in _codes(obj):
            watched[code] = f"{module}.{name}"
    called: set[str] = set()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in watched:
            called.add(watched[frame.f_code])

    sys.setprofile(profile)  # the watch sees a call: a registered model is built
    try:
        rebuild({"kind": "registry", "name": "lenet5", "kwargs": {}}, "model.json")
    finally:
        sys.setprofile(None)
    assert "cnnkit.models.lenet.lenet5" in called
    called.clear()
    refused = 0
    for module, name, _ in callables:
        entries = []
        if name not in LAYERS:
            entries += _arch_variants(module, name, {})[:2]
        if f"{module}.{name}" not in MODEL_CLASSES:
            entries.append({"kind": "config", "class": f"{module}.{name}", "config": {}})
        if name not in MODELS:
            entries.append({"kind": "registry", "name": name, "kwargs": {}})
        entries.append({"kind": "registry", "name": f"{module}.{name}", "kwargs": {}})
        for arch in entries:
            sys.setprofile(profile)
            try:
                with pytest.raises(CnnkitError):
                    rebuild(arch, "model.json")
            finally:
                sys.setprofile(None)
            refused += 1
    assert refused > 1500
    # only the lookup itself runs: the checks of cnnkit._core, the table lookup, rebuild
    lookup = {"cnnkit.layers.base.layer_class", "cnnkit.train.rebuild.rebuild"}
    assert not {c for c in called if not c.startswith("cnnkit._core.")} - lookup, sorted(called)


def test_the_tables_hold_only_cnnkits_layers_and_the_two_stacks():
    assert set(MODEL_CLASSES) == {
        "cnnkit.layers.sequential.Sequential",
        "cnnkit.train.sequential.Sequential",
    }
    for name, cls in LAYERS.items():
        assert cls.__module__.startswith("cnnkit.layers."), (name, cls)
        assert isinstance(cls, type) and issubclass(cls, torch.nn.Module)
        params = inspect.signature(cls).parameters.values()
        assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params), name
    assert {"Conv2D", "Dense", "Sequential", "ResidualBlock", "Inception"} <= set(LAYERS)


def test_every_public_layer_with_a_config_is_in_the_table():
    """The table is explicit (cnnkit/layers/__init__.py): a new layer with get_config
    that is not listed could be saved but not loaded; this catches it."""
    import cnnkit.layers as layers
    from cnnkit.layers.base import Layer

    public = {
        obj
        for name, obj in vars(layers).items()
        if inspect.isclass(obj) and issubclass(obj, Layer) and hasattr(obj, "get_config")
    }
    assert public and public <= set(LAYERS.values()), sorted(
        c.__name__ for c in public - set(LAYERS.values())
    )


# ---------------------------------------------------------------------- malformed model.json

GOOD_LAYER = {"class_name": "Dense", "module": "cnnkit.layers.core", "config": {"units": 2}}

MALFORMED = {
    "architecture a list": ([1, 2], "architecture"),
    "architecture a string": ("cnnkit.layers.core.Dense", "architecture"),
    "no kind": ({"name": "lenet5"}, "kind"),
    "registry without a name": ({"kind": "registry"}, "None"),
    "registry name a list": ({"kind": "registry", "name": ["lenet5"]}, "lenet5"),
    "unregistered model": ({"kind": "registry", "name": "lenet6"}, "lenet5"),
    "kwargs a list": ({"kind": "registry", "name": "lenet5", "kwargs": [1]}, "kwargs"),
    "kwargs unknown": (
        {"kind": "registry", "name": "lenet5", "kwargs": {"filterz": 3}},
        "filterz.*accepts",
    ),
    "config class a list": ({"kind": "config", "class": ["x"], "config": {}}, "model class"),
    "config not a mapping": (
        {"kind": "config", "class": "cnnkit.layers.sequential.Sequential", "config": [1]},
        "mapping",
    ),
    "layers not a list": (
        {
            "kind": "config",
            "class": "cnnkit.layers.sequential.Sequential",
            "config": {"layers": "Dense"},
        },
        "list of layer entries",
    ),  # fmt: skip
    "entry not a mapping": (stack_of("Dense"), "layer 0"),
    "entry with an odd key": (stack_of({**GOOD_LAYER, "call": True}), "'call'"),
    "unknown layer": (
        stack_of({"class_name": "Dense2", "module": "cnnkit.layers.core", "config": {}}),
        "layer 0.*Dense2",
    ),  # fmt: skip
    "class name a list": (stack_of({"class_name": ["Dense"], "config": {}}), "names"),
    "torch layer": (
        stack_of({"class_name": "ReLU", "module": "torch.nn.modules.activation", "config": None}),
        "torch.nn.*ReLU",
    ),  # fmt: skip
    "layer config a list": (stack_of({**GOOD_LAYER, "config": [2]}), "mapping"),
    "layer config unknown argument": (
        stack_of({**GOOD_LAYER, "config": {"units": 2, "filters": 3}}),
        "layer 0 \\(Dense\\) takes no argument 'filters'; it accepts units",
    ),
    "layer config missing argument": (stack_of({**GOOD_LAYER, "config": {}}), "units"),
    "layer config bad value type": (
        stack_of({**GOOD_LAYER, "config": {"units": 2, "input_shape": 5}}),
        "layer 0 \\(Dense\\)",
    ),
    "nested Sequential with a bad entry": (
        stack_of(
            GOOD_LAYER,
            {
                "class_name": "Sequential",
                "module": "cnnkit.layers.sequential",
                "config": {"layers": [{"class_name": "open", "config": {}}]},
            },
        ),
        r"layer 1 \(Sequential\), layer 0 \('open'\)",
    ),  # fmt: skip
    "nested Sequential config a list": (
        stack_of({"class_name": "Sequential", "module": "cnnkit.layers.sequential", "config": [1]}),
        "layer 0",
    ),  # fmt: skip
    "unknown kind": ({"kind": "pickle"}, "pickle"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_architecture_is_a_cnnkit_error_naming_model_json(scratch, case):
    arch, pattern = MALFORMED[case]
    with_architecture(scratch["model"], arch)
    with pytest.raises(CnnkitError, match=pattern) as info:
        cnnkit.load(scratch["model"])
    assert type(info.value).__name__ in ("CnnkitError", "ConfigError")
    if case.startswith(("architecture", "registry", "kwargs", "unregistered", "config class")):
        assert "model.json" in str(info.value)


@pytest.mark.parametrize(
    "text",
    ["[1, 2]", '"model"', "{", "[" * 100_000 + "]" * 100_000, '{"format": "' + "x" * 10_000 + '"}'],
    ids=["list", "string", "truncated", "deep", "long-format"],
)
def test_a_model_json_that_is_not_a_config_is_a_short_cnnkit_error(scratch, text):
    (scratch["model"] / "model.json").write_text(text)
    with pytest.raises(CnnkitError) as info:
        cnnkit.load(scratch["model"])
    assert "model.json" in str(info.value) and len(str(info.value)) < 600


def test_an_oversized_model_json_is_refused_before_it_is_read(scratch, monkeypatch):
    from cnnkit.train import rebuild as module

    monkeypatch.setattr(module, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(CnnkitError, match="bytes"):
        cnnkit.load(scratch["model"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weights": "imagenet"},
        {"weights": "/etc/passwd.safetensors"},
        {"backbone": "gap_cnn", "backbone_kwargs": {"weights": "/tmp/x.pth"}},
    ],
    ids=["tag", "path", "nested"],
)
def test_weights_are_never_taken_from_a_saved_model_json(scratch, kwargs, monkeypatch):
    from cnnkit.models import registry

    def no_weights(*args, **kw):
        raise AssertionError("a weights file was read")

    monkeypatch.setattr(registry, "_build", no_weights)
    name = "localizer" if "backbone" in kwargs else "lenet5"
    with_architecture(scratch["model"], {"kind": "registry", "name": name, "kwargs": kwargs})
    with pytest.raises(CnnkitError, match="may not give 'weights'"):
        cnnkit.load(scratch["model"])


def test_a_builder_refusing_its_arguments_is_a_cnnkit_error(scratch):
    with_architecture(
        scratch["model"], {"kind": "registry", "name": "lenet5", "kwargs": {"num_classes": "ten"}}
    )
    with pytest.raises(ConfigError, match="num_classes.*'ten'"):
        cnnkit.load(scratch["model"])


# ---------------------------------------------------------------------- folders still load


def test_models_saved_today_load_as_before(tmp_path):
    torch.manual_seed(0)
    inner = LayerStack([Conv2D(4, 3, activation="relu"), MaxPooling2D(2)], name="inner")
    nets = {
        "registry": cnnkit.Model(create("lenet5", num_classes=3)),
        "sequential": cnnkit.Sequential(
            [inner, cnnkit.Sequential([Flatten()]), Dense(3)], input_shape=(1, 28, 28)
        ),
    }
    for key, net in nets.items():
        x = torch.randn(2, 1, 32 if key == "registry" else 28, 32 if key == "registry" else 28)
        net.save(tmp_path / key)
        again = cnnkit.load(tmp_path / key)
        assert type(again) is type(net)
        torch.testing.assert_close(again.predict(x), net.predict(x))
    loaded = cnnkit.load(tmp_path / "sequential")
    assert type(loaded[0]) is LayerStack and type(loaded[1]) is cnnkit.Sequential
    assert loaded[0].name == "inner"


def test_a_symlinked_weights_file_or_checkpoint_leaving_the_folder_is_refused(scratch):
    outside = scratch["root"] / "elsewhere"
    small_stack().save(outside)
    folder = scratch["model"]
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(outside / "model.safetensors")
    with pytest.raises(CnnkitError, match="outside"):
        cnnkit.load(folder)
    checkpoints = scratch["root"] / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "best").symlink_to(outside)
    with pytest.raises(CnnkitError, match="outside"):
        cnnkit.load(checkpoints)


# ---------------------------------------------------------------------- training manifests


@pytest.fixture
def checkpoint(tmp_path):
    from cnnkit.train.checkpoint import save_training_state

    model = small_stack()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(torch.randn(8, 4), torch.randn(8, 2), epochs=1, batch_size=4, verbose=0)
    return save_training_state(tmp_path / "ck", model, epoch=0), model


@pytest.mark.parametrize(
    "damage",
    [
        lambda t: t.update(optimizer="sgd"),
        lambda t: t.pop("rng"),
        lambda t: t["rng"].update(numpy=[1, 2]),
        lambda t: t.update(epoch="three"),
    ],
    ids=["optimizer-a-string", "no-rng", "rng-a-list", "epoch-text"],
)
def test_a_malformed_training_manifest_is_a_cnnkit_error(checkpoint, damage):
    from cnnkit.train.checkpoint import _digest, load_training_state

    folder, model = checkpoint
    manifest = json.loads((folder / "model.json").read_text())
    damage(manifest["training"])
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    manifest["checksum"] = _digest(body)  # the attacker writes the checksum too
    (folder / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(CnnkitError, match="model.json"):
        load_training_state(folder, model)


def test_a_manifest_without_a_training_mapping_is_a_cnnkit_error(checkpoint):
    from cnnkit.train.checkpoint import _digest, read_checkpoint_info

    folder, _ = checkpoint
    manifest = json.loads((folder / "model.json").read_text())
    manifest["training"] = [1]
    manifest["checksum"] = _digest({k: v for k, v in manifest.items() if k != "checksum"})
    (folder / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(CnnkitError, match="training"):
        read_checkpoint_info(folder)


# ---------------------------------------------------------------------- configs and recipes


def _recipe() -> dict:
    from cnnkit.cli.recipes import RECIPE_DIR

    return yaml.safe_load((RECIPE_DIR / "digits-lenet5.yaml").read_text())


@pytest.mark.parametrize("seed", ["abc", 1.5, True, -1, 2**64, None, [0]])
def test_a_seed_that_is_not_a_non_negative_int_is_refused_naming_seed(seed):
    from cnnkit.cli.recipes import validate

    config = _recipe()
    config["seed"] = seed
    with pytest.raises(ConfigError, match=r"seed must be an integer >= 0.*received"):
        validate(config, "bomb.yaml")


def test_cnnkit_train_seed_takes_a_non_negative_int(capsys):
    for bad in ("abc", "-1", "1.5"):
        with pytest.raises(SystemExit) as info:
            main(["train", "digits-lenet5", "--seed", bad])
        assert info.value.code == 2
        assert "--seed" in capsys.readouterr().err


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "10"])
def test_num_classes_that_is_not_positive_is_named(value):
    with pytest.raises(
        ConfigError, match=rf"lenet5: num_classes must be a positive int.*{value!r}"
    ):
        create("lenet5", num_classes=value)
    with pytest.raises(ConfigError, match="in_channels"):
        create("lenet5", in_channels=value)
    from cnnkit.cli.recipes import validate

    config = _recipe()
    config["model"]["args"] = {"num_classes": value}
    with pytest.raises(ConfigError, match=r"model.args.num_classes must be a positive int"):
        validate(config, "c.yaml")


@pytest.mark.parametrize(
    "callbacks, pattern",
    [
        ([{"name": "ModelCheckpoint", "args": {"filepath": "/tmp/x"}}], "unknown callback"),
        ([{"name": "CSVLogger"}], "unknown callback"),
        ([{"name": "EarlyStopping", "args": {"filename": "x"}}], "no argument 'filename'"),
        ([{"name": "EarlyStopping", "args": {"patience": print}}], "plain data"),
        ([{"name": "ReduceLROnPlateau", "args": {1: 2}}], "no argument 1"),
    ],
)
def test_config_callbacks_are_a_table_with_bound_arguments(callbacks, pattern):
    from cnnkit.cli.recipes import build_callbacks

    with pytest.raises(ConfigError, match=pattern):
        build_callbacks(callbacks, "c.yaml")
    built = build_callbacks([{"name": "EarlyStopping", "args": {"patience": 2}}], "c.yaml")
    assert type(built[0]).__name__ == "EarlyStopping" and built[0].patience == 2


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ({"name": "Schedule", "args": {}}, "unknown lr_schedule"),
        ({"name": "current_lr"}, "unknown lr_schedule"),
        ({"name": "step_decay", "args": {}}, "needs the argument.*boundaries"),
        ({"name": "cosine", "args": {"T_maxx": 3}}, "no argument 'T_maxx'.*T_max"),
    ],
)
def test_lr_schedules_are_a_table_with_bound_arguments(spec, pattern):
    from cnnkit.cli.training import lr_schedule

    config = {"compile": {"lr_schedule": spec}, "fit": {"epochs": 3}}
    with pytest.raises(ConfigError, match=pattern):
        lr_schedule(config)
    config["compile"]["lr_schedule"] = {"name": "cosine"}
    assert lr_schedule(config).name == "cosine(T_max=3, eta_min=0.0)"  # T_max: the epochs


def test_a_run_folder_config_is_checked_before_evaluate_uses_it(scratch, capsys):
    run = scratch["run"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["compile"]["lr_schedule"] = {"name": "Schedule", "args": {"name": "x"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    before = snapshot(scratch["root"])
    assert main(["evaluate", str(run), "--device", "cpu"]) == 2
    assert "unknown lr_schedule 'Schedule'" in capsys.readouterr().err
    (run / "config.yaml").write_text("a: [1\n")
    assert main(["evaluate", str(run), "--device", "cpu"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert snapshot(scratch["root"]) == {**before, "run/config.yaml": snapshot(run)["config.yaml"]}


@pytest.mark.parametrize(
    "run_entry, pattern",
    [([1], "run options must be a mapping"), ({"limit": "abc"}, "limit must be a positive int"),
     ({"data_dir": ["/"]}, "data_dir must be text")],
)  # fmt: skip
def test_a_run_folders_options_are_checked_before_use(scratch, capsys, run_entry, pattern):
    run = scratch["run"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["run"] = run_entry
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["evaluate", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "config.yaml" in err and re.search(pattern, err) and "Traceback" not in err


def test_a_malformed_checkpoint_in_a_run_folder_stops_a_relaunch(checkpoint, tmp_path):
    from cnnkit.cli.recipes import load_config
    from cnnkit.cli.relaunch import inspect_run
    from cnnkit.cli.run_folder import write_config
    from cnnkit.train.checkpoint import _digest, save_training_state

    _, model = checkpoint
    run = tmp_path / "run"
    run.mkdir()
    write_config(run, load_config("digits-lenet5"), ["train", "digits-lenet5"])
    last = save_training_state(run / "checkpoints" / "last", model, epoch=1)
    assert inspect_run(run).completed == 2
    manifest = json.loads((last / "model.json").read_text())
    manifest["training"]["epoch"] = "two"
    manifest["checksum"] = _digest({k: v for k, v in manifest.items() if k != "checksum"})
    (last / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(CnnkitError, match="malformed"):
        inspect_run(run)


def test_a_reproduction_plan_is_checked_before_use(tmp_path, capsys):
    out = tmp_path / "repro"
    out.mkdir()
    (out / "reproduce-plan.json").write_text(json.dumps({"limit": "all", "seeds": [0]}))
    assert main(["reproduce", "digits-lenet5", "--out", str(out), "--resume"]) == 2
    assert "limit must be a positive int" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["reproduce-plan.json"]
