"""ReduceLROnPlateau (Keras' rule) and the recipes' fit.callbacks / fit.restore_best.

References: schedules worked out by hand from Keras 3's documented rule, Keras' own
callback driven with the same values (when keras is installed), and an uninterrupted
fit for the resumed one.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch

import cnnkit
from cnnkit import ConfigError
from cnnkit.callbacks import ModelCheckpoint, ReduceLROnPlateau, reduce_on_plateau
from cnnkit.cli.main import main
from cnnkit.layers import Conv2D, Dense, Flatten
from cnnkit.train.schedules import KerasPlateau


def _optimizer(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(values, direction="min", **kw):
    opt = _optimizer()
    args = {"factor": 0.5, "patience": 1, "min_delta": 0.0, "cooldown": 0, "min_lr": 0.0}
    args.update(kw)
    sched = KerasPlateau(opt, "loss", direction, **args)
    out = []
    for v in values:
        sched.step(v)
        out.append(opt.param_groups[0]["lr"])
    return out


# Worked by hand from Keras' rule (cooldown counts down first; an improvement resets the
# wait; out of cooldown the wait grows and at `patience` the rate drops):
@pytest.mark.parametrize(
    ("values", "direction", "kw", "expected"),
    [
        # patience 2: two epochs without a lower loss, then halve (torch would wait 3)
        ([5, 4, 4, 4, 3, 3, 3, 3], "min", {"patience": 2}, [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]),
        # cooldown 2 and min_lr 0.2: the epoch the cooldown ends in counts; never below 0.2
        ([1] * 8, "min", {"cooldown": 2, "min_lr": 0.2}, [1, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2]),
        # max mode with min_delta 0.05: +0.02 is no improvement, +0.08 is
        ([0.5, 0.52, 0.6, 0.62, 0.7], "max", {"min_delta": 0.05}, [1, 0.5, 0.5, 0.25, 0.25]),
        # patience 0: every epoch without improvement halves
        ([3, 3, 2, 2], "min", {"patience": 0}, [1, 0.5, 0.5, 0.25]),
    ],
)
def test_schedule_by_hand(values, direction, kw, expected):
    assert _lrs(values, direction, **kw) == pytest.approx(expected, rel=1e-12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_schedule_equals_keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    for case in range(6):
        values = np.round(rng.random(40).cumsum() * 0.1 * rng.choice([-1, 1]), 2)
        values = values if case % 2 else np.round(rng.random(40), 1)  # many ties
        kw = {"factor": 0.5, "patience": case % 3, "min_delta": 0.01 * (case % 2),
              "cooldown": case % 4, "min_lr": 0.05}  # fmt: skip
        cb = keras.callbacks.ReduceLROnPlateau(monitor="loss", mode="min", **kw)

        class Holder:
            optimizer = keras.optimizers.SGD(learning_rate=1.0)

        holder = Holder()
        cb.set_model(holder)
        cb.on_train_begin()
        expected = []
        for epoch, v in enumerate(values):
            cb.on_epoch_end(epoch, {"loss": float(v)})
            expected.append(float(holder.optimizer.learning_rate))
        assert _lrs(values, "min", **kw) == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------ in fit


def _model(lr=0.8, **compile_kw):
    model = cnnkit.Sequential(
        [Conv2D(4, 3, activation="relu"), Flatten(), Dense(3, activation="softmax")],
        input_shape=(1, 6, 6),
    )
    model.compile(
        optimizer=torch.optim.SGD(model.parameters(), lr=lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        device="cpu",
        precision="fp32",
        **compile_kw,
    )
    return model


def _data(n=32):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


class LrLog(cnnkit.callbacks.Callback):
    def __init__(self):
        self.lrs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.lrs.append(self.model.optimizer.param_groups[0]["lr"])


def test_in_fit_halves_after_patience_and_stops_at_min_lr():
    x, y = _data()
    lrs = LrLog()
    # min_delta 1e9: no epoch after the first counts as an improvement
    cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e9, min_lr=0.1)
    _model(lr=0.8).fit(x, y, batch_size=8, epochs=6, verbose=0, callbacks=[cb, lrs])
    assert lrs.lrs == pytest.approx([0.8, 0.8, 0.4, 0.2, 0.1, 0.1])
    assert [e for e, _ in cb.scheduler.reductions] == [2, 3, 4]


def test_val_monitor_and_training_metric_monitor():
    x, y = _data()
    cb = ReduceLROnPlateau(monitor="val_accuracy", patience=0, min_delta=1e9)
    model = _model()
    model.fit(x, y, batch_size=8, epochs=3, validation_split=0.25, verbose=0, callbacks=[cb])
    assert cb.scheduler.direction == "max"  # asked the compiled accuracy metric
    assert model.optimizer.param_groups[0]["lr"] == pytest.approx(0.8 * 0.1**2)


def test_resumed_fit_continues_the_schedule(tmp_path):
    """3 + 3 epochs with a checkpoint in between give the rates of 6 straight epochs."""
    x, y = _data()

    def run(epochs, folder, resume=False):
        torch.manual_seed(0)
        lrs = LrLog()
        cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, min_delta=0.05)
        model = _model(lr=0.8)
        model.fit(x, y, batch_size=8, epochs=epochs, verbose=0,
                  callbacks=[cb, lrs, ModelCheckpoint(folder, monitor="loss")],
                  resume_from=str(folder) if resume else None)  # fmt: skip
        return lrs.lrs, cb.scheduler.state_dict()

    straight, state = run(6, tmp_path / "a")
    first, _ = run(3, tmp_path / "b")
    second, resumed_state = run(6, tmp_path / "b", resume=True)
    assert first + second == pytest.approx(straight)
    assert resumed_state == state


def test_clashes_and_bad_arguments():
    x, y = _data()
    model = _model(lr_schedule=reduce_on_plateau("loss"))
    with pytest.raises(ConfigError, match="one of the two"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[ReduceLROnPlateau("loss")])
    for kw, word in [({"factor": 1.0}, "factor"), ({"factor": 0}, "factor"),
                     ({"patience": -1}, "patience"), ({"cooldown": 1.5}, "cooldown"),
                     ({"min_lr": -1e-3}, "min_lr"), ({"mode": "up"}, "mode"),
                     ({"monitor": ""}, "monitor")]:  # fmt: skip
        with pytest.raises(ConfigError, match=word):
            ReduceLROnPlateau(**kw)


# ------------------------------------------------------------------ recipes


CONFIG = """
task: classification
dataset: {{name: digits, args: {{size: 32}}}}
model: {{name: lenet5, args: {{}}}}
compile: {{optimizer: adam, learning_rate: 0.01, loss: sparse_categorical_crossentropy,
          metrics: [accuracy]}}
