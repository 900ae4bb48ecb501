"""Learning with precomputed Gram matrices.

- :mod:`~ntkfast.learning.krr`: kernel ridge regression from one eigendecomposition (``GramEigen``);
- :mod:`~ntkfast.learning.krr_stream`: the same from a Gram streamed from disk (Nystrom-preconditioned CG);
- :mod:`~ntkfast.learning.estimators`: scikit-learn estimators;
- :mod:`~ntkfast.learning.predict`: training dynamics and GP inference of the infinite network.
"""
