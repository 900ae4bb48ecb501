"""ntkfast.predict: training dynamics of the infinite network against direct numerical integration of the
gradient-flow ODE, explicit discrete steps, closed forms (KRR, GP posterior), and bad inputs."""
import warnings

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import ntkfast as nf
from ntkfast.krr import IllConditionedWarning
from ntkfast.predict import Gaussian, GradientFlow, gp_inference

N, M, K = 10, 4, 2


@pytest.fixture(scope="module")
def blocks():
    rng = np.random.default_rng(3)
    X, Xt = rng.standard_normal((N, 5)), rng.standard_normal((M, 5))
    arch = nf.presets.fc(2)
    g = lambda a, b=None: nf.gram(a, b, arch=arch, dtype="float64", device="cpu")  # noqa: E731
    Y = rng.standard_normal((N, K))
    return g(X), g(Xt, X), g(Xt), Y


def _ode(Th, Tht, K0, Y, rate, times, reg_abs=0.0):
    """Integrate the gradient flow of the mean (df_x = -rate (Th + r I)(f_x - Y), df_t = -rate Th_tx (f_x - Y),
    f = 0 at t = 0) and of the propagator U of the initial outputs (f - mean = U f0, f0 ~ N(0, K0)) with
    DOP853 at tight tolerances. Returns (train mean, test mean, train cov, test cov) at ``times``."""
    n, m, k = Th.shape[0], Tht.shape[0], Y.shape[1]
    A = Th + reg_abs * np.eye(n)
    L = n + m

    def rhs(_, z):
        f = z[:(n + m) * k].reshape(n + m, k)
        U = z[(n + m) * k:].reshape(n + m, L)
        r = f[:n] - Y
        df = -rate * np.concatenate([A @ r, Tht @ r])
        dU = -rate * np.concatenate([A @ U[:n], Tht @ U[:n]])
        return np.concatenate([df.ravel(), dU.ravel()])

    z0 = np.concatenate([np.zeros((n + m) * k), np.eye(L).ravel()])
    sol = solve_ivp(rhs, (0.0, max(times)), z0, method="DOP853", t_eval=times, rtol=1e-13, atol=1e-14)
    assert sol.success
    out = []
    for j in range(len(times)):
        f = sol.y[:(n + m) * k, j].reshape(n + m, k)
        U = sol.y[(n + m) * k:, j].reshape(n + m, L)
        C = U @ K0 @ U.T
        out.append((f[:n], f[n:], C[:n, :n], C[n:, n:]))
    return [np.stack(a) for a in zip(*out)]


@pytest.mark.parametrize("kind,lr,reg", [("ntk", 1.0, 0.0), ("ntk", 0.3, 1e-2), ("nngp", 2.0, 0.0)])
def test_matches_ode(blocks, kind, lr, reg):
    k, kt, ktt, Y = blocks
    times = np.array([0.0, 0.7, 5.0, 40.0, 300.0])
    flow = GradientFlow(k, Y, kind=kind, learning_rate=lr, diag_reg=reg, device="cpu")
    Th, Tht = getattr(k, kind), getattr(kt, kind)
    K0 = np.block([[k.nngp, kt.nngp.T], [kt.nngp, ktt.nngp]])       # joint NNGP of (train, test) at init
    mx, mt, cx, ct = _ode(Th, Tht, K0, Y, lr / Y.size, times, reg_abs=flow.diag_reg_absolute)
    # the flow reaches a visibly different state at each time (not a trivial comparison)
    assert np.abs(mt[-1] - mt[1]).max() > 0.1
    g = flow.predict(times, kt, ktt, compute_cov=True)
    assert np.abs(flow.mean(times) - mx).max() <= 1e-8
    assert np.abs(g.mean - mt).max() <= 1e-8
    assert np.abs(g.covariance - ct).max() <= 1e-8
    # (with diag_reg, neural-tangents' NNGP train covariance is V diag((lam + r) e^2) V^T: the initial
    # covariance is taken to be K + r I there, which no ODE from f0 ~ N(0, K) reproduces)
    if reg == 0.0 or kind == "ntk":
        assert np.abs(flow.covariance(times) - cx).max() <= 1e-8


