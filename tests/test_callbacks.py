"""cnnkit.callbacks: hooks, EarlyStopping, ModelCheckpoint, CSVLogger, TensorBoard, schedules.

References: Keras' documented EarlyStopping rules worked by hand on scripted logs,
torch.optim.lr_scheduler stepped by hand, the History that fit returns, and
TensorBoard's own event reader.
"""

from __future__ import annotations

import csv
import logging
import sys

import pytest
import torch
from torch.optim import lr_scheduler

import cnnkit
from cnnkit import CnnkitError, ConfigError
from cnnkit.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    TensorBoard,
    cosine,
    reduce_on_plateau,
    step_decay,
)
from cnnkit.layers import Conv2D, Dense, Flatten
from cnnkit.train.checkpoint import read_checkpoint_info, save_training_state


def _model(lr=0.05, optimizer="sgd", **compile_kw):
    model = cnnkit.Sequential(
        [Conv2D(4, 3, activation="relu"), Flatten(), Dense(3, activation="softmax")],
        input_shape=(1, 6, 6),
    )
    opt = torch.optim.SGD(model.parameters(), lr=lr) if optimizer == "sgd" else optimizer
    model.compile(
        optimizer=opt,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        device="cpu",
        precision="fp32",
        **compile_kw,
    )
    return model


def _data(n=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Script(Callback):
    """Writes scripted values into the logs (before the callbacks after it) and records
    the weights at the end of every epoch."""

    def __init__(self, key, values):
        self.key, self.values, self.weights = key, values, []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]
        self.weights.append(_state(self.model._net))


class Recorder(Callback):
    def __init__(self):
        self.events, self.lrs = [], []

    def on_train_begin(self, logs=None):
        self.events.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch_begin", epoch))
        self.lrs.append(self.model.optimizer.param_groups[0]["lr"])

    def on_train_batch_end(self, step):
        self.events.append(("batch", step))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, logs=None):
        self.events.append(("train_end", sorted(logs)))


# ------------------------------------------------------------------ hooks


def test_public_namespace():
    assert cnnkit.callbacks.EarlyStopping is EarlyStopping
    from cnnkit.train import callbacks as impl

    assert cnnkit.callbacks.ModelCheckpoint is impl.ModelCheckpoint
    assert "callbacks" in dir(cnnkit)


def test_hooks_are_called_in_keras_order():
    x, y = _data(40)
    rec = Recorder()

    class OnlyEpochEnd:  # duck-typed, no base class
        def __init__(self):
            self.epochs = []

        def on_epoch_end(self, epoch, logs):
            self.epochs.append(epoch)

    duck = OnlyEpochEnd()
    _model().fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[rec, duck])
    keys = ["accuracy", "loss"]
    batches = [("batch", 1), ("batch", 2), ("batch", 3)]  # 40 samples, batch 16
    expected = ["train_begin"]
    for e in range(2):
        expected += [("epoch_begin", e), *batches, ("epoch_end", e, keys)]
    expected.append(("train_end", keys))
    assert rec.events == expected
    assert duck.epochs == [0, 1]


