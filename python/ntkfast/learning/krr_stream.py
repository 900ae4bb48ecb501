"""Kernel ridge regression on a Gram matrix that does not fit in memory: it is streamed in row blocks.

:func:`solve` solves ``(K + lam I) alpha = Y`` for several right-hand sides at once by preconditioned
conjugate gradients (PCG). Each iteration reads the Gram once, block of rows by block of rows, from a zarr
array, a numpy memmap or any (N, N) array-like that can be sliced by rows (``K[r0:r1]``), and multiplies
the block with the search directions of every still-unconverged column.

Preconditioner: a randomized Nyström approximation ``K ~ U diag(L) U^T`` of rank r (Frangella, Tropp &
Udell, "Randomized Nyström preconditioning", 2023), built from one extra pass ``K Omega`` with an
orthonormal Gaussian test matrix Omega (N, r):

    P^-1 = (L_r + lam) U (diag(L) + lam)^-1 U^T + (I - U U^T)

It flattens the top of the spectrum, so the iteration count is governed by the eigenvalues below the r-th;
kernel Grams decay fast, so a rank of a few hundred typically turns thousands of CG iterations into tens.
``rank=0`` gives plain CG.

Ridge convention: the same as :mod:`ntkfast.krr`, relative to the trace: ``lam = ridge * tr(K) / N``
(the diagonal is read during the first pass).

Memory (bytes; N rows, b block rows, s = itemsize of the Gram, r = rank, T = right-hand sides):
``b * N * (s + 8)`` for a block and its float64 copy, plus for a zarr Gram the decoded chunks in flight
(zarr reads whole chunks of ``c0 * c1 * s``, up to 10 at once; the solver lowers that concurrency when the
budget needs it), + ``4 * N * r * 8`` for the
sketch + ``6 * N * T * 8`` for the CG vectors. ``memory_budget`` picks b from this (a multiple of the
chunk rows when one fits, so that no chunk is read twice per pass).

Devices: the vectors and block products run on a GPU with cupy (imported only then) as the device policy
says (:mod:`ntkfast.device`): with ``device='cuda'`` (or 'cuda:N'), or ``'auto'`` with cupy importable and a
GPU usable; blocks are read on the host and copied over.
"""
from __future__ import annotations

import numbers
import os
import time
from collections import namedtuple

import numpy as np

from .. import device as D
from ..validation import check_finite, check_int, check_real

__all__ = ["solve", "predict", "open_gram", "SolveInfo", "plan_blocks", "block_rows_for"]

SolveInfo = namedtuple("SolveInfo", ["iterations", "residuals", "converged", "passes", "rank", "lam", "block_rows",
                                     "seconds"])
SolveInfo.__doc__ = """Diagnostics of :func:`solve`: iterations (int), residuals (float64 (T,) final relative
residuals ``||Y - (K + lam I) alpha|| / ||Y||`` per column, recomputed from K), converged (bool), passes
(reads of the whole Gram), rank (of the preconditioner), lam (absolute ridge), block_rows, seconds."""


def open_gram(path, kind=None):
    """The (N, N) Gram array of a store written by :func:`ntkfast.gram`: a ``.zarr`` group (``kind`` 'nngp'
    or 'ntk'; may be omitted when it holds one) or a ``.npy`` memmap. Read-only; nothing is loaded."""
    path = os.fspath(path)
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r")
    if path.endswith(".zarr"):
        import zarr
        g = zarr.open_group(path, mode="r")
        held = [k for k in ("nngp", "ntk") if k in g]
        if kind is None:
            if len(held) != 1:
                raise ValueError(f"kind must be 'nngp' or 'ntk' for {path!r}, which holds {held}")
            kind = held[0]
        if kind not in held:
            raise ValueError(f"kind={kind!r} is not in {path!r}, which holds {held}")
        return g[kind]
    raise ValueError(f"path must end with .zarr or .npy; got {path!r}")


def _gram_array(K, kind):
    if isinstance(K, (str, os.PathLike)):
        return open_gram(K, kind)
    if not hasattr(K, "shape") or not hasattr(K, "__getitem__"):
        raise TypeError(f"K must be an (N, N) array, zarr array, memmap or a path to a store; got {type(K).__name__}")
    return K


