"""The CUDA backend against the float64 reference and the CPU backend (marker ``gpu``, on every test here).

Skipped as a module when no GPU is usable (``ntkfast.config.cuda_usable()``); with NTKFAST_REQUIRE_GPU=1 a
missing GPU is a failure instead (the conftest's guard, and ``tests/test_gpu_required.py``).

Error norm: max |K - R| / max |R| (``rel_err``), R the float64 reference. Tolerances as in
test_backend_vs_reference: float64 1e-10 (the GPU and CPU recursions differ only in the order of the
float64 readout sums); float32 1e-5 (a few float32 roundings per layer on averaged entries; the sqrt(eps)
loss at nearly parallel patches is confined to isolated positions that the readout averages away, and the
Gram diagonal is exact because the d = 0 plane of a pair (x, x) reproduces the self recursion bitwise).
Beyond the tolerances, float32 results must equal the CPU backend's to the last bit but for the rare entry
whose float64 readout sum (added in another order by the warp) rounds to the neighbouring float32
(``test_float32_matches_cpu_to_the_bit``): every entry is computed with the CPU's arithmetic in its order.

The host-side orchestration and the kernel body are also tested without a GPU (tests/cuda_emulation); those
tests complement these and do not replace them.
"""
import os
import threading
import time

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import AvgPool, Conv, Dense, Flatten, GaussianPool, GlobalAvgPool, ReLU, serial
from ntkfast.config import cuda_usable
from conftest import rel_err
from test_backend_vs_reference import LAYER_NETS, PRESETS

pytestmark = pytest.mark.gpu

USABLE, REASON = cuda_usable()
REQUIRE = os.environ.get("NTKFAST_REQUIRE_GPU") == "1"

if not USABLE and not REQUIRE:
    pytest.skip(f"no usable GPU: {REASON}", allow_module_level=True)

TOL = {"float64": 1e-10, "float32": 1e-5}
DTYPES = ["float64", "float32"]


def _check_against(got, ref, cpu, dtype):
    for g, r, c in zip(got, ref, cpu):
        assert g.dtype == np.dtype(dtype)
        assert np.isfinite(g).all()
        scale = np.max(np.abs(r))
        assert np.max(np.abs(g - r)) / scale <= TOL[dtype]
        assert np.max(np.abs(g.astype(np.float64) - c)) / scale <= TOL[dtype]


