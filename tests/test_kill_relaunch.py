"""The scheduler's view: ``cnnkit train CONFIG --out R --resume`` is SIGKILLed at many
moments (start-up, the first epoch before any checkpoint exists, mid-epoch, inside the
checkpoint writer, while the results are written) and relaunched, the same command
line, until it exits 0; its final weights must equal those of a run that was never
killed, bit for bit.

One driver subprocess imports torch and cnnkit once and forks a child per launch; each
child runs ``cnnkit.cli.main.main(argv)`` with the same argv (fork costs milliseconds, a
fresh interpreter seconds on a busy machine). Kills are real SIGKILLs, sent by the child
to itself at a chosen point (a step, the n-th atomic rename before or after it happens,
a half-written tensor file, right after the data are loaded) or by the parent after a
chosen time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

CONFIG = """\
name: tiny
task: classification
seed: 0
dataset: {name: digits, args: {size: 16, test_size: 0.25}}
model: {name: gap_cnn, args: {filters: [4, 8], strides: [1, 2]}}
compile: {optimizer: adam, learning_rate: 0.01, loss: sparse_categorical_crossentropy,
          metrics: [accuracy]}
fit: {epochs: 3, batch_size: 16, validation_split: 0.25}
"""

DRIVER = textwrap.dedent(
    r'''
    import json, os, signal, sys, time
    from pathlib import Path

    import torch

    torch.set_num_threads(1)
    import cnnkit.cli.main
    import cnnkit.cli.training
    from cnnkit.train import callbacks as cb_mod
    from cnnkit.train import checkpoint as ck
    from safetensors.torch import load_file

    root = Path(sys.argv[1])
    config = root / "tiny.yaml"


    def argv(out):
        return ["train", str(config), "--out", str(out), "--resume", "--limit", "96",
                "--threads", "1", "--verbose", "0", "--precision", "fp32",
                "--checkpoint-every", "3"]


    def die():
        os.kill(os.getpid(), signal.SIGKILL)


    def arm(kind, n):
        count = [0]
        if kind == "step":
            real = cb_mod.CallbackList.on_train_batch_end

            def on_batch(self, step):
                real(self, step)
                count[0] += 1
                if count[0] == n:
                    die()

            cb_mod.CallbackList.on_train_batch_end = on_batch
        elif kind in ("replace-before", "replace-after"):
            real_replace = os.replace

            def replace(src, dst):
                count[0] += 1
                if count[0] == n and kind == "replace-before":
                    die()
                real_replace(src, dst)
                if count[0] == n:
                    die()

            os.replace = replace
        elif kind == "half-write":
            real_save = ck.save_file

            def save(tensors, filename, metadata=None):
                count[0] += 1
                real_save(tensors, filename, metadata=metadata)
                if count[0] == n:
                    data = Path(filename).read_bytes()
                    with open(filename, "wb") as fh:
                        fh.write(data[: len(data) // 2])
                    die()

            ck.save_file = save
        elif kind == "after-data":
            real_load = cnnkit.cli.training.load_data

            def load(*a, **k):
                data = real_load(*a, **k)
                die()

            cnnkit.cli.training.load_data = load


    def launch(out, kill=None):
        """Fork a child running the CLI; 'killed', or its exit status."""
        pid = os.fork()
        if pid == 0:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            if kill is not None and kill[0] != "timed":
                arm(*kill)
            try:
                code = cnnkit.cli.main.main(argv(out))
            except BaseException:
                code = 3
            os._exit(code)
        if kill is not None and kill[0] == "timed":
            time.sleep(kill[1])
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            return "killed"
        return os.WEXITSTATUS(status)


    # the uninterrupted run, in the driver itself: its imports (sklearn, matplotlib,
    # tensorboard) are then done once for every forked child
    assert cnnkit.cli.main.main(argv(root / "reference")) == 0
    start = time.perf_counter()
    assert launch(root / "warm") == 0
    duration = time.perf_counter() - start
    reference = load_file(str(root / "reference" / "model.safetensors"))

    # 5 training steps an epoch, checkpoints every 3 steps and at each epoch's end
    plans = [
        [("timed", 0.0), ("after-data", 1), ("replace-after", 1), ("step", 1), ("step", 2)],
        [("half-write", 1), ("replace-before", 2), ("replace-after", 4), ("step", 4)],
        [("step", 7), ("half-write", 5), ("replace-before", 9), ("timed", 0.5 * duration)],
        [("timed", 0.15 * duration), ("timed", 0.6 * duration), ("replace-after", 30),
         ("timed", 0.95 * duration)],
    ]
    results = []
    warm = load_file(str(root / "warm" / "model.safetensors"))
    assert all(torch.equal(warm[k], reference[k]) for k in reference)
    for i, plan in enumerate(plans):
        out = root / f"run{i}"
        kills, before_checkpoint, outcome = 0, 0, None
        for kill in plan:
            outcome = launch(out, kill)
            if outcome == "killed":
                kills += 1
                before_checkpoint += not ck.has_checkpoint(out / "checkpoints")
            elif outcome != 0:
                raise SystemExit(f"plan {plan}: {kill} ended with status {outcome}")
        relaunches = 0
        while outcome != 0:
            outcome = launch(out)
            relaunches += 1
            if outcome not in (0, "killed") or relaunches > 3:
                raise SystemExit(f"plan {plan}: relaunch ended with status {outcome}")
        got = load_file(str(out / "model.safetensors"))
        same = got.keys() == reference.keys() and all(torch.equal(got[k], reference[k])
                                                      for k in reference)
        results.append({"plan": [list(k) for k in plan], "kills": kills,
                        "before_checkpoint": before_checkpoint, "relaunches": relaunches,
                        "identical": same})
    print(json.dumps({"duration": duration, "results": results}))
    '''
)


def test_cli_killed_at_any_moment_and_relaunched_ends_identical(tmp_path):
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the kill-and-relaunch driver hung:\n{err.decode()[-3000:]}")
    assert proc.returncode == 0, err.decode()[-3000:]
    report = json.loads(out.decode().strip().splitlines()[-1])
    results = report["results"]
    kills = sum(r["kills"] for r in results)
    early = sum(r["before_checkpoint"] for r in results)
    print(
        f"\ncnnkit train killed {kills} times ({early} before any checkpoint existed), "
        f"{sum(r['relaunches'] for r in results)} final relaunches, "
        f"{sum(r['identical'] for r in results)}/{len(results)} runs identical to the "
        f"uninterrupted one (reference {report['duration']:.1f} s, all "
        f"{time.perf_counter() - start:.0f} s)"
    )
    assert all(r["identical"] for r in results), results
    assert kills >= 12, results  # a timed kill may come after a run ended: not counted
    assert early >= 4, results  # start-up and the first epoch, before any checkpoint
