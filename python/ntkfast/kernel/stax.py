"""neural-tangents' ``stax`` names, signatures and defaults, computed by ntkfast.

Change ``from neural_tangents import stax`` to ``from ntkfast import stax``: every constructor here returns
``(init_fn, apply_fn, kernel_fn)`` like neural-tangents', and ``kernel_fn(x1, x2=None, get=None)`` computes the
infinite-width kernels with ntkfast's backends (CPU, or a GPU when one is usable), on NHWC images or (N, D)
vectors, and returns what stax returns for ``get``: an object with ``.nngp`` and ``.ntk`` for ``None``, one
array for ``'nngp'`` or ``'ntk'``, a namedtuple of the requested kernels for a tuple of names. The results
are numpy arrays, float64 for float64 inputs and float32 otherwise. ``ntkfast.gram`` (tiles, stores,
``memory_budget``, Dask) accepts a stax layer or its ``kernel_fn`` as ``arch``.

ntkfast computes infinite-width kernels only: ``init_fn`` and ``apply_fn`` raise NotImplementedError. A stax
layer that ntkfast does not compute raises NotImplementedError naming it. The defaults are stax's, not those
of ntkfast's own layers: ``Conv`` pads VALID with ``W_std = 1`` and no bias (``b_std=None``); ``Dense(out_dim)``
takes an output width (ntkfast's ``Dense`` takes W_std); ``AvgPool`` strides by 1 unless told. A ``Dense``
before the readout of a convolutional net acts on channels, as in stax: it is a 1x1 convolution. See
docs/migrating.md.
"""
from __future__ import annotations

import collections
import math

import numpy as np

from . import arch as _a

__all__ = ["serial", "parallel", "FanOut", "FanInSum", "Identity", "Conv", "Dense", "Relu", "LeakyRelu", "Abs",
           "ABRelu", "Erf", "Gelu", "Sin", "Cos", "Sign", "Monomial", "RectifiedMonomial", "Hermite", "Polynomial",
           "LayerNorm", "AvgPool", "SumPool", "GlobalAvgPool", "GlobalSumPool", "Flatten"]

# Layers of neural_tangents.stax that ntkfast does not compute (a clear error instead of an AttributeError).
_NOT_COMPUTED = ("BatchNorm", "Dropout", "Exp", "ExpNormalized", "Gabor", "Gaussian", "Rbf", "Sigmoid_like",
                 "Elementwise", "ElementwiseNumerical", "ConvTranspose", "ConvLocal", "GlobalSelfAttention",
                 "Aggregate", "ImageResize", "Index", "FanInConcat", "FanInProd", "DotGeneral", "MaxPool",
                 "AvgPool1D", "repeat", "Cos2", "Relu6", "Tanh")


class _Kernel(collections.namedtuple("Kernel", ["nngp", "ntk"])):
    """The kernels of ``kernel_fn(x1, x2)``: ``.nngp`` and ``.ntk`` (numpy arrays)."""


class Layer(tuple):
    """A stax layer: the triple ``(init_fn, apply_fn, kernel_fn)``, plus ``layers`` (the ntkfast layers it
    stands for) and ``arch`` (the ntkfast architecture of a complete net)."""

    def __new__(cls, layers, name):
        layers = tuple(layers)
        fn = KernelFn(layers, name)
        obj = super().__new__(cls, (_unsupported(name, "init_fn"), _unsupported(name, "apply_fn"), fn))
        obj.layers, obj.name = layers, name
        return obj

    @property
    def arch(self):
        return self[2].arch

    @property
    def ntkfast_arch(self):
        return self[2].arch


def _unsupported(name, what):
    def f(*args, **kwargs):
        raise NotImplementedError(f"ntkfast.stax.{name}: {what} is not available: ntkfast computes infinite-width "
                                  "kernels only; use neural_tangents.stax for finite networks")
    f.__name__ = what
    return f


