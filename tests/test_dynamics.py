"""The spectral-bias study (ntkfast.dynamics): harmonic targets, exact degree projections, the kernels of the
study against ntkfast's Grams, halving times against 1/mu_k, finite networks against the infinite-width
prediction, and the ``ntkfast dynamics`` command.

Slow checks (the finite-width comparison at widths 512..8192, MNIST) run with NTKFAST_SLOW=1."""
import math
import os

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import dynamics as D
from ntkfast.spectrum import kernel, multiplicity, sample_sphere

from conftest import MNIST_DIR

slow = pytest.mark.skipif(os.environ.get("NTKFAST_SLOW") != "1", reason="slow: set NTKFAST_SLOW=1 to run")


@pytest.fixture(scope="module")
def grid():
    return D.sphere_grid()


@pytest.fixture(scope="module")
def coarse():
    return D.sphere_grid(16, 32)            # exact for spherical polynomials of degree <= 31


def test_zonal_gram_is_the_reproducing_kernel(coarse):
    pts, w = coarse
    A = sample_sphere(5, 3, seed=1)
    for k in range(7):
        G = D.zonal_gram(3, k, pts, A)                     # (Q, 5)
        inner = G.T @ (w[:, None] * G)                     # <N P_k(<., a>), N P_k(<., b>)> by quadrature
        assert np.abs(inner - D.zonal_gram(3, k, A)).max() <= 1e-11 * multiplicity(3, k)


def test_harmonic_target_components(coarse):
    pts, w = coarse
    tgt = D.HarmonicTarget(3, range(1, 7), seed=4)
    comps = np.stack([tgt.component(k, pts) for k in tgt.degrees])
    gram = comps @ (w[:, None] * comps.T)
    assert np.abs(gram - np.eye(6)).max() <= 1e-12          # unit norms, mutually orthogonal
    for i, k in enumerate(tgt.degrees):                      # f_k is a pure degree-k harmonic
        proj = D.zonal_gram(3, k, pts) @ (w * comps[i])
        assert np.abs(proj - comps[i]).max() <= 1e-11
    assert np.allclose(tgt(pts), comps.sum(axis=0))


def test_study_kernels_match_ntkfast_grams():
    X = sample_sphere(60, 3, seed=2)
    ks = D.study_kernels(3, 6, depth=2, b_std=1.0)
    theta = D.angles(X)
    for kk in ks:
        K = nf.gram(math.sqrt(3) * X, arch=kk.arch, kind="ntk", dtype="float64", device="cpu")
        assert np.abs(K - kk.kappa.at_angle(theta)).max() <= 1e-13 * np.abs(K).max()
    # b_std = 0 is the two-layer NTK; the angle form agrees with the plain formula away from theta = 0
    th = np.linspace(0.0, np.pi, 101)
    assert np.abs(D.BiasNTK(0.0).at_angle(th) - kernel("ntk", 1).at_angle(th)).max() <= 1e-14
    t = np.cos(th[5:])
    assert np.abs(D.bias_ntk(t, 1.0) - D.BiasNTK(1.0).at_angle(th[5:])).max() <= 1e-12
    # parity zeros: the two-layer NTK has mu_3 = mu_5 = 0; the deeper NTK and the bias kernel have none
    two, deep, bias = (kk.mu for kk in ks)
    assert two[3] == 0 and two[5] == 0 and np.all(two[[1, 2, 4, 6]] > 1e-4)
    assert np.all(deep[1:] > 1e-4) and np.all(bias[1:] > 1e-4)


def test_degree_errors_exact_vs_quadrature(grid):
    pts, w = grid
    X = sample_sphere(50, 3, seed=5)
    tgt = D.HarmonicTarget(3, range(1, 7), seed=6)
    beta = np.random.default_rng(7).standard_normal(50) / 50
    ks = D.study_kernels(3, 6)
    th = D.angles(pts, X)
    quad = D.quadrature_degree_errors(tgt, np.stack([kk.kappa.at_angle(th) @ beta for kk in ks]), pts, w)
    for i, kk in enumerate(ks):
        exact = D.degree_errors(tgt, kk, X, beta)
        for k in tgt.degrees:
            assert abs(exact[k] - quad[k][i]) <= 2e-4, (kk.label, k, exact[k], quad[k][i])
            if kk.mu[k] == 0:                 # no degree-k part in f: the error is the whole f_k
                assert abs(exact[k] - 1.0) <= 1e-13 and abs(quad[k][i] - 1.0) <= 2e-4


