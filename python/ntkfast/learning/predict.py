"""Training dynamics of infinitely wide networks, on Gram blocks: predictions at time t and GP inference.

An infinitely wide network trained by gradient descent on the squared loss is a linear model in function
space (the NTK regime). Given the Gram blocks that :func:`ntkfast.gram` computes (train x train, test x
train and, for covariances, test x test; NNGP and NTK), this module gives the mean and the covariance of
its outputs over random initializations at any training time, from one eigendecomposition of the train
Gram (:class:`ntkfast.krr.GramEigen`), and the posterior of Gaussian-process inference.

Definitions
-----------
They are those of neural-tangents' ``predict.gradient_descent_mse_ensemble`` and ``predict.gp_inference``
(with its default ``trace_axes=(-1,)``: the kernel acts as ``K (x) I`` on the K output columns).

Training inputs X (N points), targets Y (N, K) (a 1-d ``y_train`` is K = 1). The loss is

    L(f) = ||f(X) - Y||_F^2 / (2 s),    s = N K  (the number of target entries),

and the outputs at initialization are a centred Gaussian process with the NNGP kernel K (so the ensemble
mean starts at 0). The kernel that drives training, Theta, is the NTK for ``kind='ntk'`` (every layer
trained) and the NNGP for ``kind='nngp'`` (only the readout trained). With the optional diagonal
regularizer ``r`` (``diag_reg``; relative to ``tr(Theta) / N`` unless ``diag_reg_absolute_scale``) and the
eigendecomposition ``Theta + r I = V diag(lam) V^T``, training for time t at learning rate eta gives, per
eigenvalue, the decay factor and its integral

    e(lam, t) = exp(-eta t lam / s)            (gradient flow, ``discrete=False``)
    e(lam, t) = (1 - eta lam / s)^t            (t discrete gradient-descent steps, ``discrete=True``)
    g(lam, t) = (1 - e(lam, t)) / lam          (= eta t / s at lam = 0)

(so the absolute time is ``eta t`` either way), and with ``E = V diag(e) V^T``, ``G_t = V diag(g) V^T``:

    mean, train set        (I - E) Y                      = V diag(1 - e) V^T Y
    mean, test set         Theta_tx G_t Y
    covariance, train      nngp: V diag(lam e^2) V^T      ntk: E K_xx E
    covariance, test       nngp: K_tt - K_tx G_2t K_xt
                           ntk : K_tt - P^T K_xt - K_tx P + P^T K_xx P,   P = G_t Theta_xt

where ``K_..`` are NNGP blocks (the kernel of the network at initialization) and ``Theta_..`` blocks of the
training kernel (x: train, t: test). At ``t = inf`` these are the GP-inference formulas of
:func:`gp_inference`: mean ``Theta_tx (Theta + r I)^-1 Y``, and the covariances above with
``G = (Theta + r I)^-1``. Conventions where neural-tangents leaves a 0/0 or amplifies rounding:
``g(0, t) = eta t / s`` for finite t, and at ``t = inf`` an eigenvalue at or below the float64 rounding
level ``N eps64 max|Theta|`` of the factorization is dropped (``g = 0``, ``e = 1``: the pseudo-inverse; the
mode is not fitted on the train set either), with an :class:`ntkfast.krr.IllConditionedWarning`; so is a
condition number beyond 1/eps of the Gram's dtype (for a float32 Gram, its own rounding then shows in the
t = inf predictions; finite times filter those modes).

Stability of discrete steps: ``(1 - eta lam / s)^t`` decays for every mode only if ``eta < 2 s / lam_max``
(neural-tangents' ``predict.max_learning_rate``); a larger learning rate is refused for ``discrete=True``.

Precision and devices
---------------------
Every block may be float32 or float64; all arithmetic is float64. The train Gram's eigendecomposition and
every product run on the CPU (numpy/scipy) or on a GPU (cupy), chosen as in :mod:`ntkfast.krr`: on the
GPU when the train Gram is a cupy array, or ``device='cuda'`` (or 'cuda:N'), or ``device='auto'`` with cupy
importable and a usable GPU (:mod:`ntkfast.device`). Results are numpy arrays unless the train Gram was a
cupy array.

Checks
------
Before any factorization: blocks must be real (TypeError otherwise), 2-d with the shapes above, finite,
and the train x train blocks symmetric (ValueError). A train Gram with an eigenvalue below
``-N eps max|K|`` (beyond the rounding of its dtype) is indefinite and refused (ValueError); so is, when a
covariance needs it, an indefinite NNGP train block. Times must be >= 0 (``inf`` allowed) and, for
discrete steps, whole numbers.
"""
from __future__ import annotations

