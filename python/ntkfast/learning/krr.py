"""Kernel ridge regression on a precomputed Gram matrix (``ntkfast krr`` is :mod:`ntkfast.cli.krr`).

One eigendecomposition ``K = V diag(w) V^T`` of the training Gram serves every ridge value: the solution
for a ridge ``lam`` is ``V diag(1 / (w + lam_abs)) V^T Y``, so a grid of ridges costs one factorization
plus ``O(N^2)`` per ridge and output. Leave-one-out predictions come in closed form from the same
factorization (``y_i - alpha_i / [(K + lam_abs I)^-1]_ii``); k-fold selection factorizes each fold's
training block once.

Ridge convention
----------------
Every ``ridge`` in this module is *relative to the trace*: the system solved is

    (K + ridge * tr(K) / N * I) alpha = Y,

i.e. ``lam_abs = ridge * mean(diag(K))``. A ridge of 1e-3 means the same amount of regularization for a
Gram of any scale or size. Ridges must be finite and >= 0.

Precision and devices
---------------------
The Gram may be float32 or float64 (numpy, or cupy on a GPU); the factorization and the solves always run
in float64. On the CPU they use scipy/numpy. On a GPU they use cupy (imported only when needed), as the
device policy says (:mod:`ntkfast.device`): when the Gram is a cupy array, or ``device='cuda'`` (or
'cuda:N'), or ``device='auto'`` with cupy importable and a usable GPU. Results come back as numpy arrays,
except when the Gram itself was a cupy array.

Ill-conditioned or indefinite input never gives a silent NaN: non-finite, non-square or asymmetric Grams
are refused (ValueError); negative eigenvalues beyond the rounding level of the Gram's dtype give an
:class:`IndefiniteGramWarning` (they are then clipped to 0); a ridge whose system is singular is refused,
and one whose condition number exceeds ``1 / eps`` of the Gram's dtype gives an
:class:`IllConditionedWarning`.
"""
from __future__ import annotations

import numbers
import warnings
from collections import namedtuple

import numpy as np

from .. import device as D
from ..validation import check_choice, check_finite, check_int
from ..data import prepare_images  # noqa: F401  (its documented path; it lives in ntkfast.data)

__all__ = ["GramEigen", "KRR", "solve", "loo_predictions", "kfold_predictions", "select_ridge", "one_hot",
           "RidgeSelection", "IllConditionedWarning", "IndefiniteGramWarning", "DEFAULT_RIDGES", "prepare_images"]

#: Default grid of relative ridges used by the estimators and the command line.
DEFAULT_RIDGES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


class IllConditionedWarning(UserWarning):
    """The ridge system's condition number exceeds 1/eps of the Gram's dtype: its rounding errors can
    change the solution completely. Use a larger ridge or a float64 Gram."""


class IndefiniteGramWarning(UserWarning):
    """The Gram has negative eigenvalues beyond its rounding level, so it is not a valid kernel matrix."""


RidgeSelection = namedtuple("RidgeSelection", ["ridge", "index", "ridges", "scores", "mse", "scoring"])
RidgeSelection.__doc__ = """Result of :func:`select_ridge`.

ridge : float, the selected relative ridge; index : its position in ``ridges``;
ridges : float64 (R,) grid; scores : float64 (R,) validation score (higher is better: accuracy, or
minus the mean squared error); mse : float64 (R,) validation mean squared error; scoring : 'accuracy' or 'mse'.
"""


# ----------------------------------------------------------------------------------------------------------
# devices


def _backend(K, device):
    """The array module for a Gram under the device policy (:func:`ntkfast.device.array_module`): returns
    (xp, K on that device, whether results go back as cupy arrays: when K itself was one)."""
    xp = D.array_module(device, like=K)
    if D.is_cupy(K):
        return (np, K.get(), False) if xp is np else (xp, K, True)
    return xp, K, False


_is_cupy = D.is_cupy
_to_numpy = D.to_numpy


