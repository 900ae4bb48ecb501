"""Checks and conversions of user inputs shared by every entry point (gram, reference, analyses).

Every check runs before any heavy work and raises TypeError (wrong type or dtype) or ValueError (wrong
shape or values) with the argument's name, what was expected and what was given.
"""
from __future__ import annotations

import hashlib
from collections import namedtuple

import numpy as np

from ..validation import check_choice
from .arch import Arch

__all__ = ["Kernels", "Inputs", "check_arch", "check_inputs", "read_inputs", "check_kind", "check_dtype",
           "check_layout", "to_nhwc", "row_max", "fingerprint", "is_homogeneous", "safe_range", "row_scales",
           "rescale_rows", "scale_back", "check_finite", "KINDS", "LAYOUTS"]

Kernels = namedtuple("Kernels", ["nngp", "ntk"])
Kernels.__doc__ = """The two kernels of one architecture: ``nngp`` (NNGP / CKN, last-layer-only) and ``ntk``."""

KINDS = (None, "nngp", "ntk")
LAYOUTS = (None, "NHWC", "NCHW")


def check_arch(arch):
    """The :class:`ntkfast.Arch` of ``arch``: itself, or the net behind an ``ntkfast.stax`` layer or its
    ``kernel_fn``. TypeError for anything else."""
    if not isinstance(arch, Arch):
        arch = getattr(arch, "ntkfast_arch", arch)
    if not isinstance(arch, Arch):
        raise TypeError(f"arch must be an ntkfast architecture built with ntkfast.serial(...), ntkfast.presets or "
                        f"ntkfast.stax; got {type(arch).__name__}")
    return arch


def check_kind(kind):
    """None (both kernels), 'nngp' or 'ntk'."""
    return check_choice(kind, "kind", KINDS, expected="None (both), 'nngp' or 'ntk'")


def check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be 'float32' or 'float64'; got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    return dt


def _as_array(a, name):
    if hasattr(a, "__cuda_array_interface__") and not isinstance(a, np.ndarray):
        a = a.get() if hasattr(a, "get") else np.asarray(a)
    try:
        arr = np.asarray(a)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"{name} must be a numeric array; could not convert {type(a).__name__}: {e}") from None
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must have a real numeric dtype (integer or float); got dtype {arr.dtype}")
    return arr


def check_layout(layout):
    if layout is not None and not isinstance(layout, str):
        raise TypeError(f"layout must be None, 'NHWC' or 'NCHW'; got {layout!r}")
    if layout is not None and layout.upper() not in ("NHWC", "NCHW"):
        raise ValueError(f"layout must be None, 'NHWC' or 'NCHW'; got {layout!r}")
    return None if layout is None else layout.upper()


def looks_channels_first(shape):
    """True for a 4-d shape (N, A, B, C) that is most likely channels-first: A <= 4 'channels' in front of
    two spatial-looking axes (B, C > 4), e.g. (N, 1, 28, 28) or (N, 3, 32, 32)."""
    return len(shape) == 4 and shape[1] <= 4 and shape[2] > 4 and shape[3] > 4


