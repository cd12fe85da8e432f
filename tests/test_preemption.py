"""SIGTERM / SIGINT during ``fit``, step-level checkpoints and mid-epoch resume.

Signals are real: one driver subprocess imports torch once and forks a child per run;
the parent signals the child after a chosen step (the child tells it through a pipe)
and measures how long the child takes to exit. Every interrupted run is resumed and
must end with exactly the weights of the run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import cnnkit
from cnnkit import ConfigError
from cnnkit.callbacks import Callback, ModelCheckpoint
from cnnkit.layers import Conv2D, Dense, Dropout, Flatten
from cnnkit.train.checkpoint import read_checkpoint_info

SRC = Path(__file__).resolve().parents[1] / "src"

DRIVER = textwrap.dedent(
    r'''
    import json, logging, os, signal, sys, time
    from pathlib import Path

    import torch

    torch.set_num_threads(1)
    import cnnkit
    from cnnkit.callbacks import Callback, ModelCheckpoint
    from cnnkit.layers import Conv2D, Dense, Dropout, Flatten
    from cnnkit.train import callbacks as cb_mod
    from safetensors.torch import save_file, load_file

    root = Path(sys.argv[1])
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(96, 1, 8, 8, generator=gen)
    Y = (X.sum((1, 2, 3)) > 0).long()


    class Tell(Callback):
        """Writes to the pipe after global step ``at``; records the step times."""

        def __init__(self, fd, at):
            self.fd, self.at, self.n, self.times = fd, at, 0, []

        def on_train_batch_end(self, step):
            self.n += 1
            self.times.append(time.perf_counter())
            if self.n == self.at and self.fd is not None:
                os.write(self.fd, b"x")


    def train(folder, fd=None, at=None, slow_save=False):
        torch.manual_seed(0)
        model = cnnkit.Sequential(
            [Conv2D(8, 3, activation="relu"), Flatten(), Dropout(0.3),
             Dense(2, activation="softmax")], input_shape=(1, 8, 8))
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], device="cpu", precision="fp32")
        if slow_save:
            real = cb_mod.ModelCheckpoint.on_interrupt

            def on_interrupt(self, epoch, step):
                time.sleep(30)
                return real(self, epoch, step)

            cb_mod.ModelCheckpoint.on_interrupt = on_interrupt
        tell = Tell(fd, at)
        torch.manual_seed(1)
        model.fit(X, Y, batch_size=8, epochs=4, verbose=0, resume_from=folder,
                  callbacks=[tell, ModelCheckpoint(folder, monitor="loss")])
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(folder / "final.safetensors"))
        steps = [b - a for a, b in zip(tell.times, tell.times[1:])]
        return sorted(steps)[len(steps) // 2] if steps else 0.0


    def child(folder, **kw):
        logging.basicConfig(filename=str(folder) + ".log", level=logging.WARNING)
        code = 0
        try:
            step = train(folder, **kw)
            (Path(str(folder) + ".step")).write_text(repr(step))
        except SystemExit as stop:
            code = stop.code
        except BaseException as err:
            sys.stderr.write(f"child failed: {err!r}\n")
            code = 3
        logging.shutdown()
        os._exit(code)


    def run(folder, signals=(), at=5, gap=0.0, slow_save=False):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            child(folder, fd=w if signals else None, at=at, slow_save=slow_save)
        os.close(w)
        sent = None
        if signals:
            os.read(r, 1)
            sent = time.perf_counter()
            for i, sig in enumerate(signals):
                if i:
                    time.sleep(gap)
                os.kill(pid, sig)
        _, status = os.waitpid(pid, 0)
        took = time.perf_counter() - sent if sent else None
        os.close(r)
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
        return code, took


    out = {}
    ref = root / "ref"
    out["ref"] = run(ref)
    out["step_s"] = float(Path(str(ref) + ".step").read_text())
    reference = load_file(str(ref / "final.safetensors"))
    plans = {
        "term": dict(signals=(signal.SIGTERM,)),
        "int": dict(signals=(signal.SIGINT,), at=13),
        "twice-at-once": dict(signals=(signal.SIGTERM, signal.SIGTERM), at=20),
        "second-later": dict(signals=(signal.SIGTERM, signal.SIGTERM), gap=1.5, slow_save=True),
    }
    for name, plan in plans.items():
        folder = root / name
        code, took = run(folder, **plan)
        log = Path(str(folder) + ".log")
        entry = {"code": code, "took": took, "log": log.read_text() if log.exists() else ""}
        last = folder / "last" / "model.json"
        entry["position"] = (json.loads(last.read_text())["training"].get("position")
                             if last.exists() else None)
        entry["resumed"] = run(folder)[0]
        if (folder / "final.safetensors").exists():
            got = load_file(str(folder / "final.safetensors"))
            entry["identical"] = all(torch.equal(got[k], reference[k]) for k in reference)
        out[name] = entry
    print(json.dumps(out))
    '''
)


@pytest.fixture(scope="module")
def signalled(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    script = root / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, str(script), str(root)], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sigterm_saves_after_the_step_exits_143_and_resumes_identically(signalled):
    term = signalled["term"]
    assert term["code"] == 143, term
    print(
        f"\nSIGTERM -> exit 143 in {term['took']:.3f} s (median step {signalled['step_s']:.4f} s)"
    )
    assert term["took"] < 30  # bounded (no hang); the figure is printed above
    pos = term["position"]
    assert pos is not None and pos["step"] >= 5 and pos["epoch"] == 0  # mid-epoch 1 (12 steps)
    lines = [line for line in term["log"].splitlines() if "stopped by SIGTERM" in line]
    assert len(lines) == 1 and "epoch 1, step" in lines[0] and "resume_from=" in lines[0]
    assert term["resumed"] == 0 and term["identical"]


def test_sigint_exits_130_and_resumes_identically(signalled):
    entry = signalled["int"]
    assert entry["code"] == 130 and "stopped by SIGINT" in entry["log"]
    assert entry["position"]["epoch"] == 1  # 12 steps an epoch: stopped in the second
    assert entry["resumed"] == 0 and entry["identical"]


def test_the_same_stop_delivered_twice_still_saves(signalled):
    entry = signalled["twice-at-once"]  # the process group's SIGTERM and torchrun's
    assert entry["code"] == 143 and entry["position"]["step"] > 0
    assert entry["resumed"] == 0 and entry["identical"]


def test_a_second_signal_exits_at_once(signalled):
    entry = signalled["second-later"]  # the checkpoint write was made to take 30 s
    assert entry["code"] == 143 and entry["took"] < 20, entry
    # no mid-epoch checkpoint was written: the resume redoes the epoch, still identical
    assert entry["position"] is None or entry["position"]["step"] == 0
    assert entry["resumed"] == 0 and entry["identical"]


# ---------------------------------------------------------------- step checkpoints


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, n):
        self.n, self.count = n, 0

    def on_train_batch_end(self, step):
        self.count += 1
        if self.count == self.n:
            raise Crash()


def _fit(folder, epochs=3, crash=None, resume=False, **ck):
    torch.manual_seed(0)
    model = cnnkit.Sequential(
        [Conv2D(4, 3, activation="relu"), Flatten(), Dropout(0.3), Dense(3, activation="softmax")],
        input_shape=(1, 8, 8),
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], device="cpu", precision="fp32")  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(70, 1, 8, 8, generator=gen)
    y = (x[:, 0, :4].sum((1, 2)) > 0).long() + (x[:, 0, 4:].sum((1, 2)) > 0).long()
    cbs = ([CrashAt(crash)] if crash else []) + [ModelCheckpoint(folder, monitor="loss", **ck)]
    torch.manual_seed(1)
    try:
        history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=cbs,
                            validation_split=0.2, resume_from=folder if resume else None)  # fmt: skip
    except Crash:
        return None, None
    return model, history


@pytest.mark.parametrize("crash", [2, 5, 8, 11])
def test_mid_epoch_resume_with_save_freq_is_bit_identical(tmp_path, crash):
    ref, ref_hist = _fit(tmp_path / "ref", save_freq=3)
    assert _fit(tmp_path / "ck", crash=crash, save_freq=3) == (None, None)
    if crash < 3:  # killed before the first checkpoint: the resume starts from scratch
        assert not (tmp_path / "ck" / "last" / "model.json").exists()
    else:
        pos = read_checkpoint_info(tmp_path / "ck" / "last")["position"]
        # the last save before the crash: every 3 steps and at each epoch's end (4 steps)
        assert pos["global_step"] == max(k for k in range(crash) if k % 3 == 0 or k % 4 == 0)
    model, hist = _fit(tmp_path / "ck", resume=True, save_freq=3)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(),
                                                 model.state_dict().values()))  # fmt: skip
    assert hist.history == ref_hist.history  # loss sums and metric states were saved too


@pytest.mark.parametrize("kind", ["Dataset", "DataLoader"])
def test_mid_epoch_resume_of_datasets_and_dataloaders_is_bit_identical(tmp_path, kind):
    """A Dataset gets fit's seeded order; a user's shuffling DataLoader draws its order
    (and seeds) from the global RNG when it starts: both resume identically."""
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(80, 1, 8, 8, generator=gen)
    y = (x.sum((1, 2, 3)) > 0).long()

    def run(folder, crash=None):
        torch.manual_seed(0)
        model = cnnkit.Sequential([Conv2D(4, 3, activation="relu"), Flatten(), Dropout(0.3),
                                   Dense(2, activation="softmax")], input_shape=(1, 8, 8))  # fmt: skip
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], device="cpu", precision="fp32")  # fmt: skip
        data = TensorDataset(x, y)
        if kind == "DataLoader":
            data = DataLoader(data, batch_size=16, shuffle=True)
        cbs = ([CrashAt(crash)] if crash else []) + [ModelCheckpoint(folder, save_freq=3)]
        torch.manual_seed(1)
        try:
            return model.fit(data, batch_size=16, epochs=3, verbose=0, callbacks=cbs,
                             resume_from=folder), model  # fmt: skip
        except Crash:
            return None, None

    ref_hist, ref = run(tmp_path / "ref")
    assert run(tmp_path / "ck", crash=8) == (None, None)  # saved after step 6: epoch 2, step 1
    assert read_checkpoint_info(tmp_path / "ck" / "last")["position"]["step"] == 1
    hist, model = run(tmp_path / "ck")
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(),
                                                 model.state_dict().values()))  # fmt: skip
    assert hist.history == ref_hist.history


def test_save_freq_keeps_the_last_two_and_validates(tmp_path):
    _fit(tmp_path / "ck", epochs=1, save_freq=2)  # 56 samples / 16: 4 steps
    last = tmp_path / "ck" / "last"
    manifests = [json.loads((last / n).read_text()) for n in ("model.json", "previous.json")]
    assert [m["training"]["position"]["global_step"] for m in manifests] == [4, 4]
    assert manifests[0]["training"]["position"]["step"] == 0  # the epoch-end one
    assert manifests[1]["training"]["position"]["step"] == 4
    names = {p.name for p in last.glob("model-*.safetensors")}
    assert len(names) == 2  # older files are removed
    for bad in (0, -1, 1.5, "batch", True):
        with pytest.raises(ConfigError, match="save_freq"):
            ModelCheckpoint(tmp_path, save_freq=bad)
    with pytest.raises(ConfigError, match="save_minutes"):
        ModelCheckpoint(tmp_path, save_minutes=0)


def test_save_minutes_writes_mid_epoch(tmp_path, monkeypatch):
    from cnnkit.train import callbacks as cb_mod

    clock = [0.0]
    monkeypatch.setattr(cb_mod.time, "monotonic", lambda: clock[0])

    class Tick(Callback):
        def on_train_batch_end(self, step):
            clock[0] += 25.0  # 25 s a step: a save every 3 steps with save_minutes=1

    torch.manual_seed(0)
    model = cnnkit.Sequential([Flatten(), Dense(2, activation="softmax")], input_shape=(1, 4, 4))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cpu")
    x, y = torch.rand(64, 1, 4, 4), torch.randint(0, 2, (64,))
    saves = []
    real = cb_mod.save_training_state
    monkeypatch.setattr(
        cb_mod,
        "save_training_state",
        lambda *a, **k: saves.append(k["position"]["global_step"]) or real(*a, **k),
    )
    model.fit(x, y, batch_size=8, epochs=1, verbose=0,
              callbacks=[Tick(), ModelCheckpoint(tmp_path, monitor="loss", save_minutes=1,
                                                 save_best=False)])  # fmt: skip
    assert saves == [3, 6, 8]  # two by the clock, one at the epoch's end


def test_interrupted_writes_at_any_byte_are_never_taken(tmp_path):
    """Truncate each file of the newest checkpoint at many byte positions: loading
    refuses it (naming the file) and resuming falls back to the previous one."""
    from cnnkit import CnnkitError
    from cnnkit.train.checkpoint import load_training_state

    model, _ = _fit(tmp_path / "ck", epochs=2, save_freq=3)
    last = tmp_path / "ck" / "last"
    manifest = json.loads((last / "model.json").read_text())
    files = [last / "model.json"] + [last / e["name"] for e in manifest["files"].values()]
    checked = 0
    for path in files:
        data = path.read_bytes()
        cuts = sorted({0, 1, len(data) - 1, *range(0, len(data), max(1, len(data) // 25))})
        for cut in cuts:
            path.write_bytes(data[:cut])
            with pytest.raises(CnnkitError):
                load_training_state(last, model)
            checked += 1
        path.write_bytes(data)
    assert checked > 80
    (last / manifest["files"]["optimizer"]["name"]).write_bytes(b"")
    resumed, _ = _fit(tmp_path / "ck", epochs=2, resume=True, save_freq=3)
    ref, _ = _fit(tmp_path / "ref", epochs=2, save_freq=3)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(),
                                                 resumed.state_dict().values()))  # fmt: skip


def test_signal_handlers_are_restored_after_fit():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    model = cnnkit.Sequential([Flatten(), Dense(2, activation="softmax")], input_shape=(1, 2, 2))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cpu")
    model.fit(torch.rand(4, 1, 2, 2), torch.randint(0, 2, (4,)), epochs=1, verbose=0)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# ---------------------------------------------------------------- torchrun: all ranks agree

TORCHRUN = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import torch
    from safetensors.torch import save_file
    import cnnkit
    from cnnkit.callbacks import Callback, ModelCheckpoint
    from cnnkit.train.signals import Preempted, StopSignals

    out, signal_at = sys.argv[1], int(sys.argv[2])
    rank = int(os.environ["RANK"])
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 6, 6, generator=gen)
    y = (x.sum((1, 2, 3)) > 0).long()


    class SignalRank1(Callback):  # only rank 1 is signalled, on the first attempt
        def on_train_batch_end(self, step):
            if rank == 1 and attempt == "0" and self.model._progress.global_step == signal_at:
                os.kill(os.getpid(), signal.SIGTERM)


    torch.manual_seed(0)
    model = cnnkit.Sequential(
        [cnnkit.layers.Conv2D(3, 3, activation="relu"), cnnkit.layers.Flatten(),
         cnnkit.layers.Dense(2, activation="softmax")], input_shape=(1, 6, 6))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", device="cpu",
                  precision="fp32")
    ck = os.path.join(out, "ck")
    torch.manual_seed(1)
    start = time.perf_counter()
    try:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, resume_from=ck,
                  callbacks=[SignalRank1(), ModelCheckpoint(ck, monitor="loss")])
    except Preempted as stop:
        with open(os.path.join(out, f"stopped-rank{rank}.json"), "w") as fh:
            json.dump({"code": stop.code, "epoch": stop.epoch, "step": stop.step}, fh)
        raise
    took = time.perf_counter() - start
    if signal_at < 0:  # the reference run: what the per-step stop check costs
        check = StopSignals(model._dist)
        t0 = time.perf_counter()
        for _ in range(200):
            check.should_stop()
        per_check = (time.perf_counter() - t0) / 200
        with open(os.path.join(out, f"cost-rank{rank}.json"), "w") as fh:
            json.dump({"step": took / 12, "check": per_check}, fh)
    if rank == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  os.path.join(out, "final.safetensors"))
    """
)