class KernelFn:
    """``kernel_fn(x1, x2=None, get=None, **kwargs)`` of a stax layer (see the module docstring)."""

    def __init__(self, layers, name):
        self.layers, self.name = layers, name
        self._arch = None

    @property
    def arch(self):
        """The ntkfast :class:`ntkfast.Arch` of this net (checked when first asked for)."""
        if self._arch is None:
            self._arch = _a.serial(*_dense_to_conv(self.layers))
        return self._arch

    ntkfast_arch = arch

    def __call__(self, x1, x2=None, get=None, **kwargs):
        from .tiled import gram
        unknown = set(kwargs) - {"mask_constant", "diagonal_batch", "diagonal_spatial"}
        if unknown:
            raise TypeError(f"kernel_fn: unexpected keyword arguments {sorted(unknown)}")
        names = _get_names(get)
        x1 = np.asarray(x1)
        dtype = "float64" if x1.dtype == np.float64 else "float32"
        k = gram(x1, None if x2 is None else np.asarray(x2), arch=self.arch, dtype=dtype)
        if get is None:
            return _Kernel(k.nngp, k.ntk)
        if isinstance(get, str):
            return getattr(k, get)
        return collections.namedtuple("Kernel", names)(*(getattr(k, n) for n in names))


def _get_names(get):
    ok = ("nngp", "ntk")
    if get is None:
        return ok
    names = (get,) if isinstance(get, str) else tuple(get)
    bad = [n for n in names if n not in ok]
    if bad or not names:
        raise ValueError(f"kernel_fn: get must be None, 'nngp', 'ntk' or a tuple of them; got {get!r} "
                         "(ntkfast returns the NNGP and the NTK; cov1/cov2 are not exposed)")
    return names


def _dense_to_conv(layers, spatial=None):
    """stax's Dense before the readout of a convolutional net acts on channels: a 1x1 convolution."""
    if spatial is None:
        spatial = any(l.spatial or l.readout for l in _a._walk(layers))
    out = []
    for l in layers:
        if isinstance(l, _a.Parallel):
            l = _a.Parallel(tuple(tuple(_dense_to_conv(b, spatial)) for b in l.branches))
        elif spatial and isinstance(l, _a.Dense):
            l = _a.Conv(1, W_std=l.W_std, b_std=l.b_std, padding="SAME", parameterization=l.parameterization,
                        width=l.width)
        out.append(l)
        if l.readout:
            spatial = False
    return out


def _pair(v, name, layer):
    if v is None:
        return None
    v = tuple(v) if isinstance(v, (tuple, list)) else v
    if isinstance(v, tuple) and len(v) != 2:
        raise NotImplementedError(f"ntkfast.stax.{layer}: only 2-D images (NHWC) are computed; got {name}={v!r}")
    return v


def _layers(x, where):
    if isinstance(x, Layer):
        return x.layers
    raise TypeError(f"{where}: expected a stax layer (a triple made by ntkfast.stax); got {type(x).__name__}")


# ---- combinators ---------------------------------------------------------------------------------------------

def serial(*layers):
    """Layers one after the other (``stax.serial``)."""
    return Layer([l for i, x in enumerate(layers) for l in _layers(x, f"serial: layer {i}")], "serial")


def parallel(*layers):
    """One layer (or serial net) per stream of a FanOut (``stax.parallel``)."""
    return Layer([_a.Parallel(tuple(_layers(x, f"parallel: branch {i}") for i, x in enumerate(layers)))], "parallel")


def FanOut(num):
    """``num`` copies of the stream (``stax.FanOut``)."""
    return Layer([_a.FanOut(num)], "FanOut")


def FanInSum():
    """The sum of the streams (``stax.FanInSum``)."""
    return Layer([_a.FanInSum()], "FanInSum")


def Identity():
    return Layer([_a.Identity()], "Identity")


# ---- linear layers -------------------------------------------------------------------------------------------

def Conv(out_chan, filter_shape, strides=None, padding="VALID", W_std=1.0, b_std=None, dimension_numbers=None,
         parameterization="ntk", s=(1, 1)):
    """``stax.Conv``: a ``filter_shape`` convolution, VALID by default, ``W_std = 1``, no bias by default."""
    if dimension_numbers not in (None, ("NHWC", "HWIO", "NHWC")):
        raise NotImplementedError("ntkfast.stax.Conv: only NHWC images are computed; got dimension_numbers="
                                  f"{dimension_numbers!r}")
    if tuple(s) != (1, 1):
        raise NotImplementedError("ntkfast.stax.Conv: width scalings s other than (1, 1) are not computed")
    k = _pair(filter_shape, "filter_shape", "Conv")
    stride = _pair(strides, "strides", "Conv") or 1
    return Layer([_a.Conv(k, W_std=W_std, b_std=b_std, padding=str(padding).upper(), stride=stride,
                          parameterization=parameterization, width=out_chan)], "Conv")


