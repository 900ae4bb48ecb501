"""The spectral bias of the infinite network's training dynamics, and the ``ntkfast dynamics`` study.

Gradient flow on the squared loss with a dot-product kernel on the sphere fits each spherical-harmonic
degree k of the target at its own rate: with the loss ``||f - y||^2 / (2 n)`` (the convention of
:mod:`ntkfast.predict`), the train Gram divided by n tends to the kernel's integral operator, whose
eigenvalue on degree k is the Mercer eigenvalue ``mu_k`` of :mod:`ntkfast.spectrum`; the degree-k part of
the error then decays like ``exp(-mu_k t)`` and halves at ``t_k ~ ln 2 / mu_k``. The two-layer ReLU NTK
has ``mu_k = 0`` for odd k >= 3 (Bietti & Mairal 2019), so gradient flow never learns those degrees; a
deeper fully-connected NTK, or a bias in the first layer, has no such zeros.

Measurement (exact, no quadrature): the prediction at time t is ``f_t = sum_i beta_i(t) kappa(<., x_i>)``
(``beta = GradientFlow.dual_coef(t)``), and by Funk-Hecke its degree-k part is
``mu_k sum_i beta_i N(p, k) P_k(<., x_i>)``. The target's degree-k part is built from the same zonal
functions, ``f_k = sum_j a_j N(p, k) P_k(<., z_j>)``, so ``||P_k (f_t - f*)||`` in L2 of the uniform
probability measure is a quadratic form in the Gram ``N(p, k) P_k(<w, w'>)`` of the points
``w in {x_i} U {z_j}`` (``<N P_k(<., u>), N P_k(<., v>)> = N P_k(<u, v>)``). For p = 3 the study also measures
it independently, by product quadrature of the predictions on a grid computed through ntkfast's
test x train Gram.

Its figure is :func:`ntkfast.analyses.plots.plot_dynamics_study`; ``ntkfast dynamics`` is
:mod:`ntkfast.cli.dynamics`.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..validation import check_int, check_real

__all__ = ["StudyKernel", "study_kernels", "bias_ntk", "BiasNTK", "angles", "HarmonicTarget", "zonal_gram",
           "DegreeErrors", "degree_errors", "halving_time", "sphere_study", "sphere_grid",
           "quadrature_degree_errors", "fit_slope", "two_layer_ntk", "finite_width_study",
           "format_finite_width_table", "mnist_study", "format_degree_table", "format_mnist_table",
           "pooled_halving_fit", "jsonable", "LN2"]

LN2 = math.log(2.0)


def _legendre(p, k, t):
    """P_k(t) (dimension-p Legendre polynomial, P_k(1) = 1) for a float64 array t of any shape, by the
    recurrence of :func:`ntkfast.spectrum.legendre_table` with two arrays of t's size in memory."""
    t = np.asarray(t, dtype=np.float64)
    prev, cur = np.ones_like(t), t.copy()
    if k == 0:
        return prev
    for j in range(1, k):
        prev, cur = cur, ((2 * j + p - 2) * t * cur - j * prev) / (j + p - 2)
    return cur


def zonal_gram(p, k, A, B=None):
    """``N(p, k) P_k(<a, b>)`` for unit rows a of A (n, p) and b of B (m, p) (default A): float64 (n, m).

    It is the reproducing kernel of the degree-k spherical harmonics in L2 of the uniform probability
    measure on S^{p-1}: ``<N P_k(<., a>), N P_k(<., b>)> = N P_k(<a, b>)``."""
    from .spectrum import multiplicity
    B = A if B is None else B
    return multiplicity(p, k) * _legendre(p, k, np.clip(A @ B.T, -1.0, 1.0))


# ----------------------------------------------------------------------------------------------------------
# kernels of the study


def bias_ntk(t, b_std=1.0):
    """NTK of ``serial(Dense(sqrt 2, b_std), ReLU(), Dense())`` on inputs of norm sqrt(D), as a function of
    t = <x, x'> / D in [-1, 1] (float64 array, any shape): with ``s = 2 t + b^2``, ``n = 2 + b^2``,
    ``rho = s / n``: ``s kappa0(rho) / 2 + n kappa1(rho) / 2`` (DESIGN section 1). ``b_std = 0`` is the
    two-layer NTK ``t kappa0(t) + kappa1(t)`` of :mod:`ntkfast.spectrum`. See :class:`BiasNTK` for the
    accurate evaluation in the angle."""
    return BiasNTK(b_std)(t)