def test_discrete_steps_match_iteration(blocks):
    k, kt, ktt, Y = blocks
    s = Y.size
    flow = GradientFlow(k, Y, kind="ntk", learning_rate=1.0, device="cpu")
    lr = 0.95 * flow.max_learning_rate            # close to the limit: oscillating top mode, still stable
    d = GradientFlow(k, Y, kind="ntk", learning_rate=lr, discrete=True, device="cpu")
    assert d.max_learning_rate == pytest.approx(flow.max_learning_rate, rel=1e-14)
    fx, ft = np.zeros((N, K)), np.zeros((M, K))
    L = N + M
    U = np.eye(L)
    K0 = np.block([[k.nngp, kt.nngp.T], [kt.nngp, ktt.nngp]])
    steps = [0, 1, 7, 60]
    got_m, got_c = d.mean(steps, kt), d.covariance(steps, kt, ktt)
    got_x = d.mean(steps)
    for i in range(max(steps) + 1):
        if i in steps:
            j = steps.index(i)
            assert np.abs(got_m[j] - ft).max() <= 1e-12
            assert np.abs(got_x[j] - fx).max() <= 1e-12
            C = U @ K0 @ U.T
            assert np.abs(got_c[j] - C[N:, N:]).max() <= 1e-12 * np.abs(C).max()
        r = fx - Y
        ft, fx = ft - lr / s * kt.ntk @ r, fx - lr / s * k.ntk @ r
        U = np.concatenate([U[:N] - lr / s * k.ntk @ U[:N], U[N:] - lr / s * kt.ntk @ U[:N]])


def test_infinite_time_is_krr_and_gp(blocks):
    k, kt, ktt, Y = blocks
    ridge = 1e-3
    flow = GradientFlow(k, Y, kind="ntk", diag_reg=ridge, device="cpu")
    want = kt.ntk @ nf.krr.solve(k.ntk, Y, ridge, device="cpu")
    assert np.abs(flow.mean(np.inf, kt) - want).max() <= 1e-10 * np.abs(want).max()
    # long finite times converge to it
    assert np.abs(flow.mean(1e9, kt) - want).max() <= 1e-8
    g = gp_inference(k, Y, kt, ktt, kind="nngp", diag_reg=ridge, device="cpu")
    H = k.nngp + ridge * np.trace(k.nngp) / N * np.eye(N)
    assert isinstance(g, Gaussian)
    assert np.abs(g.mean - kt.nngp @ np.linalg.solve(H, Y)).max() <= 1e-10
    assert np.abs(g.covariance - (ktt.nngp - kt.nngp @ np.linalg.solve(H, kt.nngp.T))).max() <= 1e-10
    # ntkgp: the NTK as the prior covariance
    Ht = k.ntk + ridge * np.trace(k.ntk) / N * np.eye(N)
    g = gp_inference(k, Y, kt, ktt, kind="ntkgp", diag_reg=ridge, device="cpu")
    assert np.abs(g.covariance - (ktt.ntk - kt.ntk @ np.linalg.solve(Ht, kt.ntk.T))).max() <= 1e-10
    # without k_test_test: no covariance; on the train set: mean Y, covariance 0
    assert gp_inference(k, Y, kt, kind="ntk", diag_reg=ridge, device="cpu").covariance is None
    g = gp_inference(k, Y, None, True, kind="ntk", diag_reg=ridge, device="cpu")
    assert np.abs(g.mean - Y).max() <= 1e-10 and np.abs(g.covariance).max() <= 1e-10


