"""Quadratic Taylor models of wide two-layer networks: the network, its Taylor terms, the one training loop.

Bai & Lee ("Beyond Linearization: On Quadratic and Higher-Order Approximation of Wide Neural Networks",
ICLR 2020) and Bai, Chen & Lee ("Towards Understanding Hierarchical Learning: Benefits of Neural
Representations", NeurIPS 2020). Everything here is float64 numpy by default; with ``device='cuda'`` (or
'auto' and a usable GPU) the arrays live on a GPU through cupy (imported only then).

The network
-----------
Two layers of even width m, inputs x in R^d (rows of X, shape (N, d)):

    f_W(x) = (1/sqrt m) sum_r a_r sigma((w0_r + w_r)^T x),

output weights a_r in {-1, +1} (fixed), first-layer weights w0_r ~ N(0, w0_scale^2 I_d / d) (fixed) and the
trainable movement W = (w_r) (shape (m, d)), initialised near 0. The initialisation is *symmetric*: neuron
r + m/2 has the same w0 as neuron r and the opposite a, so f_{W0}(x) = 0 exactly. The k-th Taylor term
around W0 is

    f^(k)(x) = (1/sqrt m) sum_r a_r sigma^(k)(w0_r^T x) / k! (w_r^T x)^k,

so f_W = f^(1) + f^(2) + f^(3) + ... (the network minus its Taylor polynomial of order k is O(|W|^(k+1))).

Models (``MODELS``), all trained by the one loop :func:`gradient_descent` on the half mean squared error
L(W) = 1/(2N) sum_i (f(x_i) - y_i)^2:

- ``'linearized'``: f^(1), the finite-width NTK model (linear in W).
- ``'quadratic'``: f^(2) alone. W = 0 is a saddle point (its gradient vanishes there), so training starts
  from a small random W (``init_scale``) or uses noise.
- ``'full'``: the network f_W itself.
- ``'randomized'``: the network trained on E_S[L(W0 + S W)] + R(W), S = diag(s_1..s_m) with a fresh draw
  of independent signs s_r in {-1, +1} at every step (stochastic gradients of the expectation; by default
  each draw S is used with its mirror -S, an antithetic pair, see :class:`Objective`), and the regularizer
  of Bai & Lee

      R(W) = reg * (sum_r ||w_r||_2^4)^2 = reg * ||W||_{2,4}^8,   dR/dw_r = 8 reg (sum_s ||w_s||^4) ||w_r||^2 w_r.

  Flipping the sign of w_r flips the odd Taylor terms of neuron r and keeps the even ones, so the
  randomization removes f^(1) (and f^(3), ...) in expectation and keeps f^(2). Its predictor is the exact
  sign average E_S f_{W0+SW}(x) = (1/sqrt m) sum_r a_r [sigma((w0_r + w_r)^T x) + sigma((w0_r - w_r)^T x)]/2
  = f^(2) + f^(4) + ... (exact, since each neuron depends on its own sign only).
- ``'hierarchical'``: a fixed random representation h(x) (:class:`Representation`) followed by a trainable
  quadratic Taylor layer on h(x) (the model 'quadratic' with inputs h(x)).
- ``'ntk'``: the infinite-width NTK of the fully-connected ReLU net ``presets.fc(ntk_depth)`` by kernel ridge
  regression (``ntkfast.gram``, float64; ridge chosen by leave-one-out over a grid).

Activations (``ACTIVATIONS``), with analytic derivatives up to order 3: 'tanh', 'softplus' (log(1 + e^z)),
'quadratic' (z^2/2), 'cubic' (z^3/6) and 'relu' (only for 'linearized' and 'full': sigma'' = 0 almost
everywhere, so its quadratic model is identically 0 and is refused). Parity matters: tanh has an odd
sigma'', so with W0 symmetric in distribution f^(2) is an odd function of x and cannot fit even targets;
softplus has an even sigma'' (sigmoid'), so its f^(2) is even in x and cannot fit odd targets.
"""
from __future__ import annotations

import math
import warnings
from collections import namedtuple

import numpy as np

from ... import device as D
from ...validation import check_choice, check_int, check_real, check_seed

