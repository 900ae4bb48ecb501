"""Compiled backends vs the float64 reference, on every layer type and preset.

Error norm: max_ij |K_ij - R_ij| / max_ij |R_ij| (``rel_err``). float64 must agree to 1e-10 (the
recursions differ only in summation order and the atan polynomial, 2e-16); float32 to 1e-5: each layer
adds a few float32 roundings (6e-8 each) to entries that are averages, and pairs of nearly parallel
patches lose half their digits only at isolated positions that the readout averages away.
"""
import numpy as np
import pytest

import ntkfast as nf
from ntkfast import AvgPool, Conv, Dense, Flatten, GaussianPool, GlobalAvgPool, ReLU, serial
from conftest import available_devices, rel_err

TOL = {"float64": 1e-10, "float32": 1e-5}

LAYER_NETS = {
    "conv_same_gap": (serial(Conv(3), ReLU(), Conv(3), ReLU(), GlobalAvgPool(), Dense()), (7, 6, 2)),
    "conv_same_flatten": (serial(Conv(3), ReLU(), Conv(3), ReLU(), Flatten(), Dense()), (7, 6, 2)),
    "conv_valid_bias": (serial(Conv(3, b_std=0.3, padding="VALID"), ReLU(), Conv((2, 3), W_std=1.3), ReLU(),
                               GlobalAvgPool(), Dense(2.0, 0.5)), (9, 8, 3)),
    "conv_even_kernel": (serial(Conv(2), ReLU(), Conv(4), ReLU(), GlobalAvgPool(), Dense()), (7, 7, 1)),
    "conv_circular": (serial(Conv(3, padding="CIRCULAR"), ReLU(), Conv(2, padding="CIRCULAR"), ReLU(),
                             AvgPool(2), Conv(3, padding="CIRCULAR"), ReLU(), GlobalAvgPool(), Dense()), (6, 8, 2)),
    "circular_flatten": (serial(Conv(3, padding="CIRCULAR"), ReLU(), Flatten(), Dense()), (5, 6, 1)),
    "avgpool_valid": (serial(Conv(3), ReLU(), AvgPool(2), Conv(3), ReLU(), Flatten(), Dense()), (8, 9, 1)),
    "avgpool_same_overlap": (serial(Conv(3), ReLU(), AvgPool(3, stride=2, padding="SAME"), Conv(3), ReLU(),
                                    GlobalAvgPool(), Dense()), (9, 8, 2)),
    "gaussian_pool": (serial(Conv(3), ReLU(), GaussianPool(2), Conv(3), ReLU(), Flatten(), Dense()), (10, 10, 1)),
    "gaussian_sigma": (serial(Conv(2), GaussianPool(2, sigma=0.7), ReLU(), Conv(3, padding="VALID"), ReLU(),
                              Flatten(), Dense(), ReLU(), Dense()), (9, 9, 1)),
    "mixed_paddings": (serial(Conv(3, padding="CIRCULAR"), ReLU(), Conv(2, padding="SAME"), ReLU(),
                              Conv((2, 3), padding="VALID"), ReLU(), Conv(3, padding="CIRCULAR"), ReLU(),
                              GlobalAvgPool(), Dense()), (7, 8, 2)),
    "circular_pools": (serial(Conv(3, padding="CIRCULAR"), ReLU(), AvgPool(3, stride=2, padding="SAME"),
                              Conv(2, padding="CIRCULAR"), ReLU(), GaussianPool(1), Conv(3, padding="CIRCULAR"),
                              ReLU(), Flatten(), Dense()), (9, 7, 1)),
    "scalar_head": (serial(Conv(3), ReLU(), GlobalAvgPool(), Dense(1.5, 0.2), ReLU(), Dense(2 ** 0.5), ReLU(),
                           Dense()), (6, 6, 2)),
    "readout_only": (serial(GlobalAvgPool(), Dense()), (4, 5, 3)),
    "fc_bias": (serial(Dense(1.2, 0.4), ReLU(), Dense(2 ** 0.5, 0.1), ReLU(), Dense()), (11,)),
}


def _compare(arch, X, Y, dtype, device):
    ref = nf.reference.gram(X, Y, arch=arch)
    got = nf.gram(X, Y, arch=arch, dtype=dtype, device=device)
    for g, r in zip(got, ref):
        assert g.dtype == np.dtype(dtype)
        assert rel_err(g, r) <= TOL[dtype], (rel_err(g, r), dtype)
    return got, ref


@pytest.mark.parametrize("device", available_devices())
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(LAYER_NETS))
def test_layer_types(name, dtype, device):
    arch, shape = LAYER_NETS[name]
    rng = np.random.default_rng(abs(hash(name)) % 2 ** 32)
    X = rng.standard_normal((5,) + shape)
    _compare(arch, X, None, dtype, device)               # symmetric path (upper triangle, mirrored)
    _compare(arch, X[:3], X[3:] * 0.7 + 0.1, dtype, device)  # rectangular path


