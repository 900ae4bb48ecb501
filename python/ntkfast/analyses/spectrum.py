"""Mercer spectrum of dot-product kernels on the sphere (Bietti & Mairal 2019, Prop. 5).

A dot-product kernel ``K(x, y) = kappa(<x, y>)`` on the unit sphere S^{p-1} of R^p diagonalizes in the
spherical harmonics: with the uniform *probability* measure on the sphere,

    kappa(<x, y>) = sum_k mu_k sum_{j=1}^{N(p, k)} Y_kj(x) Y_kj(y) = sum_k mu_k N(p, k) P_k(<x, y>),

where ``P_k`` is the Legendre (Gegenbauer) polynomial of dimension p normalized by ``P_k(1) = 1`` and
``N(p, k)`` the number of harmonics of degree k. Funk-Hecke gives

    mu_k = c_p int_{-1}^{1} kappa(t) P_k(t) (1 - t^2)^{(p-3)/2} dt,   c_p = Gamma(p/2) / (sqrt(pi) Gamma((p-1)/2)).

Numerics. The ReLU kernels are not smooth in t at t = +-1 (``arccos t ~ sqrt(2 (1 - t))``), which ruins any
quadrature in t and makes ``arccos`` of a rounded t lose half the digits. Here the integral is taken in the
angle, ``t = cos(theta)``, where kappa0(cos theta) = 1 - theta/pi and kappa1(cos theta) are entire functions
of theta and the deeper kernels are analytic on [0, pi] once each layer's angle is carried as an angle (its
``1 - rho`` computed without cancellation, see :func:`_next_angle`); the weight ``(1 - t^2)^{(p-3)/2} dt``
becomes ``sin(theta)^{p-2} d theta``. Gauss-Legendre quadrature in theta then converges geometrically
(checked against an independent power-series evaluation in the tests). What remains is the cancellation
of an oscillating integral: the absolute error of mu_k is about ``eps * (sqrt(n) + k) * int |integrand|``,
returned as ``floor`` by :func:`mercer_eigenvalues`; eigenvalues below it are rounding noise (for example
the exact zeros of the NTK at odd k >= 3 come out at about 1e-18).

The fully-connected kernels follow the layer rules of ``presets.fc(depth)`` (docs/design.md, section 1; Lemma 1 of
the paper): for inputs with ``|x| = |y| = sqrt(D)`` (so ``<x, y>/D = t``) the NNGP and NTK of
``presets.fc(depth)`` are ``kernel('nngp', depth)(t)`` and ``kernel('ntk', depth)(t)``;
``kernel('ntk', 1)(t) = t kappa0(t) + kappa1(t)`` is the two-layer ReLU NTK of the paper.

Other activations (:func:`activation_spectrum`, ``ntkfast spectrum --activation relu,erf,gelu``): the two-layer
NTK of ``serial(Dense(w_std), act, Dense())``, ``k(t) = w^2 t E[phi'(u) phi'(v)] + E[phi(u) phi(v)]`` with
Var u = Var v = w^2 and correlation t (:class:`ActivationKernel`), is evaluated at the quadrature angles by
the compiled backend in float64 (its evaluation error joins the floor); for ReLU and the default
w = sqrt(2) it is ``kernel('ntk', 1)``. Non-smooth activations (ReLU, abs, sign, ReLU^n) give power laws;
smooth ones (erf, gelu) geometric decay r^-k set by the kernel's nearest complex singularity
(:func:`activation_theory`, :func:`fit_geometric`).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..validation import check_choice, check_int, check_real

__all__ = ["DotProductKernel", "kernel", "KERNEL_NAMES", "multiplicity", "legendre_table", "mercer_eigenvalues",
           "Spectrum", "spectrum", "fit_decay", "sphere_gram_eigenvalues", "sample_sphere", "theory_decay",
           "spectrum_table", "ACTIVATION_NAMES", "activation_layer", "activation_label", "parse_activations",
           "with_activation", "ActivationKernel", "activation_theory", "activation_spectrum", "fit_geometric",
           "activation_table", "format_activation_table", "vanishing_degrees"]

KERNEL_NAMES = ("kappa0", "kappa1", "ntk", "nngp")
_EPS = np.finfo(np.float64).eps


# ----------------------------------------------------------------------------------------------------------
# Kernels as functions of the angle
# ----------------------------------------------------------------------------------------------------------

def _sin_minus_theta_cos(theta):
    """g(theta) = sin(theta) - theta cos(theta) >= 0 without cancellation at small theta (series below 0.25)."""
    theta = np.asarray(theta, dtype=np.float64)
    out = np.sin(theta) - theta * np.cos(theta)
    small = theta < 0.25
    if np.any(small):
        t = theta[small]
        t2 = t * t
        # sum_{n>=1} (-1)^{n+1} 2n theta^{2n+1} / (2n+1)!; 9 terms reach 1e-17 relative at 0.25
        term = t * t2 / 3.0
        acc = term.copy()
        for n in range(2, 10):
            term = -term * t2 * (2 * n) / ((2 * n - 2) * (2 * n) * (2 * n + 1))
            acc += term
        out = np.where(small, 0.0, out)
        out[small] = acc
    return out


def _kappa1_angle(theta):
    """kappa1(cos theta) = (sin theta + (pi - theta) cos theta) / pi."""
    return (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / np.pi


def _next_angle(theta):
    """Angle of rho' = kappa1(cos theta), i.e. arccos(rho'), without losing digits near theta = 0.

    1 - kappa1(cos theta) = (2 pi sin^2(theta/2) - g(theta)) / pi with g = sin - theta cos >= 0 computed by
    its series at small theta, then arccos(rho') = 2 arcsin(sqrt((1 - rho') / 2))."""
    one_minus = (2.0 * np.pi * np.sin(theta / 2.0) ** 2 - _sin_minus_theta_cos(theta)) / np.pi
    return 2.0 * np.arcsin(np.sqrt(np.clip(one_minus, 0.0, 2.0) / 2.0))


class _OfCosine:
    """A dot-product kernel given by ``at_angle(theta)``, called at cosines t = cos(theta) in [-1, 1]."""

    def __call__(self, t):
        t = np.asarray(t, dtype=np.float64)
        if np.any(~np.isfinite(t)) or np.any(np.abs(t) > 1.0 + 1e-12):
            raise ValueError("t must lie in [-1, 1] (cosines of angles between unit vectors)")
        return self.at_angle(np.arccos(np.clip(t, -1.0, 1.0)))


class DotProductKernel(_OfCosine):
    """A dot-product kernel kappa on the sphere, evaluated accurately as a function of the angle.

    ``name``: 'kappa0' (arc-cosine of degree 0), 'kappa1' (arc-cosine of degree 1), 'ntk' or 'nngp' (the NTK
    or NNGP of ``presets.fc(depth)`` for inputs of norm sqrt(D), see the module docstring). ``depth`` (int
    >= 1) applies to 'ntk' and 'nngp' only. ``k(t)`` takes t in [-1, 1] (float64 array, any shape);
    ``k.at_angle(theta)`` takes theta in [0, pi] and is the accurate entry point.
    """

    def __init__(self, name, depth=1):
        check_choice(name, "kernel name", KERNEL_NAMES)
        depth = check_int(depth, "depth", 1)
        if name in ("kappa0", "kappa1") and depth != 1:
            raise ValueError(f"depth applies to 'ntk' and 'nngp' only; got depth={depth} for {name!r}")
        self.name, self.depth = name, depth

    @property
    def label(self):
        if self.name in ("kappa0", "kappa1"):
            return self.name
        return f"fc({self.depth}) {self.name.upper()}" + (" (2-layer)" if self.depth == 1 else "")

    def __repr__(self):
        return f"DotProductKernel({self.name!r}, depth={self.depth})"

    def at_angle(self, theta):
        """kappa(cos theta) for theta (array, radians, in [0, pi]); float64 array of theta's shape."""
        theta = np.asarray(theta, dtype=np.float64)
        if self.name == "kappa0":
            return 1.0 - theta / np.pi
        if self.name == "kappa1":
            return _kappa1_angle(theta)
        ntk = np.cos(theta)
        sigma = ntk
        for _ in range(self.depth):
            k0 = 1.0 - theta / np.pi
            sigma = _kappa1_angle(theta)
            ntk = ntk * k0 + sigma
            theta = _next_angle(theta)
        return ntk if self.name == "ntk" else sigma

    def value_at_one(self):
        """kappa(1): 1 for kappa0 and kappa1 and the NNGP, depth + 1 for the NTK of fc(depth)."""
        return float(self.at_angle(0.0))