__all__ = ["MODELS", "TRAINED", "ACTIVATIONS", "activation", "sphere", "PolynomialTarget", "TwoLayer",
           "Representation", "regularizer", "Objective", "History", "gradient_descent", "TaylorModel", "ntk_ridge"]

MODELS = ("linearized", "quadratic", "full", "randomized", "hierarchical", "ntk")
TRAINED = MODELS[:5]
ACTIVATIONS = ("tanh", "softplus", "quadratic", "cubic", "relu")


# ----------------------------------------------------------------------------------------------------------
# argument checks


def _matrix(name, X, d=None, xp=np):
    """X as a finite float64 (N, d) array of module xp; ValueError/TypeError naming ``name``."""
    if not D.is_cupy(X):
        try:
            X = np.asarray(X)
        except Exception as e:  # ragged lists and the like
            raise ValueError(f"{name} must be a 2-D numeric array (N, d); got an object numpy cannot convert "
                             f"({e})") from None
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers (float or int dtype); got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must have shape (N, d); got shape {tuple(X.shape)}")
    if d is not None and X.shape[1] != d:
        raise ValueError(f"{name} must have shape (N, {d}) (d = {d} as in training); got shape {tuple(X.shape)}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column; got shape {tuple(X.shape)}")
    X = xp.asarray(X, dtype=xp.float64)
    if not bool(xp.isfinite(X).all()):
        bad = int((~xp.isfinite(X)).sum())
        raise ValueError(f"{name} must be finite; got {bad} NaN/inf entries of {X.size}")
    return X


def _vector(name, y, n, xp=np):
    if not D.is_cupy(y):
        y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers (float or int dtype); got dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one target per row of X); got shape {tuple(y.shape)}")
    y = xp.asarray(y, dtype=xp.float64)
    if not bool(xp.isfinite(y).all()):
        raise ValueError(f"{name} must be finite; got {int((~xp.isfinite(y)).sum())} NaN/inf entries")
    return y


# ----------------------------------------------------------------------------------------------------------
# activations


def activation(name, z, k=0):
    """k-th derivative (k = 0..3) of the activation ``name`` at z (any float array, numpy or cupy; same shape).

    tanh: t = tanh z, sigma' = 1 - t^2, sigma'' = -2 t (1 - t^2), sigma''' = -2 (1 - t^2)(1 - 3 t^2).
    softplus: log(1 + e^z); with u = tanh(z/2): sigma' = (1 + u)/2 (the logistic function),
    sigma'' = (1 - u^2)/4, sigma''' = -u (1 - u^2)/4.
    quadratic: z^2/2, z, 1, 0.  cubic: z^3/6, z^2/2, z, 1.  relu: max(z, 0), 1[z > 0], 0, 0.
    """
    check_choice(name, "activation", ACTIVATIONS)
    if isinstance(k, bool) or k not in (0, 1, 2, 3):
        raise ValueError(f"k (derivative order) must be 0, 1, 2 or 3; got {k!r}")
    xp = D.xp_of(z)
    if name == "tanh":
        t = xp.tanh(z)
        if k == 0:
            return t
        s = 1.0 - t * t
        return (s, -2.0 * t * s, -2.0 * s * (1.0 - 3.0 * t * t))[k - 1]
    if name == "softplus":
        if k == 0:
            return xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))
        u = xp.tanh(0.5 * z)
        return ((1.0 + u) * 0.5, (1.0 - u * u) * 0.25, -u * (1.0 - u * u) * 0.25)[k - 1]
    if name == "quadratic":
        return (0.5 * z * z, z, xp.ones_like(z), xp.zeros_like(z))[k]
    if name == "cubic":
        return (z * z * z / 6.0, 0.5 * z * z, z, xp.ones_like(z))[k]
    # relu
    return (xp.maximum(z, 0.0), (z > 0).astype(z.dtype), xp.zeros_like(z), xp.zeros_like(z))[k]


# ----------------------------------------------------------------------------------------------------------
# data


