"""ntkfast.predict against neural-tangents' ``predict.gradient_descent_mse_ensemble`` and
``predict.gp_inference``, when it is importable (not a dependency; ../shared/peers/nt_shim.py imports it on
current JAX). Skipped otherwise. ``bench/peer_predict.py`` runs the same comparison with the peer in its own
Python."""
import collections
import os
import sys

import numpy as np
import pytest

import ntkfast as nf
from ntkfast.predict import GradientFlow, gp_inference

PEERS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "peers")


@pytest.fixture(scope="module")
def nt():
    try:
        import jax  # noqa: F401
    except ImportError as e:                # absent, or present but broken: either way no peer here
        pytest.skip(f"jax not importable: {e!r}")
    if not os.path.isfile(os.path.join(PEERS, "nt_shim.py")):
        pytest.skip("no neural-tangents import shim at ../shared/peers")
    sys.path.insert(0, PEERS)
    try:
        import nt_shim  # noqa: F401
        from neural_tangents._src import predict
    except Exception as e:  # not installed, or an incompatible JAX
        pytest.skip(f"neural-tangents not importable: {e!r}")
    import jax
    jax.config.update("jax_enable_x64", True)
    return predict


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_same_blocks_as_neural_tangents(nt):
    rng = np.random.default_rng(0)
    X, Xt, Y = rng.standard_normal((16, 6)), rng.standard_normal((5, 6)), rng.standard_normal((16, 3))
    arch = nf.presets.fc(2)
    k, kt, ktt = (nf.gram(X, arch=arch, dtype="float64", device="cpu"),
                  nf.gram(Xt, X, arch=arch, dtype="float64", device="cpu"),
                  nf.gram(Xt, arch=arch, dtype="float64", device="cpu"))
    Pair = collections.namedtuple("Pair", "nngp ntk")

    def kernel_fn(x1, x2, get, **kw):        # ntkfast's blocks, so that only the predict code differs
        pair = (ktt if len(x1) == len(Xt) else k) if x2 is None else kt
        pair = Pair(pair.nngp, pair.ntk)
        return getattr(pair, get) if isinstance(get, str) else pair

    times = np.array([0.0, 0.5, 5.0, 50.0, 500.0])
    for lr, reg in ((1.0, 0.0), (0.3, 1e-2)):
        fn = nt.gradient_descent_mse_ensemble(kernel_fn, X, Y, learning_rate=lr, diag_reg=reg)
        for g in ("nngp", "ntk"):
            flow = GradientFlow(k, Y, kind=g, learning_rate=lr, diag_reg=reg, device="cpu")
            ref = fn(t=times, x_test=Xt, get=g, compute_cov=True)
            got = flow.predict(times, kt, ktt, compute_cov=True)
            assert rel(got.mean, ref.mean) <= 1e-12 and rel(got.covariance, ref.covariance) <= 1e-12
            ref = fn(t=times, x_test=None, get=g, compute_cov=True)
            assert rel(flow.mean(times), ref.mean) <= 1e-12 and rel(flow.covariance(times), ref.covariance) <= 1e-12
        gp = nt.gp_inference(k, Y, diag_reg=max(reg, 1e-4))
        for g in ("nngp", "ntk", "ntkgp"):
            ref = gp(get=g, k_test_train=kt, k_test_test=ktt)
            got = gp_inference(k, Y, kt, ktt, kind=g, diag_reg=max(reg, 1e-4), device="cpu")
            assert rel(got.mean, ref.mean) <= 1e-12 and rel(got.covariance, ref.covariance) <= 1e-12
