"""Tests of ntkfast.taylor: Taylor terms, sign randomization, gradients, the learning claim, bad inputs."""
import itertools
import json
import math

import numpy as np
import pytest

from ntkfast import taylor as T

EPS = np.finfo(np.float64).eps
SMOOTH = ("tanh", "softplus", "quadratic", "cubic")


def _net(act, d=5, m=6, seed=1):
    return T.TwoLayer(d, m, act, seed=seed)


def _manual_network(net, X, W):
    """f_W(x) written out neuron by neuron, independently of the vectorized code."""
    out = np.zeros(X.shape[0])
    for r in range(net.m):
        out += net.a[r] * T.activation(net.activation, X @ (net.W0[r] + W[r])) / math.sqrt(net.m)
    return out


# ---------------------------------------------------------------------------------------------------------
# activations


@pytest.mark.parametrize("act", T.ACTIVATIONS)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_activation_derivatives_match_finite_differences(act, k):
    z = np.linspace(-3, 3, 41) + 0.013        # avoids relu's kink at 0
    h = 1e-5
    fd = (T.activation(act, z + h, k - 1) - T.activation(act, z - h, k - 1)) / (2 * h)
    # central difference: truncation h^2/6 |f'''| (|f'''| <= 6 here) plus rounding ~ eps |f| / h
    tol = h * h + 10 * EPS * (1 + np.abs(T.activation(act, z, k - 1))) / h
    np.testing.assert_allclose(T.activation(act, z, k), fd, rtol=0, atol=tol.max())


def test_softplus_is_stable_for_large_arguments():
    z = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    np.testing.assert_allclose(T.activation("softplus", z), [0.0, math.exp(-40), math.log(2), 40.0, 800.0],
                               rtol=1e-15, atol=1e-300)


# ---------------------------------------------------------------------------------------------------------
# Taylor terms


def test_symmetric_initialisation_gives_zero_network_and_pairs():
    net = _net("softplus", d=7, m=10)
    X = T.sphere(9, 7, seed=0)
    assert np.array_equal(net.network(X, np.zeros((10, 7))), np.zeros(9))
    np.testing.assert_array_equal(net.W0[:5], net.W0[5:])
    np.testing.assert_array_equal(net.a[:5], -net.a[5:])


@pytest.mark.parametrize("act", ["tanh", "softplus"])
def test_taylor_series_matches_network_to_order_k_plus_1(act):
    rng = np.random.default_rng(0)
    net = _net(act, d=6, m=8)
    X = T.sphere(20, 6, seed=3)
    W = rng.standard_normal((8, 6)) / math.sqrt(6)
    np.testing.assert_allclose(net.network(X, W), _manual_network(net, X, W), rtol=1e-13, atol=1e-15)
    for order in (1, 2, 3):
        errs = []
        for eps in (0.04, 0.01):
            partial = sum(net.taylor_term(X, eps * W, k) for k in range(1, order + 1))
            errs.append(np.abs(net.network(X, eps * W) - partial).max())
        # remainder O(eps^(order+1)): shrinking eps by 4 shrinks it by about 4^(order+1)
        ratio = errs[0] / errs[1]
        assert 4 ** (order + 1) / 1.5 < ratio < 4 ** (order + 1) * 1.5, (order, errs)


@pytest.mark.parametrize("act,order", [("quadratic", 2), ("cubic", 3)])
def test_taylor_series_is_exact_for_polynomial_activations(act, order):
    rng = np.random.default_rng(1)
    net = _net(act, d=5, m=6)
    X = T.sphere(11, 5, seed=2)
    W = rng.standard_normal((6, 5))                 # large W: exactness, not asymptotics
    f = net.network(X, W)
    s = sum(net.taylor_term(X, W, k) for k in range(1, order + 1))
    np.testing.assert_allclose(s, f, rtol=0, atol=1e3 * EPS * np.abs(f).max())
    if order == 2:   # third derivative 0: no third-order term
        assert np.array_equal(net.taylor_term(X, W, 3), np.zeros(11))


