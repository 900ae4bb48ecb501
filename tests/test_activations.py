"""Dual maps of every activation against expectations computed independently by quadrature.

For a Gaussian pair (u, v) with Var u = px, Var v = py, Cov = s, both E[phi(u) phi(v)] (the NNGP map) and
E[phi'(u) phi'(v)] (the factor that multiplies the NTK) are computed here from phi and phi' alone: u =
sqrt(px) z1, v = sqrt(py) (rho z1 + sqrt(1 - rho^2) z2). Piecewise-polynomial activations (ReLU, ABRelu,
RectifiedMonomial, Sign) are integrated exactly in z2 by truncated Gaussian moments and by adaptive
quadrature in z1 on each side of the kink; smooth ones (Erf, Gelu, Sin, polynomials) by a 2-D
Gauss-Hermite rule. Compared with the compiled backend (a fully-connected net Dense -> activation -> Dense
on two vectors, float64) and with ntkfast.reference.
"""
import math

import numpy as np
import pytest
from scipy import integrate, special

import ntkfast as nf
from ntkfast import reference

POINTS = [(0.7, 1.3, 0.9), (-0.4, 0.8, 1.7), (0.05, 2.5, 0.3), (1.1, 1.21, 1.0), (0.0, 1.0, 1.0)]  # (s, px, py)


def _tail_moments(t, kmax):
    """M_k = E[z^k 1(z > t)], k = 0..kmax, for z ~ N(0, 1) (M_k = t^(k-1) pdf(t) + (k-1) M_(k-2))."""
    pdf = math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    M = [0.5 * math.erfc(t / math.sqrt(2)), pdf]
    for k in range(2, kmax + 1):
        M.append(t ** (k - 1) * pdf + (k - 1) * M[k - 2])
    return M[:kmax + 1]


def _piece_mean(pieces, m, sig):
    """E[g(m + sig z)] for g = left polynomial on x < 0, right polynomial on x >= 0 (coefficient lists)."""
    left, right = pieces
    deg = max(len(left), len(right)) - 1
    if sig == 0:
        c = right if m >= 0 else left
        return sum(ck * m ** k for k, ck in enumerate(c))
    t = -m / sig
    Mr = _tail_moments(t, deg)                      # E[z^j 1(z > t)]
    Ml = [(float(j % 2 == 0) * special.factorial2(j - 1) if j else 1.0) - Mr[j] for j in range(deg + 1)]

    def part(c, M):
        tot = 0.0
        for k, ck in enumerate(c):
            for j in range(k + 1):
                tot += ck * math.comb(k, j) * m ** (k - j) * sig ** j * M[j]
        return tot
    return part(right, Mr) + part(left, Ml)


def _poly_val(c, x):
    return sum(ck * x ** k for k, ck in enumerate(c))


