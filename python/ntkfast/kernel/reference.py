"""Float64 numpy reference: the layer rules of docs/layers.md applied literally on the full state.

For a pair of images the state is the full ``(H, W, H, W)`` array of S[u, u'] (and T); the per-image
self states that feed the ReLU norms are computed by the same recursion on (x, x). Slow (O((HW)^2) memory
and work per layer and pair) and obviously right: it defines correctness for the compiled backends.
:func:`fc_closed_form` is the independent closed form of fully-connected nets (Lemma 1 of Bietti & Mairal).
"""
from __future__ import annotations

import numpy as np

from .arch import (ABRelu, AvgPool, Conv, Dense, Erf, FanInSum, FanOut, Flatten, GaussianPool, Gelu, GlobalAvgPool,
                   GlobalSumPool, Identity, Parallel,
                   Hermite, LayerNorm, Monomial, Polynomial, RectifiedMonomial, ReLU, Sign, Sin, SumPool)
from .inputs import Kernels, check_arch, check_inputs, check_kind

__all__ = ["gram", "pair", "fc_closed_form", "angle_error_bound", "kappa0", "kappa1"]


def kappa0(r):
    """Arc-cosine kernel of degree 0: (pi - arccos r) / pi."""
    return (np.pi - np.arccos(np.clip(r, -1.0, 1.0))) / np.pi


def kappa1(r):
    """Arc-cosine kernel of degree 1: (r (pi - arccos r) + sqrt(1 - r^2)) / pi."""
    r = np.clip(r, -1.0, 1.0)
    return (r * (np.pi - np.arccos(r)) + np.sqrt(1.0 - r * r)) / np.pi


