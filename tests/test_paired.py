"""The paired modes (``gram_diag``, ``gram_pairs``) and backend calls that Ctrl-C stops within a tile.

Paired kernels must be the Gram's own entries, bitwise (the analyses mix them with Gram entries in
distances like K(x, x) + K(y, y) - 2 K(x, y), where a last-bit difference becomes a wrong distance near 0),
and agree with the float64 reference. Random architectures check the same on every drawn net
(tests/test_random_nets.py).
"""
import _thread
import threading
import time

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import _core
from ntkfast.kernel.interruptible import call
from conftest import available_devices, rel_err

NETS = {
    "gap": (nf.presets.cntk(3, "gap"), (6, 7, 2)),
    "myrtle_like": (nf.serial(nf.Conv(3), nf.ReLU(), nf.AvgPool(2), nf.Conv(3, b_std=0.2), nf.Erf(),
                              nf.Flatten(), nf.Dense()), (8, 8, 1)),
    "residual": (nf.serial(nf.Conv(3), nf.FanOut(2), nf.parallel([nf.ReLU(), nf.Conv(3)], nf.Identity()),
                           nf.FanInSum(), nf.ReLU(), nf.GlobalAvgPool(), nf.Dense()), (6, 6, 2)),
    "fc": (nf.serial(nf.Dense(1.3, 0.2), nf.Gelu(), nf.Dense(), nf.ReLU(), nf.Dense()), (9,)),
}


@pytest.mark.parametrize("device", available_devices())
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_paired_modes_are_the_gram_entries(name, dtype, device):
    arch, shape = NETS[name]
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((7,) + shape), rng.standard_normal((7,) + shape)
    d = nf.gram_diag(X, arch=arch, dtype=dtype, device=device)
    p = nf.gram_pairs(X, Y, arch=arch, dtype=dtype, device=device)
    g, gxy = nf.gram(X, arch=arch, dtype=dtype, device=device), nf.gram(X, Y, arch=arch, dtype=dtype, device=device)
    ref = nf.reference.gram(np.concatenate([X, Y]), arch=arch)
    for j in range(2):
        assert d[j].shape == (7,) and d[j].dtype == np.dtype(dtype)
        assert np.array_equal(d[j], np.diag(g[j])) and np.array_equal(p[j], np.diag(gxy[j]))
        tol = 1e-10 if dtype == "float64" else 1e-5
        assert rel_err(d[j], np.diag(ref[j])[:7]) <= tol
        assert rel_err(p[j], np.diag(ref[j][:7, 7:])) <= tol


def test_kind_threads_layout_and_one_pair():
    arch = nf.presets.cntk(2, "gap")
    X = np.random.default_rng(1).standard_normal((5, 5, 6, 3))
    both = nf.gram_diag(X, arch=arch, dtype="float64")
    assert np.array_equal(nf.gram_diag(X, arch=arch, kind="ntk", dtype="float64", threads=1), both.ntk)
    nchw = np.moveaxis(X, -1, 1)
    assert np.array_equal(nf.gram_diag(nchw, arch=arch, kind="nngp", dtype="float64", layout="NCHW"), both.nngp)
    one = nf.gram_pairs(X[:1], X[1:2], arch=arch, dtype="float64")
    assert np.array_equal(one.ntk, nf.gram(X[:1], X[1:2], arch=arch, dtype="float64").ntk[0])


def test_chunks_agree_with_one_call(monkeypatch):
    import ntkfast.kernel.paired as P
    arch = nf.presets.cntk(2, "flatten")
    X, Y = np.random.default_rng(2).standard_normal((2, 11, 4, 4, 1))
    whole = nf.gram_pairs(X, Y, arch=arch)
    monkeypatch.setitem(P.CHUNK, "cpu", 3)
    parts = nf.gram_pairs(X, Y, arch=arch, device="cpu")
    assert np.array_equal(whole.nngp, parts.nngp) and np.array_equal(whole.ntk, parts.ntk)


def test_rescaled_rows_of_a_homogeneous_net_in_float32():
    # rows far outside float32's safe range: computed rescaled by powers of two and scaled back exactly
    arch = nf.serial(nf.Conv(3, b_std=None), nf.ReLU(), nf.GlobalAvgPool(), nf.Dense(b_std=None))
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((2, 4, 5, 5, 1))
    X[0] *= 1e15
    Y[1] *= 1e-15
    ref = nf.reference.gram(np.concatenate([X, Y]), arch=arch)
    d, p = nf.gram_diag(X, arch=arch), nf.gram_pairs(X, Y, arch=arch)
    for j in range(2):
        assert np.allclose(d[j], np.diag(ref[j])[:4], rtol=1e-5, atol=0)
        assert np.allclose(p[j], np.diag(ref[j][:4, 4:]), rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="X has magnitudes up to"):
        nf.gram_diag(X, arch=nf.serial(nf.Conv(3, b_std=0.1), nf.ReLU(), nf.GlobalAvgPool(), nf.Dense()))


def test_bad_inputs_are_refused_before_any_work():
    arch = nf.presets.cntk(2, "gap")
    X = np.zeros((3, 5, 5, 1))
    with pytest.raises(ValueError, match=r"X and Y must have as many rows .* got 3 and 2"):
        nf.gram_pairs(X, X[:2], arch=arch)
    with pytest.raises(TypeError, match="Y must be an array of the same shape as X; got None"):
        nf.gram_pairs(X, None, arch=arch)
    with pytest.raises(ValueError, match="X and Y must agree in every axis but the first"):
        nf.gram_pairs(X, np.zeros((3, 6, 5, 1)), arch=arch)
    with pytest.raises(ValueError, match="X must be finite"):
        nf.gram_diag(np.full((2, 5, 5, 1), np.nan), arch=arch)
    with pytest.raises(ValueError, match="kind must be"):
        nf.gram_diag(X, arch=arch, kind="cov")
    with pytest.raises(ValueError, match="device must be"):
        nf.gram_diag(X, arch=arch, device="gpu")
    with pytest.raises(ValueError, match="threads must be"):
        nf.gram_diag(X, arch=arch, threads=0)


