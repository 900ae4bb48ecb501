"""Random valid architectures against the float64 reference (tests/random_nets.py draws them).

Tolerance, derived (docs/design.md, numerics): elementwise ``|K - R| <= c max|R| + A``. ``c = 32 L eps``, where
``L`` is the number of layers and ``eps`` the unit roundoff of the backend's dtype (2^-24 for float32): each
layer adds a few roundings to entries that are averages (measured on ReLU nets: at most about 6 L eps); for
float64 ``c`` is at least 1e-10, the issue's target, since rare nets (an all-zero image through Sign, biases and
LayerNorm) amplify float64 roundings to about 1e4 eps. ``A = angle_error_bound(delta = 16 eps) +
angle_error_bound(delta = 16 eps64)``: the first-order effect of the same roundings on the angles where rho is
near +-1 (sqrt(eps), not eps: the NTK of ReLU-like layers and the NNGP of Sign are only 1/2-Hoelder there),
for the backend and for the reference itself. For generic nets A is negligible; for nets whose correlations
sit at +-1 everywhere (single-channel inputs through 1x1 convolutions) A dominates, in float64 too (about
1e-9), because the float64 reference is no more accurate than that. Examples are drawn by hypothesis with ``derandomize=True`` (the same nets in every run, shrunk
to a small net on failure). ``NTKFAST_FUZZ=N`` runs N more, from other seeds (about 0.15 s each).
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ntkfast as nf
from random_nets import HypothesisDraws, draw_case, random_case

EPS = {"float64": 2.0 ** -53, "float32": 2.0 ** -24}


def tolerances(case):
    """The float64 reference of ``case`` and, per backend dtype, elementwise (nngp, ntk) tolerances."""
    ref = nf.reference.gram(case.X, case.Y, arch=case.arch)
    L = len(case.arch.layers)
    angle = {d: nf.reference.angle_error_bound(case.X, case.Y, arch=case.arch, delta=16 * e) for d, e in EPS.items()}
    tol = {}
    for dtype, eps in EPS.items():
        rel = max(32 * L * eps, 1e-10 if dtype == "float64" else 0.0)
        tol[dtype] = tuple(rel * np.abs(r).max() + a + (a64 if dtype != "float64" else 0.0)
                           for r, a, a64 in zip(ref, angle[dtype], angle["float64"]))
    return ref, tol


def check_case(case, devices=("cpu",)):
    ref, tol = tolerances(case)
    for dtype in EPS:
        for device in devices:
            got = nf.gram(case.X, case.Y, arch=case.arch, dtype=dtype, device=device)
            for name, g, r, t in zip(("nngp", "ntk"), got, ref, tol[dtype]):
                assert g.dtype == np.dtype(dtype) and g.shape == r.shape
                err = np.abs(g.astype(np.float64) - r)
                assert np.all(err <= t), (f"{name} {dtype} {device}: worst excess "
                                          f"{np.max(err - t):.3e} over the tolerance; {case.label}")
                if case.Y is None:
                    assert np.array_equal(g, g.T), f"{name} {dtype}: gram(X) not exactly symmetric; {case.label}"
            # the paired modes are the Gram's entries, bitwise: K(x_i, x_i) and K(x_i, y_i)
            if case.Y is None:
                paired, full = nf.gram_diag(case.X, arch=case.arch, dtype=dtype, device=device), got
            else:
                k = min(len(case.X), len(case.Y))
                paired = nf.gram_pairs(case.X[:k], case.Y[:k], arch=case.arch, dtype=dtype, device=device)
                full = [g[:k, :k] for g in got]
            for name, p, g in zip(("nngp", "ntk"), paired, full):
                assert np.array_equal(p, np.diag(g)), f"{name} {dtype} {device}: paired mode; {case.label}"


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_nets_match_reference(data):
    from conftest import available_devices
    check_case(draw_case(HypothesisDraws(data)), tuple(available_devices()))


@pytest.mark.fuzz
def test_random_nets_large_budget():
    """Opt-in: NTKFAST_FUZZ=N checks N more nets, seeds 10^6 .. 10^6 + N (reproducible one by one with
    random_nets.random_case(seed))."""
    n = int(os.environ.get("NTKFAST_FUZZ", "0"))
    if n <= 0:
        pytest.skip("set NTKFAST_FUZZ=N to run N more random nets")
    from conftest import available_devices
    for seed in range(10 ** 6, 10 ** 6 + n):
        check_case(random_case(seed), tuple(available_devices()))
