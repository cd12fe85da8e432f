"""fit/evaluate under torchrun: sharding, reduction, and 2 processes == 1 process.

The end-to-end test really launches ``python -m torch.distributed.run --nproc_per_node 2
--standalone`` (gloo, CPU) on a script written here, and compares the weights and the
History with a one-process run of the same script with twice the batch.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler
from torch.utils.data.distributed import DistributedSampler

import cnnkit
from cnnkit import ConfigError
from cnnkit.layers import Conv2D, Dense, Flatten
from cnnkit.train.data import InMemory, Loader
from cnnkit.train.distributed import (
    SINGLE,
    DistContext,
    ShardedSource,
    build_step_modules,
    setup_distributed,
    shard_positions,
)

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def no_collectives(monkeypatch):
    """Rank contexts without a process group: the seed broadcast is the identity."""
    monkeypatch.setattr(DistContext, "broadcast_seed", lambda self, seed: seed)


# ----------------------------------------------------------------- sharding


@pytest.mark.parametrize("n", [1, 2, 5, 7, 16, 33])
@pytest.mark.parametrize("world", [2, 3, 4])
def test_shard_positions_match_distributed_sampler(n, world):
    seed, epoch = 1234, 3
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    for rank in range(world):
        ref = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)
        ref.set_epoch(epoch)
        assert shard_positions(order, rank, world, pad=True) == list(ref)


@pytest.mark.parametrize("n", [4, 10, 11, 64])
@pytest.mark.parametrize("world", [2, 3])
def test_rank_shards_partition_the_epoch_order(n, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n)).tolist()
    exact = [shard_positions(order, r, world, pad=False) for r in range(world)]
    assert sorted(sum(exact, [])) == sorted(order)  # every sample exactly once
    padded = [shard_positions(order, r, world, pad=True) for r in range(world)]
    assert len({len(p) for p in padded}) == 1  # same count on every rank
    assert len(padded[0]) == -(-n // world)
    together = sum(padded, [])
    assert set(together) == set(order)
    extra = len(together) - n
    assert sorted(together) == sorted(order + order[:extra])  # padding repeats the first


def _batches_by_rank(source, world, batch, seed):
    out = []
    for rank in range(world):
        sharded = ShardedSource(source, DistContext(rank, world), pad=True)
        gen = torch.Generator().manual_seed(seed)
        out.append(list(sharded.batches(batch, True, gen)))
    return out


def test_rank_batches_together_are_the_one_process_batches(no_collectives):
    n, world, b = 48, 2, 4
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1)
    src = InMemory(x, torch.arange(n))
    single = list(src.batches(world * b, True, torch.Generator().manual_seed(9)))
    per_rank = _batches_by_rank(src, world, b, 9)
    assert [len(r) for r in per_rank] == [len(single)] * world
    for i, (xs, _) in enumerate(single):
        xr = torch.cat([per_rank[r][i][0] for r in range(world)])
        yr = torch.cat([per_rank[r][i][1] for r in range(world)])
        assert sorted(xr.flatten().tolist()) == sorted(xs.flatten().tolist())
        assert torch.equal(xr.flatten().long(), yr)  # x and y stay paired
    # one process: a Dataset is shuffled in the same order as the same data in memory
    ds = TensorDataset(x, torch.arange(n))
    single_ds = list(Loader(ds).batches(world * b, True, torch.Generator().manual_seed(9)))
    for (xa, ya), (xd, yd) in zip(single, single_ds, strict=True):
        assert torch.equal(xa, xd) and torch.equal(ya, yd)
    # a Dataset gives the same shards as the same data in memory
    per_rank_ds = _batches_by_rank(Loader(TensorDataset(x, torch.arange(n))), world, b, 9)
    for r in range(world):
        for (xa, ya), (xd, yd) in zip(per_rank[r], per_rank_ds[r]):
            assert torch.equal(xa, xd) and torch.equal(ya, yd)


def test_uneven_data_is_padded_so_every_rank_has_the_same_batches(no_collectives):
    n, world, b = 37, 3, 5
    src = InMemory(torch.arange(n, dtype=torch.float32)[:, None], None)
    shards = [ShardedSource(src, DistContext(r, world), pad=True) for r in range(world)]
    assert [len(s) for s in shards] == [13, 13, 13]
    assert [s.num_batches(b) for s in shards] == [3, 3, 3]
    per_rank = _batches_by_rank(src, world, b, 1)
    assert [len(r) for r in per_rank] == [3, 3, 3]
    seen = torch.cat([xb for r in per_rank for xb, _ in r]).flatten().long().tolist()
    assert len(seen) == 39 and set(seen) == set(range(n))
    # evaluation shards: no padding, every sample once, unequal counts allowed
    ev = [ShardedSource(src, DistContext(r, world), pad=False) for r in range(world)]
    assert [len(s) for s in ev] == [13, 12, 12]
    got = [int(v) for s in ev for xb, _ in s.batches(4, False) for v in xb.flatten()]
    assert sorted(got) == list(range(n))


def test_dataloader_shards_with_its_own_batch_size(no_collectives):
    ds = TensorDataset(torch.arange(20, dtype=torch.float32)[:, None])
    dl = DataLoader(ds, batch_size=3, shuffle=False)
    shards = [ShardedSource(Loader(dl), DistContext(r, 2), pad=True) for r in range(2)]
    assert [s.num_batches(999) for s in shards] == [4, 4]
    got = [[xb.flatten().long().tolist() for xb, _ in s.batches(999, True)] for s in shards]
    assert got[0] == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]
    assert got[1] == [[1, 3, 5], [7, 9, 11], [13, 15, 17], [19]]


def test_unshardable_inputs_are_refused_with_the_reason():
    ds = TensorDataset(torch.zeros(8, 1))
    weighted = DataLoader(ds, batch_size=2, sampler=WeightedRandomSampler([1.0] * 8, 8))
    with pytest.raises(ConfigError, match="WeightedRandomSampler"):
        ShardedSource(Loader(weighted), DistContext(0, 2), pad=True)
    already = DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, 2, 0))
    with pytest.raises(ConfigError, match="DistributedSampler"):
        ShardedSource(Loader(already), DistContext(0, 2), pad=True)
    with pytest.raises(ConfigError, match="1 sample.*2 processes"):
        ShardedSource(InMemory(torch.zeros(1, 1), None), DistContext(1, 2), pad=False)


def test_sync_batchnorm_needs_cuda_and_single_process_gets_no_wrapper():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    assert build_step_modules(net, SINGLE, sync_batchnorm=True) == (None, None)
    assert isinstance(net[1], torch.nn.BatchNorm2d)  # untouched without a distributed run
    with pytest.raises(ConfigError, match="sync_batchnorm=True needs CUDA.*cpu"):
        build_step_modules(net, DistContext(0, 2, 0, torch.device("cpu")), sync_batchnorm=True)


# ----------------------------------------------------------------- environment


def test_no_torchrun_environment_means_single_process(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    ctx = setup_distributed(torch.device("cpu"))
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1
    assert not setup_distributed(torch.device("cpu")).enabled
    assert not dist.is_initialized()
    assert SINGLE.is_main and not SINGLE.enabled


def test_incomplete_torchrun_environment_is_a_clear_error(monkeypatch):
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="MASTER_ADDR, MASTER_PORT"):
        setup_distributed(torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE.*'two'"):
        setup_distributed(torch.device("cpu"))
    assert not dist.is_initialized()


def test_single_process_fit_has_no_wrapper_and_no_process_group():
    model = cnnkit.Sequential(
        [Conv2D(2, 3, activation="relu"), Flatten(), Dense(3, activation="softmax")],
        input_shape=(1, 6, 6),
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cpu")
    keys = list(model.state_dict())
    model.fit(np.zeros((8, 1, 6, 6), np.float32), np.zeros(8, np.int64), epochs=1, verbose=0)
    assert model._step_module is model and model._eval_module is model
    assert model._dist.is_main and not model._dist.enabled
    assert not dist.is_initialized()
    assert list(model.state_dict()) == keys  # nothing registered by the workflow


# ----------------------------------------------------------------- torchrun end to end

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np, torch
    from safetensors.torch import save_file
    from torch.utils.data import TensorDataset
    import cnnkit
    from cnnkit.layers import Conv2D, Dense, Flatten

    out, batch = sys.argv[1], int(sys.argv[2])
    rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, size=256)
    # ranks seeded differently on purpose: DDP must broadcast rank 0's weights and
    # the shuffling must follow rank 0's seed
    cnnkit.seed_everything(100 + rank)
    model = cnnkit.Sequential(
        [Conv2D(4, 3, activation="relu"), Flatten(), Dense(4, activation="softmax")],
        input_shape=(1, 8, 8),
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], device="cpu", precision="fp32", learning_rate=0.2)
    cnnkit.seed_everything(7 + rank)
    hist = model.fit(x, y, batch_size=batch, epochs=2, validation_split=0.25, verbose=0)
    ds = TensorDataset(torch.from_numpy(x[:128]), torch.from_numpy(y[:128]))
    hist2 = model.fit(ds, batch_size=batch, epochs=1, verbose=0)
    ev = model.evaluate(x[:251], y[:251], batch_size=batch)
    res = {"history": hist.history, "history2": hist2.history, "eval": ev,
           "world": model._dist.world_size, "is_main": model._dist.is_main,
           "wrapper": type(model._step_module).__name__}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump(res, fh)
    if model._dist.is_main:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  os.path.join(out, "weights.safetensors"))
    """
)