def test_progress_bar_counts_pairs(capsys):
    arch = nf.presets.cntk(2, "gap")
    X = np.random.default_rng(5).standard_normal((9, 5, 5, 1))
    nf.gram_pairs(X, X[::-1], arch=arch, progress="pairs of digits")
    err = capsys.readouterr().err
    assert "pairs of digits" in err and "9/9" in err


# ---- Ctrl-C within a tile ---------------------------------------------------------------------------------

SLOW = nf.presets.myrtle(5)         # ~ms per pair on 32x32x3: a 200x200 tile runs for many seconds


def _interrupt_after(seconds):
    t = threading.Timer(seconds, _thread.interrupt_main)
    t.start()
    return t


def test_ctrl_c_stops_a_tile_within_moments(tmp_path, monkeypatch):
    import ntkfast.kernel.tiled as T
    X = np.random.default_rng(6).standard_normal((200, 32, 32, 3)).astype(np.float32)
    out = str(tmp_path / "g.zarr")
    real, started = T.call, []

    def armed(*args, **kwargs):        # the interrupt is timed from the first backend call, not from the checks
        if not started:
            started.append(time.perf_counter())
            _interrupt_after(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "call", armed)
    with pytest.raises(KeyboardInterrupt) as e:
        nf.gram(X, arch=SLOW, device="cpu", out=out, tile=200, threads=1)
    stopped = time.perf_counter() - started[0] - 0.5
    # one 200x200 tile of myrtle5 on one thread takes minutes; stopping within the poll slice and a few pairs
    assert stopped < 4.0, f"Ctrl-C took {stopped:.1f} s to stop the tile"
    assert "resumes" in "".join(getattr(e.value, "__notes__", []))
    assert threading.active_count() < 10   # the worker thread has ended (joined before raising)


def test_ctrl_c_in_paired_mode_and_in_a_plain_call():
    X = np.random.default_rng(7).standard_normal((400, 32, 32, 3)).astype(np.float32)
    _interrupt_after(0.4)
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        nf.gram_diag(X, arch=SLOW, device="cpu", threads=1)
    assert time.perf_counter() - t0 < 5.0


def test_call_returns_results_errors_and_progress():
    prog = nf.presets.cntk(2, "gap").plan((6, 6, 1)).program
    X = np.random.default_rng(8).standard_normal((30, 6, 6, 1))
    sx = _core.self_data(prog, X, "cpu", 1)
    seen = []
    res = call(_core.gram_tile, prog, X, X, sx, sx, True, True, True, "cpu", 1, progress=seen.append)
    direct = _core.gram_tile(prog, X, X, sx, sx, True, True, True, "cpu", 1)
    assert np.array_equal(res[1], direct[1])
    assert seen and all(a <= b for a, b in zip(seen, seen[1:]))
    with pytest.raises(ValueError):
        call(_core.gram_tile, prog, X, X[:, :5], sx, sx, False, True, True, "cpu", 1)
    # off the main thread the call is made directly (no KeyboardInterrupt can reach such a thread)
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("r", call(_core.self_data, prog, X, "cpu", 1)))
    th.start()
    th.join()
    assert np.array_equal(box["r"], sx)


def test_tile_progress_moves_inside_a_tile(monkeypatch, capsys):
    import ntkfast.progress as PG
    X = np.random.default_rng(9).standard_normal((60, 32, 32, 3)).astype(np.float32)
    ticks = []
    orig = PG.PairProgress.tile_progress

    def spy(self, n):
        ticks.append(n)
        return orig(self, n)

    monkeypatch.setattr(PG.PairProgress, "tile_progress", spy)
    nf.gram(X[:40], X[40:], arch=SLOW, device="cpu", tile=64, threads=1, progress=True)
    # one tile of 800 pairs: the bar moved while it ran, not only at its end
    assert any(0 < t < 800 for t in ticks), ticks[:10]
    assert "800/800" in capsys.readouterr().err


_CHILD = """
import signal, sys
import numpy as np, ntkfast as nf
import ntkfast.kernel.tiled as T
signal.signal(signal.SIGINT, signal.default_int_handler)   # even where the test runner ignores SIGINT
real = T.call
def announced(*args, **kwargs):     # says 'start' when the first backend call begins (after the checks)
    if not hasattr(announced, "said"):
        announced.said = print("start", flush=True)
    return real(*args, **kwargs)
T.call = announced
X = np.random.default_rng(0).standard_normal((300, 32, 32, 3)).astype(np.float32)
nf.gram(X, arch=nf.presets.myrtle(5), out=sys.argv[1], tile=256)
"""


def test_ctrl_c_then_exit_is_a_clean_keyboard_interrupt(tmp_path):
    """SIGINT to a process inside a tile: it exits by KeyboardInterrupt (status -SIGINT) with the resume note,
    promptly; never by an abort (a process leaving while a thread is still in the backend dies in C++)."""
    import signal
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "g.zarr")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(50):                       # an editable install may print its rebuild first
            line = p.stdout.readline()
            if not line or line.strip() == "start":
                break
        assert line.strip() == "start", p.stderr.read()[-800:]
        time.sleep(1.0)
        t0 = time.perf_counter()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
        stopped = time.perf_counter() - t0
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGINT, (p.returncode, err[-800:])
    assert "KeyboardInterrupt" in err and "resumes from them" in err and "terminate called" not in err
    assert stopped < 5.0