def sphere(n, d, seed=None):
    """n points uniform on the sphere of radius sqrt(d) in R^d: float64 numpy (n, d). With this radius a
    unit vector beta gives E (beta^T x)^2 = 1 and E x x^T = I."""
    n, d = check_int(n, "n", 1), check_int(d, "d", 1)
    rng = np.random.default_rng(check_seed(seed))
    g = rng.standard_normal((n, d))
    return g * (math.sqrt(d) / np.linalg.norm(g, axis=1, keepdims=True))


class PolynomialTarget:
    """f*(x) = scale * sum_{s<=r} alpha_s (beta_s^T x)^p with orthonormal beta_s (random) and alpha_s = 1.

    ``scale`` makes Var f*(x) = 1 for x uniform on the sphere of radius sqrt(d) (estimated once on
    ``n_mc`` = 200,000 sphere points with a fixed seed; relative error of the variance about 0.5 %). The
    mean is not removed (for p = 2 it is scale * r). Call on X (N, d) -> float64 (N,).
    """

    def __init__(self, d, r=1, p=2, *, seed=None, n_mc=200_000):
        self.d, self.r, self.p = check_int(d, "d", 1), check_int(r, "r", 1), check_int(p, "p", 1)
        if self.r > self.d:
            raise ValueError(f"r must be <= d = {self.d} (orthonormal directions); got {r!r}")
        rng = np.random.default_rng(check_seed(seed))
        q, _ = np.linalg.qr(rng.standard_normal((self.d, self.r)))
        self.betas = q.T.copy()                      # (r, d), orthonormal rows
        self.alphas = np.ones(self.r)
        self.scale = 1.0
        ref = sphere(check_int(n_mc, "n_mc", 1), self.d, seed=12345)
        raw = self(ref)
        self.scale = 1.0 / float(raw.std())
        self.mean = float(raw.mean()) * self.scale

    def __call__(self, X):
        X = _matrix("X", X, self.d)
        return self.scale * ((X @ self.betas.T) ** self.p) @ self.alphas

    def __repr__(self):
        return f"PolynomialTarget(d={self.d}, r={self.r}, p={self.p})"


# ----------------------------------------------------------------------------------------------------------
# the network and its Taylor terms