# ----------------------------------------------------------------------------------------------------------
# argument checks (all run before any factorization)


def _check_gram(K, name="K"):
    """K must be a finite, square, (nearly) symmetric real matrix. Returns (array, dtype eps)."""
    if not _is_cupy(K):
        if hasattr(K, "__cuda_array_interface__") and hasattr(K, "get"):
            K = K.get()
        try:
            K = np.asarray(K)
        except Exception as e:
            raise TypeError(f"{name} must be a numeric (N, N) array; could not convert {type(K).__name__}: {e}") \
                from None
    if K.dtype == bool or K.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real (integer or float) Gram matrix; got dtype {K.dtype}")
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) Gram matrix; got shape {tuple(K.shape)}")
    if K.shape[0] == 0:
        raise ValueError(f"{name} must be non-empty; got shape {tuple(K.shape)}")
    eps = float(np.finfo(K.dtype).eps) if K.dtype.kind == "f" else float(np.finfo(np.float64).eps)
    return K, eps


def _check_ridges(ridge, name="ridge"):
    """Returns (float64 (R,) array, scalar flag)."""
    if isinstance(ridge, (str, bytes)) or isinstance(ridge, bool):
        raise TypeError(f"{name} must be a float >= 0 or a sequence of them (relative to tr(K)/N); got {ridge!r}")
    try:
        r = np.asarray(ridge, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a float >= 0 or a sequence of them (relative to tr(K)/N); "
                        f"got {ridge!r}") from None
    scalar = r.ndim == 0
    r = np.atleast_1d(r)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"{name} must be a float or a non-empty 1-d sequence of floats; got shape {r.shape}")
    if not np.isfinite(r).all() or (r < 0).any():
        bad = r[~(np.isfinite(r) & (r >= 0))]
        raise ValueError(f"{name} must be finite and >= 0 (relative to tr(K)/N); got {bad.tolist()}")
    return r, scalar


def _check_targets(Y, n, name="Y"):
    """Y (N,) or (N, T) real and finite. Returns (float64 (N, T) numpy array, was_1d)."""
    if _is_cupy(Y):
        Y = Y.get()
    try:
        Y = np.asarray(Y)
    except Exception as e:
        raise TypeError(f"{name} must be a numeric array (N,) or (N, T); could not convert: {e}") from None
    if Y.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be real numeric targets (N,) or (N, T); got dtype {Y.dtype}")
    if Y.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (N,) or (N, T) with N = {n}; got shape {Y.shape}")
    if Y.shape[0] != n:
        raise ValueError(f"{name} must have N = {n} rows (one per training point of K); got shape {Y.shape}")
    if Y.ndim == 2 and Y.shape[1] == 0:
        raise ValueError(f"{name} must have at least one output column; got shape {Y.shape}")
    Y = Y.astype(np.float64)
    fin = np.isfinite(Y)
    if not fin.all():
        rows = np.flatnonzero(~fin.reshape(n, -1).all(axis=1))
        raise ValueError(f"{name} must be finite; got {int((~fin).sum())} NaN/Inf entries (rows "
                         f"{rows[:5].tolist()}{' ...' if len(rows) > 5 else ''})")
    return (Y[:, None] if Y.ndim == 1 else Y), Y.ndim == 1