def kernel(name, depth=1):
    """Shorthand for :class:`DotProductKernel` (``name`` also accepts a DotProductKernel, returned as is)."""
    if isinstance(name, DotProductKernel):
        return name
    if not isinstance(name, str):
        raise TypeError(f"kernel must be a name in {KERNEL_NAMES} or a DotProductKernel; got {type(name).__name__}")
    return DotProductKernel(name, depth)


# ----------------------------------------------------------------------------------------------------------
# Harmonics on S^{p-1}
# ----------------------------------------------------------------------------------------------------------

def multiplicity(p, k):
    """N(p, k), the number of spherical harmonics of degree k on S^{p-1}: 1 for k = 0, else
    (2k + p - 2) / k * C(k + p - 3, k - 1). ``k`` an int or int array; returns float64 (exact below 2^53)."""
    p = check_int(p, "p", 2)
    ks = np.atleast_1d(np.asarray(k))
    if ks.dtype.kind not in "iu" or np.any(ks < 0):
        raise ValueError(f"k must be non-negative integers; got {k!r}")
    out = np.array([1.0 if kk == 0 else (2 * kk + p - 2) * math.comb(kk + p - 3, kk - 1) / kk
                    for kk in ks.tolist()])
    return out if np.ndim(k) else float(out[0])


def legendre_table(p, kmax, t):
    """P_k(t) for k = 0..kmax (dimension-p Legendre polynomials, P_k(1) = 1): float64 (kmax + 1, len(t)).

    Forward recurrence (k + p - 2) P_{k+1} = (2k + p - 2) t P_k - k P_{k-1}, stable on [-1, 1]; p = 2 gives the
    Chebyshev polynomials, p = 3 the classical Legendre polynomials."""
    t = np.asarray(t, dtype=np.float64).ravel()
    P = np.empty((kmax + 1, t.size))
    P[0] = 1.0
    if kmax >= 1:
        P[1] = t
    for k in range(1, kmax):
        P[k + 1] = ((2 * k + p - 2) * t * P[k] - k * P[k - 1]) / (k + p - 2)
    return P