class TwoLayer:
    """The two-layer net f_W(x) = (1/sqrt m) sum_r a_r sigma((w0_r + w_r)^T x) with symmetric initialisation.

    Parameters
    ----------
    d : input dimension. width : m, even (default 400): m/2 random (w0, a) pairs, neuron r + m/2 a copy of
    neuron r with the opposite a. activation : one of ``ACTIVATIONS`` (default 'softplus').
    w0_scale : w0_r ~ N(0, w0_scale^2 I_d / d) (default 1: w0_r^T x ~ N(0, 1) on the sphere of radius sqrt d).
    seed : int, numpy Generator or None. device : 'cpu' (numpy, default), 'cuda' or 'cuda:N' (cupy) or 'auto'.

    Attributes: W0 float64 (m, d), a float64 (m,), both of the array module ``xp``; m, d, activation.
    Every method takes X (N, d) and W (m, d) arrays of that module and returns float64 (N,).
    """

    @D.on_device
    def __init__(self, d, width=400, activation="softplus", *, w0_scale=1.0, seed=None, device="cpu"):
        self.d = check_int(d, "d", 1)
        self.m = check_int(width, "width", 2)
        if self.m % 2:
            raise ValueError(f"width must be even (neurons come in symmetric pairs); got {width!r}")
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        self.w0_scale = check_real(w0_scale, "w0_scale", 0.0, strict=True)
        self.xp = D.array_module(device)
        rng = np.random.default_rng(check_seed(seed))
        half = self.m // 2
        W0 = rng.standard_normal((half, self.d)) * (self.w0_scale / math.sqrt(self.d))
        a = rng.choice(np.array([-1.0, 1.0]), size=half)
        self.W0 = self.xp.asarray(np.concatenate([W0, W0]))
        self.a = self.xp.asarray(np.concatenate([a, -a]))
        self._c = 1.0 / math.sqrt(self.m)
        self._h = half

    def readout(self, S):
        """(1/sqrt m) S @ a for S (N, m), summed pair by pair as (S[:, r] - S[:, r + m/2]) a_r so that
        identical halves (W = 0) cancel exactly in floating point."""
        h = self._h
        return (S[:, :h] - S[:, h:]) @ self.a[:h] * self._c

    def sigma(self, z, k=0):
        """k-th derivative of this net's activation at z."""
        return activation(self.activation, z, k)

    def check_W(self, W, name="W"):
        W = _matrix(name, W, xp=self.xp)
        if W.shape != (self.m, self.d):
            raise ValueError(f"{name} must have shape (m, d) = ({self.m}, {self.d}); got {tuple(W.shape)}")
        return W

    def _inputs(self, X, W):
        return _matrix("X", X, self.d, self.xp), self.check_W(W)

    def taylor_term(self, X, W, k):
        """f^(k)(x) = (1/sqrt m) sum_r a_r sigma^(k)(w0_r^T x)/k! (w_r^T x)^k for k = 0..3 -> (N,)."""
        X, W = self._inputs(X, W)
        k = check_int(k, "k", 0)
        if k > 3:
            raise ValueError(f"k must be 0, 1, 2 or 3 (derivatives are analytic up to order 3); got {k}")
        U = X @ W.T
        return (self.sigma(X @ self.W0.T, k) * U ** k / math.factorial(k)) @ self.a * self._c

    def network(self, X, W):
        """f_W(x) (N,); exactly 0 at W = 0 (symmetric initialisation, pairs summed first)."""
        X, W = self._inputs(X, W)
        return self.readout(self.sigma(X @ (self.W0 + W).T))

    def sign_average(self, X, W):
        """E_S f_{W0 + S W}(x) over independent signs s_r = +-1, exactly: (1/sqrt m) sum_r a_r
        [sigma((w0_r + w_r)^T x) + sigma((w0_r - w_r)^T x)] / 2 = f^(2) + f^(4) + ... -> (N,)."""
        X, W = self._inputs(X, W)
        Z0, U = X @ self.W0.T, X @ W.T
        return self.readout(0.5 * (self.sigma(Z0 + U) + self.sigma(Z0 - U)))

    def output(self, model, X, W):
        """Prediction of a trained model: 'linearized' f^(1), 'quadratic'/'hierarchical' f^(2), 'full' f_W,
        'randomized' the sign average."""
        check_choice(model, "model", TRAINED)
        if model == "linearized":
            return self.taylor_term(X, W, 1)
        if model in ("quadratic", "hierarchical"):
            return self.taylor_term(X, W, 2)
        if model == "full":
            return self.network(X, W)
        return self.sign_average(X, W)


def regularizer(W, reg):
    """R(W) = reg * (sum_r ||w_r||_2^4)^2 and its gradient 8 reg (sum_s ||w_s||^4) ||w_r||^2 w_r.

    W : (m, d) float array; reg >= 0. Returns (float, array like W)."""
    reg = check_real(reg, "reg", 0.0)
    sq = (W * W).sum(axis=1)                 # ||w_r||^2
    s4 = float((sq * sq).sum())
    return reg * s4 * s4, (8.0 * reg * s4) * sq[:, None] * W