def one_hot(labels, classes=None):
    """One-hot targets for classification.

    labels : array (N,) of class labels (any sortable type). classes : array (C,) of the known classes
    (default: the sorted unique labels). Returns (Y float64 (N, C) with 1 at the label's class and 0
    elsewhere, classes (C,)). Labels missing from ``classes`` raise ValueError.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-d array (N,); got shape {labels.shape}")
    classes = np.unique(labels) if classes is None else np.asarray(classes)
    idx = np.searchsorted(classes, labels)
    idx = np.clip(idx, 0, len(classes) - 1)
    bad = classes[idx] != labels
    if bad.any():
        raise ValueError(f"labels contain values not in classes {classes.tolist()}: {np.unique(labels[bad]).tolist()}")
    Y = np.zeros((len(labels), len(classes)))
    Y[np.arange(len(labels)), idx] = 1.0
    return Y, classes


# ----------------------------------------------------------------------------------------------------------
# the factorization


class GramEigen:
    """Eigendecomposition of a training Gram, the one factorization behind every ridge.

    Parameters
    ----------
    K : array (N, N), float32 or float64 (numpy; or cupy, which keeps the work on its GPU).
        Symmetric positive semi-definite. Asymmetry up to ``10 sqrt(eps)`` of the largest entry is
        rounding (it is symmetrized away); more is a ValueError.
    device : 'auto' (default), 'cpu', 'cuda' or 'cuda:N'. See the module docstring.

    Attributes
    ----------
    w : float64 (N,) eigenvalues, ascending, negatives clipped to 0.
    V : float64 (N, N) orthonormal eigenvectors (columns).
    scale : float, tr(K) / N: ``ridge`` r means the absolute ridge ``r * scale``.
    n : int, N.
    eps : float, machine epsilon of the input Gram's dtype (sets the warning thresholds).
    min_eigenvalue : float, the smallest eigenvalue before clipping.
    """

    @D.on_device
    def __init__(self, K, *, device="auto"):
        K, eps = _check_gram(K)
        xp, K, self._cupy_out = _backend(K, device)
        self.device = device
        self._gpu = xp is not np
        self.eps, self.n, self.dtype = eps, int(K.shape[0]), np.dtype(K.dtype)
        K = xp.asarray(K, dtype=xp.float64)
        check_finite(K, "K", xp)
        amax = float(xp.abs(K).max())
        asym = float(xp.abs(K - K.T).max())
        if asym > 10 * np.sqrt(eps) * amax:
            raise ValueError(f"K must be symmetric (a Gram matrix of the training set); got max |K - K^T| = "
                             f"{asym:.3g} for max |K| = {amax:.3g}")
        K = (K + K.T) * 0.5
        trace = float(xp.trace(K))
        if not trace > 0:
            raise ValueError(f"K must have a positive trace (a Gram matrix has a non-negative diagonal and is "
                             f"not all zero); got tr(K) = {trace:.3g}")
        self.scale = trace / self.n
        if xp is np:
            import scipy.linalg
            w, V = scipy.linalg.eigh(K, overwrite_a=True, check_finite=False, driver="evd")
        else:
            w, V = xp.linalg.eigh(K)
        self.min_eigenvalue = float(w[0])
        wmax = float(w[-1])
        # Rounding level of an N x N Gram stored in this dtype: each entry carries ~eps relative error,
        # an N x N perturbation of that size moves eigenvalues by up to ~N eps max|K|.
        self.tolerance = self.n * eps * max(amax, wmax)
        if self.min_eigenvalue < -self.tolerance:
            warnings.warn(
                f"K is not positive semi-definite: its smallest eigenvalue is {self.min_eigenvalue:.3g} "
                f"(largest {wmax:.3g}), beyond the rounding level {self.tolerance:.3g} of a {self.dtype} Gram "
                f"of size {self.n}; negative eigenvalues are clipped to 0 (check how K was computed)",
                IndefiniteGramWarning, stacklevel=2)
        self.w = xp.maximum(w, 0.0)
        self.V = V

    @property
    def xp(self):
        """The array module of the factorization: numpy, or cupy on a GPU."""
        if self._gpu:
            import cupy
            return cupy
        return np

    # -- helpers -------------------------------------------------------------------------------------------

    def absolute(self, ridge):
        """Absolute ridge(s) ``ridge * tr(K) / N`` for relative ridge(s); float64 (R,)."""
        return _check_ridges(ridge)[0] * self.scale

    def condition(self, ridge):
        """Condition numbers (float64 (R,)) of ``K + ridge tr(K)/N I`` (inf when singular)."""
        lam = self.absolute(ridge)
        wmin, wmax = float(self.w[0]), float(self.w[-1])
        with np.errstate(divide="ignore"):
            return np.where(wmin + lam > 0, (wmax + lam) / np.maximum(wmin + lam, 1e-300), np.inf)

    def check_conditioning(self, ridge, name="ridge"):
        """Raise for singular systems, warn (IllConditionedWarning) when the condition number exceeds 1/eps
        of the Gram's dtype. ``ridge``: relative ridge(s)."""
        r, _ = _check_ridges(ridge, name)
        cond = self.condition(r)
        if np.isinf(cond).any():
            raise ValueError(f"{name} = {r[np.isinf(cond)].tolist()} leaves K + {name} * tr(K)/N * I singular "
                             f"(K has eigenvalue 0 to rounding); use {name} > 0")
        bad = cond * self.eps > 1
        if bad.any():
            warnings.warn(
                f"{name} = {r[bad].tolist()} gives K + {name} * tr(K)/N * I a condition number of "
                f"{cond[bad].max():.3g} > 1/eps = {1 / self.eps:.3g} for this {self.dtype} Gram: the Gram's "
                f"rounding errors can change the solution completely; use a larger {name}"
                + (" or a float64 Gram" if self.dtype != np.float64 else ""),
                IllConditionedWarning, stacklevel=3)
        return cond

    def _xp_targets(self, Y):
        Y, one_d = _check_targets(Y, self.n)
        return self.xp.asarray(Y), one_d

    def _out(self, a):
        return a if self._cupy_out else _to_numpy(a)

    # -- solves --------------------------------------------------------------------------------------------

    @D.on_device
    def solve(self, Y, ridge, *, check=True):
        """Dual coefficients ``alpha = (K + ridge tr(K)/N I)^-1 Y`` for one ridge or a grid.

        Y : (N,) or (N, T). ridge : float or sequence (R,) of relative ridges >= 0.
        Returns float64 alpha of shape Y.shape for a scalar ridge, (R,) + Y.shape for a sequence.
        """
        scalar, one_d, _, _, alpha = self._alphas(Y, ridge, check)
        if one_d:
            alpha = alpha[..., 0]
        return self._out(alpha[0] if scalar else alpha)

    def _alphas(self, Y, ridge, check):
        """(scalar ridge?, 1-d Y?, Y as (N, T), 1/(w + lam) (R, N), alpha (R, N, T)) for solve and loo."""
        r, scalar = _check_ridges(ridge)
        Yx, one_d = self._xp_targets(Y)
        if check:
            self.check_conditioning(r)
        lam = self.xp.asarray(r * self.scale)
        c = self.V.T @ Yx                                      # (N, T)
        inv = 1.0 / (self.w[None, :] + lam[:, None])            # (R, N)
        return scalar, one_d, Yx, inv, self.xp.matmul(self.V, inv[:, :, None] * c[None])

    @D.on_device
    def loo(self, Y, ridge, *, check=True):
        """Leave-one-out predictions in closed form.

        For H = K + lam I and alpha = H^-1 Y, the prediction for point i by the model fitted without i is
        ``Y_i - alpha_i / (H^-1)_ii`` (the standard identity for ridge / kernel ridge regression).
        Y : (N,) or (N, T); ridge : float or (R,). Returns float64 predictions shaped like :meth:`solve`.
        """
        scalar, one_d, Yx, inv, alpha = self._alphas(Y, ridge, check)   # alpha (R, N, T)
        hdiag = (self.V * self.V) @ inv.T                                 # (N, R): diag of H^-1 per ridge
        pred = Yx[None] - alpha / hdiag.T[:, :, None]
        if one_d:
            pred = pred[..., 0]
        return self._out(pred[0] if scalar else pred)


