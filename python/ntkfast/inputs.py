"""Checks and conversions of user inputs shared by every entry point (gram, reference, analyses).

Every check runs before any heavy work and raises TypeError (wrong type or dtype) or ValueError (wrong
shape or values) with the argument's name, what was expected and what was given.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from .arch import Arch

__all__ = ["Kernels", "check_arch", "check_inputs", "check_kind", "check_dtype", "KINDS"]

Kernels = namedtuple("Kernels", ["nngp", "ntk"])
Kernels.__doc__ = """The two kernels of one architecture: ``nngp`` (NNGP / CKN, last-layer-only) and ``ntk``."""

KINDS = (None, "nngp", "ntk")


def check_arch(arch):
    if not isinstance(arch, Arch):
        raise TypeError(f"arch must be an ntkfast architecture built with ntkfast.serial(...) or ntkfast.presets; "
                        f"got {type(arch).__name__}")
    return arch


def check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"kind must be None (both), 'nngp' or 'ntk'; got {kind!r}")
    return kind


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


def check_inputs(arch, X, Y=None, *, dtype=np.float64):
    """Validate X (and Y) for ``arch``; return C-contiguous arrays of ``dtype`` and the checked plan.

    Images: ``(N, H, W, C)`` for convolutional nets; vectors ``(N, D)`` for fully-connected nets.
    Y must match X in every axis but the first. Empty inputs, NaN and Inf are refused.
    """
    check_arch(arch)
    out = []
    expect = "(N, H, W, C)" if arch.convolutional else "(N, D)"
    for name, a in (("X", X), ("Y", Y)):
        if a is None:
            out.append(None)
            continue
        arr = _as_array(a, name)
        if arr.ndim != len(expect.split(",")):
            raise ValueError(f"{name} must have shape {expect} for this {'convolutional' if arch.convolutional else 'fully-connected'} "
                             f"arch; got shape {arr.shape}")
        if arr.shape[0] == 0 or 0 in arr.shape:
            raise ValueError(f"{name} must be non-empty with shape {expect}; got shape {arr.shape}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"{name} must be finite; got {bad} NaN/Inf entries")
        with np.errstate(over="ignore"):  # overflow of the cast is reported by gram() as a clear error
            out.append(np.ascontiguousarray(arr, dtype=dtype))
    X, Y = out
    if Y is not None and Y.shape[1:] != X.shape[1:]:
        raise ValueError(f"X and Y must agree in every axis but the first; got X {X.shape} and Y {Y.shape}")
    plan = arch.plan(X.shape[1:])
    return X, Y, plan