class Objective:
    """Training objective of one model on a fixed data set: L(W) = 1/(2N) sum_i (f(x_i) - y_i)^2 (+ R(W)).

    ``net`` : TwoLayer; ``model`` : one of 'linearized', 'quadratic', 'full', 'randomized' (for
    'hierarchical' pass the represented inputs h(X) and model 'quadratic'); X (N, d), y (N,) arrays of
    ``net.xp``; reg : R's coefficient (added for every model, 0 by default); rng : numpy Generator for the
    signs of 'randomized'; antithetic : for 'randomized', evaluate each step's fresh draw S together with -S
    and average the two losses (default True). The pair is still an unbiased estimate of E_S L, and it
    removes exactly the term linear in the odd part (the f^(1) cross term (f^(2) - y) f^(1)_S, whose
    gradient is the largest source of sign noise); False uses the single draw S.

    :meth:`resample` draws the step's random signs (no-op for other models); :meth:`value` and
    :meth:`value_and_grad` use the current draw, so a line search compares like with like.
    """

    def __init__(self, net, model, X, y, *, reg=0.0, rng=None, antithetic=True):
        self.net, self.model = net, check_choice(model, "model", TRAINED[:4])
        self.antithetic = bool(antithetic)
        if net.activation == "relu" and model in ("quadratic", "randomized"):
            raise ValueError(f"activation 'relu' has sigma'' = 0 almost everywhere, so model {model!r} (driven by "
                             f"f^(2)) is identically 0 or untrainable; use 'softplus', 'tanh', 'quadratic' or "
                             f"'cubic'")
        xp = net.xp
        self.X = _matrix("X", X, net.d, xp)
        self.y = _vector("y", y, self.X.shape[0], xp)
        self.reg = check_real(reg, "reg", 0.0)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.Z0 = self.X @ net.W0.T
        self.n = self.X.shape[0]
        if model == "linearized":
            self.D = net.sigma(self.Z0, 1) * net.a * net._c
        elif model == "quadratic":
            self.D = net.sigma(self.Z0, 2) * net.a * net._c
        self.signs = xp.ones(net.m)

    def resample(self):
        if self.model == "randomized":
            self.signs = self.net.xp.asarray(self.rng.choice(np.array([-1.0, 1.0]), size=self.net.m))

    def _forward(self, W, signs=None):
        net = self.net
        U = self.X @ W.T
        if self.model == "linearized":
            return (self.D * U).sum(axis=1), U
        if self.model == "quadratic":
            return 0.5 * (self.D * U * U).sum(axis=1), U
        if signs is not None:
            U = U * signs
        return net.readout(net.sigma(self.Z0 + U)), U

    def _draws(self):
        if self.model != "randomized":
            return (None,)
        return (self.signs, -self.signs) if self.antithetic else (self.signs,)

    def value(self, W):
        draws = self._draws()
        L = 0.0
        for s in draws:
            f, _ = self._forward(W, s)
            r = f - self.y
            L += 0.5 * float(r @ r) / self.n / len(draws)
        if self.reg:
            L += regularizer(W, self.reg)[0]
        return L

    def value_and_grad(self, W):
        net = self.net
        draws = self._draws()
        L, G = 0.0, 0.0
        for s in draws:
            f, U = self._forward(W, s)
            r = (f - self.y) / self.n
            L += 0.5 * float(r @ r) * self.n / len(draws)
            if self.model == "linearized":
                g = (r[:, None] * self.D).T @ self.X
            elif self.model == "quadratic":
                g = (r[:, None] * self.D * U).T @ self.X
            else:
                g = ((r[:, None] * net.sigma(self.Z0 + U, 1)) * (net.a * net._c)).T @ self.X
                if s is not None:
                    g = g * s[:, None]
            G = G + g / len(draws)
        if self.reg:
            R, gR = regularizer(W, self.reg)
            L, G = L + R, G + gR
        return L, G


History = namedtuple("History", ["loss", "lr", "steps", "stopped"])
History.__doc__ = """Result of :func:`gradient_descent`: loss float64 (steps,) objective before each step; lr float64
(steps,) accepted step sizes; steps int; stopped str ('steps', 'tol' or 'line search')."""


