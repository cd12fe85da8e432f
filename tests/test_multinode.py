"""Two "hosts" on one machine: Linux network namespaces joined by a veth pair.

The test creates two namespaces and a veth pair with addresses from 192.0.2.0/24
(TEST-NET-1: nothing leaves the namespaces it made), starts ``torchrun --nnodes 2
--nproc-per-node 1 --rdzv-backend c10d`` in each, and removes everything afterwards.
Each node has its own checkpoint folder (no shared filesystem): rank 0 writes; at
resume the rank holding the newest checkpoint sends it to the other node
(:func:`cnnkit.train.run_state.sync_newest_checkpoint`).

1. Both nodes end with equal weights, equal to a one-process run with the same
   global batch.
2. One node's worker is SIGKILLed mid-run; with ``--max-restarts 1`` torchrun restarts
   both workers, they resume from the newest checkpoint and end bit-identical to run 1.

Skipped (with the reason) without root, without ``ip`` or where namespaces cannot be
made.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parents[1] / "src"
ADDRS = ("192.0.2.1", "192.0.2.2")

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np, torch
    from safetensors.torch import save_file
    import cnnkit
    from cnnkit.callbacks import Callback, ModelCheckpoint
    from cnnkit.layers import Conv2D, Dense, Flatten

    out, batch, kill_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=96)


    class KillOnce(Callback):
        # the first attempt of this node's worker dies after global step kill_at
        def on_epoch_begin(self, epoch, logs=None):
            restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            path = os.path.join(out, f"start-attempt{restart}.txt")
            if not os.path.exists(path):  # the step this attempt starts from
                with open(path, "w") as fh:
                    fh.write(str(self.model._progress.global_step))

        def on_train_batch_end(self, step):
            first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
            if first and self.model._progress.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)


    torch.manual_seed(0)
    model = cnnkit.Sequential(
        [Conv2D(4, 3, activation="relu"), Flatten(), Dense(3, activation="softmax")],
        input_shape=(1, 8, 8),
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", device="cpu",
                  precision="fp32", learning_rate=0.01)
    ck = os.path.join(out, "ck")
    torch.manual_seed(1)
    model.fit(x, y, batch_size=batch, epochs=3, verbose=0, resume_from=ck,
              callbacks=[KillOnce(), ModelCheckpoint(ck, monitor="loss", save_freq=2)])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(out, f"final-rank{model._dist.rank}.safetensors"))
    """
)


def _sh(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


@pytest.fixture
def two_hosts():
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (ip netns add)")
    if shutil.which("ip") is None:
        pytest.skip("needs the `ip` command (iproute2)")
    tag = f"{os.getpid() % 100000}"
    names = (f"cnnkit{tag}a", f"cnnkit{tag}b")
    links = (f"ck{tag}a", f"ck{tag}b")
    made: list[str] = []
    try:
        for ns in names:
            res = _sh("ip", "netns", "add", ns)
            if res.returncode != 0:
                pytest.skip(f"cannot create a network namespace here: {res.stderr.strip()}")
            made.append(ns)
        steps = [
            ("ip", "link", "add", links[0], "type", "veth", "peer", "name", links[1]),
            *[("ip", "link", "set", links[i], "netns", names[i]) for i in range(2)],
            *[("ip", "-n", names[i], "addr", "add", f"{ADDRS[i]}/24", "dev", links[i])
              for i in range(2)],
            *[("ip", "-n", names[i], "link", "set", dev, "up") for i in range(2)
              for dev in (links[i], "lo")],
        ]  # fmt: skip
        for step in steps:
            res = _sh(*step)
            if res.returncode != 0:
                pytest.skip(f"`{' '.join(step)}` failed: {res.stderr.strip()}")
        yield names, links
    finally:
        for ns in made:  # removing a namespace removes its end of the veth pair, and the pair
            _kill_all_in(ns)
            _sh("ip", "netns", "del", ns)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1] + 1 if s.getsockname()[1] < 65000 else 29517


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CNNKIT_DIST_TIMEOUT="150",
               PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]))  # fmt: skip
    return env


