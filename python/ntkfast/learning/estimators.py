"""scikit-learn estimators: kernel ridge regression with the exact NTK or NNGP/CKN kernel of a network.

>>> from ntkfast.estimators import NTKClassifier
>>> clf = NTKClassifier(arch="gap5", kind="ntk").fit(X_train, y_train)    # X: (N, H, W, C) images
>>> clf.score(X_test, y_test), clf.ridge_

Both estimators follow scikit-learn's conventions (``fit``/``predict``/``score``/``get_params``/
``set_params``, usable in ``Pipeline`` and ``GridSearchCV``). They keep the training Gram: refitting on the
same X (e.g. after ``set_params(ridge=...)``) reuses it, and the ridge given as a grid is selected by
closed-form leave-one-out from one eigendecomposition (cheaper than a ``GridSearchCV`` over ``ridge``,
whose clones recompute the Gram for every fold and value).

Ridges are relative to the trace of the training Gram: the system solved is
``(K + ridge * tr(K)/N * I) alpha = Y`` (see :mod:`ntkfast.krr`).
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .. import device as D
from ..kernel.arch import Arch
from ..kernel.inputs import check_dtype, fingerprint
from ..validation import check_choice
from . import krr as _krr

__all__ = ["NTKRegressor", "NTKClassifier"]

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(est, *args, **kwargs):
        return est._validate_data(*args, **kwargs)


def _resolve_arch(arch):
    if isinstance(arch, Arch):
        return arch
    if isinstance(arch, str):
        from ..kernel.presets import by_name
        return by_name(arch)
    raise TypeError(f"arch must be an ntkfast Arch (ntkfast.serial(...) or ntkfast.presets) or a preset name "
                    f"such as 'gap5' or 'fc3'; got {type(arch).__name__}")


class _NTKBase(BaseEstimator):
    """Shared machinery: input shaping, the cached training Gram, the KRR fit."""

    _scoring = "mse"

    def __init__(self, arch="gap5", kind="ntk", ridge=_krr.DEFAULT_RIDGES, *, cv="loo", image_shape=None,
                 layout=None, device="auto", dtype="float32", tile=None, threads=None):
        self.arch = arch
        self.kind = kind
        self.ridge = ridge
        self.cv = cv
        self.image_shape = image_shape
        self.layout = layout
        self.device = device
        self.dtype = dtype
        self.tile = tile
        self.threads = threads

    # -- checks --------------------------------------------------------------------------------------------

    def _check_params(self):
        arch = _resolve_arch(self.arch)
        check_choice(self.kind, "kind", ("ntk", "nngp"))
        check_dtype(self.dtype)
        D.check(self.device)
        _krr._check_ridges(self.ridge)
        from ..kernel.inputs import check_layout
        check_layout(self.layout)
        if self.image_shape is not None:
            shp = tuple(self.image_shape) if not isinstance(self.image_shape, str) else ()
            if len(shp) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shp):
                raise ValueError(f"image_shape must be None or (H, W, C) of positive ints; got {self.image_shape!r}")
        return arch

    def _shape_inputs(self, X, arch):
        """(N, ...) validated array -> what the arch takes: images (N, H, W, C) or vectors (N, D)."""
        from ..kernel.inputs import check_layout, to_nhwc
        if arch.convolutional:
            if X.ndim in (3, 4):
                X = to_nhwc(X, self.layout, "X")
                if self.image_shape is not None and X.shape[1:] != tuple(self.image_shape):
                    raise ValueError(f"X must have images of image_shape {tuple(self.image_shape)}; got {X.shape}")
                return X
            if X.ndim == 2 and self.image_shape is not None:
                h, w, c = self.image_shape
                if X.shape[1] != h * w * c:
                    raise ValueError(f"X rows must have H*W*C = {h * w * c} features for image_shape "
                                     f"{tuple(self.image_shape)}; got X of shape {X.shape}")
                if check_layout(self.layout) == "NCHW":       # rows hold C x H x W values
                    return np.moveaxis(X.reshape(len(X), c, h, w), 1, -1)
                return X.reshape(len(X), h, w, c)
            raise ValueError(f"X must be images (N, H, W, C) (or (N, H, W)) for the convolutional arch "
                             f"{self.arch!r}, or (N, D) with image_shape=(H, W, C) set; got shape {X.shape}")
        return X.reshape(len(X), -1)      # fully-connected: images are flattened

    def _validate_X(self, X, reset=False):
        return _validate_data(self, X, allow_nd=True, dtype=[np.float64, np.float32], reset=reset)

    def _validate_Xy(self, X, y):
        regression = self._scoring == "mse"
        return _validate_data(self, X, y, allow_nd=True, dtype=[np.float64, np.float32], multi_output=regression,
                              y_numeric=regression, reset=True)

    def _gram(self, X, Y, arch):
        from ..kernel.tiled import gram
        return gram(X, Y, arch=arch, kind=self.kind, device=self.device, dtype=self.dtype, tile=self.tile,
                    threads=self.threads)

    def _train_gram(self, X, arch):
        key = (repr(arch), self.kind, str(np.dtype(self.dtype)), self.device, fingerprint(X))
        cache = getattr(self, "_gram_cache", None)
        if cache is not None and cache[0] == key:
            return cache[1], cache[2]
        K = self._gram(X, None, arch)
        eig = _krr.GramEigen(K, device=self.device)
        self._gram_cache = (key, K, eig)
        return K, eig

    def _fit_targets(self, X, Y):
        arch = self._check_params()
        Xs = self._shape_inputs(X, arch)
        K, eig = self._train_gram(Xs, arch)
        model = _krr.KRR(self.ridge, cv=self.cv, scoring=self._scoring, device=self.device).fit(K, Y, eigen=eig)
        self.arch_ = arch
        self.X_fit_ = Xs
        self.alpha_ = model.alpha_
        self.ridge_ = model.ridge_
        self.ridge_selection_ = model.selection_
        self._krr = model
        return self

    def _raw_predict(self, X):
        check_is_fitted(self, "alpha_")
        X = self._validate_X(X)
        Xs = self._shape_inputs(X, self.arch_)
        return self._krr.predict(self._gram(Xs, self.X_fit_, self.arch_))

    def train_gram(self):
        """The cached training Gram (N, N) of the last fit (dtype ``self.dtype``)."""
        check_is_fitted(self, "alpha_")
        return self._gram_cache[1]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class NTKRegressor(RegressorMixin, _NTKBase):
    """Kernel ridge regression with the NTK or NNGP/CKN kernel of ``arch``.

    Parameters
    ----------
    arch : ntkfast.Arch or preset name (e.g. 'gap5', 'myrtle5', 'bietti_mairal', 'fc3'; default 'gap5').
    kind : 'ntk' (default) or 'nngp' (the NNGP / CKN kernel).
    ridge : float >= 0, or a sequence of them selected by ``cv`` (default
        :data:`ntkfast.krr.DEFAULT_RIDGES`); relative to the trace: ``K + ridge * tr(K)/N * I``.
    cv : 'loo' (closed-form leave-one-out, default) or an int number of folds, for a ridge grid.
    image_shape : None or (H, W, C): reshape (N, H*W*C) rows into images for a convolutional arch
        (lets the estimator follow 2-d transformers in a Pipeline).
    layout : None (default), 'NHWC' or 'NCHW': the axis order of 4-d images (and of rows reshaped by
        ``image_shape``: with 'NCHW' a row holds C x H x W values), as in :func:`ntkfast.gram`; None reads
        NHWC and refuses channels-first-looking shapes such as (N, 1, 28, 28).
    device : 'auto' (default), 'cpu', 'cuda' or 'cuda:N', for the Gram and the solve.
    dtype : 'float32' (default) or 'float64', the Gram's arithmetic; the solve is always float64.
    tile : Gram tile size (None: the backend's default).
    threads : CPU threads for the Gram (None: all).

    Inputs are images (N, H, W, C) (or (N, H, W), one channel) for convolutional archs and vectors (N, D)
    for fully-connected ones (images are flattened for those). Targets y are (N,) or (N, T).

    Attributes
    ----------
    ridge_ : float, the ridge used. ridge_selection_ : ntkfast.krr.RidgeSelection or None (scalar ridge).
    alpha_ : float64 (N,) or (N, T) dual coefficients. X_fit_ : the training inputs as the arch takes them.
    arch_ : the resolved Arch. n_features_in_ : X.shape[1] at fit.
    """

    _scoring = "mse"

    def fit(self, X, y):
        """Compute (or reuse) the training Gram and fit. X (N, ...), y (N,) or (N, T). Returns self."""
        X, y = self._validate_Xy(X, y)
        return self._fit_targets(X, np.asarray(y, dtype=np.float64))

    def predict(self, X):
        """Predictions float64 (M,) or (M, T) for X (M, ...): one test-vs-train Gram and a product."""
        return self._raw_predict(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


class NTKClassifier(ClassifierMixin, _NTKBase):
    """Classification by kernel ridge regression on one-hot targets with the NTK or NNGP/CKN of ``arch``.

    Same parameters as :class:`NTKRegressor`. The ridge grid is selected by leave-one-out (or k-fold)
    accuracy, ties broken by the squared error. ``predict`` returns the class of the largest output;
    ``decision_function`` gives the outputs, (M, C), or (M,) for two classes (positive means
    ``classes_[1]``).

    Attributes: as :class:`NTKRegressor`, plus ``classes_`` (C,).
    """

    _scoring = "accuracy"

    def fit(self, X, y):
        """Compute (or reuse) the training Gram and fit on one-hot targets. X (N, ...), y (N,) labels."""
        X, y = self._validate_Xy(X, y)       # a column vector y is raveled with a DataConversionWarning
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"y must contain samples of at least 2 classes; got 1 class: {classes.tolist()}")
        Y, self.classes_ = _krr.one_hot(y, classes)
        return self._fit_targets(X, Y)

    def decision_function(self, X):
        """KRR outputs for X (M, ...): float64 (M, C), or (M,) = output[1] - output[0] for two classes."""
        out = self._raw_predict(X)
        return out[:, 1] - out[:, 0] if len(self.classes_) == 2 else out

    def predict(self, X):
        """Predicted labels (M,) of X: the class with the largest KRR output."""
        out = self._raw_predict(X)
        return self.classes_[np.argmax(out, axis=1)]
