"""Freezing with Keras' semantics (``cnnkit.set_trainable``) and the fine-tuning workflow:
a frozen backbone keeps its weights and batch-norm statistics through ``fit``, the summary
counts trainable and non-trainable parameters, and unfreezing + compiling again with a
lower learning rate trains the backbone."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import cnnkit
from cnnkit import ConfigError
from cnnkit.layers import (
    Activation,
    BatchNormalization,
    Conv2D,
    Dense,
    GlobalAveragePooling2D,
    MaxPooling2D,
)
from cnnkit.layers.trainable import frozen_batch_norms
from cnnkit.models.base import ImageClassifier


def _net() -> ImageClassifier:
    def stage(c_in, c_out):
        bn = BatchNormalization(momentum=0.9).build((None, c_out, None, None))
        return nn.Sequential(Conv2D(c_out, 3, padding=1, in_channels=c_in), bn, Activation("relu"))

    stages = [("stem", stage(3, 8)), ("pool", MaxPooling2D(2)), ("block", stage(8, 16))]
    head = nn.Sequential(GlobalAveragePooling2D(), Dense(3, in_features=16))
    return ImageClassifier(stages, head, (3, 16, 16))


def _data(n: int = 48):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 16, 16, generator=g) * 2 + 0.5  # far from BN's initial statistics
    return x, torch.randint(0, 3, (n,), generator=g)


def _compiled(net: nn.Module, lr: float) -> cnnkit.Model:
    model = cnnkit.Model(net)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", learning_rate=lr,
                  device="cpu", precision="fp32")  # fmt: skip
    return model


def test_frozen_features_keep_weights_and_batch_norm_statistics():
    net = _net()
    cnnkit.set_trainable(net.features, False)
    assert frozen_batch_norms(net) == ["features.stem.1.bn", "features.block.1.bn"]
    before = copy.deepcopy(net.state_dict())
    model = _compiled(net, 1e-2)
    x, y = _data()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    after = net.state_dict()
    for key, value in before.items():  # weights, running mean/var and num_batches_tracked
        if key.startswith("features."):
            assert torch.equal(after[key], value), key
    assert not torch.equal(after["head.1.weight"], before["head.1.weight"])


def test_frozen_batch_norm_stays_in_inference_mode_after_train():
    net = _net()
    x, _ = _data(8)
    cnnkit.set_trainable(net.features, False)
    net.train()  # what fit does every epoch
    bn = net.features.stem[1]
    assert bn.training  # the cnnkit layer follows the model...
    with torch.no_grad():
        train_out = net(x)
        assert not bn.bn.training  # ...its torch batch norm ran in inference mode
        net.eval()
        torch.testing.assert_close(train_out, net(x), rtol=0, atol=0)
    ref = _net()  # an unfrozen net in training mode normalises with batch statistics
    ref.load_state_dict(net.state_dict())
    ref.train()
    with torch.no_grad():
        assert not torch.allclose(ref(x), train_out, atol=1e-3)


def test_summary_counts_trainable_and_non_trainable():
    net = _net()
    head = sum(p.numel() for p in net.head.parameters())
    total = sum(p.numel() for p in net.parameters())
    cnnkit.set_trainable(net.features, False)
    lines: list[str] = []
    rows = cnnkit.summary(net, (3, 16, 16), print_fn=lines.append)
    assert rows.trainable_params == head
    assert rows.non_trainable_params == total - head
    assert f"Trainable params: {head:,}" in lines
    assert f"Non-trainable params: {total - head:,}" in lines


def test_unfreeze_and_compile_again_with_a_lower_learning_rate():
    net = _net()
    cnnkit.set_trainable(net.features, False)
    x, y = _data()
    _compiled(net, 1e-2).fit(x, y, epochs=1, batch_size=16, verbose=0)
    frozen = copy.deepcopy(net.state_dict())
    cnnkit.set_trainable(net.features, True)  # Keras: base_model.trainable = True
    assert frozen_batch_norms(net) == []
    assert all(p.requires_grad for p in net.parameters())
    model = _compiled(net, 1e-4)  # then compile again, 100x lower
    assert model.optimizer is None or model.optimizer.param_groups[0]["lr"] == 1e-4
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert model.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    after = net.state_dict()
    for key in ("features.stem.0.weight", "features.stem.1.bn.running_mean"):
        assert not torch.equal(after[key], frozen[key]), key
    assert after["features.stem.1.bn.num_batches_tracked"] == 3  # 48 samples / 16


def test_freezing_part_of_a_backbone_and_copies():
    net = _net()
    cnnkit.set_trainable(net, False)
    cnnkit.set_trainable(net.features.block, True)  # fine-tune the top block only
    assert frozen_batch_norms(net) == ["features.stem.1.bn"]
    assert [n for n, p in net.named_parameters() if p.requires_grad] == [
        "features.block.0.weight", "features.block.0.bias",
        "features.block.1.bn.weight", "features.block.1.bn.bias",
    ]  # fmt: skip
    twin = copy.deepcopy(net)  # the freeze travels with a copy, and can be undone there
    assert frozen_batch_norms(twin) == ["features.stem.1.bn"]
    cnnkit.set_trainable(twin, True)
    assert frozen_batch_norms(twin) == [] and frozen_batch_norms(net) == ["features.stem.1.bn"]
    assert not twin.features.stem[1].bn._forward_pre_hooks


def test_set_trainable_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="nn.Module"):
        cnnkit.set_trainable("features", False)
    with pytest.raises(ConfigError, match="True or False"):
        cnnkit.set_trainable(_net(), 0)
