"""Kernels of matched pairs: the Gram diagonal K(x_i, x_i) and K(x_i, y_i), without the N x N Gram.

The analyses need these a lot (distances in feature space need ||Phi(x)||^2 = K(x, x) of every image, and
stability needs K(x_i, y_i) of an image and its deformation). Computing them through :func:`ntkfast.gram`
would cost a Gram call per pair, or a whole symmetric Gram per diagonal. Here each pair is one lane of the
backends' pair engine: N pairs cost N pair evaluations, in one backend call per chunk of pairs. Each value
is bitwise the entry the same backend and dtype put in a Gram: ``gram_diag(X)[i]`` equals
``gram(X)[i, i]`` and ``gram_pairs(X, Y)[i]`` equals ``gram(X, Y)[i, i]``.
"""
from __future__ import annotations

import numpy as np

from .. import device as D
from ..progress import check_progress, label_of, steps
from ..validation import check_int
from .inputs import (Kernels, check_arch, check_dtype, check_finite, check_kind, check_layout, read_inputs,
                     rescale_rows, scale_back)
from .interruptible import call
from .tiled import compile_program

__all__ = ["gram_diag", "gram_pairs"]

# pairs per backend call: bounds the packed inputs and self data held at once, and sets how often a progress
# bar moves; a GPU call has a fixed cost (uploads, a launch), so it takes larger chunks
CHUNK = {"cpu": 2048, "cuda": 65536}


def gram_diag(X, *, arch, kind=None, device="auto", dtype="float32", threads=None, layout=None, progress=False):
    """K(x_i, x_i) for every row of X: the diagonal of the symmetric ``gram(X)``, in N pair evaluations.

    Parameters
    ----------
    X : array (N, H, W, C) of images (NHWC; (N, H, W) for one channel), or (N, D) for fully-connected nets.
    arch, kind, device, dtype, layout : as :func:`ntkfast.gram`.
    threads : CPU threads (default: OpenMP's default, all cores).
    progress : False (default), True or a label (str): a tqdm bar over pairs on stderr.

    Returns
    -------
    ``Kernels(nngp, ntk)`` of (N,) arrays of ``dtype`` (numpy, on the host), or one (N,) array for ``kind``.
    Bitwise equal to the diagonal of ``gram(X, ...)`` with the same device and dtype.
    """
    return _pairs(X, None, arch, kind, device, dtype, threads, layout, progress, "gram_diag")


def gram_pairs(X, Y, *, arch, kind=None, device="auto", dtype="float32", threads=None, layout=None,
               progress=False):
    """K(x_i, y_i) for the matched rows of X and Y, in N pair evaluations.

    X and Y have the same shape, (N, H, W, C) / (N, H, W) images or (N, D) vectors; every other argument and
    the return value are as in :func:`gram_diag`, and the result is bitwise the diagonal of
    ``gram(X, Y, ...)`` with the same device and dtype.
    """
    if Y is None:
        raise TypeError("Y must be an array of the same shape as X; got None (for K(x_i, x_i) use gram_diag)")
    return _pairs(X, Y, arch, kind, device, dtype, threads, layout, progress, "gram_pairs")


def _pairs(X, Y, arch, kind, device, dtype, threads, layout, progress, label):
    from .. import _core
    check_kind(kind)
    dt = check_dtype(dtype)
    check_progress(progress)
    layout = check_layout(layout)
    if threads is not None:
        check_int(threads, "threads", 1, expected="a positive int or None")
    arch = check_arch(arch)
    X, Y, plan, x_max, y_max = read_inputs(arch, X, Y, dtype=dt, layout=layout)
    if Y is not None and len(Y) != len(X):
        raise ValueError(f"X and Y must have as many rows (pairs (X[i], Y[i])); got {len(X)} and {len(Y)}")
    dev = D.backend(device)
    X, Y, scales = rescale_rows(arch, X, Y, dt, x_max, y_max)
    prog = compile_program(arch, tuple(plan.input_shape))
    names = ("nngp", "ntk") if kind is None else (kind,)
    core, threads = D.core_name(dev), int(threads or 0)
    n = len(X)
    out = {k: np.empty(n, dt) for k in names}
    chunk = CHUNK["cuda" if D.is_cuda(dev) else "cpu"]
    bar = steps(n, label_of(progress, label), enabled=bool(progress), unit="pair")
    try:
        for i0 in range(0, n, chunk):
            i1 = min(n, i0 + chunk)
            xa = X[i0:i1]
            ya = None if Y is None else Y[i0:i1]
            sx = call(_core.self_data, prog, xa, core, threads)
            sy = None if ya is None else call(_core.self_data, prog, ya, core, threads)
            res = call(_core.gram_pairs, prog, xa, ya, sx, sy, "nngp" in names, "ntk" in names, core, threads)
            res = {k: r for k, r in zip(("nngp", "ntk"), res) if r is not None and k in names}
            check_finite(res, f"pairs {i0}:{i1}")
            for k, r in res.items():
                out[k][i0:i1] = r if scales is None else scale_back(r, scales[0][i0:i1], scales[1][i0:i1])
            bar.update(i1 - i0)
    finally:
        bar.close()
    return out[kind] if kind is not None else Kernels(out["nngp"], out["ntk"])