def test_stop_training_from_a_callback():
    class StopAt(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    history = _model().fit(*_data(), epochs=5, verbose=0, callbacks=[StopAt()])
    assert history.epoch == [0, 1]


# ------------------------------------------------------------------ EarlyStopping

# (values, kwargs, epoch at which it stops, best epoch), worked by hand from Keras' rules:
# the counter grows each epoch, an improvement (better by more than min_delta) resets it
# unless it misses the baseline, and training stops once it reaches patience (epoch > 0).
CASES = {
    "min_delta": ([1.0, 0.8, 0.85, 0.79, 0.9, 0.95, 0.7], dict(patience=2, min_delta=0.02), 3, 1),
    "no_min_delta": ([1.0, 0.8, 0.85, 0.79, 0.9, 0.95, 0.7], dict(patience=2), 5, 3),
    "patience0": ([1.0, 2.0, 0.5, 0.4], dict(patience=0), 1, 0),
    "baseline": ([0.9, 0.8, 0.85, 0.3, 0.2], dict(patience=2, baseline=0.5), 2, 1),
    "max_auto": ([0.5, 0.6, 0.6, 0.55, 0.7, 0.8], dict(patience=2, monitor="val_accuracy"), 3, 1),
}


@pytest.mark.parametrize("restore", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_early_stopping_on_scripted_logs(case, restore):
    values, kwargs, stop, best = CASES[case]
    kwargs = dict(kwargs)
    monitor = kwargs.pop("monitor", "score")
    x, y = _data()
    model = _model(lr=0.2)
    script = Script(monitor, values)
    es = EarlyStopping(monitor=monitor, restore_best_weights=restore, **kwargs)
    history = model.fit(
        x, y, batch_size=16, epochs=len(values), verbose=0, callbacks=[script, es],
        validation_data=(x[:16], y[:16]),
    )  # fmt: skip
    assert history.epoch == list(range(stop + 1))
    assert es.stopped_epoch == stop and es.best_epoch == best
    assert es.best == values[best]
    assert not _same(script.weights[best], script.weights[-1])  # training moved the weights
    want = script.weights[best] if restore else script.weights[-1]
    assert _same(_state(model), want)


def test_early_stopping_without_the_monitored_value_warns_and_continues(caplog):
    with caplog.at_level(logging.WARNING, logger="cnnkit.train"):
        history = _model().fit(*_data(), epochs=3, verbose=0, callbacks=[EarlyStopping()])
    assert history.epoch == [0, 1, 2]
    assert "val_loss" in caplog.text and "loss" in caplog.text


def test_early_stopping_bad_arguments():
    with pytest.raises(ConfigError, match="-1"):
        EarlyStopping(patience=-1)
    with pytest.raises(ConfigError, match="'minimum'"):
        EarlyStopping(mode="minimum")


# ------------------------------------------------------------------ ModelCheckpoint


@pytest.mark.parametrize(
    "mode,values,best",
    [("min", [3.0, 1.0, 2.0, 0.5, 4.0], 3), ("max", [3.0, 1.0, 5.0, 0.5, 4.0], 2)],
)
def test_model_checkpoint_writes_last_and_best(tmp_path, mode, values, best):
    x, y = _data()
    model = _model(lr=0.2)
    script = Script("score", values)
    ckpt = ModelCheckpoint(tmp_path / "run", monitor="score", mode=mode)
    history = model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[script, ckpt])
    last, top = tmp_path / "run" / "last", tmp_path / "run" / "best"
    assert read_checkpoint_info(last)["epoch"] == 4
    assert read_checkpoint_info(top)["epoch"] == best
    assert read_checkpoint_info(top)["extra"] == {"monitor": "score", "value": values[best]}
    assert ckpt.best == values[best]
    # the checkpoints hold the weights of those epochs and load with cnnkit.load
    assert _same(_state(cnnkit.load(last)), script.weights[4])
    assert _same(_state(cnnkit.load(top)), script.weights[best])
    assert _same(_state(cnnkit.load(tmp_path / "run")), script.weights[best])
    assert not _same(script.weights[best], script.weights[4])
    # the last checkpoint carries the history of the run
    info = read_checkpoint_info(last)
    assert info["history"] == history.history and info["history_epochs"] == history.epoch


def test_model_checkpoint_never_silently_overwrites(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[ModelCheckpoint(tmp_path, monitor="loss")])
    before = read_checkpoint_info(tmp_path / "last")
    # a second, unrelated run into the same folder is refused ...
    with pytest.raises(CnnkitError, match="resume_from"):
        _model().fit(x, y, epochs=1, verbose=0, callbacks=[ModelCheckpoint(tmp_path)])
    assert read_checkpoint_info(tmp_path / "last") == before
    # ... as is save() onto a checkpoint and a second save_training_state
    with pytest.raises(CnnkitError, match="already exist"):
        model.save(tmp_path / "best")
    with pytest.raises(CnnkitError, match="refusing to overwrite"):
        save_training_state(tmp_path / "last", model, 5, model.history)
    assert read_checkpoint_info(tmp_path / "last") == before
    # explicit overwrite=True replaces them
    ckpt = ModelCheckpoint(tmp_path, monitor="loss", overwrite=True)
    _model().fit(x, y, epochs=2, verbose=0, callbacks=[ckpt])
    assert read_checkpoint_info(tmp_path / "last")["epoch"] == 1


def test_model_checkpoint_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="saves nothing"):
        ModelCheckpoint(tmp_path, save_best=False, save_last=False)
    with pytest.raises(ConfigError, match="'upward'"):
        ModelCheckpoint(tmp_path, mode="upward")