def _chunks(K):
    ch = getattr(K, "chunks", None)
    if isinstance(ch, tuple) and len(ch) == 2 and all(isinstance(c, numbers.Integral) for c in ch):
        return int(ch[0]), int(ch[1])
    return None


#: zarr reads at most this many chunks at once by default (its async concurrency); the solver lowers it
#: when a budget needs it
ZARR_CONCURRENCY = 10


def block_bytes(K, b, concurrency=ZARR_CONCURRENCY):
    """Bytes of one streamed block of b rows: a float64 copy and, for a zarr Gram, the decoded chunks in
    flight (up to ``concurrency`` chunks of the rows it touches); for other arrays, the block itself."""
    n = int(K.shape[1])
    s = np.dtype(K.dtype).itemsize
    ch = _chunks(K)
    if ch is None:
        return b * n * (s + 8)
    c0, c1 = ch
    touched = (-(-b // c0) + (1 if b % c0 else 0)) * -(-n // c1)
    return b * n * (s + 8) + min(touched, concurrency) * c0 * c1 * s


def plan_blocks(K, n_rhs, rank, memory_budget=None):
    """(rows per streamed block, zarr read concurrency) within ``memory_budget`` (bytes or '2GB'; see the
    module's memory model; default about 256 MB per block): for a zarr Gram, the most whole chunk rows that
    fit with zarr reading up to 10 chunks at once (fewer if the budget needs it), else part of a chunk row
    read one chunk at a time (slower: every chunk is then decoded several times per pass); for other arrays
    the most rows that fit. MemoryError if not even one row fits."""
    from ..storage.memory import parse_bytes, format_bytes
    n = int(K.shape[0])
    fixed = 4 * n * rank * 8 + 6 * n * max(n_rhs, 1) * 8
    budget = 256 * 2**20 + fixed if memory_budget is None else parse_bytes(memory_budget)
    ch = _chunks(K)

    def largest(step, conc):
        lo, hi = 0, -(-n // step)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fixed + block_bytes(K, min(mid * step, n), conc) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return min(lo * step, n)
    if ch is not None:                       # whole chunk rows first: each chunk is then decoded once per pass
        for conc in range(ZARR_CONCURRENCY, 0, -1):
            rows = largest(ch[0], conc)
            if rows:
                return rows, conc
    conc = ZARR_CONCURRENCY if ch is None else 1
    rows = largest(1, conc)                  # part of a chunk row: chunks are decoded c0 / rows times per pass
    if not rows:
        raise MemoryError(f"memory_budget={format_bytes(budget)} is too small for the streaming solver: it needs "
                          f"{format_bytes(fixed + block_bytes(K, 1, 1))} (sketch and CG vectors {format_bytes(fixed)}, "
                          f"one row block {format_bytes(block_bytes(K, 1, 1))}); raise the budget or lower rank")
    return rows, conc


def block_rows_for(K, n_rhs, rank, memory_budget=None):
    """Rows per streamed block (see :func:`plan_blocks`)."""
    return plan_blocks(K, n_rhs, rank, memory_budget)[0]


def _read_limit(K, concurrency):
    """A context bounding zarr's concurrent chunk reads (a no-op for other arrays)."""
    import contextlib
    if _chunks(K) is None or not type(K).__module__.startswith("zarr"):
        return contextlib.nullcontext()
    import zarr
    return zarr.config.set({"async.concurrency": int(concurrency)})


def _matmul(K, V, rows, xp, diag=None):
    """K @ V streamed by row blocks (V on device xp, float64); fills ``diag`` (numpy) with K's diagonal."""
    n = K.shape[0]
    out = xp.empty((n, V.shape[1]), dtype=np.float64)
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        blk = np.asarray(K[r0:r1])
        if diag is not None:
            diag[r0:r1] = blk[np.arange(r1 - r0), np.arange(r0, r1)]
        out[r0:r1] = xp.asarray(blk, dtype=np.float64) @ V
    return out


def solve(K, Y, ridge, *, kind=None, tol=1e-6, maxiter=None, rank=None, block_rows=None, memory_budget=None,
          device="auto", seed=0, progress=False, return_info=False):
    """Kernel ridge coefficients ``alpha = (K + ridge * tr(K)/N * I)^-1 Y`` by streamed Nyström-PCG.

    Parameters
    ----------
    K : (N, N) symmetric PSD Gram, float32 or float64: a zarr array, a numpy memmap or array, or a path to
        a store written by :func:`ntkfast.gram` (``.zarr`` with ``kind``, or ``.npy``). Read by row blocks.
    Y : (N,) or (N, T) targets (e.g. one-hot labels); all T columns are solved together.
    ridge : float >= 0, relative to the trace (see :mod:`ntkfast.krr`); must be > 0 when K is singular.
    kind : 'nngp' or 'ntk' when K is a .zarr path holding both.
    tol : stop when every column's relative residual ``||Y - (K + lam I) alpha|| / ||Y||`` is <= tol
        (default 1e-6). The error of alpha is at most cond(K + lam I) times the residual.
    maxiter : PCG iterations at most (default: N).
    rank : rank of the Nyström preconditioner (default min(N, 256); 0 = plain CG).
    block_rows : rows per streamed block (default: from ``memory_budget``, else 256 MB blocks).
    memory_budget : None, bytes or a string like '2GB' (see the module's memory model).
    device : 'auto' (cupy on a usable GPU, else numpy), 'cpu', 'cuda' or 'cuda:N'.
    seed : seed of the Nyström test matrix (default 0): results are deterministic.
    progress : a tqdm bar over iterations.
    return_info : also return a :class:`SolveInfo`.

    Returns
    -------
    alpha : float64 numpy array shaped like Y (and a SolveInfo when ``return_info``).
    """
    t0 = time.perf_counter()
    K = _gram_array(K, kind)
    if len(K.shape) != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be a square (N, N) Gram; got shape {tuple(K.shape)}")
    n = int(K.shape[0])
    if np.dtype(K.dtype) not in (np.float32, np.float64):
        raise TypeError(f"K must have dtype float32 or float64; got {K.dtype}")
    Yn = np.asarray(Y, dtype=np.float64)
    vec = Yn.ndim == 1
    if vec:
        Yn = Yn[:, None]
    if Yn.ndim != 2 or Yn.shape[0] != n:
        raise ValueError(f"Y must have shape (N,) or (N, T) with N = {n}; got {np.shape(Y)}")
    check_finite(Yn, "Y")
    ridge = check_real(ridge, "ridge", 0.0, expected="a finite float >= 0 (relative to tr(K)/N)")
    tol = check_real(tol, "tol", 0.0, strict=True, expected="a float in (0, 1)")
    if tol >= 1:
        raise ValueError(f"tol must be a float in (0, 1); got {tol!r}")
    maxiter = check_int(n if maxiter is None else maxiter, "maxiter", 1, expected="a positive int")
    rank = check_int(min(n, 256) if rank is None else rank, "rank", 0, n, expected=f"an int in [0, N={n}]")
    T = Yn.shape[1]
    conc = ZARR_CONCURRENCY
    if block_rows is None:
        block_rows, conc = plan_blocks(K, T, rank, memory_budget)
    else:
        block_rows = check_int(block_rows, "block_rows", 1, expected="a positive int")
    xp = D.array_module(device)
    with _read_limit(K, conc), D.using(device):
        return _solve(K, Yn, vec, ridge, tol, maxiter, rank, block_rows, xp, seed, progress, return_info, t0)


def _solve(K, Yn, vec, ridge, tol, maxiter, rank, block_rows, xp, seed, progress, return_info, t0):
    n, T = Yn.shape

    def asnp(a):
        return a.get() if xp is not np else a

    diag = np.empty(n)
    passes = 0
    if rank > 0:
        rng = np.random.default_rng(seed)
        Om, _ = np.linalg.qr(rng.standard_normal((n, rank)))
        Om = xp.asarray(Om)
        Ys = _matmul(K, Om, block_rows, xp, diag)
        passes += 1
        nu = np.sqrt(n) * np.finfo(np.float64).eps * float(xp.linalg.norm(Ys, 2))
        Ys = Ys + nu * Om
        Cm = Om.T @ Ys
        Cm = (Cm + Cm.T) * 0.5
        Lc = xp.linalg.cholesky(Cm)
        B = xp.linalg.solve(Lc, Ys.T).T          # Ys @ Lc^-T
        del Ys
        U, S, _ = xp.linalg.svd(B, full_matrices=False)
        lam_ny = xp.maximum(S * S - nu, 0.0)
        del Om, B
    else:
        _matmul(K, xp.zeros((n, 0)), block_rows, xp, diag)   # one pass for the trace
        passes += 1
    trace = float(diag.sum())
    if not trace > 0:
        raise ValueError(f"K must have a positive trace; got tr(K) = {trace:.3g}")
    lam = ridge * trace / n
    if rank > 0:
        if lam <= 0 and float(lam_ny[-1]) <= 0:
            raise ValueError("ridge must be > 0: the Gram's Nyström approximation is singular")
        scale = (lam_ny[-1] + lam) / (lam_ny + lam)

        def precond(R):
            UR = U.T @ R
            return R - U @ UR + U @ (scale[:, None] * UR)
    else:
        def precond(R):
            return R

    Yd = xp.asarray(Yn)
    ynorm = xp.linalg.norm(Yd, axis=0)
    ynorm = xp.where(ynorm > 0, ynorm, 1.0)
    X = xp.zeros_like(Yd)
    R = Yd.copy()
    Z = precond(R)
    P = Z.copy()
    rz = xp.sum(R * Z, axis=0)
    active = np.ones(T, dtype=bool)
    it = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=maxiter, unit="it", desc="pcg")
    try:
        while it < maxiter:
            rel = asnp(xp.linalg.norm(R, axis=0) / ynorm)
            active = rel > tol
            if not active.any():
                break
            idx = np.flatnonzero(active)
            ix = xp.asarray(idx)
            Pa = P[:, ix]
            AP = _matmul(K, Pa, block_rows, xp) + lam * Pa
            passes += 1
            denom = xp.sum(Pa * AP, axis=0)
            alpha = rz[ix] / denom
            X[:, ix] += alpha * Pa
            R[:, ix] -= alpha * AP
            Za = precond(R[:, ix])
            rz_new = xp.sum(R[:, ix] * Za, axis=0)
            beta = rz_new / rz[ix]
            P[:, ix] = Za + beta * Pa
            rz[ix] = rz_new
            it += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"max residual {rel.max():.2e}, active {len(idx)}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
    # true residuals, from K itself (one more pass)
    Rt = Yd - (_matmul(K, X, block_rows, xp) + lam * X)
    passes += 1
    res = asnp(xp.linalg.norm(Rt, axis=0) / ynorm)
    alpha_out = asnp(X)
    if vec:
        alpha_out = alpha_out[:, 0]
    if not return_info:
        return alpha_out
    info = SolveInfo(it, res, bool((res <= 10 * tol).all()), passes, int(rank), float(lam), int(block_rows),
                     time.perf_counter() - t0)
    return alpha_out, info


def predict(K_test, alpha, *, kind=None, block_rows=None, memory_budget=None):
    """``K_test @ alpha`` streamed by row blocks: K_test (M, N) test-vs-train Gram (array, zarr, memmap or a
    store path), alpha (N,) or (N, T). Returns float64 (M,) or (M, T)."""
    Kt = _gram_array(K_test, kind)
    A = np.asarray(alpha, dtype=np.float64)
    if len(Kt.shape) != 2 or A.shape[0] != Kt.shape[1]:
        raise ValueError(f"K_test must be (M, N) with N = len(alpha) = {A.shape[0]}; got shape {tuple(Kt.shape)}")
    m, n = int(Kt.shape[0]), int(Kt.shape[1])
    conc = ZARR_CONCURRENCY
    if block_rows is None:
        block_rows, conc = plan_blocks(Kt, A.shape[1] if A.ndim == 2 else 1, 0, memory_budget)
    out = np.empty((m,) + A.shape[1:])
    with _read_limit(Kt, conc):
        for r0 in range(0, m, block_rows):
            r1 = min(r0 + block_rows, m)
            out[r0:r1] = np.asarray(Kt[r0:r1], dtype=np.float64) @ A
    return out
