"""The ``cnnkit`` command line, in process through ``cnnkit.cli.main.main(argv)``.

Results are checked against independent computations: scikit-learn's metrics on the
reloaded model's predictions, NumPy correlation for conv-as-matrix, PyTorch's conv
output shape, the deck's parameter count, onnxruntime for the export.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cnnkit.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def _data_root(sub: str) -> Path:
    for base in (os.environ.get("CNNKIT_DATA"), REPO.parent / "shared" / "data"):
        if base and (Path(base) / sub).is_dir():
            return Path(base)
    pytest.skip(f"real data {sub!r} not found under $CNNKIT_DATA or {REPO.parent}/shared/data")


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([*argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """One `cnnkit demo` run shared by the tests that use a finished run."""
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--out", str(out), "--verbose", "0", "--threads", "1"]) == 0
    return out


def _digits_test():
    from cnnkit.data import digits

    return digits(32, "test").tensors()


# ------------------------------------------------------------------------ demo / run folder


def test_demo_reaches_95_percent_checked_with_sklearn(demo_run):
    from sklearn.metrics import accuracy_score, confusion_matrix

    import cnnkit

    metrics = json.loads((demo_run / "metrics.json").read_text())
    x, y = _digits_test()
    model = cnnkit.load(demo_run)
    pred = np.asarray(model.predict(x)).argmax(1)
    acc = accuracy_score(y.numpy(), pred)
    assert acc >= 0.95
    assert metrics["test"]["accuracy"] == pytest.approx(acc, abs=1e-6)
    assert metrics["confusion_matrix"] == confusion_matrix(y.numpy(), pred).tolist()
    assert metrics["class_names"] == [str(d) for d in range(10)]
    assert set(metrics["per_class"]["3"]) >= {"precision", "recall", "f1", "support"}
    assert set(metrics["val"]) >= {"loss", "accuracy"}


def test_run_folder_contents(demo_run):
    names = {p.name for p in demo_run.iterdir()}
    expected = {"config.yaml", "model.safetensors", "model.json", "checkpoints", "metrics.json",
                "history.csv", "summary.txt", "environment.json", "plots"}  # fmt: skip
    assert expected <= names
    config = yaml.safe_load((demo_run / "config.yaml").read_text())
    assert config["command"].startswith("cnnkit demo --out ")
    assert config["model"]["name"] == "lenet5"
    rows = list(csv.DictReader(open(demo_run / "history.csv")))
    assert len(rows) == config["fit"]["epochs"]
    assert (demo_run / "checkpoints" / "last" / "model.json").is_file()
    env = json.loads((demo_run / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["torch_threads"] == 1
    assert {"device", "precision", "memory_format"} <= set(env)
    assert "Total params: 61,706" in (demo_run / "summary.txt").read_text()
    plots = {p.name for p in (demo_run / "plots").glob("*.png")}
    assert {"history.png", "confusion_matrix.png"} <= plots
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        pass
    else:
        assert list((demo_run / "tensorboard").rglob("events.out.tfevents.*"))
    report = demo_run / "report.html"
    assert report.is_file()
    assert f"{metrics_accuracy(demo_run):.4f}" in report.read_text()  # format_value's 4 decimals


def metrics_accuracy(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["test"]["accuracy"]


def test_refuses_to_overwrite_a_run(demo_run, capsys):
    before = (demo_run / "model.safetensors").stat().st_mtime_ns
    code, _, err = run(["train", "digits-lenet5", "--out", str(demo_run)], capsys)
    assert code == 2
    assert err.startswith("cnnkit: error:") and "--resume" in err and str(demo_run) in err
    assert (demo_run / "model.safetensors").stat().st_mtime_ns == before


def test_evaluate_a_finished_run(demo_run, capsys):
    code, out, _ = run(["evaluate", str(demo_run)], capsys)
    assert code == 0
    shown = float(re.search(r"accuracy ([0-9.]+)", out).group(1))
    assert shown == pytest.approx(metrics_accuracy(demo_run), abs=1e-4)


def test_predict_images_and_npy_with_cam(demo_run, tmp_path, capsys):
    from PIL import Image

    import cnnkit

    x, y = _digits_test()
    np.save(tmp_path / "batch.npy", x[:3].numpy())
    png = tmp_path / "digit.png"
    grey = np.rint(x[3, 0].numpy() * 255).astype(np.uint8)
    Image.fromarray(grey).save(png)
    x = torch.cat([x[:3], torch.from_numpy(grey / np.float32(255))[None, None]])
    code, out, _ = run(
        ["predict", str(demo_run), str(tmp_path / "batch.npy"), str(png), "--cam",
         "--out-dir", str(tmp_path / "pred")], capsys,
    )  # fmt: skip
    assert code == 0
    probs = torch.softmax(torch.from_numpy(cnnkit.load(demo_run).predict(x)), 1)
    lines = [ln for ln in out.splitlines() if ": " in ln and "%" in ln]
    assert len(lines) == 4
    for line, p in zip(lines, probs):
        label, pct = re.search(r": (\d) \(([0-9.]+)%\)", line).groups()
        assert int(label) == int(p.argmax())
        assert float(pct) == pytest.approx(100 * float(p.max()), abs=0.1)
    assert (tmp_path / "pred" / "cam.png").stat().st_size > 1000


def test_predict_rejects_missing_input(demo_run, capsys):
    code, _, err = run(["predict", str(demo_run), "nope.png"], capsys)
    assert code == 2 and "'nope.png' does not exist" in err


def test_export_onnx_matches_onnxruntime(demo_run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")

    import cnnkit

    target = tmp_path / "m.onnx"
    code, _, err = run(["export", str(demo_run), "--format", "onnx", "--out", str(target)], capsys)
    assert code == 0, err
    x, _ = _digits_test()
    sess = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x[:1].numpy()})[0]
    want = cnnkit.load(demo_run, precision="fp32").predict(x[:1])  # ONNX: an fp32 graph
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    code, _, err = run(["export", str(demo_run), "--out", str(target)], capsys)
    assert code == 2 and "--overwrite" in err


# ------------------------------------------------------------------------ train / resume


def test_resume_continues_from_the_last_checkpoint(tmp_path, capsys):
    out = tmp_path / "r"
    common = ["--out", str(out), "--verbose", "0", "--threads", "1"]
    assert main(["train", "digits-lenet5", "--epochs", "1", "--limit", "200", *common]) == 0
    first = list(csv.DictReader(open(out / "history.csv")))
    code, _, err = run(["train", "digits-lenet5", "--resume", "--epochs", "3", *common], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert rows[0] == first[0]  # the first epoch is kept, not retrained
    from cnnkit.train.checkpoint import read_checkpoint_info

    assert read_checkpoint_info(out / "checkpoints" / "last")["epoch"] == 2
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["fit"]["epochs"] == 3 and "--epochs 1" in config["command"]
    assert "--resume" in config["resumed_with"][0]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 3


def test_resume_needs_out(tmp_path, capsys):
    code, _, err = run(["train", "digits-lenet5", "--resume"], capsys)
    assert code == 2 and "--out" in err  # every state of the folder: tests/test_relaunch.py


def test_yaml_config_file(tmp_path, capsys):
    from cnnkit.cli.recipes import RECIPE_DIR

    config = yaml.safe_load((RECIPE_DIR / "digits-lenet5.yaml").read_text())
    config.update(name="mine", seed=3)
    config["fit"].update(epochs=1, validation_split=0.0)
    config["model"] = {"name": "gap_cnn", "args": {"filters": [8, 16], "strides": [1, 2]}}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    code, _, err = run(["train", str(path), "--out", str(out), "--limit", "64", "--verbose", "0"],
                       capsys)  # fmt: skip
    assert code == 0, err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["name"] == "gap_cnn" and saved["seed"] == 3
    assert saved["run"]["model_kwargs"]["input_size"] == 32
    assert json.loads((out / "model.json").read_text())["architecture"]["name"] == "gap_cnn"
    assert (out / "plots" / "cam.png").is_file()  # GAP + one dense layer: CAM
    config["fitt"] = config.pop("fit")
    path.write_text(yaml.safe_dump(config))
    code, _, err = run(["train", str(path), "--out", str(tmp_path / "r2")], capsys)
    assert code == 2 and "'fitt'" in err and "Did you mean 'fit'" in err


def test_lr_schedule_in_a_config(tmp_path, capsys):
    """compile.lr_schedule: cosine over the run's epochs (after --epochs), checked against
    torch's CosineAnnealingLR on the same optimizer; bad names are explained."""
    from cnnkit.cli.recipes import RECIPE_DIR, load_config
    from cnnkit.cli.training import lr_schedule

    config = yaml.safe_load((RECIPE_DIR / "digits-lenet5.yaml").read_text())
    config["compile"]["lr_schedule"] = {"name": "cosine"}
    config["fit"]["epochs"] = 4
    path = tmp_path / "cos.yaml"
    path.write_text(yaml.safe_dump(config))
    schedule = lr_schedule(load_config(str(path)))
    ours = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ref = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched, ref_sched = schedule(ours), torch.optim.lr_scheduler.CosineAnnealingLR(ref, 4)
    for _ in range(4):
        ours.step(), ref.step(), sched.step(), ref_sched.step()
        assert ours.param_groups[0]["lr"] == pytest.approx(ref.param_groups[0]["lr"])
    config["compile"]["lr_schedule"] = {"name": "cosin"}
    path.write_text(yaml.safe_dump(config))
    code, _, err = run(["train", str(path), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "'cosin'" in err and "Did you mean 'cosine'" in err


def test_a_recipe_can_fix_what_precision_auto_means(tmp_path, capsys, monkeypatch):
    """compile.precision: fp32 makes --precision auto (the default) train in fp32 even
    where auto would mean bf16 (forced here as on an AMX CPU); an explicit --precision
    still wins; a bad value is a one-line error."""
    monkeypatch.setenv("CNNKIT_ASSUME_NATIVE_BF16", "1")  # auto -> bf16 on this CPU
    config = yaml.safe_load((REPO / "src/cnnkit/cli/recipes/digits-lenet5.yaml").read_text())
    config["fit"]["epochs"] = 1
    config["compile"]["precision"] = "fp32"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(config))
    used = {}
    for given in ("auto", "bf16"):
        out = tmp_path / given
        argv = ["train", str(path), "--out", str(out), "--limit", "64", "--verbose", "0"]
        assert run([*argv, "--precision", given, "--threads", "1"], capsys)[0] == 0
        used[given] = json.loads((out / "environment.json").read_text())["precision"]
    assert used == {"auto": "fp32", "bf16": "bf16"}
    config["compile"]["precision"] = "fp8"
    path.write_text(yaml.safe_dump(config))
    code, _, err = run(["train", str(path), "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and "compile.precision must be one of" in err and "'fp8'" in err


def test_bad_recipe_and_dataset_names_suggest(capsys):
    code, _, err = run(["train", "digits-lenet"], capsys)
    assert code == 2
    assert err.startswith("cnnkit: error: unknown recipe 'digits-lenet'")
    assert "Did you mean 'digits-lenet5'" in err and "Traceback" not in err
    code, _, err = run(["train", "cifar10-cnn", "--dataset", "mnits"], capsys)
    assert code == 2 and "Did you mean 'mnist'" in err


def test_bad_device_and_missing_data_leave_no_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(["train", "digits-lenet5", "--device", "gpu0", "--out", str(out)], capsys)
    assert code == 2 and "--device 'gpu0'" in err and not out.exists()
    code, _, err = run(["train", "mnist-cnn", "--data-dir", str(tmp_path), "--out", str(out)],
                       capsys)  # fmt: skip
    assert code == 2 and "cnnkit data download mnist" in err and "Traceback" not in err
    assert not out.exists()


def test_argparse_errors_exit_2(capsys):
    for argv, says in (
        (["train", "digits-lenet5", "--epochs", "0"], "0 is not a positive integer"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["predict"], "the following arguments are required"),
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    ["demo", "train", "evaluate", "predict", "summary", "models", "list", "explain", "data",
     "export"],
)  # fmt: skip
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: cnnkit {command}")


# ------------------------------------------------------------------------ other recipes


def _tiny_csv(folder: Path) -> None:
    texts = {1: "war election minister", 2: "goal match team", 3: "stock bank profit",
             4: "software internet computer"}  # fmt: skip
    (folder / "ag_news").mkdir(parents=True)
    for split, n in (("train", 8), ("test", 4)):
        rows = [f'"{i % 4 + 1}","title {i}","{texts[i % 4 + 1]} {i}"' for i in range(n)]
        (folder / "ag_news" / f"{split}.csv").write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize(
    "recipe, extra, keys",
    [
        ("localization-mnist", [], {"accuracy", "box_iou"}),
        ("moving-mnist-c3d", [], {"accuracy"}),
        ("mnist1d-cnn", [], {"accuracy"}),
        ("agnews-charcnn", ["--data-dir", "CSV"], {"accuracy"}),
        ("shapes-maskrcnn", [], {"segm_map", "bbox_map_50"}),
    ],
)
def test_recipes_run_end_to_end_on_tiny_settings(recipe, extra, keys, tmp_path, capsys):
    if "CSV" in extra:
        _tiny_csv(tmp_path / "data")
        extra = ["--data-dir", str(tmp_path / "data")]
    if recipe == "mnist1d-cnn":  # a config file: generate 200 series, not the recipe's 5,000
        pytest.importorskip("mnist1d", reason="the optional 'mnist1d' package is not installed")
        from cnnkit.cli.recipes import RECIPE_DIR

        config = yaml.safe_load((RECIPE_DIR / f"{recipe}.yaml").read_text())
        config["dataset"]["args"]["num_samples"] = 200
        recipe = str(tmp_path / "mnist1d.yaml")
        Path(recipe).write_text(yaml.safe_dump(config))
        extra = ["--data-dir", str(tmp_path / "cache")]
    out = tmp_path / "run"
    code, _, err = run(["train", recipe, "--out", str(out), "--epochs", "1", "--limit", "12",
                        "--verbose", "0", "--threads", "1", *extra], capsys)  # fmt: skip
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert keys <= set(metrics["test"])
    assert all(np.isfinite(v) for v in metrics["test"].values())
    assert (out / "model.json").is_file() and (out / "history.csv").is_file()
    code, out_text, err = run(["evaluate", str(out)], capsys)
    assert code == 0, err


def test_segmentation_scores_match_sklearn(tmp_path, capsys):
    from sklearn.metrics import accuracy_score, jaccard_score

    import cnnkit
    from cnnkit.cli.datasets import load_data

    out = tmp_path / "run"
    argv = ["train", "shapes-unet", "--out", str(out), "--epochs", "1", "--limit", "12",
            "--verbose", "0", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    data = load_data("shapes", {"n": 600, "size": 64, "task": "segmentation"}, None, limit=12)
    pred = np.asarray(cnnkit.load(out).predict(data.x_test)).argmax(1).ravel()
    truth = data.y_test.numpy().ravel()
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["pixel_accuracy"] == pytest.approx(accuracy_score(truth, pred), abs=1e-6)
    present = np.union1d(truth, pred)
    iou = jaccard_score(truth, pred, labels=present, average="macro")
    assert test["pixel_mean_iou"] == pytest.approx(iou, abs=1e-6)
    assert (out / "plots" / "segmentation.png").is_file()
    code, text, err = run(["evaluate", str(out)], capsys)
    assert code == 0 and f"pixel_accuracy {test['pixel_accuracy']:.4f}" in text, err


@pytest.mark.parametrize(
    ("recipe", "model", "params"),
    # Wang et al.'s FCN (Conv1D 128-256-128, kernels 8-5-3, BN, GAP, dense) and ResNet
    # (three residual blocks of 64-128-128) for 2 classes and one channel
    [("ucr-fcn1d", "fcn1d", 264_962), ("ucr-resnet1d", "resnet1d", 504_258)],
)
def test_ucr_recipe_with_dataset_override(tmp_path, capsys, recipe, model, params):
    import cnnkit

    root = _data_root("ucr")
    out = tmp_path / "run"
    code, _, err = run(["train", recipe, "--data-dir", str(root), "--dataset", "ECG200",
                        "--epochs", "1", "--limit", "16", "--out", str(out), "--verbose", "0"],
                       capsys)  # fmt: skip
    assert code == 0, err
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["dataset"]["args"]["name"] == "ECG200"
    assert config["model"]["name"] == model
    net = cnnkit.load(out).module
    assert sum(p.numel() for p in net.parameters()) == params


# ------------------------------------------------------------------------ tools


def test_explain_conv_matches_torch_and_numpy(capsys):
    code, out, _ = run(["explain", "conv", "--input", "7", "--kernel", "3", "--stride", "2",
                        "--padding", "1", "--dims", "1"], capsys)  # fmt: skip
    assert code == 0
    n_out = torch.nn.functional.conv1d(torch.zeros(1, 1, 7), torch.zeros(1, 1, 3), stride=2,
                                       padding=1).shape[-1]  # fmt: skip
    assert f"output size {n_out}" in out
    assert "receptive field: each output sees 3 input positions" in out
    rows = [ln.split() for ln in out.splitlines() if re.fullmatch(r"[\s\d.]+", ln) and ln.strip()]
    k = np.array([[0 if v == "." else float(v) for v in r] for r in rows])
    assert k.shape == (n_out, 7)
    x = np.random.default_rng(0).standard_normal(7)
    w = np.array([1.0, 2.0, 3.0])  # entry i is kernel weight w_i = i
    want = np.correlate(np.pad(x, 1), w, mode="valid")[::2]
    np.testing.assert_allclose(k @ x, want)
    # the short form still works; a stride that does not fit says so
    code, out, _ = run(["explain", "7", "3", "--stride", "3"], capsys)
    assert code == 0 and "not an integer" in out
    code, _, err = run(["explain", "conv", "--input", "7"], capsys)
    assert code == 2 and "--kernel" in err


def test_summary_models_and_list(capsys):
    code, out, _ = run(["summary", "cifar_cnn", "--input-shape", "3", "32", "32"], capsys)
    assert code == 0 and "2,077,130" in out  # seed 004's table
    code, models_out, _ = run(["models"], capsys)
    assert code == 0 and "lenet5" in models_out.split()
    assert run(["list"], capsys)[1] == models_out
    code, _, err = run(["summary", "lenet"], capsys)
    assert code == 2 and "Did you mean 'lenet5'" in err


def test_data_verify(tmp_path, capsys):
    code, _, err = run(["data", "verify", "mnist", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "train-images-idx3-ubyte.gz" in err and "missing" in err
    code, _, err = run(["data", "download", "isbi2012"], capsys)
    assert code == 2 and "no public download" in err
    code, _, err = run(["data", "verify", "imagenet"], capsys)
    assert code == 2 and "unknown dataset 'imagenet'" in err
    root = _data_root("mnist")
    code, out, err = run(["data", "verify", "mnist", "--data-dir", str(root)], capsys)
    assert code == 0, err
    assert "train 60000, test 10000" in out and "checksums OK" in out
