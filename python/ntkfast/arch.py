"""Architecture description: layers, ``serial``, validation and compilation to a layer program.

Every layer carries the kernel rules of DESIGN section 1 for both the NNGP/CKN kernel (S) and the NTK (T).
An architecture is built with :func:`serial` and is checked against an input shape before any heavy work
(:meth:`Arch.plan`). :meth:`Arch.program` turns a plan into the plain description that the compiled
backends execute (stages of Conv/ReLU between poolings, a readout, then scalar Dense/ReLU layers).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Optional, Tuple

__all__ = ["Layer", "Conv", "ReLU", "AvgPool", "GaussianPool", "GlobalAvgPool", "Flatten", "Dense",
           "serial", "Arch", "Plan"]

_PADDINGS = ("SAME", "VALID", "CIRCULAR")


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


class Layer:
    """Base class of all layers (immutable value objects)."""

    spatial = False   # acts on images (before the readout)
    readout = False   # turns an image state into a scalar state


@dataclass(frozen=True)
class Conv(Layer):
    """k x k convolution: ``S' = W_std^2 / (kh kw) * sum_v S[u+v, u'+v] + b_std^2``, ``T' = W_std^2/(kh kw) sum_v T + S'``.

    ``k`` is an int or ``(kh, kw)``; ``padding`` is 'SAME' (zeros, JAX's split ``lo = (k-1)//2``),
    'VALID' (output shrinks by k-1) or 'CIRCULAR' (wrap-around, same split as SAME).
    """

    k: object = 3
    W_std: float = 2 ** 0.5
    b_std: float = 0.0
    padding: str = "SAME"
    spatial = True

    def __post_init__(self):
        object.__setattr__(self, "k", _pair(self.k, "k", "Conv"))
        object.__setattr__(self, "W_std", _real(self.W_std, "W_std", "Conv", positive=True))
        object.__setattr__(self, "b_std", _real(self.b_std, "b_std", "Conv", positive=False))
        if not isinstance(self.padding, str) or self.padding.upper() not in _PADDINGS:
            raise ValueError(f"Conv: padding must be one of {_PADDINGS}; got {self.padding!r}")
        object.__setattr__(self, "padding", self.padding.upper())


@dataclass(frozen=True)
class ReLU(Layer):
    """ReLU: ``S' = n kappa1(rho) / 2``, ``T' = T kappa0(rho) / 2`` with the angle from atan2 (DESIGN section 1)."""


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

    def __post_init__(self):
        object.__setattr__(self, "p", _pair(self.p, "p", "AvgPool"))
        stride = self.p if self.stride is None else _pair(self.stride, "stride", "AvgPool")
        object.__setattr__(self, "stride", stride)
        if not isinstance(self.padding, str) or self.padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"AvgPool: padding must be 'SAME' or 'VALID'; got {self.padding!r}")
        object.__setattr__(self, "padding", self.padding.upper())


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

    def __post_init__(self):
        if isinstance(self.stride, bool) or not isinstance(self.stride, numbers.Integral) or self.stride < 1:
            raise ValueError(f"GaussianPool: stride must be an int >= 1; got {self.stride!r}")
        object.__setattr__(self, "stride", int(self.stride))
        if self.sigma is not None:
            object.__setattr__(self, "sigma", _real(self.sigma, "sigma", "GaussianPool", positive=True))

    def taps(self):
        """The 2s+1 normalized tap weights, for v = -s .. s."""
        s = self.stride
        sigma = self.sigma if self.sigma is not None else s / math.sqrt(2.0)
        w = [math.exp(-v * v / (2.0 * sigma * sigma)) for v in range(-s, s + 1)]
        tot = math.fsum(w)
        return [x / tot for x in w]


@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """Readout: ``K = mean over all (u, u')`` of the state."""

    readout = True


@dataclass(frozen=True)
class Flatten(Layer):
    """Readout: ``K = mean over u of S[u, u]`` (only the diagonal positions)."""

    readout = True


@dataclass(frozen=True)
class Dense(Layer):
    """Fully-connected layer: ``S' = W_std^2 S + b_std^2``, ``T' = W_std^2 T + S'``.

    The default (W_std=1, b_std=0) is the readout of neural-tangents' ``stax.Dense(1)``: it adds S to T.
    """

    W_std: float = 1.0
    b_std: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "W_std", _real(self.W_std, "W_std", "Dense", positive=True))
        object.__setattr__(self, "b_std", _real(self.b_std, "b_std", "Dense", positive=False))


@dataclass(frozen=True)
class LayerShape:
    """Resolution of the state entering a layer (h, w); ``None`` for scalar (fully-connected) states."""

    index: int
    layer: Layer
    h_in: Optional[int]
    w_in: Optional[int]
    h_out: Optional[int]
    w_out: Optional[int]


@dataclass(frozen=True)
class Plan:
    """An architecture checked against an input shape: per-layer resolutions and the input kind."""

    arch: "Arch"
    input_shape: Tuple[int, ...]
    layers: Tuple[LayerShape, ...]

    @property
    def convolutional(self):
        return self.arch.convolutional


def _pool_axis(layer, axis, n):
    """1-D pooling description along one axis of size n: (n_out, stride, origin, taps)."""
    if isinstance(layer, GaussianPool):
        s = layer.stride
        return n // s - 1, s, 0, layer.taps()
    p, s = layer.p[axis], layer.stride[axis]
    if layer.padding == "VALID":
        return (n - p) // s + 1, s, 0, [1.0 / p] * p
    n_out = -(-n // s)
    pad = max((n_out - 1) * s + p - n, 0)
    return n_out, s, -(pad // 2), [1.0 / p] * p


@dataclass(frozen=True)
class Arch:
    """A sequence of layers (build it with :func:`serial`). Immutable and hashable."""

    layers: Tuple[Layer, ...] = field(default_factory=tuple)

    @property
    def convolutional(self):
        return any(l.spatial or l.readout for l in self.layers)

    @property
    def circular(self):
        return any(isinstance(l, Conv) and l.padding == "CIRCULAR" for l in self.layers)

    def __repr__(self):
        return "serial(" + ", ".join(repr(l) for l in self.layers) + ")"

    def plan(self, input_shape):
        """Check this architecture against one input's shape ((H, W, C) or (D,)); return a :class:`Plan`.

        Raises ValueError naming the layer and the resolution when a layer does not fit.
        """
        shape = tuple(int(s) for s in input_shape)
        shapes = []
        if self.convolutional:
            if len(shape) != 3:
                raise ValueError(f"a convolutional arch takes images of shape (H, W, C); got per-input shape {shape}")
            h, w = shape[0], shape[1]
            scalar = False
            for i, layer in enumerate(self.layers):
                name = f"layer {i} ({type(layer).__name__})"
                if scalar:
                    shapes.append(LayerShape(i, layer, None, None, None, None))
                    continue
                if isinstance(layer, Conv):
                    ky, kx = layer.k
                    if layer.padding == "VALID":
                        ho, wo = h - ky + 1, w - kx + 1
                        if ho < 1 or wo < 1:
                            raise ValueError(f"{name}: a {ky}x{kx} VALID convolution does not fit the {h}x{w} "
                                             f"state there; the net is too deep for the image")
                    else:
                        ho, wo = h, w
                elif isinstance(layer, (AvgPool, GaussianPool)):
                    ho = _pool_axis(layer, 0, h)[0]
                    wo = _pool_axis(layer, 1, w)[0]
                    if ho < 1 or wo < 1:
                        raise ValueError(f"{name}: pooling the {h}x{w} state there leaves {max(ho, 0)}x{max(wo, 0)} "
                                         f"positions; the image is pooled too much (or too small: {shape[:2]})")
                elif isinstance(layer, ReLU):
                    ho, wo = h, w
                elif layer.readout:
                    ho = wo = None
                    scalar = True
                else:  # Dense before the readout of a conv net
                    raise ValueError(f"{name}: Dense acts on vectors; in a convolutional net it must come after the "
                                     f"readout (GlobalAvgPool or Flatten); use Conv(1) for a 1x1 convolution")
                shapes.append(LayerShape(i, layer, h, w, ho, wo))
                h, w = ho, wo
        else:
            if len(shape) != 1:
                raise ValueError(f"a fully-connected arch takes vectors of shape (D,); got per-input shape {shape}")
            shapes = [LayerShape(i, l, None, None, None, None) for i, l in enumerate(self.layers)]
        return Plan(self, shape, tuple(shapes))

    def program(self, input_shape):
        """Compile to the plain layer program the backends execute (a dict; see csrc/core/program.hpp)."""
        plan = self.plan(input_shape)
        circular = self.circular
        prog = {"H": 1, "W": 1, "C": int(plan.input_shape[-1]), "spatial": plan.convolutional,
                "circular": circular, "stages": [], "readout": "none", "scalar": []}
        if plan.convolutional:
            prog["H"], prog["W"] = plan.input_shape[0], plan.input_shape[1]
            stage = None
            for ls in plan.layers:
                layer = ls.layer
                if stage is None and ls.h_in is not None:
                    stage = {"h_in": ls.h_in, "w_in": ls.w_in, "ops": [], "pool": None}
                if isinstance(layer, Conv):
                    ky, kx = layer.k
                    pad = (0, 0) if layer.padding == "VALID" else ((ky - 1) // 2, (kx - 1) // 2)
                    stage["ops"].append({"kind": "conv", "ky": ky, "kx": kx, "pad_y": pad[0], "pad_x": pad[1],
                                         "scale": layer.W_std ** 2 / (ky * kx), "bias2": layer.b_std ** 2,
                                         "h_in": ls.h_in, "w_in": ls.w_in, "h_out": ls.h_out, "w_out": ls.w_out})
                elif isinstance(layer, ReLU) and ls.h_in is not None:
                    stage["ops"].append({"kind": "relu", "h_in": ls.h_in, "w_in": ls.w_in,
                                         "h_out": ls.h_out, "w_out": ls.w_out})
                elif isinstance(layer, (AvgPool, GaussianPool)):
                    ny, sy, oy, ty = _pool_axis(layer, 0, ls.h_in)
                    nx, sx, ox, tx = _pool_axis(layer, 1, ls.w_in)
                    if circular and (isinstance(layer, GaussianPool) or layer.padding != "VALID"
                                     or ny * sy != ls.h_in or nx * sx != ls.w_in):
                        raise NotImplementedError(
                            f"layer {ls.index}: with CIRCULAR convolutions the compiled backends support only VALID "
                            f"AvgPool whose stride tiles the state exactly; use ntkfast.reference for this net")
                    stage["pool"] = {"stride_y": sy, "origin_y": oy, "taps_y": ty,
                                     "stride_x": sx, "origin_x": ox, "taps_x": tx, "h_out": ny, "w_out": nx}
                    stage["h_out"], stage["w_out"] = ls.h_in, ls.w_in
                    prog["stages"].append(stage)
                    stage = {"h_in": ny, "w_in": nx, "ops": [], "pool": None}
                elif layer.readout:
                    stage["h_out"], stage["w_out"] = ls.h_in, ls.w_in
                    prog["stages"].append(stage)
                    stage = None
                    prog["readout"] = "gap" if isinstance(layer, GlobalAvgPool) else "flatten"
                else:
                    prog["scalar"].append(_scalar_op(layer))
            _plan_offsets(prog)
        else:
            prog["scalar"] = [_scalar_op(l) for l in self.layers]
        return prog


def _scalar_op(layer):
    if isinstance(layer, Dense):
        return {"kind": "dense", "w2": layer.W_std ** 2, "b2": layer.b_std ** 2}
    return {"kind": "relu"}


def _plan_offsets(prog):
    """Which offset planes each stage must carry, for pairs and for the per-image self recursion.

    Works backwards from the readout: Flatten needs the d = 0 plane, GlobalAvgPool every plane; a pooling
    of stride s with w taps needs old offsets s*d' + [-(w-1), w-1] for each needed new offset d'. The self
    recursion also needs d = 0 in every stage that has a ReLU (its diagonal feeds the ReLU of every pair),
    and the readout itself when a scalar ReLU follows it. Ranges are inclusive boxes (dy0, dy1, dx0, dx1);
    with CIRCULAR convolutions offsets are taken modulo the size, and a stage needs d = 0 or every plane.
    """
    stages, circular = prog["stages"], prog["circular"]
    scalar_relu = any(op["kind"] == "relu" for op in prog["scalar"])
    empty = None

    def union(a, b):
        if a is None:
            return b
        if b is None:
            return a
        return (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))

    def full(st):
        if circular:
            return (0, st["h_out"] - 1, 0, st["w_out"] - 1)
        return (-(st["h_out"] - 1), st["h_out"] - 1, -(st["w_out"] - 1), st["w_out"] - 1)

    def back(st, need):
        """Offsets of stage st that pooling into the next stage's needed range draws on."""
        if need is None:
            return None
        if circular:  # modular offsets: pooling mixes them; carry every plane
            return full(st)
        p = st["pool"]
        wy, wx = len(p["taps_y"]) - 1, len(p["taps_x"]) - 1
        hy, hx = st["h_out"] - 1, st["w_out"] - 1
        return (max(p["stride_y"] * need[0] - wy, -hy), min(p["stride_y"] * need[1] + wy, hy),
                max(p["stride_x"] * need[2] - wx, -hx), min(p["stride_x"] * need[3] + wx, hx))

    last = stages[-1]
    need_pair = full(last) if prog["readout"] == "gap" else (0, 0, 0, 0)
    need_self = (0, 0, 0, 0) if prog["readout"] == "flatten" or any(o["kind"] == "relu" for o in last["ops"]) \
        else empty
    if prog["readout"] == "gap" and scalar_relu:
        need_self = full(last)
    for i in range(len(stages) - 1, -1, -1):
        st = stages[i]
        if i < len(stages) - 1:
            need_pair = back(st, need_pair)
            need_self = back(st, need_self)
            if any(o["kind"] == "relu" for o in st["ops"]):
                need_self = union(need_self, (0, 0, 0, 0))
        st["need_pair"] = need_pair
        st["need_self"] = need_self if need_self is not None else (0, 0, 0, 0)
        st["self_active"] = need_self is not None


def serial(*layers):
    """Compose layers into an :class:`Arch`, checking their order.

    A convolutional net is ``[Conv | ReLU | AvgPool | GaussianPool]*``, one readout (GlobalAvgPool or
    Flatten), then ``[Dense | ReLU]*``; a fully-connected net is ``[Dense | ReLU]+`` on (N, D) inputs.
    """
    if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
        layers = tuple(layers[0])
    if not layers:
        raise ValueError("serial: expected at least one layer; got none")
    for i, l in enumerate(layers):
        if not isinstance(l, Layer):
            raise TypeError(f"serial: layer {i} must be an ntkfast layer (Conv, ReLU, ...); got {l!r}")
    readouts = [i for i, l in enumerate(layers) if l.readout]
    spatial = [i for i, l in enumerate(layers) if l.spatial]
    if spatial or readouts:
        if not readouts:
            raise ValueError("serial: a convolutional net needs a readout (GlobalAvgPool() or Flatten()) after its "
                             f"last spatial layer; got none in {list(map(type_name, layers))}")
        if len(readouts) > 1:
            raise ValueError(f"serial: expected exactly one readout; got {len(readouts)} at layers {readouts}")
        r = readouts[0]
        late = [i for i in spatial if i > r]
        if late:
            raise ValueError(f"serial: layer {late[0]} ({type_name(layers[late[0]])}) is spatial but comes after the "
                             f"readout at layer {r}; the readout must follow every Conv/pooling layer")
        for i in range(r):
            if isinstance(layers[i], Dense):
                raise ValueError(f"serial: layer {i} (Dense) comes before the readout at layer {r}; in a "
                                 f"convolutional net Dense layers go after GlobalAvgPool/Flatten")
    return Arch(tuple(layers))


def type_name(layer):
    return type(layer).__name__