# ------------------------------------------------------------------ CSVLogger


def test_csv_logger_rows_equal_history(tmp_path):
    x, y = _data()
    path = tmp_path / "log.csv"
    history = _model().fit(
        x, y, epochs=3, verbose=0, validation_split=0.25, callbacks=[CSVLogger(path)]
    )
    rows = list(csv.reader(path.open()))
    keys = sorted(history.history)
    assert keys == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert rows[0] == ["epoch", *keys]
    assert [int(r[0]) for r in rows[1:]] == history.epoch
    for i, row in enumerate(rows[1:]):
        assert [float(v) for v in row[1:]] == [history.history[k][i] for k in keys]

    # append=True continues the file under the same header
    more = _model().fit(
        x, y, epochs=2, verbose=0, validation_split=0.25, callbacks=[CSVLogger(path, append=True)]
    )
    rows = list(csv.reader(path.open()))
    assert len(rows) == 1 + 3 + 2 and rows.count(["epoch", *keys]) == 1
    assert [float(v) for v in rows[-1][1:]] == [more.history[k][-1] for k in keys]
    # append=False starts afresh
    _model().fit(x, y, epochs=1, verbose=0, callbacks=[CSVLogger(path)])
    assert list(csv.reader(path.open()))[0] == ["epoch", "accuracy", "loss"]


# ------------------------------------------------------------------ TensorBoard


