"""Kernel ridge regression on a precomputed Gram matrix, and the ``ntkfast krr`` command.

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
in float64. On the CPU they use scipy/numpy. On a GPU they use cupy (imported only when needed): when the
Gram is a cupy array, or ``device='cuda'``, or ``device='auto'`` with cupy importable and a usable GPU.
Results come back as numpy arrays, except when the Gram itself was a cupy array.

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

__all__ = ["GramEigen", "KRR", "solve", "loo_predictions", "kfold_predictions", "select_ridge", "one_hot",
           "RidgeSelection", "IllConditionedWarning", "IndefiniteGramWarning", "DEFAULT_RIDGES", "register_cli"]

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


def _is_cupy(a):
    return type(a).__module__.split(".")[0] == "cupy"


def _import_cupy(reason):
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken CUDA install raising at import
        raise RuntimeError(f"{reason} needs cupy, which could not be imported ({type(e).__name__}: {e}); "
                           f"install the GPU extra: pip install 'ntkfast[gpu]'") from None
    return cupy


def _gpu_usable():
    """cupy importable and at least one CUDA device usable now."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _backend(K, device):
    """Pick the array module for a Gram: returns (xp, K_on_that_device, return_cupy)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda'; got {device!r}")
    if _is_cupy(K):
        if device == "cpu":
            return np, K.get(), False
        import cupy
        return cupy, K, True
    if device == "cuda":
        cupy = _import_cupy("device='cuda'")
        try:
            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:
            raise RuntimeError(f"device='cuda' but no CUDA device is usable: {e}") from None
        if n == 0:
            raise RuntimeError("device='cuda' but no CUDA device is usable (device count 0)")
        return cupy, K, False
    if device == "auto" and _gpu_usable():
        import cupy
        return cupy, K, False
    return np, K, False


def _to_numpy(a):
    return a.get() if _is_cupy(a) else a


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


def _check_finite(a, name, xp):
    bad = int(a.size - int(xp.count_nonzero(xp.isfinite(a))))
    if bad:
        raise ValueError(f"{name} must be finite; got {bad} NaN/Inf entries")


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
    device : 'auto' (default), 'cpu' or 'cuda'. See the module docstring.

    Attributes
    ----------
    w : float64 (N,) eigenvalues, ascending, negatives clipped to 0.
    V : float64 (N, N) orthonormal eigenvectors (columns).
    scale : float, tr(K) / N: ``ridge`` r means the absolute ridge ``r * scale``.
    n : int, N.
    eps : float, machine epsilon of the input Gram's dtype (sets the warning thresholds).
    min_eigenvalue : float, the smallest eigenvalue before clipping.
    """

    def __init__(self, K, *, device="auto"):
        K, eps = _check_gram(K)
        xp, K, self._cupy_out = _backend(K, device)
        self._gpu = xp is not np
        self.eps, self.n, self.dtype = eps, int(K.shape[0]), np.dtype(K.dtype)
        K = xp.asarray(K, dtype=xp.float64)
        _check_finite(K, "K", xp)
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
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral):
        raise TypeError(f"folds must be an int >= 2; got {folds!r}")
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be between 2 and N = {n}; got {folds}")
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
    _check_finite(K, "K", np)
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
    if scoring not in ("mse", "accuracy"):
        raise ValueError(f"scoring must be 'mse' or 'accuracy'; got {scoring!r}")
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
    device : 'auto', 'cpu' or 'cuda'.

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
        if self.scoring not in ("mse", "accuracy"):
            raise ValueError(f"scoring must be 'mse' or 'accuracy'; got {self.scoring!r}")
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
        xp = np if not _is_cupy(K_test) else __import__("cupy")
        K_test = K_test if _is_cupy(K_test) else np.asarray(K_test)
        if K_test.ndim != 2 or K_test.shape[1] != n:
            raise ValueError(f"K_test must have shape (M, N) with N = {n} training points; got shape "
                             f"{tuple(K_test.shape)}")
        K_test = xp.asarray(K_test, dtype=xp.float64)
        _check_finite(K_test, "K_test", xp)
        alpha = xp.asarray(self.alpha_) if xp is not np else _to_numpy(self.alpha_)
        return K_test @ alpha


# ----------------------------------------------------------------------------------------------------------
# command line: ntkfast krr