def test_shapes_and_loss_curves(blocks):
    k, kt, ktt, Y = blocks
    flow = GradientFlow(k, Y[:, 0], device="cpu")                       # 1-d targets: K = 1
    assert flow.size == N and flow.outputs == 1
    assert flow.mean(2.0).shape == (N,) and flow.mean([1.0, 2.0], kt).shape == (2, M)
    assert flow.covariance(2.0).shape == (N, N) and flow.covariance([1, 2], kt, ktt).shape == (2, M, M)
    assert flow.dual_coef([1.0, 3.0]).shape == (2, N)
    assert np.abs(kt.ntk @ flow.dual_coef(3.0) - flow.mean(3.0, kt)).max() <= 1e-13
    flow = GradientFlow(k, Y, device="cpu")
    t = np.logspace(-1, 3, 9)
    lc = flow.loss_curves(t, kt, Y[:M])
    want_tr = ((flow.mean(t) - Y[None]) ** 2).mean(axis=(1, 2)) / 2
    want_te = ((flow.mean(t, kt) - Y[None, :M]) ** 2).mean(axis=(1, 2)) / 2
    assert np.abs(lc.train - want_tr).max() <= 1e-13 and np.abs(lc.test - want_te).max() <= 1e-13
    assert np.all(np.diff(lc.train) < 0)                                # gradient flow decreases the loss
    # ensemble: the expected loss of one network adds half the mean variance (diagonal of the covariance)
    le = flow.loss_curves(t, kt, Y[:M], k_test_test=np.diag(ktt.nngp), ensemble=True)
    var_tr = np.diagonal(flow.covariance(t), axis1=1, axis2=2).mean(axis=1)
    var_te = np.diagonal(flow.covariance(t, kt, ktt), axis1=1, axis2=2).mean(axis=1)
    assert np.abs(le.train - (want_tr + var_tr / 2)).max() <= 1e-12
    assert np.abs(le.test - (want_te + var_te / 2)).max() <= 1e-12


def test_float32_blocks_and_kernels_pair(blocks):
    k, kt, ktt, Y = blocks
    a = GradientFlow(k, Y, device="cpu").mean([1.0, 10.0], kt)
    b = GradientFlow(k.ntk, Y, device="cpu").mean([1.0, 10.0], kt.ntk)
    c = GradientFlow(k.ntk.astype(np.float32), Y, device="cpu").mean([1.0, 10.0], kt.ntk.astype(np.float32))
    assert np.array_equal(a, b)
    assert c.dtype == np.float64 and np.abs(c - a).max() <= 1e-5