def expect_piecewise(pieces, s, px, py):
    rho = s / math.sqrt(px * py)
    a, b = math.sqrt(py) * rho, math.sqrt(py * max(1 - rho * rho, 0.0))

    def integrand(z):
        u = math.sqrt(px) * z
        f = _poly_val(pieces[1] if u >= 0 else pieces[0], u)
        return f * _piece_mean(pieces, a * z, b) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    lo = integrate.quad(integrand, -np.inf, 0, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
    hi = integrate.quad(integrand, 0, np.inf, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
    return lo + hi


def expect_smooth(f, g, s, px, py, n=120):
    z, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / math.sqrt(2 * math.pi)
    rho = s / math.sqrt(px * py)
    Z1, Z2 = np.meshgrid(z, z, indexing="ij")
    u = math.sqrt(px) * Z1
    v = math.sqrt(py) * (rho * Z1 + math.sqrt(max(1 - rho * rho, 0.0)) * Z2)
    return float(np.einsum("i,j,ij->", w, w, f(u) * g(v)))


def _abrelu(a, b):
    return ([0.0, a], [0.0, b]), ([a], [b])


def _rect(n):
    mono = [0.0] * n + [1.0]
    return ([0.0], mono), (([0.0], [0.0]) if n == 0 else ([0.0], [0.0] * (n - 1) + [float(n)]))


def _poly_pair(c):
    dc = [k * c[k] for k in range(1, len(c))] or [0.0]
    return (lambda x: np.polynomial.polynomial.polyval(x, c)), (lambda x: np.polynomial.polynomial.polyval(x, dc))


def _hermite(n):
    c = np.polynomial.hermite_e.herme2poly([0] * n + [1]) / math.sqrt(math.factorial(n))
    return list(c)


# (layer, how to integrate): ('piece', (pieces of phi), (pieces of phi')) or ('smooth', phi, phi')
CASES = {
    "relu": (nf.ReLU(), ("piece",) + _abrelu(0.0, 1.0)),
    "abrelu": (nf.ABRelu(0.3, -1.2), ("piece",) + _abrelu(0.3, -1.2)),
    "leaky": (nf.LeakyRelu(0.1), ("piece",) + _abrelu(0.1, 1.0)),
    "abs": (nf.Abs(), ("piece",) + _abrelu(-1.0, 1.0)),
    **{f"rectmono{n}": (nf.RectifiedMonomial(n), ("piece",) + _rect(n)) for n in range(5)},
    "sign": (nf.Sign(), ("piece", ([-1.0], [1.0]), ([0.0], [0.0]))),
    "erf": (nf.Erf(1.3, 0.7, 0.2), ("smooth", lambda x: 1.3 * special.erf(0.7 * x) + 0.2,
                                    lambda x: 1.3 * 0.7 * 2 / math.sqrt(math.pi) * np.exp(-(0.7 * x) ** 2))),
    "gelu": (nf.Gelu(), ("smooth", lambda x: x * special.ndtr(x),
                         lambda x: special.ndtr(x) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi))),
    "sin": (nf.Sin(1.1, 0.9, 0.4), ("smooth", lambda x: 1.1 * np.sin(0.9 * x + 0.4),
                                    lambda x: 1.1 * 0.9 * np.cos(0.9 * x + 0.4))),
    "cos": (nf.Cos(0.8, 1.4, -0.3), ("smooth", lambda x: 0.8 * np.cos(1.4 * x - 0.3),
                                     lambda x: -0.8 * 1.4 * np.sin(1.4 * x - 0.3))),
    **{f"monomial{n}": (nf.Monomial(n), ("smooth",) + _poly_pair([0.0] * n + [1.0])) for n in (0, 1, 2, 3, 5, 8)},
    **{f"hermite{n}": (nf.Hermite(n), ("smooth",) + _poly_pair(_hermite(n))) for n in (0, 1, 2, 4, 7)},
    "polynomial": (nf.Polynomial([0.3, -1.0, 0.5, 0.2]), ("smooth",) + _poly_pair([0.3, -1.0, 0.5, 0.2])),
}


def quadrature(how, s, px, py):
    if how[0] == "piece":
        return expect_piecewise(how[1], s, px, py), expect_piecewise(how[2], s, px, py)
    return expect_smooth(how[1], how[1], s, px, py), expect_smooth(how[2], how[2], s, px, py)


def compiled(layer, s, px, py):
    """(E[phi phi], E[phi' phi']) from the compiled backend: Dense -> layer -> Dense() on two 2-vectors."""
    rho = s / math.sqrt(px * py)
    x = np.array([[math.sqrt(2 * px), 0.0]])
    y = np.array([[math.sqrt(2 * py) * rho, math.sqrt(2 * py * max(1 - rho * rho, 0.0))]])
    k = nf.gram(x, y, arch=nf.serial(nf.Dense(), layer, nf.Dense()), dtype="float64", device="cpu")
    nngp, ntk = float(k.nngp[0, 0]), float(k.ntk[0, 0])
    return nngp, ((ntk - nngp) / s if s != 0 else None)   # NTK = s E[phi' phi'] + NNGP


@pytest.mark.parametrize("name", sorted(CASES))
def test_dual_maps_match_quadrature(name):
    """Relative to the scale sqrt(E[phi(u)^2] E[phi(v)^2]) (Cauchy-Schwarz), so that zeros (odd moments at
    s = 0) are held to the same standard."""
    layer, how = CASES[name]
    for s, px, py in POINTS:
        q = quadrature(how, s, px, py)
        qx, qy = quadrature(how, px, px, px), quadrature(how, py, py, py)
        norm = [math.sqrt(abs(a * b)) + 1e-300 for a, b in zip(qx, qy)]
        r_nngp, r_dot = reference._pointwise(layer, np.array(s), np.array(1.0), np.array(px), np.array(py))
        c_nngp, c_dot = compiled(layer, s, px, py)
        for what, got, want, n in [("reference nngp", r_nngp, q[0], norm[0]), ("reference dot", r_dot, q[1], norm[1]),
                                   ("compiled nngp", c_nngp, q[0], norm[0]), ("compiled dot", c_dot, q[1], norm[1])]:
            if got is None:   # s = 0: the compiled NTK carries no information on the factor
                continue
            assert abs(float(got) - want) <= 1e-10 * n, (what, (s, px, py), float(got), want)


def test_arc_cosine_kernels_of_cho_and_saul():
    """Degree 0, 1, 2 against the closed forms printed by Cho & Saul (2009): k_n = |x|^n |y|^n J_n(theta) / pi
    with J_0 = pi - theta, J_1 = sin + (pi - theta) cos, J_2 = 3 sin cos + (pi - theta)(1 + 2 cos^2), for
    weights of variance 1 (our E[.] is half of their k_n, which counts both signs of w)."""
    x, y = np.array([[1.2, -0.3, 0.5]]), np.array([[0.4, 0.9, -0.7]])
    D = 3
    th = math.acos(float((x @ y.T)[0, 0]) / (np.linalg.norm(x) * np.linalg.norm(y)))
    J = [math.pi - th, math.sin(th) + (math.pi - th) * math.cos(th),
         3 * math.sin(th) * math.cos(th) + (math.pi - th) * (1 + 2 * math.cos(th) ** 2)]
    for n in range(3):
        k = nf.gram(x, y, arch=nf.serial(nf.Dense(), nf.RectifiedMonomial(n)), kind="nngp", dtype="float64")
        norms = (np.linalg.norm(x) * np.linalg.norm(y) / D) ** n
        assert abs(k[0, 0] - norms * J[n] / (2 * math.pi)) <= 1e-13 * abs(k[0, 0])


def test_sign_ntk_is_zero_and_nngp_arcsin():
    x, y = np.array([[1.0, 0.3]]), np.array([[-0.2, 0.8]])
    k = nf.gram(x, y, arch=nf.serial(nf.Dense(), nf.Sign()), dtype="float64")
    rho = float((x @ y.T)[0, 0]) / (np.linalg.norm(x) * np.linalg.norm(y))
    assert abs(k.nngp[0, 0] - 2 / math.pi * math.asin(rho)) <= 1e-14
    assert k.ntk[0, 0] == 0.0


def test_layernorm_divides_by_the_self_covariances():
    x, y = np.array([[1.0, 0.3, -2.0]]), np.array([[-0.2, 0.8, 0.5]])
    k = nf.gram(x, y, arch=nf.serial(nf.Dense(1.7), nf.LayerNorm(), nf.Dense()), dtype="float64")
    s, px, py = (1.7 ** 2 * float((a @ b.T)[0, 0]) / 3 for a, b in ((x, y), (x, x), (y, y)))
    rho = s / math.sqrt((px + 1e-12) * (py + 1e-12))
    assert abs(k.nngp[0, 0] - rho) <= 1e-14
    assert abs(k.ntk[0, 0] - (rho + rho)) <= 1e-14      # T = S before, / sqrt(px py), then + S' by Dense()


@pytest.mark.parametrize("make, exc, match", [
    (lambda: nf.ABRelu(0, 0), ValueError, r"ABRelu: a = b = 0 is the zero function"),
    (lambda: nf.ABRelu("x", 1), TypeError, r"ABRelu: a must be a real number"),
    (lambda: nf.RectifiedMonomial(-1), ValueError, r"RectifiedMonomial: degree must be in 0..4; got -1"),
    (lambda: nf.RectifiedMonomial(5), ValueError, r"RectifiedMonomial: degree must be in 0..4; got 5"),
    (lambda: nf.Monomial(1.5), TypeError, r"Monomial: degree must be an int"),
    (lambda: nf.Hermite(9), ValueError, r"Hermite: degree must be in 0..8"),
    (lambda: nf.Polynomial([]), ValueError, r"Polynomial: coef must have 1 to 9 entries; got 0"),
    (lambda: nf.Polynomial("12"), TypeError, r"Polynomial: coef must be a sequence of numbers"),
    (lambda: nf.Erf(float("nan")), ValueError, r"Erf: a must be finite"),
    (lambda: nf.LayerNorm(-1.0), ValueError, r"LayerNorm: eps must be a finite number >= 0"),
    (lambda: nf.Conv(3, stride=0), ValueError, r"Conv: stride must be >= 1; got 0"),
    (lambda: nf.Conv(3, parameterization="mup"), ValueError, r"Conv: parameterization must be 'ntk' or 'standard'"),
    (lambda: nf.Dense(width=0), ValueError, r"Dense: width must be a positive int"),
    (lambda: nf.serial(nf.Conv(3), nf.Erf(), nf.Gelu(), nf.Flatten()), ValueError,
     r"layer 2 \(Gelu\) needs a Gaussian input.* gets the output of layer 1 \(Erf\)"),
    (lambda: nf.serial(nf.LayerNorm(), nf.Dense()), ValueError, r"layer 0 \(LayerNorm\) needs a Gaussian input"),
])
def test_bad_parameters(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("arch, shape, match", [
    (nf.serial(nf.Conv(3, stride=9, padding="VALID"), nf.ReLU(), nf.Flatten()), (8, 8, 1),
     r"layer 0 \(Conv\): stride \(9, 9\) is larger than the 8x8 state there"),
    (nf.serial(nf.Conv(3, stride=(1, 7)), nf.ReLU(), nf.Flatten()), (8, 6, 1),
     r"layer 0 \(Conv\): stride \(1, 7\) is larger than the 8x6 state there"),
    (nf.serial(nf.Conv(9, stride=2, padding="VALID"), nf.Flatten()), (8, 8, 1), r"layer 0 \(Conv\): a 9x9 VALID"),
    (nf.serial(nf.Conv(3), nf.Conv(3, parameterization="standard"), nf.Flatten()), (8, 8, 1),
     r"layer 1 \(Conv\): parameterization='standard' needs the number of channels of its input; give width="),
])
def test_layers_that_do_not_fit(arch, shape, match):
    with pytest.raises(ValueError, match=match):
        nf.gram(np.ones((2,) + shape), arch=arch)