def _bias_ntk_class():
    from .spectrum import DotProductKernel

    class BiasNTK(DotProductKernel):
        """:func:`bias_ntk` as a :class:`ntkfast.spectrum.DotProductKernel`, evaluated in the angle theta of
        x, x' without cancellation: the first layer's correlation rho has angle
        ``phi = 2 arcsin(sqrt(2 / n) sin(theta / 2))`` (from ``1 - rho = 4 sin^2(theta / 2) / n``), so
        :func:`ntkfast.spectrum.mercer_eigenvalues` integrates a function analytic in theta."""

        def __init__(self, b_std=1.0):
            b = check_real(b_std, "b_std", 0.0)
            self.name, self.depth, self.b_std = "ntk", 1, b

        @property
        def label(self):
            return f"two-layer NTK, bias {self.b_std:g}"

        def __repr__(self):
            return f"BiasNTK(b_std={self.b_std!r})"

        def at_angle(self, theta):
            theta = np.asarray(theta, dtype=np.float64)
            b2 = self.b_std ** 2
            s, n = 2.0 * np.cos(theta) + b2, 2.0 + b2
            phi = 2.0 * np.arcsin(np.minimum(np.sqrt(2.0 / n) * np.sin(theta / 2.0), 1.0))
            k0 = 1.0 - phi / np.pi
            k1 = (np.sin(phi) + (np.pi - phi) * np.cos(phi)) / np.pi
            return s * k0 / 2.0 + n * k1 / 2.0

    return BiasNTK


def BiasNTK(b_std=1.0):  # noqa: N802 - a class built lazily (spectrum imports scipy only when used)
    """The kernel of :func:`bias_ntk` as a :class:`ntkfast.spectrum.DotProductKernel` (accurate in the angle)."""
    return _bias_ntk_class()(b_std)


def angles(A, B=None):
    """Angles between unit rows of A (n, p) and B (m, p), accurate near 0: ``2 arcsin(|a - b| / 2)`` with
    ``|a - b|`` from the differences themselves (an (n, m, p) temporary), not from ``2 - 2 <a, b>``."""
    B = A if B is None else B
    d = np.sqrt(((A[:, None, :] - B[None, :, :]) ** 2).sum(axis=2))
    return 2.0 * np.arcsin(np.minimum(d / 2.0, 1.0))


class StudyKernel:
    """A dot-product kernel of the study: ``label``, ntkfast ``arch`` (a fully-connected net whose NTK on
    inputs ``sqrt(p) x``, x on S^{p-1}, is ``kappa(<x, x'>)``), ``mu`` float64 (kmax + 1,) Mercer eigenvalues
    with the rounding-level ones set to 0, and ``kappa`` (a :class:`ntkfast.spectrum.DotProductKernel`:
    ``kappa(t)``, ``kappa.at_angle(theta)``)."""

    def __init__(self, label, arch, mu, kappa):
        self.label, self.arch, self.mu, self.kappa = label, arch, mu, kappa

    def __repr__(self):
        return f"StudyKernel({self.label!r})"


def study_kernels(p=3, kmax=6, depth=2, b_std=1.0):
    """The three kernels of the study: the two-layer ReLU NTK (``presets.fc(1)``), the deeper NTK of
    ``presets.fc(depth)`` and the two-layer NTK with a first-layer bias ``b_std``. Returns a list of
    :class:`StudyKernel`."""
    from ..kernel import presets
    from ..kernel.arch import Dense, ReLU, serial
    from .spectrum import kernel, mercer_eigenvalues
    p, kmax, depth = check_int(p, "p", 2), check_int(kmax, "kmax", 1), check_int(depth, "depth", 2)
    b_std = check_real(b_std, "b_std", 0.0, strict=True)

    def clean(mu_floor):
        mu, floor = mu_floor
        return np.where(np.abs(mu) < 100.0 * floor, 0.0, mu)

    k1, kd, bias = kernel("ntk", 1), kernel("ntk", depth), BiasNTK(b_std)
    return [
        StudyKernel("two-layer NTK", presets.fc(1), clean(mercer_eigenvalues(k1, p, kmax, return_floor=True)), k1),
        StudyKernel(f"fc({depth}) NTK", presets.fc(depth),
                    clean(mercer_eigenvalues(kd, p, kmax, return_floor=True)), kd),
        StudyKernel(bias.label, serial(Dense(2 ** 0.5, b_std=b_std), ReLU(), Dense()),
                    clean(mercer_eigenvalues(bias, p, kmax, return_floor=True)), bias),
    ]