def test_tensorboard_scalars_equal_history(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install tensorboard to test TensorBoard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x, y = _data()
    history = _model(lr=0.03).fit(
        x, y, epochs=2, verbose=0, validation_split=0.25, callbacks=[TensorBoard(tmp_path)]
    )
    for split, prefix in (("train", ""), ("validation", "val_")):
        acc = EventAccumulator(str(tmp_path / split))
        acc.Reload()
        for name in ("loss", "accuracy"):
            events = acc.Scalars(f"epoch_{name}")
            assert [e.step for e in events] == [0, 1]
            assert [e.value for e in events] == pytest.approx(
                history.history[prefix + name], rel=1e-6
            )
    lrs = EventAccumulator(str(tmp_path / "train"))
    lrs.Reload()
    assert [e.value for e in lrs.Scalars("epoch_learning_rate")] == pytest.approx([0.03, 0.03])


def test_tensorboard_missing_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        TensorBoard(tmp_path)


# ------------------------------------------------------------------ schedules


def _torch_lrs(make, epochs, lr, values=None):
    """The reference: a torch scheduler stepped by hand once per epoch."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make(opt)
    lrs = []
    for e in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(values[e]) if values is not None else sched.step()
    return lrs


@pytest.mark.parametrize(
    "schedule,reference",
    [
        (step_decay([2, 4], 0.1), lambda o: lr_scheduler.MultiStepLR(o, [2, 4], 0.1)),
        (step_decay(2, 0.5), lambda o: lr_scheduler.StepLR(o, 2, 0.5)),
        (cosine(4, eta_min=0.001), lambda o: lr_scheduler.CosineAnnealingLR(o, 4, 0.001)),
    ],
    ids=["multistep", "step", "cosine"],
)
@pytest.mark.parametrize("via", ["compile", "callback"])
def test_schedules_equal_torch(schedule, reference, via):
    rec = Recorder()
    if via == "compile":
        model, cbs = _model(lr=0.02, lr_schedule=schedule), [rec]
    else:
        model, cbs = _model(lr=0.02), [LearningRateScheduler(schedule), rec]
    model.fit(*_data(), epochs=6, verbose=0, callbacks=cbs)
    assert rec.lrs == _torch_lrs(reference, 6, 0.02)
    assert len(set(rec.lrs)) > 1


def test_mask_rcnn_step_schedule():
    """Mask R-CNN: lr 0.02, divided by 10 at the boundary."""
    rec = Recorder()
    model = _model(lr=0.02, lr_schedule=step_decay([3], gamma=0.1))
    model.fit(*_data(), epochs=5, verbose=0, callbacks=[rec])
    assert rec.lrs == pytest.approx([0.02, 0.02, 0.02, 0.002, 0.002], rel=1e-10)


def test_reduce_on_plateau_equals_torch():
    rec = Recorder()
    schedule = reduce_on_plateau("val_loss", factor=0.5, patience=1, min_delta=0.01)
    model = _model(lr=0.05, lr_schedule=schedule)
    history = model.fit(*_data(), epochs=8, verbose=0, validation_split=0.25, callbacks=[rec])

    def reference(o):
        return lr_scheduler.ReduceLROnPlateau(
            o, mode="min", factor=0.5, patience=1, threshold=0.01, threshold_mode="abs"
        )

    assert rec.lrs == _torch_lrs(reference, 8, 0.05, history.history["val_loss"])
    assert min(rec.lrs) < 0.05  # it did reduce


def test_reduce_on_plateau_needs_its_monitor():
    model = _model(lr_schedule=reduce_on_plateau("val_loss"))
    with pytest.raises(ConfigError, match="'val_loss'"):
        model.fit(*_data(), epochs=1, verbose=0)


def test_keras_style_learning_rate_scheduler():
    rec = Recorder()
    sched = LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else lr * 0.5)
    _model(lr=0.08).fit(*_data(), epochs=5, verbose=0, callbacks=[sched, rec])
    assert rec.lrs == [0.08, 0.08, 0.04, 0.02, 0.01]
    bad = LearningRateScheduler(lambda epoch, lr: float("nan"))
    with pytest.raises(ConfigError, match="nan"):
        _model().fit(*_data(), epochs=1, verbose=0, callbacks=[bad])


def test_schedule_arguments_are_checked():
    with pytest.raises(ConfigError, match=r"\[3, 2\]"):
        step_decay([3, 2])
    with pytest.raises(ConfigError, match="0"):
        step_decay(0)
    with pytest.raises(ConfigError, match="-0.5"):
        step_decay([2], gamma=-0.5)
    with pytest.raises(ConfigError, match="1.5"):
        reduce_on_plateau(factor=1.5)
    with pytest.raises(ConfigError, match="0"):
        cosine(0)
    with pytest.raises(ConfigError, match="would replace"):
        model = _model(lr_schedule=cosine(3))
        model.fit(*_data(), epochs=1, verbose=0, callbacks=[LearningRateScheduler(cosine(3))])


def test_schedule_arguments_take_numpy_numbers():
    """np.int64 epochs and np.float32 factors (from a NumPy computation) are numbers; the
    schedule is the same as with Python ones (torch's own scheduler as reference)."""
    import numpy as np

    cases = [
        (
            step_decay(np.array([2, 4]), np.float32(0.5)),
            lambda o: lr_scheduler.MultiStepLR(o, [2, 4], 0.5),
        ),
        (step_decay(np.int64(2), np.float64(0.5)), lambda o: lr_scheduler.StepLR(o, 2, 0.5)),
        (
            cosine(np.int32(4), np.float32(0.001)),
            lambda o: lr_scheduler.CosineAnnealingLR(o, 4, 0.001),
        ),
    ]
    for schedule, reference in cases:
        rec = Recorder()
        _model(lr=0.02, lr_schedule=schedule).fit(*_data(), epochs=6, verbose=0, callbacks=[rec])
        assert rec.lrs == pytest.approx(_torch_lrs(reference, 6, 0.02), rel=1e-6)
    assert repr(reduce_on_plateau("loss", np.float32(0.5), np.int64(3))) == repr(
        reduce_on_plateau("loss", 0.5, 3)
    )
    for bad in ([2.5], [np.float32(2)], [True], np.array([[2, 4]])):
        with pytest.raises(ConfigError, match="strictly increasing positive epoch"):
            step_decay(bad)


def test_callback_arguments_take_numpy_numbers():
    """The callbacks take NumPy numbers as Keras' do, and train exactly as with Python ones."""
    import numpy as np

    from cnnkit.callbacks import ReduceLROnPlateau

    def run(patience, factor, save_freq, min_delta, tmp):
        rec = Recorder()
        cbs = [
            ReduceLROnPlateau("loss", factor=factor, patience=patience, min_delta=min_delta),
            EarlyStopping("loss", patience=patience, min_delta=min_delta),
            ModelCheckpoint(tmp, save_freq=save_freq),
            LearningRateScheduler(lambda epoch, lr: np.float32(lr)),  # a NumPy rate
            rec,
        ]
        torch.manual_seed(0)
        model = _model(lr=0.5)
        history = model.fit(*_data(), epochs=6, verbose=0, callbacks=cbs)
        return rec.lrs, history.history["loss"]

    import tempfile

    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        plain = run(1, 0.5, 2, 0.01, a)
        numpy = run(np.int64(1), np.float32(0.5), np.int32(2), np.float32(0.01), b)
    assert numpy[0] == pytest.approx(plain[0], rel=1e-6)
    assert numpy[1] == pytest.approx(plain[1], rel=1e-5)
    with pytest.raises(ConfigError, match="patience must be an int >= 0; received 1.5"):
        EarlyStopping(patience=1.5)
    with pytest.raises(ConfigError, match="received True"):
        ReduceLROnPlateau(min_lr=True)


def test_a_schedule_that_turns_the_rate_negative_stops_fit():
    """A custom schedule whose rate goes below 0 would make SGD climb the loss, silently:
    fit stops at the step that set it, naming the scheduler and the rate."""
    schedule = lambda opt: lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 - epoch)  # noqa: E731
    model = _model(lr=0.1, lr_schedule=schedule)
    with pytest.raises(ConfigError, match=r"LambdaLR.*received -0\.1"):
        model.fit(*_data(), epochs=4, verbose=0)
    assert model.history.history["loss"] and len(model.history.history["loss"]) == 2


def test_learning_rate_with_an_optimizer_instance_or_callable_is_refused():
    """compile(learning_rate=...) applies to an optimizer given by name; an instance or a
    callable already carries its rate, and cnnkit will not silently ignore the other."""
    net = cnnkit.Sequential([Flatten(), Dense(3)], input_shape=(1, 6, 6))
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=r"learning_rate=0\.01.*SGD instance.*lr=\[0\.1\]"):
        net.compile(optimizer=sgd, loss="mse", learning_rate=0.01)
    make = lambda params: torch.optim.SGD(params, lr=0.1)  # noqa: E731
    with pytest.raises(ConfigError, match="optimizer callable '<lambda>'"):
        net.compile(optimizer=make, loss="mse", learning_rate=0.01)
    net.compile(optimizer=sgd, loss="mse")  # without learning_rate both are fine
    net.compile(optimizer=make, loss="mse", learning_rate=None)