_DEFAULT_ARCH = "gap5"
_DIGITS_TEST = 500          # embedded digits: the last 500 are the test set, the first 1297 train


def register_cli(sub):
    """Add the ``krr`` subcommand to an argparse subparsers object (see :mod:`ntkfast.cli`)."""
    import argparse

    from ..cli.core import add_compute_args, add_data_args
    p = sub.add_parser(
        "krr", help="kernel ridge regression: Gram, ridge by leave-one-out, test accuracy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Classify images by kernel ridge regression on one-hot labels with the NTK or NNGP/CKN of\n"
                    "an architecture: compute the training Gram and the test-vs-train Gram, pick the ridge\n"
                    "from a grid by closed-form leave-one-out accuracy, print accuracy and timings.\n"
                    "Real-valued targets (not all integers) are regressed instead: ridge by leave-one-out\n"
                    "mean squared error, test RMSE and R^2 (see --task).\n\n"
                    "Ridges are relative to the trace: K + ridge * tr(K)/N * I.\n"
                    "With no options: gap5 NTK on the embedded 8x8 digits, train = first 1297, test = last 500.\n"
                    "Before each long Gram it prints the pairs and an estimated time (measured on a few pairs).",
        epilog="examples:\n"
               "  ntkfast krr\n"
               "  ntkfast krr --arch bietti_mairal --kind nngp --data ../shared/data/mnist --train 2000 --test 500\n"
               "  ntkfast krr --arch myrtle5 --pad 32 --data mnist/ --ridge 1e-4,1e-3 --out pred.csv --progress")
    add_data_args(p)
    p.add_argument("--test-data", default=None,
                   help="a separate test set (same forms as --data); default: split --data into train/test")
    p.add_argument("--split", default="t10k", metavar="PREFIX",
                   help="IDX file prefix read from directories, e.g. 't10k' (default) or 'train'")
    p.add_argument("--train", type=int, default=None, metavar="N",
                   help="training set: the first N items (default: all but the test set)")
    p.add_argument("--test", type=int, default=None, metavar="M",
                   help=f"test set: the last M items of --data, or the first M of --test-data (default: the "
                        f"items after --train; without --train, {_DIGITS_TEST} for the embedded digits, a quarter "
                        f"of a given set, all of --test-data)")
    p.add_argument("--arch", default=_DEFAULT_ARCH,
                   help=f"preset name: gapN, flatN, myrtle5|7|10, bietti_mairal, fcN (default {_DEFAULT_ARCH})")
    p.add_argument("--kind", choices=("ntk", "nngp"), default="ntk", help="kernel (default ntk)")
    p.add_argument("--ridge", default=None, metavar="R[,R...]",
                   help="relative ridge or comma-separated grid, selected by --cv (default "
                        + ",".join(f"{r:g}" for r in DEFAULT_RIDGES) + ")")
    p.add_argument("--cv", default="loo", metavar="loo|K",
                   help="ridge selection: 'loo' (closed form, default) or K for K-fold")
    p.add_argument("--task", choices=("auto", "classify", "regress"), default="auto",
                   help="classify (one-hot KRR on integer labels, accuracy) or regress (KRR on the targets, RMSE "
                        "and R^2); default auto: classify when every target is an integer, else regress")
    p.add_argument("--pad", type=int, default=None, metavar="SIZE",
                   help="zero-pad images to SIZE x SIZE (e.g. 32 for myrtle on 28x28 MNIST); SIZE >= the image "
                        "side")
    p.add_argument("--out", default=None, help="write test predictions: .npy (labels or values) or .csv "
                                               "(index,predicted[,label]); checked before any work")
    add_compute_args(p)
    p.add_argument("--gram-store", default=None, metavar="PATH.zarr",
                   help="beyond memory: write the train Gram to PATH.zarr and the test Gram beside it "
                        "(PATH_test.zarr), both resumable, and solve by streamed Nystrom-preconditioned CG "
                        "(ntkfast.krr_stream) for one --ridge")
    p.add_argument("--memory-budget", default=None, metavar="BYTES",
                   help="with --gram-store: host memory bound of the Gram and the solver, e.g. 500MB")
    p.set_defaults(func=_cli_krr)


