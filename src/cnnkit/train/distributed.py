"""Running ``fit``/``evaluate`` unchanged under ``torchrun`` (one or many nodes).

``torchrun --nproc_per_node N train.py`` starts N copies of a script; each finds
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its
environment. :func:`setup_distributed` (called by ``compile``) reads them, starts the
process group when it is not started yet (gloo on CPUs, nccl on CUDA, one GPU per
process: ``cuda:LOCAL_RANK``) and returns a :class:`DistContext`. With it the workflow

- wraps the module in ``DistributedDataParallel`` once the lazy layers are built and
  before the optimizer exists (:func:`build_step_modules`; optionally converting
  batch-norm layers to ``SyncBatchNorm`` on CUDA),
- shards the data (:class:`ShardedSource`): rank ``r`` takes positions
  ``r::world_size`` of the epoch order, which is seeded from rank 0 and so the same
  on every rank, padded as ``DistributedSampler`` pads so every rank runs the same
  number of batches. With per-rank batch ``b`` the ranks' ``i``-th batches together
  are exactly the ``i``-th batch of a one-process run with batch ``world_size * b``,
- sums the loss and sample counts (:meth:`DistContext.mean`) and the streaming
  metrics' state (:meth:`DistContext.sync_metrics`) over the ranks, so every rank
  logs and returns the same global numbers,
- shows the progress bar and writes files on rank 0 only (:attr:`DistContext.is_main`).

Without a torchrun environment (or with ``WORLD_SIZE=1``) nothing of this happens: no
process group, no wrapper, the same batches as always.

When a worker dies (killed, out of memory), the others do not hang: collectives time out
after ``CNNKIT_DIST_TIMEOUT`` seconds (default 300), a lost peer or torchrun's SIGTERM
ends each surviving rank with one clear line on stderr (``cnnkit: rank R of W stopped:
...``) and exit status 1, and the run continues from its last checkpoint with
``fit(resume_from=...)`` / ``cnnkit train --resume``.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import math
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)
from torch.utils.data.distributed import DistributedSampler

from cnnkit._core.errors import ConfigError
from cnnkit.train.data import InMemory, Loader, _index

log = logging.getLogger("cnnkit.train")

ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a distributed run (rank 0 of 1 when there is none)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @property
    def enabled(self) -> bool:
        """More than one process: wrap, shard and reduce."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that shows progress and writes files."""
        return self.rank == 0

    @property
    def _comm_device(self) -> torch.device:
        if self.device is not None and self.device.type == "cuda":
            return self.device
        return torch.device("cpu")

    # ----------------------------------------------------------------- data

    def shard(self, source: InMemory | Loader, pad: bool = True) -> InMemory | Loader:
        """This rank's part of ``source``; ``source`` itself when not distributed.

        ``pad=True`` (training) repeats the first samples as ``DistributedSampler`` does so
        every rank has the same number of batches; ``pad=False`` (evaluation) counts every
        sample exactly once.
        """
        if not self.enabled:
            return source
        return ShardedSource(source, self, pad)  # type: ignore[return-value]

    def broadcast_seed(self, seed: int) -> int:
        """Rank 0's ``seed`` on every rank (so shuffling agrees however ranks were seeded)."""
        if not self.enabled:
            return seed
        t = torch.tensor([seed % 2**63], dtype=torch.int64, device=self._comm_device)
        dist.broadcast(t, src=0)
        return int(t.item())

    # ----------------------------------------------------------------- logs

    def mean(self, total: torch.Tensor, seen: int) -> float:
        """``total / seen`` over all ranks: the global mean of a per-sample sum."""
        if not self.enabled:
            return (total / seen).item()
        buf = torch.stack(
            [
                total.detach().to(self._comm_device, torch.float64),
                torch.tensor(float(seen), dtype=torch.float64, device=self._comm_device),
            ]
        )
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return (buf[0] / buf[1]).item()

    def sync_metrics(self, metrics: Sequence[Any]) -> None:
        """Sum the streaming metrics' state over the ranks (their ``sync()``)."""
        if not self.enabled:
            return
        for m in metrics:
            sync = getattr(m, "sync", None)
            if callable(sync):
                sync()

    def barrier(self) -> None:
        """Wait for every rank (e.g. until rank 0 has written a checkpoint)."""
        if self.enabled:
            dist.barrier()


