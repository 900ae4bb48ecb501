"""ntkfast: exact NNGP/CKN and neural tangent kernels of convolutional ReLU networks, fast.

>>> import ntkfast as nf
>>> k = nf.gram(X, arch=nf.presets.cntk(5, 'gap'))     # Kernels(nngp=(N, N), ntk=(N, N))

Submodules with heavier imports load on first use as attributes: ``nf.krr``, ``nf.estimators`` (needs
scikit-learn), ``nf.data``, ``nf.krr_stream``, ``nf.distributed`` (needs dask.distributed), ``nf.stability``,
``nf.spectrum``, ``nf.smoothness``, ``nf.taylor``, ``nf.store``, ``nf.memory``.
"""
import importlib as _importlib

from .arch import (ABRelu, Abs, Arch, AvgPool, Conv, Cos, Dense, Erf, FanInSum, FanOut, Flatten,  # noqa: F401
                   GaussianPool, Gelu, GlobalAvgPool, GlobalSumPool, Hermite, Identity, Layer, LayerNorm, LeakyRelu,
                   Monomial, Parallel, Polynomial, RectifiedMonomial, ReLU, Sign, Sin, SumPool, parallel, serial)
from .inputs import Kernels  # noqa: F401
from . import presets, reference  # noqa: F401

__version__ = "0.1.0"

from .gram import gram  # noqa: E402,F401
from .config import show_config  # noqa: E402,F401

_LAZY = ("krr", "estimators", "data", "krr_stream", "distributed", "stability", "spectrum", "smoothness", "taylor",
         "store", "memory", "inputs", "progress", "config", "cli")


def __getattr__(name):
    if name in _LAZY:
        module = _importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'ntkfast' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
