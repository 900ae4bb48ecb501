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
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np

__all__ = ["DotProductKernel", "kernel", "KERNEL_NAMES", "multiplicity", "legendre_table", "mercer_eigenvalues",
           "Spectrum", "spectrum", "fit_decay", "sphere_gram_eigenvalues", "sample_sphere", "theory_decay",
           "spectrum_table", "plot_spectrum", "register_cli"]

KERNEL_NAMES = ("kappa0", "kappa1", "ntk", "nngp")
_EPS = np.finfo(np.float64).eps


def _int_arg(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


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


class DotProductKernel:
    """A dot-product kernel kappa on the sphere, evaluated accurately as a function of the angle.

    ``name``: 'kappa0' (arc-cosine of degree 0), 'kappa1' (arc-cosine of degree 1), 'ntk' or 'nngp' (the NTK
    or NNGP of ``presets.fc(depth)`` for inputs of norm sqrt(D), see the module docstring). ``depth`` (int
    >= 1) applies to 'ntk' and 'nngp' only. ``k(t)`` takes t in [-1, 1] (float64 array, any shape);
    ``k.at_angle(theta)`` takes theta in [0, pi] and is the accurate entry point.
    """

    def __init__(self, name, depth=1):
        if name not in KERNEL_NAMES:
            raise ValueError(f"kernel name must be one of {KERNEL_NAMES}; got {name!r}")
        depth = _int_arg(depth, "depth", 1)
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

    def __call__(self, t):
        t = np.asarray(t, dtype=np.float64)
        if np.any(~np.isfinite(t)) or np.any(np.abs(t) > 1.0 + 1e-12):
            raise ValueError("t must lie in [-1, 1] (cosines of angles between unit vectors)")
        return self.at_angle(np.arccos(np.clip(t, -1.0, 1.0)))

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
    p = _int_arg(p, "p", 2)
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
    kern : a name in KERNEL_NAMES ('kappa0', 'kappa1', 'ntk', 'nngp'), a DotProductKernel, or any callable
        kappa(t) of a float64 array t in [-1, 1] (evaluated at t = cos(theta): accurate only if kappa is
        smooth in theta; the built-in kernels are evaluated directly in theta).
    p : int >= 2, dimension of the ambient space (the sphere is S^{p-1}).
    kmax : int >= 0, largest degree.
    depth : int >= 1, depth of the fc kernel when ``kern`` is 'ntk' or 'nngp' (default 1).
    nodes : Gauss-Legendre nodes in theta (default 2 kmax + 2 p + 400; the tests check convergence).
    return_floor : also return the rounding floor (see the module docstring).

    Returns
    -------
    mu : float64 (kmax + 1,) (and floor : float64 (kmax + 1,) if ``return_floor``); each mu_k is counted once,
        so that ``sum_k mu_k * multiplicity(p, k) == kappa(1)``.
    """
    p = _int_arg(p, "p", 2)
    kmax = _int_arg(kmax, "kmax", 0)
    if callable(kern) and not isinstance(kern, (str, DotProductKernel)):
        f = lambda th: np.asarray(kern(np.cos(th)), dtype=np.float64)  # noqa: E731
    else:
        kd = kernel(kern, depth)
        f = kd.at_angle
    if nodes is None:
        nodes = 2 * kmax + 2 * p + 400
    nodes = _int_arg(nodes, "nodes", kmax + 2)
    x, w = _gauss_legendre(nodes)
    theta = (x + 1.0) * (np.pi / 2.0)
    w = w * (np.pi / 2.0)
    vals = f(theta)
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
    return mu, floor


# ----------------------------------------------------------------------------------------------------------
# Decay, parity, brute force
# ----------------------------------------------------------------------------------------------------------

def theory_decay(name, p):
    """Asymptotic exponent a in mu_k ~ C k^-a (on the non-vanishing parity) from the paper and Bach (2017):
    kappa0 and every NTK: p; kappa1 and every NNGP: p + 2 (the singularity (1 - t)^s at t = 1 gives
    k^-(p - 1 + 2s); s = 1/2 for kappa0 and the NTK, 3/2 for kappa1 and the NNGP)."""
    return float(p) if name in ("kappa0", "ntk") else float(p + 2)


def fit_decay(k, mu, *, kmin=20, kmax=None, parity="even", floor=None, offset=0.0):
    """Least-squares fit of log mu_k = log C - a log(k + offset) on the chosen ks; returns (a, C).

    k, mu : arrays (K,) (mu_k > 0 where used). parity : 'even', 'odd' or 'all'. floor : optional array (K,);
    eigenvalues below 100 x floor are left out (rounding noise). offset : 0 fits k^-a; (p - 2)/2 (the
    Gegenbauer index, used by :func:`spectrum_table`) fits the same asymptotic exponent with a far smaller
    pre-asymptotic bias (at p = 10: local exponents 10.13, 10.04 at k = 20, 40 instead of 8.9, 9.4).
    Raises ValueError with fewer than 3 points."""
    k = np.asarray(k)
    mu = np.asarray(mu, dtype=np.float64)
    if k.shape != mu.shape or k.ndim != 1:
        raise ValueError(f"k and mu must be 1-d arrays of one length; got shapes {k.shape} and {mu.shape}")
    if parity not in ("even", "odd", "all"):
        raise ValueError(f"parity must be 'even', 'odd' or 'all'; got {parity!r}")
    sel = (k >= max(kmin, 1)) & (mu > 0)
    if kmax is not None:
        sel &= k <= kmax
    if parity != "all":
        sel &= (k % 2) == (0 if parity == "even" else 1)
    if floor is not None:
        sel &= mu > 100.0 * np.asarray(floor)
    if sel.sum() < 3:
        raise ValueError(f"fit_decay needs at least 3 eigenvalues above the floor in the range; got {sel.sum()}")
    A = np.stack([np.ones(sel.sum()), -np.log(k[sel] + float(offset))], axis=1)
    (logc, a), *_ = np.linalg.lstsq(A, np.log(mu[sel]), rcond=None)
    return float(a), float(np.exp(logc))


def sample_sphere(n, p, seed=0):
    """n points uniform on S^{p-1}: float64 (n, p) (normalized Gaussians, ``numpy.random.default_rng(seed)``)."""
    n = _int_arg(n, "n", 1)
    p = _int_arg(p, "p", 2)
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
    p = _int_arg(p, "p", 2)
    kmax = _int_arg(kmax, "kmax", 4)
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


def plot_spectrum(sp, path, dpi=90):
    """Log-log plot of mu_k (even k filled, odd k open; values under 100 x floor omitted) with k^-p and
    k^-(p+2) guides; written to ``path`` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for i, kd in enumerate(sp.kernels):
        mu, fl = sp.mu[kd.label], sp.floor[kd.label]
        for par, ls in ((0, "-"), (1, "--")):
            sel = (sp.k >= 1) & (sp.k % 2 == par) & (mu > 100 * fl)
            if sel.any():
                ax.loglog(sp.k[sel], mu[sel], ls, lw=1.2, color=f"C{i}", marker="." if sel.sum() < 3 else None,
                          label=f"{kd.label}, {'even' if par == 0 else 'odd'} k")
    p = sp.p
    kk = np.array([10.0, float(sp.k[-1])])
    for name, a, ls in (("ntk", p, (0, (1, 3))), ("kappa1", p + 2, (0, (4, 2, 1, 2)))):
        ref = next((kd for kd in sp.kernels if kd.name == name and kd.depth == 1), None)
        if ref is not None and len(sp.k) > 10:
            ax.loglog(kk, 4 * sp.mu[ref.label][10] * (kk / 10) ** (-a), color="k", ls=ls, lw=0.8,
                      label=f"k^-{a} (x4)")
    ax.set_xlabel("degree k")
    ax.set_ylabel("mu_k")
    ax.set_title(f"Mercer eigenvalues on S^{p - 1} (p = {p}); vanishing degrees not drawn", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------

def register_cli(sub):
    p = sub.add_parser("spectrum", help="Mercer eigenvalues of ReLU dot-product kernels on the sphere (Prop. 5)",
                       description="Mercer eigenvalues mu_k of kappa0, kappa1, the two-layer ReLU NTK and deeper "
                                   "fc NTK/NNGP kernels on S^{p-1} (Funk-Hecke, Gauss-Legendre in the angle); "
                                   "prints decay fits and parity zeros, writes a log-log plot.")
    p.add_argument("--p", type=int, default=3, help="ambient dimension p >= 2 (sphere S^{p-1}; default 3)")
    p.add_argument("--kmax", type=int, default=200, help="largest degree k (default 200)")
    p.add_argument("--kmin", type=int, default=None, help="smallest k in the decay fits (default kmax/10, >= 10)")
    p.add_argument("--depth", type=int, default=3, help="depth of the deeper fc NTK/NNGP shown (default 3)")
    p.add_argument("--out", default="spectrum.png", help="PNG path of the plot (default spectrum.png); checked "
                                                         "before any work")
    p.set_defaults(func=_cli)


def _cli(args):
    _int_arg(args.p, "--p", 2)
    _int_arg(args.kmax, "--kmax", 20)
    _int_arg(args.depth, "--depth", 1)
    from .commands import check_out_option
    check_out_option(args.out, None, "--out", (".png",), gram=False)
    kernels = [("kappa0", 1), ("kappa1", 1), ("ntk", 1)]
    if args.depth > 1:
        kernels += [("ntk", args.depth), ("nngp", args.depth)]
    sp = spectrum(args.p, args.kmax, kernels)
    kmin = args.kmin or max(10, args.kmax // 10)
    print(format_table(spectrum_table(sp, kmin), args.p, kmin, args.kmax))
    print(f"first eigenvalues (k = 0..8):")
    for kd in sp.kernels:
        print(f"  {kd.label:<22} " + " ".join(f"{m:.3e}" for m in sp.mu[kd.label][:9]))
    plot_spectrum(sp, args.out)
    print(f"plot written to {args.out}")
    return 0