import warnings
from collections import namedtuple

import numpy as np

from .. import device as D
from ..validation import check_choice, check_real
from .krr import GramEigen, IllConditionedWarning, IndefiniteGramWarning, _check_targets

__all__ = ["GradientFlow", "gp_inference", "Gaussian", "LossCurves", "KINDS"]

#: Kernels that can drive training: 'ntk' (every layer trained), 'nngp' (only the readout trained).
KINDS = ("ntk", "nngp")

Gaussian = namedtuple("Gaussian", ["mean", "covariance"])
Gaussian.__doc__ = """Mean and covariance of the network outputs over random initializations.

mean : float64 (M,) or (M, K) (with a leading (T,) axis for a sequence of times);
covariance : float64 (M, M) (or (T, M, M)), shared by the K output columns; None when not computed."""

LossCurves = namedtuple("LossCurves", ["t", "train", "test"])
LossCurves.__doc__ = """Loss curves of :meth:`GradientFlow.loss_curves`.

t : float64 (T,) times; train : float64 (T,) train loss; test : float64 (T,) test loss, or None without a
test set. Loss ``||f - Y||_F^2 / (2 N K)`` of the mean prediction (plus the mean output variance / 2 with
``ensemble=True``: the expected loss of one network drawn from the ensemble)."""


# ----------------------------------------------------------------------------------------------------------
# argument checks


def _has_pair(k):
    """An ntkfast Kernels(nngp, ntk) (or a neural-tangents Kernel, or any object with both attributes)."""
    return not hasattr(k, "shape") and hasattr(k, "nngp") and hasattr(k, "ntk")


def _pick(k, which, name):
    """The ``which`` ('nngp'/'ntk') block of a Kernels pair, or the array itself. Returns (block, its name)."""
    if k is None:
        return None, name
    if _has_pair(k):
        blk = getattr(k, which)
        if blk is None:
            raise ValueError(f"{name}.{which} is None; this computation needs the {which.upper()} block")
        return blk, f"{name}.{which}"
    return k, name


def _block(a, name, shape, xp):
    """a as a finite float64 2-d array of module xp with the given shape ((rows, cols), None = any).

    Raises TypeError for non-numeric input, ValueError for shape or non-finite values."""
    if not D.is_cupy(a):
        if hasattr(a, "__cuda_array_interface__") and hasattr(a, "get"):
            a = a.get()
        try:
            a = np.asarray(a)
        except Exception as e:  # ragged lists and the like
            raise TypeError(f"{name} must be a numeric 2-d array; could not convert {type(a).__name__}: {e}") \
                from None
    if a.dtype == bool or a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real (integer or float) Gram block; got dtype {a.dtype}")
    want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
    if a.ndim != 2 or any(s is not None and s != g for s, g in zip(shape, a.shape)):
        raise ValueError(f"{name} must have shape {want}; got shape {tuple(a.shape)}")
    if a.size == 0:
        raise ValueError(f"{name} must be non-empty; got shape {tuple(a.shape)}")
    eps = float(np.finfo(a.dtype).eps) if a.dtype.kind == "f" else float(np.finfo(np.float64).eps)
    a = xp.asarray(a, dtype=xp.float64)
    bad = int(a.size - int(xp.count_nonzero(xp.isfinite(a))))
    if bad:
        raise ValueError(f"{name} must be finite; got {bad} NaN/Inf entries")
    return a, eps


def _symmetric(a, eps, name, xp):
    amax = float(xp.abs(a).max())
    asym = float(xp.abs(a - a.T).max())
    if asym > 10 * np.sqrt(eps) * amax:
        raise ValueError(f"{name} must be symmetric (a train x train Gram); got max |K - K^T| = {asym:.3g} for "
                         f"max |K| = {amax:.3g}")
    return (a + a.T) * 0.5


def _indefinite(name, wmin, wmax, tol, dtype, n):
    return ValueError(f"{name} must be positive semi-definite (a Gram matrix); its smallest eigenvalue is "
                      f"{wmin:.3g} (largest {wmax:.3g}), below -{tol:.3g}, the rounding level of a {dtype} Gram "
                      f"of size {n}: check how it was computed")


