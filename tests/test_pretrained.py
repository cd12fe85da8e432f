"""Pretrained weights: ``create(name, weights=...)`` against torchvision's and timm's own
models, the explicit key mappings, the file formats, the search order (local folder, hub
cache, checksummed download from a local HTTP server), the offline error, preprocessing,
and Xception's architecture (Keras' counts, timm's outputs, ONNX).

No test needs the internet: the "pretrained" files are torchvision/timm models with random
weights and non-trivial batch-norm statistics, saved by the test.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import http.server
import math
import threading

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from cnnkit import CnnkitError, ConfigError
from cnnkit.models import create, preprocessing
from cnnkit.models import weights as published
from cnnkit.models.pretrained import FAMILIES, FeatureExtractor, map_keys

META = torch.device("meta")


def _randomize(ref: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights, BN running means in [-0.2, 0.2] and variances in [0.5, 1.5]."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in ref.state_dict().items():
            if key.endswith("num_batches_tracked"):
                t.fill_(7)
            elif key.endswith("running_var"):
                t.uniform_(0.5, 1.5, generator=gen)
            elif t.dim() > 1:
                bound = 1.0 / math.sqrt(t[0].numel())
                t.uniform_(-bound, bound, generator=gen)
            else:
                t.uniform_(-0.2, 0.2, generator=gen)
                if key.endswith(".weight"):  # batch-norm scale
                    t.add_(1.0)
    return ref.eval()


def _torchvision(name: str, **kw) -> nn.Module:
    if name == "googlenet":
        kw = {"aux_logits": True, "init_weights": False, **kw}  # as the published file
    with META:
        ref = getattr(torchvision.models, name)(weights=None, **kw)
    return _randomize(ref.to_empty(device="cpu"))


def _save(state: dict, path) -> None:
    if str(path).endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert want.abs().max() > 1e-2  # not a degenerate comparison
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------- outputs vs torchvision

CASES = [
    ("resnet18", "resnet18", {}, ".pth"),
    ("resnet18", "resnet18", {}, ".safetensors"),
    ("resnet50", "resnet50", {}, ".pth"),
    ("vgg11", "vgg11", {}, ".pth"),
    ("googlenet", "googlenet", {}, ".safetensors"),
    ("alexnet", "alexnet", {"variant": "torchvision"}, ".pth"),
]


@pytest.mark.parametrize(("name", "tv", "kw", "ext"), CASES, ids=[c[0] + c[3] for c in CASES])
def test_torchvision_files_give_torchvision_outputs(tmp_path, name, tv, kw, ext):
    ref = _torchvision(tv)
    path = tmp_path / f"{tv}{ext}"
    _save(ref.state_dict(), path)
    model = create(name, weights=path, **kw).eval()
    assert model.cnnkit_spec == {"name": name, "kwargs": {**kw, "num_classes": 1000}}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _close(model(x), ref(x))
    # the BN statistics came along (eval-mode outputs depend on them; checked directly too)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    ref_bns = [m for m in ref.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if name == "googlenet":
        ref_bns = [m for n, m in ref.named_modules() if m in ref_bns and not n.startswith("aux")]
    assert len(bns) == len(ref_bns)
    for a, b in zip(bns, ref_bns):
        torch.testing.assert_close(a.running_var, b.running_var, rtol=0, atol=0)


def test_googlenet_keeps_the_auxiliary_heads_when_asked(tmp_path):
    ref = _torchvision("googlenet")
    path = tmp_path / "googlenet.pth"
    _save(ref.state_dict(), path)
    model = create("googlenet", weights=path, aux_logits=True)
    x = torch.randn(2, 3, 64, 64)
    model.train(), ref.train()
    torch.manual_seed(1)
    want = ref(x)
    torch.manual_seed(1)
    got = model(x)
    for g, w in zip(got, want):  # (logits, aux2, aux1), batch statistics in training mode
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


FAMILY_CASES = [
    *((f"resnet{d}", f"resnet{d}", {}) for d in (18, 34, 50, 101, 152)),
    *((f"vgg{d}", f"vgg{d}", {}) for d in (11, 13, 16, 19)),
    *((f"vgg{d}_bn", f"vgg{d}_bn", {}) for d in (11, 13, 16, 19)),
    ("googlenet", "googlenet", {"aux_logits": True}),
    ("alexnet", "alexnet", {"variant": "torchvision"}),
]


@pytest.mark.parametrize(("name", "tv", "kw"), FAMILY_CASES, ids=[c[0] for c in FAMILY_CASES])
def test_key_mapping_covers_every_key_both_ways(name, tv, kw):
    tv_kw = {"aux_logits": True, "init_weights": False} if tv == "googlenet" else {}
    with META:
        ref = getattr(torchvision.models, tv)(weights=None, **tv_kw)
        model = create(name, **kw)
    mapped, unmatched = map_keys(ref.state_dict(), FAMILIES[name].rules(kw))
    assert unmatched == []
    ours = model.state_dict()
    assert set(mapped) == set(ours)
    assert all(mapped[k].shape == ours[k].shape for k in ours)


def test_alexnet_torchvision_variant_counts():
    with META:
        tv = create("alexnet", variant="torchvision")
        paper = create("alexnet")
    assert sum(p.numel() for p in tv.parameters()) == 61_100_840
    assert sum(p.numel() for p in paper.parameters()) == 62_378_344
    with pytest.raises(ConfigError, match="'paper' or 'torchvision'"):
        create("alexnet", variant="owt")


# ----------------------------------------------------------------- errors, heads, channels


def test_missing_extra_and_misshapen_keys_are_listed(tmp_path):
    state = _torchvision("resnet18").state_dict()
    bad = dict(state)
    del bad["layer2.0.conv1.weight"]
    bad["layer9.0.conv1.weight"] = torch.zeros(1)
    bad["fc.bias"] = torch.zeros(999)
    path = tmp_path / "bad.pth"
    _save(bad, path)
    with pytest.raises(CnnkitError) as err:
        create("resnet18", weights=path)
    text = str(err.value)
    assert "missing keys: features.layer2.0.conv1.weight" in text
    assert "unexpected keys: layer9.0.conv1.weight (as features.layer9.0.conv1.weight)" in text
    assert "head.1.bias (999,) (model: (1000,))" in text
    assert "Nothing was loaded" in text
    # a ResNet-18 file is not a ResNet-34
    good = tmp_path / "r18.safetensors"
    _save(state, good)
    with pytest.raises(CnnkitError, match=r"missing keys: .*features\.layer1\.2\."):
        create("resnet34", weights=good)


def test_files_without_num_batches_tracked_load(tmp_path):
    ref = _torchvision("resnet18")
    state = {k: v for k, v in ref.state_dict().items() if "num_batches_tracked" not in k}
    _save(state, tmp_path / "old.pth")
    model = create("resnet18", weights=tmp_path / "old.pth").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _close(model(x), ref(x))


def test_new_classifier_keeps_the_backbone(tmp_path):
    ref = _torchvision("resnet18")
    _save(ref.state_dict(), tmp_path / "r.pth")
    model = create("resnet18", weights=tmp_path / "r.pth", num_classes=7).eval()
    assert model.head[1].weight.shape == (7, 512)
    assert not model.head[1].weight.is_meta
    assert model.cnnkit_spec["kwargs"]["num_classes"] == 7
    x = torch.randn(2, 3, 64, 64)
    backbone = nn.Sequential(*list(ref.children())[:-2])
    with torch.no_grad():
        _close(model.forward_features(x), backbone(x))
        assert model(x).shape == (2, 7)


@pytest.mark.parametrize("pooling", [None, "avg", "max"])
def test_include_top_false_and_pooling(tmp_path, pooling):
    ref = _torchvision("resnet18")
    _save(ref.state_dict(), tmp_path / "r.pth")
    model = create("resnet18", weights=tmp_path / "r.pth", include_top=False, pooling=pooling)
    assert isinstance(model, FeatureExtractor)
    assert not any(k.startswith("head") for k in model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = nn.Sequential(*list(ref.children())[:-2])(x)
        want = {None: maps, "avg": maps.mean((2, 3)), "max": maps.amax((2, 3))}[pooling]
        _close(model.eval()(x), want)
    with pytest.raises(ConfigError, match="include_top=False"):
        create("resnet18", pooling="avg")


def test_one_channel_input_sums_the_rgb_kernel(tmp_path):
    ref = _torchvision("resnet18")
    _save(ref.state_dict(), tmp_path / "r.pth")
    gray = create("resnet18", weights=tmp_path / "r.pth", in_channels=1).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():  # conv(sum_c W_c, x) == conv(W, [x, x, x])
        _close(gray(x), ref(x.expand(-1, 3, -1, -1)))


def test_cnnkit_saved_models_load_key_for_key(tmp_path):
    import cnnkit

    net = create("resnet18", num_classes=4)
    _randomize(net)
    cnnkit.Model(net).save(tmp_path / "run")
    again = create("resnet18", weights=tmp_path / "run").eval()
    assert again.head[1].units == 4
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _close(again(x), net.eval()(x))
    # and onto another task: the backbone stays, the head is new
    other = create("resnet18", weights=tmp_path / "run", num_classes=10).eval()
    with torch.no_grad():
        _close(other.forward_features(x), net.forward_features(x))


def test_bad_weights_arguments():
    with pytest.raises(ConfigError, match="no weights 'imagnet'.*Did you mean 'imagenet'"):
        create("resnet18", weights="imagnet")
    with pytest.raises(ConfigError, match="no published weights are registered"):
        create("lenet5", weights="imagenet")
    with pytest.raises(ConfigError, match="need variant='torchvision'"):
        create("alexnet", weights="imagenet", variant="paper")


def test_pickles_that_are_not_state_dicts_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CnnkitError, match="weights_only=True"):
        create("resnet18", weights=tmp_path / "evil.pth")


# ----------------------------------------------------------------- finding and fetching files


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty CNNKIT_DATA and TORCH_HOME folders."""
    data, torch_home = tmp_path / "data", tmp_path / "torch"
    monkeypatch.setenv("CNNKIT_DATA", str(data))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return data / "weights", torch_home / "hub" / "checkpoints"