def _legendre_pn(n, x):
    """P_n(x) and P_{n-1}(x) (classical Legendre) by the three-term recurrence."""
    p0, p1 = np.ones_like(x), x.copy()
    for k in range(1, n):
        p0, p1 = p1, ((2 * k + 1) * x * p1 - k * p0) / (k + 1)
    return p1, p0


@functools.lru_cache(maxsize=16)
def _gauss_legendre(n):
    """Gauss-Legendre nodes and weights on [-1, 1] (n >= 2): scipy's nodes, two Newton steps on the
    recurrence, weights 2 / ((1 - x^2) P_n'(x)^2). Moments come out exact to ~1e-16, where numpy's leggauss
    (also O(n^3)) and scipy's weights are off by ~1e-13 at n = 1000, which would swamp the small mu_k."""
    from scipy.special import roots_legendre
    x = roots_legendre(n)[0]
    for newton in (True, True, False):
        pn, pm = _legendre_pn(n, x)
        dp = n * (x * pn - pm) / (x * x - 1.0)
        if newton:
            x = x - pn / dp
    w = 2.0 / ((1.0 - x * x) * dp * dp)
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


def _log_cp(p):
    return math.lgamma(p / 2) - 0.5 * math.log(math.pi) - math.lgamma((p - 1) / 2)


def mercer_eigenvalues(kern, p, kmax, *, depth=1, nodes=None, return_floor=False):
    """Mercer eigenvalues mu_k, k = 0..kmax, of ``kern`` on S^{p-1} with the uniform probability measure.

    Parameters
    ----------
    kern : a name in KERNEL_NAMES ('kappa0', 'kappa1', 'ntk', 'nngp'), a DotProductKernel, an
        :class:`ActivationKernel` (its evaluation error is added to the floor), any object with a method
        ``at_angle(theta)``, or any callable kappa(t) of a float64 array t in [-1, 1] (evaluated at
        t = cos(theta): accurate only if kappa is smooth in theta; the built-in kernels are evaluated
        directly in theta).
    p : int >= 2, dimension of the ambient space (the sphere is S^{p-1}).
    kmax : int >= 0, largest degree.
    depth : int >= 1, depth of the fc kernel when ``kern`` is the name 'ntk' or 'nngp' (default 1).
    nodes : Gauss-Legendre nodes in theta (default 2 kmax + 2 p + 400; the tests check convergence).
    return_floor : also return the rounding floor (see the module docstring).

    Returns
    -------
    mu : float64 (kmax + 1,) (and floor : float64 (kmax + 1,) if ``return_floor``); each mu_k is counted once,
        so that ``sum_k mu_k * multiplicity(p, k) == kappa(1)``.
    """
    p = check_int(p, "p", 2)
    kmax = check_int(kmax, "kmax", 0)
    err_of = None
    if isinstance(kern, (str, DotProductKernel)):
        f = kernel(kern, depth).at_angle
    elif hasattr(kern, "at_angle_with_error"):        # ActivationKernel: values and their evaluation error
        f = None
        err_of = kern.at_angle_with_error
    elif hasattr(kern, "at_angle"):
        f = kern.at_angle
    elif callable(kern):
        f = lambda th: np.asarray(kern(np.cos(th)), dtype=np.float64)  # noqa: E731
    else:
        f = kernel(kern, depth).at_angle                # raises the TypeError naming what is accepted
    if nodes is None:
        nodes = 2 * kmax + 2 * p + 400
    nodes = check_int(nodes, "nodes", kmax + 2)
    x, w = _gauss_legendre(nodes)
    theta = (x + 1.0) * (np.pi / 2.0)
    w = w * (np.pi / 2.0)
    if err_of is not None:
        vals, err = err_of(theta)
    else:
        vals, err = f(theta), None
    if vals.shape != theta.shape or not np.all(np.isfinite(vals)):
        raise ValueError("kern must return finite values of the shape of its argument")
    # log of sin^{p-2}, guarded at the (interior) nodes: they never reach 0 or pi exactly
    weight = w * np.exp(_log_cp(p) + (p - 2) * np.log(np.sin(theta)))
    P = legendre_table(p, kmax, np.cos(theta))
    terms = P * (vals * weight)
    mu = terms.sum(axis=1)
    if not return_floor:
        return mu
    floor = _EPS * (np.sqrt(nodes) + np.arange(kmax + 1)) * np.abs(terms).sum(axis=1)
    if err is not None:              # the kernel's own evaluation error, carried through the quadrature
        floor = floor + np.abs(P) @ (weight * err)
    return mu, floor


# ----------------------------------------------------------------------------------------------------------
# Decay, parity, brute force
# ----------------------------------------------------------------------------------------------------------