def Dense(out_dim, W_std=1.0, b_std=None, batch_axis=0, channel_axis=-1, parameterization="ntk", s=(1, 1)):
    """``stax.Dense``: ``out_dim`` is the output width (it matters only to a following standard-parameterized
    layer); ``W_std = 1``, no bias by default."""
    if batch_axis != 0 or channel_axis not in (-1, 3, 1):
        raise NotImplementedError("ntkfast.stax.Dense: batch_axis 0 and the channel axis last are computed")
    if tuple(s) != (1, 1):
        raise NotImplementedError("ntkfast.stax.Dense: width scalings s other than (1, 1) are not computed")
    return Layer([_a.Dense(W_std=W_std, b_std=b_std, parameterization=parameterization, width=out_dim)], "Dense")


# ---- nonlinearities ------------------------------------------------------------------------------------------

def Relu(do_stabilize=False):
    return Layer([_a.ReLU()], "Relu")


def ABRelu(a, b, do_stabilize=False):
    return Layer([_a.ABRelu(a, b)], "ABRelu")


def LeakyRelu(alpha, do_stabilize=False):
    return Layer([_a.LeakyRelu(alpha)], "LeakyRelu")


def Abs(do_stabilize=False):
    return Layer([_a.Abs()], "Abs")


def Erf(a=1.0, b=1.0, c=0.0):
    return Layer([_a.Erf(a, b, c)], "Erf")


def Gelu(approximate=False):
    return Layer([_a.Gelu(approximate)], "Gelu")


def Sin(a=1.0, b=1.0, c=0.0):
    return Layer([_a.Sin(a, b, c)], "Sin")


def Cos(a=1.0, b=1.0, c=0.0):
    return Layer([_a.Sin(a, b, c + math.pi / 2)], "Cos")


def Sign():
    return Layer([_a.Sign()], "Sign")


def Monomial(degree):
    return Layer([_a.Monomial(degree)], "Monomial")


def RectifiedMonomial(degree):
    return Layer([_a.RectifiedMonomial(degree)], "RectifiedMonomial")


def Hermite(degree):
    return Layer([_a.Hermite(degree)], "Hermite")


def Polynomial(coef):
    return Layer([_a.Polynomial(tuple(coef))], "Polynomial")


def LayerNorm(axis=-1, eps=1e-12, batch_axis=0, channel_axis=-1):
    """``stax.LayerNorm`` over the channel axis (the one normalization with an infinite-width kernel per
    position); other axes are not computed."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if axes not in ((-1,), (3,)) or batch_axis != 0 or channel_axis != -1:
        raise NotImplementedError(f"ntkfast.stax.LayerNorm: only axis=-1 (channels, per position) is computed; "
                                  f"got axis={axis!r}")
    return Layer([_a.LayerNorm(eps)], "LayerNorm")


# ---- pooling and readouts ------------------------------------------------------------------------------------

def AvgPool(window_shape, strides=None, padding="VALID", normalize_edges=False, batch_axis=0, channel_axis=-1):
    """``stax.AvgPool``: strides default to 1 (not to the window)."""
    if normalize_edges:
        raise NotImplementedError("ntkfast.stax.AvgPool: normalize_edges=True is not computed")
    return Layer([_a.AvgPool(_pair(window_shape, "window_shape", "AvgPool"), stride=_pair(strides, "strides", "AvgPool") or 1,
                             padding=str(padding).upper())], "AvgPool")


def SumPool(window_shape, strides=None, padding="VALID", batch_axis=0, channel_axis=-1):
    return Layer([_a.SumPool(_pair(window_shape, "window_shape", "SumPool"), stride=_pair(strides, "strides", "SumPool") or 1,
                             padding=str(padding).upper())], "SumPool")


def GlobalAvgPool(batch_axis=0, channel_axis=-1):
    return Layer([_a.GlobalAvgPool()], "GlobalAvgPool")


def GlobalSumPool(batch_axis=0, channel_axis=-1):
    return Layer([_a.GlobalSumPool()], "GlobalSumPool")


def Flatten(batch_axis=0, batch_axis_out=0):
    return Layer([_a.Flatten()], "Flatten")


def __getattr__(name):
    if name in _NOT_COMPUTED:
        raise NotImplementedError(f"ntkfast.stax.{name}: ntkfast does not compute this layer; the layers it computes "
                                  f"are {', '.join(__all__)}")
    raise AttributeError(f"module 'ntkfast.stax' has no attribute {name!r}")
