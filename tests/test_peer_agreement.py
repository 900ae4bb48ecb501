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