# ----------------------------------------------------------------------------------------------------------
# the target


class HarmonicTarget:
    """f* = sum_k f_k, one random spherical harmonic f_k of each degree k in ``degrees`` on S^{p-1}, each of
    L2 norm ``norm`` (uniform probability measure).

    f_k(x) = sum_j a_kj N(p, k) P_k(<x, z_kj>) with N(p, k) uniform random centres z_kj and Gaussian a_kj,
    rescaled to the norm (a harmonic of degree k: the zonal functions span that space).
    Attributes: p, degrees (tuple), centres {k: (J, p)}, coef {k: (J,)}. Call on X (n, p) unit rows ->
    float64 (n,); :meth:`component` gives one f_k.
    """

    def __init__(self, p=3, degrees=(1, 2, 3, 4, 5, 6), *, norm=1.0, seed=0):
        from .spectrum import multiplicity, sample_sphere
        self.p = check_int(p, "p", 2)
        self.degrees = tuple(check_int(k, "degree", 1) for k in degrees)
        if not self.degrees:
            raise ValueError("degrees must be a non-empty sequence of ints >= 1")
        rng = np.random.default_rng(seed)
        self.centres, self.coef = {}, {}
        for k in self.degrees:
            J = int(multiplicity(self.p, k))
            Z = sample_sphere(J, self.p, seed=int(rng.integers(2 ** 31)))
            a = rng.standard_normal(J)
            a *= float(norm) / math.sqrt(float(a @ zonal_gram(self.p, k, Z) @ a))
            self.centres[k], self.coef[k] = Z, a

    def component(self, k, X):
        return zonal_gram(self.p, k, np.asarray(X, dtype=np.float64), self.centres[k]) @ self.coef[k]

    def __call__(self, X):
        return sum(self.component(k, X) for k in self.degrees)


class DegreeErrors:
    """||P_k (f - f*)|| (L2, uniform probability measure) for f = sum_i beta_i kappa(<., x_i>), exactly.

    target : HarmonicTarget; kern : StudyKernel (its ``mu``); X (n, p) unit rows. The zonal Grams of X are
    built once (O(n^2) memory per degree); each call then costs O(n^2) per degree and beta.
    Call with beta (n,) or (T, n) -> {k: float64 array of beta's leading shape} for k in target.degrees.
    """

    def __init__(self, target, kern, X):
        self.target, self.degrees = target, target.degrees
        X = np.asarray(X, dtype=np.float64)
        self._parts = {}
        for k in self.degrees:
            Z, a, mu = target.centres[k], target.coef[k], float(kern.mu[k])
            ff = float(a @ zonal_gram(target.p, k, Z) @ a)
            if mu == 0.0:
                self._parts[k] = (mu, None, None, ff)
            else:
                self._parts[k] = (mu, zonal_gram(target.p, k, X), zonal_gram(target.p, k, X, Z) @ a, ff)

    def __call__(self, beta, degrees=None):
        beta = np.asarray(beta, dtype=np.float64)
        B = np.atleast_2d(beta)
        out = {}
        for k in (self.degrees if degrees is None else degrees):
            mu, G, g, ff = self._parts[k]
            if mu == 0.0:
                e2 = np.full(B.shape[0], ff)       # kappa has no degree-k part: f_t never has one
            else:
                e2 = mu * mu * np.einsum("ti,ti->t", B @ G, B) - 2.0 * mu * (B @ g) + ff
            e = np.sqrt(np.maximum(e2, 0.0))
            out[k] = e if beta.ndim == 2 else e[0]
        return out


def degree_errors(target, kern, X, beta):
    """One-shot :class:`DegreeErrors`: {k: ||P_k (f - f*)||} for f = sum_i beta_i kappa(<., x_i>)."""
    return DegreeErrors(target, kern, X)(beta)