def test_bad_inputs(blocks):
    k, kt, ktt, Y = blocks
    with pytest.raises(ValueError, match=r"k_train_train.ntk must be a square"):
        GradientFlow(nf.Kernels(k.nngp, k.ntk[:, :5]), Y)
    with pytest.raises(ValueError, match=r"k_train_train must have shape \(any, any\); got shape \(10,\)"):
        GradientFlow(k.ntk[0], Y)
    with pytest.raises(ValueError, match=r"y_train must have N = 10 rows"):
        GradientFlow(k, Y[:7])
    with pytest.raises(TypeError, match=r"k_train_train must be a real"):
        GradientFlow(k.ntk.astype(complex), Y)
    with pytest.raises(ValueError, match="symmetric"):
        GradientFlow(k.ntk + np.triu(np.ones((N, N)), 1), Y)
    with pytest.raises(ValueError, match="finite"):
        GradientFlow(np.where(np.eye(N) > 0, np.nan, k.ntk), Y)
    indefinite = k.ntk.copy()
    indefinite[0, 1] = indefinite[1, 0] = 2 * np.sqrt(k.ntk[0, 0] * k.ntk[1, 1])   # a 2 x 2 minor < 0
    with pytest.raises(ValueError, match=r"k_train_train must be positive semi-definite.*smallest eigenvalue"):
        GradientFlow(indefinite, Y)
    flow = GradientFlow(k, Y, device="cpu")
    with pytest.raises(ValueError, match=r"k_test_train.ntk must have shape \(any, 10\); got shape \(4, 9\)"):
        flow.mean(1.0, nf.Kernels(kt.nngp, kt.ntk[:, :9]))
    with pytest.raises(ValueError, match=r"k_test_test must have shape \(4, 4\); got shape \(3, 4\)"):
        flow.covariance(1.0, kt, ktt.nngp[:3])
    with pytest.raises(ValueError, match="needs k_test_test"):
        flow.covariance(1.0, kt)
    with pytest.raises(ValueError, match="need the NNGP train x train block"):
        GradientFlow(k.ntk, Y).covariance(1.0)
    with pytest.raises(ValueError, match=r"training time cannot be negative.*\[-1.0\]"):
        flow.mean(-1.0)
    with pytest.raises(ValueError, match="NaN"):
        flow.mean([1.0, np.nan])
    with pytest.raises(TypeError, match="t must be"):
        flow.mean("10")
    with pytest.raises(ValueError, match=r"learning_rate must be a finite number > 0"):
        GradientFlow(k, Y, learning_rate=0.0)
    with pytest.raises(TypeError, match=r"learning_rate must be a real number"):
        GradientFlow(k, Y, learning_rate="fast")
    with pytest.raises(ValueError, match=r"diag_reg must be a finite number >= 0"):
        GradientFlow(k, Y, diag_reg=-1e-3)
    with pytest.raises(ValueError, match="kind must be 'ntk' or 'nngp'"):
        GradientFlow(k, Y, kind="cntk")
    # discrete steps: a learning rate at or above 2 N K / lambda_max is refused, naming the limit
    lim = flow.max_learning_rate
    with pytest.raises(ValueError, match=r"learning_rate = .* stability limit .* use learning_rate < "):
        GradientFlow(k, Y, learning_rate=lim * 1.01, discrete=True)
    with pytest.raises(ValueError, match="stability limit"):
        GradientFlow(k, Y, learning_rate=lim, discrete=True)
    GradientFlow(k, Y, learning_rate=lim * 1.01)              # gradient flow has no such limit
    with pytest.raises(ValueError, match="whole numbers of steps"):
        GradientFlow(k, Y, learning_rate=lim / 2, discrete=True).mean(2.5)
    with pytest.raises(ValueError, match="y_test must have shape"):
        flow.loss_curves(1.0, kt, Y)
    with pytest.raises(ValueError, match="go together"):
        flow.loss_curves(1.0, kt)
    with pytest.raises(ValueError, match="k_train_train.nngp must be positive semi-definite"):
        GradientFlow(nf.Kernels(indefinite, k.ntk), Y).covariance(1.0)


def test_ill_conditioned_infinite_time_warns(blocks):
    k, _, _, Y = blocks
    idx = [0] + list(range(N - 1))
    Kd = k.ntk[np.ix_(idx, idx)]            # a duplicated training point: a rounding-level eigenvalue
    flow = GradientFlow(Kd, Y, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow.mean(100.0)                    # finite times are always well defined
    with pytest.warns(IllConditionedWarning, match="dropped"):
        f = flow.mean(np.inf)
    # the dropped mode (the difference of the two copies) is not fitted: the train outputs are the projection
    # of Y on the Gram's range {v : v_0 = v_1}: both copies predict the mean of their targets, the rest fits
    assert np.abs(f[0] - (Y[0] + Y[1]) / 2).max() <= 1e-8 and np.abs(f[1] - (Y[0] + Y[1]) / 2).max() <= 1e-8
    assert np.abs(f[2:] - Y[2:]).max() <= 1e-8


@pytest.mark.gpu
def test_cupy_matches_numpy(blocks):
    import cupy
    k, kt, ktt, Y = blocks
    t = [0.5, 5.0, np.inf]
    ref = GradientFlow(k, Y, device="cpu").predict(t, kt, ktt, compute_cov=True)
    kc = nf.Kernels(cupy.asarray(k.nngp), cupy.asarray(k.ntk))
    got = GradientFlow(kc, Y).predict(t, kt, ktt, compute_cov=True)
    assert isinstance(got.mean, cupy.ndarray)
    assert np.abs(got.mean.get() - ref.mean).max() <= 1e-10
    assert np.abs(got.covariance.get() - ref.covariance).max() <= 1e-10
    got = GradientFlow(k, Y, device="cuda").mean(t, kt)
    assert isinstance(got, np.ndarray) and np.abs(got - ref.mean).max() <= 1e-10
