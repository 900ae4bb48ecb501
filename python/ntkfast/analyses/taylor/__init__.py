"""Quadratic Taylor models of wide two-layer networks (:mod:`.model`) and the sample-complexity study."""
from .model import *  # noqa: F401,F403
from .model import TRAINED, __all__, array_module, plot_study  # noqa: F401
