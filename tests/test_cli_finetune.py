"""``cnnkit train`` on an image folder with pretrained weights: ``model.weights``,
``model.freeze``, ``--weights PATH``, the weights' preprocessing applied by itself, and the
``finetune-folder`` recipe. In process, no internet: the "pretrained" file is a
torchvision ResNet-18 with random weights in a temporary torch hub cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image
from torch import nn

import cnnkit
from cnnkit.cli.main import main
from cnnkit.cli.recipes import load_config
from cnnkit.models import weights as published


def _image_folder(root, classes=3, per_class=6, side=48):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 80, (side, side, 3), dtype=np.uint8)
            img[:, c * 16 : c * 16 + 16] += 150  # a bright band whose place is the class
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.png")


def _random_resnet18() -> nn.Module:
    ref = torchvision.models.resnet18(weights=None)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, t in ref.state_dict().items():
            if key.endswith("running_var"):
                t.uniform_(0.5, 1.5, generator=gen)
            elif key.endswith("running_mean"):
                t.uniform_(-0.2, 0.2, generator=gen)
            elif t.dim() > 1:
                t.uniform_(-1, 1, generator=gen).mul_(1.0 / math.sqrt(t[0].numel()))
    return ref.eval()


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    ref = _random_resnet18()
    torch.save(ref.state_dict(), hub / "r18-test.pth")
    import hashlib

    digest = hashlib.sha256((hub / "r18-test.pth").read_bytes()).hexdigest()
    prep = published.Preprocessing(resize_size=40, crop_size=32, mean=(0.4,) * 3, std=(0.3,) * 3)
    spec = published.WeightSpec("resnet18", "test-local", "http://127.0.0.1:9/r18-test.pth",
                                sha256=digest, preprocessing=prep)  # fmt: skip
    monkeypatch.setitem(published.WEIGHTS, ("resnet18", "test-local"), spec)
    _image_folder(tmp_path / "images")
    return tmp_path, ref


def _config(tmp_path, model: dict) -> str:
    config = {
        "task": "classification",
        "dataset": {"name": "folder", "args": {"path": str(tmp_path / "images"), "size": 48}},
        "model": model,
        "compile": {"optimizer": "adam", "learning_rate": 0.01,
                    "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
        "fit": {"epochs": 2, "batch_size": 8},
    }  # fmt: skip
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


COMMON = ["--device", "cpu", "--precision", "fp32", "--verbose", "0", "--threads", "1"]


def test_weights_tag_freeze_and_preprocessing(setup, capsys):
    tmp_path, ref = setup
    cfg = _config(tmp_path, {"name": "resnet18", "weights": "test-local", "freeze": "features"})
    out = tmp_path / "run"
    assert main(["train", cfg, "--out", str(out), *COMMON]) == 0, capsys.readouterr().err
    record = yaml.safe_load((out / "config.yaml").read_text())
    assert record["run"]["input_shape"] == [3, 32, 32]  # resized 48 -> 40, cropped to 32
    assert record["run"]["classes"] == ["class0", "class1", "class2"]
    model = cnnkit.load(out).module.eval()
    assert model.head[1].units == 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the frozen backbone is still the file's, BN statistics included
        want = nn.Sequential(*list(ref.children())[:-2])(x)
        torch.testing.assert_close(model.forward_features(x), want, rtol=1e-4, atol=1e-4)
    assert main(["evaluate", str(out)]) == 0  # the preprocessing is applied again
    capsys.readouterr()
    image = tmp_path / "images" / "class1" / "0.png"
    assert main(["predict", str(out), str(image)]) == 0
    text = capsys.readouterr().out
    rgb = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32) / 255
    x = published.WEIGHTS[("resnet18", "test-local")].preprocessing(
        torch.from_numpy(rgb).permute(2, 0, 1)
    )
    with torch.no_grad():
        probs = torch.softmax(model(x[None]), 1)[0]
    k = int(probs.argmax())
    assert f"0.png: class{k} ({100 * float(probs[k]):.1f}%)" in text


def test_weights_path_on_the_command_line(setup, capsys):
    tmp_path, ref = setup
    torch.save(ref.state_dict(), tmp_path / "mine.pth")
    cfg = _config(tmp_path, {"name": "resnet18", "num_classes": 3})
    out = tmp_path / "run"
    argv = ["train", cfg, "--weights", str(tmp_path / "mine.pth"), "--epochs", "1", "--limit", "4"]
    assert main([*argv, "--out", str(out), *COMMON]) == 0, capsys.readouterr().err
    record = yaml.safe_load((out / "config.yaml").read_text())
    assert record["model"]["weights"] == str(tmp_path / "mine.pth")
    # a path in torchvision's layout gets the family's ImageNet preprocessing (224 crop)
    assert record["run"]["input_shape"] == [3, 224, 224]
    # not frozen: the backbone moved away from the file
    model = cnnkit.load(out).module
    assert not torch.equal(model.features.stem[0].weight, ref.conv1.weight)


def test_bad_freeze_paths_are_reported(setup, capsys):
    tmp_path, _ = setup
    cfg = _config(tmp_path, {"name": "resnet18", "weights": "test-local", "freeze": "backbone"})
    assert main(["train", cfg, "--out", str(tmp_path / "run"), *COMMON]) != 0
    assert "has no part 'backbone'; its top-level parts: features, head" in capsys.readouterr().err
    cfg = _config(tmp_path, {"name": "resnet18", "freeze": 3})
    assert main(["train", cfg, "--out", str(tmp_path / "run2"), *COMMON]) != 0
    assert "model.freeze must name a part of the model" in capsys.readouterr().err


def test_finetune_folder_recipe():
    config = load_config("finetune-folder")
    assert config["model"] == {"name": "resnet18", "args": {}, "weights": "imagenet",
                               "freeze": "features"}  # fmt: skip
    assert config["dataset"]["name"] == "folder"
    assert ("resnet18", "imagenet") in published.WEIGHTS
