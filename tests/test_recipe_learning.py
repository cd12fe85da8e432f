"""The ucr-fcn1d recipe converges for seeds other than its default (issue 21).

A recipe whose accuracy depends on the seed (the old 100-epoch, constant-rate, last-epoch
recipe scored 57-97 % on GunPoint) must turn this red. The recipe runs as `cnnkit train`
builds it (its model, optimizer, batch size, ReduceLROnPlateau callback, best-training-
loss weights) on a shortened schedule (fewer epochs, the plateau patience scaled with
them; nothing else overridden), for three seeds; the test accuracy is computed with
scikit-learn from the predictions.
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

#: The shortened schedule and the bar every seed must clear on GunPoint's 150 test series.
#: The recipe scaled to 62 of its 200 epochs: the plateau patience scales with it (the
#: recipe's 20 for 200 epochs, as the paper's 50 became 20: 20 * 62 // 200 = 6); nothing
#: else changes. Measured (fp32, CPU, one thread, best-training-loss weights), test
#: accuracy after 62 epochs: seeds 1 / 2 / 3 reach 96.7 / 97.3 / 98.0 %; seeds 4 / 5 / 11 /
#: 23 / 37, not tested, 96.7 / 98.7 / 98.7 / 99.3 / 96.0 %, and every seed stays >= 96.0 %
#: for any run of 62-70 epochs. 60 epochs are one step short (seed 37: 94.7 %; the
#: recipe's own patience 20 at 60 epochs never lowers the rate: seed 2 90.0 %). CPU time
#: (one thread): 16-18 s per seed, 52 s for the three. The old recipe (constant rate,
#: batch 16, the last epoch tested) fails it: seeds 1 / 2 / 3 score 96.0 / 94.7 / 88.0 %
#: after 62 epochs and 71.3 / 96.0 / 93.3 % after its 100. The full recipe's spread over 5
#: seeds is in REPRODUCTIONS.md.
EPOCHS = 62
SEEDS = (1, 2, 3)
BAR = 0.95


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
    (plateau,) = fit["callbacks"]
    assert plateau["name"] == "ReduceLROnPlateau" and plateau["args"]["monitor"] == "loss"
    # the plateau patience scaled with the shorter run, as the recipe scaled the paper's
    patience = plateau["args"]["patience"] * EPOCHS // fit["epochs"]
    callbacks = [{**plateau, "args": {**plateau["args"], "patience": patience}}]
    torch.set_num_threads(1)
    seed_everything(seed)
    data = load_data(config["dataset"]["name"], config["dataset"]["args"], str(root), None)
    model, _ = build_model(config, data)
    compile_model(model, config, "cpu", "fp32")
    # fit.restore_best as `cnnkit train` applies it, kept in memory instead of on disk
    best = EarlyStopping(monitor=fit["restore_best"], patience=EPOCHS, restore_best_weights=True)
    model.fit(
        data.x_train, data.y_train, batch_size=fit["batch_size"], epochs=EPOCHS, verbose=0,
        callbacks=[*build_callbacks(callbacks, "ucr-fcn1d"), best],
    )  # fmt: skip
    pred = model.predict(data.x_test, batch_size=64).argmax(1)
    acc = accuracy_score(data.y_test.numpy(), pred)
    assert acc >= BAR, f"seed {seed}: test accuracy {acc:.3f}, {EPOCHS} epochs, patience {patience}"