def _three_way(arch, X, Y, dtype):
    ref = nf.reference.gram(X, Y, arch=arch)
    cpu = nf.gram(X, Y, arch=arch, dtype=dtype, device="cpu")
    got = nf.gram(X, Y, arch=arch, dtype=dtype, device="cuda")
    _check_against(got, ref, cpu, dtype)
    return got, ref, cpu


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(LAYER_NETS))
def test_layer_types(name, dtype):
    arch, shape = LAYER_NETS[name]
    rng = np.random.default_rng(abs(hash(name)) % 2 ** 32)
    X = rng.standard_normal((5,) + shape)
    got, _, _ = _three_way(arch, X, None, dtype)
    for K in got:
        assert np.array_equal(K, K.T)
    _three_way(arch, X[:3], X[3:] * 0.7 + 0.1, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets(name, dtype):
    make, shape, n = PRESETS[name]
    X = np.random.default_rng(7).standard_normal((n,) + shape)
    _three_way(make(), X, None, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["gap5", "flat5", "bietti_mairal"])
def test_presets_mnist_size(name, dtype):
    """Full-size 28x28 inputs (the shared-memory planes at their production size), images in [0, 1]."""
    arch = {"gap5": nf.presets.cntk(5, "gap"), "flat5": nf.presets.cntk(5, "flatten"),
            "bietti_mairal": nf.presets.bietti_mairal()}[name]
    X = np.random.default_rng(3).random((4, 28, 28, 1))
    _three_way(arch, X, None, dtype)


def test_myrtle5_cifar_size():
    X = np.random.default_rng(4).standard_normal((3, 32, 32, 3))
    _three_way(nf.presets.myrtle(5), X, None, "float32")


SYM_NETS = {
    "gap3": (nf.presets.cntk(3, "gap"), (9, 9, 2)),
    "flat3": (nf.presets.cntk(3, "flatten"), (9, 9, 2)),
    "pool": (serial(Conv(3), ReLU(), AvgPool(2), Conv(3), ReLU(), GlobalAvgPool(), Dense()), (10, 8, 1)),
    "gauss": (serial(Conv(3), ReLU(), GaussianPool(2), Conv(3), ReLU(), Flatten(), Dense()), (12, 12, 1)),
    "circular": (serial(Conv(3, padding="CIRCULAR"), ReLU(), AvgPool(2), Conv(3, padding="CIRCULAR"), ReLU(),
                        GlobalAvgPool(), Dense()), (8, 8, 1)),
    "fc3": (nf.presets.fc(3), (20,)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(SYM_NETS))
def test_symmetric_finite_psd(name, dtype):
    arch, shape = SYM_NETS[name]
    X = np.random.default_rng(11).standard_normal((40,) + shape)
    X[7] = X[3]  # duplicate images: rank-deficient Gram, the hardest case for PSD and for rho = 1
    k = nf.gram(X, arch=arch, dtype=dtype, device="cuda")
    for K in k:
        assert np.array_equal(K, K.T)
        assert np.isfinite(K).all()
        w = np.linalg.eigvalsh(K.astype(np.float64))
        assert w.min() >= -1e-6 * np.max(np.diag(K))
        assert rel_err(K[7], K[3]) <= 1e-6  # the two orientations of a pair agree to rounding


@pytest.mark.parametrize("name", ["gap3", "pool", "gauss"])
def test_diagonal_from_self_recursion(name):
    """float32 Gram diagonal to about float32 rounding: a d = 0 plane of (x, x) that differed from the self
    recursion by one ulp would move the NTK by ~sqrt(eps) ~ 3e-4 (docs/design.md, section 3)."""
    arch, shape = SYM_NETS[name]
    X = np.random.default_rng(12).standard_normal((6,) + shape)
    ref = nf.reference.gram(X, arch=arch)
    got = nf.gram(X, arch=arch, dtype="float32", device="cuda")
    for g, r in zip(got, ref):
        d_ref = np.diag(r)
        assert np.max(np.abs(np.diag(g) - d_ref) / d_ref) <= 2e-6


@pytest.mark.parametrize("dtype", DTYPES)
def test_self_data_matches_cpu(dtype):
    from ntkfast import _core
    from ntkfast.kernel.tiled import compile_program
    for name in ("gauss", "circular", "pool"):
        arch, shape = SYM_NETS[name]
        X = np.ascontiguousarray(np.random.default_rng(13).standard_normal((7,) + shape), dtype=dtype)
        prog = compile_program(arch, shape)
        a = _core.self_data(prog, X, "cuda", 0)
        b = _core.self_data(prog, X, "cpu", 0)
        assert a.shape == b.shape and a.dtype == b.dtype
        assert rel_err(a, b) <= (1e-13 if dtype == "float64" else 1e-6)


@pytest.mark.parametrize("tile", [1, 5, 8])
def test_ragged_tiles(tile):
    """Tiles that do not divide N or M: bitwise equal to one tile (each pair's arithmetic is fixed)."""
    arch, shape = SYM_NETS["gauss"]
    rng = np.random.default_rng(14)
    X, Y = rng.standard_normal((13,) + shape), rng.standard_normal((7,) + shape)
    for Yv in (None, Y):
        full = nf.gram(X, Yv, arch=arch, device="cuda")
        tiled = nf.gram(X, Yv, arch=arch, device="cuda", tile=tile)
        cpu = nf.gram(X, Yv, arch=arch, device="cpu", tile=tile)
        for a, b, c in zip(full, tiled, cpu):
            assert np.array_equal(a, b)
            assert rel_err(a, c) <= 1e-5


def test_many_bands_and_kinds():
    """A tile of more pairs than one streamed band (several bands, copies overlapping compute), and the
    single-kernel paths (kind='nngp' / 'ntk' allocate and copy one output only)."""
    arch = nf.presets.cntk(2, "flatten")
    X = np.random.default_rng(15).standard_normal((700, 6, 6, 1))
    k = nf.gram(X, arch=arch, device="cuda", tile=700)
    rows = np.r_[0:5, 340:345, 695:700]
    cpu = nf.gram(X[rows], X, arch=arch, device="cpu")
    for K, C in zip(k, cpu):
        assert np.array_equal(K, K.T)
        assert rel_err(K[rows], C) <= 1e-5
    both = nf.gram(X[:300], X[:250], arch=arch, device="cuda")
    for kind in ("nngp", "ntk"):
        one = nf.gram(X[:300], X[:250], arch=arch, device="cuda", kind=kind)
        assert np.array_equal(one, getattr(both, kind))


def test_deterministic():
    arch, shape = SYM_NETS["pool"]
    X = np.random.default_rng(16).standard_normal((20,) + shape)
    a = nf.gram(X, arch=arch, device="cuda")
    b = nf.gram(X, arch=arch, device="cuda")
    for u, v in zip(a, b):
        assert np.array_equal(u, v)


def test_plane_too_large_for_shared_memory_is_an_error():
    """A plane that cannot fit in one block's shared memory raises (no crash, no silent garbage)."""
    arch = serial(Conv(3), ReLU(), Flatten(), Dense())
    X = np.random.default_rng(17).standard_normal((1, 200, 200, 1))
    with pytest.raises(RuntimeError, match="shared memory"):
        nf.gram(X, arch=arch, device="cuda", dtype="float64")


def test_cupy_inputs():
    cp = pytest.importorskip("cupy")
    arch, shape = SYM_NETS["gap3"]
    X = np.random.default_rng(18).standard_normal((6,) + shape)
    Y = X[:4] * 0.5
    want = nf.gram(X, Y, arch=arch, device="cuda")
    got = nf.gram(cp.asarray(X), cp.asarray(Y), arch=arch, device="cuda")
    for g, w in zip(got, want):
        assert np.array_equal(np.asarray(g if isinstance(g, np.ndarray) else cp.asnumpy(g)), w)


def test_cupy_output_on_request():
    cp = pytest.importorskip("cupy")
    arch, shape = SYM_NETS["gap3"]
    X = np.random.default_rng(19).standard_normal((5,) + shape)
    got = nf.gram(cp.asarray(X), arch=arch, device="cuda", output="cupy")
    want = nf.gram(X, arch=arch, device="cuda")
    for g, w in zip(got, want):
        assert isinstance(g, cp.ndarray)
        assert np.array_equal(cp.asnumpy(g), w)


def _ulps(a, b):
    """|a - b| in units of the float32 spacing at the larger magnitude, elementwise."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return np.abs(a.astype(np.float64) - b) / np.spacing(np.maximum(np.abs(a), np.abs(b))).astype(np.float64)


@pytest.mark.parametrize("name", sorted(LAYER_NETS) + ["gauss", "circular"])
def test_float32_matches_cpu_to_the_bit(name):
    arch, shape = LAYER_NETS[name] if name in LAYER_NETS else SYM_NETS[name]
    X = np.random.default_rng(20).standard_normal((12,) + shape)
    for Yv in (None, X[:5] * 0.5 + 0.1):
        got = nf.gram(X, Yv, arch=arch, device="cuda", dtype="float32")
        cpu = nf.gram(X, Yv, arch=arch, device="cpu", dtype="float32")
        for g, c in zip(got, cpu):
            u = _ulps(g, c)
            assert u.max() <= 1.0 and np.mean(u == 0) >= 0.98, (u.max(), np.mean(u == 0))


def test_status_per_device_and_device_index():
    from ntkfast import _core
    from ntkfast.kernel.tiled import compile_program
    st = _core.cuda_status()
    assert st["device_count"] >= 1 and len(st["device_usable"]) == st["device_count"]
    assert all(st["device_usable"]), st["device_reason"]  # a build for this machine's architecture
    arch, shape = SYM_NETS["pool"]
    X = np.ascontiguousarray(np.random.default_rng(21).standard_normal((9,) + shape), dtype=np.float32)
    prog = compile_program(arch, shape)
    sx = _core.self_data(prog, X, "cuda", 0)
    want = nf.gram(X, arch=arch, device="cuda")
    last = st["device_count"] - 1
    s = _core.GramSession(prog, X, None, sx, None, f"cuda:{last}", 0)
    a, b = s.tile(0, 9, 0, 9)
    assert np.array_equal(a, want.nngp) and np.array_equal(b, want.ntk)
    with pytest.raises(ValueError, match="out of range"):
        _core.GramSession(prog, X, None, sx, None, f"cuda:{st['device_count']}", 0)


def test_session_tiles_equal_one_tile():
    """Program, inputs and self data uploaded once; tiles streamed against them equal the one-shot tile."""
    from ntkfast import _core
    from ntkfast.kernel.tiled import compile_program
    arch, shape = SYM_NETS["circular"]
    X = np.ascontiguousarray(np.random.default_rng(22).standard_normal((11,) + shape), dtype=np.float32)
    prog = compile_program(arch, shape)
    sx = _core.self_data(prog, X, "cuda", 0)
    full = _core.gram_tile(prog, X, X, sx, sx, True, True, True, "cuda", 0)
    s = _core.GramSession(prog, X, None, sx, None, "cuda", 0)
    for (i0, i1), (j0, j1) in [((0, 4), (0, 4)), ((0, 4), (4, 11)), ((4, 11), (4, 11))]:
        a, b = s.tile(i0, i1, j0, j1)
        assert np.array_equal(a, full[0][i0:i1, j0:j1]) and np.array_equal(b, full[1][i0:i1, j0:j1])


def test_progress_and_cancel():
    """Progress counts finished pairs band by band; a cancel stops at the next band with Cancelled."""
    from ntkfast import _core
    from ntkfast.kernel.tiled import compile_program
    arch = nf.presets.cntk(3, "gap")
    # About 1.1M pairs: several bands of (16 x resident warps) pairs even on the largest GPUs.
    X = np.ascontiguousarray(np.random.default_rng(23).random((1500, 12, 12, 1)), dtype=np.float32)
    prog = compile_program(arch, X.shape[1:])
    sx = _core.self_data(prog, X, "cuda", 0)
    ctl = _core.RunControl()
    _core.gram_tile(prog, X[:100], X[:100], sx[:100], sx[:100], True, True, True, "cuda", 0, ctl)
    assert ctl.progress == 100 * 101 // 2
    ctl = _core.RunControl()

    def cancel_after_first_band():
        t0 = time.time()
        while ctl.progress == 0 and time.time() - t0 < 60:
            time.sleep(0.001)
        ctl.cancel()
    th = threading.Thread(target=cancel_after_first_band)
    th.start()
    with pytest.raises(_core.Cancelled):
        _core.gram_tile(prog, X, X, sx, sx, True, True, True, "cuda", 0, ctl)
    th.join()
    assert 0 < ctl.progress < 1500 * 1501 // 2
