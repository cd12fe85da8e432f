"""The ucr-fcn1d recipe converges for seeds other than its default (issue 21).

A recipe whose accuracy depends on the seed (the old 100-epoch, constant-rate, last-epoch
recipe scored 57-97 % on GunPoint) must turn this red. The recipe runs as `cnnkit train`
builds it (its model, optimizer, batch size, ReduceLROnPlateau callback, best-training-
loss weights) on a shortened schedule, for three seeds; the test accuracy is computed
with scikit-learn from the predictions.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from sklearn.metrics import accuracy_score

from cnnkit.callbacks import EarlyStopping
from cnnkit.cli.datasets import load_data
from cnnkit.cli.recipes import build_callbacks, load_config
from cnnkit.cli.training import build_model, compile_model
from cnnkit.train.seed import seed_everything

#: The shortened schedule (60 of the recipe's 200 epochs, about 17 s of CPU per seed) and
#: the bar every seed must clear on GunPoint's 150 test series. Measured: seeds 1 / 2 / 3
#: reach 100 / 90.0 / 96.0 %; the same 60 epochs at the old recipe's batch 16 left seeds
#: 11 and 2 at 74.0 and 82.7 %. The full recipe's spread over 5 seeds is in
#: REPRODUCTIONS.md.
EPOCHS = 60
SEEDS = (1, 2, 3)
BAR = 0.88


def _data_dir() -> Path:
    env = os.environ.get("CNNKIT_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.parametrize("seed", SEEDS)
def test_ucr_fcn1d_recipe_learns_gunpoint_for_other_seeds(seed):
    root = _data_dir()
    if not (root / "ucr" / "GunPoint" / "GunPoint_TRAIN.tsv").is_file():
        pytest.skip(f"UCR GunPoint not found in {root / 'ucr'} (set CNNKIT_DATA)")
    config = load_config("ucr-fcn1d")
    assert config["dataset"]["args"]["name"] == "GunPoint" and config["seed"] not in SEEDS
    fit = config["fit"]
    assert fit["restore_best"] == "loss"
    torch.set_num_threads(1)
    seed_everything(seed)
    data = load_data(config["dataset"]["name"], config["dataset"]["args"], str(root), None)
    model, _ = build_model(config, data)
    compile_model(model, config, "cpu", "fp32")
    # fit.restore_best as `cnnkit train` applies it, kept in memory instead of on disk
    best = EarlyStopping(monitor=fit["restore_best"], patience=EPOCHS, restore_best_weights=True)
    model.fit(
        data.x_train, data.y_train, batch_size=fit["batch_size"], epochs=EPOCHS, verbose=0,
        callbacks=[*build_callbacks(fit["callbacks"], "ucr-fcn1d"), best],
    )  # fmt: skip
    pred = model.predict(data.x_test, batch_size=64).argmax(1)
    acc = accuracy_score(data.y_test.numpy(), pred)
    assert acc >= BAR, f"seed {seed}: test accuracy {acc:.3f} after {EPOCHS} epochs"