def gradient_descent(objective, W, *, steps=2000, lr="auto", noise=0.0, tol=1e-10, seed=None, callback=None):
    """The one training loop: (noisy) gradient descent on ``objective`` from W.

    Each step: ``objective.resample()`` (the random signs of 'randomized'), gradient g at W, then
    W <- W - t g + sqrt(2 t noise) xi with xi ~ N(0, I) (Langevin noise at temperature ``noise``; 0 = plain
    GD). ``lr`` = a float t > 0 (fixed step) or 'auto' (default): backtracking on the same draw, t halved
    until the Armijo condition L(W - t g) <= L(W) - 1e-4 t |g|^2 holds, then t grown by 1.5 for the next step
    (the models' curvatures differ by orders of magnitude, e.g. sqrt(m) between f^(1) and f^(2)).
    Stops after ``steps`` steps, when L <= ``tol``, or when no step of size > 1e-14 t decreases L.

    objective : :class:`Objective` (or anything with resample(), value(W), value_and_grad(W)).
    W : initial (m, d) array (not modified). Returns (W, History).
    """
    steps = check_int(steps, "steps", 0)
    auto = isinstance(lr, str)
    if auto:
        check_choice(lr, "lr", ("auto",))
        t = 1.0
    else:
        t = check_real(lr, "lr", 0.0, strict=True)
    noise = check_real(noise, "noise", 0.0)
    tol = check_real(tol, "tol", 0.0)
    rng = np.random.default_rng(check_seed(seed))
    xp = D.xp_of(W)
    W = W.copy()
    losses, lrs, stopped = [], [], "steps"
    for it in range(steps):
        objective.resample()
        L, G = objective.value_and_grad(W)
        if not math.isfinite(L):
            raise RuntimeError(f"the objective became non-finite ({L}) at step {it}; use a smaller lr")
        losses.append(L)
        if L <= tol:
            stopped = "tol"
            break
        if auto:
            g2 = float((G * G).sum())
            t0 = t
            while True:
                Wn = W - t * G
                Ln = objective.value(Wn)
                if math.isfinite(Ln) and Ln <= L - 1e-4 * t * g2:
                    break
                t *= 0.5
                if t < 1e-14 * t0 or t < 1e-300:
                    stopped = "line search"
                    break
            if stopped == "line search":
                break
            W = Wn
            lrs.append(t)
            step_t = t
            t = min(t * 1.5, 1e12)
        else:
            W = W - t * G
            lrs.append(t)
            step_t = t
        if noise:
            W = W + math.sqrt(2.0 * step_t * noise) * xp.asarray(rng.standard_normal(W.shape))
        if callback is not None:
            callback(it, L, W)
    return W, History(np.asarray(losses), np.asarray(lrs), len(losses), stopped)


# ----------------------------------------------------------------------------------------------------------
# the hierarchical representation


class Representation:
    """Fixed random representation h(x) = Sigma^(-1/2) [x ; (v_j^T x)^2 - 1 for j < D2] plus a constant 1.

    x is meant to lie on the sphere of radius sqrt(d); the v_j are uniform unit vectors, so (v_j^T x)^2 - 1
    are centered degree-2 random features. Their exact covariance on that sphere is
    E[x x^T] = I, E[x ((v^T x)^2 - 1)] = 0, and
    E[((v_i^T x)^2 - 1)((v_j^T x)^2 - 1)] = d (1 + 2 (v_i^T v_j)^2)/(d + 2) - 1,
    so whitening by that analytic covariance makes h exactly isotropic for this input distribution (and
    close to it for inputs near the sphere). With D2 = 0, h(x) = [1, x].

    d : input dimension; features : D2 >= 0 (the study uses :func:`hierarchical_features`);
    seed; device. ``dim`` = 1 + d + D2. Call on X (N, d) -> (N, dim) float64 arrays of ``xp``.
    """

    @D.on_device
    def __init__(self, d, features=0, *, seed=None, device="cpu"):
        self.d = check_int(d, "d", 1)
        self.features = check_int(features, "features", 0)
        self.xp = D.array_module(device)
        rng = np.random.default_rng(check_seed(seed))
        V = rng.standard_normal((self.features, self.d))
        V /= np.linalg.norm(V, axis=1, keepdims=True) if self.features else 1.0
        self.dim = 1 + self.d + self.features
        if self.features:
            c2 = (V @ V.T) ** 2
            C = self.d * (1.0 + 2.0 * c2) / (self.d + 2.0) - 1.0
            w, Q = np.linalg.eigh(C)
            if w[0] <= 1e-10 * w[-1]:
                raise ValueError(f"features = {self.features} degree-2 features are linearly dependent for "
                                 f"d = {self.d} (at most d(d+1)/2 - 1 = {self.d * (self.d + 1) // 2 - 1})")
            self.whiten = self.xp.asarray((Q / np.sqrt(w)) @ Q.T)
        else:
            self.whiten = None
        self.V = self.xp.asarray(V)

    def __call__(self, X):
        xp = self.xp
        X = _matrix("X", X, self.d, xp)
        parts = [xp.ones((X.shape[0], 1)), X]
        if self.features:
            parts.append(((X @ self.V.T) ** 2 - 1.0) @ self.whiten)
        return xp.concatenate(parts, axis=1)