#: The context of a process that is not part of a distributed run.
SINGLE = DistContext()


def is_main_process() -> bool:
    """Whether this process is rank 0 (true outside distributed runs)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return _env_int("RANK", 0) == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"The environment variable {name} must be an integer (torchrun sets it); "
            f"received {raw!r}."
        ) from None


def _local_device(device: torch.device, local_rank: int) -> torch.device:
    """One GPU per process: a bare ``cuda`` becomes ``cuda:LOCAL_RANK``."""
    if device.type != "cuda":
        return device
    if device.index is None:
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ConfigError(
                f"LOCAL_RANK={local_rank} but this node has {count} CUDA device(s); start at "
                f"most {count} processes per node (torchrun --nproc_per_node {count})."
            )
        device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def setup_distributed(device: torch.device) -> DistContext:
    """Read the torchrun environment and start the process group if needed.

    Returns :data:`SINGLE`'s equivalent (with ``device`` unchanged) when there is no
    distributed run: no ``WORLD_SIZE`` above 1 and no initialised process group.
    """
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        if world <= 1:
            return DistContext(device=device)
        local = _env_int("LOCAL_RANK", rank)
        return DistContext(rank, world, local, _local_device(device, local))
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(device=device)
    if not dist.is_available():
        raise ConfigError(
            f"WORLD_SIZE={world} asks for a distributed run but this PyTorch build has no "
            "torch.distributed; unset WORLD_SIZE or install a build with it."
        )
    missing = [v for v in ENV_VARS if v != "LOCAL_RANK" and not os.environ.get(v)]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world} asks for a distributed run but {', '.join(missing)} "
            "is not set; start the script with torchrun (e.g. torchrun --nproc_per_node "
            f"{world} script.py), which sets {', '.join(ENV_VARS)}."
        )
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if not 0 <= rank < world:
        raise ConfigError(f"RANK must be in [0, {world}) for WORLD_SIZE={world}; received {rank}.")
    device = _local_device(device, local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=_timeout_s())
    store = _launch_store(rank, world, timeout)
    dist.init_process_group(
        backend=backend,
        init_method=None if store is not None else "env://",
        store=store,
        rank=rank,
        world_size=world,
        timeout=timeout,
    )
    atexit.register(_destroy)
    _install_failure_reporting(rank, world)
    log.info("process group started: rank %d of %d (%s, %s)", rank, world, backend, device)
    return DistContext(rank, world, local, device)


def _launch_store(rank: int, world: int, timeout: datetime.timedelta) -> Any:
    """The process group's store under torchrun's agent store, or None (use env://).

    torchrun's agent hosts the workers' store and keeps it across restarts, so the
    keys of an earlier attempt (gloo's listening addresses) are still there when the
    restarted workers meet; a worker may then connect to a peer of the dead attempt
    (``connection refused``). Every worker counts itself in once per start; the count
    gives each attempt its own key prefix.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    from torch.distributed.rendezvous import _create_c10d_store

    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    store = _create_c10d_store(addr, port, rank, world, timeout)
    launch = (int(store.add("cnnkit/workers_started", 1)) - 1) // world
    return dist.PrefixStore(f"cnnkit/launch{launch}/", store)


def _timeout_s() -> float:
    raw = os.environ.get("CNNKIT_DIST_TIMEOUT", "300")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(
            f"CNNKIT_DIST_TIMEOUT must be a positive number of seconds; received {raw!r}."
        )
    return value


_RESUME_HINT = (
    "the last checkpoint is intact; continue with fit(resume_from=...) or cnnkit train --resume"
)


def _stopped(rank: int, world: int, why: str) -> None:
    line = f"cnnkit: rank {rank} of {world} stopped: {why}; {_RESUME_HINT}.\n"
    try:
        os.write(2, line.encode())
    except OSError:
        pass


def _is_peer_failure(err: BaseException) -> bool:
    dist_error = getattr(dist, "DistError", ())
    text = str(err).lower()
    return isinstance(err, dist_error) or (
        isinstance(err, RuntimeError)
        and any(k in text for k in ("gloo", "connection closed", "connection reset", "timed out"))
    )


def _install_failure_reporting(rank: int, world: int) -> None:
    """One clear line on stderr when another worker dies (instead of a hang or a deep
    traceback), then exit status 1 so torchrun reports the failure."""
    previous_hook = sys.excepthook

    def hook(kind, err, tb):
        if _is_peer_failure(err):
            _stopped(rank, world, f"lost contact with another worker ({str(err).splitlines()[0]})")
            os._exit(1)
        previous_hook(kind, err, tb)

    sys.excepthook = hook

    def on_term(signum, frame):
        _stopped(rank, world, "torchrun ended this worker because another worker failed")
        os._exit(1)

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: keep the default
        pass


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------- the module


def build_step_modules(
    net: nn.Module, ctx: DistContext, jit: bool = False, sync_batchnorm: bool = False
) -> tuple[nn.Module | None, nn.Module | None]:
    """``(train_module, eval_module)`` for the workflow; None means ``net`` itself.

    Distributed: the training module is ``DistributedDataParallel(net)`` (compiled when
    ``jit``), evaluation runs on ``net`` without the wrapper (no collective per forward,
    so ranks may see different numbers of evaluation batches). ``net``'s parameters are
    the wrapper's, so the optimizer and checkpoints use ``net`` as always.
    """
    if not ctx.enabled:
        return (torch.compile(net) if jit else None), None
    if sync_batchnorm:
        if ctx.device is None or ctx.device.type != "cuda":
            raise ConfigError(
                f"sync_batchnorm=True needs CUDA devices (SyncBatchNorm has no CPU kernel); "
                f"received device {ctx.device}. Use sync_batchnorm=False on CPUs."
            )
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        if converted is not net:
            raise ConfigError(
                f"sync_batchnorm=True cannot convert a model that is itself a batch-norm "
                f"layer ({type(net).__name__}); wrap it in a Sequential."
            )
    ids = [ctx.device.index] if ctx.device is not None and ctx.device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    if jit:
        return torch.compile(ddp), torch.compile(net)
    return ddp, net


# --------------------------------------------------------------------- the data


def shard_positions(order: Sequence[int], rank: int, world_size: int, pad: bool) -> list[int]:
    """Rank ``rank``'s entries ``rank::world_size`` of ``order``.

    ``pad=True`` first extends ``order`` by its own first entries to a multiple of
    ``world_size``, exactly as ``DistributedSampler(drop_last=False)`` does.
    """
    order = list(order)
    n = len(order)
    if pad and n:
        total = math.ceil(n / world_size) * world_size
        extra = total - n
        order += (order * math.ceil(extra / n))[:extra]
    return order[rank::world_size]


class _Positions(Sampler[int]):
    def __init__(self, positions: list[int]) -> None:
        self.positions = positions

    def __iter__(self) -> Iterator[int]:
        return iter(self.positions)

    def __len__(self) -> int:
        return len(self.positions)


class ShardedSource:
    """One rank's share of an :class:`InMemory` or :class:`Loader` source.

    Same interface as the sources (``batches``, ``num_batches``, ``len``). The epoch
    order is ``torch.randperm(n, generator)`` with the generator's seed taken from rank 0
    (the order a one-process run draws from that generator, and the order
    ``DistributedSampler(seed=s)`` draws after ``set_epoch(e)`` for a seed ``s + e``).
    """

    def __init__(self, source: InMemory | Loader, ctx: DistContext, pad: bool) -> None:
        self.source, self.ctx, self.pad = source, ctx, pad
        self._loader_template: DataLoader | None = None
        if isinstance(source, Loader):
            self._check_loader(source.source)
        self.n = len(source)
        world = ctx.world_size
        if not pad and self.n < world:
            raise ConfigError(
                f"Evaluating {self.n} sample(s) on {world} processes leaves a process without "
                f"data; pass at least {world} samples (one per process)."
            )
        self.per_rank = math.ceil(self.n / world) if pad else len(range(ctx.rank, self.n, world))

    def _check_loader(self, src: Dataset | DataLoader) -> None:
        dataset = src.dataset if isinstance(src, DataLoader) else src
        if isinstance(dataset, IterableDataset):
            raise ConfigError(
                f"An IterableDataset ({type(dataset).__name__}) cannot be sharded across "
                "processes; pass a map-style Dataset (with __getitem__ and __len__) or arrays."
            )
        if isinstance(src, DataLoader):
            sampler = src.sampler
            if isinstance(sampler, DistributedSampler):
                raise ConfigError(
                    "The DataLoader already has a DistributedSampler; pass its Dataset and "
                    "fit shards it (same seed on every rank, a new order each epoch)."
                )
            if src.batch_size is None or type(sampler) not in (RandomSampler, SequentialSampler):
                raise ConfigError(
                    f"A DataLoader with a custom sampler or batch_sampler "
                    f"({type(sampler).__name__}) cannot be sharded across processes; pass its "
                    "Dataset (and batch_size=...) or a DataLoader with shuffle=True/False."
                )
            if isinstance(sampler, RandomSampler) and (
                sampler.replacement or sampler._num_samples is not None
            ):
                raise ConfigError(
                    "A DataLoader sampling with replacement or num_samples cannot be sharded across "
                    "processes; pass its Dataset (and batch_size=...) instead."
                )
            self._loader_template = src

    def __len__(self) -> int:
        return self.per_rank

    def _batch_size(self, batch_size: int) -> int:
        t = self._loader_template
        return t.batch_size if t is not None and t.batch_size is not None else batch_size

    def num_batches(self, batch_size: int) -> int:
        b = self._batch_size(batch_size)
        t = self._loader_template
        if t is not None and t.drop_last:
            return self.per_rank // b
        return -(-self.per_rank // b)

    def positions(self, shuffle: bool, generator: torch.Generator | None = None) -> list[int]:
        """This rank's sample positions for one epoch (identical calls on every rank)."""
        t = self._loader_template
        if t is not None:  # a DataLoader shuffles when its sampler is random
            shuffle = isinstance(t.sampler, RandomSampler)
        if shuffle:
            seed = generator.initial_seed() if generator is not None else None
            if seed is None:
                seed = int(torch.randint(0, 2**62, (1,)).item())
            g = torch.Generator().manual_seed(self.ctx.broadcast_seed(seed))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        return shard_positions(order, self.ctx.rank, self.ctx.world_size, self.pad)

    #: ``batches(..., start=k)`` begins at batch ``k`` (a mid-epoch resume)
    starts_anywhere = True

    def batches(
        self,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
        start: int = 0,
    ) -> Iterator[tuple]:
        pos = self.positions(shuffle, generator)[start * self._batch_size(batch_size) :]
        src = self.source
        if isinstance(src, InMemory):
            return self._slices(src, pos, batch_size)
        t = self._loader_template
        if t is None:
            loader = DataLoader(src.source, batch_size=batch_size, sampler=_Positions(pos))
        else:
            loader = DataLoader(
                t.dataset,
                batch_size=t.batch_size,
                sampler=_Positions(pos),
                num_workers=t.num_workers,
                collate_fn=t.collate_fn,
                pin_memory=t.pin_memory,
                drop_last=t.drop_last,
                timeout=t.timeout,
                worker_init_fn=t.worker_init_fn,
                persistent_workers=t.persistent_workers,
                multiprocessing_context=t.multiprocessing_context,
                prefetch_factor=t.prefetch_factor if t.num_workers else None,
            )
        return Loader(loader).batches(batch_size, False)  # started now (its seeds)

    @staticmethod
    def _slices(src: InMemory, pos: list[int], batch_size: int) -> Iterator[tuple]:
        idx = torch.tensor(pos, dtype=torch.long)
        for begin in range(0, len(idx), batch_size):
            sl = idx[begin : begin + batch_size]
            yield src.x[sl], (None if src.y is None else _index(src.y, sl))