fit: {{epochs: 5, batch_size: 16, {fit}}}
{extra}
"""


def _config(tmp_path, fit="", extra="", name="c.yaml"):
    path = tmp_path / name
    path.write_text(CONFIG.format(fit=fit, extra=extra))
    return str(path)


def test_recipe_restore_best_tests_the_best_training_loss_epoch(tmp_path):
    from cnnkit.train.checkpoint import read_checkpoint_info
    from cnnkit.train.loading import load

    cfg = _config(tmp_path, fit="restore_best: loss, callbacks: [{name: ReduceLROnPlateau, "
                  "args: {monitor: loss, factor: 0.5, patience: 1}}]")  # fmt: skip
    run = tmp_path / "run"
    rc = main(["train", cfg, "--out", str(run), "--limit", "96", "--verbose", "0",
               "--precision", "fp32", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(open(run / "history.csv")))
    losses = [float(r["loss"]) for r in rows]
    best = int(np.argmin(losses))
    assert read_checkpoint_info(run / "checkpoints" / "best")["epoch"] == best
    final = load(run)._net.state_dict()
    kept = load(run / "checkpoints" / "best")._net.state_dict()
    assert final.keys() == kept.keys() and all(torch.equal(final[k], kept[k]) for k in final)


@pytest.mark.parametrize(
    ("fit", "extra", "message"),
    [
        ("callbacks: [{name: ReduceLrOnPlateau}]", "", "Did you mean 'ReduceLROnPlateau'"),
        ("callbacks: [{name: ReduceLROnPlateau, args: {factor: 2}}]", "", "factor"),
        ("callbacks: [{name: ReduceLROnPlateau, args: {patiense: 2}}]", "", "patiense"),
        ("callbacks: {name: ReduceLROnPlateau}", "", "must be a list"),
        ("callbacks: [{name: ModelCheckpoint}]", "", "unknown callback 'ModelCheckpoint'"),
        ("restore_best: 3", "", "restore_best"),
        ("", "reference: {metric: accuracy, value: 0.9}", "needs 'source'"),
        ("", "reference: {metric: accuracy, value: high, source: x}", "value"),
        ("", "reference: {metric: accuracy, value: 0.9, source: x, tol: 1}", "'tol'"),
        ("", "reference: [3]", "reference"),
    ],
)
def test_recipe_errors(tmp_path, fit, extra, message):
    from cnnkit.cli.recipes import load_config

    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, fit=fit, extra=extra))


#: the recipes `cnnkit reproduce` reports on (issue 21): each names a structured reference
REPRODUCED = ("ucr-fcn1d", "ucr-resnet1d", "digits-lenet5", "mnist1d-cnn", "shapes-unet", "localization-mnist",
              "moving-mnist-c3d", "shapes-maskrcnn", "mnist-cnn")  # fmt: skip


def test_shipped_recipes_validate_with_structured_references():
    from cnnkit.cli.recipes import list_recipes, load_config

    for name in list_recipes():
        config = load_config(name)  # every shipped recipe validates
        refs = config.get("reference")
        if name not in REPRODUCED:
            continue
        for ref in refs if isinstance(refs, list) else [refs]:
            assert isinstance(ref, dict), f"{name}: reference is not structured"
            assert {"metric", "value", "source"} <= set(ref)


def test_instance_recipes_take_fit_callbacks_and_restore_best(tmp_path):
    """Mask R-CNN trains through Model.fit like every task (issue 16), so a recipe's
    ReduceLROnPlateau acts on its summed loss and restore_best keeps the best epoch."""
    import yaml
    from safetensors.torch import load_file

    from cnnkit.cli.recipes import RECIPE_DIR
    from cnnkit.train.checkpoint import read_checkpoint_info

    config = yaml.safe_load((RECIPE_DIR / "shapes-maskrcnn.yaml").read_text())
    config["dataset"]["args"]["n"] = 12
    config["compile"].pop("lr_schedule")
    config["fit"].update(epochs=3, restore_best="loss")
    config["fit"]["callbacks"] = [
        {"name": "ReduceLROnPlateau",  # min_delta 100: no epoch after the first improves
         "args": {"monitor": "loss", "factor": 0.5, "patience": 0, "min_delta": 100.0}},
    ]  # fmt: skip
    path, run = tmp_path / "m.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--out", str(run), "--device", "cpu", "--threads", "1"]) == 0
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    # Keras' rule with patience 0: the first epoch improves on inf, the second does not
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([0.02, 0.02, 0.01])
    losses = [float(r["loss"]) for r in rows]
    info = read_checkpoint_info(run / "checkpoints" / "best")
    assert info["epoch"] == losses.index(min(losses))  # 0-based, as in history.csv
    best = next((run / "checkpoints" / "best").glob(f"model-e{info['epoch']:05d}-*.safetensors"))
    saved, kept = load_file(run / "model.safetensors"), load_file(best)
    assert saved.keys() == kept.keys() and all(torch.equal(saved[k], kept[k]) for k in saved)
