"""Deformations, feature-space distances and the Fig. 1 experiment of Bietti & Mairal."""
import numpy as np
import pytest

import ntkfast as nf
from ntkfast import stability as St
from ntkfast.reference import gram as ref_gram


def _blob(H=28, W=28, sigma=4.0, center=(13.0, 14.5)):
    u, v = np.mgrid[0:H, 0:W]
    return np.exp(-((u - center[0]) ** 2 + (v - center[1]) ** 2) / (2 * sigma ** 2))[None, :, :, None]


@pytest.fixture(scope="module")
def digits28():
    """28x28 digits with labels: MNIST when ../shared/data/mnist exists, else the embedded set upsampled."""
    from conftest import MNIST_DIR
    import os
    from ntkfast import data as D
    if os.path.isdir(MNIST_DIR):
        X, y = D.load_mnist(MNIST_DIR)
        return X[:600], y[:600]
    X, y = D.load_default()
    return St.to_mnist_size(X[:600]), y[:600]


# ---- transformations ----------------------------------------------------------------------------------

def test_random_field_normalized_smooth_and_seeded():
    a = St.random_field((28, 28), 5, smoothness=4.0)
    b = St.random_field((28, 28), 5, smoothness=4.0)
    c = St.random_field((28, 28), 6, smoothness=4.0)
    assert a.shape == (2, 28, 28)
    assert np.sqrt((a ** 2).sum(0)).max() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    rough = St.random_field((28, 28), 5, smoothness=1.0)
    grad = lambda f: np.mean(np.abs(np.gradient(f, axis=(1, 2))))  # noqa: E731
    assert grad(a) < 0.5 * grad(rough)


def test_warp_identity_and_integer_field_is_translation():
    x = _blob() + 0.3 * _blob(sigma=2.0, center=(10.0, 16.0))
    np.testing.assert_allclose(St.warp(x, np.zeros((2, 28, 28))), x, atol=1e-12)
    # x(u - tau) with tau = (2, -1) everywhere moves the content by (+2, -1)
    field = np.stack([np.full((28, 28), 2.0), np.full((28, 28), -1.0)])
    np.testing.assert_allclose(St.warp(x, field), St.translate(x, (2, -1)), atol=1e-6)
    np.testing.assert_array_equal(St.translate(x, (2, -1))[0, 2:, :27], x[0, :26, 1:])


def test_warp_and_tangent_against_the_analytic_deformation():
    # a smooth blob deformed analytically: x(u - tau(u)) evaluated in closed form
    u, v = np.mgrid[0:28, 0:28]
    tau = St.random_field((28, 28), 1)
    x = _blob()
    for a in (0.05, 0.2, 1.0):
        uu, vv = u - a * tau[0], v - a * tau[1]
        exact = np.exp(-((uu - 13.0) ** 2 + (vv - 14.5) ** 2) / (2 * 16.0))
        change = np.linalg.norm(exact - x[0, :, :, 0])
        w = St.warp(x, a * tau)[0, :, :, 0]
        t = St.tangent_deform(x, a * tau)[0, :, :, 0]
        # cubic splines: interpolation error ~ (h / sigma)^4, far below the change (also near the border)
        assert np.linalg.norm(w - exact) < 0.01 * change
        # first order: remainder ~ alpha |tau|^2 |D^2 x| plus the central-difference error ~ (h / sigma)^2 / 6
        err_t = np.linalg.norm(t - exact) / change
        assert err_t < (0.03 if a < 0.5 else 0.2)
    assert err_t > 0.03  # at alpha = 1 the second-order term shows: the bound above is not vacuous


def test_deform_with_shift_and_seed():
    x = _blob()
    a = St.deform(x, 1.5, 3, shift=(1, 1))
    b = St.deform(x, 1.5, 3, shift=(1, 1))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(St.translate(St.deform(x, 1.5, 3), (1, 1)), a)
    assert St.random_shift(np.random.default_rng(0), 1) != (0, 0)


def test_to_mnist_size():
    from ntkfast import data as D
    X, _ = D.load_default()
    Z = St.to_mnist_size(X[:3])
    assert Z.shape == (3, 28, 28, 1)
    assert np.all(Z[:, :4] == 0) and np.all(Z[:, :, -4:] == 0)
    assert Z.min() >= 0 and Z.max() <= 1


# ---- distances -----------------------------------------------------------------------------------------

def test_relative_distances_match_reference():
    arch = nf.serial(nf.Conv(3), nf.ReLU(), nf.GaussianPool(2), nf.Conv(3), nf.ReLU(), nf.Flatten(), nf.Dense())
    rng = np.random.default_rng(0)
    X = rng.random((2, 8, 8, 1))
    Y = rng.random((3, 8, 8, 1))
    d = St.relative_distances(X, Y, arch=arch, device="cpu")
    kxy = ref_gram(X, Y, arch=arch)
    kxx, kyy = ref_gram(X, arch=arch), ref_gram(Y, arch=arch)
    for j in range(2):
        sx, sy = np.diag(kxx[j]), np.diag(kyy[j])
        expect = np.sqrt(sx[:, None] + sy[None] - 2 * kxy[j]) / np.sqrt(sx)[:, None]
        np.testing.assert_allclose(d[j], expect, rtol=1e-9)
    # the self kernels are bitwise the diagonal of the backend's symmetric Gram
    kb = nf.gram(Y, arch=arch, device="cpu", dtype="float64")
    for j in range(2):
        np.testing.assert_array_equal(St.self_kernels(Y, arch=arch, device="cpu")[j], np.diag(kb[j]))
        np.testing.assert_allclose(St.self_kernels(Y, arch=arch, device="cpu")[j], np.diag(kyy[j]), rtol=1e-12)
    p = St.paired_distances(X, Y[:2], arch=arch, device="cpu", relative=True)
    np.testing.assert_allclose(p.ntk, np.diag(d.ntk[:, :2]), rtol=1e-12)