def _times(t, discrete):
    """t as float64 (T,) numpy times >= 0 (inf allowed; whole numbers of steps when discrete); scalar flag."""
    what = "a number of steps (int >= 0, or inf)" if discrete else "a time >= 0 (float, or inf)"
    if isinstance(t, (str, bytes, bool)) or isinstance(t, np.bool_):
        raise TypeError(f"t must be {what} or a 1-d sequence of them; got {t!r}")
    if D.is_cupy(t):
        t = t.get()
    try:
        arr = np.asarray(t)
    except Exception as e:
        raise TypeError(f"t must be {what} or a 1-d sequence of them; could not convert: {e}") from None
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise TypeError(f"t must be {what} or a 1-d sequence of them; got dtype {arr.dtype}")
    scalar = arr.ndim == 0
    arr = np.atleast_1d(arr).astype(np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"t must be a scalar or a non-empty 1-d sequence of times; got shape {np.shape(t)}")
    bad = np.isnan(arr) | (arr < 0)
    if bad.any():
        raise ValueError(f"t must be {what}: training time cannot be negative or NaN; got "
                         f"{arr[bad][:5].tolist()}")
    if discrete:
        fin = arr[np.isfinite(arr)]
        if np.any(fin != np.round(fin)):
            raise ValueError(f"t must be whole numbers of steps with discrete=True; got "
                             f"{fin[fin != np.round(fin)][:5].tolist()}")
    return arr, scalar


# ----------------------------------------------------------------------------------------------------------
# the flow