def _parse_ridges(text):
    if text is None:
        return np.array(DEFAULT_RIDGES)
    try:
        vals = [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--ridge must be a float or comma-separated floats >= 0; got {text!r}") from None
    return _check_ridges(vals, "--ridge")[0]


def _parse_cv(text):
    if text == "loo":
        return "loo"
    try:
        k = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"--cv must be 'loo' or an int number of folds >= 2; got {text!r}") from None
    if k < 2:
        raise ValueError(f"--cv must be 'loo' or an int number of folds >= 2; got {k}")
    return k


def targets_task(y, task="auto", name="--data"):
    """'classify' or 'regress' for targets ``y`` and the requested ``task`` ('auto', 'classify', 'regress').

    auto: classify when y is 1-d and every value is an integer (int, bool or integral floats), else regress.
    Raises ValueError for 'classify' with non-integer or multi-column targets, naming ``name``.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{name} targets must be numeric (integer class labels or real values); got dtype {y.dtype}")
    integral = y.ndim == 1 and (y.dtype.kind in "biu" or bool(np.all(np.isfinite(y) & (y == np.round(y)))))
    if task == "auto":
        return "classify" if integral else "regress"
    if task == "classify" and not integral:
        bad = y.ravel()[~(y.ravel() == np.round(y.ravel()))][:3] if y.dtype.kind == "f" else []
        raise ValueError(f"--task classify needs integer class labels (N,); {name} has "
                         + (f"targets of shape {y.shape}" if y.ndim != 1 else
                            f"non-integer targets (e.g. {', '.join(f'{v:g}' for v in bad)})")
                         + "; use --task regress (or the default, auto)")
    return task


def _cli_krr(args):
    import time

    from .. import data as D
    from ..cli.core import (check_compute_args, check_out_option, print_plan, resume_hint)
    from ..kernel.tiled import prepare, resolve_device
    from ..kernel.inputs import to_nhwc
    from ..storage.memory import parse_bytes
    from ..kernel.presets import by_name

    # every check that needs no data, before loading any
    arch = by_name(args.arch)
    ridges = _parse_ridges(args.ridge)
    cv = _parse_cv(args.cv)
    check_compute_args(args)
    check_out_option(args.out, None, "--out", (".npy", ".csv"), gram=False)
    for name in ("train", "test", "pad"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name} must be >= 1; got {v}")
    store = args.gram_store
    if store is not None:
        check_out_option(store, args.kind, "--gram-store", (".zarr",))
        check_out_option(store[:-5] + "_test.zarr", args.kind, "--gram-store (its test store)", (".zarr",))
        if args.ridge is None or len(ridges) != 1:
            raise ValueError("--gram-store solves for one ridge (no leave-one-out from a store): pass --ridge R; "
                             f"got {'the default grid' if args.ridge is None else f'{len(ridges)} ridge values'}")
        if args.memory_budget is not None:
            parse_bytes(args.memory_budget, "--memory-budget")
    elif args.memory_budget is not None:
        raise ValueError("--memory-budget applies with --gram-store; pass both or neither")
    device = resolve_device(args.device)

    def load(src, option):
        X, y = D.load(src) if src is None or src == D.DEFAULT_NAME or not _is_dir(src) else \
            D.load_mnist(src, split=args.split)
        return to_nhwc(X, args.layout, option, option="--layout"), y

    X, y = load(args.data, "--data")
    if y is None:
        raise ValueError(f"--data must provide labels (an IDX directory, the embedded digits or an .npz with y); "
                         f"{args.data!r} has none")
    if args.test_data is None:
        test = args.test
        if test is None and (args.data is None or args.data == D.DEFAULT_NAME) and args.train is None:
            test = _DIGITS_TEST
        Xtr, ytr, Xte, yte = D.split(X, y, args.train, test)
    else:
        Xte, yte = load(args.test_data, "--test-data")
        Xtr, ytr = X[:args.train] if args.train else X, y[:args.train] if args.train else y
        if args.test is not None:
            if args.test > len(Xte):
                raise ValueError(f"--test must be <= the {len(Xte)} items of --test-data; got {args.test}")
            Xte, yte = Xte[:args.test], (None if yte is None else yte[:args.test])
    if Xtr.shape[1:] != Xte.shape[1:]:
        raise ValueError(f"train and test images must have the same shape; got train {Xtr.shape[1:]} and "
                         f"test {Xte.shape[1:]}")
    if args.pad is not None and Xtr.ndim == 4 and args.pad < max(Xtr.shape[1:3]):
        raise ValueError(f"--pad must be >= the image side {max(Xtr.shape[1:3])} (images are "
                         f"{Xtr.shape[1]}x{Xtr.shape[2]}); got {args.pad}")
    task = targets_task(ytr, args.task)
    if task == "classify":
        classes = np.unique(ytr)
        if len(classes) < 2:
            raise ValueError(f"the training labels must contain at least 2 classes; got 1 class: {classes.tolist()}")
        Ytr, _ = one_hot(ytr, classes)
    else:
        classes = None
        Ytr = np.asarray(ytr, dtype=np.float64)
        Ytr = Ytr[:, None] if Ytr.ndim == 1 else Ytr.reshape(len(Ytr), -1)
    Xtr, Xte = prepare_images(Xtr, Xte, arch, normalize=args.normalize, pad=args.pad)
    arch.plan(Xtr.shape[1:])          # a net that does not fit the images fails here, before any work
    n, m = len(Xtr), len(Xte)
    print(f"ntkfast krr: arch={args.arch} kind={args.kind} device={device} dtype={args.dtype}")
    what = (f"{len(classes)} classes" if task == "classify" else
            f"real-valued targets ({Ytr.shape[1]} output{'s' if Ytr.shape[1] > 1 else ''}): regression")
    print(f"  data     : {args.data or D.DEFAULT_NAME}"
          + (f" / test {args.test_data}" if args.test_data else "")
          + f"; train {n} x {tuple(Xtr.shape[1:])}, test {m}; {what}; normalize={args.normalize}",
          flush=True)

    kw = dict(arch=arch, kind=args.kind, device=device, dtype=args.dtype, tile=args.tile, threads=args.threads,
              memory_budget=args.memory_budget if store is not None else None)
    args.store_option = "--gram-store"
    job_tr = prepare(Xtr, out=store, progress=args.progress, **kw)
    job_te = prepare(Xte, Xtr, out=None if store is None else store[:-5] + "_test.zarr", progress=args.progress,
                     **kw)
    hints = [h for h in (resume_hint(job_tr, "--gram-store"), resume_hint(job_te, "--gram-store")) if h]
    args.resume_hint = (lambda: "; ".join(h() for h in hints)) if hints else None
    estimates = [print_plan(job, label) for job, label in ((job_tr, "train"), (job_te, "test"))]
    if all(e is not None for e in estimates) and len(estimates) == 2:
        from ..cli.core import format_seconds
        print(f"  {'':<9}  about {format_seconds(sum(estimates))} of Gram time in all", flush=True)
    complete = {id(job_tr): job_tr.complete, id(job_te): job_te.complete}
    t0 = time.perf_counter()
    job_tr.run(progress="train Gram" if args.progress else False)
    K = job_tr.result()
    t1 = time.perf_counter()
    job_te.run(progress="test Gram" if args.progress else False)
    Kt = job_te.result()
    t2 = time.perf_counter()

    def speed(job, dt):
        if complete[id(job)]:
            return f"already complete in {job.store.location}"
        pairs = job.total_pairs
        return f"{dt:.2f} s ({pairs:,} pairs, {pairs / max(dt, 1e-9):,.0f} pairs/s)"
    print(f"  gram     : train {speed(job_tr, t1 - t0)}, test {speed(job_te, t2 - t1)}", flush=True)

    score = "accuracy" if task == "classify" else "mse"
    if store is not None:
        from . import krr_stream
        alpha, info = krr_stream.solve(K, Ytr, ridges[0], memory_budget=args.memory_budget,
                                       device="cpu" if device == "cpu" else "auto", return_info=True)
        F = krr_stream.predict(Kt, alpha, memory_budget=args.memory_budget)
        t3 = time.perf_counter()
        print(f"  solve    : {t3 - t2:.2f} s (streamed Nystrom-PCG from {store}: {info.iterations} iterations, "
              f"{info.passes} passes, max residual {float(np.max(info.residuals)):.1e})")
        print(f"  ridge    : {ridges[0]:g} (relative to tr(K)/N; fixed)")
    else:
        model = KRR(ridges, cv=cv, scoring=score, device="cpu" if device == "cpu" else "auto").fit(K, Ytr)
        F = model.predict(Kt)
        t3 = time.perf_counter()
        sel = model.selection_
        if sel is None:
            how = "fixed"
        else:
            crit = "accuracy" if task == "classify" else "mean squared error"
            val = f"{100 * sel.scores[sel.index]:.2f} %" if task == "classify" else f"{-sel.scores[sel.index]:.4g}"
            how = f"{'leave-one-out' if cv == 'loo' else f'{cv}-fold'} {crit} {val}"
        print(f"  solve    : {t3 - t2:.2f} s (float64 eigendecomposition of {n} x {n}, {len(ridges)} ridge(s))")
        print(f"  ridge    : {model.ridge_:g} (relative to tr(K)/N; {how})")
    F = np.asarray(F)
    if task == "classify":
        pred = classes[np.argmax(F, axis=1)]
    else:
        pred = F[:, 0] if (np.ndim(ytr) == 1) else F
    return _report(args, pred, yte, m, t0, t3, task)


def _report(args, pred, yte, m, t0, t3, task="classify"):
    """Accuracy (or RMSE and R^2), predictions file and total time of ``ntkfast krr``."""
    if yte is not None and task == "classify":
        acc = float(np.mean(pred == yte))
        print(f"  accuracy : {100 * acc:.2f} % on {m} test items ({int(np.sum(pred == yte))}/{m})")
    elif yte is not None:
        t = np.asarray(yte, dtype=np.float64).reshape(np.shape(pred))
        mse = float(np.mean((pred - t) ** 2))
        var = float(np.mean((t - t.mean(axis=0)) ** 2))
        r2 = 1 - mse / var if var > 0 else float("nan")
        print(f"  error    : RMSE {mse ** 0.5:.4g}, R^2 {r2:.4f} on {m} test items (target std {var ** 0.5:.4g})")
    if args.out:
        if args.out.endswith(".npy"):
            np.save(args.out, pred)
        else:
            with open(args.out, "w") as f:
                f.write("index,predicted" + (",label" if yte is not None else "") + "\n")
                for i, pv in enumerate(pred):
                    pv = ";".join(f"{v:g}" for v in pv) if np.ndim(pv) else (f"{pv:g}" if task == "regress" else pv)
                    tv = "" if yte is None else ("," + (";".join(f"{v:g}" for v in np.ravel(yte[i]))
                                                         if task == "regress" else str(yte[i])))
                    f.write(f"{i},{pv}{tv}\n")
        print(f"  written  : {args.out}")
    print(f"  total    : {t3 - t0:.2f} s")
    return 0


def prepare_images(X_train, X_test, arch, *, normalize="center_scale", pad=None, layout=None):
    """Normalize (ZCA, if asked, fitted on the training images only), zero-pad to ``pad`` x ``pad``, and
    flatten for a fully-connected ``arch``. Returns float64 (X_train, X_test) as ``arch`` takes them.

    Images are (N, H, W, C), or (N, H, W) for one channel; ``layout`` as in :func:`ntkfast.gram` (None: NHWC,
    refusing channels-first-looking shapes; 'NCHW': converted). ``pad`` must be >= the image side."""
    from .. import data as D
    from ..kernel.inputs import to_nhwc
    X_train, X_test = to_nhwc(np.asarray(X_train), layout, "X_train"), to_nhwc(np.asarray(X_test), layout, "X_test")
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, numbers.Integral)
                            or (np.ndim(X_train) == 4 and pad < max(np.shape(X_train)[1:3]))):
        side = max(np.shape(X_train)[1:3]) if np.ndim(X_train) == 4 else "?"
        raise ValueError(f"pad must be an int >= the image side {side}; got {pad!r}")
    Xtr = D.normalize(X_train, normalize)
    Xte = D.normalize(X_test, normalize, zca_fit=X_train if normalize == "zca" else None)
    if pad is not None:
        Xtr, Xte = D.pad(Xtr, pad), D.pad(Xte, pad)
    if not arch.convolutional:
        Xtr, Xte = Xtr.reshape(len(Xtr), -1), Xte.reshape(len(Xte), -1)
    return Xtr, Xte


def _is_dir(path):
    import os
    return os.path.isdir(os.fspath(path))