def to_nhwc(X, layout=None, name="X", option=None):
    """Images as (N, H, W, C) from an array in ``layout``; ``X`` as given when it is not an image array.

    layout : None (default: NHWC, checked: a shape that looks channels-first, such as (N, 1, 28, 28), raises
        ValueError before any work; pass layout='NHWC' to take it as it is), 'NHWC', or 'NCHW' (moved to
        NHWC with ``np.moveaxis(X, 1, -1)``).
    (N, H, W) arrays are single-channel images in either layout: a channel axis of 1 is appended (with
    layout None, a 3-d shape that looks like one (H, W, C) image without its batch axis, such as (28, 28, 1),
    raises ValueError).
    Other ranks are returned unchanged (the caller's rank check reports them).
    option : None, or the command-line option that sets the layout (e.g. '--layout'): the messages then name
        it instead of Python arguments.
    """
    layout = check_layout(layout)

    def use(value):
        return f"{option} {value}" if option else f"layout='{value}'"
    shape = tuple(getattr(X, "shape", ()))
    if len(shape) == 3:
        if layout is None and shape[2] <= 4 < min(shape[0], shape[1]):
            raise ValueError(
                f"{name} has shape {shape}, which looks like one image (H, W, C) without the batch axis; ntkfast "
                f"would read it as {shape[0]} single-channel images of {shape[1]}x{shape[2]}. "
                + ("" if option else f"Pass {name}[None] for a batch of one image, or ")
                + f"{'P' if option else 'p'}ass {use('NHWC')} if {shape[0]} images of {shape[1]}x{shape[2]} are "
                f"what you mean")
        return X[..., None]
    if len(shape) != 4:
        return X
    if layout == "NCHW":
        return np.moveaxis(X, 1, -1)
    if layout is None and looks_channels_first(shape):
        raise ValueError(
            f"{name} has shape {shape}, which looks channels-first (NCHW: {shape[1]} channel(s) of "
            f"{shape[2]}x{shape[3]}); ntkfast reads images as (N, H, W, C), so it would be read as "
            f"{shape[1]}x{shape[2]} images with {shape[3]} channels. "
            + ("Pass --layout NCHW" if option else f"Convert it with np.moveaxis({name}, 1, -1), or pass "
                                                   "layout='NCHW'")
            + f"; pass {use('NHWC')} if {shape[1]}x{shape[2]} images with {shape[3]} channels are what you mean")
    return X


def check_inputs(arch, X, Y=None, *, dtype=np.float64, layout=None):
    """Validate X (and Y) for ``arch``; return C-contiguous arrays of ``dtype`` and the checked plan.

    Images: ``(N, H, W, C)`` for convolutional nets (``(N, H, W)``: one channel; ``layout`` as in
    :func:`to_nhwc`: channels-first-looking shapes are refused unless a layout is given); vectors ``(N, D)``
    for fully-connected nets. Y must match X in every axis but the first. Empty inputs, NaN and Inf, and
    values that overflow ``dtype`` are refused. Returns (X, Y, plan); :func:`read_inputs` also returns the
    row magnitudes found on the way.
    """
    return read_inputs(arch, X, Y, dtype=dtype, layout=layout)[:3]


Inputs = namedtuple("Inputs", ["X", "Y", "plan", "x_max", "y_max"])
Inputs.__doc__ = """Checked inputs of :func:`read_inputs`: X, Y (None for a symmetric Gram) as C-contiguous arrays of
the requested dtype, the arch's plan for their shape, and float64 (N,) / (M,) largest |entry| of each row
(None for a missing Y)."""


def read_inputs(arch, X, Y=None, *, dtype=np.float64, layout=None):
    """:func:`check_inputs`, returning :class:`Inputs`: the arrays converted once, then one pass over each
    that finds NaN, Inf and overflow of the conversion and the row magnitudes that :func:`row_scales` needs.
    Errors name the argument (NaN/Inf entries of the input are counted only once the pass has found some)."""
    arch = check_arch(arch)
    layout = check_layout(layout)
    dt = np.dtype(dtype)
    out = []
    expect = "(N, H, W, C)" if arch.convolutional else "(N, D)"
    for name, a in (("X", X), ("Y", Y)):
        if a is None:
            out += [None, None]
            continue
        arr = _as_array(a, name)
        if arch.convolutional:
            arr = to_nhwc(arr, layout, name)
        if arr.ndim != len(expect.split(",")):
            also = " or (N, H, W) for one channel" if arch.convolutional else ""
            raise ValueError(f"{name} must have shape {expect}{also} for this "
                             f"{'convolutional' if arch.convolutional else 'fully-connected'} arch; got shape "
                             f"{arr.shape}")
        if arr.shape[0] == 0 or 0 in arr.shape:
            raise ValueError(f"{name} must be non-empty with shape {expect}; got shape {arr.shape}")
        with np.errstate(over="ignore"):  # an overflow of the cast is reported below
            conv = np.ascontiguousarray(arr, dtype=dt)
        # the one pass over the data: the largest |entry| of each row, NaN or Inf where a row has one
        amax = row_max(conv)
        if not np.isfinite(amax).all():
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
                raise ValueError(f"{name} must be finite; got {bad} NaN/Inf entries")
            hint = "; use dtype='float64'" if dt == np.float32 else ""
            raise ValueError(f"{name} overflows {dt.name}: values beyond its range became Inf{hint}")
        out += [conv, amax]
    X, x_max, Y, y_max = out
    if Y is not None and Y.shape[1:] != X.shape[1:]:
        raise ValueError(f"X and Y must agree in every axis but the first; got X {X.shape} and Y {Y.shape}")
    plan = arch.plan(X.shape[1:])
    return Inputs(X, Y, plan, x_max, y_max)


