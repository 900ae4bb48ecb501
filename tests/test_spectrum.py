"""Mercer spectrum on the sphere: independent series evaluation, closed forms, parity, decay, brute force."""
import math

import numpy as np
import pytest
from scipy.special import gammaln

from ntkfast import spectrum as S
from ntkfast.reference import fc_closed_form


# ---- an independent evaluation: power series of kappa and the exact Funk-Hecke transform of t^j ------------

def _mu_monomial(p, k, j):
    """mu_k of t^j on S^{p-1} (exact, by Rodrigues' formula): zero unless j >= k and j - k even."""
    j = np.asarray(j, dtype=np.float64)
    out = np.zeros_like(j)
    ok = (j >= k) & ((j - k) % 2 == 0)
    jj = j[ok]
    out[ok] = np.exp(gammaln(p / 2) - 0.5 * np.log(np.pi) - k * np.log(2) + gammaln(jj + 1) - gammaln(jj - k + 1)
                     + gammaln((jj - k + 1) / 2) - gammaln((jj + k + p) / 2))
    return out


def _taylor(name, J):
    """Taylor coefficients b_0..b_J of kappa0, kappa1 and t kappa0 + kappa1 (arcsin series)."""
    n = np.arange(J // 2 + 2)
    c = np.exp(gammaln(2 * n + 1) - n * np.log(4) - 2 * gammaln(n + 1)) / (2 * n + 1)  # arcsin coefficients
    k0 = np.zeros(J + 2)
    k0[0] = 0.5
    k0[1:J + 2:2] = (c / np.pi)[:len(k0[1:J + 2:2])]
    k1 = np.zeros(J + 2)
    k1[0], k1[1] = 1 / np.pi, 0.5
    k1[2:J + 2:2] = (c / (np.pi * (2 * n + 2)))[:len(k1[2:J + 2:2])]
    if name == "kappa0":
        return k0[:J + 1]
    if name == "kappa1":
        return k1[:J + 1]
    ntk = k1.copy()
    ntk[1:] += k0[:-1]
    return ntk[:J + 1]


@pytest.mark.parametrize("name,p", [("kappa0", 5), ("kappa1", 3), ("kappa1", 5), ("ntk", 5), ("ntk", 7)])
def test_quadrature_matches_power_series(name, p):
    # terms b_j mu_k(t^j) decay like j^-(p+2)/2 (kappa0, NTK) or j^-(p+4)/2 (kappa1): with J = 2e5 the
    # neglected tail is below 1e-12 for these p, so the two evaluations must agree to ~1e-11
    J = 200_000
    b = _taylor(name, J)
    j = np.arange(J + 1)
    mu = S.mercer_eigenvalues(name, p, 12)
    series = np.array([np.sum(b * _mu_monomial(p, k, j)) for k in range(13)])
    np.testing.assert_allclose(mu, series, rtol=0, atol=2e-11)
    assert np.max(np.abs(series)) > 0.1


def test_exact_low_degrees_p3():
    # closed forms on S^2: kappa0: mu_0 = 1/2, mu_1 = (1/2)(1/pi) int t arcsin t dt = 1/8;
    # NTK = t kappa0 + kappa1: mu_0 = 1/2, mu_1 = 1/3
    mu0 = S.mercer_eigenvalues("kappa0", 3, 2)
    np.testing.assert_allclose(mu0[:2], [0.5, 0.125], rtol=1e-13)
    ntk = S.mercer_eigenvalues("ntk", 3, 2)
    np.testing.assert_allclose(ntk[:2], [0.5, 1 / 3], rtol=1e-13)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_fc_dot_product_function_matches_closed_form(depth):
    rng = np.random.default_rng(depth)
    D = 9
    U = rng.standard_normal((7, D))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    cf = fc_closed_form(np.sqrt(D) * U, depth=depth)
    G = np.clip(U @ U.T, -1, 1)
    off = ~np.eye(7, dtype=bool)
    np.testing.assert_allclose(S.kernel("ntk", depth)(G)[off], cf.ntk[off], rtol=1e-12)
    np.testing.assert_allclose(S.kernel("nngp", depth)(G)[off], cf.nngp[off], rtol=1e-12)
    assert S.kernel("ntk", depth).value_at_one() == pytest.approx(cf.ntk[0, 0], rel=1e-14) == depth + 1
    assert S.kernel("nngp", depth).value_at_one() == pytest.approx(1.0, rel=1e-14)
    assert S.kernel("ntk", 1)(np.array(0.3)) == pytest.approx(0.3 * (1 - np.arccos(0.3) / np.pi)
                                                             + (0.3 * (np.pi - np.arccos(0.3))
                                                                + np.sqrt(1 - 0.09)) / np.pi, rel=1e-14)


def test_fc_dot_product_function_matches_gram():
    import ntkfast
    rng = np.random.default_rng(3)
    D = 6
    U = rng.standard_normal((5, D))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    k = ntkfast.gram(np.sqrt(D) * U, arch=ntkfast.presets.fc(3), dtype="float64", device="cpu")
    G = np.clip(U @ U.T, -1, 1)
    np.fill_diagonal(G, 1.0)
    np.testing.assert_allclose(S.kernel("ntk", 3)(G), k.ntk, rtol=1e-10)
    np.testing.assert_allclose(S.kernel("nngp", 3)(G), k.nngp, rtol=1e-10)


@pytest.mark.parametrize("p", [2, 3, 5])
def test_parity_zeros(p):
    k = np.arange(121)
    for name, zero_parity in (("ntk", 1), ("kappa1", 1), ("kappa0", 0)):
        mu, floor = S.mercer_eigenvalues(name, p, 120, return_floor=True)
        zero = (k >= 2) & (k % 2 == zero_parity)
        live = (k >= 2) & (k % 2 != zero_parity)
        assert np.all(np.abs(mu[zero]) < 20 * floor[zero]), name
        assert np.all(mu[live] > 300 * floor[live]), name
        assert mu[0] > 0 and mu[1] > 0
    # a deeper NTK has no parity zeros: the check above can fail
    mu, floor = S.mercer_eigenvalues("ntk", p, 60, depth=2, return_floor=True)
    assert np.all(mu[3:61:2] > 1e4 * floor[3:61:2])


@pytest.mark.parametrize("p,kmax", [(2, 300), (3, 300), (5, 300), (10, 100)])
def test_decay_exponents(p, kmax):
    k = np.arange(kmax + 1)
    for name, depth, parity, a_theory in (("ntk", 1, "even", p), ("kappa1", 1, "even", p + 2),
                                          ("kappa0", 1, "odd", p), ("ntk", 3, "even", p),
                                          ("nngp", 3, "even", p + 2)):
        mu, floor = S.mercer_eigenvalues(name, p, kmax, depth=depth, return_floor=True)
        a, _ = S.fit_decay(k, mu, kmin=20, parity=parity, floor=floor, offset=(p - 2) / 2)
        assert abs(a - a_theory) < 0.02 * a_theory, (name, depth, a)
        assert S.theory_decay(name, p) == a_theory
        if p <= 5:  # plain k^-a, k >= 30: within 3 % already at these p
            a0, _ = S.fit_decay(k, mu, kmin=30, parity=parity, floor=floor)
            assert abs(a0 - a_theory) < 0.03 * a_theory, (name, depth, a0)


@pytest.mark.parametrize("p", [2, 3, 4])
def test_eigenvalues_times_multiplicities_sum_to_kappa_at_one(p):
    k = np.arange(401)
    N = S.multiplicity(p, k)
    mu1 = S.mercer_eigenvalues("kappa1", p, 400)
    assert np.sum(mu1 * N) == pytest.approx(1.0, abs=1e-7)  # tail ~ K^-3
    # reconstruction kappa(t) = sum_k mu_k N(p, k) P_k(t) away from t = 1
    t = np.array([-0.9, -0.3, 0.0, 0.4, 0.8])
    np.testing.assert_allclose(N * mu1 @ S.legendre_table(p, 400, t), S.kernel("kappa1")(t), atol=1e-7)
    # NTK: the partial sum misses a tail ~ 1/K; it equals the tail of the fitted power law to a few %
    mu = S.mercer_eigenvalues("ntk", p, 400)
    rest = 2.0 - np.sum(mu * N)
    a, C = S.fit_decay(k, mu, kmin=100, parity="even")
    kk = np.arange(402, 4_000_000, 2, dtype=np.float64)
    n_kk = (2 * kk + p - 2) / kk * np.exp(gammaln(kk + p - 2) - gammaln(kk) - gammaln(p - 1))
    tail = np.sum(C * kk ** -a * n_kk)
    assert rest > 0
    assert rest == pytest.approx(tail, rel=0.05)


def test_multiplicity():
    assert S.multiplicity(3, 4) == 9
    assert S.multiplicity(2, 7) == 2
    assert S.multiplicity(5, 0) == 1
    # dimension of degree-k harmonics = dim homogeneous polys deg k minus deg k-2 in p variables
    for p in (3, 4, 6):
        for k in (1, 2, 5, 9):
            expect = math.comb(k + p - 1, p - 1) - (math.comb(k + p - 3, p - 1) if k >= 2 else 0)
            assert S.multiplicity(p, k) == expect


def test_brute_force_gram_eigenvalues_p3():
    # eigenvalues of K/n for n uniform points estimate mu_k, each N(3, k) = 2k + 1 times; group means
    n = 1500
    ev = S.sphere_gram_eigenvalues("ntk", 3, n, seed=1)
    mu = S.mercer_eigenvalues("ntk", 3, 8)
    groups = [(0, 1, mu[0]), (1, 4, mu[1]), (4, 9, mu[2]), (9, 18, mu[4])]  # mu_3 = 0 drops out of the top
    for lo, hi, m in groups:
        assert np.mean(ev[lo:hi]) == pytest.approx(m, rel=0.05)
    assert abs(np.sum(ev) - 2.0) < 1e-12  # trace = kappa(1)
    assert ev[18] < 0.5 * mu[4]  # the 19th eigenvalue belongs to k = 6 (mu_6 < mu_4 / 2)


def test_nodes_convergence():
    for name, depth in (("ntk", 1), ("ntk", 3), ("nngp", 2)):
        a, fa = S.mercer_eigenvalues(name, 4, 150, depth=depth, return_floor=True)
        b, fb = S.mercer_eigenvalues(name, 4, 150, depth=depth, nodes=1200, return_floor=True)
        # converged: the two differ by rounding only (relative ~1e-14 at low k, the floors at high k)
        assert np.all(np.abs(a - b) <= 1e-12 * np.abs(a) + fa + fb)
        assert np.max(np.abs(a - b) / (fa + fb)) > 1e-3  # and the floors are not vacuous


def test_generic_callable_matches_builtin():
    mu = S.mercer_eigenvalues(lambda t: t ** 2, 3, 4)
    np.testing.assert_allclose(mu, [1 / 3, 0, 2 / 15, 0, 0], atol=1e-15)  # t^2 = 1/3 P_0 + 2/3 P_2; N(3,2)=5


def test_bad_inputs():
    with pytest.raises(ValueError, match="p must be >= 2"):
        S.mercer_eigenvalues("ntk", 1, 10)
    with pytest.raises(TypeError, match="p must be an int"):
        S.mercer_eigenvalues("ntk", 2.5, 10)
    with pytest.raises(ValueError, match="kmax must be >= 0"):
        S.mercer_eigenvalues("ntk", 3, -1)
    with pytest.raises(ValueError, match="kernel name must be one of"):
        S.mercer_eigenvalues("relu", 3, 10)
    with pytest.raises(ValueError, match="depth applies to 'ntk' and 'nngp' only"):
        S.kernel("kappa0", 2)
    with pytest.raises(ValueError, match="t must lie in"):
        S.kernel("ntk")(np.array([1.5]))
    with pytest.raises(ValueError, match="at least 3 eigenvalues"):
        S.fit_decay(np.arange(5), np.ones(5), kmin=3)
    with pytest.raises(ValueError, match="parity must be"):
        S.fit_decay(np.arange(50), np.ones(50), parity="both")


def test_cli(tmp_path, capsys):
    from ntkfast.cli import main
    out = tmp_path / "s.png"
    assert main(["spectrum", "--p", "3", "--kmax", "60", "--depth", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.stat().st_size > 1000
    assert "all odd k >= 3" in text and "fc(2) NTK" in text
    assert main(["spectrum", "--p", "1", "--out", str(out)]) == 2


def test_table_says_all_zero_instead_of_nan():
    from ntkfast.spectrum import format_table, spectrum, spectrum_table
    sp = spectrum(3, 60, [("kappa0", 1), ("ntk", 1), ("ntk", 2)])
    text = format_table(spectrum_table(sp, 10), 3, 10, 60)
    assert "nan" not in text
    rows = {line.split("  ")[0].strip(): line for line in text.splitlines()[2:]}
    assert rows["kappa0"].split()[2:4] == ["all", "zero"]          # even k vanish: no even exponent
    assert "all zero" in rows["fc(1) NTK (2-layer)"] and "all zero" not in rows["fc(2) NTK"]


# ---- other activations (issue 16): the two-layer kernels through the backend -------------------------------

def _gauss_hermite_kernel(phi, dphi, t, w):
    """Independent: k(t) = w^2 t E[phi'(u) phi'(v)] + E[phi(u) phi(v)], (u, v) ~ N(0, w^2 [[1, t], [t, 1]]), by
    a 2-d Gauss-Hermite rule (exact to rounding for these smooth activations at 120 nodes)."""
    z, g = np.polynomial.hermite_e.hermegauss(120)
    g = g / g.sum()
    u = w * z[:, None, None]
    v = w * (t[None, None, :] * z[:, None, None] + np.sqrt(1 - t[None, None, :] ** 2) * z[None, :, None])
    G = (g[:, None] * g[None, :])[:, :, None]
    nngp = np.sum(G * phi(u) * phi(v), axis=(0, 1))
    return w * w * t * np.sum(G * dphi(u) * dphi(v), axis=(0, 1)) + nngp, nngp


@pytest.mark.parametrize("w", [1.0, 2 ** 0.5])
def test_activation_kernel_matches_gauss_hermite(w):
    from scipy.special import erf, ndtr
    t = np.array([-0.95, -0.4, 0.0, 0.3, 0.8, 0.99])
    cases = {"erf": (erf, lambda x: 2 / np.sqrt(np.pi) * np.exp(-x * x)),
             "gelu": (lambda x: x * ndtr(x), lambda x: ndtr(x) + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)),
             "sin": (np.sin, np.cos)}
    for name, (phi, dphi) in cases.items():
        ntk, nngp = _gauss_hermite_kernel(phi, dphi, t, w)
        np.testing.assert_allclose(S.ActivationKernel(name, "ntk", w, "cpu")(t), ntk, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(S.ActivationKernel(name, "nngp", w, "cpu")(t), nngp, rtol=1e-12, atol=1e-14)
    # erf at unit variance in closed form: (2/pi) arcsin(2t/3) + t (4/pi) / sqrt(9 - 4 t^2)
    k = S.ActivationKernel("erf", w_std=1.0, device="cpu")
    expect = 2 / np.pi * np.arcsin(2 * t / 3) + t * 4 / np.pi / np.sqrt(9 - 4 * t * t)
    np.testing.assert_allclose(k(t), expect, rtol=1e-13, atol=1e-15)  # t = 0 comes back as cos(arccos 0) ~ 6e-17


def test_relu_through_the_backend_equals_the_closed_form():
    # default w_std = sqrt(2): the backend's two-layer ReLU NTK is kernel('ntk', 1), values and eigenvalues
    k = S.ActivationKernel("relu", device="cpu")
    theta = np.linspace(0, np.pi, 101)
    np.testing.assert_allclose(k.at_angle(theta), S.kernel("ntk", 1).at_angle(theta), rtol=0, atol=1e-11)
    assert k.value_at_one() == pytest.approx(2.0, rel=1e-15)
    mu, fl = S.mercer_eigenvalues(k, 3, 200, return_floor=True)
    ref, fr = S.mercer_eigenvalues("ntk", 3, 200, return_floor=True)
    assert np.all(np.abs(mu - ref) <= fl + fr)
    assert np.max(np.abs(mu - ref)) < 1e-15


def test_smooth_activations_decay_faster_than_relu():
    sp = S.activation_spectrum(["relu", "relu2", "abs", "erf", "gelu"], p=3, kmax=200, device="cpu")
    rows = {r["activation"]: r for r in S.activation_table(sp, (20, 40), 30)}
    k = sp.k
    # ReLU: a = 3 = p on the tail (the closed-form table gives 3.002); abs the same; ReLU^2: p + 2 = 5
    assert abs(rows["relu"]["a_tail"] - 3.0) < 0.01 and abs(rows["abs"]["a_tail"] - 3.0) < 0.01
    assert abs(rows["relu2"]["a_tail"] - 5.0) < 0.02
    for name in ("relu", "relu2", "abs"):
        assert abs(rows[name]["r"] - 1.0) < 0.01, rows[name]        # no geometric factor: a power law
        assert rows[name]["theory_model"] == "power"
    # erf and gelu: geometric, at the rate of the kernel's nearest singularity (t0 = 1.25 and 1.5)
    assert rows["erf"]["theory_value"] == pytest.approx(2.0) and rows["gelu"]["theory_value"] == pytest.approx(
        1.5 + 1.25 ** 0.5)
    assert rows["erf"]["r"] == pytest.approx(2.0, rel=0.01)        # measured 1.995
    assert rows["gelu"]["r"] == pytest.approx(2.618, rel=0.03)     # measured 2.576 (fit on k = 10..28)
    # at k = 20..40 their power-law exponents are many times ReLU's, and the eigenvalues far smaller
    for name in ("erf", "gelu"):
        assert rows[name]["a_window"] > 5 * rows["relu"]["a_window"], rows[name]
        assert rows[name]["mu_k0"] < 1e-3 * rows["relu"]["mu_k0"]
    erf, relu = sp.mu["erf"], sp.mu["relu"]
    assert np.all(erf[21:40:2] < 1e-3 * relu[20:40:2])
    # the smooth kernels hit the rounding floor near k = 30: above it nothing is resolved
    assert 25 <= rows["gelu"]["k_rel"] <= 35 and 30 <= rows["erf"]["k_rel"] <= 45
    # parity zeros: erf is odd (even k vanish); gelu = x/2 + even and ReLU = x/2 + |x|/2 (odd k >= 3);
    # ReLU^2 = x^2/2 + x|x|/2 (even k >= 4); abs is even
    assert rows["erf"]["zeros"] == "all even k >= 2" and rows["gelu"]["zeros"] == "all odd k >= 3"
    assert rows["relu2"]["zeros"] == "all even k >= 4" and rows["abs"]["zeros"] == "all odd k >= 3"
    assert abs(sp.mu["erf"][0]) < 1e-15 and abs(sp.mu["abs"][1]) < 1e-15
    assert np.sum(sp.mu["erf"] * S.multiplicity(3, k)) == pytest.approx(rows["erf"]["kappa(1)"], rel=1e-12)


def test_fit_geometric_recovers_a_known_sequence():
    k = np.arange(60)
    mu = 3.0 * (k + 0.5) ** -1.5 * 2.5 ** -k.astype(float)
    r, b, C = S.fit_geometric(k, mu, kmin=5, offset=0.5)
    assert (r, b, C) == pytest.approx((2.5, -1.5, 3.0), rel=1e-10)
    with pytest.raises(ValueError, match="at least 4 eigenvalues"):
        S.fit_geometric(k[:6], mu[:6], kmin=3)


def test_activation_names_and_errors():
    import ntkfast as nf
    assert S.activation_layer("relu2") == nf.RectifiedMonomial(2) and S.activation_layer(" GELU ") == nf.Gelu()
    assert S.activation_label(nf.LeakyRelu(0.1)) == "leaky" and S.activation_label(nf.Erf(1, 2)).startswith("Erf(")
    assert S.with_activation(nf.presets.fc(1), "erf") == nf.serial(nf.Dense(2 ** 0.5), nf.Erf(), nf.Dense())
    with pytest.raises(ValueError, match=r"activation must be one of relu, .*; got 'tanh'"):
        S.activation_layer("tanh")
    with pytest.raises(ValueError, match="activation layer"):
        S.ActivationKernel(nf.LayerNorm())
    with pytest.raises(ValueError, match="kind must be 'ntk' or 'nngp'"):
        S.ActivationKernel("erf", kind="cntk")
    with pytest.raises(ValueError, match="w_std must be a positive finite number"):
        S.ActivationKernel("erf", w_std=0)
    with pytest.raises(ValueError, match="each activation once; got erf"):
        S.parse_activations("erf,relu,erf")
    with pytest.raises(ValueError, match="must contain ReLU"):
        S.with_activation(nf.serial(nf.Dense(), nf.Erf(), nf.Dense()), "gelu")


def test_cli_activation(tmp_path, capsys):
    from ntkfast.cli import main
    out = tmp_path / "a.png"
    assert main(["spectrum", "--activation", "relu,erf", "--kmax", "60", "--device", "cpu", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.stat().st_size > 1000
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith(("relu ", "erf "))}
    assert "k^-3" in rows["relu"] and "r = 2.000" in rows["erf"] and "all even k >= 2" in rows["erf"]
    assert main(["spectrum", "--activation", "tanh", "--out", str(out)]) == 2
    assert "--activation must be one of" in capsys.readouterr().err
    assert main(["spectrum", "--activation", "erf", "--window", "20", "--out", str(out)]) == 2
    assert "--window must be 'lo,hi'" in capsys.readouterr().err