def solve(K, Y, ridge, *, device="auto"):
    """Kernel ridge dual coefficients: ``alpha = (K + ridge * tr(K)/N * I)^-1 Y``, in float64.

    K : (N, N) float32/float64 Gram. Y : (N,) or (N, T). ridge : relative ridge >= 0, or a sequence (R,)
    of them (one eigendecomposition serves all). Returns alpha shaped like Y, or (R,) + Y.shape.
    Predict with ``K_test @ alpha`` where K_test is the (M, N) test-vs-train Gram.
    """
    return GramEigen(K, device=device).solve(Y, ridge)


def loo_predictions(K, Y, ridge, *, device="auto"):
    """Closed-form leave-one-out predictions (float64, shaped like :func:`solve`'s output) for each ridge."""
    return GramEigen(K, device=device).loo(Y, ridge)


def _fold_indices(n, folds, random_state):
    folds = check_int(check_int(folds, "folds"), "folds", 2, n, expected=f"between 2 and N = {n}")
    perm = np.random.default_rng(random_state).permutation(n)
    return np.array_split(perm, int(folds))


def kfold_predictions(K, Y, ridge, *, folds=5, random_state=0, device="auto"):
    """Out-of-fold predictions: each fold is predicted by the model fitted on the other folds.

    One eigendecomposition per fold serves every ridge. Folds are a random partition (``random_state``)
    into ``folds`` near-equal parts. Every fold uses the absolute ridge ``ridge * tr(K)/N`` of the full
    Gram, as leave-one-out does. Returns float64 predictions shaped like :func:`solve`'s output.
    """
    K, _ = _check_gram(K)
    n = K.shape[0]
    r, scalar = _check_ridges(ridge)
    Y2, one_d = _check_targets(Y, n)
    K = _to_numpy(K)
    check_finite(K, "K", np)
    scale = float(np.trace(K)) / n
    parts = _fold_indices(n, folds, random_state)
    pred = np.empty((len(r), n, Y2.shape[1]))
    for val in parts:
        tr = np.setdiff1d(np.arange(n), val)
        eig = GramEigen(K[np.ix_(tr, tr)], device=device)
        # the same absolute ridge (relative to the full Gram's tr(K)/N) in every fold
        alpha = _to_numpy(eig.solve(Y2[tr], r * (scale / eig.scale), check=False))   # (R, Ntr, T)
        pred[:, val] = np.matmul(np.asarray(K[np.ix_(val, tr)], dtype=np.float64), alpha)
    if one_d:
        pred = pred[..., 0]
    return pred[0] if scalar else pred