def theory_decay(name, p):
    """Asymptotic exponent a in mu_k ~ C k^-a (on the non-vanishing parity) from the paper and Bach (2017):
    kappa0 and every NTK: p; kappa1 and every NNGP: p + 2 (the singularity (1 - t)^s at t = 1 gives
    k^-(p - 1 + 2s); s = 1/2 for kappa0 and the NTK, 3/2 for kappa1 and the NNGP)."""
    return float(p) if name in ("kappa0", "ntk") else float(p + 2)


def _fit_points(k, mu, kmin, kmax, parity, floor, need, who):
    """(k, mu as float64, the boolean selection) of the eigenvalues a fit uses: kmin <= k <= kmax (k >= 1),
    mu > 0, of the parity, and above 100 x floor; ValueError when fewer than ``need`` remain."""
    k = np.asarray(k)
    mu = np.asarray(mu, dtype=np.float64)
    if k.shape != mu.shape or k.ndim != 1:
        raise ValueError(f"k and mu must be 1-d arrays of one length; got shapes {k.shape} and {mu.shape}")
    check_choice(parity, "parity", ("even", "odd", "all"))
    sel = (k >= max(kmin, 1)) & (mu > 0)
    if kmax is not None:
        sel &= k <= kmax
    if parity != "all":
        sel &= (k % 2) == (0 if parity == "even" else 1)
    if floor is not None:
        sel &= mu > 100.0 * np.asarray(floor)
    if sel.sum() < need:
        raise ValueError(f"{who} needs at least {need} eigenvalues above the floor in the range; got {sel.sum()}")
    return k, mu, sel


def fit_decay(k, mu, *, kmin=20, kmax=None, parity="even", floor=None, offset=0.0):
    """Least-squares fit of log mu_k = log C - a log(k + offset) on the chosen ks; returns (a, C).

    k, mu : arrays (K,) (mu_k > 0 where used). parity : 'even', 'odd' or 'all'. floor : optional array (K,);
    eigenvalues below 100 x floor are left out (rounding noise). offset : 0 fits k^-a; (p - 2)/2 (the
    Gegenbauer index, used by :func:`spectrum_table`) fits the same asymptotic exponent with a far smaller
    pre-asymptotic bias (at p = 10: local exponents 10.13, 10.04 at k = 20, 40 instead of 8.9, 9.4).
    Raises ValueError with fewer than 3 points."""
    k, mu, sel = _fit_points(k, mu, kmin, kmax, parity, floor, 3, "fit_decay")
    A = np.stack([np.ones(sel.sum()), -np.log(k[sel] + float(offset))], axis=1)
    (logc, a), *_ = np.linalg.lstsq(A, np.log(mu[sel]), rcond=None)
    return float(a), float(np.exp(logc))


def sample_sphere(n, p, seed=0):
    """n points uniform on S^{p-1}: float64 (n, p) (normalized Gaussians, ``numpy.random.default_rng(seed)``)."""
    n = check_int(n, "n", 1)
    p = check_int(p, "p", 2)
    X = np.random.default_rng(seed).standard_normal((n, p))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def sphere_gram_eigenvalues(kern, p, n, *, depth=1, seed=0):
    """Brute force: eigenvalues (descending, float64 (n,)) of K / n with K_ij = kappa(<x_i, x_j>) for n uniform
    points on S^{p-1}; they estimate mu_k, each repeated N(p, k) times (n x n dense eigendecomposition)."""
    kd = kernel(kern, depth)
    X = sample_sphere(n, p, seed)
    G = np.clip(X @ X.T, -1.0, 1.0)
    theta = np.arccos(G)
    np.fill_diagonal(theta, 0.0)
    K = kd.at_angle(theta)
    K = (K + K.T) / 2
    return np.linalg.eigvalsh(K / n)[::-1]


class Spectrum:
    """Result of :func:`spectrum`: ``k`` (kmax + 1,), ``mu`` and ``floor`` per kernel label, ``p``."""

    def __init__(self, p, k, kernels, mu, floor):
        self.p, self.k, self.kernels, self.mu, self.floor = p, k, kernels, mu, floor


DEFAULT_KERNELS = (("kappa0", 1), ("kappa1", 1), ("ntk", 1), ("ntk", 3), ("nngp", 3))


def spectrum(p=3, kmax=200, kernels=DEFAULT_KERNELS):
    """Eigenvalues of several kernels: ``kernels`` a sequence of (name, depth). Returns a :class:`Spectrum`."""
    p = check_int(p, "p", 2)
    kmax = check_int(kmax, "kmax", 4)
    ks = [kernel(n, d) for n, d in kernels]
    mu, floor = {}, {}
    for kd in ks:
        mu[kd.label], floor[kd.label] = mercer_eigenvalues(kd, p, kmax, return_floor=True)
    return Spectrum(p, np.arange(kmax + 1), ks, mu, floor)