@pytest.fixture
def spec_for(monkeypatch):
    """Register a temporary weight set for resnet18 (removed afterwards)."""

    def make(url: str, sha256: str = "", prefix: str = "") -> published.WeightSpec:
        spec = published.WeightSpec("resnet18", "test-local", url, sha256, prefix)
        monkeypatch.setitem(published.WEIGHTS, ("resnet18", "test-local"), spec)
        return spec

    return make


class _Server:
    def __init__(self, folder):
        handler = functools.partial(QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_from_a_local_server_checks_the_checksum(tmp_path, homes, spec_for):
    weights_dir, _ = homes
    served = tmp_path / "served"
    served.mkdir()
    ref = _torchvision("resnet18")
    _save(ref.state_dict(), served / "r18.pth")
    digest = hashlib.sha256((served / "r18.pth").read_bytes()).hexdigest()
    x = torch.randn(1, 3, 64, 64)
    with _Server(served) as base:
        spec_for(f"{base}/r18.pth", sha256="0" * 64)  # wrong: refused before use
        with pytest.raises(CnnkitError) as err:
            create("resnet18", weights="test-local")
        assert f"expected {'0' * 64}" in str(err.value)
        assert not (weights_dir / "r18.pth").exists()
        assert not (weights_dir / "r18.pth.part").exists()
        spec_for(f"{base}/r18.pth", prefix=digest[:8])  # torchvision's file-name digits
        model = create("resnet18", weights="test-local").eval()
    assert (weights_dir / "r18.pth").is_file()
    with torch.no_grad():
        _close(model(x), ref(x))


def test_hub_cache_is_searched_and_checked(tmp_path, homes, spec_for, monkeypatch):
    _, hub = homes
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    hub.mkdir(parents=True)
    ref = _torchvision("resnet18")
    _save(ref.state_dict(), hub / "r18-cached.pth")
    digest = hashlib.sha256((hub / "r18-cached.pth").read_bytes()).hexdigest()
    spec_for("http://127.0.0.1:9/r18-cached.pth", prefix=digest[:8])
    assert published.weights_file("resnet18", "test-local") == hub / "r18-cached.pth"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _close(create("resnet18", weights="test-local").eval()(x), ref(x))
    spec_for("http://127.0.0.1:9/r18-cached.pth", prefix="deadbeef")  # a corrupt copy
    with pytest.raises(
        CnnkitError,
        match=r"expected one starting deadbeef \(corrupt or a different file\): not used",
    ):
        create("resnet18", weights="test-local")


def test_offline_error_names_model_url_checksum_and_folder(homes, monkeypatch):
    weights_dir, hub = homes
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    with pytest.raises(CnnkitError) as err:
        create("resnet18", weights="imagenet")
    text = str(err.value)
    assert text.startswith("resnet18: the 'imagenet' weights are not available.")
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in text
    assert "sha256 starting f37072fd" in text
    assert f"Put the file into {weights_dir}" in text and str(hub) in text


def test_offline_download_failure_is_the_same_error(homes, spec_for):
    spec_for("http://127.0.0.1:9/nothing-here.pth", prefix="abcd1234")  # port 9: refused
    with pytest.raises(CnnkitError, match=r"download failed: .*127\.0\.0\.1:9"):
        create("resnet18", weights="test-local")


def test_every_published_entry_is_complete():
    for (model, _tag), spec in published.WEIGHTS.items():
        assert model in FAMILIES, model
        assert spec.url.startswith("https://") and spec.file_name.endswith(".pth")
        assert spec.sha256_prefix and spec.sha256_prefix in spec.file_name
        assert int(spec.sha256_prefix, 16) >= 0 and len(spec.sha256_prefix) >= 8
    tv = {w.url for e in (torchvision.models.ResNet50_Weights, torchvision.models.VGG16_BN_Weights,
                          torchvision.models.GoogLeNet_Weights, torchvision.models.AlexNet_Weights)
          for w in e}  # fmt: skip
    assert published.WEIGHTS[("resnet50", "imagenet")].url in tv
    assert published.WEIGHTS[("vgg16_bn", "imagenet")].url in tv
    assert published.WEIGHTS[("alexnet", "imagenet")].url in tv


# ----------------------------------------------------------------- preprocessing


def test_preprocessing_matches_torchvision_transforms():
    img = torch.rand(3, 300, 280)
    want = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()(img)
    got = preprocessing("resnet18", "imagenet")(img)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert preprocessing("resnet18", "imagenet").input_size == (3, 224, 224)
    batch = preprocessing("resnet50", "imagenet-v2")(img[None].expand(2, -1, -1, -1))
    want2 = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms()(img)
    torch.testing.assert_close(batch[1], want2, rtol=1e-5, atol=1e-5)


def test_googlenet_preprocessing_is_torchvisions_transform_input():
    """torchvision feeds ImageNet-normalised input through ``transform_input``; the
    published weights therefore see (x - 0.5) / 0.5, which is what the metadata says."""
    x = torch.rand(2, 3, 240, 250)
    tv = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False,
                                      transform_input=True)  # fmt: skip
    imagenet = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.transforms()(x)
    ours = preprocessing("googlenet", "imagenet")
    torch.testing.assert_close(tv._transform_input(imagenet), ours(x), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------- Xception


def test_xception_counts_and_stage_shapes():
    with META:
        model = create("xception")
        stages = model.forward_stages(torch.zeros(1, 3, 299, 299))
    params = sum(p.numel() for p in model.parameters())
    moving = sum(b.numel() for n, b in model.named_buffers() if "running_" in n)
    assert params == 22_855_952
    assert params + moving == 22_910_480  # Keras' count_params(): BN moving stats included
    shapes = {k: tuple(v.shape[1:]) for k, v in stages.items()}
    assert shapes["block1"] == (64, 147, 147)
    assert [shapes[f"block{i}"] for i in (2, 3, 4)] == [(128, 74, 74), (256, 37, 37), (728, 19, 19)]
    assert all(shapes[f"block{i}"] == (728, 19, 19) for i in range(5, 13))
    assert shapes["block13"] == (1024, 10, 10) and shapes["block14"] == (2048, 10, 10)


def test_xception_counts_equal_keras(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")  # read at keras' first import
    keras = pytest.importorskip("keras")
    ref = keras.applications.Xception(weights=None)
    trainable = sum(int(np.prod(w.shape)) for w in ref.trainable_weights)
    with META:
        model = create("xception")
    moving = sum(b.numel() for n, b in model.named_buffers() if "running_" in n)
    assert trainable == sum(p.numel() for p in model.parameters())
    assert ref.count_params() == trainable + moving


def test_xception_matches_timm(tmp_path):
    timm = pytest.importorskip("timm")
    with META:
        ref = timm.create_model("legacy_xception")
    ref = _randomize(ref.to_empty(device="cpu"))
    assert sum(p.numel() for p in ref.parameters()) == 22_855_952
    _save(ref.state_dict(), tmp_path / "xception.safetensors")
    model = create("xception", weights=tmp_path / "xception.safetensors").eval()
    for side in (71, 74):  # odd and even sizes: the poolings' padding must agree
        x = torch.randn(2, 3, side, side)
        with torch.no_grad():
            _close(model(x), ref(x))
            _close(model.forward_features(x), ref.forward_features(x))


def test_xception_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from cnnkit.train.export import export_onnx

    model = create("xception", num_classes=5).eval()
    path = export_onnx(model, tmp_path / "x.onnx", input_shape=(3, 71, 71))
    x = torch.rand(2, 3, 71, 71)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_localizer_on_a_pretrained_backbone(tmp_path):
    ref = _torchvision("resnet18")
    _save(ref.state_dict(), tmp_path / "r.pth")
    model = create("localizer", backbone="resnet18", weights=tmp_path / "r.pth",
                   num_classes=3, in_channels=3, input_size=64)  # fmt: skip
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        _close(model.backbone(x), nn.Sequential(*list(ref.children())[:-2])(x))
        probs, boxes = model(x)
    assert probs.shape == (2, 3) and boxes.shape == (2, 4)
    assert "weights" not in model.cnnkit_spec["kwargs"]  # a saved model rebuilds offline
    # seed 001's compile: two losses weighted [0.8, 0.2]; the frozen backbone stays put
    import cnnkit

    cnnkit.set_trainable(model.backbone, False)
    before = copy.deepcopy(model.backbone.state_dict())
    wrapped = cnnkit.Model(model)
    wrapped.compile(optimizer="adam", loss=["sparse_categorical_crossentropy", "mse"],
                    loss_weights=[0.8, 0.2], metrics=["accuracy"], device="cpu",
                    precision="fp32")  # fmt: skip
    y = (torch.randint(0, 3, (8,)), torch.rand(8, 4))
    history = wrapped.fit(torch.randn(8, 3, 64, 64), y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    after = model.backbone.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    with pytest.raises(ConfigError, match="registered backbone"):
        create("localizer", weights=tmp_path / "r.pth")