def _scores(pred, Y2, scoring):
    """pred (R, N, T), Y2 (N, T) -> (scores (R,), mse (R,))."""
    mse = ((pred - Y2[None]) ** 2).mean(axis=(1, 2))
    if scoring == "accuracy":
        acc = (pred.argmax(axis=2) == Y2.argmax(axis=1)[None]).mean(axis=1)
        return acc, mse
    return -mse, mse


def select_ridge(K, Y, ridges=DEFAULT_RIDGES, *, cv="loo", scoring="mse", random_state=0, device="auto",
                 eigen=None):
    """Choose the relative ridge from a grid by leave-one-out (closed form) or k-fold validation.

    Parameters
    ----------
    K : (N, N) Gram; Y : (N,) or (N, T) targets (one-hot for classification).
    ridges : sequence (R,) of relative ridges >= 0 (default :data:`DEFAULT_RIDGES`).
    cv : 'loo' (default, from one eigendecomposition) or an int k >= 2 (k-fold, one per fold).
    scoring : 'mse' (mean squared error) or 'accuracy' (argmax of the outputs vs argmax of Y; ties broken
        by the lower mean squared error).
    eigen : an existing :class:`GramEigen` of K, reused for 'loo'.

    Returns
    -------
    RidgeSelection(ridge, index, ridges, scores, mse, scoring); ``scores`` is higher-is-better.
    """
    check_choice(scoring, "scoring", ("mse", "accuracy"))
    r, _ = _check_ridges(ridges, "ridges")
    if cv == "loo":
        eig = eigen if eigen is not None else GramEigen(K, device=device)
        Y2, _ = _check_targets(Y, eig.n)
        pred = _to_numpy(eig.loo(Y2, r, check=False))
    elif isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        Y2, _ = _check_targets(Y, np.shape(K)[0] if np.ndim(K) == 2 else -1)
        pred = kfold_predictions(K, Y2, r, folds=cv, random_state=random_state, device=device)
    else:
        raise ValueError(f"cv must be 'loo' or an int number of folds >= 2; got {cv!r}")
    scores, mse = _scores(pred, Y2, scoring)
    # best score; among equal scores the lower mse; among those the larger ridge (the more stable system)
    order = np.lexsort((-r, mse, -scores))
    i = int(order[0])
    return RidgeSelection(float(r[i]), i, r, scores, mse, scoring)


