"""ntkfast: exact NNGP/CKN and neural tangent kernels of convolutional ReLU networks, fast.

>>> import ntkfast as nf
>>> k = nf.gram(X, arch=nf.presets.cntk(5, 'gap'))     # Kernels(nngp=(N, N), ntk=(N, N))
>>> d = nf.gram_diag(X, arch=nf.presets.cntk(5, 'gap'))   # K(x_i, x_i): Kernels of (N,)
>>> p = nf.gram_pairs(X, Y, arch=nf.presets.cntk(5, 'gap'))  # K(x_i, y_i): Kernels of (N,)

The package is laid out by part: ``kernel/`` (layers, presets, inputs, the tiled Gram, the float64
reference, stax), ``storage/`` (stores, the memory model, Dask), ``learning/`` (kernel ridge regression,
streamed KRR, scikit-learn estimators, training dynamics), ``analyses/`` (stability, spectrum,
smoothness, dynamics, Taylor models, their plots) and ``cli/`` (the ``ntkfast`` command), on top of
``config`` (what was compiled in), ``device`` (which device and array module), ``validation`` (argument
checks), ``progress`` and ``data``.

The modules keep their short paths (:mod:`ntkfast._aliases`), and those with heavier imports load on first
use as attributes: ``nf.krr``, ``nf.estimators`` (needs scikit-learn), ``nf.data``, ``nf.krr_stream``,
``nf.distributed`` (needs dask.distributed), ``nf.predict``, ``nf.stability``, ``nf.spectrum``,
``nf.smoothness``, ``nf.dynamics``, ``nf.taylor``, ``nf.store``, ``nf.memory``.
"""
__version__ = "0.1.0"

import importlib as _importlib

from . import _aliases

_aliases.install()

from .kernel.arch import (ABRelu, Abs, Arch, AvgPool, Conv, Cos, Dense, Erf, FanInSum, FanOut,  # noqa: E402,F401
                          Flatten, GaussianPool, Gelu, GlobalAvgPool, GlobalSumPool, Hermite, Identity, Layer,
                          LayerNorm, LeakyRelu, Monomial, Parallel, Polynomial, RectifiedMonomial, ReLU, Sign, Sin,
                          SumPool, parallel, serial)
from .kernel.inputs import Kernels  # noqa: E402,F401
from .kernel import presets, reference  # noqa: E402,F401
from .kernel.tiled import gram  # noqa: E402,F401
from .kernel.paired import gram_diag, gram_pairs  # noqa: E402,F401
from .config import show_config  # noqa: E402,F401

_SUBMODULES = ("data", "config", "device", "validation", "progress", "cli", "kernel", "storage", "learning",
               "analyses")


def __getattr__(name):
    if name in _aliases.ALIASES or name in _SUBMODULES:
        module = _importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'ntkfast' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_aliases.ALIASES) | set(_SUBMODULES))
