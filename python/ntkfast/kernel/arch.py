"""Architecture description: layers, ``serial``, validation and the one text form of a layer program.

Every layer carries the kernel rules of docs/design.md for both the NNGP/CKN kernel (S) and the NTK (T). An
architecture is built with :func:`serial`; its structure is checked when it is built (:class:`Arch`), and its
fit to an input shape before any heavy work (:meth:`Arch.plan`), by compiling it with the C++ core, which is
the one place where the geometry of a net (resolutions, offset planes, poolings) is derived.

The op table of this language is the set of :class:`Layer` subclasses: each names its token in the text form
(``_token``) and writes its arguments (``_args``); ``csrc/core/serialize.hpp`` reads them.
"""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field
from typing import Optional, Tuple

__all__ = ["Layer", "Conv", "Dense", "Identity", "FanOut", "FanInSum", "Parallel", "parallel", "ReLU", "ABRelu", "LeakyRelu", "Abs", "RectifiedMonomial", "Erf", "Gelu",
           "Sin", "Cos", "Monomial", "Hermite", "Polynomial", "Sign", "LayerNorm", "AvgPool", "SumPool",
           "GaussianPool", "GlobalAvgPool", "GlobalSumPool", "Flatten", "serial", "Arch", "Plan", "LayerShape"]

_PADDINGS = ("SAME", "VALID", "CIRCULAR")
_PARAMETERIZATIONS = ("ntk", "standard")
MAX_POLY_DEGREE = 8      # csrc/core/activations.hpp: kMaxPolyDegree
MAX_RECT_DEGREE = 4      # kMaxRectDegree


