"""Quadratic Taylor models of wide two-layer networks (Bai & Lee, ICLR 2020) and the sample-complexity study.

- :mod:`.model`: activations and their derivatives, sphere data and polynomial targets, the two-layer net
  and its Taylor terms, the objectives, the one training loop, the hierarchical representation, the
  infinite-width NTK baseline and the estimator :class:`TaylorModel`;
- :mod:`.study`: the study over dimensions and sample sizes, the fitted exponents and their table.

The figure of the study is :func:`ntkfast.analyses.plots.plot_taylor_study`; ``ntkfast taylor`` is
:mod:`ntkfast.cli.taylor`.
"""
from .model import *  # noqa: F401,F403
from .model import __all__ as _model_all
from .study import *  # noqa: F401,F403
from .study import __all__ as _study_all

__all__ = _model_all + _study_all
