"""Kill-and-resume: a training process killed with SIGKILL anywhere, then resumed with
``fit(resume_from=...)``, ends with exactly the weights of an uninterrupted run.

One driver subprocess imports torch and cnnkit once and forks a child per run (fork
start costs milliseconds, a fresh interpreter seconds). Children are killed with a real
SIGKILL at chosen points (mid-step, at an epoch end before its checkpoint, inside the
checkpoint writer: after a temporary file is half written, before or after each atomic
rename) and at random moments chosen by the parent; each is resumed (again and again
if the resumed run is killed too) and its final weights are compared bit for bit with
those of the run that was never interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

DRIVER = textwrap.dedent(
    r'''
    import json, os, random, signal, sys, time
    from pathlib import Path

    import torch

    torch.set_num_threads(1)
    import cnnkit
    from cnnkit.callbacks import Callback, ModelCheckpoint
    from cnnkit.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
    from cnnkit.train import checkpoint as ck
    from safetensors.torch import load_file, save_file

    root = Path(sys.argv[1])
    EPOCHS, BATCH = 5, 16
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(80, 1, 8, 8, generator=gen)
    Y = (X[:, 0, :4].sum((1, 2)) > 0).long() + 2 * (X[:, 0, 4:].sum((1, 2)) > 0).long()


    def die():
        os.kill(os.getpid(), signal.SIGKILL)


    class KillAt(Callback):
        """SIGKILL after global step ``step`` or at the end of epoch ``epoch`` (before the
        checkpoint: this callback runs before ModelCheckpoint)."""

        def __init__(self, step=None, epoch=None):
            self.step, self.epoch, self.count = step, epoch, 0

        def on_train_batch_end(self, step):
            self.count += 1
            if self.count == self.step:
                die()

        def on_epoch_end(self, epoch, logs=None):
            if epoch == self.epoch:
                die()


    def arm_writer(kind, n):
        """SIGKILL inside the checkpoint writer: at the n-th os.replace (before or after it
        happens) or while the n-th tensor file is half written."""
        calls = [0]
        if kind in ("replace-before", "replace-after"):
            real = os.replace

            def replace(src, dst):
                calls[0] += 1
                if calls[0] == n and kind == "replace-before":
                    die()
                real(src, dst)
                if calls[0] == n:
                    die()

            os.replace = replace
        elif kind == "half-write":
            real_save = ck.save_file

            def save(tensors, filename, metadata=None):
                calls[0] += 1
                real_save(tensors, filename, metadata=metadata)
                if calls[0] == n:
                    data = Path(filename).read_bytes()
                    with open(filename, "wb") as fh:
                        fh.write(data[: len(data) // 2])
                        fh.flush()
                        os.fsync(fh.fileno())
                    die()

            ck.save_file = save


    def train(folder, plan):
        torch.manual_seed(0)
        model = cnnkit.Sequential(
            [Conv2D(4, 3, activation="relu"), MaxPooling2D(2), Flatten(), Dropout(0.3),
             Dense(4, activation="softmax")],
            input_shape=(1, 8, 8),
        )
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], device="cpu", precision="fp32")
        callbacks = []
        if plan and plan[0] == "step":
            callbacks.append(KillAt(step=plan[1]))
        elif plan and plan[0] == "epoch-end":
            callbacks.append(KillAt(epoch=plan[1]))
        elif plan:
            arm_writer(*plan)
        callbacks.append(ModelCheckpoint(folder, monitor="loss"))
        last = folder / "last"
        resume = folder if any((last / n).exists() for n in (ck.CONFIG, ck.PREVIOUS)) else None
        if resume is not None:
            with open(folder / "resumes.txt", "a") as fh:
                fh.write("resumed from a checkpoint\n")
        torch.manual_seed(1)
        model.fit(X, Y, batch_size=BATCH, epochs=EPOCHS, verbose=0, callbacks=callbacks,
                  resume_from=resume)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(folder / "final.safetensors"))


    def run(folder, plan=None, kill_after=None):
        """Fork a child that trains; returns 'killed' or 'finished'."""
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                train(folder, plan)
            except BaseException as err:  # report, never fall back into the driver
                sys.stderr.write(f"child failed: {err!r}\n")
                code = 3
            os._exit(code)
        if kill_after is not None:
            time.sleep(kill_after)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            return "killed"
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return "finished"
        raise SystemExit(f"run {folder} {plan} ended with status {status}")


    ref = root / "reference"
    start = time.perf_counter()
    assert run(ref) == "finished"
    duration = time.perf_counter() - start
    reference = load_file(str(ref / "final.safetensors"))

    steps = EPOCHS * ((len(X) + BATCH - 1) // BATCH)
    plans = [
        [("step", 1)], [("step", 8)], [("step", steps - 1)],
        [("epoch-end", 0)], [("epoch-end", 3)],
        [("replace-before", 1)], [("replace-before", 4)], [("replace-after", 4)],
        [("replace-before", 9)], [("replace-after", 13)],
        [("half-write", 2)], [("half-write", 7)],
        [("step", 7), ("replace-after", 6), ("step", 3)],  # killed three times
    ]
    rng = random.Random(0)
    plans += [[("timed", rng.uniform(0.05, 0.95) * duration)] for _ in range(4)]
    results = []
    for i, plan in enumerate(plans):
        folder = root / f"run{i}"
        folder.mkdir()
        kills, resumes = 0, 0
        for kill in plan:
            if kill[0] == "timed":
                outcome = run(folder, kill_after=kill[1])
            else:
                outcome = run(folder, plan=kill)
            kills += outcome == "killed"
            if outcome == "finished":
                break
        while outcome != "finished":
            outcome = run(folder)
            resumes += 1
        weights = load_file(str(folder / "final.safetensors"))
        same = weights.keys() == reference.keys() and all(
            torch.equal(weights[k], reference[k]) for k in reference
        )
        log = folder / "resumes.txt"
        from_checkpoint = len(log.read_text().splitlines()) if log.exists() else 0
        results.append({"plan": [list(k) for k in plan], "kills": kills, "resumes": resumes,
                        "from_checkpoint": from_checkpoint, "identical": same})
    print(json.dumps({"duration": duration, "results": results}))
    '''
)


def test_sigkill_at_many_points_then_resume_equals_uninterrupted_run(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the kill-and-resume driver hung:\n{err.decode()[-3000:]}")
    assert proc.returncode == 0, err.decode()[-3000:]
    report = json.loads(out.decode().strip().splitlines()[-1])
    results = report["results"]
    killed = [r for r in results if r["kills"] > 0]
    survived = [r for r in killed if r["identical"]]
    total_kills = sum(r["kills"] for r in results)
    print(
        f"\nkill-and-resume: {len(survived)}/{len(killed)} survived "
        f"({total_kills} SIGKILLs, {sum(r['resumes'] for r in results)} resumes, "
        f"{sum(r['from_checkpoint'] for r in results)} from a checkpoint, "
        f"reference run {report['duration']:.2f} s, all {time.perf_counter() - start:.1f} s)"
    )
    bad = [r for r in results if not r["identical"]]
    assert not bad, bad
    assert len(killed) >= 10, results  # a timed kill may come after the end: not counted
    assert total_kills >= 12
    # most resumes really continued from a checkpoint (not from scratch)
    assert sum(r["from_checkpoint"] > 0 for r in killed) >= 8, results


# ---------------------------------------------------------------- checksums and fallback


def _small_run(folder, epochs, resume=None):
    import torch

    import cnnkit
    from cnnkit.callbacks import ModelCheckpoint
    from cnnkit.layers import Conv2D, Dense, Flatten

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(48, 1, 6, 6, generator=gen)
    y = (x.sum((1, 2, 3)) > 0).long()
    torch.manual_seed(0)
    model = cnnkit.Sequential(
        [Conv2D(3, 3, activation="relu"), Flatten(), Dense(2, activation="softmax")],
        input_shape=(1, 6, 6),
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", device="cpu")
    torch.manual_seed(1)
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        verbose=0,
        callbacks=[ModelCheckpoint(folder, monitor="loss")],
        resume_from=resume,
    )
    return model


def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_saved_models_and_checkpoints_record_the_sha256_of_every_tensor_file(tmp_path):
    model = _small_run(tmp_path / "ck", 2)
    saved = model.save(tmp_path / "saved")
    cfg = json.loads((saved / "model.json").read_text())
    assert cfg["sha256"] == _sha(saved / cfg["weights"])
    for sub in ("last", "best"):
        manifest = json.loads((tmp_path / "ck" / sub / "model.json").read_text())
        assert set(manifest["files"]) == {"model", "optimizer", "rng"}
        for entry in manifest["files"].values():
            assert entry["sha256"] == _sha(tmp_path / "ck" / sub / entry["name"])
    # the last two checkpoints are kept: previous.json names epoch 0's files, all present
    prev = json.loads((tmp_path / "ck" / "last" / "previous.json").read_text())
    assert prev["training"]["epoch"] == 0
    assert all((tmp_path / "ck" / "last" / e["name"]).is_file() for e in prev["files"].values())


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_files_are_refused_naming_the_file(tmp_path, damage):
    import cnnkit

    model = _small_run(tmp_path / "ck", 1)
    saved = model.save(tmp_path / "saved")
    last = tmp_path / "ck" / "last"
    weights = last / json.loads((last / "model.json").read_text())["files"]["model"]["name"]
    for path in (saved / "model.safetensors", weights):
        data = bytearray(path.read_bytes())
        if damage == "truncate":
            data = data[: len(data) // 2]
        else:
            data[-3] ^= 0xFF
        path.write_bytes(bytes(data))
    for folder, path in ((saved, saved / "model.safetensors"), (last, weights)):
        with pytest.raises(cnnkit.CnnkitError, match=re.escape(str(path))):
            cnnkit.load(folder)


def test_resume_falls_back_to_the_previous_checkpoint_with_a_warning(tmp_path, caplog):
    import torch

    reference = _small_run(tmp_path / "ref", 3)
    _small_run(tmp_path / "ck", 2)  # checkpoints after epochs 1 and 2
    last = tmp_path / "ck" / "last"
    name = json.loads((last / "model.json").read_text())["files"]["optimizer"]["name"]
    (last / name).write_bytes((last / name).read_bytes()[:100])  # the newest is damaged
    with caplog.at_level(logging.WARNING, logger="cnnkit.train"):
        resumed = _small_run(tmp_path / "ck", 3, resume=tmp_path / "ck")
    assert any(name in r.getMessage() and "previous" in r.getMessage() for r in caplog.records)
    ref, got = reference.state_dict(), resumed.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)  # epochs 2 and 3 were redone
    # both damaged: refused, naming both problems
    for manifest in ("model.json", "previous.json"):
        entry = json.loads((last / manifest).read_text())["files"]["model"]
        (last / entry["name"]).write_bytes(b"")
    with pytest.raises(Exception, match="previous one"):
        _small_run(tmp_path / "ck", 4, resume=tmp_path / "ck")


# ---------------------------------------------------------------- torchrun, one worker killed

TORCHRUN_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    import torch
    from safetensors.torch import save_file
    import cnnkit
    from cnnkit.callbacks import Callback, ModelCheckpoint
    from cnnkit.layers import Conv2D, Dense, Flatten

    out, kill_at = sys.argv[1], int(sys.argv[2])
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 6, 6, generator=gen)
    y = (x.sum((1, 2, 3)) > 0).long()

    class KillRank1(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if rank == 1 and epoch == kill_at:
                time.sleep(1.0)  # rank 0 finishes writing the previous checkpoint
                with open(os.path.join(out, "killed_at"), "w") as fh:
                    fh.write(repr(time.time()))
                os.kill(os.getpid(), signal.SIGKILL)

    torch.manual_seed(0)
    model = cnnkit.Sequential(
        [Conv2D(3, 3, activation="relu"), Flatten(), Dense(2, activation="softmax")],
        input_shape=(1, 6, 6),
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", device="cpu",
                  precision="fp32")
    ck = os.path.join(out, "ck")
    resume = ck if os.path.exists(os.path.join(ck, "last", "model.json")) else None
    torch.manual_seed(1)
    model.fit(x, y, batch_size=8, epochs=4, verbose=0, resume_from=resume,
              callbacks=[KillRank1(), ModelCheckpoint(ck, monitor="loss")])
    if rank == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  os.path.join(out, "final.safetensors"))
    """
)