class GradientFlow:
    """Mean and covariance of an infinitely wide network trained on the squared loss, at any time.

    One eigendecomposition of the train Gram (at construction) serves every time, test set and output;
    the definitions are in the module docstring (those of neural-tangents'
    ``predict.gradient_descent_mse_ensemble``).

    Parameters
    ----------
    k_train_train : array (N, N), or ``ntkfast.Kernels(nngp, ntk)`` as returned by ``ntkfast.gram(X)``.
        Train x train Gram, float32 or float64, numpy (or cupy: the work then stays on its GPU). With an
        array, it is the Gram of ``kind``; covariances of ``kind='ntk'`` also need the NNGP block, so pass
        a Kernels pair for them. Must be symmetric (to ``10 sqrt(eps)`` of its largest entry) and positive
        semi-definite (to its rounding level).
    y_train : array (N,) or (N, K), real, finite. Targets; the loss is normalized by ``s = N K``.
    kind : 'ntk' (default: every layer trained, Theta = NTK) or 'nngp' (only the readout trained).
    learning_rate : float > 0 (default 1.0). Absolute time is ``learning_rate * t``.
    diag_reg : float >= 0 (default 0.0). Adds ``diag_reg * tr(Theta)/N * I`` (or ``diag_reg * I`` with
        ``diag_reg_absolute_scale=True``) to the training kernel before the eigendecomposition.
    diag_reg_absolute_scale : bool (default False).
    discrete : bool (default False). False: gradient flow, t a real time. True: t counts gradient-descent
        steps of size ``learning_rate``; ``learning_rate`` must be below :attr:`max_learning_rate`.
    device : 'auto' (default), 'cpu', 'cuda' or 'cuda:N'; see the module docstring.

    Attributes
    ----------
    n : int, N. outputs : int, K. size : int, s = N K. kind, learning_rate, discrete : as given.
    eigenvalues : float64 (N,) eigenvalues of ``Theta + r I`` (ascending, negatives of rounding clipped to
        0), on the factorization's device.
    max_learning_rate : float, ``2 s / lam_max``: discrete steps are stable below it.
    diag_reg_absolute : float, the absolute regularizer added to the diagonal.
    xp : numpy or cupy, the array module of the factorization.

    Raises
    ------
    TypeError for non-numeric blocks or targets or non-number learning rates; ValueError for shapes,
    non-finite values, an asymmetric or indefinite train Gram, ``learning_rate <= 0``, ``diag_reg < 0``,
    and with ``discrete=True`` a learning rate at or above the stability limit.

    Examples
    --------
    >>> k = nf.gram(X_train, arch=arch, dtype='float64')           # Kernels(nngp, ntk), (N, N) each
    >>> kt = nf.gram(X_test, X_train, arch=arch, dtype='float64')  # (M, N) each
    >>> flow = GradientFlow(k, y_train)                            # kind='ntk'
    >>> f = flow.mean(np.logspace(-1, 4, 50), kt)                  # (50, M) or (50, M, K)
    >>> g = flow.predict(100.0, kt, nf.gram(X_test, arch=arch, dtype='float64'), compute_cov=True)
    """

    @D.on_device
    def __init__(self, k_train_train, y_train, *, kind="ntk", learning_rate=1.0, diag_reg=0.0,
                 diag_reg_absolute_scale=False, discrete=False, device="auto"):
        self.kind = check_choice(kind, "kind", KINDS)
        self.learning_rate = check_real(learning_rate, "learning_rate", 0.0, strict=True)
        diag_reg = check_real(diag_reg, "diag_reg", 0.0)
        self.discrete = bool(discrete)
        K, name = _pick(k_train_train, kind, "k_train_train")
        if K is None:
            raise TypeError("k_train_train must be an (N, N) Gram array or a Kernels(nngp, ntk) pair; got None")
        # the NNGP train block for covariances of kind 'ntk' (checked, and factorized, only when needed)
        self._nngp_xx = k_train_train.nngp if (kind == "ntk" and _has_pair(k_train_train)) else None
        self._name = name
        self.device = D.check(device)
        # checks with this argument's name before GramEigen (whose messages say 'K')
        Kc, eps = _block(K, name, (None, None), D.xp_of(K))
        if Kc.shape[0] != Kc.shape[1]:
            raise ValueError(f"{name} must be a square (N, N) train x train Gram; got shape {tuple(Kc.shape)}")
        xp0 = D.xp_of(Kc)
        Kc = _symmetric(Kc, eps, name, xp0)
        tr = float(xp0.trace(Kc))
        if not tr > 0:
            raise ValueError(f"{name} must have a positive trace (a Gram matrix has a non-negative diagonal and "
                             f"is not all zero); got trace {tr:.3g}")
        Y, self._one_d = _check_targets(y_train, Kc.shape[0], name="y_train")
        del Kc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IndefiniteGramWarning)
            eig = GramEigen(K, device=device)       # float64 factorization on the chosen device
        if eig.min_eigenvalue < -eig.tolerance:
            raise _indefinite(name, eig.min_eigenvalue, float(eig.w[-1]), eig.tolerance, eig.dtype, eig.n)
        self._eig = eig
        self.xp = eig.xp
        self.n = eig.n
        self.outputs = int(Y.shape[1])
        self.size = self.n * self.outputs
        self.diag_reg_absolute = diag_reg if diag_reg_absolute_scale else diag_reg * eig.scale
        self.eigenvalues = eig.w + self.diag_reg_absolute
        lam_max = float(self.eigenvalues[-1])
        self.max_learning_rate = 2.0 * self.size / lam_max if lam_max > 0 else float("inf")
        if self.discrete and self.learning_rate >= self.max_learning_rate:
            raise ValueError(
                f"learning_rate = {self.learning_rate:.6g} is at or above the stability limit of discrete "
                f"gradient-descent steps, 2 N K / lambda_max = 2 * {self.size} / {lam_max:.6g} = "
                f"{self.max_learning_rate:.6g} (the top eigenmode would be multiplied by "
                f"|1 - lr lambda_max / (N K)| = {abs(1 - self.learning_rate * lam_max / self.size):.4g} >= 1 per "
                f"step); use learning_rate < {self.max_learning_rate:.6g}, or discrete=False for gradient flow")
        # float64 rounding level of the eigendecomposition, N eps64 max(|K|, lam_max): the t = inf cut-off
        self._drop = eig.tolerance / eig.eps * float(np.finfo(np.float64).eps)
        self._c = eig.V.T @ self.xp.asarray(Y)          # (N, K): targets in the eigenbasis
        self._Kv = None                                 # V^T K_nngp V, built on first need

    # -- the per-eigenvalue factors -------------------------------------------------------------------------

    def _decay(self, t):
        """(e, 1 - e, g) as float64 (T, N) arrays of xp for times t (numpy (T,))."""
        xp = self.xp
        lam = self.eigenvalues[None, :]
        pos = lam > 0
        tt = xp.asarray(t)[:, None]
        inf = xp.isinf(tt)
        fin_t = xp.where(inf, 0.0, tt)
        if not self.discrete:
            x = xp.where(pos, (self.learning_rate / self.size) * lam, 0.0) * fin_t     # finite
            e = xp.where(inf, 0.0, xp.exp(-x))
            om = xp.where(inf, 1.0, -xp.expm1(-x))
        else:
            a = (self.learning_rate / self.size) * lam                              # in [0, 2)
            small = a < 1.0
            logb = xp.log1p(-xp.where(small, a, 0.0))                               # log(1 - a) where a < 1
            e_small = xp.exp(fin_t * logb)
            om_small = -xp.expm1(fin_t * logb)
            e_big = (1.0 - xp.where(small, 0.0, a)) ** fin_t                        # |1 - a| < 1 there
            e = xp.where(small, e_small, e_big)
            om = xp.where(small, om_small, 1.0 - e_big)
            e = xp.where(inf, 0.0, e)
            om = xp.where(inf, 1.0, om)
        # lam = 0: never fitted (e = 1) and g = eta t / s at finite t
        e = xp.where(pos, e, 1.0)
        om = xp.where(pos, om, 0.0)
        g = xp.where(pos, om / xp.where(pos, lam, 1.0), fin_t * (self.learning_rate / self.size))
        # t = inf: eigenvalues at the float64 rounding level of the factorization are dropped (pseudo-inverse)
        keep = lam > self._drop
        e = xp.where(inf, xp.where(keep, 0.0, 1.0), e)
        om = xp.where(inf, 1.0 - e, om)
        g = xp.where(inf, xp.where(keep, 1.0 / xp.where(keep, lam, 1.0), 0.0), g)
        return e, om, g

    def _times(self, t):
        tt, scalar = _times(t, self.discrete)
        if np.isinf(tt).any():
            lam = self.eigenvalues
            tol = self._drop
            wmin, wmax = float(lam[0]), float(lam[-1])
            dropped = int(self.xp.count_nonzero(lam <= tol))
            if dropped:
                warnings.warn(
                    f"t = inf: {dropped} eigenvalue(s) of {self._name} + {self.diag_reg_absolute:.3g} I are at or "
                    f"below the float64 rounding level {tol:.3g} of its factorization (largest {wmax:.3g}) and are "
                    f"dropped (pseudo-inverse); their modes are not fitted. Use diag_reg > 0 or a finite t",
                    IllConditionedWarning, stacklevel=3)
            elif wmax / wmin * self._eig.eps > 1:
                warnings.warn(
                    f"t = inf solves with {self._name} + {self.diag_reg_absolute:.3g} I, whose condition number "
                    f"{wmax / wmin:.3g} exceeds 1/eps = {1 / self._eig.eps:.3g} of this {self._eig.dtype} Gram: "
                    f"the Gram's rounding errors can change the result completely; use diag_reg > 0 or a finite t",
                    IllConditionedWarning, stacklevel=3)
        return tt, scalar

    # -- blocks -------------------------------------------------------------------------------------------

    def _test_block(self, k_test_train, which, name="k_test_train"):
        blk, nm = _pick(k_test_train, which, name)
        return _block(blk, nm, (None, self.n), self.xp)[0]

    def _nngp_train(self):
        """V^T K_nngp V (N, N), with K_nngp the NNGP train block (kind 'ntk'; checked PSD once)."""
        if self._Kv is not None:
            return self._Kv
        xp, V = self.xp, self._eig.V
        if self._nngp_xx is None:
            raise ValueError("covariances of kind='ntk' need the NNGP train x train block (the kernel at "
                             "initialization): pass k_train_train as ntkfast.Kernels(nngp, ntk), e.g. "
                             "ntkfast.gram(X) with kind=None; got only an NTK array")
        K, eps = _block(self._nngp_xx, "k_train_train.nngp", (self.n, self.n), xp)
        K = _symmetric(K, eps, "k_train_train.nngp", xp)
        Kv = V.T @ K @ V
        Kv = (Kv + Kv.T) * 0.5
        w = xp.linalg.eigvalsh(Kv)
        tol = self.n * eps * max(float(xp.abs(K).max()), float(w[-1]))
        if float(w[0]) < -tol:
            raise _indefinite("k_train_train.nngp", float(w[0]), float(w[-1]), tol, np.dtype(
                getattr(self._nngp_xx, "dtype", np.float64)), self.n)
        self._Kv = Kv
        return Kv

    def _shape(self, a, scalar, cov=False):
        """(T, rows, K) -> drop K for a 1-d y (not for covariances) and T for a scalar t; device of output."""
        if not cov and self._one_d:
            a = a[..., 0]
        if scalar:
            a = a[0]
        return self._eig._out(a)

    # -- public ------------------------------------------------------------------------------------------

    @D.on_device
    def dual_coef(self, t):
        """Dual coefficients ``alpha(t) = G_t Y`` such that the test mean is ``Theta_tx @ alpha(t)``.

        t : time >= 0 (or steps) or 1-d sequence (T,). Returns float64 (N,) / (N, K), with a leading (T,)
        axis for a sequence; numpy (cupy if the train Gram was cupy)."""
        tt, scalar = self._times(t)
        _, _, g = self._decay(tt)
        return self._shape(self.xp.matmul(self._eig.V, g[:, :, None] * self._c[None]), scalar)

    @D.on_device
    def mean(self, t, k_test_train=None):
        """Mean output of the trained ensemble at time(s) t.

        Parameters
        ----------
        t : float >= 0 (or int steps with ``discrete=True``; ``inf`` = trained to convergence) or a 1-d
            sequence (T,) of them.
        k_test_train : array (M, N) of the training kernel, or Kernels(nngp, ntk) (its ``kind`` block is
            used); None (default) gives the outputs on the training set.

        Returns
        -------
        float64 (M,) or (M, K) (as y_train was 1-d or 2-d; M = N on the train set), with a leading (T,)
        axis when t is a sequence.
        """
        tt, scalar = self._times(t)
        e, om, g = self._decay(tt)
        xp, V = self.xp, self._eig.V
        if k_test_train is None:
            out = xp.matmul(V, om[:, :, None] * self._c[None])
        else:
            A = self._test_block(k_test_train, self.kind) @ V
            out = xp.matmul(A, g[:, :, None] * self._c[None])
        return self._shape(out, scalar)

    @D.on_device
    def covariance(self, t, k_test_train=None, k_test_test=None):
        """Covariance of the outputs over initializations at time(s) t (shared by the K output columns).

        Parameters
        ----------
        t : as in :meth:`mean`.
        k_test_train : None (default: the training set) or the (M, N) test x train blocks: an array of the
            NNGP for ``kind='nngp'``; ``Kernels(nngp, ntk)`` for ``kind='ntk'``.
        k_test_test : the (M, M) NNGP test x test block (array, or Kernels whose ``nngp`` is used); needed
            with ``k_test_train``.

        Returns
        -------
        float64 (M, M), or (T, M, M) when t is a sequence.
        """
        tt, scalar = self._times(t)
        return self._shape(self._cov(tt, k_test_train, k_test_test, diag_only=False), scalar, cov=True)

    def _cov(self, tt, k_test_train, k_test_test, *, diag_only):
        xp, V = self.xp, self._eig.V
        e, om, g = self._decay(tt)
        if k_test_train is None:
            if k_test_test is not None:
                raise ValueError("k_test_test was given without k_test_train: pass both for a test set, or "
                                 "neither for the training set")
            if self.kind == "nngp":
                d = self.eigenvalues[None, :] * e * e                              # (T, N)
                if diag_only:
                    return (V * V) @ d.T                                            # (N, T)
                return xp.matmul(V[None] * d[:, None, :], V.T[None])
            Kv = self._nngp_train()
            if diag_only:
                W = xp.matmul(V[None] * e[:, None, :], Kv[None])                    # (T, N, N): V diag(e) Kv
                return xp.sum(W * (V[None] * e[:, None, :]), axis=2).T              # (N, T)
            Ee = V[None] * e[:, None, :]                                            # V diag(e)
            return xp.matmul(xp.matmul(Ee, Kv[None]), xp.swapaxes(Ee, 1, 2))
        if k_test_test is None:
            raise ValueError("a test-set covariance needs k_test_test, the (M, M) NNGP test x test block (or "
                             "its diagonal (M,) for loss curves); got None")
        Kxt_n = self._test_block(k_test_train, "nngp")                              # (M, N) NNGP
        m = Kxt_n.shape[0]
        ktt, ktt_name = _pick(k_test_test, "nngp", "k_test_test")
        if diag_only and np.ndim(ktt) == 1:
            if np.shape(ktt) != (m,):
                raise ValueError(f"{ktt_name} must have shape ({m}, {m}) or be its diagonal ({m},); got shape "
                                 f"{tuple(np.shape(ktt))}")
            ktt_d = _block(ktt.reshape(m, 1) if hasattr(ktt, "reshape") else np.reshape(ktt, (m, 1)),
                           ktt_name, (m, 1), xp)[0][:, 0]
        else:
            ktt = _block(ktt, ktt_name, (m, m), xp)[0]
            ktt_d = xp.diag(ktt)
        if self.kind == "nngp":
            _, _, g2 = self._decay(2.0 * tt)                                        # (1 - e^2) / lam
            A = Kxt_n @ V                                                           # (M, N)
            if diag_only:
                return ktt_d[:, None] - (A * A) @ g2.T                              # (M, T)
            return ktt[None] - xp.matmul(A[None] * g2[:, None, :], A.T[None])
        Kv = self._nngp_train()
        B = V.T @ self._test_block(k_test_train, "ntk").T                          # (N, M)  V^T Theta_xt
        C = V.T @ Kxt_n.T                                                           # (N, M)  V^T K_xt
        gB = g[:, :, None] * B[None]                                                # (T, N, M)
        KgB = xp.matmul(Kv[None], gB)
        if diag_only:
            return (ktt_d[None] + xp.sum(gB * KgB, axis=1) - 2.0 * xp.sum(gB * C[None], axis=1)).T
        gBt = xp.swapaxes(gB, 1, 2)
        cross = xp.matmul(gBt, C[None])                                             # P^T K_xt
        return ktt[None] + xp.matmul(gBt, KgB) - cross - xp.swapaxes(cross, 1, 2)

    @D.on_device
    def predict(self, t, k_test_train=None, k_test_test=None, *, compute_cov=False):
        """Mean, or :class:`Gaussian` (mean, covariance) with ``compute_cov=True``, at time(s) t.

        Arguments as in :meth:`mean` and :meth:`covariance` (for a test-set covariance of kind 'ntk',
        ``k_test_train`` must be Kernels(nngp, ntk) and ``k_test_test`` the NNGP test x test block)."""
        mean = self.mean(t, k_test_train)
        if not compute_cov:
            return mean
        return Gaussian(mean, self.covariance(t, k_test_train, k_test_test))

    @D.on_device
    def loss_curves(self, t, k_test_train=None, y_test=None, *, k_test_test=None, ensemble=False):
        """Train (and test) loss ``||f - Y||_F^2 / (2 M K)`` of the mean prediction over times t.

        Parameters
        ----------
        t : time(s) as in :meth:`mean` (a scalar gives curves of length 1).
        k_test_train : (M, N) test x train block(s) (as in :meth:`mean`, or :meth:`covariance` with
            ``ensemble=True``); y_test : (M,) or (M, K) test targets. Both or neither.
        k_test_test : with ``ensemble=True`` and a test set, the NNGP test x test block (M, M) or its
            diagonal (M,).
        ensemble : bool (default False). True adds half the mean output variance: the expected loss of one
            network of the ensemble rather than the loss of the ensemble mean.

        Returns
        -------
        :class:`LossCurves` (t (T,), train (T,), test (T,) or None), float64 numpy.

        The train loss costs O(N K) per time: with ``c = V^T Y`` it is ``sum_i e_i^2 |c_i|^2 / (2 N K)``.
        """
        tt, _ = self._times(t)
        xp = self.xp
        if (k_test_train is None) != (y_test is None):
            raise ValueError("k_test_train and y_test go together: pass both for a test loss, or neither; got "
                             + ("only k_test_train" if y_test is None else "only y_test"))
        e, _, _ = self._decay(tt)
        c2 = xp.sum(self._c * self._c, axis=1)                                       # (N,)
        train = (e * e) @ c2 / (2.0 * self.size)
        if ensemble:
            train = train + xp.mean(self._cov(tt, None, None, diag_only=True), axis=0) / 2.0
        test = None
        if k_test_train is not None:
            mean = self.mean(tt, k_test_train)                                       # (T, M[, K])
            mean = self.xp.asarray(mean)
            m = mean.shape[1]
            if np.ndim(y_test) not in (1, 2) or np.shape(y_test)[0] != m:
                raise ValueError(f"y_test must have shape ({m},) or ({m}, {self.outputs}), one row per row of "
                                 f"k_test_train; got shape {tuple(np.shape(y_test))}")
            Yt, _ = _check_targets(y_test, m, name="y_test")
            if Yt.shape[1] != self.outputs:
                raise ValueError(f"y_test must have {self.outputs} output column(s) like y_train; got shape "
                                 f"{np.shape(y_test)}")
            if self._one_d:
                mean = mean[..., None]
            r = mean - xp.asarray(Yt)[None]
            test = xp.mean(r * r, axis=(1, 2)) / 2.0
            if ensemble:
                test = test + xp.mean(self._cov(tt, k_test_train, k_test_test, diag_only=True), axis=0) / 2.0
        tonp = (lambda a: a.get()) if xp is not np else np.asarray
        return LossCurves(tt, tonp(train), None if test is None else tonp(test))