def fingerprint(a):
    """'shape:dtype:blake2b-hex' of an array's bytes (C order), or None: the identity of a Gram's inputs in a
    resumable store's metadata (:mod:`ntkfast.store`) and the key of the estimators' cached training Gram."""
    if a is None:
        return None
    a = np.ascontiguousarray(a)
    h = hashlib.blake2b(digest_size=16)
    h.update(memoryview(a).cast("B"))
    return f"{'x'.join(map(str, a.shape))}:{a.dtype.name}:{h.hexdigest()}"


def row_max(A, block_bytes=1 << 22):
    """float64 (N,): the largest |entry| of each row of A (N, ...); NaN or Inf for a row that has one.
    One pass, in blocks of rows of about ``block_bytes`` (so that the temporary |A| stays small)."""
    A = A.reshape(len(A), -1)
    rows = max(1, block_bytes // max(1, A.shape[1] * A.itemsize))
    out = np.empty(len(A), dtype=np.float64)
    for r0 in range(0, len(A), rows):
        out[r0:r0 + rows] = np.abs(A[r0:r0 + rows]).max(axis=1)
    return out


# ---------------------------------------------------------------------------------------------------------
# Input magnitudes: the recursion squares S (about |x|^2) inside each ReLU, so it works with about |x|^4,
# which leaves float32's normal range (2^-126 .. 2^128) for |x| beyond about 2^-32 .. 2^32 (measured: exact to
# rounding from 2^-28 to 2^32, Inf at 3e9 = 2^31.5 with Gaussian images whose max is 3x their scale, 48 %
# wrong at 2^-40). The safe range below keeps a factor 2^8 (2^32 on |x|^4) of margin for sums and weights.

_SAFE_EXP = {np.dtype(np.float32): 24, np.dtype(np.float64): 224}      # safe: 2^-e <= max|x| <= 2^e
_RESULT_EXP = {np.dtype(np.float32): 60, np.dtype(np.float64): 500}    # kernels ~ |x|^2 must not overflow


def safe_range(dtype):
    """(lo, hi): nonzero inputs whose largest |entry| lies in [lo, hi] are computed as given in ``dtype``."""
    e = _SAFE_EXP[np.dtype(dtype)]
    return 2.0 ** -e, 2.0 ** e


def is_homogeneous(arch):
    """True when both kernels of ``arch`` are positively homogeneous of degree 1 in each argument,
    K(a x, b y) = a b K(x, y) for a, b > 0 (:attr:`ntkfast.Arch.homogeneous`: bias-free NTK-parameterized
    Conv/Dense, ReLU/ABRelu, poolings and readouts)."""
    return check_arch(arch).homogeneous


def row_scales(arch, A, dtype, name="X", amax=None):
    """Power-of-two row scales that keep the recursion of ``arch`` in ``dtype``'s safe range, or None.

    Returns None when every row's largest |entry| is 0 or within :func:`safe_range` (nothing to do). For a
    homogeneous ``arch`` (:func:`is_homogeneous`) returns int exponents e (N,): row i is computed as
    ``A[i] * 2**e[i]`` (largest |entry| in [1, 2)) and its kernels scaled back by ``2**-(e[i] + e[j])``, which
    is exact in binary floating point (kernels of tiny rows may round to subnormals or 0, as they should).
    Otherwise, and when the kernels themselves (about |x|^2) would overflow ``dtype``, raises ValueError
    naming ``name``, its largest (or smallest) magnitude and the remedy.
    """
    dt = np.dtype(dtype)
    amax = row_max(A) if amax is None else amax
    lo, hi = safe_range(dt)
    nz = amax > 0
    if not np.any(nz & ((amax < lo) | (amax > hi))):
        return None
    big, small = float(amax.max()), float(amax[nz].min())
    bound = 2.0 ** _RESULT_EXP[dt]
    if is_homogeneous(arch) and big <= bound:
        # tiny rows are fine: their kernels (about |x_i| |x_j|) may round to subnormals or 0, which is the
        # correctly rounded answer; only kernels beyond the dtype's largest number cannot be represented
        e = np.zeros(len(A), dtype=np.int64)
        e[nz] = 1 - np.frexp(amax[nz])[1]          # frexp: amax = m 2^k with m in [0.5, 1): 2^(1-k) amax in [1, 2)
        return e
    other = "float32" if dt == np.float64 else "float64"
    if is_homogeneous(arch):
        why = (f"its kernels (about |x|^2) would leave {dt.name}'s range even though this net is homogeneous "
               f"(computed at a rescaled magnitude and scaled back)")
        fix = f"use dtype='{other}'" if dt == np.float32 else "rescale the inputs"
        rng = f"[0, {bound:.1e}]"
    else:
        why = (f"this net is not homogeneous (it has biases), so its inputs cannot be rescaled exactly, and "
               f"{dt.name} loses the kernel (the recursion works with about |x|^4)")
        fix = "use dtype='float64'" if dt == np.float32 else "rescale the inputs"
        rng = f"[{lo:.1e}, {hi:.1e}]"
    which = f"up to {big:.3g}" if big > hi else f"as small as {small:.3g} (largest |entry| of a nonzero row)"
    raise ValueError(f"{name} has magnitudes {which}, outside the range {rng} where {dt.name} is accurate: {why}; "
                     f"{fix}")


def rescale_rows(arch, X, Y, dtype, x_max=None, y_max=None):
    """(X, Y, scales): rows outside ``dtype``'s safe range rescaled exactly by powers of two (homogeneous nets,
    :func:`row_scales`; other nets raise there), and ``scales`` = None when nothing was rescaled, else the int
    exponents (ex (N,), ey (M,)) that :func:`scale_back` undoes (ey is ex when Y is None)."""
    dt = np.dtype(dtype)
    ex = row_scales(arch, X, dt, "X", amax=x_max)
    ey = None if Y is None else row_scales(arch, Y, dt, "Y", amax=y_max)
    if ex is None and ey is None:
        return X, Y, None

    def apply(A, e):
        return np.ldexp(A, e[(slice(None),) + (None,) * (A.ndim - 1)].astype(np.int32)).astype(dt, copy=False)

    ex = np.zeros(len(X), np.int64) if ex is None else ex
    if Y is None:
        return apply(X, ex), None, (ex, ex)
    ey = np.zeros(len(Y), np.int64) if ey is None else ey
    return apply(X, ex), apply(Y, ey), (ex, ey)


def scale_back(K, ex, ey):
    """Kernels of rows rescaled by 2^ex and 2^ey (broadcastable int arrays) scaled back: K 2^-(ex + ey), exact
    (K(a x, b y) = a b K(x, y) for a homogeneous net)."""
    return np.ldexp(K, (-(np.asarray(ex) + np.asarray(ey))).astype(np.int32))


def check_finite(results, where):
    """Raise FloatingPointError if a kernel in ``results`` ({name: array}) is not finite: finite inputs give
    finite kernels unless the arithmetic overflowed, and such a number must never be passed on."""
    for k, r in results.items():
        if not np.isfinite(r).all():
            raise FloatingPointError(
                f"the {k.upper()} of {where} overflowed in {r.dtype} (the net's intermediate covariances exceed "
                f"its range); compute with dtype='float64'")