def _torchrun(script, out, signal_at):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CNNKIT_DIST_TIMEOUT="60",
               PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]))  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "--max-restarts", "1", "--monitor-interval", "0.5", str(script), str(out),
           str(signal_at)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


def test_torchrun_ranks_agree_on_the_stop_step_and_the_restart_resumes(tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "train.py"
    script.write_text(TORCHRUN)
    ref, stopped = tmp_path / "ref", tmp_path / "stopped"
    ref.mkdir()
    stopped.mkdir()
    _torchrun(script, ref, -1)
    output = _torchrun(script, stopped, 5)  # rank 1 SIGTERMed after step 5; one restart
    ranks = [json.loads((stopped / f"stopped-rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1] and ranks[0]["code"] == 143, ranks  # the same stop step
    assert ranks[0]["step"] >= 5
    assert "stopped by SIGTERM" in output
    got, want = load_file(stopped / "final.safetensors"), load_file(ref / "final.safetensors")
    assert all(torch.equal(got[k], want[k]) for k in want)
    cost = [json.loads((ref / f"cost-rank{r}.json").read_text()) for r in range(2)]
    print(f"\nper-step stop check (all_reduce of one int64, gloo, 2 ranks): "
          f"{1e6 * cost[0]['check']:.0f} us = {100 * cost[0]['check'] / cost[0]['step']:.1f}% "
          f"of a training step of this tiny net ({1e3 * cost[0]['step']:.1f} ms)")  # fmt: skip