class KRR:
    """Kernel ridge regression on precomputed Grams, with ridge selection.

    Parameters
    ----------
    ridge : float >= 0 or sequence of them (relative to tr(K)/N, see the module docstring). A sequence
        is a grid from which :meth:`fit` selects by ``cv``. Default :data:`DEFAULT_RIDGES`.
    cv : 'loo' (closed-form leave-one-out, default) or an int k >= 2 (k-fold). Used only for a grid.
    scoring : 'mse' or 'accuracy' (for one-hot targets), the selection criterion.
    device : 'auto', 'cpu', 'cuda' or 'cuda:N'.

    Attributes after :meth:`fit`
    ----------------------------
    ridge_ : float, the relative ridge used. selection_ : RidgeSelection or None (scalar ridge).
    alpha_ : float64 (N,) or (N, T) dual coefficients. eigen_ : the :class:`GramEigen` of the training Gram.
    """

    def __init__(self, ridge=DEFAULT_RIDGES, *, cv="loo", scoring="mse", device="auto"):
        self.ridge, self.cv, self.scoring, self.device = ridge, cv, scoring, device

    def fit(self, K, Y, *, eigen=None):
        """Fit on the training Gram K (N, N) and targets Y (N,) or (N, T); returns self.

        ``eigen``: a :class:`GramEigen` of this K to reuse (skips the factorization)."""
        r, scalar = _check_ridges(self.ridge)
        check_choice(self.scoring, "scoring", ("mse", "accuracy"))
        eig = eigen if eigen is not None else GramEigen(K, device=self.device)
        _check_targets(Y, eig.n)
        if scalar or len(r) == 1:
            self.selection_ = None
            self.ridge_ = float(r[0])
        else:
            self.selection_ = select_ridge(K, Y, r, cv=self.cv, scoring=self.scoring, device=self.device,
                                           eigen=eig)
            self.ridge_ = self.selection_.ridge
        self.alpha_ = eig.solve(Y, self.ridge_)     # checks conditioning of the chosen ridge
        self.eigen_ = eig
        return self

    def predict(self, K_test):
        """Predictions ``K_test @ alpha_`` (float64 (M,) or (M, T)) for the test-vs-train Gram (M, N)."""
        if not hasattr(self, "alpha_"):
            raise RuntimeError("this KRR is not fitted yet; call fit(K, Y) first")
        n = self.alpha_.shape[0]
        xp = D.xp_of(K_test)
        K_test = K_test if _is_cupy(K_test) else np.asarray(K_test)
        if K_test.ndim != 2 or K_test.shape[1] != n:
            raise ValueError(f"K_test must have shape (M, N) with N = {n} training points; got shape "
                             f"{tuple(K_test.shape)}")
        K_test = xp.asarray(K_test, dtype=xp.float64)
        check_finite(K_test, "K_test", xp)
        alpha = xp.asarray(self.alpha_) if xp is not np else _to_numpy(self.alpha_)
        return K_test @ alpha
