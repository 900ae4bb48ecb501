"""ntkfast: exact NNGP/CKN and neural tangent kernels of convolutional ReLU networks, fast.

>>> import ntkfast as nf
>>> k = nf.gram(X, arch=nf.presets.cntk(5, 'gap'))     # Kernels(nngp=(N, N), ntk=(N, N))
"""
from .arch import (ABRelu, Abs, Arch, AvgPool, Conv, Cos, Dense, Erf, Flatten, GaussianPool,  # noqa: F401
                   Gelu, GlobalAvgPool, GlobalSumPool, Hermite, Layer, LayerNorm, LeakyRelu, Monomial, Polynomial,
                   RectifiedMonomial, ReLU, Sign, Sin, SumPool, serial)
from .inputs import Kernels  # noqa: F401
from . import presets, reference  # noqa: F401

__version__ = "0.1.0"

from .gram import gram  # noqa: E402,F401
from .config import show_config  # noqa: E402,F401