def _conv(S, layer):
    """Box average of the window over both positions (S[u+v, u'+v]), the layer's padding, then its stride."""
    ky, kx = layer.k
    sy, sx = layer.stride
    n_y, n_x = S.shape[0], S.shape[1]
    if layer.padding == "VALID":
        P = S
        oy, ox = (n_y - ky) // sy + 1, (n_x - kx) // sx + 1
    else:  # SAME / CIRCULAR: ceil(n / s) outputs, the padding split as JAX does (smaller half before)
        oy, ox = -(-n_y // sy), -(-n_x // sx)
        py = max((oy - 1) * sy + ky - n_y, 0)
        px = max((ox - 1) * sx + kx - n_x, 0)
        pads = [(py // 2, py - py // 2), (px // 2, px - px // 2)] * 2
        P = np.pad(S, pads, mode="wrap" if layer.padding == "CIRCULAR" else "constant")
    out = np.zeros((oy, ox, oy, ox))
    ys, xs = slice(0, sy * (oy - 1) + 1, sy), slice(0, sx * (ox - 1) + 1, sx)
    for a in range(ky):
        for b in range(kx):
            Q = P[a:, b:, a:, b:]
            out += Q[ys, xs, ys, xs]
    return out / (ky * kx)


def _pool_matrix(layer, axis, n):
    """The (n_out, n) matrix of one axis of a pooling layer, from its definition (written here on purpose,
    independently of the compiled geometry in csrc/core/program.cpp, so that each can catch the other)."""
    rows = []
    if isinstance(layer, GaussianPool):
        s = layer.stride
        sigma = layer.sigma if layer.sigma is not None else s / np.sqrt(2.0)
        v = np.arange(-s, s + 1)
        h = np.exp(-v ** 2 / (2.0 * sigma ** 2))
        h /= h.sum()
        for j in range(n // s - 1):          # outputs at s (j + 1); taps outside the image contribute 0
            rows.append({s * (j + 1) + int(vv): w for vv, w in zip(v, h)})
    else:
        p, s = layer.p[axis], layer.stride[axis]
        if layer.padding == "VALID":         # windows that fit: starts 0, s, 2s, ... while start + p <= n
            starts = list(range(0, n - p + 1, s))
        else:                                # SAME: ceil(n / s) windows, zero padding with the smaller half first
            n_out = -(-n // s)
            lo = max((n_out - 1) * s + p - n, 0) // 2
            starts = [j * s - lo for j in range(n_out)]
        w = 1.0 if isinstance(layer, SumPool) else 1.0 / p
        rows = [{a + t: w for t in range(p)} for a in starts]
    A = np.zeros((len(rows), n))
    for j, taps in enumerate(rows):
        for i, w in taps.items():
            if 0 <= i < n:
                A[j, i] += w
    return A


def _pool(S, layer):
    Ay = _pool_matrix(layer, 0, S.shape[0])
    Ax = _pool_matrix(layer, 1, S.shape[1])
    return np.einsum("ai,bj,ck,dl,ijkl->abcd", Ay, Ax, Ay, Ax, S, optimize=True)


def _arccos_j(n, theta):
    """Cho & Saul's J_n(theta), from J_n = (-1)^n sin^(2n+1) (1/sin d/dtheta)^n ((pi - theta) / sin), written out."""
    c, sn, ph = np.cos(theta), np.sin(theta), np.pi - theta
    return [ph,
            sn + ph * c,
            3 * sn * c + ph * (1 + 2 * c ** 2),
            4 * sn ** 3 + 15 * sn * c ** 2 + ph * (9 * sn ** 2 * c + 15 * c ** 3),
            sn * c * (55 + 50 * c ** 2) + ph * (9 + 72 * c ** 2 + 24 * c ** 4)][n]


def _poly_moment(c1, c2, S, px, py):
    """E[p1(u) p2(v)] for Gaussian (u, v) with variances px, py and covariance S (elementwise arrays), by
    v = (S/px) u + w, w independent of u: E[u^i v^j] = sum_k C(j, k) (S/px)^k E[u^(i+k)] E[w^(j-k)]."""
    from math import comb

    def gauss_moment(m, var):  # E[z^m], z ~ N(0, var)
        if m % 2:
            return np.zeros_like(var)
        return np.prod(np.arange(m - 1, 0, -2), dtype=float) * var ** (m // 2)
    safe = np.where(px > 0, px, 1.0)
    beta = np.where(px > 0, S / safe, 0.0)
    wvar = np.maximum(py - beta * S, 0.0)
    out = np.zeros(np.broadcast(S, px, py).shape)
    for i, ci in enumerate(c1):
        for j, cj in enumerate(c2):
            if ci == 0 or cj == 0:
                continue
            e = sum(comb(j, k) * beta ** k * gauss_moment(i + k, px) * gauss_moment(j - k, wvar) for k in range(j + 1))
            out = out + ci * cj * e
    return out


def _poly_coef(layer):
    if isinstance(layer, Monomial):
        return [0.0] * layer.degree + [1.0]
    if isinstance(layer, Hermite):
        from math import factorial
        return list(np.polynomial.hermite_e.herme2poly([0] * layer.degree + [1]) / np.sqrt(factorial(layer.degree)))
    return list(layer.coef)


def _pointwise(layer, S, T, nx, ny):
    """The dual map of one pointwise layer: S' = E[phi(u) phi(v)], T' = T E[phi'(u) phi'(v)], with
    Var u = nx, Var v = ny (outer product over positions), Cov = S."""
    P = np.multiply.outer(nx, ny)
    root = np.sqrt(np.maximum(P - S * S, 0.0))
    theta = np.arctan2(root, S)
    zero = np.zeros_like(S)
    if isinstance(layer, (ReLU, ABRelu)):
        a, b = (0.0, 1.0) if isinstance(layer, ReLU) else (layer.a, layer.b)
        f, h = (a - b) ** 2 / (2 * np.pi), (a * a + b * b) / 2
        dot = h - f * theta
        return f * root + dot * S, T * dot
    if isinstance(layer, RectifiedMonomial):
        n = layer.degree
        Sn = P ** (n / 2) * _arccos_j(n, theta) / (2 * np.pi)
        if n == 0:  # (x >= 0) is 1 at x = 0: two all-zero inputs give 1, one of them 1/2 (as the formula)
            Sn = np.where(np.multiply.outer(nx == 0, ny == 0), 1.0, Sn)
        dot = zero if n == 0 else n * n * P ** ((n - 1) / 2) * _arccos_j(n - 1, theta) / (2 * np.pi)
        return Sn, T * dot
    if isinstance(layer, Erf):
        a, b, c = layer.a, layer.b, layer.c
        D = np.multiply.outer(1 + 2 * b * b * nx, 1 + 2 * b * b * ny)
        Sn = a * a * 2 / np.pi * np.arcsin(2 * b * b * S / np.sqrt(D)) + c * c
        dot = a * a * 4 * b * b / np.pi / np.sqrt(D - 4 * b ** 4 * S * S)
        return Sn, T * dot
    if isinstance(layer, Gelu):
        # Tsuchida et al. (2020): E[gelu gelu] = S/4 + S arcsin(S/sqrt(P1)) / (2 pi) + (S^2 + P (P1 - S^2)) /
        # (2 pi P1 sqrt(P1 - S^2)), P1 = (1 + nx)(1 + ny); the derivative kernel likewise.
        P1 = np.multiply.outer(1 + nx, 1 + ny)
        d2 = P1 - S * S
        asn = np.arcsin(S / np.sqrt(P1))
        Sn = S / 4 + S * asn / (2 * np.pi) + (S * S + P * d2) / (2 * np.pi * P1 * np.sqrt(d2))
        dot = 0.25 + asn / (2 * np.pi) + S / (2 * np.pi * np.sqrt(d2)) * (1 / d2 + (1 - P) / P1 + 1)
        return Sn, T * dot
    if isinstance(layer, Sin):
        a, b, c = layer.a, layer.b, layer.c
        m = np.add.outer(nx, ny) / 2
        e1, e2 = np.exp(b * b * (S - m)), np.exp(-b * b * (S + m)) * np.cos(2 * c)
        return a * a / 2 * (e1 - e2), T * a * a * b * b / 2 * (e1 + e2)
    if isinstance(layer, (Monomial, Hermite, Polynomial)):
        c = _poly_coef(layer)
        dc = [m * c[m] for m in range(1, len(c))] or [0.0]
        PX, PY = np.multiply.outer(nx, np.ones_like(ny)), np.multiply.outer(np.ones_like(nx), ny)
        return _poly_moment(c, c, S, PX, PY), T * _poly_moment(dc, dc, S, PX, PY)
    if isinstance(layer, Sign):
        Sn = np.where(P > 0, 2 / np.pi * np.arcsin(np.clip(S / np.sqrt(np.where(P > 0, P, 1.0)), -1, 1)), 0.0)
        return Sn, zero
    if isinstance(layer, LayerNorm):
        inv = 1 / np.sqrt(np.multiply.outer(layer.eps + nx, layer.eps + ny))
        return S * inv, T * inv
    raise TypeError(f"not a pointwise layer: {layer!r}")  # pragma: no cover


def _diag(S, spatial):
    return np.einsum("ijij->ij", S).copy() if spatial else np.asarray(S).copy()


class _Stream:
    """One stream of a pair's state: S, T (and their error bounds), the finite width, image or scalar."""

    def __init__(self, S, T, ES, ET, channels, spatial):
        self.S, self.T, self.ES, self.ET, self.channels, self.spatial = S, T, ES, ET, channels, spatial

    def copy(self):
        c = lambda A: None if A is None else A.copy()  # noqa: E731
        return _Stream(c(self.S), c(self.T), c(self.ES), c(self.ET), self.channels, self.spatial)

    def map(self, f):
        """Apply a linear map to S, T and the error bounds."""
        self.S, self.T = f(self.S), f(self.T)
        if self.ES is not None:
            self.ES, self.ET = f(self.ES), f(self.ET)


def _run(arch, x, y, traj_x=None, traj_y=None, delta=None):
    """Run the layer program on one pair. With traj_x None this is the self recursion of x (y is x): the
    norms of pointwise layers come from the pair's own diagonal, and these diagonals are returned (in the
    order the layers are met, branches in order). With ``delta``, also returns the first-order NNGP and NTK
    error bounds of :func:`angle_error_bound`."""
    if arch.convolutional:
        S = np.einsum("hwc,HWc->hwHW", x, y) / x.shape[-1]
    else:
        S = np.asarray(x @ y / x.shape[-1])
    zero = None if delta is None else np.zeros_like(S)
    st = _Stream(S, np.zeros_like(S), zero, None if zero is None else zero.copy(), x.shape[-1], arch.convolutional)
    ctx = {"self": traj_x is None, "record": [], "tx": traj_x, "ty": traj_y, "k": 0, "delta": delta}
    (st,) = _run_layers(arch.layers, [st], ctx)
    if delta is not None:
        return float(st.S), float(st.T), ctx["record"], (float(st.ES), float(st.ET))
    return float(st.S), float(st.T), ctx["record"]


def _run_layers(layers, streams, ctx):
    for layer in layers:
        if isinstance(layer, FanOut):
            streams = [streams[0]] + [streams[0].copy() for _ in range(layer.n - 1)]
        elif isinstance(layer, Parallel):
            streams = [_run_layers(b, [s], ctx)[0] for b, s in zip(layer.branches, streams)]
        elif isinstance(layer, FanInSum):
            # Independent mean-zero branches: the kernels of a sum are the sums of the kernels.
            out = streams[0]
            for s in streams[1:]:
                out.S, out.T = out.S + s.S, out.T + s.T
                if out.ES is not None:
                    out.ES, out.ET = out.ES + s.ES, out.ET + s.ET
            streams = [out]
        else:
            _run_layer(layer, streams[0], ctx)
    return streams


def _run_layer(layer, st, ctx):
    if isinstance(layer, Identity):
        return
    if isinstance(layer, (Conv, Dense)):
        lin = (lambda A: _conv(A, layer)) if isinstance(layer, Conv) else (lambda A: A)
        b2 = 0.0 if layer.b_std is None else layer.b_std ** 2
        S_lin, T_lin = lin(st.S), lin(st.T)
        S_new = layer.W_std ** 2 * S_lin + b2
        window = layer.k[0] * layer.k[1] if isinstance(layer, Conv) else 1
        if layer.parameterization == "ntk":
            T = layer.W_std ** 2 * T_lin + S_new
        else:  # d f / d W of the unnormalized weights: the fan-in (channels x window) times the input kernel
            T = layer.W_std ** 2 * T_lin + st.channels * window * S_lin + (0.0 if layer.b_std is None else 1.0)
        if st.ES is not None:
            ES_new = layer.W_std ** 2 * lin(st.ES)
            st.ET = layer.W_std ** 2 * lin(st.ET) + (ES_new if layer.parameterization == "ntk"
                                                     else st.channels * window * lin(st.ES))
            st.ES = ES_new
        st.S, st.T = S_new, T
        st.channels = layer.width
    elif layer.nonlinear or isinstance(layer, LayerNorm):
        if ctx["self"]:
            d = _diag(st.S, st.spatial)
            ctx["record"].append(d)
            nx = ny = d
        else:
            nx, ny = ctx["tx"][ctx["k"]], ctx["ty"][ctx["k"]]
        ctx["k"] += 1
        S, T = st.S, st.T
        S_new, T_new = _pointwise(layer, S, T, nx, ny)
        if st.ES is not None:
            # Roundings move S by delta n (on top of the error ES it carries); the layer's outputs move by what
            # its map does to S +- that, clipped to |S| <= n: first order where the map is smooth, sqrt(delta)
            # where the angle is singular (rho near +-1), whatever the kind of layer.
            n = np.sqrt(np.multiply.outer(nx, ny))
            dS = st.ES + ctx["delta"] * n
            dot = _pointwise(layer, S, np.ones_like(S), nx, ny)[1]
            es, et = np.zeros_like(S), np.zeros_like(S)
            for sign in (-1.0, 1.0):
                Sq, Dq = _pointwise(layer, np.clip(S + sign * dS, -n, n), np.ones_like(S), nx, ny)
                es = np.maximum(es, np.abs(Sq - S_new))
                et = np.maximum(et, np.abs(Dq - dot))
            st.ES, st.ET = es, np.abs(dot) * st.ET + np.abs(T) * et
        st.S, st.T = S_new, T_new
    elif isinstance(layer, (AvgPool, GaussianPool)):
        st.map(lambda A: _pool(A, layer))
    elif isinstance(layer, GlobalAvgPool):
        st.map((lambda A: np.asarray(A.sum())) if isinstance(layer, GlobalSumPool) else (lambda A: np.asarray(A.mean())))
        st.spatial = False
    elif isinstance(layer, Flatten):
        st.channels = None if st.channels is None else st.channels * st.S.shape[0] * st.S.shape[1]
        st.map(lambda A: np.einsum("ijij->ij", A).mean())
        st.spatial = False
    else:  # pragma: no cover - serial() admits only the layers above
        raise TypeError(f"unknown layer {layer!r}")


def pair(x, y, *, arch):
    """Both kernels of one pair of inputs (x, y): a tuple (nngp, ntk) of Python floats."""
    arch = check_arch(arch)
    X, Y, _ = check_inputs(arch, np.asarray(x)[None], np.asarray(y)[None])
    tx, ty = _run(arch, X[0], X[0])[2], _run(arch, Y[0], Y[0])[2]
    s, t, _ = _run(arch, X[0], Y[0], tx, ty)
    return s, t


def gram(X, Y=None, *, arch, kind=None):
    """Float64 Gram matrices by the literal rules.

    Parameters
    ----------
    X : array (N, H, W, C) for convolutional nets or (N, D) for fully-connected nets.
    Y : array (M, ...) or None (then the symmetric Gram of X is computed, upper triangle mirrored).
    arch : ntkfast.Arch
    kind : None (both, as Kernels), 'nngp' or 'ntk'.

    Returns
    -------
    Kernels(nngp, ntk) of float64 arrays (N, M), or one array if ``kind`` is given.
    """
    check_kind(kind)
    arch = check_arch(arch)
    X, Y, _ = check_inputs(arch, X, Y)
    sym = Y is None
    Yv = X if sym else Y
    tx = [_run(arch, x, x)[2] for x in X]
    ty = tx if sym else [_run(arch, y, y)[2] for y in Yv]
    S = np.zeros((len(X), len(Yv)))
    T = np.zeros_like(S)
    for i in range(len(X)):
        for j in range(i if sym else 0, len(Yv)):
            S[i, j], T[i, j], _ = _run(arch, X[i], Yv[j], tx[i], ty[j])
            if sym:
                S[j, i], T[j, i] = S[i, j], T[i, j]
    k = Kernels(S, T)
    return k if kind is None else getattr(k, kind)


def angle_error_bound(X, Y=None, *, arch, delta):
    """First-order bounds of the NNGP and NTK errors that a relative error ``delta`` in the correlations rho
    causes through the angles of the pointwise layers (docs/design.md, numerics): ``Kernels`` of (N, M)
    float64 arrays, absolute.

    At each pointwise layer the covariance S of a pair is perturbed by delta n (n = sqrt(S_xx S_yy)) plus the
    error it already carries, and the layer's map is evaluated there: where rho is near +-1 the angle
    theta = arccos(rho) moves by up to sqrt(2 delta), and outputs that depend on it with a nonzero slope (the
    NTK factor of ReLU, ABRelu and RectifiedMonomial(1); the NNGP of Sign and RectifiedMonomial(0)) lose half
    their digits; elsewhere the map's own conditioning shows (Erf at large variances). Errors are carried
    through the following layers like the kernels themselves. For a recursion in precision eps, delta is a
    small multiple of eps. Used by the tests to derive tolerances: generic entries stay at O(eps), nets whose
    correlations sit at +-1 (single-channel inputs through 1x1 convolutions) at O(sqrt(eps)).
    """
    arch = check_arch(arch)
    X, Y, _ = check_inputs(arch, X, Y)
    Yv = X if Y is None else Y
    tx = [_run(arch, x, x)[2] for x in X]
    ty = tx if Y is None else [_run(arch, y, y)[2] for y in Yv]
    ES, ET = np.zeros((len(X), len(Yv))), np.zeros((len(X), len(Yv)))
    for i in range(len(X)):
        for j in range(len(Yv)):
            ES[i, j], ET[i, j] = _run(arch, X[i], Yv[j], tx[i], ty[j], delta=float(delta))[3]
    return Kernels(ES, ET)


def fc_closed_form(X, Y=None, *, depth, kind=None):
    """Closed form of ``presets.fc(depth)`` (Lemma 1 of Bietti & Mairal), by arc-cosine kernels.

    With n = |x||y|/D, rho_0 = <x,y>/(|x||y|): rho_k = kappa1(rho_{k-1}), Sigma_k = n rho_k,
    N_0 = Sigma_0, N_k = N_{k-1} kappa0(rho_{k-1}) + Sigma_k. Returns NNGP = Sigma_depth, NTK = N_depth.
    X, Y: (N, D), (M, D) arrays; float64 results (N, M).
    """
    from .presets import fc
    check_kind(kind)
    X, Y, _ = check_inputs(fc(depth), X, Y)
    sym = Y is None
    Y = X if sym else Y
    D = X.shape[1]
    nx, ny = np.linalg.norm(X, axis=1), np.linalg.norm(Y, axis=1)
    n = np.multiply.outer(nx, ny) / D
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(n > 0, (X @ Y.T) / D / np.where(n > 0, n, 1.0), 0.0)
    rho = np.clip(rho, -1.0, 1.0)
    if sym:  # <x,x> / |x|^2 is 1 up to rounding, and arccos near 1 would turn eps into sqrt(eps)
        np.fill_diagonal(rho, np.where(np.diag(n) > 0, 1.0, 0.0))
    sigma = n * rho
    ntk = sigma.copy()
    for _ in range(depth):
        k0 = kappa0(rho)
        rho = kappa1(rho)
        sigma = n * rho
        ntk = ntk * k0 + sigma
    k = Kernels(sigma, ntk)
    return k if kind is None else getattr(k, kind)