def _kill_all_in(ns: str) -> None:
    """SIGKILL every process in the namespace (torchrun's workers have their own group)."""
    res = _sh("ip", "netns", "pids", ns)
    for pid in res.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _two_nodes(names, links, script, outs, batch, kill_at, port, timeout=300):
    """torchrun in both namespaces; returns (exit statuses, outputs)."""
    procs, logs = [], []
    for i in range(2):
        outs[i].mkdir(exist_ok=True)
        cmd = ["ip", "netns", "exec", names[i], "env", f"GLOO_SOCKET_IFNAME={links[i]}",
               sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
               "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"{ADDRS[0]}:{port}", "--rdzv-id", f"cnnkit{port}",
               "--rdzv-conf", f"is_host={int(i == 0)}", "--local-addr", ADDRS[i],
               "--max-restarts", "1", "--monitor-interval", "0.5",
               str(script), str(outs[i]), str(batch), str(kill_at[i])]  # fmt: skip
        log = open(outs[i] / "torchrun.log", "wb")  # noqa: SIM115 - closed below
        logs.append(log)
        procs.append(subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):  # one node failed: the other
                deadline = min(deadline, time.monotonic() + 20)  # gets 20 s, then is stopped
            time.sleep(0.2)
    finally:
        for ns in names:
            if any(p.poll() is None for p in procs):
                _kill_all_in(ns)
        for p in procs:
            p.wait()
        for log in logs:
            log.close()
    outputs = [(d / "torchrun.log").read_text(errors="replace") for d in outs]
    return [p.returncode for p in procs], outputs


def _run_nodes(names, links, script, outs, batch, kill_at):
    codes, outputs = _two_nodes(names, links, script, outs, batch, kill_at, _free_port())
    if codes != [0, 0]:
        pytest.fail(f"torchrun failed ({codes}):\n" + "\n".join(o[-3000:] for o in outputs))
    return outputs


def _final(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    (path,) = folder.glob("final-rank*.safetensors")
    return load_file(str(path))


def test_two_namespaces_train_like_one_process_and_survive_a_killed_worker(two_hosts, tmp_path):
    names, links = two_hosts
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    start = time.perf_counter()
    clean = [tmp_path / "clean0", tmp_path / "clean1"]
    _run_nodes(names, links, script, clean, 8, (-1, -1))
    t_clean = time.perf_counter() - start
    a, b = _final(clean[0]), _final(clean[1])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    single = tmp_path / "single"
    single.mkdir()
    env = _env()
    proc = subprocess.run([sys.executable, str(script), str(single), "16", "-1"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = _final(single)
    for k in one:  # a 2 x 8 global batch is the one-process batch of 16
        torch.testing.assert_close(a[k], one[k], atol=1e-5, rtol=1e-5, msg=k)
    # node 1's worker is SIGKILLed after global step 5 (checkpoints every 2 steps)
    killed = [tmp_path / "killed0", tmp_path / "killed1"]
    mid = time.perf_counter()
    outputs = _run_nodes(names, links, script, killed, 8, (-1, 5))
    t_killed = time.perf_counter() - mid
    joined = "\n".join(outputs)
    assert "exitcode: -9" in joined, joined[-3000:]  # the kill happened, then the restart
    for d in killed:
        assert (d / "start-attempt1.txt").read_text() == "4"  # the newest checkpoint: step 4
        got = _final(d)
        assert all(torch.equal(got[k], a[k]) for k in a)  # bit-identical to the clean run
    print(f"\ntwo namespaces: clean run {t_clean:.1f} s, killed + restarted {t_killed:.1f} s, "
          f"whole test {time.perf_counter() - start:.1f} s")  # fmt: skip
