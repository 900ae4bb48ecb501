"""Properties of the compiled Gram (hypothesis): symmetry, PSD, homogeneity, tiling, permutations,
identical and zero images."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ntkfast as nf
from conftest import available_devices, rel_err

ARCHS = {
    "gap3": nf.presets.cntk(3, "gap"),
    "flat3": nf.presets.cntk(3, "flatten"),
    "pool": nf.serial(nf.Conv(3), nf.ReLU(), nf.AvgPool(2), nf.Conv(3), nf.ReLU(), nf.GlobalAvgPool(), nf.Dense()),
    "gauss": nf.serial(nf.Conv(3), nf.ReLU(), nf.GaussianPool(2), nf.Conv(3), nf.ReLU(), nf.Flatten(), nf.Dense()),
    "fc2": nf.presets.fc(2),
}
SHAPES = {"gap3": (6, 7, 2), "flat3": (6, 7, 2), "pool": (8, 6, 1), "gauss": (8, 8, 1), "fc2": (10,)}

arch_names = st.sampled_from(sorted(ARCHS))
seeds = st.integers(0, 2 ** 31 - 1)


def images(name, n, seed):
    return np.random.default_rng(seed).standard_normal((n,) + SHAPES[name])


@settings(deadline=None, max_examples=12)
@given(name=arch_names, n=st.integers(1, 9), seed=seeds, dtype=st.sampled_from(["float32", "float64"]))
def test_symmetric_and_psd(name, n, seed, dtype):
    X = images(name, n, seed)
    for device in available_devices():
        k = nf.gram(X, arch=ARCHS[name], dtype=dtype, device=device)
        for K in k:
            assert np.array_equal(K, K.T)  # mirrored, exactly symmetric
            assert np.isfinite(K).all()
            w = np.linalg.eigvalsh(K.astype(np.float64))
            assert w.min() >= -1e-6 * np.max(np.diag(K))


@settings(deadline=None, max_examples=12)
@given(name=arch_names, seed=seeds, a=st.floats(0.05, 20.0), b=st.floats(0.05, 20.0))
def test_homogeneity(name, seed, a, b):
    """Every b_std = 0: K(a x, b y) = a b K(x, y) for a, b > 0."""
    X, Y = images(name, 3, seed), images(name, 2, seed + 1)
    k = nf.gram(X, Y, arch=ARCHS[name], dtype="float64", device="cpu")
    ks = nf.gram(a * X, b * Y, arch=ARCHS[name], dtype="float64", device="cpu")
    for K, Ks in zip(k, ks):
        assert rel_err(Ks, a * b * K) <= 1e-12


@settings(deadline=None, max_examples=10)
@given(name=arch_names, n=st.integers(2, 11), m=st.integers(1, 7), tile=st.integers(1, 5), seed=seeds)
def test_tiled_equals_untiled(name, n, m, tile, seed):
    """Ragged tiles (tile need not divide N) give bitwise the same Gram: each pair's arithmetic is fixed."""
    X, Y = images(name, n, seed), images(name, m, seed + 1)
    for device in available_devices():
        for Yv in (None, Y):
            full = nf.gram(X, Yv, arch=ARCHS[name], device=device)
            tiled = nf.gram(X, Yv, arch=ARCHS[name], tile=tile, device=device)
            for a, b in zip(full, tiled):
                assert np.array_equal(a, b)


@settings(deadline=None, max_examples=10)
@given(name=arch_names, n=st.integers(2, 8), seed=seeds)
def test_permutation_equivariance(name, n, seed):
    X = images(name, n, seed)
    perm = np.random.default_rng(seed).permutation(n)
    k = nf.gram(X, arch=ARCHS[name], dtype="float64", device="cpu")
    kp = nf.gram(X[perm], arch=ARCHS[name], dtype="float64", device="cpu")
    for K, Kp in zip(k, kp):
        assert rel_err(Kp, K[np.ix_(perm, perm)]) <= 1e-13


@pytest.mark.parametrize("name", sorted(ARCHS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_identical_and_zero_images(name, dtype):
    X = images(name, 3, 5)
    X = np.concatenate([X, X[:1], np.zeros_like(X[:1]), 1e-30 * X[:1]])
    for device in available_devices():
        k = nf.gram(X, arch=ARCHS[name], dtype=dtype, device=device)
        for K in k:
            assert np.isfinite(K).all()
            # a duplicate image gives the same row (pairs may run in either orientation: rounding only)
            assert rel_err(K[3], K[0]) <= (1e-6 if dtype == "float32" else 1e-14)
            assert K[0, 0] == K[3, 3] == K[0, 3]  # (x, x) and its duplicate: the same self recursion
            assert np.all(K[4] == 0) and np.all(K[:, 4] == 0)  # zero image: zero kernel (b_std = 0)
        ref = nf.reference.gram(X, arch=ARCHS[name])
        for K, R in zip(k, ref):
            assert rel_err(K, R) <= (1e-5 if dtype == "float32" else 1e-10)