def test_taylor_term_formula_against_a_loop():
    rng = np.random.default_rng(2)
    net = _net("tanh", d=4, m=6)
    X = T.sphere(5, 4, seed=4)
    W = rng.standard_normal((6, 4))
    for k in (1, 2, 3):
        want = np.zeros(5)
        for r in range(6):
            want += (net.a[r] * T.activation("tanh", X @ net.W0[r], k) / math.factorial(k)
                     * (X @ W[r]) ** k / math.sqrt(6))
        np.testing.assert_allclose(net.taylor_term(X, W, k), want, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------------------
# sign randomization


def test_sign_flips_keep_f2_and_flip_f1_exactly():
    rng = np.random.default_rng(3)
    net = _net("softplus", d=5, m=8)
    X = T.sphere(7, 5, seed=5)
    W = rng.standard_normal((8, 5)) * 0.3
    s = rng.choice([-1.0, 1.0], size=8)[:, None]
    np.testing.assert_allclose(net.taylor_term(X, s * W, 2), net.taylor_term(X, W, 2), rtol=1e-14, atol=1e-16)
    # f^(1) is linear in each w_r: the two signs of the pair (S, -S) cancel to rounding
    f1 = net.taylor_term(X, s * W, 1)
    np.testing.assert_allclose(f1 + net.taylor_term(X, -s * W, 1), 0, atol=10 * EPS * np.abs(f1).max())


def test_sign_average_equals_enumeration_over_all_sign_vectors():
    rng = np.random.default_rng(4)
    m, d = 6, 4
    for act in ("tanh", "softplus", "cubic"):
        net = _net(act, d=d, m=m)
        X = T.sphere(5, d, seed=6)
        W = rng.standard_normal((m, d)) * 0.5
        allf, allf1 = [], []
        for signs in itertools.product([-1.0, 1.0], repeat=m):
            s = np.array(signs)[:, None]
            allf.append(net.network(X, s * W))
            allf1.append(net.taylor_term(X, s * W, 1))
        np.testing.assert_allclose(net.sign_average(X, W), np.mean(allf, axis=0), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.mean(allf1, axis=0), 0, atol=100 * EPS * np.abs(allf1).max())
        if act == "cubic":   # sigma of degree 3: the even part is f^(2) exactly (f^(4) = 0)
            np.testing.assert_allclose(net.sign_average(X, W), net.taylor_term(X, W, 2), rtol=1e-12, atol=1e-14)


def test_random_sign_average_of_f1_within_sampling_error():
    """Averaging f^(1) over K independent draws: mean 0, standard deviation sqrt(sum_r g_r^2 / K)."""
    rng = np.random.default_rng(5)
    net = _net("tanh", d=6, m=40)
    X = T.sphere(3, 6, seed=7)
    W = rng.standard_normal((40, 6)) * 0.2
    K = 4000
    S = rng.choice([-1.0, 1.0], size=(K, 40))
    g = T.activation("tanh", X @ net.W0.T, 1) * (X @ W.T) * net.a / math.sqrt(40)     # per-neuron f^(1) terms
    draws = S @ g.T                                                                     # (K, 3)
    np.testing.assert_allclose(draws[0], net.taylor_term(X, S[0][:, None] * W, 1), rtol=1e-12, atol=1e-15)
    sd = np.sqrt((g ** 2).sum(axis=1) / K)
    assert (np.abs(draws.mean(axis=0)) < 5 * sd).all()
    assert np.abs(draws.mean(axis=0)).max() < 0.2 * np.abs(g).sum(axis=1).max()


def test_tanh_f2_is_odd_softplus_f2_is_even():
    rng = np.random.default_rng(6)
    X = T.sphere(8, 5, seed=8)
    W = rng.standard_normal((6, 5))
    f_t = _net("tanh").taylor_term
    f_s = _net("softplus").taylor_term
    np.testing.assert_allclose(f_t(-X, W, 2), -f_t(X, W, 2), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(f_s(-X, W, 2), f_s(X, W, 2), rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------------------------------------
# gradients


def _fd_check(obj, W, rng):
    """Directional derivative by central differences vs <grad, E>; tolerance from truncation + rounding."""
    obj.resample()
    L, G = obj.value_and_grad(W)
    assert abs(L - obj.value(W)) <= 10 * EPS * max(abs(L), 1)
    for _ in range(2):
        E = rng.standard_normal(W.shape)
        E /= np.linalg.norm(E)
        h = 1e-5
        fd = (obj.value(W + h * E) - obj.value(W - h * E)) / (2 * h)
        tol = 1e-6 * max(1.0, abs(L), np.linalg.norm(G)) + 100 * EPS * abs(L) / h
        assert abs(fd - float((G * E).sum())) < tol, (obj.model, obj.net.activation, fd, float((G * E).sum()))


@pytest.mark.parametrize("act", T.ACTIVATIONS)
@pytest.mark.parametrize("model", ["linearized", "quadratic", "full", "randomized"])
def test_gradients_match_finite_differences(act, model):
    if act == "relu" and model in ("quadratic", "randomized"):
        pytest.skip("refused: relu has sigma'' = 0 (tested in test_bad_inputs)")
    rng = np.random.default_rng(7)
    net = _net(act, d=5, m=6)
    X = T.sphere(9, 5, seed=9)
    y = rng.standard_normal(9)
    W = 0.3 * rng.standard_normal((6, 5))
    for reg, anti in ((0.0, True), (0.2, False)):
        obj = T.Objective(net, model, X, y, reg=reg, rng=np.random.default_rng(1), antithetic=anti)
        _fd_check(obj, W, rng)


@pytest.mark.parametrize("act", SMOOTH)
def test_hierarchical_gradient_matches_finite_differences(act):
    rng = np.random.default_rng(8)
    rep = T.Representation(4, 5, seed=2)
    H = rep(T.sphere(12, 4, seed=10))
    net = T.TwoLayer(rep.dim, 6, act, seed=3)
    obj = T.Objective(net, "quadratic", H, rng.standard_normal(12))
    _fd_check(obj, 0.2 * rng.standard_normal((6, rep.dim)), rng)


def test_randomized_objective_uses_the_draw_and_its_mirror():
    rng = np.random.default_rng(9)
    net = _net("softplus", d=5, m=6)
    X = T.sphere(9, 5, seed=11)
    y = rng.standard_normal(9)
    W = 0.5 * rng.standard_normal((6, 5))
    obj = T.Objective(net, "randomized", X, y, rng=np.random.default_rng(2))
    obj.resample()
    s = obj.signs[:, None]
    want = 0.25 * (np.mean((net.network(X, s * W) - y) ** 2) + np.mean((net.network(X, -s * W) - y) ** 2))
    assert abs(obj.value(W) - want) < 10 * EPS * want
    draws = set()
    for _ in range(20):          # fresh draws: 20 identical ones would have probability 2^-(6*19)
        obj.resample()
        draws.add(tuple(obj.signs))
    assert len(draws) > 1


def test_regularizer_value_and_gradient():
    rng = np.random.default_rng(10)
    W = rng.standard_normal((7, 3))
    lam = 0.37
    want = lam * sum(np.linalg.norm(w) ** 4 for w in W) ** 2
    R, G = T.regularizer(W, lam)
    assert abs(R - want) < 1e-13 * want
    E = rng.standard_normal(W.shape)
    h = 1e-6
    fd = (T.regularizer(W + h * E, lam)[0] - T.regularizer(W - h * E, lam)[0]) / (2 * h)
    assert abs(fd - (G * E).sum()) < 1e-6 * abs(fd) + 100 * EPS * R / h
    assert T.regularizer(np.zeros((3, 2)), 1.0)[0] == 0.0


# ---------------------------------------------------------------------------------------------------------
# representation, targets, study helpers


def test_representation_is_isotropic_on_the_sphere():
    rep = T.Representation(6, 12, seed=0)
    H = rep(T.sphere(40000, 6, seed=12))
    assert H.shape == (40000, 1 + 6 + 12)
    np.testing.assert_array_equal(H[:, 0], 1.0)
    Z = H[:, 1:]
    C = Z.T @ Z / len(Z)
    # each entry is a mean of N products: standard error std(z_i z_j) / sqrt(N)
    se = np.sqrt(((Z[:, :, None] * Z[:, None, :]) ** 2).mean(axis=0) / len(Z))
    assert (np.abs(C - np.eye(18)) < 6 * se).all()
    assert (np.abs(Z.mean(axis=0)) < 6 / math.sqrt(len(Z)) * Z.std(axis=0)).all()


def test_polynomial_target_scaling_and_formula():
    tgt = T.PolynomialTarget(9, r=2, p=3, seed=3)
    np.testing.assert_allclose(tgt.betas @ tgt.betas.T, np.eye(2), atol=1e-14)
    X = T.sphere(50000, 9, seed=13)
    y = tgt(X)
    np.testing.assert_allclose(y, tgt.scale * ((X @ tgt.betas.T) ** 3).sum(axis=1), rtol=1e-12, atol=1e-13)
    # Var = 1 up to the Monte Carlo errors of the two estimates (relative sd ~ sqrt(kurtosis / N))
    assert abs(y.var() - 1) < 6 * y.std() * math.sqrt(((y - y.mean()) ** 4).mean() / y.var() ** 2 / 50000)
    # exact moments on the sphere of radius sqrt(d): E (beta^T x)^2 = 1, E (beta^T x)^4 = 3d/(d+2)
    t = T.PolynomialTarget(9, r=1, p=2, seed=1)
    assert abs(t.scale - 1 / math.sqrt(3 * 9 / 11 - 1)) < 0.02 * t.scale


def test_crossing_and_exponent_fit_on_a_synthetic_power_law():
    ns = [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    # error = (n / d^2)^(-1) * 0.1: reaches 0.1 exactly at n = d^2
    recs = [dict(p=2, r=1, d=d, n=n, model="ntk", error=0.1 * d ** 2 / n) for d in (4, 8, 16, 32) for n in ns]
    rows = T.fit_exponents(T.Study(recs, {}), threshold=0.1)
    assert len(rows) == 1
    for d in (4, 8, 16, 32):
        assert abs(rows[0]["nstar"][d] - d ** 2) < 1e-9 * d ** 2
    assert rows[0]["below_grid"] == []
    recs2 = [dict(rec, d=2, error=1e-3) for rec in recs if rec["d"] == 4]
    row = T.fit_exponents(T.Study(recs + recs2, {}), threshold=0.1)[0]
    assert row["below_grid"] == [2] and row["nstar"][2] == 4.0 and abs(row["exponent"] - 2.0) < 1e-9
    assert abs(rows[0]["exponent"] - 2.0) < 1e-9
    assert T.crossing([10, 20], [0.5, 0.3], 0.1) is None
    assert T.crossing([10, 20, 40], [0.05, 0.01, 0.001], 0.1) == 10.0
    # log-log interpolation: errors 0.4 at n = 10 and 0.025 at n = 40 (slope -2) cross 0.1 at n = 20
    assert abs(T.crossing([10, 40], [0.4, 0.025], 0.1) - 20.0) < 1e-9


# ---------------------------------------------------------------------------------------------------------
# learning


def test_quadratic_model_beats_the_infinite_width_ntk_on_a_degree_2_target():
    d, n = 10, 40
    tgt = T.PolynomialTarget(d, 1, 2, seed=0, n_mc=50000)
    X, Xt = T.sphere(n, d, seed=1), T.sphere(1000, d, seed=2)
    y, yt = tgt(X), tgt(Xt)
    quad = T.TaylorModel("quadratic", width=200, steps=800, seed=0).fit(X, y)
    ntk = T.TaylorModel("ntk").fit(X, y)
    e_quad = np.mean((quad.predict(Xt) - yt) ** 2)
    e_ntk = np.mean((ntk.predict(Xt) - yt) ** 2)
    assert e_quad < 0.1, e_quad
    assert e_ntk > 3 * e_quad, (e_ntk, e_quad)
    assert quad.history_.loss[-1] < quad.history_.loss[0]


def test_tanh_quadratic_model_cannot_fit_an_even_target():
    """f^(2) with tanh is odd in x; against the even target (beta^T x)^2 the test MSE is at least
    E f*^2 = 1 + mean^2 (prediction and target are orthogonal under x -> -x)."""
    d = 6
    tgt = T.PolynomialTarget(d, 1, 2, seed=0, n_mc=50000)
    X, Xt = T.sphere(60, d, seed=1), T.sphere(2000, d, seed=2)
    est = T.TaylorModel("quadratic", activation="tanh", width=100, steps=200).fit(X, tgt(X))
    pred = est.predict(Xt)
    np.testing.assert_allclose(est.predict(-Xt), -pred, rtol=1e-12, atol=1e-14)
    assert np.mean((pred - tgt(Xt)) ** 2) > 0.95 * (1 + tgt.mean ** 2)


def test_every_trained_model_reduces_its_loss():
    d, n = 6, 24
    tgt = T.PolynomialTarget(d, 1, 2, seed=0, n_mc=20000)
    X = T.sphere(n, d, seed=1)
    y = tgt(X)
    for model in T.TRAINED:
        est = T.TaylorModel(model, width=100, steps=60, features=3, seed=1).fit(X, y)
        h = est.history_
        assert h.steps == 60
        # the recorded loss of 'randomized' is that of each step's own sign draw: compare the predictor's
        # training MSE instead (W starts near 0, where every model predicts about 0)
        mse0 = np.mean(y ** 2)
        assert np.mean((est.predict(X) - y) ** 2) < 0.5 * mse0, model
        if model != "randomized":
            assert h.loss[-1] < 0.5 * h.loss[0], (model, h.loss[[0, -1]])


def test_fixed_learning_rate_and_noise():
    d, n = 5, 20
    tgt = T.PolynomialTarget(d, 1, 2, seed=0, n_mc=20000)
    X = T.sphere(n, d, seed=1)
    a = T.TaylorModel("linearized", width=20, steps=30, lr=0.5, seed=3).fit(X, tgt(X))
    np.testing.assert_array_equal(a.history_.lr, 0.5)
    b = T.TaylorModel("linearized", width=20, steps=30, lr=0.5, noise=1e-3, seed=3).fit(X, tgt(X))
    # the same start; Langevin noise of temperature 1e-3 moves each coordinate by about sqrt(2 lr T) per step
    diff = np.abs(b.W_ - a.W_).max()
    assert 0 < diff < 30 * math.sqrt(2 * 0.5 * 1e-3) * 6


# ---------------------------------------------------------------------------------------------------------
# bad inputs


def test_bad_inputs_name_argument_expectation_and_value():
    X = T.sphere(10, 4, seed=0)
    y = np.ones(10)
    with pytest.raises(ValueError, match=r"model must be one of .*'quadratic'.*got 'cubic_model'"):
        T.TaylorModel("cubic_model")
    with pytest.raises(ValueError, match=r"activation must be one of .*got 'gelu'"):
        T.TaylorModel("quadratic", activation="gelu")
    with pytest.raises(ValueError, match=r"activation 'relu' has sigma'' = 0"):
        T.TaylorModel("quadratic", activation="relu")
    with pytest.raises(ValueError, match=r"width must be even.*got 7"):
        T.TaylorModel("quadratic", width=7)
    with pytest.raises(ValueError, match=r"steps must be >= 0; got -1"):
        T.TaylorModel("quadratic", steps=-1)
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0.0; got -0.1"):
        T.TaylorModel("quadratic", lr=-0.1)
    with pytest.raises(ValueError, match=r"y must have shape \(10,\).*got shape \(9,\)"):
        T.TaylorModel("quadratic", steps=1).fit(X, y[:9])
    with pytest.raises(ValueError, match=r"X must have shape \(N, d\); got shape \(10,\)"):
        T.TaylorModel("quadratic", steps=1).fit(X[:, 0], y)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"X must be finite; got 1 NaN/inf entries of 40"):
        T.TaylorModel("quadratic", steps=1).fit(bad, y)
    with pytest.raises(ValueError, match=r"y must be finite; got 1 NaN/inf"):
        T.TaylorModel("quadratic", steps=1).fit(X, np.r_[y[:9], np.inf])
    with pytest.raises(TypeError, match=r"X must hold real numbers.*dtype complex128"):
        T.TaylorModel("quadratic", steps=1).fit(X.astype(complex), y)
    est = T.TaylorModel("quadratic", width=4, steps=1).fit(X, y)
    with pytest.raises(ValueError, match=r"X must have shape \(N, 4\) \(d = 4 as in training\); got shape \(3, 5\)"):
        est.predict(np.ones((3, 5)))
    with pytest.raises(RuntimeError, match="not fitted"):
        T.TaylorModel("quadratic").predict(X)
    net = _net("tanh", d=4, m=6)
    with pytest.raises(ValueError, match=r"W must have shape \(m, d\) = \(6, 4\); got \(6, 5\)"):
        net.network(X, np.zeros((6, 5)))
    with pytest.raises(ValueError, match=r"k must be 0, 1, 2 or 3.*got 4"):
        net.taylor_term(X, np.zeros((6, 4)), 4)
    with pytest.raises(ValueError, match=r"reg must be a finite number >= 0.0; got -1"):
        T.regularizer(np.zeros((2, 2)), -1)
    with pytest.raises(ValueError, match=r"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' \(N a GPU index\); got 'tpu'"):
        T.TaylorModel("quadratic", device="tpu")
    with pytest.raises(ValueError, match=r"ridges must be a non-empty sequence of relative ridges >= 0; got \(\)"):
        T.TaylorModel("ntk", ridges=())
    with pytest.raises(ValueError, match=r"ridges\[i\] must be a finite number >= 0.0; got -1.0"):
        T.TaylorModel("ntk", ridges=(1e-3, -1.0))
    with pytest.raises(ValueError, match=r"r must be <= d = 3"):
        T.PolynomialTarget(3, r=4)
    with pytest.raises(ValueError, match=r"models\[i\] must be one of .*got 'nope'"):
        T.run_study(models=("nope",))


def test_cuda_request_without_cupy_says_why():
    try:
        import cupy  # noqa: F401
        pytest.skip("cupy is installed")
    except ImportError:
        pass
    from ntkfast.device import array_module
    with pytest.raises(RuntimeError, match=r"device='cuda' needs cupy.*pip install 'ntkfast\[gpu\]'"):
        array_module("cuda")
    assert array_module("auto") is np


# ---------------------------------------------------------------------------------------------------------
# command line


def test_cli_runs_a_tiny_study_and_reloads_it(tmp_path, capsys):
    from ntkfast.cli import main
    png, js = tmp_path / "t.png", tmp_path / "t.json"
    rc = main(["taylor", "--dims", "4,6", "--ns", "8,32", "--models", "quadratic,ntk", "--steps", "100",
               "--width", "20", "--n-test", "200", "--out", str(png), "--json", str(js)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| p=2, r=1 | quadratic | 1 |" in out and "| p=2, r=1 | ntk | 2 |" in out
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    blob = json.loads(js.read_text())
    assert len(blob["records"]) == 2 * 2 * 2 and {r["model"] for r in blob["records"]} == {"quadratic", "ntk"}
    rc = main(["taylor", "--load", str(js), "--out", str(tmp_path / "u.png")])
    assert rc == 0 and "| p=2, r=1 | ntk | 2 |" in capsys.readouterr().out


def test_cli_bad_arguments_exit_2(tmp_path, capsys):
    from ntkfast.cli import main
    assert main(["taylor", "--models", "quadratic,bogus", "--out", str(tmp_path / "x.png")]) == 2
    assert "--models must be one of" in capsys.readouterr().err
    assert main(["taylor", "--dims", "8,x", "--out", str(tmp_path / "x.png")]) == 2
    assert "--dims must be comma-separated integers; got '8,x'" in capsys.readouterr().err


def test_randomized_objective_is_unbiased_for_the_sign_expectation():
    """E_S L(W0 + S W) = 1/(2N) sum_i [(E_S f(x_i) - y_i)^2 + Var_S f(x_i)], with Var_S f = sum_r g_r^2 for the
    per-neuron odd parts g_r = a_r (sigma(z0 + u) - sigma(z0 - u)) / (2 sqrt m): the mean of the sampled
    objective over K draws must match within its standard error."""
    rng = np.random.default_rng(11)
    net = _net("softplus", d=5, m=8)
    X = T.sphere(10, 5, seed=14)
    y = rng.standard_normal(10)
    W = 0.7 * rng.standard_normal((8, 5))
    Z0, U = X @ net.W0.T, X @ W.T
    g = net.a * (T.activation("softplus", Z0 + U) - T.activation("softplus", Z0 - U)) / (2 * math.sqrt(8))
    exact = 0.5 * np.mean((net.sign_average(X, W) - y) ** 2 + (g ** 2).sum(axis=1))
    for anti in (True, False):
        obj = T.Objective(net, "randomized", X, y, rng=np.random.default_rng(5), antithetic=anti)
        vals = []
        for _ in range(3000):
            obj.resample()
            vals.append(obj.value(W))
        vals = np.array(vals)
        assert abs(vals.mean() - exact) < 5 * vals.std() / math.sqrt(len(vals)), (anti, vals.mean(), exact)


def test_ntk_ridge_matches_a_direct_solve_with_the_reference_kernel():
    from ntkfast import reference
    d = 6
    X, Xt = T.sphere(30, d, seed=15), T.sphere(7, d, seed=16)
    y = T.PolynomialTarget(d, 1, 2, seed=2, n_mc=20000)(X)
    pred, ridge = T.ntk_ridge(X, y, Xt, depth=2, ridges=(1e-2,))
    assert ridge == 1e-2
    K = reference.fc_closed_form(X, depth=2, kind="ntk")
    Kt = reference.fc_closed_form(Xt, X, depth=2, kind="ntk")
    alpha = np.linalg.solve(K + 1e-2 * np.trace(K) / 30 * np.eye(30), y)
    # condition number of K + ridge I is at most 1 + 30 / 1e-2; float64 solve error ~ cond * eps
    np.testing.assert_allclose(pred, Kt @ alpha, rtol=1e-9, atol=1e-9 * np.abs(Kt @ alpha).max())


def test_study_plot_is_readable(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ntkfast.plots import plot_taylor_study
    from ntkfast.taylor import Study
    models = ["quadratic", "randomized", "linearized", "ntk"]
    records = [dict(p=2, r=1, model=m, d=d, n=n, error=1.0 / n) for m in models for d in (8, 16) for n in (4, 64)]
    study = Study(records, dict(targets=[[2, 1]], models=models, dims=[8, 16], ns=[4, 64]))
    seen = {}
    real = plt.Figure.savefig

    def grab(fig, path, *a, **k):
        seen["legends"] = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
        seen["axes_legends"] = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        seen["title_sizes"] = [ax.title.get_fontsize() for ax in fig.axes if ax.get_visible()]
        seen["px"] = fig.get_size_inches() * k.get("dpi", fig.dpi)
        return real(fig, path, *a, **k)
    monkeypatch.setattr(plt.Figure, "savefig", grab)
    plot_taylor_study(study, tmp_path / "t.png", threshold=0.1)
    assert seen["legends"] == ["d = 8", "d = 16", "test MSE = 0.1 (defines n*)"]   # one legend, for all panels
    assert seen["axes_legends"] == []
    assert min(seen["title_sizes"]) >= 10
    assert seen["px"][0] >= 1200 and seen["px"][1] >= 300            # was 832 x 184 for these four panels
