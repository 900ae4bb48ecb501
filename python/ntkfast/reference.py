"""Float64 numpy reference: the layer rules of DESIGN section 1 applied literally on the full state.

For a pair of images the state is the full ``(H, W, H, W)`` array of S[u, u'] (and T); the per-image
self states that feed the ReLU norms are computed by the same recursion on (x, x). Slow (O((HW)^2) memory
and work per layer and pair) and obviously right: it defines correctness for the compiled backends.
:func:`fc_closed_form` is the independent closed form of fully-connected nets (Lemma 1 of Bietti & Mairal).
"""
from __future__ import annotations

import numpy as np

from .arch import AvgPool, Conv, Dense, Flatten, GaussianPool, GlobalAvgPool, ReLU
from .inputs import Kernels, check_inputs, check_kind

__all__ = ["gram", "pair", "fc_closed_form", "angle_error_bound", "kappa0", "kappa1"]


def kappa0(r):
    """Arc-cosine kernel of degree 0: (pi - arccos r) / pi."""
    return (np.pi - np.arccos(np.clip(r, -1.0, 1.0))) / np.pi


def kappa1(r):
    """Arc-cosine kernel of degree 1: (r (pi - arccos r) + sqrt(1 - r^2)) / pi."""
    r = np.clip(r, -1.0, 1.0)
    return (r * (np.pi - np.arccos(r)) + np.sqrt(1.0 - r * r)) / np.pi


def _conv(S, layer):
    ky, kx = layer.k
    if layer.padding == "VALID":
        P = S
        ho, wo = S.shape[0] - ky + 1, S.shape[1] - kx + 1
    else:
        ly, lx = (ky - 1) // 2, (kx - 1) // 2
        pads = [(ly, ky - 1 - ly), (lx, kx - 1 - lx)] * 2
        P = np.pad(S, pads, mode="wrap" if layer.padding == "CIRCULAR" else "constant")
        ho, wo = S.shape[0], S.shape[1]
    out = np.zeros((ho, wo, ho, wo))
    for a in range(ky):
        for b in range(kx):
            out += P[a:a + ho, b:b + wo, a:a + ho, b:b + wo]
    return out * (layer.W_std ** 2 / (ky * kx))


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
        rows = [{a + t: 1.0 / p for t in range(p)} for a in starts]
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


def _relu(S, T, nx, ny, E=None, delta=0.0):
    n2 = np.multiply.outer(nx, ny)
    n = np.sqrt(n2)
    theta = np.arctan2(np.sqrt(np.maximum(n2 - S * S, 0.0)), S)
    S_new = (n * np.sin(theta) + (np.pi - theta) * S) / (2 * np.pi)
    T_new = T * (np.pi - theta) / (2 * np.pi)
    if E is not None:
        # An error delta in rho moves the angle by delta / sqrt(1 - rho^2), at most sqrt(2 delta) where rho is
        # near +-1; T' = T (pi - theta) / 2 pi moves by |T| d_theta / 2 pi. (S' is flat in theta there.)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = np.where(n > 0, S / np.where(n > 0, n, 1.0), 0.0)
            dth = np.minimum(delta / np.sqrt(np.maximum(1.0 - rho * rho, 1e-300)), np.sqrt(2.0 * delta))
        E = E * (np.pi - theta) / (2 * np.pi) + np.abs(T) * np.where(n > 0, dth, 0.0) / (2 * np.pi)
    return S_new, T_new, E


def _run(arch, x, y, traj_x=None, traj_y=None, delta=None):
    """Run the layer program on one pair. With traj_x None this is the self recursion of x (y is x):
    the ReLU norms come from the pair's own diagonal, and the pre-ReLU diagonals are returned. With
    ``delta``, also returns the first-order NTK error bound of :func:`angle_error_bound`."""
    self_mode = traj_x is None
    record = []
    if arch.convolutional:
        S = np.einsum("hwc,HWc->hwHW", x, y) / x.shape[-1]
    else:
        S = np.asarray(x @ y / x.shape[-1])
    T = np.zeros_like(S)
    E = None if delta is None else np.zeros_like(S)
    spatial = arch.convolutional
    relu_i = 0
    for layer in arch.layers:
        if isinstance(layer, Conv):
            S = _conv(S, layer) + layer.b_std ** 2
            T = _conv(T, layer) + S
            E = None if E is None else _conv(E, layer)
        elif isinstance(layer, Dense):
            S = layer.W_std ** 2 * S + layer.b_std ** 2
            T = layer.W_std ** 2 * T + S
            E = None if E is None else layer.W_std ** 2 * E
        elif isinstance(layer, ReLU):
            if self_mode:
                d = np.einsum("ijij->ij", S).copy() if spatial else S.copy()
                record.append(d)
                nx = ny = d
            else:
                nx, ny = traj_x[relu_i], traj_y[relu_i]
            relu_i += 1
            S, T, E = _relu(S, T, nx, ny, E, delta)
        elif isinstance(layer, (AvgPool, GaussianPool)):
            S, T = _pool(S, layer), _pool(T, layer)
            E = None if E is None else _pool(E, layer)
        elif isinstance(layer, GlobalAvgPool):
            S, T = np.asarray(S.mean()), np.asarray(T.mean())
            E = None if E is None else np.asarray(E.mean())
            spatial = False
        elif isinstance(layer, Flatten):
            S, T = np.einsum("ijij->ij", S).mean(), np.einsum("ijij->ij", T).mean()
            E = None if E is None else np.einsum("ijij->ij", E).mean()
            spatial = False
        else:  # pragma: no cover - serial() admits only the layers above
            raise TypeError(f"unknown layer {layer!r}")
    if delta is not None:
        return float(S), float(T), record, float(E)
    return float(S), float(T), record


def pair(x, y, *, arch):
    """Both kernels of one pair of inputs (x, y): a tuple (nngp, ntk) of Python floats."""
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
    """First-order bound of the NTK error that a relative error ``delta`` in the correlations rho causes
    through the ReLU angles (docs/design.md, numerics): (N, M) float64, absolute.

    The angle theta = arccos(rho) is ill-conditioned where rho is near +-1: an error delta moves it by
    delta / sqrt(1 - rho^2), at most sqrt(2 delta). The NNGP is flat in theta there, so only the NTK loses
    digits: T' = T (pi - theta) / (2 pi) moves by |T| d_theta / (2 pi), and this error is carried through the
    following layers like T itself. For a recursion in precision eps, delta is a small multiple of eps. Used by
    the tests to derive tolerances: generic entries stay at O(eps), and nets whose correlations sit at +-1
    everywhere (single-channel inputs through 1x1 convolutions: rank-one states) at O(sqrt(eps)).
    """
    X, Y, _ = check_inputs(arch, X, Y)
    Yv = X if Y is None else Y
    tx = [_run(arch, x, x)[2] for x in X]
    ty = tx if Y is None else [_run(arch, y, y)[2] for y in Yv]
    E = np.zeros((len(X), len(Yv)))
    for i in range(len(X)):
        for j in range(len(Yv)):
            E[i, j] = _run(arch, X[i], Yv[j], tx[i], ty[j], delta=float(delta))[3]
    return E


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