def sphere_grid(n_z=32, n_phi=64):
    """Product quadrature on S^2: Gauss-Legendre in z = cos(polar angle) times n_phi equispaced azimuths.
    Returns (points float64 (n_z n_phi, 3), weights float64 (n_z n_phi,) summing to 1); exact for spherical
    polynomials of degree <= min(2 n_z - 1, n_phi - 1)."""
    z, wz = np.polynomial.legendre.leggauss(n_z)
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    Z, PHI = np.meshgrid(z, phi, indexing="ij")
    r = np.sqrt(1 - Z * Z)
    pts = np.stack([r * np.cos(PHI), r * np.sin(PHI), Z], axis=-1).reshape(-1, 3)
    w = (wz[:, None] / 2.0 * np.full(n_phi, 1.0 / n_phi)[None, :]).ravel()
    return pts, w


def quadrature_degree_errors(target, values, points, weights):
    """||P_k (f - f*)|| from the values of f on a quadrature grid (p = 3), with no use of the kernel's mu_k:
    e = f - f* on the grid, ``||P_k e||^2 = sum_{q,r} w_q e_q N P_k(<x_q, x_r>) w_r e_r``.

    values : (Q,) or (T, Q). Returns {k: float64 array of values' leading shape}."""
    values = np.asarray(values, dtype=np.float64)
    V = np.atleast_2d(values)
    E = (V - target(points)[None]) * weights[None]
    out = {}
    for k in target.degrees:
        G = zonal_gram(target.p, k, points)
        e = np.sqrt(np.maximum(np.einsum("tq,tq->t", E @ G, E), 0.0))
        out[k] = e if values.ndim == 2 else e[0]
    return out


def halving_time(fun, times, values, level=0.5):
    """First t where the ratio ``fun(t)`` (1 at t = 0) falls to ``level``: bracketed by the first point of
    the scan ``values`` = fun(times) (times increasing) at or below it, then Brent's method on log t.
    Returns inf if the scan stays above ``level``, times[0] if it starts below."""
    from scipy.optimize import brentq
    values = np.asarray(values, dtype=np.float64)
    below = np.flatnonzero(values <= level)
    if below.size == 0:
        return float("inf")
    i = int(below[0])
    if i == 0:
        return float(times[0])
    return float(np.exp(brentq(lambda u: fun(np.exp(u)) - level, np.log(times[i - 1]), np.log(times[i]),
                               xtol=1e-12, rtol=1e-10)))