# ----------------------------------------------------------------------------------------------------------
# the infinite-width NTK


def ntk_ridge(X, y, X_test, *, depth=2, ridges=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0), device="cpu"):
    """Infinite-width NTK regression: kernel ridge regression with the NTK of ``presets.fc(depth)``.

    X (N, d), y (N,), X_test (M, d). Gram matrices by ``ntkfast.gram(..., kind='ntk', dtype='float64')``;
    the ridge (relative to tr(K)/N, as in ``ntkfast.krr``) is chosen by closed-form leave-one-out error over
    ``ridges``. Returns (predictions float64 numpy (M,), chosen ridge).

    The two-layer (depth 1) ReLU NTK without bias is (rho + an even function of rho) on the sphere, so it
    gives weight 0 to odd spherical harmonics of degree >= 3 (Bietti & Mairal 2019): it cannot learn the
    degree-3 part of (beta^T x)^3 at all. Depth 2 (the default) has no such gap.
    """
    from ...kernel import presets
    from ...kernel.tiled import gram
    from ...learning.krr import KRR
    X = D.to_numpy(_matrix("X", X))
    X_test = D.to_numpy(_matrix("X_test", X_test, X.shape[1]))
    y = D.to_numpy(_vector("y", y, X.shape[0]))
    depth = check_int(depth, "depth", 1)
    ridges = [float(check_real(r, "ridges[i]", 0.0)) for r in ridges]
    if not ridges:
        raise ValueError("ridges must be a non-empty sequence of numbers >= 0; got an empty one")
    arch = presets.fc(depth)
    gdev = "cpu" if D.check(device) == "cpu" else "auto"
    K = np.asarray(gram(X, arch=arch, kind="ntk", dtype="float64", device=gdev))
    Kt = np.asarray(gram(X_test, X, arch=arch, kind="ntk", dtype="float64", device=gdev))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # ill-conditioned small ridges simply lose the LOO selection
        est = KRR(ridge=ridges, cv="loo", scoring="mse", device="cpu").fit(K, y)
    return np.asarray(est.predict(Kt), dtype=np.float64), float(est.ridge_)


# ----------------------------------------------------------------------------------------------------------
# the estimator