def _torchrun(script, out, kill_at, timeout):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(
        OMP_NUM_THREADS="1",
        CNNKIT_DIST_TIMEOUT="20",
        PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]),
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--standalone", "--monitor-interval", "0.5", str(script), str(out), str(kill_at)]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun hung past {timeout} s:\n{output.decode(errors='replace')[-3000:]}")
    return proc.returncode, output.decode(errors="replace"), time.perf_counter() - start


@pytest.mark.slow
def test_torchrun_worker_killed_stops_the_other_rank_clearly_and_resumes(tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "train.py"
    script.write_text(TORCHRUN_SCRIPT)
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    killed.mkdir()
    reference.mkdir()
    code, output, took = _torchrun(script, killed, kill_at=2, timeout=120)
    stop_delay = time.time() - float((killed / "killed_at").read_text())
    assert code != 0, output[-3000:]
    assert stop_delay < 60, stop_delay  # bounded: no hang on the surviving rank
    assert "cnnkit: rank 0 of 2 stopped" in output, output[-3000:]
    assert "resume" in output
    assert not (killed / "final.safetensors").exists()
    assert (killed / "ck" / "last" / "model.json").is_file()
    code, output, resumed_took = _torchrun(script, killed, kill_at=-1, timeout=120)
    assert code == 0, output[-3000:]
    code, output, _ = _torchrun(script, reference, kill_at=-1, timeout=120)
    assert code == 0, output[-3000:]
    print(
        f"\ntorchrun: rank 1 SIGKILLed, torchrun ended {stop_delay:.1f} s later "
        f"(whole killed run {took:.1f} s), resumed run {resumed_took:.1f} s"
    )
    got, ref = load_file(killed / "final.safetensors"), load_file(reference / "final.safetensors")
    assert got.keys() == ref.keys()
    assert all(torch_equal(got[k], ref[k]) for k in ref)


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)