def _pair(value, name, layer, minimum=1):
    """Accept an int or a pair of ints (for the two spatial axes); return a pair of ints >= minimum."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        vals = (int(value), int(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        vals = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{layer}: {name} must be an int or a pair of ints; got {value!r}")
    if min(vals) < minimum:
        raise ValueError(f"{layer}: {name} must be >= {minimum}; got {value!r}")
    return vals


def _real(value, name, layer, positive):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{layer}: {name} must be a real number; got {value!r}")
    v = float(value)
    if not math.isfinite(v) or (v <= 0 if positive else v < 0):
        raise ValueError(f"{layer}: {name} must be a finite number {'> 0' if positive else '>= 0'}; got {value!r}")
    return v


def _num(v):
    return repr(float(v))  # shortest text that strtod reads back exactly


def _any_real(value, name, layer):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{layer}: {name} must be a real number; got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{layer}: {name} must be finite; got {value!r}")
    return v


def _degree(value, layer, maximum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{layer}: degree must be an int; got {value!r}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{layer}: degree must be in 0..{maximum}; got {value!r}")
    return int(value)


def _affine_init(self, name):
    """Shared checks of Conv and Dense: W_std > 0, b_std >= 0 or None (no bias), parameterization, width."""
    object.__setattr__(self, "W_std", _real(self.W_std, "W_std", name, positive=True))
    if self.b_std is not None:
        object.__setattr__(self, "b_std", _real(self.b_std, "b_std", name, positive=False))
    if self.parameterization not in _PARAMETERIZATIONS:
        raise ValueError(f"{name}: parameterization must be 'ntk' or 'standard'; got {self.parameterization!r}")
    if self.width is not None and (isinstance(self.width, bool) or not isinstance(self.width, numbers.Integral)
                                   or self.width < 1):
        raise ValueError(f"{name}: width must be a positive int (the output channels) or None; got {self.width!r}")


def _affine_args(self):
    b = "none" if self.b_std is None else _num(self.b_std)
    return [_num(self.W_std), b, self.parameterization, self.width or 0]


class Layer:
    """Base class of all layers (immutable value objects).

    Class attributes: ``spatial`` (acts on images, before the readout), ``readout`` (turns an image state
    into a scalar one), ``affine`` (its output is a Gaussian pre-activation: Conv, Dense), ``nonlinear``
    (an activation: it needs a Gaussian input and its output is not Gaussian), ``needs_gaussian`` (needs a
    Gaussian input, and keeps it: LayerNorm), ``_token`` (its name in the text form).
    """

    spatial = False
    readout = False
    affine = False
    nonlinear = False
    needs_gaussian = False
    _token = None

    @property
    def homogeneous(self):
        """Whether K(a x, b y) = a b K(x, y) for a, b > 0 through this layer (used to rescale float32 inputs)."""
        return False

    def _args(self):
        """The arguments of this layer in the text form (csrc/core/serialize.hpp)."""
        raise NotImplementedError(f"{type(self).__name__} has no text form")


@dataclass(frozen=True)
class Conv(Layer):
    """k x k convolution: ``S' = W_std^2 / (kh kw) * sum_v S[u+v, u'+v] + b_std^2``, ``T' = W_std^2/(kh kw) sum_v T + S'``.

    ``k`` is an int or ``(kh, kw)``; ``padding`` is 'SAME' (zeros, JAX's split ``lo = (k-1)//2``),
    'VALID' (output shrinks by k-1) or 'CIRCULAR' (wrap-around, same split as SAME). Paddings may be mixed
    freely within a net: each convolution applies its own. ``stride`` (int or pair, default 1): the
    convolution is followed by subsampling, as ``stax.Conv(..., strides=...)`` (SAME/CIRCULAR padding then
    follows JAX for the strided output: ``ceil(n / s)`` positions). ``b_std=None``: no bias.

    ``parameterization='standard'`` (neural-tangents' definition, Sohl-Dickstein et al. 2020): ``S`` as above,
    ``T' = W_std^2/(kh kw) sum_v T + fan_in/(kh kw) sum_v S + [1 if a bias]`` with ``fan_in = C_in kh kw``: it
    needs the channel count of its input, the input's for a first layer, else the ``width`` (output channels)
    of the Conv or Dense before it.
    """

    k: object = 3
    W_std: float = 2 ** 0.5
    b_std: Optional[float] = 0.0
    padding: str = "SAME"
    stride: object = 1
    parameterization: str = "ntk"
    width: Optional[int] = None
    spatial = True
    affine = True
    _token = "conv"

    def __post_init__(self):
        object.__setattr__(self, "k", _pair(self.k, "k", "Conv"))
        object.__setattr__(self, "stride", _pair(self.stride, "stride", "Conv"))
        if not isinstance(self.padding, str) or self.padding.upper() not in _PADDINGS:
            raise ValueError(f"Conv: padding must be one of {_PADDINGS}; got {self.padding!r}")
        object.__setattr__(self, "padding", self.padding.upper())
        _affine_init(self, "Conv")

    @property
    def homogeneous(self):
        return not self.b_std and self.parameterization == "ntk"

    def _args(self):
        return [self.k[0], self.k[1], self.stride[0], self.stride[1], self.padding] + _affine_args(self)


@dataclass(frozen=True)
class ReLU(Layer):
    """ReLU: ``S' = n kappa1(rho) / 2``, ``T' = T kappa0(rho) / 2`` with the angle from atan2 (docs/design.md).

    Its input must be a Gaussian pre-activation: the output of a Conv or Dense, possibly through pooling or a
    readout (not the raw input, not another activation)."""

    nonlinear = True
    _token = "relu"
    homogeneous = True

    def _args(self):
        return []


class _Activation(Layer):
    """An activation: needs a Gaussian input (a Conv or Dense before it, possibly through pooling or a readout)."""

    nonlinear = True

    def _args(self):
        return []


@dataclass(frozen=True)
class ABRelu(_Activation):
    """``a min(x, 0) + b max(x, 0)`` (neural-tangents' ``ABRelu``): ``S' = (a-b)^2/(2 pi) n sin(theta) + dot S``,
    ``T' = dot T`` with ``dot = (a^2 + b^2)/2 - (a-b)^2 theta / (2 pi)``. ``LeakyRelu(alpha)`` is
    ``ABRelu(alpha, 1)``, ``Abs()`` is ``ABRelu(-1, 1)``, ``ABRelu(0, 1)`` equals ``ReLU()``."""

    a: float = 0.0
    b: float = 1.0
    _token = "abrelu"
    homogeneous = True

    def __post_init__(self):
        object.__setattr__(self, "a", _any_real(self.a, "a", "ABRelu"))
        object.__setattr__(self, "b", _any_real(self.b, "b", "ABRelu"))
        if self.a == 0.0 and self.b == 0.0:
            raise ValueError("ABRelu: a = b = 0 is the zero function; give a nonzero slope")

    def _args(self):
        return [_num(self.a), _num(self.b)]


def LeakyRelu(alpha):
    """``alpha min(x, 0) + max(x, 0)``: ``ABRelu(alpha, 1)``."""
    return ABRelu(_any_real(alpha, "alpha", "LeakyRelu"), 1.0)


def Abs():
    """``|x|``: ``ABRelu(-1, 1)``."""
    return ABRelu(-1.0, 1.0)


@dataclass(frozen=True)
class RectifiedMonomial(_Activation):
    """``(x >= 0) x^degree``, degree 0..4: the arc-cosine kernel of that degree (Cho & Saul 2009); degree 1 is
    ReLU. The NTK of degree 0 (a step) is 0, as in neural-tangents."""

    degree: int = 1
    _token = "rectmono"

    def __post_init__(self):
        object.__setattr__(self, "degree", _degree(self.degree, "RectifiedMonomial", MAX_RECT_DEGREE))

    def _args(self):
        return [self.degree]


@dataclass(frozen=True)
class Erf(_Activation):
    """``a erf(b x) + c``: ``S' = a^2 (2/pi) arcsin(2 b^2 S / sqrt((1 + 2 b^2 S_xx)(1 + 2 b^2 S_yy))) + c^2``."""

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0
    _token = "erf"

    def __post_init__(self):
        for n in ("a", "b", "c"):
            object.__setattr__(self, n, _any_real(getattr(self, n), n, "Erf"))

    def _args(self):
        return [_num(self.a), _num(self.b), _num(self.c)]


@dataclass(frozen=True)
class Gelu(_Activation):
    """``x Phi(x)`` (neural-tangents' ``Gelu``; ``approximate`` changes only finite networks, as there)."""

    approximate: bool = False
    _token = "gelu"


@dataclass(frozen=True)
class Sin(_Activation):
    """``a sin(b x + c)``: ``S' = a^2/2 (exp(b^2 (S - (S_xx+S_yy)/2)) - exp(-b^2 (S + (S_xx+S_yy)/2)) cos 2c)``."""

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0
    _token = "sin"

    def __post_init__(self):
        for n in ("a", "b", "c"):
            object.__setattr__(self, n, _any_real(getattr(self, n), n, "Sin"))

    def _args(self):
        return [_num(self.a), _num(self.b), _num(self.c)]


def Cos(a=1.0, b=1.0, c=0.0):
    """``a cos(b x + c)``: ``Sin(a, b, c + pi/2)``."""
    return Sin(a, b, _any_real(c, "c", "Cos") + math.pi / 2)


@dataclass(frozen=True)
class Monomial(_Activation):
    """``x^degree``, degree 0..8 (neural-tangents allows 0..5)."""

    degree: int = 1
    _token = "monomial"

    def __post_init__(self):
        object.__setattr__(self, "degree", _degree(self.degree, "Monomial", MAX_POLY_DEGREE))

    def _args(self):
        return [self.degree]


@dataclass(frozen=True)
class Hermite(_Activation):
    """``He_degree(x) / sqrt(degree!)`` (probabilists' Hermite polynomial, unit norm under N(0, 1)), degree 0..8.

    Exact for any input variance: ``E[h(u) h(v)]`` by the Hermite expansion. neural-tangents' ``Hermite``
    assumes unit-variance inputs (its kernel is ``S^degree``); the two agree there."""

    degree: int = 1
    _token = "hermite"

    def __post_init__(self):
        object.__setattr__(self, "degree", _degree(self.degree, "Hermite", MAX_POLY_DEGREE))

    def _args(self):
        return [self.degree]


@dataclass(frozen=True)
class Polynomial(_Activation):
    """``coef[0] + coef[1] x + ... + coef[n] x^n`` (numpy's order), degree up to 8."""

    coef: tuple = (0.0, 1.0)
    _token = "polynomial"

    def __post_init__(self):
        if isinstance(self.coef, (str, bytes)) or not hasattr(self.coef, "__len__"):
            raise TypeError(f"Polynomial: coef must be a sequence of numbers; got {self.coef!r}")
        c = tuple(_any_real(v, "every coefficient", "Polynomial") for v in self.coef)
        if not 1 <= len(c) <= MAX_POLY_DEGREE + 1:
            raise ValueError(f"Polynomial: coef must have 1 to {MAX_POLY_DEGREE + 1} entries; got {len(c)}")
        object.__setattr__(self, "coef", c)

    def _args(self):
        return [len(self.coef)] + [_num(v) for v in self.coef]


@dataclass(frozen=True)
class Sign(_Activation):
    """``sign(x)``: NNGP ``S' = 1 - 2 theta / pi``. Its derivative is 0 almost everywhere, so the NTK through a
    Sign is 0 (only layers after it contribute), as neural-tangents defines it."""

    _token = "sign"


@dataclass(frozen=True)
class LayerNorm(Layer):
    """Normalization over the channel axis at each position (neural-tangents' ``LayerNorm(axis=-1)``), on images
    and vectors: ``S'[u,u'] = S[u,u'] / sqrt((eps + S_xx[u,u]) (eps + S_yy[u',u']))``, T likewise. Needs a
    Gaussian input and keeps it."""

    eps: float = 1e-12
    needs_gaussian = True
    _token = "layernorm"

    def __post_init__(self):
        object.__setattr__(self, "eps", _real(self.eps, "eps", "LayerNorm", positive=False))

    def _args(self):
        return [_num(self.eps)]


@dataclass(frozen=True)
class AvgPool(Layer):
    """Average pooling over p x p windows with ``stride`` (default p).

    padding 'VALID' (windows inside the image) or 'SAME' (zero padding, always divided by the window
    size, as neural-tangents' default ``normalize_edges=False``).
    """

    p: object = 2
    stride: object = None
    padding: str = "VALID"
    spatial = True
    _token = "avgpool"

    def __post_init__(self):
        object.__setattr__(self, "p", _pair(self.p, "p", "AvgPool"))
        stride = self.p if self.stride is None else _pair(self.stride, "stride", "AvgPool")
        object.__setattr__(self, "stride", stride)
        if not isinstance(self.padding, str) or self.padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"AvgPool: padding must be 'SAME' or 'VALID'; got {self.padding!r}")
        object.__setattr__(self, "padding", self.padding.upper())

    homogeneous = True

    def _args(self):
        return [self.p[0], self.p[1], self.stride[0], self.stride[1], self.padding]


@dataclass(frozen=True)
class SumPool(AvgPool):
    """Sum pooling over p x p windows (``stax.SumPool``): AvgPool times the window size p_h p_w."""

    _token = "sumpool"


@dataclass(frozen=True)
class GaussianPool(Layer):
    """Bietti & Mairal's Gaussian pooling with subsampling ``stride`` = s.

    Taps v in [-s, s] with weights proportional to exp(-v^2 / (2 sigma^2)), sigma = s / sqrt(2) by
    default, normalized to sum 1; outputs at positions s (j + 1), j = 0 .. H//s - 2; taps outside the
    image contribute 0. Applied separably on each axis of both positions of the state.
    """

    stride: int = 2
    sigma: Optional[float] = None
    spatial = True
    _token = "gaussianpool"
    homogeneous = True

    def __post_init__(self):
        if isinstance(self.stride, bool) or not isinstance(self.stride, numbers.Integral) or self.stride < 1:
            raise ValueError(f"GaussianPool: stride must be an int >= 1; got {self.stride!r}")
        object.__setattr__(self, "stride", int(self.stride))
        if self.sigma is not None:
            object.__setattr__(self, "sigma", _real(self.sigma, "sigma", "GaussianPool", positive=True))

    def _args(self):
        return [self.stride, _num(self.sigma if self.sigma is not None else 0.0)]


@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """Readout: ``K = mean over all (u, u')`` of the state."""

    readout = True
    _token = "globalavgpool"
    homogeneous = True

    def _args(self):
        return []


@dataclass(frozen=True)
class GlobalSumPool(GlobalAvgPool):
    """Readout: ``K = sum over all (u, u')`` of the state (``stax.GlobalSumPool``)."""

    _token = "globalsumpool"


@dataclass(frozen=True)
class Flatten(Layer):
    """Readout: ``K = mean over u of S[u, u]`` (only the diagonal positions)."""

    readout = True
    _token = "flatten"
    homogeneous = True

    def _args(self):
        return []


@dataclass(frozen=True)
class Dense(Layer):
    """Fully-connected layer: ``S' = W_std^2 S + b_std^2``, ``T' = W_std^2 T + S'``.

    The default (W_std=1, b_std=0) is the readout of neural-tangents' ``stax.Dense(1)``: it adds S to T.
    ``b_std=None``: no bias. ``parameterization='standard'``: ``T' = W_std^2 T + fan_in S + [1 if a bias]``
    with fan_in the input's features (after Flatten: positions times channels), as in :class:`Conv`.
    """

    W_std: float = 1.0
    b_std: Optional[float] = 0.0
    parameterization: str = "ntk"
    width: Optional[int] = None
    affine = True
    _token = "dense"

    def __post_init__(self):
        _affine_init(self, "Dense")

    @property
    def homogeneous(self):
        return not self.b_std and self.parameterization == "ntk"

    def _args(self):
        return _affine_args(self)


@dataclass(frozen=True)
class Identity(Layer):
    """The identity (``stax.Identity``): a residual block's shortcut."""

    _token = "identity"
    homogeneous = True

    def _args(self):
        return []


@dataclass(frozen=True)
class FanOut(Layer):
    """Copies the single stream into ``n`` streams for a following :func:`parallel` (``stax.FanOut``)."""

    n: int = 2
    _token = "fanout"
    homogeneous = True

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, numbers.Integral) or self.n < 1:
            raise ValueError(f"FanOut: n must be an int >= 1; got {self.n!r}")
        object.__setattr__(self, "n", int(self.n))

    def _args(self):
        return [self.n]


@dataclass(frozen=True)
class FanInSum(Layer):
    """Sums the streams into one (``stax.FanInSum``): the kernels add, since every branch but at most one ends
    with weights of its own (independent, mean zero). Every summed stream must be Gaussian (a Conv or Dense
    last, or an Identity of a Gaussian), as neural-tangents requires."""

    _token = "faninsum"
    homogeneous = True

    def _args(self):
        return []


def _branch_layers(branch, i):
    if isinstance(branch, Layer):
        return (branch,)
    if isinstance(branch, Arch):
        return branch.layers
    if isinstance(branch, (list, tuple)) and branch and all(isinstance(l, Layer) for l in branch):
        return tuple(branch)
    raise TypeError(f"parallel: branch {i} must be a layer or a non-empty list of layers; got {branch!r}")


@dataclass(frozen=True)
class Parallel(Layer):
    """Branches applied to the streams of a :class:`FanOut`, one each (``stax.parallel``); build it with
    :func:`parallel`."""

    branches: tuple = ()
    _token = "parallel"

    def __post_init__(self):
        if not self.branches:
            raise ValueError("parallel: expected at least one branch; got none")
        object.__setattr__(self, "branches", tuple(_branch_layers(b, i) for i, b in enumerate(self.branches)))

    @property
    def spatial(self):
        return any(l.spatial or l.readout for b in self.branches for l in b)

    @property
    def homogeneous(self):
        return all(l.homogeneous for b in self.branches for l in b)

    def _lines(self):
        out = [f"parallel {len(self.branches)}"]
        for b in self.branches:
            out.append("branch")
            out += [line for l in b for line in _layer_lines(l)]
        return out + ["end"]

    def __repr__(self):
        return "parallel(" + ", ".join("[" + ", ".join(repr(l) for l in b) + "]" for b in self.branches) + ")"


def parallel(*branches):
    """Branches for the streams of a :class:`FanOut`: each a layer or a list of layers (a branch is not a net
    of its own: ``serial`` would refuse a branch without a readout), e.g. a residual block ``FanOut(2), parallel([ReLU(), Conv(3), ReLU(), Conv(3)], Identity()),
    FanInSum()``."""
    return Parallel(tuple(branches))


def _layer_lines(l):
    if isinstance(l, Parallel):
        return l._lines()
    return [" ".join([l._token] + [str(a) for a in l._args()])]


def _walk(layers):
    """Every layer of a (possibly branching) layer list, depth first."""
    for l in layers:
        yield l
        if isinstance(l, Parallel):
            for b in l.branches:
                yield from _walk(b)


@dataclass(frozen=True)
class LayerShape:
    """Resolution of the state entering and leaving a layer; ``None`` for scalar (fully-connected) states."""

    index: int
    layer: Layer
    h_in: Optional[int]
    w_in: Optional[int]
    h_out: Optional[int]
    w_out: Optional[int]


@dataclass(frozen=True)
class Plan:
    """An architecture checked against an input shape: per-layer resolutions and the compiled program."""

    arch: "Arch"
    input_shape: Tuple[int, ...]
    layers: Tuple[LayerShape, ...]
    program: object = field(repr=False, compare=False)

    @property
    def convolutional(self):
        return self.arch.convolutional


def type_name(layer):
    return type(layer).__name__


@dataclass
class _Stream:
    """What the structure check knows of one stream of the state."""

    gaussian: bool = False              # a Gaussian pre-activation (Conv or Dense last, through linear layers)
    source: str = "the network input"   # what it is, for messages
    fresh: bool = True                  # weights of its own since the last FanOut
    scalar: bool = False                # after the readout (or a vector net)


def _check_structure(layers):
    """Order of the layers, streams of FanOut / parallel / FanInSum, and the Gaussian-input rule of activations;
    raises ValueError naming the layer."""
    conv = any(l.spatial or l.readout for l in _walk(layers))
    readouts = [i for i, l in enumerate(layers) if l.readout]
    if conv:
        if any(l.readout for p in layers if isinstance(p, Parallel) for l in _walk(p.branches[0] + sum(p.branches[1:], ()))):
            raise ValueError("serial: a readout inside parallel(...) is not supported; put GlobalAvgPool/Flatten after "
                             "the FanInSum")
        if not readouts:
            raise ValueError("serial: a convolutional net needs a readout (GlobalAvgPool() or Flatten()) after its "
                             f"last spatial layer; got none in {list(map(type_name, layers))}")
        if len(readouts) > 1:
            raise ValueError(f"serial: expected exactly one readout; got {len(readouts)} at layers {readouts}")
        r = readouts[0]
        late = [i for i, l in enumerate(layers) if i > r and l.spatial]
        if late:
            raise ValueError(f"serial: layer {late[0]} ({type_name(layers[late[0]])}) is spatial but comes after the "
                             f"readout at layer {r}; the readout must follow every Conv/pooling layer")
        for i in range(r):
            if any(isinstance(l, Dense) for l in _walk([layers[i]])):
                raise ValueError(f"serial: layer {i} (Dense) comes before the readout at layer {r}; in a "
                                 f"convolutional net Dense layers go after GlobalAvgPool/Flatten")
    streams = _walk_streams(layers, [_Stream(scalar=not conv)], "layer ")
    if len(streams) != 1:
        raise ValueError(f"serial: the net ends with {len(streams)} streams; a FanOut needs a FanInSum after it")


def _walk_streams(layers, streams, where):
    # A dual activation map is the kernel of phi(z) only for a Gaussian z: the output of a Conv or Dense,
    # possibly through linear layers (pools, readouts). neural-tangents refuses the rest too.
    for i, l in enumerate(layers):
        name = f"{where}{i} ({type_name(l)})"
        if isinstance(l, FanOut):
            if len(streams) != 1:
                raise ValueError(f"serial: {name} takes one stream; got {len(streams)} (a FanInSum is missing)")
            streams = [_Stream(streams[0].gaussian, streams[0].source, False, streams[0].scalar) for _ in range(l.n)]
            continue
        if isinstance(l, Parallel):
            if len(l.branches) != len(streams):
                raise ValueError(f"serial: {name} has {len(l.branches)} branches for {len(streams)} stream(s); "
                                 f"put a FanOut({len(l.branches)}) before it")
            out = []
            for b, (branch, st) in enumerate(zip(l.branches, streams)):
                res = _walk_streams(branch, [st], f"{where}{i}, branch {b}, layer ")
                if len(res) != 1:
                    raise ValueError(f"serial: {name}, branch {b} ends with {len(res)} streams; close its FanOut with "
                                     "a FanInSum")
                out += res
            streams = out
            continue
        if isinstance(l, FanInSum):
            if len(streams) > 1:
                bad = [k for k, st in enumerate(streams) if not st.gaussian]
                if bad:
                    raise ValueError(f"serial: {name} sums Gaussian streams only (a Conv or Dense last in every "
                                     f"branch, or an Identity of a Gaussian), but stream {bad[0]} is "
                                     f"{streams[bad[0]].source}")
                same = [k for k, st in enumerate(streams) if not st.fresh]
                if len(same) > 1:
                    raise ValueError(f"serial: {name} sums streams {same[0]} and {same[1]}, which have no weights of "
                                     "their own since the FanOut: they are the same Gaussian, and their kernels do "
                                     "not add; give all branches but one a Conv or Dense")
                if len({st.scalar for st in streams}) > 1:
                    raise ValueError(f"serial: {name} sums streams before and after the readout")
            streams = [_Stream(True, f"the output of {name}", True, streams[0].scalar)]
            continue
        if len(streams) != 1:
            raise ValueError(f"serial: {name} acts on one stream but gets {len(streams)} (after a FanOut); put it "
                             f"inside parallel(...), or sum the streams with FanInSum first")
        st = streams[0]
        if l.affine:
            st.gaussian, st.fresh, st.source = True, True, f"the output of {name}"
        elif l.nonlinear or l.needs_gaussian:
            if not st.gaussian:
                raise ValueError(
                    f"serial: {name} needs a Gaussian input, the output of a Conv or Dense "
                    f"layer (possibly through pooling or a readout), but it gets {st.source}; put a Conv or Dense "
                    f"before it")
            if l.nonlinear:
                st.gaussian = False
                st.source = f"the output of {name}"
        if l.readout:
            st.scalar = True
    return streams


@dataclass(frozen=True)
class Arch:
    """A sequence of layers (build it with :func:`serial`). Immutable and hashable; its structure is checked
    when it is created (ValueError naming the layer)."""

    layers: Tuple[Layer, ...] = field(default_factory=tuple)

    def __post_init__(self):
        layers = tuple(self.layers)
        if not layers:
            raise ValueError("serial: expected at least one layer; got none")
        for i, l in enumerate(layers):
            if not isinstance(l, Layer):
                raise TypeError(f"serial: layer {i} must be an ntkfast layer (Conv, ReLU, ...); got {l!r}")
        _check_structure(layers)
        object.__setattr__(self, "layers", layers)

    @property
    def convolutional(self):
        return any(l.spatial or l.readout for l in _walk(self.layers))

    @property
    def homogeneous(self):
        """K(a x, b y) = a b K(x, y) for a, b > 0: every layer is (bias-free NTK-parameterized Conv/Dense,
        ReLU/ABRelu, poolings, readouts, Identity and branches of these)."""
        return all(l.homogeneous for l in self.layers)

    def __repr__(self):
        return "serial(" + ", ".join(repr(l) for l in self.layers) + ")"

    def program_text(self, input_shape):
        """The text form of this net on inputs of one shape ((H, W, C) or (D,)): what the compiled backends
        and the CUDA emulation read (csrc/core/serialize.hpp)."""
        shape = _input_shape(self, input_shape)
        head = f"input image {shape[0]} {shape[1]} {shape[2]}" if self.convolutional else f"input vector {shape[0]}"
        lines = ["ntkfast-program 2", head]
        lines += [line for l in self.layers for line in _layer_lines(l)]
        return "\n".join(lines) + "\n"

    def plan(self, input_shape):
        """Check this architecture against one input's shape ((H, W, C) or (D,)); return a :class:`Plan`.

        Raises ValueError naming the layer and the resolution when a layer does not fit. Cached per shape.
        """
        return _plan(self, _input_shape(self, input_shape))


def _input_shape(arch, input_shape):
    shape = tuple(int(s) for s in input_shape)
    if arch.convolutional and len(shape) != 3:
        raise ValueError(f"a convolutional arch takes images of shape (H, W, C); got per-input shape {shape}")
    if not arch.convolutional and len(shape) != 1:
        raise ValueError(f"a fully-connected arch takes vectors of shape (D,); got per-input shape {shape}")
    if min(shape) < 1:
        raise ValueError(f"input shape must be positive; got {shape}")
    return shape


@functools.lru_cache(maxsize=256)
def _plan(arch, shape):
    from .. import _core
    prog = _core.compile_program(arch.program_text(shape))
    none = lambda v: None if v < 0 else v  # noqa: E731
    layers = tuple(LayerShape(i, l, none(a), none(b), none(c), none(d))
                   for i, (l, (a, b, c, d)) in enumerate(zip(arch.layers, prog.layer_shapes())))
    return Plan(arch, shape, layers, prog)


def serial(*layers):
    """Compose layers into an :class:`Arch`, checking their order.

    A convolutional net is ``[Conv | ReLU | AvgPool | GaussianPool]*``, one readout (GlobalAvgPool or
    Flatten), then ``[Dense | ReLU]*``; a fully-connected net is ``[Dense | ReLU]+`` on (N, D) inputs. Every
    ReLU needs a Gaussian input: a Conv or Dense before it, possibly through pooling or the readout.
    """
    if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
        layers = tuple(layers[0])
    return Arch(tuple(layers))