def fit_slope(x, y):
    """Least-squares slope and intercept of log y against log x over the finite positive pairs."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return float("nan"), float("nan")
    slope, icpt = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)
    return float(slope), float(icpt)


# ----------------------------------------------------------------------------------------------------------
# the sphere study


def sphere_study(n=1000, p=3, kmax=6, depth=2, b_std=1.0, seed=0, n_times=200, quadrature=True, progress=None):
    """Fit the equal-norm harmonic target of degrees 1..kmax on n uniform points of S^{p-1} by NTK gradient
    flow (``ntkfast.predict.GradientFlow``, learning rate 1, loss normalized by n) for each kernel of
    :func:`study_kernels`, and measure the degree-k error over time and its halving time.

    Returns a dict: config; times (n_times,); per kernel label: mu (kmax + 1,), errors {k: (n_times,)},
    t_half {k}, predicted {k: ln 2 / mu_k}, slope/intercept of log t_half vs log(1/mu_k), final
    errors (closed form and, for p = 3 with ``quadrature``, by quadrature on a 32 x 64 grid), seconds.
    """
    from ..kernel.tiled import gram
    from ..learning.predict import GradientFlow
    from .spectrum import sample_sphere
    n, p, kmax = check_int(n, "n", 10), check_int(p, "p", 2), check_int(kmax, "kmax", 1)
    log = progress or (lambda msg: None)
    kernels = study_kernels(p, kmax, depth, b_std)
    target = HarmonicTarget(p, range(1, kmax + 1), seed=seed + 1)
    X = sample_sphere(n, p, seed=seed)
    y = target(X)
    mus = np.concatenate([kk.mu[1:] for kk in kernels])
    mus = mus[mus > 0]
    times = np.geomspace(0.01 * LN2 / mus.max(), 300.0 * LN2 / mus.min(), n_times)
    grid = sphere_grid() if (quadrature and p == 3) else None
    res = {"config": dict(n=n, p=p, kmax=kmax, depth=depth, b_std=b_std, seed=seed, n_times=n_times,
                          loss="||f - y||^2 / (2 n), learning rate 1"),
           "times": times, "kernels": {}}
    grid_values = []
    for kk in kernels:
        t0 = time.perf_counter()
        K = gram(math.sqrt(p) * X, arch=kk.arch, kind="ntk", dtype="float64", device="cpu")
        gap = float(np.abs(K - kk.kappa.at_angle(angles(X))).max() / np.abs(K).max())
        flow = GradientFlow(K, y, kind="ntk", device="cpu")
        de = DegreeErrors(target, kk, X)
        errs = de(flow.dual_coef(times))                                      # {k: (T,)}
        t_half, pred = {}, {}
        for k in target.degrees:
            pred[k] = LN2 / kk.mu[k] if kk.mu[k] > 0 else float("inf")
            f = lambda t, k=k: float(de(flow.dual_coef(float(t)), (k,))[k])  # noqa: E731
            t_half[k] = halving_time(f, times, errs[k])
        finite = [k for k in target.degrees if np.isfinite(t_half[k]) and kk.mu[k] > 0]
        slope, icpt = fit_slope([1.0 / kk.mu[k] for k in finite], [t_half[k] for k in finite])
        final = {k: float(errs[k][-1]) for k in target.degrees}
        if grid is not None:
            pts = grid[0]
            Kg = gram(math.sqrt(p) * pts, math.sqrt(p) * X, arch=kk.arch, kind="ntk", dtype="float64", device="cpu")
            grid_values.append(flow.mean(times[-1], Kg))                       # f at t_end on the grid
        res["kernels"][kk.label] = dict(mu=kk.mu, errors=errs, t_half=t_half, predicted=pred, slope=slope,
                                        intercept=icpt, final=final, final_quadrature=None,
                                        gram_vs_closed_form=gap, seconds=time.perf_counter() - t0)
        log(f"  {kk.label:<24} slope {slope:.3f} over k = {finite} ({time.perf_counter() - t0:.1f} s; Gram vs "
            f"closed form {gap:.1e})")
    if grid is not None:            # independent check through ntkfast's test x train Gram, all kernels at once
        quad = quadrature_degree_errors(target, np.stack(grid_values), *grid)
        for i, r in enumerate(res["kernels"].values()):
            r["final_quadrature"] = {k: float(quad[k][i]) for k in target.degrees}
    return res


def format_degree_table(res):
    """Markdown table: per kernel and degree, mu_k, ln 2 / mu_k, measured t_half, their ratio, and the
    degree-k error left at the last time (closed form / quadrature); then the fitted slopes."""
    lines = ["| kernel | k | mu_k | 1/mu_k | ln2/mu_k | t_half (measured) | t_half / (ln2/mu_k) | error left at t_end "
             "(exact / quadrature) |", "|---|---|---|---|---|---|---|---|"]
    for label, r in res["kernels"].items():
        for k in sorted(r["t_half"]):
            mu, th, pr = float(r["mu"][k]), r["t_half"][k], r["predicted"][k]
            q = r["final_quadrature"]
            lines.append(
                f"| {label} | {k} | {mu:.4g} | {'inf' if mu == 0 else f'{1 / mu:.4g}'} | "
                f"{'inf' if not np.isfinite(pr) else f'{pr:.4g}'} | "
                f"{'never' if not np.isfinite(th) else f'{th:.4g}'} | "
                f"{'-' if not (np.isfinite(th) and np.isfinite(pr)) else f'{th / pr:.3f}'} | "
                f"{r['final'][k]:.3f} / {'-' if q is None else f'{q[k]:.3f}'} |")
    lines.append("")
    lines.append("| kernel | fitted slope of log t_half vs log(1/mu_k) | intercept (ln ln 2 = -0.367) | "
                 "degrees fitted |")
    lines.append("|---|---|---|---|")
    for label, r in res["kernels"].items():
        ks = [k for k in sorted(r["t_half"]) if np.isfinite(r["t_half"][k]) and r["mu"][k] > 0]
        lines.append(f"| {label} | {r['slope']:.3f} | {r['intercept']:.3f} | {ks} |")
    pooled = pooled_halving_fit(res)
    lines.append(f"| all three together | {pooled[0]:.3f} | {pooled[1]:.3f} | {pooled[2]} points |")
    return "\n".join(lines)


def pooled_halving_fit(res):
    """(slope, intercept, points): the log-log fit of every kernel's halving times against 1/mu_k together
    (:func:`fit_slope`), over the degrees with a finite halving time and mu_k > 0."""
    xs, ys = [], []
    for r in res["kernels"].values():
        for k, th in r["t_half"].items():
            if np.isfinite(th) and r["mu"][k] > 0:
                xs.append(1.0 / r["mu"][k])
                ys.append(th)
    return fit_slope(xs, ys) + (len(xs),)


# ----------------------------------------------------------------------------------------------------------
# finite networks against the infinite-width prediction


def two_layer_ntk(X, Y=None):
    """Infinite-width NTK of :class:`ntkfast.taylor.TwoLayer` with ReLU (first layer trained, readout
    ``a_r / sqrt(m)`` fixed): ``Theta(x, x') = <x, x'> kappa0(rho) / 2``. It is the first-layer part of the
    NTK of ``presets.fc(1)``, whose NTK minus NNGP is ``<x, x'> kappa0(rho) / D`` (DESIGN section 1), so it
    is computed from ntkfast's Grams as ``(D / 2) (ntk - nngp)``. X (n, D), Y (m, D) -> float64 (n, m)."""
    from ..kernel.tiled import gram
    from ..kernel import presets
    X = np.asarray(X, dtype=np.float64)
    k = gram(X, None if Y is None else np.asarray(Y, dtype=np.float64), arch=presets.fc(1), dtype="float64",
             device="cpu")
    out = X.shape[1] / 2.0 * (k.ntk - k.nngp)
    return (out + out.T) / 2.0 if Y is None else out


def finite_width_study(widths=(512, 1024, 2048, 4096, 8192), *, d=8, n=64, n_test=64, steps=1000,
                       lr_fraction=0.1, seeds=(0, 1, 2), checkpoints=(10, 100, 1000), progress=None):
    """Train the two-layer ReLU net of :mod:`ntkfast.taylor` (``TwoLayer(activation='relu')``, the
    ``'full'`` model, plain gradient descent of :func:`ntkfast.taylor.gradient_descent` with a fixed step)
    from W = 0 at several widths, and compare it with the infinite-width prediction of
    ``GradientFlow(two_layer_ntk(X), y, learning_rate=lr, discrete=True)`` after the same number of steps.

    The symmetric initialization makes the network's output exactly 0 at W = 0 at every width, so the
    infinite-width ensemble mean is the right comparison for each single network. Data: n train and
    n_test test points uniform on the sphere of radius sqrt(d), target ``PolynomialTarget(d, r=1, p=2)``
    (unit variance). lr = ``lr_fraction`` times the stability limit 2 n / lambda_max.

    Returns a dict: config, lr, and rows (one per width and seed) with the max |f_net - f_inf| over test
    points at each checkpoint, its maximum over checkpoints ('gap'), the RMS of the test prediction, and the
    train loss at the end for the network and the infinite-width model.
    """
    from ..learning.predict import GradientFlow
    from .taylor import Objective, PolynomialTarget, TwoLayer, gradient_descent, sphere
    log = progress or (lambda msg: None)
    X, Xt = sphere(n, d, seed=100), sphere(n_test, d, seed=101)
    y = PolynomialTarget(d, r=1, p=2, seed=102)(X)
    K, Kt = two_layer_ntk(X), two_layer_ntk(Xt, X)
    lim = GradientFlow(K, y, device="cpu").max_learning_rate
    lr = lr_fraction * lim
    flow = GradientFlow(K, y, learning_rate=lr, discrete=True, device="cpu")
    cps = sorted(int(c) for c in checkpoints if 0 < int(c) <= steps)
    f_inf = flow.mean(cps, Kt)                                            # (C, n_test)
    loss_inf = float(flow.loss_curves(steps).train[0])
    rows = []
    for m in widths:
        for seed in seeds:
            t0 = time.perf_counter()
            net = TwoLayer(d, width=int(m), activation="relu", seed=seed)
            obj = Objective(net, "full", X, y)
            seen = {}

            def record(it, L, W, net=net, seen=seen):
                if it + 1 in cps:
                    seen[it + 1] = net.network(Xt, W)

            W, hist = gradient_descent(obj, np.zeros((int(m), d)), steps=steps, lr=lr, tol=0.0, callback=record)
            gaps = [float(np.abs(seen[c] - f_inf[i]).max()) for i, c in enumerate(cps)]
            r = net.network(X, W) - y
            rows.append(dict(width=int(m), seed=seed, gaps=gaps, gap=max(gaps),
                             rms_prediction=float(np.sqrt(np.mean(f_inf[-1] ** 2))),
                             train_loss_net=float(r @ r) / (2 * n), train_loss_inf=loss_inf,
                             seconds=time.perf_counter() - t0))
            log(f"  width {m:>6} seed {seed}: max gap {max(gaps):.3e} ({time.perf_counter() - t0:.1f} s)")
    return dict(config=dict(widths=list(widths), d=d, n=n, n_test=n_test, steps=steps, lr_fraction=lr_fraction,
                            seeds=list(seeds), checkpoints=cps, lr=lr, lr_limit=lim), rows=rows)


def format_finite_width_table(res):
    """Markdown table: per width, the mean (over seeds) and max of the gap, the gap at each checkpoint, and
    the fitted exponent of gap ~ width^e."""
    cps = res["config"]["checkpoints"]
    widths = sorted({r["width"] for r in res["rows"]})
    head = ("| width | max over test points and checkpoints of abs(f_net - f_inf), mean over seeds | worst seed | "
            + " | ".join(f"at step {c}" for c in cps) + " | train loss (net) |")
    lines = [head, "|" + "---|" * (4 + len(cps))]
    means = []
    for m in widths:
        rs = [r for r in res["rows"] if r["width"] == m]
        g = np.mean([r["gap"] for r in rs])
        means.append(g)
        per = [np.mean([r["gaps"][i] for r in rs]) for i in range(len(cps))]
        lines.append(f"| {m} | {g:.3e} | {max(r['gap'] for r in rs):.3e} | " + " | ".join(f"{v:.2e}" for v in per)
                     + f" | {np.mean([r['train_loss_net'] for r in rs]):.1e} |")
    slope, _ = fit_slope(widths, means)
    rms = res["rows"][0]["rms_prediction"]
    lines.append("")
    lines.append(f"fitted exponent of the mean gap ~ width^e: e = {slope:.3f} (1/sqrt(width) is e = -0.5); "
                 f"RMS of the infinite-width test prediction {rms:.3f}; its train loss "
                 f"{res['rows'][0]['train_loss_inf']:.1e}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# MNIST: accuracy against training time


def mnist_study(data, n_train=200, n_test=100, *, n_times=60, dtype="float32", device="cpu", gram_cache=None,
                progress=None):
    """Test accuracy of the trained ensemble's mean against training time, for the NTK and the CKN/NNGP of
    ``presets.bietti_mairal()`` on MNIST (train: the first ``n_train`` images of ``data``'s t10k file, test:
    the last ``n_test``; per-image centering and scaling; one-hot targets; loss normalized by 10 n_train).

    gram_cache : optional path of an .npz file: the Grams are read from it when it holds this split and
    dtype, else computed and written there (to re-run the dynamics without the Gram time).

    Returns a dict: config, times (n_times,) (plus inf at the end), gram_seconds (None when read from the
    cache), and per kind ('ntk', 'nngp'): accuracy (n_times + 1,), train_loss, test_loss, eigenvalue range."""
    from .. import data as D
    from ..kernel.tiled import gram
    from ..kernel import presets
    from ..learning.krr import one_hot, prepare_images
    from ..learning.predict import GradientFlow
    log = progress or (lambda msg: None)
    n_train, n_test = check_int(n_train, "n_train", 2), check_int(n_test, "n_test", 1)
    X, y = D.load_mnist(data)
    if n_train + n_test > len(X):
        raise ValueError(f"n_train + n_test must be <= the {len(X)} images of {data}; got {n_train + n_test}")
    Xtr, ytr, Xte, yte = X[:n_train], y[:n_train], X[-n_test:], y[-n_test:]
    arch = presets.bietti_mairal()
    Xtr, Xte = prepare_images(Xtr, Xte, arch)
    Ytr, classes = one_hot(ytr, np.arange(10))
    Yte, _ = one_hot(yte, np.arange(10))
    from ..kernel.inputs import Kernels
    key = np.array([n_train, n_test, 64 if dtype == "float64" else 32])
    cached = None
    if gram_cache is not None:
        import os
        if os.path.isfile(gram_cache):
            z = np.load(gram_cache)
            if "key" in z and np.array_equal(z["key"], key):
                cached = z
    if cached is not None:
        k, kt, secs = Kernels(cached["nngp"], cached["ntk"]), Kernels(cached["nngp_t"], cached["ntk_t"]), None
        log(f"  MNIST Grams read from {gram_cache}")
    else:
        t0 = time.perf_counter()
        k = gram(Xtr, arch=arch, dtype=dtype, device=device)
        kt = gram(Xte, Xtr, arch=arch, dtype=dtype, device=device)
        secs = time.perf_counter() - t0
        pairs = n_train * (n_train + 1) // 2 + n_train * n_test
        log(f"  MNIST Grams (NNGP+NTK, {dtype}): {n_train} train, {n_test} test, {pairs:,} pairs in {secs:.1f} s")
        if gram_cache is not None:
            np.savez(gram_cache, key=key, nngp=k.nngp, ntk=k.ntk, nngp_t=kt.nngp, ntk_t=kt.ntk)
    flows = {kind: GradientFlow(k, Ytr, kind=kind, device="cpu") for kind in ("ntk", "nngp")}
    s = Ytr.size
    lam_max = max(float(f.eigenvalues[-1]) for f in flows.values())
    lam_min = min(float(f.eigenvalues[-1]) * 1e-6 if float(f.eigenvalues[0]) <= 0 else float(f.eigenvalues[0])
                  for f in flows.values())
    times = np.geomspace(0.1 * s / lam_max, 10.0 * s / lam_min, n_times)
    ts = np.concatenate([times, [np.inf]])
    out = {"config": dict(n_train=n_train, n_test=n_test, dtype=dtype, arch="bietti_mairal()",
                          split="train = first n_train, test = last n_test of the t10k file",
                          normalize="center_scale", targets="one-hot", loss="||f - Y||^2 / (2 n 10)"),
           "times": times, "gram_seconds": secs}
    import warnings

    from ..learning.krr import IllConditionedWarning
    for kind, flow in flows.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IllConditionedWarning)   # reported below through the condition number
            mean = flow.mean(ts, kt)                                  # (T + 1, M, 10)
            lc = flow.loss_curves(ts, kt, Yte)
        acc = (mean.argmax(axis=2) == yte[None]).mean(axis=1)
        lam = flow.eigenvalues
        out[kind] = dict(accuracy=acc, train_loss=lc.train, test_loss=lc.test,
                         lam_max=float(lam[-1]), lam_min=float(lam[0]),
                         condition=float(lam[-1] / lam[0]) if float(lam[0]) > 0 else float("inf"))
        log(f"  {kind}: accuracy {100 * acc[0]:.1f} % at t = {times[0]:.3g} -> {100 * acc[-2]:.1f} % at t = "
            f"{times[-1]:.3g} -> {100 * acc[-1]:.1f} % at t = inf")
    return out


def format_mnist_table(res, marks=None):
    """Markdown table of test accuracy (%) and test loss at a few times for the NTK and the CKN/NNGP."""
    times = res["times"]
    if marks is None:
        lo, hi = math.floor(math.log10(times[0])), math.ceil(math.log10(times[-1]))
        marks = [10.0 ** e for e in range(lo + 1, hi + 1, max(1, (hi - lo) // 8))]
    lines = ["| t | NTK accuracy | NTK test loss | CKN/NNGP accuracy | CKN/NNGP test loss |", "|---|---|---|---|---|"]
    for m in list(marks) + [np.inf]:
        if np.isfinite(m):
            i = int(np.argmin(np.abs(np.log(times) - math.log(m))))
            label = f"{times[i]:.3g}"
        else:
            i, label = len(times), "inf"
        r1, r2 = res["ntk"], res["nngp"]
        lines.append(f"| {label} | {100 * r1['accuracy'][i]:.1f} % | {r1['test_loss'][i]:.4f} | "
                     f"{100 * r2['accuracy'][i]:.1f} % | {r2['test_loss'][i]:.4f} |")
    for kind, name in (("ntk", "NTK"), ("nngp", "CKN/NNGP")):
        acc = res[kind]["accuracy"]
        target = 0.9 * acc[-1]
        j = int(np.flatnonzero(acc[:-1] >= target)[0]) if np.any(acc[:-1] >= target) else None
        lines.append("")
        lines.append(f"{name}: 90 % of the final accuracy ({100 * acc[-1]:.1f} %) first reached at t = "
                     + ("never (before inf)" if j is None else f"{times[j]:.3g}")
                     + f"; train-Gram eigenvalues {res[kind]['lam_min']:.3g} .. {res[kind]['lam_max']:.3g}")
    return "\n".join(lines)


def jsonable(obj):
    """The results of the studies (dicts of arrays, numpy scalars, inf and nan) as plain JSON values: arrays
    as lists, non-finite floats as the strings 'inf', '-inf', 'nan'."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else str(v)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    return obj