def _run(cmd, env, timeout=120):
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers
        output, _ = proc.communicate()
        pytest.fail(f"{cmd} ran past {timeout} s:\n{output.decode(errors='replace')[-4000:]}")
    assert proc.returncode == 0, output.decode(errors="replace")[-4000:]


def test_torchrun_two_processes_equal_one_process_with_twice_the_batch(tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(
        OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    )
    b = 16
    start = time.perf_counter()
    _run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--standalone", str(script), str(two), str(b)],
        env,
    )  # fmt: skip
    mid = time.perf_counter()
    _run([sys.executable, str(script), str(one), str(2 * b)], env)
    print(f"torchrun {mid - start:.1f} s, one process {time.perf_counter() - mid:.1f} s")

    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in range(2)]
    single = json.loads((one / "rank0.json").read_text())
    assert [r["world"] for r in ranks] == [2, 2] and single["world"] == 1
    assert [r["is_main"] for r in ranks] == [True, False]
    assert [r["wrapper"] for r in ranks] == ["DistributedDataParallel"] * 2
    assert single["wrapper"] == "Sequential"
    assert sorted(p.name for p in two.iterdir()) == [
        "rank0.json",
        "rank1.json",
        "weights.safetensors",
    ]

    w2, w1 = load_file(two / "weights.safetensors"), load_file(one / "weights.safetensors")
    assert w2.keys() == w1.keys() and w1
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=1e-5, rtol=1e-5, msg=k)
    print("max |w2 - w1|:", max((w2[k] - w1[k]).abs().max().item() for k in w1))
    # training moved the weights (the comparison is not of two untouched inits)
    assert single["history"]["loss"][0] != single["history2"]["loss"][0]

    for key in ("history", "history2"):
        assert ranks[0][key] == ranks[1][key]  # every rank reports the same global logs
        assert ranks[0][key].keys() == single[key].keys()
        for name, values in single[key].items():
            np.testing.assert_allclose(ranks[0][key][name], values, atol=1e-5, err_msg=name)
    assert set(single["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert ranks[0]["eval"] == ranks[1]["eval"]
    for name, value in single["eval"].items():
        assert ranks[0]["eval"][name] == pytest.approx(value, abs=1e-5), name


MASK_RCNN_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from safetensors.torch import save_file
    import cnnkit
    from cnnkit.data.synthetic import shapes
    from cnnkit.models import create

    out = sys.argv[1]
    rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(1)
    images, targets = shapes(n=12, size=64, task="instance", seed=3)
    cnnkit.seed_everything(100 + rank)  # DDP must broadcast rank 0's initial weights
    model = cnnkit.Model(create("mask_rcnn", num_classes=4, backbone="small"))
    model.compile(optimizer="sgd", learning_rate=0.01, device="cpu", precision="fp32")
    hist = model.fit(images, targets, epochs=2, batch_size=2, verbose=0)
    ev = model.evaluate(images[:6], targets[:6], batch_size=2)
    res = {"history": hist.history, "eval": ev, "world": model._dist.world_size,
           "wrapper": type(model._step_module).__name__}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump(res, fh, default=float)
    params = {k: p.detach().contiguous() for k, p in model._net.named_parameters()}
    save_file(params, os.path.join(out, f"params{rank}.safetensors"))
    """
)


def test_torchrun_trains_mask_rcnn_through_model_fit(tmp_path):
    """A model that computes its own losses under DDP (issue 16): both ranks end with the
    same parameters (BatchNorm statistics stay per rank, as in torch), the same history of
    the summed and named losses (reduced over the ranks) and the same evaluation."""
    from safetensors.torch import load_file

    script = tmp_path / "train.py"
    script.write_text(MASK_RCNN_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(
        OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    )
    _run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--standalone", str(script), str(tmp_path)],
        env, timeout=300,
    )  # fmt: skip
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["wrapper"] for r in ranks] == ["DistributedDataParallel"] * 2
    history = ranks[0]["history"]
    assert {"loss", "loss_classifier", "loss_mask", "loss_objectness"} <= set(history)
    assert all(len(v) == 2 and all(math.isfinite(x) for x in v) for v in history.values())
    assert ranks[1]["history"] == history and ranks[1]["eval"] == ranks[0]["eval"]
    assert {"loss", "bbox", "segm"} <= set(ranks[0]["eval"])
    p0, p1 = (load_file(tmp_path / f"params{r}.safetensors") for r in range(2))
    assert p0.keys() == p1.keys() and len(p0) > 20
    # the ranks were seeded differently: equal parameters mean rank 0's were broadcast
    assert all(torch.equal(p0[k], p1[k]) for k in p0)
