"""The CPU fast path (issue 8): allocator, denormals, fused Adam, no per-step host sync.

Functional checks only; the speed itself is measured by ``bench/run.py``.
"""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import cnnkit
from cnnkit.layers import Conv2D, Dense, Flatten, MaxPooling2D
from cnnkit.models import create
from cnnkit.train import fastpath
from cnnkit.train.precision import cpu_has_native_bf16
from conftest import shuffled_digits

GLIBC = bool(getattr(os, "confstr", None) and os.confstr("CS_GNU_LIBC_VERSION"))


def _small_cnn():
    return cnnkit.Sequential(
        [Conv2D(4, 3, activation="relu"), MaxPooling2D(2), Flatten(), Dense(3)],
        input_shape=(1, 8, 8),
    )


@pytest.fixture
def fresh_state(monkeypatch):
    """A process state as if the fast path had never been applied; denormal mode restored."""
    before = fastpath.flush_denormal_enabled()
    monkeypatch.setattr(fastpath, "_STATE", fastpath.FastPathState())
    yield
    torch.set_flush_denormal(before)


# --------------------------------------------------------------------------- allocator

_MMAP_PROBE = """
import ctypes, importlib.util, sys
spec = importlib.util.spec_from_file_location("fastpath", sys.argv[1])  # without torch
fastpath = sys.modules["fastpath"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fastpath)
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
size = 24 * 1024 * 1024  # below glibc's largest mmap threshold; never freed here, so the
before = libc.mallinfo2().hblks  # dynamic threshold cannot move between the two probes
libc.malloc(size)
default = libc.mallinfo2().hblks - before
print(fastpath.tune_allocator())
before = libc.mallinfo2().hblks
libc.malloc(size)
print(default, libc.mallinfo2().hblks - before, "torch" in sys.modules)
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt tuning only applies to glibc")
def test_mallopt_keeps_large_blocks_off_mmap():
    """glibc's own counter of mmapped blocks (mallinfo2.hblks): a 24 MiB malloc is mapped
    from the OS by default and served from the heap once the thresholds are raised."""
    env = {**os.environ, "CNNKIT_FASTPATH": "1"}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_MMAP_PROBE), fastpath.__file__],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    applied, deltas = done.stdout.strip().splitlines()
    assert "mmap_threshold=33554432" in applied
    assert deltas.split() == ["1", "0", "False"]  # ... and torch was never loaded


def test_allocator_is_a_logged_no_op_without_glibc(monkeypatch, caplog):
    monkeypatch.setattr(fastpath, "_libc", lambda: None)
    with caplog.at_level(logging.DEBUG, logger="cnnkit.train"):
        assert fastpath.tune_allocator() == "unchanged (not glibc)"
    assert "not glibc" in caplog.text


# --------------------------------------------------------------------------- denormals


def test_flush_denormal_is_set_and_restorable(fresh_state):
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # a denormal float32
    torch.set_flush_denormal(False)
    assert float((tiny * 2)[0]) == pytest.approx(2e-39, rel=1e-5)
    state = fastpath.configure(allocator=False)
    if not state.flush_denormal:
        pytest.skip("this CPU cannot flush denormals (no SSE3 DAZ)")
    assert float((tiny * 2)[0]) == 0.0
    assert fastpath.flush_denormal_enabled()
    fastpath.restore()
    assert float((tiny * 2)[0]) == pytest.approx(2e-39, rel=1e-5)
    assert not fastpath.state().enabled


def test_env_switch_turns_the_fast_path_off(fresh_state, monkeypatch):
    monkeypatch.setenv("CNNKIT_FASTPATH", "0")
    torch.set_flush_denormal(False)
    model = _small_cnn().compile(loss="sparse_categorical_crossentropy", device="cpu")
    model.fit(torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)), verbose=0)
    assert not fastpath.flush_denormal_enabled()
    assert model.runtime_choices["fast_path"] == {"enabled": False}
    assert model.runtime_choices["optimizer"] == "Adam(foreach)"


# --------------------------------------------------------------------------- fused Adam


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fused_adam_selected_and_equal_to_the_for_loop_reference(name, fresh_state):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2))
    ref_net = copy.deepcopy(net)
    opt = fastpath.make_adam(list(net.parameters()), 1e-2, weight_decay_decoupled=name == "adamw")
    assert opt.param_groups[0]["fused"] is True and fastpath.optimizer_description(opt) == (
        ("AdamW" if name == "adamw" else "Adam") + "(fused)"
    )
    ref_cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    ref = ref_cls(ref_net.parameters(), lr=1e-2, foreach=False)  # the plain for-loop kernel
    x, y = torch.randn(16, 6), torch.randn(16, 2)
    for _ in range(6):
        for m, o in ((net, opt), (ref_net, ref)):
            o.zero_grad(set_to_none=True)
            nn.functional.mse_loss(m(x), y).backward()
            o.step()
    for p, q in zip(net.parameters(), ref_net.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_fit_with_and_without_fast_path_gives_the_same_losses(fresh_state):
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,))
    losses = {}
    for fast in (True, False):
        torch.manual_seed(4)
        model = _small_cnn().compile(
            loss="sparse_categorical_crossentropy", device="cpu", fast_path=fast
        )
        h = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
        assert model.runtime_choices["optimizer"] == ("Adam(fused)" if fast else "Adam(foreach)")
        losses[fast] = h.history["loss"]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)


# --------------------------------------------------------------------------- host syncs


def _count_cnnkit_syncs(monkeypatch) -> dict[str, int]:
    """Patch Tensor.item/tolist/__bool__/__float__ to count calls made from cnnkit code.

    The losses' own target validation (``cnnkit/losses``: label range checks, one
    ``aminmax`` and one ``bool`` per call) is not counted: it belongs to the loss
    functions' ``validate=True`` contract, not to the training loop.
    """
    counts = {"n": 0}
    root = os.path.dirname(cnnkit.__file__)
    losses = os.path.join(root, "losses")
    for attr in ("item", "tolist", "__bool__", "__float__"):
        original = getattr(torch.Tensor, attr)

        def wrapper(self, *a, _orig=original, **k):
            where = sys._getframe(1).f_code.co_filename
            if where.startswith(root) and not where.startswith(losses):
                counts["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, attr, wrapper)
    return counts


@pytest.mark.parametrize("verbose", [0, 1])
def test_no_host_sync_per_step(monkeypatch, verbose, capsys):
    """The number of cnnkit-side .item()-like calls does not grow with the number of steps
    (the progress bar reads the loss only when it redraws, every 0.25 s at most)."""
    model = _small_cnn().compile(
        loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu"
    )
    model.fit(torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)), verbose=0)  # build
    from cnnkit.train.progress import ProgressBar

    defaults = ProgressBar.__init__.__defaults__  # (verbose, stream, interval, width)
    assert defaults[2] == 0.25
    # redraw only at the first and last step, however slow this shared machine is
    monkeypatch.setattr(ProgressBar.__init__, "__defaults__", (*defaults[:2], 1e9, defaults[3]))
    counts = _count_cnnkit_syncs(monkeypatch)
    per_run = []
    for n in (16, 128):  # 2 vs 16 steps
        counts["n"] = 0
        x, y = torch.randn(n, 1, 8, 8), torch.randint(0, 3, (n,))
        model.fit(x, y, batch_size=8, epochs=1, verbose=verbose)
        model.evaluate(x, y, batch_size=8)
        per_run.append(counts["n"])
    assert per_run[0] == per_run[1], per_run
    capsys.readouterr()


def test_in_memory_data_never_builds_a_dataloader(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("DataLoader built for in-memory tensors")

    monkeypatch.setattr(torch.utils.data.DataLoader, "__init__", refuse)
    model = _small_cnn().compile(loss="sparse_categorical_crossentropy", device="cpu")
    model.fit(np.random.rand(16, 1, 8, 8), np.arange(16) % 3, batch_size=4, verbose=0)
    assert model.predict(np.random.rand(5, 1, 8, 8)).shape == (5, 3)


# --------------------------------------------------------------------------- choices + parity


def test_runtime_choices_are_logged_and_exposed(caplog):
    model = _small_cnn().compile(loss="sparse_categorical_crossentropy", device="cpu")
    with caplog.at_level(logging.INFO, logger="cnnkit.train"):
        model.fit(torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)), verbose=0)
    choices = model.runtime_choices
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert choices["precision"] == expected
    # 'auto' stores a 2D conv net channels-last on CPU (oneDNN's preferred layout)
    assert choices["memory_format"] == "channels_last"
    kernel = next(p for p in model.parameters() if p.dim() == 4)  # the Conv2D's (4, 1, 3, 3)
    assert kernel.is_contiguous(memory_format=torch.channels_last)
    assert choices["fast_path"]["enabled"] is True
    assert f"precision {expected}" in caplog.text and "fast path on" in caplog.text


@pytest.fixture(scope="module")
def digits32():
    return shuffled_digits(32)


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_lenet5_digits_accuracy_parity(digits32, precision):
    """LeNet-5 on scikit-learn's digits reaches the same threshold in 'auto' as in fp32
    ('auto' is bf16 autocast on AMX/AVX512-BF16 CPUs and CUDA, fp32 elsewhere)."""
    x, y = digits32
    cnnkit.seed_everything(0)
    model = cnnkit.Model(create("lenet5"))
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        device="cpu",
        precision=precision,
    )
    model.fit(x[:1000], y[:1000], batch_size=32, epochs=4, verbose=0)
    assert model.runtime_choices["fast_path"]["enabled"] and fastpath.flush_denormal_enabled()
    assert model.evaluate(x[1400:], y[1400:])["accuracy"] >= 0.9


def test_datasets_get_pinned_memory_and_workers_on_request():
    from torch.utils.data import TensorDataset

    from cnnkit.train.data import Loader, make_source

    x, y = torch.randn(20, 2), torch.arange(20)
    src = make_source(TensorDataset(x, y), pin_memory=True)
    assert isinstance(src, Loader) and src._loader(4, False).pin_memory is True
    assert make_source(TensorDataset(x, y))._loader(4, False).pin_memory is False
    train, val = src.split(0.25)
    assert train.pin_memory and val.pin_memory
    # a worker process yields exactly the batches of the in-process loader
    plain = Loader(TensorDataset(x, y))
    worker = Loader(TensorDataset(x, y), num_workers=1)
    gen = [torch.Generator().manual_seed(5) for _ in range(2)]
    a = list(plain.batches(6, True, gen[0]))
    b = list(worker.batches(6, True, gen[1]))
    assert len(a) == len(b) == 4
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
