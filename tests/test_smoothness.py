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
    nf.plots.plot_smoothness([c], tmp_path / "s.png")
    title = " ".join(titles)
    assert f"fc1 NTK {c.slope('ntk', 1e-5, 1e-3):.3f}" in title
    assert f"fc1 NNGP {c.slope('nngp', 1e-5, 1e-3):.3f}" in title
    assert "Hölder" not in title and "Lipschitz" not in title


# ---- other activations (issue 16) --------------------------------------------------------------------------

@pytest.mark.parametrize("act,ntk_slope,nngp_slope", [
    ("relu", 0.5, 1.0), ("abs", 0.5, 1.0), ("leaky", 0.5, 1.0),   # phi' jumps: the derivative kernel ~ theta
    ("relu2", 1.0, 1.0), ("erf", 1.0, 1.0), ("gelu", 1.0, 1.0),   # phi' continuous: Lipschitz
    ("sign", 0.25, 0.25),                                           # phi jumps: 1/2 per layer, two layers
])
def test_fc_slopes_per_activation(act, ntk_slope, nngp_slope):
    from ntkfast.spectrum import with_activation
    c = Sm.holder_curve(_sphere_point(), arch=with_activation(nf.presets.fc(2), act), deltas=DELTAS, n_dirs=2,
                        device="cpu")
    # measured (fc2, D = 32 in the docs): every slope within 0.001 of these; 0.03 leaves room for other points
    assert abs(c.slope("ntk") - ntk_slope) < 0.03, c.slope("ntk")
    assert abs(c.slope("nngp") - nngp_slope) < 0.03, c.slope("nngp")


def test_erf_fc_distances_match_reference():
    # the float64 numpy reference (its own dual maps) on the same pairs: distances ~ delta |K| carry a
    # cancellation error ~ eps |K| / d^2 relative: ~1e-10 at delta = 1e-3
    from ntkfast import reference
    from ntkfast.spectrum import with_activation
    arch = with_activation(nf.presets.fc(2), nf.Erf())
    x = _sphere_point()
    deltas = np.array([1e-3, 1e-2])
    c = Sm.holder_curve(x, arch=arch, deltas=deltas, n_dirs=1, device="cpu")
    Y = Sm.perturb(x, deltas, 1)
    r = reference.gram(np.concatenate([x[None], Y]), arch=arch)
    for kind in ("nngp", "ntk"):
        K = getattr(r, kind)
        expect = np.sqrt(K[0, 0] + np.diag(K)[1:] - 2 * K[0, 1:]) / np.sqrt(K[0, 0])
        np.testing.assert_allclose(getattr(c.dist, kind).ravel(), expect, rtol=1e-7)


def test_conv_net_with_erf_is_lipschitz():
    # the same convolutional architecture with Erf in place of ReLU: the NTK is no longer 1/2-Hölder
    from ntkfast import data as D
    from ntkfast.stability import to_mnist_size
    X, _ = D.load_default()
    img = D.normalize(to_mnist_size(X[:1]), "center_scale")[0]
    curves = Sm.smoothness_experiment(img, _sphere_point(), conv_arch="flat2", activation=["relu", "erf"],
                                      deltas=np.logspace(-5, -3, 3), n_dirs=1, device="cpu")
    assert [c.label for c in curves] == ["fc2 relu", "fc2 erf", "flat2 relu", "flat2 erf"]
    s = {c.label: (c.slope("nngp"), c.slope("ntk")) for c in curves}
    assert abs(s["flat2 relu"][1] - 0.5) < 0.05 and abs(s["flat2 erf"][1] - 1.0) < 0.05, s
    assert abs(s["flat2 relu"][0] - 1.0) < 0.05 and abs(s["flat2 erf"][0] - 1.0) < 0.05, s


def test_default_activation_is_the_relu_experiment():
    # activation='relu' (the default) keeps the labels and the numbers of the ReLU presets bitwise
    x = _sphere_point()
    deltas = np.logspace(-5, -3, 3)
    a = Sm.smoothness_experiment(None, x, conv_arch=None, fc_depth=1, deltas=deltas, n_dirs=1, device="cpu")
    b = Sm.holder_curve(x, arch=nf.presets.fc(1), deltas=deltas, n_dirs=1, device="cpu")
    assert [c.label for c in a] == ["fc1"]
    np.testing.assert_array_equal(a[0].dist.ntk, b.dist.ntk)
    np.testing.assert_array_equal(a[0].dist.nngp, b.dist.nngp)


def test_activation_errors():
    x = _sphere_point()
    with pytest.raises(ValueError, match="activation must be one of relu, relu2.*got 'tanh'"):
        Sm.smoothness_experiment(None, x, conv_arch=None, activation="tanh")
    with pytest.raises(ValueError, match="distinct"):
        Sm.smoothness_experiment(None, x, conv_arch=None, activation=["erf", nf.Erf()])
    with pytest.raises(ValueError, match="activation layer"):
        Sm.smoothness_experiment(None, x, conv_arch=None, activation=nf.Dense())


def test_cli_activations(tmp_path, capsys):
    from ntkfast.cli import main
    out = tmp_path / "sm.png"
    rc = main(["smoothness", "--arch", "none", "--activation", "relu2,erf", "--deltas", "1e-5,1e-3,3",
               "--n-dirs", "1", "--device", "cpu", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert out.exists() and "fc2 relu2" in text and "fc2 erf" in text and "bietti_mairal" not in text
    assert "activations relu2, erf" in text
    assert main(["smoothness", "--activation", "relu,tanh", "--out", str(out)]) == 2
    assert "--activation must be one of" in capsys.readouterr().err
    assert main(["smoothness", "--arch", "nonsense", "--out", str(out)]) == 2
