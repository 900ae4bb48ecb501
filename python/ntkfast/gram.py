"""Tiled Gram matrices on the compiled backends.

``gram(X)`` computes only tiles on or above the diagonal and mirrors them (exactly symmetric); the
per-image self data (the diagonals that feed every ReLU) is computed once per image, not once per pair.
Any N works: the last tile row/column is simply smaller.
"""
from __future__ import annotations

import functools
import numbers
import time

import numpy as np

from .inputs import Kernels, check_arch, check_dtype, check_inputs, check_kind
from . import config

__all__ = ["gram", "compile_program", "resolve_device", "tiles"]

DEFAULT_TILE = {"cpu": 256, "cuda": 2048}


@functools.lru_cache(maxsize=64)
def _program(arch, shape):
    from . import _core
    return _core.make_program(arch.program(shape))


def compile_program(arch, input_shape):
    """The compiled program of ``arch`` for one input's shape (cached)."""
    return _program(check_arch(arch), tuple(int(s) for s in input_shape))


def resolve_device(device):
    """'auto' -> 'cuda' when a GPU is usable with this build, else 'cpu'; 'cuda' without one raises
    RuntimeError with the reason."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda'; got {device!r}")
    if device == "cpu":
        return "cpu"
    usable, reason = config.cuda_usable()
    if device == "cuda" and not usable:
        raise RuntimeError(f"device='cuda' requested but no GPU is usable: {reason}")
    return "cuda" if usable else "cpu"


def _check_tile(tile):
    if tile is None:
        return None
    if isinstance(tile, bool) or not isinstance(tile, numbers.Integral) or tile < 1:
        raise ValueError(f"tile must be a positive int (images per tile side) or None; got {tile!r}")
    return int(tile)


def tiles(n, m, tile, symmetric):
    """Tile index ranges ((i0, i1), (j0, j1)) covering an n x m Gram; with ``symmetric`` only j0 >= i0."""
    rows = [(i, min(i + tile, n)) for i in range(0, n, tile)]
    cols = [(j, min(j + tile, m)) for j in range(0, m, tile)]
    return [(r, c) for a, r in enumerate(rows) for b, c in enumerate(cols) if not symmetric or b >= a]


def gram(X, Y=None, *, arch, kind=None, device="auto", dtype="float32", tile=None, progress=False, out=None,
         threads=None):
    """NNGP/CKN and NTK Gram matrices of ``arch`` between X and Y (or X and itself).

    Parameters
    ----------
    X : array (N, H, W, C) of images (NHWC) for convolutional nets, or (N, D) for fully-connected nets;
        numpy, or anything exposing ``__array__`` / ``__cuda_array_interface__`` (copied to the host).
    Y : array (M, ...) like X, or None for the symmetric Gram of X (only tiles on or above the diagonal are
        computed; the result is mirrored and exactly symmetric, its diagonal from the self recursion).
    arch : ntkfast.Arch (``ntkfast.serial(...)`` or ``ntkfast.presets``).
    kind : None (both kernels, returned as ``Kernels(nngp, ntk)``), 'nngp' or 'ntk' (one array).
    device : 'auto' (a usable GPU, else the CPU), 'cpu' or 'cuda' (an error saying why if none is usable).
    dtype : 'float32' (default) or 'float64': the arithmetic of the recursion and of the result; sums over
        positions are accumulated in float64 either way.
    tile : images per tile side (default 256 on CPU, 2048 on GPU); any N, the last tiles are ragged.
    progress : show a tqdm progress bar over tiles (pairs/s and ETA).
    out : optional preallocated output: an (N, M) array-like (numpy array, memmap, zarr array) when
        ``kind`` is given, else ``Kernels`` of two. Written tile by tile.
    threads : CPU threads (default: OpenMP's default, all cores).

    Returns
    -------
    ``Kernels(nngp, ntk)`` of (N, M) arrays of ``dtype``, or one (N, M) array if ``kind`` is given
    (``out`` itself when given).
    """
    check_kind(kind)
    dt = check_dtype(dtype)
    tile = _check_tile(tile)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False; got {progress!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1):
        raise ValueError(f"threads must be a positive int or None; got {threads!r}")
    X, Y, plan = check_inputs(arch, X, Y, dtype=dt)
    for name, a in (("X", X), ("Y", Y)):
        if a is not None and not np.isfinite(a).all():
            raise ValueError(f"{name} overflows {dt.name}: values beyond its range became Inf")
    dev = resolve_device(device)
    prog = compile_program(arch, plan.input_shape)
    from . import _core
    nthreads = int(threads or 0)
    sym = Y is None
    sx = _core.self_data(prog, X, dev, nthreads)
    Yv, sy = (X, sx) if sym else (Y, _core.self_data(prog, Y, dev, nthreads))
    n, m = len(X), len(Yv)
    want = ("nngp", "ntk") if kind is None else (kind,)
    outs = _outputs(out, kind, n, m, dt)
    tile = tile or DEFAULT_TILE[dev]
    work = tiles(n, m, tile, sym)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        total = n * (n + 1) // 2 if sym else n * m
        bar = tqdm(total=total, unit="pair", unit_scale=True, desc="gram", smoothing=0.1)
    try:
        for (i0, i1), (j0, j1) in work:
            diag = sym and i0 == j0
            res = _core.gram_tile(prog, X[i0:i1], Yv[j0:j1], sx[i0:i1], sy[j0:j1], diag,
                                  "nngp" in want, "ntk" in want, dev, nthreads)
            for name, r in zip(("nngp", "ntk"), res):
                if r is None:
                    continue
                o = outs[name]
                o[i0:i1, j0:j1] = r
                if sym and not diag:
                    o[j0:j1, i0:i1] = r.T
            if bar is not None:
                bar.update((i1 - i0) * (i1 - i0 + 1) // 2 if diag else (i1 - i0) * (j1 - j0))
    finally:
        if bar is not None:
            bar.close()
    if kind is not None:
        return outs[kind]
    return Kernels(outs["nngp"], outs["ntk"])


def _outputs(out, kind, n, m, dt):
    if out is None:
        names = ("nngp", "ntk") if kind is None else (kind,)
        return {k: np.empty((n, m), dtype=dt) for k in names}
    if kind is None:
        if not isinstance(out, Kernels):
            raise TypeError("out must be ntkfast.Kernels(nngp, ntk) of two (N, M) arrays when kind is None; "
                            f"got {type(out).__name__}")
        outs = {"nngp": out.nngp, "ntk": out.ntk}
    else:
        outs = {kind: out}
    for k, o in outs.items():
        if tuple(getattr(o, "shape", ())) != (n, m):
            raise ValueError(f"out ({k}) must have shape {(n, m)}; got {getattr(o, 'shape', None)}")
    return outs


def timed_gram(X, Y=None, **kw):
    """gram() plus (seconds, pairs computed): pairs count only the computed triangle when Y is None."""
    t0 = time.perf_counter()
    r = gram(X, Y, **kw)
    dt = time.perf_counter() - t0
    n = len(X)
    pairs = n * (n + 1) // 2 if Y is None else n * len(Y)
    return r, dt, pairs
