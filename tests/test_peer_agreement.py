"""Agreement with neural-tangents' analytic ``stax`` kernels, when it is importable (it is not a dependency;
../shared/peers/nt_shim.py imports it on current JAX). Skipped otherwise."""
import os
import sys

import numpy as np
import pytest

import ntkfast as nf
from conftest import rel_err

PEERS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "peers")


@pytest.fixture(scope="module")
def stax():
    pytest.importorskip("jax")
    if not os.path.isfile(os.path.join(PEERS, "nt_shim.py")):
        pytest.skip("no neural-tangents import shim at ../shared/peers")
    sys.path.insert(0, PEERS)
    try:
        import nt_shim  # noqa: F401
        from neural_tangents import stax as s
    except Exception as e:  # not installed, or an incompatible JAX
        pytest.skip(f"neural-tangents not importable: {e!r}")
    import jax
    jax.config.update("jax_enable_x64", True)
    return s


def test_matches_stax(stax):
    C = lambda: stax.Conv(1, (3, 3), padding="SAME", W_std=2 ** 0.5)  # noqa: E731
    nt = stax.serial(C(), stax.Relu(), stax.AvgPool((2, 2), strides=(2, 2)), C(), stax.Relu(), stax.GlobalAvgPool(),
                     stax.Dense(1))[2]
    ours = nf.serial(nf.Conv(3), nf.ReLU(), nf.AvgPool(2), nf.Conv(3), nf.ReLU(), nf.GlobalAvgPool(), nf.Dense())
    X = np.random.default_rng(0).standard_normal((4, 8, 8, 2))
    k = nt(X, None, get=("nngp", "ntk"))
    got = nf.gram(X, arch=ours, dtype="float64", device="cpu")
    assert rel_err(got.nngp, np.asarray(k.nngp)) <= 1e-12
    assert rel_err(got.ntk, np.asarray(k.ntk)) <= 1e-12


def _nt_conv(stax, k, padding, W_std=2 ** 0.5, b_std=None):
    k = (k, k) if isinstance(k, int) else k
    return stax.Conv(1, k, padding=padding, W_std=W_std, b_std=b_std)


@pytest.mark.parametrize("spec", [
    # (kernel, padding) per conv; every conv is followed by a ReLU; then an optional pool and the readout
    ([(2, "SAME"), (1, "CIRCULAR")], None, "flatten"),
    ([(3, "CIRCULAR"), (3, "VALID")], None, "gap"),
    ([(2, "CIRCULAR"), (4, "CIRCULAR"), ((2, 3), "SAME")], None, "gap"),
    ([(3, "CIRCULAR")], ("avg", 2, 1, "SAME"), "flatten"),
    ([(3, "VALID"), (2, "CIRCULAR")], ("avg", 3, 2, "VALID"), "gap"),
])
def test_mixed_paddings_match_stax(stax, spec):
    """Per-layer padding (issue 11): mixed SAME/VALID/CIRCULAR convolutions, even and wide windows, pools."""
    convs, pool, readout = spec
    nt_layers, ours = [], []
    for k, pad in convs:
        nt_layers += [_nt_conv(stax, k, pad), stax.Relu()]
        ours += [nf.Conv(k, padding=pad), nf.ReLU()]
    if pool is not None:
        _, p, s, pad = pool
        nt_layers.append(stax.AvgPool((p, p), strides=(s, s), padding=pad))
        ours.append(nf.AvgPool(p, stride=s, padding=pad))
    nt_layers += [stax.GlobalAvgPool() if readout == "gap" else stax.Flatten(), stax.Dense(1)]
    ours += [nf.GlobalAvgPool() if readout == "gap" else nf.Flatten(), nf.Dense()]
    nt = stax.serial(*nt_layers)[2]
    X = np.random.default_rng(1).standard_normal((3, 7, 6, 2))
    k = nt(X, None, get=("nngp", "ntk"))
    got = nf.gram(X, arch=nf.serial(*ours), dtype="float64", device="cpu")
    assert rel_err(got.nngp, np.asarray(k.nngp)) <= 1e-12
    # stax computes a pair (x, x) like any pair, so where correlations are +-1 (here after a 1x1 conv, on the
    # diagonal) its NTK carries the sqrt(eps) angle error that our self recursion avoids (docs/design.md)
    bound = nf.reference.angle_error_bound(X, arch=nf.serial(*ours), delta=16 * 2.0 ** -53).ntk
    assert np.all(np.abs(got.ntk - np.asarray(k.ntk)) <= 1e-12 * np.abs(got.ntk).max() + bound)
