"""Hölder smoothness of NTK vs NNGP/CKN feature maps (Props. 3-4 of Bietti & Mairal)."""
import numpy as np
import pytest

import ntkfast as nf
from ntkfast import smoothness as Sm
from ntkfast.reference import fc_closed_form

DELTAS = np.logspace(-5, -3, 5)


def _sphere_point(D=16, seed=0):
    v = np.random.default_rng(seed).standard_normal(D)
    return v / np.linalg.norm(v) * np.sqrt(D)


def test_fc_distances_match_angle_closed_form():
    # independent: the fc(2) kernels as functions of the angle (ntkfast.spectrum, each layer's angle carried
    # without cancellation) times |x||y|/D. (reference.fc_closed_form takes arccos of a rounded rho and is
    # off by ~1e-5 relative at delta = 1e-4, so it is not the reference here.)
    from ntkfast.spectrum import kernel
    D = 16
    x = _sphere_point(D)
    deltas = np.array([1e-4, 1e-3, 1e-2, 1e-1])
    c = Sm.holder_curve(x, arch=nf.presets.fc(2), deltas=deltas, n_dirs=2, seed=3, device="cpu")
    Y = Sm.perturb(x, deltas, 2, seed=3)
    nx, ny = np.linalg.norm(x), np.linalg.norm(Y, axis=1)
    theta = 2 * np.arcsin(np.linalg.norm(x / nx - Y / ny[:, None], axis=1) / 2)
    for kind in ("nngp", "ntk"):
        k = kernel(kind, 2)
        kxx, kyy = nx * nx / D * k.value_at_one(), ny * ny / D * k.value_at_one()
        kxy = nx * ny / D * k.at_angle(theta)
        expect = np.sqrt(kxx + kyy - 2 * kxy) / np.sqrt(kxx)
        # float64 on both sides; d^2 ~ delta^2 K for the NNGP: rounding ~eps K / delta^2 ~ 1e-8 relative
        np.testing.assert_allclose(getattr(c.dist, kind).ravel(), expect, rtol=1e-6)
    cf = fc_closed_form(x[None], Y[2:], depth=2)  # and the closed form where its arccos is accurate
    np.testing.assert_allclose(cf.ntk[0], nx * ny[2:] / D * kernel("ntk", 2).at_angle(theta[2:]), rtol=1e-9)


@pytest.mark.parametrize("depth", [1, 2])
def test_fc_ntk_is_half_holder_nngp_lipschitz(depth):
    c = Sm.holder_curve(_sphere_point(), arch=nf.presets.fc(depth), deltas=DELTAS, n_dirs=3, device="cpu")
    s_ntk, s_nngp = c.slope("ntk"), c.slope("nngp")
    assert abs(s_ntk - 0.5) < 0.03, s_ntk
    assert abs(s_nngp - 1.0) < 0.03, s_nngp
    ntk = c.dist.ntk.mean(axis=1) / c.deltas
    nngp = c.dist.nngp.mean(axis=1) / c.deltas
    assert ntk[0] / ntk[-1] > 0.8 * 10.0  # ratio grows like delta^-1/2: x10 over two decades
    assert 0.9 < nngp[0] / nngp[-1] < 1.1  # bounded


def test_fc1_ntk_constant_on_the_sphere():
    # on the sphere, for y at angle theta from x: kappa(1) - kappa(cos theta) ~ theta / pi for the 2-layer NTK
    # (kappa0 loses theta / pi; kappa1 and t only second order), so ||dPhi||^2 / kappa(1) ~ theta / pi
    x = _sphere_point(8, 1)
    v = np.random.default_rng(2).standard_normal(8)
    v -= (v @ x) / (x @ x) * x
    v /= np.linalg.norm(v)
    theta = 1e-4
    y = np.cos(theta) * x + np.sin(theta) * np.sqrt(8) * v
    k = nf.gram(np.stack([x, y]), arch=nf.presets.fc(1), dtype="float64", device="cpu")
    d2 = (k.ntk[0, 0] + k.ntk[1, 1] - 2 * k.ntk[0, 1]) / k.ntk[0, 0]
    assert d2 == pytest.approx(theta / np.pi, rel=1e-3)


