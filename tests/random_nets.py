"""Random valid architectures and inputs for differential tests (backends and the CUDA emulation against the
float64 reference).

``random_case(seed)`` draws one case from ``random.Random(seed)`` and ``numpy.random.default_rng(seed)``, so
a seed reproduces the same net and inputs in every process (no use of the per-process salted ``hash()``);
``draw_case(HypothesisDraws(data))`` draws the same kind of case from hypothesis, which then shrinks a
failing net.
Nets: depth 1-6 convolutions with kernel sizes 1-5 (even and non-square), strides 1-2, SAME/VALID/CIRCULAR
mixed freely, varied W_std and b_std (or no bias), NTK or standard parameterization, every activation
(ReLU, ABRelu, RectifiedMonomial, Erf, Gelu, Sin/Cos, Monomial, Hermite, Polynomial, Sign) and LayerNorm,
zero to two poolings (AvgPool and SumPool SAME/VALID with strides different from the window and non-square
windows, GaussianPool), GlobalAvgPool, GlobalSumPool or Flatten, with and without Dense/activation heads;
residual blocks (FanOut, parallel branches with an Identity or strided 1x1/VALID projection shortcut, a
third branch sometimes, FanInSum) in conv nets and fully-connected heads; and fully-connected nets. At most
one activation of polynomial growth above degree 1 per net keeps the values in floating-point range. Images of 5-14 pixels per side (square and not) with 1-3 channels; inputs random or
MNIST crops, with duplicate and all-zero images. A net that does not fit its image is redrawn.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np

import ntkfast as nf
from ntkfast import (ABRelu, AvgPool, Conv, Cos, Dense, Erf, FanInSum, FanOut, Flatten, GaussianPool, Gelu,
                     GlobalAvgPool, GlobalSumPool, Hermite, Identity, LayerNorm, Monomial, Polynomial,
                     RectifiedMonomial, ReLU, Sign, Sin, SumPool, parallel)

MNIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")


@dataclass
class Case:
    seed: int
    arch: nf.Arch
    X: np.ndarray
    Y: Optional[np.ndarray]   # None: the symmetric Gram of X

    @property
    def label(self):
        return f"seed={self.seed} {self.arch!r} X{self.X.shape}" + ("" if self.Y is None else f" Y{self.Y.shape}")


def _w(r):
    return round(r.uniform(0.5, 2.0), 3)


def _b(r):
    u = r.random()
    return None if u < 0.15 else 0.0 if u < 0.55 else round(r.uniform(0.05, 1.0), 3)


def _k(r):
    ky = r.randint(1, 5)
    return (ky, r.randint(1, 5)) if r.random() < 0.35 else ky


class _Widths:
    """Output widths of the affine layers so far, for standard parameterization (which needs its input's)."""

    def __init__(self):
        self.known = True             # the first layer's input width is the input's channels

    def affine(self, r, make, **kw):
        standard = self.known and r.random() < 0.25
        width = r.randint(1, 64) if r.random() < 0.6 else None
        self.known = width is not None
        return make(W_std=_w(r), b_std=_b(r), parameterization="standard" if standard else "ntk", width=width, **kw)


def _act(r, grow):
    """An activation; at most one of polynomial growth above degree 1 per net (grow[0] counts it)."""
    u = r.random()
    if u < 0.35:
        return ReLU()
    if u < 0.5:
        return ABRelu(round(r.uniform(-1.5, 1.5), 3), round(r.uniform(0.2, 1.5), 3))
    if u < 0.58:
        return Erf(round(r.uniform(0.5, 1.5), 3), round(r.uniform(0.3, 1.5), 3), round(r.uniform(-0.5, 0.5), 3))
    if u < 0.65:
        return Gelu()
    if u < 0.71:
        c = round(r.uniform(-1, 1), 3)
        return Sin(1.0, round(r.uniform(0.3, 1.2), 3), c) if r.random() < 0.5 else Cos(1.0, round(r.uniform(0.3, 1.2), 3), c)
    if u < 0.76:
        return Sign()
    if grow[0]:
        return ReLU()
    grow[0] = 1
    v = r.random()
    if v < 0.3:
        return RectifiedMonomial(r.randint(0, 3))
    if v < 0.55:
        return Monomial(r.randint(0, 3))
    if v < 0.8:
        return Hermite(r.randint(0, 3))
    return Polynomial([round(r.uniform(-1, 1), 3) for _ in range(r.randint(1, 4))])


def _pool(r):
    if r.random() < 0.3:
        return GaussianPool(r.randint(1, 2), sigma=None if r.random() < 0.6 else round(r.uniform(0.4, 1.5), 3))
    p = (r.randint(1, 3), r.randint(1, 3)) if r.random() < 0.4 else r.randint(1, 3)
    stride = None if r.random() < 0.3 else ((r.randint(1, 3), r.randint(1, 3)) if r.random() < 0.4 else r.randint(1, 3))
    return (SumPool if r.random() < 0.25 else AvgPool)(p, stride=stride, padding=r.choice(["SAME", "VALID"]))


def _head(r, gaussian, widths, grow):
    """Layers after the readout: nothing, or Dense/activation alternations (and residual blocks) that obey
    the Gaussian-input rule."""
    layers = []
    for _ in range(r.randint(0, 3)):
        if gaussian and r.random() < 0.15:
            layers += _block(r, widths, grow, dense=True)
        elif gaussian and r.random() < 0.5:
            layers.append(LayerNorm() if r.random() < 0.15 else _act(r, grow))
            gaussian = isinstance(layers[-1], LayerNorm)
        else:
            layers.append(widths.affine(r, Dense))
            gaussian = True
    return layers


def _block(r, widths, grow, dense=False):
    """A residual block on a Gaussian stream: FanOut, a main branch [act, affine, (act, affine)] and a
    shortcut (Identity, or a projection that changes resolution as the main branch does), sometimes a third
    branch with weights of its own, FanInSum. Widths: the branches end at the same width (standard
    parameterization after the block needs it)."""
    if dense:
        main = [_act(r, grow), widths.affine(r, Dense)]
        if r.random() < 0.5:
            main += [_act(r, grow), widths.affine(r, Dense)]
        shortcut = Identity() if r.random() < 0.6 else widths.affine(r, Dense)
        branches = [main, shortcut]
    else:
        stride = 1 if r.random() < 0.6 else (2 if r.random() < 0.7 else (1, 2))
        valid = stride == 1 and r.random() < 0.2
        k1 = r.randint(1, 3) if valid else _k(r)
        pad = "VALID" if valid else r.choice(["SAME", "SAME", "CIRCULAR"])
        main = [_act(r, grow), widths.affine(r, Conv, k=k1, padding=pad, stride=stride)]
        if r.random() < 0.6:
            main += [_act(r, grow), widths.affine(r, Conv, k=_k(r), padding=r.choice(["SAME", "CIRCULAR"]))]
        if stride == 1 and not valid and r.random() < 0.6:
            shortcut = Identity()
        else:
            shortcut = widths.affine(r, Conv, k=k1 if valid else 1, padding="VALID" if valid else "SAME", stride=stride)
        branches = [main, shortcut]
        if r.random() < 0.2:
            branches.append([_act(r, grow), widths.affine(r, Conv, k=k1, padding=pad, stride=stride)])
    widths.known = False                       # the branches' widths need not agree
    return [FanOut(len(branches)), parallel(*branches), FanInSum()]


def _conv_net(r):
    depth = r.randint(1, 6)
    n_pools = r.choice([0, 0, 1, 1, 2])
    slots = sorted(r.randint(0, depth) for _ in range(n_pools))  # pool before conv number s (depth: at the end)
    layers, gaussian, widths, grow = [], False, _Widths(), [0]
    for i in range(depth + 1):
        for s in slots:
            if s == i:
                layers.append(_pool(r))
        if i == depth:
            break
        stride = 1 if r.random() < 0.8 else ((1, 2) if r.random() < 0.3 else 2)
        layers.append(widths.affine(r, Conv, k=_k(r), padding=r.choice(["SAME", "VALID", "CIRCULAR"]), stride=stride))
        gaussian = True
        if r.random() < 0.15:
            layers.append(LayerNorm())
        while r.random() < 0.25:
            layers += _block(r, widths, grow)
        if r.random() < 0.8:
            layers.append(_act(r, grow))
            gaussian = False
    u = r.random()
    layers.append(GlobalAvgPool() if u < 0.4 else GlobalSumPool() if u < 0.55 else Flatten())
    if isinstance(layers[-1], Flatten):
        widths.known = False          # the flattened width depends on the resolution
    layers += _head(r, gaussian, widths, grow)
    return nf.serial(*layers)


def _fc_net(r):
    layers, widths, grow = [], _Widths(), [0]
    for _ in range(r.randint(1, 4)):
        layers.append(widths.affine(r, Dense))
        if r.random() < 0.15:
            layers.append(LayerNorm())
        if r.random() < 0.2:
            layers += _block(r, widths, grow, dense=True)
        if r.random() < 0.8:
            layers.append(_act(r, grow))
    if r.random() < 0.7:
        layers.append(widths.affine(r, Dense))
    return nf.serial(*layers)


_MNIST = None


def _mnist_images():
    global _MNIST
    if _MNIST is None:
        if os.path.isdir(MNIST_DIR):
            from ntkfast.data import load_mnist
            _MNIST = load_mnist(MNIST_DIR)[0][:200, :, :, 0]
        else:
            _MNIST = np.zeros((0, 28, 28))
    return _MNIST


def _inputs(r, rng, shape, n):
    images = _mnist_images()
    if len(shape) == 3 and shape[2] == 1 and len(images) and r.random() < 0.3:
        H, W = shape[:2]
        y0, x0 = r.randint(0, 28 - H), r.randint(0, 28 - W)
        idx = rng.choice(len(images), size=n, replace=False)
        X = images[idx, y0:y0 + H, x0:x0 + W][..., None].astype(np.float64)
    else:
        X = rng.standard_normal((n,) + shape) * r.choice([1.0, 0.3, 3.0])
    if n >= 3 and r.random() < 0.4:
        X[-1] = X[0]                      # a duplicate image
    if n >= 3 and r.random() < 0.3:
        X[-2] = 0.0                       # an all-zero image
    return X


class HypothesisDraws:
    """The draws of ``random.Random`` that the generator uses, from a hypothesis ``data`` object."""

    def __init__(self, data):
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def randint(self, a, b):
        return self.data.draw(self.st.integers(a, b))

    def random(self):
        return self.data.draw(self.st.floats(0.0, 1.0, exclude_max=True))

    def uniform(self, a, b):
        return self.data.draw(self.st.floats(a, b))

    def choice(self, seq):
        return self.data.draw(self.st.sampled_from(list(seq)))


def random_case(seed):
    """One reproducible (net, inputs) case; see the module docstring."""
    return draw_case(random.Random(seed), seed)


def draw_case(r, seed=None):
    """One case from the draws of ``r`` (``random.Random`` or :class:`HypothesisDraws`); the input values come
    from ``numpy.random.default_rng(seed)`` (seed drawn from ``r`` when None)."""
    if seed is None:
        seed = r.randint(0, 2 ** 32 - 1)
    rng = np.random.default_rng(seed)
    for _ in range(100):
        if r.random() < 0.15:
            arch = _fc_net(r)
            shape = (r.randint(1, 12),)
        else:
            arch = _conv_net(r)
            H = r.randint(5, 14)
            shape = (H, H if r.random() < 0.5 else r.randint(5, 14), r.randint(1, 3))
        try:
            arch.plan(shape)
        except ValueError:
            continue                      # does not fit the image (too deep or pooled too much): redraw
        n = r.randint(2, 5)
        X = _inputs(r, rng, shape, n)
        Y = None if r.random() < 0.6 else _inputs(r, rng, shape, r.randint(1, 4))
        return Case(seed, arch, X, Y)
    raise RuntimeError(f"seed {seed}: no net fitted its image in 100 draws")