# ---- the Fig. 1 experiment -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fig1_small(digits28):
    X, y = digits28
    return St.fig1(X, y, alphas=(0.0, 1.0, 2.5), n_ref=2, n_deform=2, n_compare=40, seed=1, device="cpu")


def test_fig1_ordering_of_the_four_curves(fig1_small):
    r = fig1_small
    at1 = r.at(1.0)
    from conftest import MNIST_DIR
    import os
    for j in range(2):  # CKN and NTK
        assert 0 < at1[j, 0] < at1[j, 1] and at1[j, 0] < r.same_label[j] < r.any_label[j]
        if os.path.isdir(MNIST_DIR):
            # on MNIST the full order of the paper; on the embedded 8x8 digits (upsampled) a 2-pixel
            # translation costs more than a same-label digit (docs/analyses.md), so that step is MNIST-only
            assert at1[j, 1] < r.same_label[j]
        assert r.deform[j, 0] < 1e-3  # alpha = 0: the image itself (NTK rounding ~ sqrt(eps))
        assert r.deform[j, 0] < r.deform[j, 1] < r.deform[j, 2]
    # the NTK is less stable than the CKN, relative to its own spread of digits too
    assert at1[1, 0] > 1.3 * at1[0, 0]
    assert r.deform[1, 2] > r.deform[0, 2]
    assert r.raw["deform"].shape == (2, 2, 3, 2)
    # the NTK's distance grows more slowly in alpha from a larger start: Hölder 1/2 near alpha = 0
    s = r.alpha_exponents(amax=2.5)
    assert s[1] < s[0]


def test_fig1_deterministic_and_seed_sensitive(digits28):
    X, y = digits28
    # seed 7: the reference's label occurs among the 10 comparison digits (MNIST and embedded sets)
    kw = dict(alphas=(1.0,), n_ref=1, n_deform=1, n_compare=10, device="cpu")
    a = St.fig1(X, y, seed=7, **kw)
    b = St.fig1(X, y, seed=7, **kw)
    np.testing.assert_array_equal(a.deform, b.deform)
    np.testing.assert_array_equal(a.any_label, b.any_label)
    np.testing.assert_array_equal(a.raw["cmp_idx"], b.raw["cmp_idx"])
    # another seed draws other digits and other fields
    perm = np.random.default_rng(9).permutation(len(X))
    assert not np.array_equal(perm[1:11], a.raw["cmp_idx"])
    x = X[a.raw["ref_idx"]]
    assert not np.allclose(St.deform(x, 1.0, 1), St.deform(x, 1.0, 2))


def test_fig1_table_and_plot(fig1_small, tmp_path):
    text = St.fig1_table(fig1_small)
    assert "paper poster" in text and "0.022" in text and "same label" in text
    path = nf.plots.plot_fig1(fig1_small, tmp_path / "f.png")
    assert 1000 < path.stat().st_size < 200_000


def test_bad_inputs(digits28):
    X, y = digits28
    with pytest.raises(ValueError, match=r"X must have shape \(N, H, W, C\)"):
        St.fig1(X[..., 0], y)
    with pytest.raises(ValueError, match="labels must be integers"):
        St.fig1(X, y[:5])
    with pytest.raises(ValueError, match="alphas must be"):
        St.fig1(X, y, alphas=(-1.0, 1.0))
    with pytest.raises(ValueError, match="n_ref must be >= 1"):
        St.fig1(X, y, n_ref=0)
    with pytest.raises(ValueError, match="method must be"):
        St.fig1(X, y, method="elastic")
    with pytest.raises(ValueError, match="exceeds"):
        St.fig1(X[:10], y[:10], n_compare=20)
    with pytest.raises(ValueError, match="field must have shape"):
        St.warp(X[:1], np.zeros((2, 5, 5)))
    with pytest.raises(TypeError, match="shift must be two ints"):
        St.translate(X[:1], (0.5, 1))
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        St.deform(X[:1], -1.0, 0)
    with pytest.raises(ValueError, match="smoothness must be a finite number > 0"):
        St.random_field((28, 28), 0, smoothness=0.0)
    with pytest.raises(ValueError, match="to_mnist_size converts"):
        St.to_mnist_size(np.zeros((1, 10, 10, 1)))


def test_cli(tmp_path, capsys):
    from ntkfast.cli import main
    out = tmp_path / "st.png"
    rc = main(["stability", "--alphas", "0,1", "--n-ref", "1", "--n-deform", "1", "--n-compare", "12",
               "--seed", "2", "--device", "cpu", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert out.exists() and "8x8 digits upsampled" in text and "any label" in text
    assert main(["stability", "--alphas", "a,b", "--out", str(out)]) == 2