def spectrum_table(sp, kmin=None):
    """Rows (dicts) per kernel: fitted exponents a in mu_k ~ C (k + (p-2)/2)^-a on even and odd k in
    [kmin, kmax] (above 100 x the rounding floor), the theory exponent, and which degrees 2 <= k <= k_rel are
    zero to rounding (|mu_k| < 100 x floor), where k_rel is the largest k whose mu_k is above that level."""
    kmin = kmin or max(10, len(sp.k) // 10)
    rows = []
    for kd in sp.kernels:
        mu, fl = sp.mu[kd.label], sp.floor[kd.label]
        zero = np.abs(mu) < 100.0 * fl
        k_rel = int(sp.k[~zero].max())
        row = {"kernel": kd.label, "kappa(1)": kd.value_at_one(), "theory_a": theory_decay(kd.name, sp.p),
               "sum_check": float(np.sum(mu * multiplicity(sp.p, sp.k))), "k_rel": k_rel}
        for par in ("even", "odd"):
            try:
                row[f"a_{par}"] = fit_decay(sp.k, mu, kmin=kmin, parity=par, floor=fl, offset=(sp.p - 2) / 2)[0]
            except ValueError:
                row[f"a_{par}"] = float("nan")
        ks = sp.k[(sp.k >= 2) & (sp.k <= k_rel)]
        zk = ks[zero[ks]]
        if len(zk) == 0:
            row["zeros"] = "none"
        elif np.all(zk % 2 == 1) and len(zk) == np.sum(ks % 2 == 1):
            row["zeros"] = "all odd k >= 3"
        elif np.all(zk % 2 == 0) and len(zk) == np.sum(ks % 2 == 0):
            row["zeros"] = "all even k >= 2"
        else:
            row["zeros"] = f"{len(zk)} degrees (e.g. {zk[:5].tolist()})"
        if k_rel < sp.k[-1] - 1:
            row["zeros"] += f" (rounding noise above k = {k_rel})"
        rows.append(row)
    return rows


def format_table(rows, p, kmin, kmax):
    head = (f"Mercer eigenvalues on S^{p - 1} (p = {p}), fits mu_k ~ C (k + {(p - 2) / 2:g})^-a for k in "
            f"[{kmin}, {kmax}]\n"
            f"{'kernel':<22} {'kappa(1)':>8} {'a (even k)':>10} {'a (odd k)':>10} {'theory':>7}  zeros (k >= 2)")
    lines = [head]

    def expo(r, par):
        a = r[f"a_{par}"]
        if np.isfinite(a):
            return f"{a:>10.3f}"
        # no fit: these degrees vanish (parity zeros), or too few of them lie above the rounding floor
        return f"{'all zero' if r['zeros'].startswith(f'all {par}') else '-':>10}"
    for r in rows:
        lines.append(f"{r['kernel']:<22} {r['kappa(1)']:>8.3f} {expo(r, 'even')} {expo(r, 'odd')} "
                     f"{r['theory_a']:>7.1f}  {r['zeros']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Other activations: the two-layer kernels of serial(Dense(w_std), act, Dense()), through the backend
# ----------------------------------------------------------------------------------------------------------

#: Names accepted by ``activation_layer`` and the ``--activation`` options, with the layer each one means.
ACTIVATION_NAMES = ("relu", "relu2", "relu3", "abs", "leaky", "sign", "erf", "gelu", "sin", "cos")


def _activation_table():
    from ..kernel import arch as A
    return {"relu": A.ReLU(), "relu2": A.RectifiedMonomial(2), "relu3": A.RectifiedMonomial(3), "abs": A.Abs(),
            "leaky": A.LeakyRelu(0.1), "sign": A.Sign(), "erf": A.Erf(), "gelu": A.Gelu(), "sin": A.Sin(),
            "cos": A.Cos()}


def activation_layer(spec, option="activation"):
    """The activation layer named by ``spec``: one of :data:`ACTIVATION_NAMES` ('relu' = ReLU(), 'relu2' =
    RectifiedMonomial(2), 'relu3' = RectifiedMonomial(3), 'abs' = Abs(), 'leaky' = LeakyRelu(0.1), 'sign' =
    Sign(), 'erf' = Erf(), 'gelu' = Gelu(), 'sin' = Sin(), 'cos' = Cos()), or an activation layer such as
    ``nf.Erf(1, 2)``, returned as is. ``option`` names the argument in errors."""
    from ..kernel.arch import Layer
    if isinstance(spec, Layer):
        if not spec.nonlinear:
            raise ValueError(f"{option} must be an activation layer (ReLU(), Erf(), Gelu(), ...); got {spec!r}")
        return spec
    table = _activation_table()
    if isinstance(spec, str) and spec.strip().lower() in table:
        return table[spec.strip().lower()]
    raise ValueError(f"{option} must be one of {', '.join(ACTIVATION_NAMES)} or an activation layer such as "
                     f"nf.Erf(); got {spec!r}")


def activation_label(layer):
    """Short name of an activation layer: its name in :data:`ACTIVATION_NAMES`, else its repr."""
    for name, l in _activation_table().items():
        if l == layer:
            return name
    return repr(layer)


def parse_activations(text, option="--activation"):
    """A comma-separated list of activation names ('relu,erf,gelu') -> list of names (validated, distinct)."""
    names = [t.strip().lower() for t in str(text).split(",")]
    if not names or any(not n for n in names):
        raise ValueError(f"{option} must be a comma-separated list of {', '.join(ACTIVATION_NAMES)}; got {text!r}")
    for n in names:
        activation_layer(n, option)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{option} must name each activation once; got {', '.join(dup)} more than once")
    return names


def with_activation(arch, activation):
    """``arch`` with every ``ReLU()`` replaced by ``activation`` (a name or a layer, see :func:`activation_layer`):
    the same architecture with another activation, e.g. ``with_activation(presets.bietti_mairal(), 'erf')``.
    Raises ValueError if ``arch`` has no ReLU."""
    from ..kernel.arch import ReLU, serial
    act = activation_layer(activation)
    if not any(type(l) is ReLU for l in arch.layers):
        raise ValueError(f"arch must contain ReLU() layers to replace by {activation_label(act)}; got {arch!r}")
    return serial(*[act if type(l) is ReLU else l for l in arch.layers])


def _rotation(dim, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q


class ActivationKernel(_OfCosine):
    """Two-layer NTK (``kind='ntk'``) or NNGP (``kind='nngp'``) of ``serial(Dense(w_std), act, Dense())`` as a
    dot-product function on the sphere, evaluated by :func:`ntkfast.gram` in float64.

    For inputs x, y of norm sqrt(D) at angle theta (so ``<x, y> / D = t = cos theta``) the net's kernels are

        NNGP: k(t) = E[phi(u) phi(v)],   NTK: k(t) = w^2 t E[phi'(u) phi'(v)] + E[phi(u) phi(v)],

    with (u, v) centred Gaussian, Var u = Var v = w^2 (w = ``w_std``), Cov(u, v) = w^2 t. ``w_std = 1`` is the
    unit-variance form ``t E[phi' phi'] + E[phi phi]``; the default ``w_std = sqrt(2)`` is ``presets.fc(1)``'s,
    with which ReLU gives ``kernel('ntk', 1) = t kappa0(t) + kappa1(t)``, the normalization of this module
    (for the homogeneous ReLU, w only scales the kernel, by w^2 / 2; for other activations it changes its shape).

    ``at_angle(theta)`` evaluates at x = sqrt(2) e1, y = sqrt(2) (cos theta e1 + sin theta e2), so the angle
    is exact up to one rounding of cos and sin. ``at_angle_with_error(theta)`` also returns an estimate of
    the evaluation error per angle: the difference from the same pairs turned by a fixed random rotation of
    R^5 (other roundings), plus 4 eps |k|; :func:`mercer_eigenvalues` adds it to its rounding floor. The
    activation's own dual map is the backend's (csrc/core/activations.hpp, checked against reference.py).
    """

    def __init__(self, activation="relu", kind="ntk", w_std=2 ** 0.5, device="auto"):
        check_choice(kind, "kind", ("ntk", "nngp"))
        w_std = check_real(w_std, "w_std", 0.0, strict=True, expected="a positive finite number")
        from ..kernel.arch import Dense, serial
        self.layer = activation_layer(activation)
        self.kind, self.w_std, self.device = kind, float(w_std), device
        self.arch = serial(Dense(self.w_std), self.layer, Dense())
        self.name = activation_label(self.layer)
        self.depth = 1

    @property
    def label(self):
        return self.name

    def __repr__(self):
        return f"ActivationKernel({self.name!r}, kind={self.kind!r}, w_std={self.w_std!r})"

    def _eval(self, theta, rot=None):
        from ..kernel.tiled import gram
        th = np.asarray(theta, dtype=np.float64)
        if np.any(~np.isfinite(th)) or np.any(th < 0) or np.any(th > np.pi):
            raise ValueError("theta must lie in [0, pi] (angles between unit vectors)")
        t = th.ravel()
        dim = 2 if rot is None else rot.shape[0]
        r = np.sqrt(float(dim))
        X = np.zeros((1, dim))
        X[0, 0] = r
        Y = np.zeros((t.size, dim))
        Y[:, 0], Y[:, 1] = r * np.cos(t), r * np.sin(t)
        if rot is not None:
            X, Y = X @ rot, Y @ rot
        k = gram(X, Y, arch=self.arch, kind=self.kind, dtype="float64", device=self.device)
        return np.asarray(k, dtype=np.float64)[0].reshape(th.shape)

    def at_angle(self, theta):
        """k(cos theta) for theta (array, radians, in [0, pi]); float64 array of theta's shape."""
        return self._eval(theta)

    def at_angle_with_error(self, theta):
        """(k(cos theta), estimated absolute evaluation error), both float64 arrays of theta's shape."""
        v = self._eval(theta)
        w = self._eval(theta, _rotation(5, 12345))
        return v, np.abs(v - w) + 4 * _EPS * np.abs(v)

    def value_at_one(self):
        """k(1) (the self kernel, from the backend's self recursion)."""
        from ..kernel.paired import gram_diag
        x = np.array([[2 ** 0.5, 0.0]])
        return float(gram_diag(x, arch=self.arch, kind=self.kind, dtype="float64", device=self.device)[0])


def activation_theory(activation, p, kind="ntk", w_std=2 ** 0.5):
    """What theory says about the decay of the two-layer kernel's eigenvalues on S^{p-1}.

    Returns (text, model, value): model 'power' (mu_k ~ k^-value: the kernel's singularity (1 - t)^s at t = 1
    gives value = p - 1 + 2 s), 'geometric' (k(t) is analytic on [-1, 1] with its nearest singularities at
    t = +-t0 > 1: mu_k ~ C k^b r^-k with value = r = t0 + sqrt(t0^2 - 1), the Bernstein ellipse), 'entire'
    (value inf: faster than any geometric sequence), 'polynomial' (value = degree: mu_k = 0 above it), or
    'unknown' (value nan).

    - ReLU, ABRelu (abs, leaky): NTK s = 1/2 (the kappa0-like derivative kernel), NNGP s = 3/2.
    - RectifiedMonomial(n): NNGP arc-cosine of degree n, s = n + 1/2; NTK s = n - 1/2 (derivative kernel of
      degree n - 1); n = 0 (a step): the NTK through it is 0, so the two-layer NTK is the NNGP, s = 1/2.
    - Sign: NNGP (2/pi) arcsin(t), s = 1/2; the two-layer NTK equals the NNGP.
    - Erf(a, b, c): arcsin(2 b^2 s t / (1 + 2 b^2 s)) and 1 / sqrt((1 + 2 b^2 s)^2 - 4 b^4 s^2 t^2), with
      s = w_std^2 the pre-activation variance: t0 = (1 + 2 b^2 s) / (2 b^2 s) (t0 = 1.25, r = 2 for b = 1,
      s = 2).
    - Gelu: sqrt((1 + s)^2 - s^2 t^2) and arcsin(s t / (1 + s)): t0 = (1 + s) / s (r = 2.618 for s = 2).
    - Sin/Cos: exponentials of s t: entire. Monomial, Hermite, Polynomial: polynomials in t.
    """
    from ..kernel import arch as A
    layer = activation_layer(activation)
    s = float(w_std) ** 2

    def ellipse(t0):
        r = t0 + math.sqrt(t0 * t0 - 1.0)
        return f"r = {r:.3f}", "geometric", r

    def power(a):
        return f"k^-{a:g}", "power", float(a)
    if isinstance(layer, A.ReLU):
        return power(p if kind == "ntk" else p + 2)
    if isinstance(layer, A.ABRelu):
        if layer.a == layer.b:                 # linear
            return "zero above k = 1", "polynomial", 1.0
        return power(p if kind == "ntk" else p + 2)
    if isinstance(layer, A.RectifiedMonomial):
        n = layer.degree
        return power(p + 2 * n if kind == "nngp" or n == 0 else p + 2 * n - 2)
    if isinstance(layer, A.Sign):
        return power(p)
    if isinstance(layer, A.Erf):
        if layer.a == 0 or layer.b == 0:
            return "zero above k = 0", "polynomial", 0.0
        q = 2 * layer.b ** 2 * s
        return ellipse((1 + q) / q)
    if isinstance(layer, A.Gelu):
        return ellipse((1 + s) / s)
    if isinstance(layer, A.Sin):
        return "faster than geometric (entire)", "entire", float("inf")
    if isinstance(layer, (A.Monomial, A.Hermite, A.Polynomial)):
        deg = {A.Monomial: lambda l: l.degree, A.Hermite: lambda l: l.degree,
               A.Polynomial: lambda l: len(l.coef) - 1}[type(layer)](layer)
        return f"zero above k = {deg}", "polynomial", float(deg)
    return "-", "unknown", float("nan")


def activation_spectrum(activations=("relu", "erf", "gelu"), p=3, kmax=100, *, kind="ntk", w_std=2 ** 0.5,
                        device="auto"):
    """Mercer eigenvalues of the two-layer kernels (:class:`ActivationKernel`) of several activations on
    S^{p-1}: ``activations`` a sequence of names or layers (distinct). Returns a :class:`Spectrum` whose
    ``kernels`` are the ActivationKernels, keyed by their label (the activation's name)."""
    p = check_int(p, "p", 2)
    kmax = check_int(kmax, "kmax", 4)
    if isinstance(activations, str):
        activations = parse_activations(activations, "activations")
    ks = [ActivationKernel(a, kind, w_std, device) for a in activations]
    labels = [kd.label for kd in ks]
    if not ks or len(set(labels)) != len(labels):
        raise ValueError(f"activations must be a non-empty sequence of distinct activations; got {labels}")
    mu, floor = {}, {}
    for kd in ks:
        mu[kd.label], floor[kd.label] = mercer_eigenvalues(kd, p, kmax, return_floor=True)
    sp = Spectrum(p, np.arange(kmax + 1), ks, mu, floor)
    sp.kind, sp.w_std = kind, float(w_std)
    return sp


def fit_geometric(k, mu, *, kmin=10, kmax=None, parity="all", floor=None, offset=0.0):
    """Least-squares fit of log mu_k = log C + b log(k + offset) - k log r on the chosen ks (as in
    :func:`fit_decay`); returns (r, b, C). r = 1 (to the fit's accuracy) for a power law mu_k ~ k^b; r > 1
    for geometric decay. Raises ValueError with fewer than 4 points."""
    k, mu, sel = _fit_points(k, mu, kmin, kmax, parity, floor, 4, "fit_geometric")
    A = np.stack([np.ones(sel.sum()), np.log(k[sel] + float(offset)), -k[sel].astype(np.float64)], axis=1)
    (logc, b, logr), *_ = np.linalg.lstsq(A, np.log(mu[sel]), rcond=None)
    return float(np.exp(logr)), float(b), float(np.exp(logc))


def vanishing_degrees(k, mu, fl):
    """(text, k_rel, live parity): the degrees 2 <= k <= k_rel that vanish to rounding (|mu_k| < 100 floor),
    k_rel the largest resolved degree, and the parity to fit ('even', 'odd' or 'all')."""
    zero = np.abs(mu) < 100.0 * fl
    k_rel = int(k[~zero].max()) if np.any(~zero) else 0
    ks = k[(k >= 2) & (k <= k_rel)]
    zk = ks[zero[ks]]
    live = "all"
    if len(zk) == 0:
        return "none", k_rel, live
    par = int(zk[0] % 2)
    same = ks[(ks % 2 == par) & (ks >= zk[0])]
    if np.all(zk % 2 == par) and len(zk) == len(same):      # every degree of one parity from zk[0] on
        name = "odd" if par else "even"
        return f"all {name} k >= {int(zk[0])}", k_rel, ("even" if par else "odd")
    return f"{len(zk)} degrees (e.g. {zk[:5].tolist()})", k_rel, live


def activation_table(sp, window=(20, 40), kmin=None, geo_kmin=10):
    """Rows (dicts) per activation of an :func:`activation_spectrum`: k(1); parity zeros; k_rel, the largest
    degree resolved above 100 x the floor; the power-law exponent a (mu_k ~ C (k + (p-2)/2)^-a) fitted on
    ``window`` and on [kmin, kmax] (resolved degrees of the non-vanishing parity; NaN with fewer than 3);
    the geometric fit (r, b) of :func:`fit_geometric` on [geo_kmin, k_rel]; and :func:`activation_theory`."""
    kmax = int(sp.k[-1])
    kmin = kmin or max(10, kmax // 10)
    off = (sp.p - 2) / 2
    rows = []
    for kd in sp.kernels:
        mu, fl = sp.mu[kd.label], sp.floor[kd.label]
        zeros, k_rel, live = vanishing_degrees(sp.k, mu, fl)
        text, model, value = activation_theory(kd.layer, sp.p, kd.kind, kd.w_std)
        row = {"activation": kd.label, "kappa(1)": kd.value_at_one(), "zeros": zeros, "k_rel": k_rel,
               "parity": live, "theory": text, "theory_model": model, "theory_value": value}
        k0 = int(window[0]) + (1 if live == "odd" and window[0] % 2 == 0 or live == "even" and window[0] % 2 else 0)
        row["k0"], row["mu_k0"] = k0, (float(mu[k0]) if k0 <= kmax and mu[k0] > 100 * fl[k0] else float("nan"))
        for key, lo, hi in (("a_window", window[0], window[1]), ("a_tail", kmin, kmax)):
            try:
                row[key] = fit_decay(sp.k, mu, kmin=lo, kmax=hi, parity=live, floor=fl, offset=off)[0]
            except ValueError:
                row[key] = float("nan")
        try:
            row["r"], row["b"], _ = fit_geometric(sp.k, mu, kmin=geo_kmin, parity=live, floor=fl, offset=off)
        except ValueError:
            row["r"] = row["b"] = float("nan")
        rows.append(row)
    return rows


def format_activation_table(rows, p, kind="ntk", w_std=2 ** 0.5, window=(20, 40), kmin=10, kmax=100, geo_kmin=10):
    w = "sqrt(2)" if abs(w_std - 2 ** 0.5) < 1e-15 else f"{w_std:g}"
    what = "NTK" if kind == "ntk" else "NNGP"
    lines = [f"Two-layer {what} of serial(Dense({w}), act, Dense()) on S^{p - 1} (p = {p}), k(t) from ntkfast.gram "
             f"(float64); fits on the non-vanishing parity, resolved degrees only (mu_k > 100 x rounding floor)",
             f"  k_res: largest resolved degree; mu_k0: mu_k at k0 = {window[0]} or {window[0] + 1} (the "
             f"non-vanishing parity)",
             f"  a: mu_k ~ C (k + {(p - 2) / 2:g})^-a on k in [{window[0]}, {window[1]}] and [{kmin}, {kmax}];  "
             f"r, b: mu_k ~ C (k + {(p - 2) / 2:g})^b r^-k on k in [{geo_kmin}, k_res]",
             f"{'activation':<10} {'k(1)':>7}  {'zeros (k >= 2)':<16} {'k_res':>5} {'mu_k0':>13} "
             f"{'a[' + str(window[0]) + ',' + str(window[1]) + ']':>9} "
             f"{'a[' + str(kmin) + ',' + str(kmax) + ']':>10} {'r':>7} {'b':>7}  theory"]

    def num(v, width, fmt):
        return f"{'-':>{width}}" if not np.isfinite(v) else f"{v:>{width}{fmt}}"
    for r in rows:
        mu0 = f"{r['mu_k0']:.2e}" if np.isfinite(r["mu_k0"]) else "< floor"
        lines.append(f"{r['activation']:<10} {r['kappa(1)']:>7.3f}  {r['zeros']:<16} {r['k_rel']:>5d} "
                     f"{mu0 + ' (' + str(r['k0']) + ')':>13} "
                     f"{num(r['a_window'], 9, '.3f')} {num(r['a_tail'], 10, '.3f')} {num(r['r'], 7, '.3f')} "
                     f"{num(r['b'], 7, '.2f')}  {r['theory']}")
    return "\n".join(lines)