# ----------------------------------------------------------------------------------------------------------
# GP inference


def gp_inference(k_train_train, y_train, k_test_train=None, k_test_test=None, *, kind="nngp", diag_reg=0.0,
                 diag_reg_absolute_scale=False, device="auto"):
    """Posterior of Gaussian-process inference with the NNGP (or NTK) on Gram blocks.

    The definitions of neural-tangents' ``predict.gp_inference``: with ``H = K_xx + r I`` (``r`` =
    ``diag_reg``, relative to ``tr(K_xx)/N`` unless ``diag_reg_absolute_scale``),

    - ``kind='nngp'``: the exact posterior of an infinitely wide Bayesian network with observation noise
      variance r: mean ``K_tx H^-1 Y``, covariance ``K_tt - K_tx H^-1 K_xt`` (NNGP blocks);
    - ``kind='ntk'``: the infinite ensemble trained to convergence (``GradientFlow(kind='ntk').predict(inf)``):
      mean ``Theta_tx H^-1 Y`` with ``H = Theta_xx + r I``, covariance as in the module docstring with
      ``G = H^-1`` (needs NNGP and NTK blocks);
    - ``kind='ntkgp'``: the GP with the NTK as prior covariance: ``Theta_tt - Theta_tx H^-1 Theta_xt``.

    Parameters
    ----------
    k_train_train : (N, N) array of the kernel, or Kernels(nngp, ntk) (needed for kind='ntk' covariances).
    y_train : (N,) or (N, K).
    k_test_train : (M, N) block(s) or None (default): None gives the training set (mean Y for r > 0, or Y
        projected on the Gram's range for r = 0; covariance 0).
    k_test_test : (M, M) block(s) or None (default): the covariance is computed only when given (with
        k_test_train; on the training set pass ``k_test_test=True`` to get the zero covariance). The NNGP
        block is used for 'nngp' and 'ntk', the NTK block for 'ntkgp'.
    kind : 'nngp' (default), 'ntk' or 'ntkgp'.
    diag_reg : float >= 0 (default 0.0); diag_reg_absolute_scale : bool (default False).
    device : 'auto' (default), 'cpu', 'cuda' or 'cuda:N'.

    Returns
    -------
    :class:`Gaussian`: mean float64 (M,) or (M, K); covariance float64 (M, M) or None. numpy arrays (cupy
    when the train Gram was cupy).

    An eigenvalue of ``H`` at the float64 rounding level of the factorization (only possible with a tiny
    ``diag_reg``) is dropped (pseudo-inverse); that, or a condition number beyond 1/eps of the Gram's dtype,
    gives an :class:`ntkfast.krr.IllConditionedWarning`. To reuse
    the factorization for several test sets use ``GradientFlow(...).predict(numpy.inf, ...)``.
    """
    check_choice(kind, "kind", ("nngp", "ntk", "ntkgp"))
    if kind == "ntkgp":
        # the NNGP formulas with the NTK as the prior covariance
        blocks = [_pick(k, "ntk", nm)[0] for k, nm in ((k_train_train, "k_train_train"),
                                                       (k_test_train, "k_test_train"))]
        ktt = None if k_test_test is None or k_test_test is True else _pick(k_test_test, "ntk", "k_test_test")[0]
        k_train_train, k_test_train = blocks
        kind_flow = "nngp"
    else:
        ktt = None if k_test_test is None or k_test_test is True else k_test_test
        kind_flow = kind
    flow = GradientFlow(k_train_train, y_train, kind=kind_flow, diag_reg=diag_reg,
                        diag_reg_absolute_scale=diag_reg_absolute_scale, device=device)
    mean = flow.mean(np.inf, k_test_train)
    if k_test_test is None:
        return Gaussian(mean, None)
    if k_test_train is None:
        return Gaussian(mean, flow.covariance(np.inf))
    return Gaussian(mean, flow.covariance(np.inf, k_test_train, ktt))