class TaylorModel:
    """One model of ``MODELS``, fitted by :func:`gradient_descent` (or kernel ridge regression for 'ntk').

    Parameters (defaults in brackets)
    ---------------------------------
    model : 'linearized', 'quadratic', 'full', 'randomized', 'hierarchical' or 'ntk' ['quadratic'].
    width : m, even [400]. activation : one of ``ACTIVATIONS`` ['softplus'].
    steps : maximum GD steps [2000]. lr : 'auto' (backtracking) or a fixed float ['auto'].
    noise : Langevin temperature of noisy GD [0]. tol : stop when the objective <= tol [1e-10].
    init_scale : W starts at init_scale * m^(-1/4) * N(0, I/d_in) per row (m^(-1/4) is the scale at which
        f^(2) is O(1), the coupling of Bai & Lee) [0.1]; 0 starts at W = 0 (a saddle of f^(2): use noise).
    reg : coefficient of R(W) = reg (sum_r ||w_r||^4)^2, used by every trained model [0; the study uses
        1e-7 for 'randomized': at m = 400 a softplus fit of (beta^T x)^2 has sum_r ||w_r||^4 of a few
        hundred, so reg = 1e-3 makes R dominate the loss and pins W near 0].
    features : D2, degree-2 random features of the 'hierarchical' representation [0].
    ntk_depth : depth of ``presets.fc`` for 'ntk' [2]. ridges : relative ridge grid for 'ntk'.
    seed : int or None [0]. device : 'cpu' (numpy), 'cuda' or 'cuda:N' (cupy) or 'auto' ['cpu'].

    After :meth:`fit`: ``net_`` (TwoLayer), ``W_`` (m, d_in), ``history_`` (History), ``representation_``
    ('hierarchical'), ``ridge_`` ('ntk'). :meth:`predict` returns float64 numpy (M,).
    """

    def __init__(self, model="quadratic", *, width=400, activation="softplus", steps=2000, lr="auto", noise=0.0,
                 tol=1e-10, init_scale=0.1, reg=0.0, features=0, ntk_depth=2,
                 ridges=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0), seed=0, device="cpu"):
        self.model = check_choice(model, "model", MODELS)
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        if activation == "relu" and model in ("quadratic", "randomized", "hierarchical"):
            raise ValueError(f"activation 'relu' has sigma'' = 0 almost everywhere, so model {model!r} (driven by "
                             f"f^(2)) is identically 0 or untrainable; use 'softplus', 'tanh', 'quadratic' or "
                             f"'cubic'")
        self.width = check_int(width, "width", 2)
        if self.width % 2:
            raise ValueError(f"width must be even (neurons come in symmetric pairs); got {width!r}")
        self.steps = check_int(steps, "steps", 0)
        if isinstance(lr, str):
            check_choice(lr, "lr", ("auto",))
        else:
            check_real(lr, "lr", 0.0, strict=True)
        self.lr = lr
        self.noise, self.tol = check_real(noise, "noise", 0.0), check_real(tol, "tol", 0.0)
        self.init_scale, self.reg = check_real(init_scale, "init_scale", 0.0), check_real(reg, "reg", 0.0)
        self.features, self.ntk_depth = check_int(features, "features", 0), check_int(ntk_depth, "ntk_depth", 1)
        if isinstance(ridges, (str, bytes)) or not hasattr(ridges, "__len__") or len(ridges) == 0:
            raise ValueError(f"ridges must be a non-empty sequence of relative ridges >= 0; got {ridges!r}")
        self.ridges = tuple(check_real(r, "ridges[i]", 0.0) for r in ridges)
        self.seed, self.device = check_seed(seed), D.check(device)

    @D.on_device
    def fit(self, X, y):
        """Fit on X (N, d) and y (N,) (float arrays; finite). Returns self."""
        xp = D.array_module(self.device)
        X = _matrix("X", X, xp=xp)
        y = _vector("y", y, X.shape[0], xp)
        self.d_ = X.shape[1]
        if self.model == "ntk":
            self._X = D.to_numpy(X)
            self._y = D.to_numpy(y)
            return self
        rng = np.random.default_rng(self.seed)
        seeds = rng.integers(0, 2 ** 63 - 1, size=4)
        if self.model == "hierarchical":
            self.representation_ = Representation(self.d_, self.features, seed=int(seeds[0]), device=self.device)
            X = self.representation_(X)
        din = X.shape[1]
        self.net_ = TwoLayer(din, self.width, self.activation, seed=int(seeds[1]), device=self.device)
        model = "quadratic" if self.model == "hierarchical" else self.model
        obj = Objective(self.net_, model, X, y, reg=self.reg, rng=np.random.default_rng(int(seeds[2])))
        init_rng = np.random.default_rng(int(seeds[3]))
        W = self.init_scale * self.width ** -0.25 / math.sqrt(din) * init_rng.standard_normal((self.width, din))
        self.W_, self.history_ = gradient_descent(obj, xp.asarray(W), steps=self.steps, lr=self.lr,
                                                  noise=self.noise, tol=self.tol, seed=int(seeds[3]) + 1)
        return self

    @D.on_device
    def predict(self, X):
        """Predictions float64 numpy (M,) for X (M, d)."""
        if not hasattr(self, "d_"):
            raise RuntimeError("this TaylorModel is not fitted yet; call fit(X, y) first")
        if self.model == "ntk":
            X = _matrix("X", X, self.d_)
            pred, self.ridge_ = ntk_ridge(self._X, self._y, X, depth=self.ntk_depth, ridges=self.ridges,
                                          device=self.device)
            return pred
        X = _matrix("X", X, self.d_, self.net_.xp)
        if self.model == "hierarchical":
            X = self.representation_(X)
        return D.to_numpy(self.net_.output(self.model, X, self.W_))