PRESETS = {
    "cntk1_gap": (lambda: nf.presets.cntk(1, "gap"), (8, 8, 1), 4),
    "cntk3_flatten": (lambda: nf.presets.cntk(3, "flatten"), (8, 8, 3), 4),
    "gap5": (lambda: nf.presets.cntk(5, "gap"), (10, 10, 1), 3),
    "myrtle5": (lambda: nf.presets.myrtle(5), (32, 32, 3), 2),
    "myrtle7": (lambda: nf.presets.myrtle(7), (32, 32, 3), 2),
    "myrtle10": (lambda: nf.presets.myrtle(10), (32, 32, 1), 2),
    "bietti_mairal": (lambda: nf.presets.bietti_mairal(), (28, 28, 1), 3),
    "fc1": (lambda: nf.presets.fc(1), (12,), 6),
    "fc3": (lambda: nf.presets.fc(3), (12,), 6),
}


@pytest.mark.parametrize("device", available_devices())
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets(name, dtype, device):
    make, shape, n = PRESETS[name]
    X = np.random.default_rng(7).standard_normal((n,) + shape)
    _compare(make(), X, None, dtype, device)


@pytest.mark.parametrize("device", available_devices())
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mnist_crops(mnist, dtype, device):
    images, _ = mnist
    X = images[[0, 1, 2, 3]]
    _compare(nf.presets.bietti_mairal(), X, None, dtype, device)
    crops = X[:, 6:20, 7:19, :]  # 14x12 crops keep the literal reference quick
    for arch in (nf.presets.cntk(3, "gap"), nf.presets.cntk(4, "flatten")):
        _compare(arch, crops, None, dtype, device)


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_fc_matches_closed_form(depth):
    rng = np.random.default_rng(depth)
    X, Y = rng.standard_normal((7, 9)), rng.standard_normal((5, 9)) * 3.0
    cf = nf.reference.fc_closed_form(X, Y, depth=depth)
    for dtype, tol in (("float64", 1e-12), ("float32", 1e-6)):
        got = nf.gram(X, Y, arch=nf.presets.fc(depth), dtype=dtype, device="cpu")
        assert rel_err(got.nngp, cf.nngp) <= tol and rel_err(got.ntk, cf.ntk) <= tol
    ref = nf.reference.gram(X, Y, arch=nf.presets.fc(depth))
    assert rel_err(ref.ntk, cf.ntk) <= 1e-13 and rel_err(ref.nngp, cf.nngp) <= 1e-13


def test_fc_closed_form_two_layer_formula():
    """fc(1) NTK against the textbook two-layer formula <x,y>/D (kappa0(rho) + ...) written out by hand."""
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(6), rng.standard_normal(6)
    D = 6
    n = np.linalg.norm(x) * np.linalg.norm(y) / D
    rho = x @ y / (np.linalg.norm(x) * np.linalg.norm(y))
    th = np.arccos(rho)
    k1 = (np.sin(th) + (np.pi - th) * rho) / np.pi
    k0 = (np.pi - th) / np.pi
    ntk = n * rho * k0 + n * k1
    got = nf.gram(x[None], y[None], arch=nf.presets.fc(1), dtype="float64", device="cpu")
    assert abs(got.ntk[0, 0] - ntk) <= 1e-14 * abs(ntk)
    assert abs(got.nngp[0, 0] - n * k1) <= 1e-14 * abs(n * k1)


@pytest.mark.parametrize("device", available_devices())
def test_float32_diagonal_is_exact_self_recursion(device):
    """On the Gram diagonal rho = 1 exactly (docs/design.md, section 3): float32 keeps full precision there, where
    a cross-pair rounding would cost sqrt(eps) ~ 3e-4 in the NTK."""
    X = np.random.default_rng(1).standard_normal((6, 9, 9, 1))
    arch = nf.presets.cntk(4, "gap")
    ref = nf.reference.gram(X, arch=arch)
    got = nf.gram(X, arch=arch, dtype="float32", device=device)
    for g, r in zip(got, ref):
        d = np.abs(np.diag(g) - np.diag(r)) / np.abs(np.diag(r))
        assert d.max() <= 2e-6


def test_one_pair_function_matches_gram():
    X = np.random.default_rng(2).standard_normal((2, 6, 6, 1))
    arch = nf.presets.cntk(2, "gap")
    s, t = nf.reference.pair(X[0], X[1], arch=arch)
    k = nf.gram(X[:1], X[1:], arch=arch, dtype="float64", device="cpu")
    assert abs(k.nngp[0, 0] - s) <= 1e-14 * abs(s) and abs(k.ntk[0, 0] - t) <= 1e-14 * abs(t)