def test_conv_preset_ntk_is_half_holder():
    from ntkfast import data as D
    from ntkfast.stability import to_mnist_size
    X, _ = D.load_default()
    img = D.normalize(to_mnist_size(X[:1]), "center_scale")[0]
    c = Sm.holder_curve(img, arch=nf.presets.bietti_mairal(), deltas=DELTAS, n_dirs=1, device="cpu")
    assert abs(c.slope("ntk") - 0.5) < 0.05
    assert abs(c.slope("nngp") - 1.0) < 0.05
    assert c.dist.ntk[0, 0] > 10 * c.dist.nngp[0, 0]


def test_perturb_seeded_and_scaled():
    x = _sphere_point()
    a = Sm.perturb(x, [1e-3, 1e-2], 2, seed=7)
    np.testing.assert_array_equal(a, Sm.perturb(x, [1e-3, 1e-2], 2, seed=7))
    assert not np.allclose(a, Sm.perturb(x, [1e-3, 1e-2], 2, seed=8))
    np.testing.assert_allclose(np.linalg.norm(a - x, axis=1) / np.linalg.norm(x), [1e-3, 1e-3, 1e-2, 1e-2])


def test_bad_inputs():
    x = _sphere_point()
    with pytest.raises(ValueError, match="deltas must be"):
        Sm.perturb(x, [1e-3, -1e-2])
    with pytest.raises(ValueError, match="deltas must be"):
        Sm.perturb(x, [1e-3])
    with pytest.raises(ValueError, match="n_dirs must be a positive int"):
        Sm.perturb(x, [1e-3, 1e-2], n_dirs=0)
    with pytest.raises(ValueError, match="x must be finite and nonzero"):
        Sm.perturb(np.zeros(4), [1e-3, 1e-2])
    with pytest.raises(ValueError, match="at least 2 positive distances"):
        Sm.fit_slope([1e-3, 1e-2], [0.0, 0.0])


def test_cli(tmp_path, capsys):
    from ntkfast.cli import main
    out = tmp_path / "sm.png"
    rc = main(["smoothness", "--arch", "flat1", "--deltas", "1e-5,1e-3,3", "--n-dirs", "1", "--device", "cpu",
               "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert out.exists() and "fc2" in text and "flat1" in text
    assert main(["smoothness", "--deltas", "1e-5", "--out", str(out)]) == 2


def test_directions_are_orthogonal_and_independent_of_the_base_point():
    # the CLI's fc base point comes from default_rng(seed); the directions must not be that same draw
    # (which made the first direction radial, x's own, along which the feature map is linear)
    D, seed = 32, 0
    x = np.random.default_rng(seed).standard_normal(D)
    V = Sm.directions(x, 3, seed)
    u = x / np.linalg.norm(x)
    np.testing.assert_allclose(np.linalg.norm(V, axis=1), 1.0, rtol=1e-14)
    assert np.max(np.abs(V @ u)) < 1e-14                          # orthogonal to x
    assert np.max(np.abs(V @ V.T - np.eye(3))) < 0.8               # not copies of one another
    img = np.random.default_rng(1).standard_normal((6, 6, 1))
    Vi = Sm.directions(img, 2, 1)
    assert Vi.shape == (2, 6, 6, 1) and np.max(np.abs(Vi.reshape(2, -1) @ img.ravel())) < 1e-12
    Y = Sm.perturb(x, [1e-2, 1e-1], 3, seed)                       # |y| = |x| sqrt(1 + delta^2)
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1) / np.linalg.norm(x),
                               np.sqrt(1 + np.repeat([1e-4, 1e-2], 3)), rtol=1e-12)


def test_plot_title_carries_the_measured_slopes(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    c = Sm.holder_curve(_sphere_point(), arch=nf.presets.fc(1), deltas=DELTAS, n_dirs=1, device="cpu",
                        label="fc1")
    titles = []
    real = plt.Figure.savefig

    def grab(fig, *a, **k):
        titles.extend(ax.get_title() for ax in fig.axes)
        return real(fig, *a, **k)
    monkeypatch.setattr(plt.Figure, "savefig", grab)
    Sm.plot_smoothness([c], tmp_path / "s.png")
    title = " ".join(titles)
    assert f"fc1 NTK {c.slope('ntk', 1e-5, 1e-3):.3f}" in title
    assert f"fc1 NNGP {c.slope('nngp', 1e-5, 1e-3):.3f}" in title
    assert "Hölder" not in title and "Lipschitz" not in title