def test_halving_times_follow_inverse_eigenvalues():
    res = D.sphere_study(n=200, n_times=80, quadrature=False)
    for label, r in res["kernels"].items():
        assert 0.9 <= r["slope"] <= 1.15, (label, r["slope"])
        for k, th in r["t_half"].items():
            if r["mu"][k] == 0:
                assert th == math.inf and abs(r["final"][k] - 1.0) <= 1e-13      # never learned
            else:
                assert 0.7 <= th / r["predicted"][k] <= 1.4, (label, k, th, r["predicted"][k])
    two = res["kernels"]["two-layer NTK"]
    assert [k for k in two["t_half"] if two["t_half"][k] == math.inf] == [3, 5]
    table = D.format_degree_table(res)
    assert "| two-layer NTK | 3 | 0 | inf | inf | never |" in table


def test_finite_network_approaches_infinite_width():
    res = D.finite_width_study(widths=(128, 2048), d=6, n=16, n_test=16, steps=150, lr_fraction=0.1,
                               seeds=(0, 1), checkpoints=(50, 150))
    gap = {m: np.mean([r["gap"] for r in res["rows"] if r["width"] == m]) for m in (128, 2048)}
    assert gap[2048] < gap[128] / 2.0          # 1/sqrt(width) predicts a factor 4
    assert gap[2048] < 0.1 * res["rows"][0]["rms_prediction"]


@slow
def test_finite_width_gaps_512_to_8192():
    res = D.finite_width_study(widths=(512, 2048, 8192), seeds=(0,), steps=300, checkpoints=(30, 300))
    gaps = [r["gap"] for r in res["rows"]]
    assert gaps[0] > gaps[1] > gaps[2]
    assert -0.8 <= D.fit_slope([512, 2048, 8192], gaps)[0] <= -0.3


def test_two_layer_ntk_closed_form():
    X = sample_sphere(30, 5, seed=8) * math.sqrt(5)
    K = D.two_layer_ntk(X)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    want = (X @ X.T) * (1.0 - D.angles(U) / np.pi) / 2.0
    assert np.abs(K - want).max() <= 1e-12 * np.abs(want).max()


def test_cli_writes_plot_and_json(tmp_path, capsys):
    from ntkfast.cli import main
    out, js = tmp_path / "dyn.png", tmp_path / "dyn.json"
    assert main(["dynamics", "--n", "80", "--kmax", "3", "--out", str(out), "--json", str(js)]) == 0
    text = capsys.readouterr().out
    assert out.stat().st_size > 10_000 and js.stat().st_size > 1000
    assert "| two-layer NTK | 3 | 0 | inf | inf | never |" in text and "fitted slope" in text
    assert main(["dynamics", "--out", str(tmp_path / "x.pdf")]) == 2
    assert main(["dynamics", "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def test_mnist_small(mnist):
    """A tiny run of the MNIST part (16 train, 8 test images): the loss curves and accuracies it reports."""
    res = D.mnist_study(MNIST_DIR, 16, 8, n_times=12, dtype="float32")
    assert res["times"].shape == (12,)
    for kind in ("ntk", "nngp"):
        r = res[kind]
        assert r["accuracy"].shape == (13,) and r["test_loss"].shape == (13,)
        assert np.all(np.diff(r["train_loss"]) <= 1e-12)           # gradient flow: the train loss decreases
        assert r["train_loss"][-1] <= 1e-6 * r["train_loss"][0]     # and interpolates at t = inf
        assert r["accuracy"][-1] > 0.1


@slow
def test_mnist_accuracy_rises_with_time(mnist):
    res = D.mnist_study(MNIST_DIR, 100, 50, n_times=20, dtype="float32")
    for kind in ("ntk", "nngp"):
        acc = res[kind]["accuracy"]
        assert acc[-1] >= 0.6 and acc[-1] >= acc[0] + 0.3
