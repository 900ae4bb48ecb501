"""Which device runs a computation and which array module holds its arrays: the one device policy.

A device is named by a string:

- ``'cpu'``;
- ``'cuda'``: the current GPU (device 0 unless the caller selected another), or ``'cuda:N'``: GPU N;
- ``'auto'`` (the default nearly everywhere): a GPU when one is usable, else the CPU.

Two parts of ntkfast can run on a GPU, and both follow the same rules:

- the compiled backend, for the Gram kernels (:func:`backend`): usable when this build has the CUDA
  backend and the driver sees a GPU (:func:`ntkfast.config.cuda_usable`);
- cupy, for the linear algebra of :mod:`ntkfast.krr`, :mod:`ntkfast.krr_stream`, :mod:`ntkfast.predict` and
  :mod:`ntkfast.taylor` (:func:`array_module`): usable when cupy imports and sees a GPU.

The rules:

- ``NTKFAST_DISABLE_CUDA=1`` hides every GPU from ntkfast: ``'auto'`` means the CPU, ``'cuda'`` is an error;
- ``'auto'`` takes the GPU when it is usable and falls back to the CPU without a word otherwise;
- ``'cuda'`` or ``'cuda:N'`` where that GPU is not usable raises RuntimeError saying why (and, for cupy, which
  extra to install);
- anything else raises ValueError naming the argument (TypeError when it is not a string);
- an array already on a GPU (a cupy array) stays there under ``'auto'``; ``'cpu'`` copies it to the host.

With ``'cuda:N'``, cupy work runs inside ``cupy.cuda.Device(N)`` (:func:`using`): arrays are created on GPU N
and the estimators of :mod:`ntkfast.krr` and :mod:`ntkfast.predict` return to it for every call.
"""
from __future__ import annotations

import contextlib
import functools
import re

import numpy as np

__all__ = ["DEVICES", "check", "is_cuda", "index", "backend", "core_name", "array_module", "using", "on_device",
           "is_cupy", "xp_of", "to_numpy", "cupy_usable"]

#: The device names; a GPU may also be named 'cuda:N'.
DEVICES = ("auto", "cpu", "cuda")

_CUDA_N = re.compile(r"cuda:(\d{1,4})")
_EXPECTED = "'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU index)"


def check(device, name="device"):
    """``device`` checked: 'auto', 'cpu', 'cuda' or 'cuda:N' (returned as given). TypeError for a
    non-string, ValueError for any other string; ``name`` is the argument (or option) in the message."""
    if not isinstance(device, str):
        raise TypeError(f"{name} must be {_EXPECTED}; got {device!r}")
    if device in DEVICES or _CUDA_N.fullmatch(device):
        return device
    raise ValueError(f"{name} must be {_EXPECTED}; got {device!r}")


def is_cuda(device):
    """True for 'cuda' and 'cuda:N'."""
    return device == "cuda" or device.startswith("cuda:")


def index(device):
    """N of 'cuda:N'; None for 'cuda' (the current GPU), 'cpu' and 'auto'."""
    m = _CUDA_N.fullmatch(device)
    return int(m.group(1)) if m else None


def _disabled():
    from .config import cuda_disabled
    return cuda_disabled()


# ----------------------------------------------------------------------------------------------------------
# the compiled backend


def backend(device, name="device"):
    """The device the compiled backend runs a Gram on: 'cpu', 'cuda' or 'cuda:N'.

    'auto' is 'cuda' when the backend's CUDA is usable (:func:`ntkfast.config.cuda_usable`), else 'cpu'.
    'cuda' or 'cuda:N' without a usable GPU (or with N beyond the GPUs there are, or GPU N unusable)
    raises RuntimeError with the reason."""
    device = check(device, name)
    if device == "cpu":
        return "cpu"
    from .config import cuda_device_usable, cuda_usable
    usable, reason = cuda_usable()
    if device == "auto":
        return "cuda" if usable else "cpu"
    if not usable:
        raise RuntimeError(f"{name}={device!r} requested but no GPU is usable: {reason}")
    n = index(device)
    if n is not None:
        ok, why = cuda_device_usable(n)
        if not ok:
            raise RuntimeError(f"{name}={device!r} requested but GPU {n} is not usable: {why}")
    return device


def core_name(device):
    """The name a ``_core`` entry point that takes 'cpu' or 'cuda' understands for a resolved backend device.

    ``_core.GramSession`` takes 'cuda:N' itself; ``_core.self_data`` and ``_core.gram_tile`` take 'cpu' or
    'cuda' only, so for 'cuda:N' they run on the current GPU (the numbers are the same on every GPU)."""
    return "cuda" if is_cuda(device) else device


# ----------------------------------------------------------------------------------------------------------
# array modules (numpy or cupy)


def is_cupy(a):
    """True for a cupy array (checked by type, without importing cupy)."""
    return type(a).__module__.split(".")[0] == "cupy"


def xp_of(a):
    """The array module of ``a``: cupy for a cupy array, else numpy."""
    if is_cupy(a):
        import cupy
        return cupy
    return np


def to_numpy(a):
    """``a`` on the host: a cupy array copied back, anything else through ``numpy.asarray``."""
    return a.get() if is_cupy(a) else np.asarray(a)


def cupy_usable():
    """(cupy module or None, GPU count or the reason cupy cannot be used). Not cached: cheap once cupy is
    imported, and it follows changes of the environment (NTKFAST_DISABLE_CUDA, a cupy stand-in in tests)."""
    if _disabled():
        return None, "disabled by NTKFAST_DISABLE_CUDA=1"
    try:
        import cupy
        n = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:  # ImportError, or a CUDA runtime without a driver
        return None, f"{type(e).__name__}: {e}"
    if n < 1:
        return None, "cupy sees no CUDA device (device count 0)"
    return cupy, n


def array_module(device="auto", like=None, name="device"):
    """numpy or cupy for ``device`` (see the module docstring).

    'cpu': numpy. 'cuda' / 'cuda:N': cupy; RuntimeError naming the reason and the GPU extra when cupy cannot
    import or sees no GPU (or not GPU N). 'auto': cupy when ``like`` is a cupy array or cupy is usable, else
    numpy."""
    device = check(device, name)
    if device == "cpu":
        return np
    if device == "auto" and like is not None and is_cupy(like):
        return xp_of(like)
    cupy, count = cupy_usable()
    if cupy is None:
        if device == "auto":
            return np
        raise RuntimeError(f"{name}={device!r} needs cupy and a usable GPU ({count}); install the GPU extra: "
                           "pip install 'ntkfast[gpu]'")
    n = index(device)
    if n is not None and n >= count:
        raise RuntimeError(f"{name}={device!r} requested but cupy sees {count} GPU(s) (indices 0..{count - 1})")
    return cupy


def using(device):
    """A context in which cupy works on GPU N for 'cuda:N' (``cupy.cuda.Device(N)``); a no-op for any other
    device."""
    n = index(device) if isinstance(device, str) else None
    if n is None:
        return contextlib.nullcontext()
    import cupy
    return cupy.cuda.Device(n)


def on_device(method):
    """Decorator of the methods of an object made for a device: the method runs in :func:`using` that
    device (the ``device`` keyword of ``__init__``, then the object's ``device`` attribute), so that the
    arrays of an object made for 'cuda:N' are made and used on GPU N."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        dev = kwargs.get("device") if method.__name__ == "__init__" else getattr(self, "device", None)
        with using(dev):
            return method(self, *args, **kwargs)
    return wrapper
