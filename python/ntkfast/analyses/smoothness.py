"""Smoothness of the kernel feature maps (Bietti & Mairal 2019, Props. 3-4).

For nearby inputs x and y = x + delta |x| v (v a random unit direction orthogonal to x), the NTK feature map
satisfies only ||Phi(x) - Phi(y)|| ~ ||x - y||^(1/2) (it is 1/2-Hölder, not Lipschitz: the ratio
||Phi(x) - Phi(y)|| / ||x - y|| blows up like ||x - y||^(-1/2)), while the NNGP/CKN (arc-cosine-1) map is Lipschitz (the ratio
stays bounded). :func:`holder_curve` measures the relative feature distance over a range of relative input
distances with :func:`ntkfast.gram`, :func:`fit_slope` fits the log-log slope.

Other activations (``smoothness_experiment(..., activation=['relu', 'relu2', 'erf'])``, ``ntkfast smoothness
--activation relu,relu2,erf,gelu``): the same nets with every ReLU replaced (:func:`ntkfast.spectrum.with_activation`).
The NTK is 1/2-Hölder exactly when phi' jumps (ReLU, abs, leaky ReLU: its derivative kernel has a (1 - t)^(1/2)
term); with phi' continuous (ReLU^2, erf, gelu, sin) it is Lipschitz. A discontinuous phi (sign) makes the NNGP
itself 1/2-Hölder per layer (1/4 through two layers).

Precision: the NTK term is ``T (pi - theta) / (2 pi)`` with theta ~ sqrt(2 (1 - rho)); a rounding error e in
rho moves theta by about sqrt(2 e) near rho = 1, so these measurements need ``dtype='float64'`` (the
default here): float32 (e ~ 6e-8) would blur theta by ~3e-4 and flatten the curve for delta below ~1e-3.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..kernel.inputs import Kernels
from ..validation import check_int

__all__ = ["directions", "perturb", "holder_curve", "fit_slope", "HolderCurve", "smoothness_experiment",
           "smoothness_table", "DEFAULT_DELTAS"]

DEFAULT_DELTAS = tuple(np.logspace(-6, -1, 11).tolist())


def directions(x, n_dirs=2, seed=0):
    """``n_dirs`` random unit directions orthogonal to x (shape of x): Gaussian vectors with their component
    along x removed, normalized.

    They come from a stream of their own (a child of ``numpy.random.SeedSequence(seed)``), independent of
    ``numpy.random.default_rng(seed)``, which may have drawn x itself: were they drawn from the same stream
    as x, the first one would be x's own direction (a radial perturbation, along which a homogeneous kernel's
    feature map is exactly linear). Orthogonal directions measure the angular smoothness the paper's
    Props. 3-4 are about (|y| = |x| sqrt(1 + delta^2), so the radius changes only to second order).
    """
    x = np.asarray(x, dtype=np.float64)
    u = x.ravel() / np.linalg.norm(x)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    V = rng.standard_normal((n_dirs, u.size))
    if u.size < 2:
        raise ValueError(f"x must have at least 2 entries to have directions orthogonal to it; got shape {x.shape}")
    V -= np.outer(V @ u, u)
    V -= np.outer(V @ u, u)          # twice: removes the rounding left by the first projection
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    return V.reshape((n_dirs,) + x.shape)


def perturb(x, deltas, n_dirs=2, seed=0):
    """Perturbed copies y = x + delta |x| v of one input x (any shape S), for each delta and each of
    ``n_dirs`` random unit directions v orthogonal to x (:func:`directions`, seeded by ``seed``).
    Returns float64 (len(deltas) * n_dirs,) + S, ordered delta-major."""
    x = np.asarray(x, dtype=np.float64)
    deltas = _deltas(deltas)
    n_dirs = check_int(n_dirs, "n_dirs", 1, expected="a positive int")
    nx = np.linalg.norm(x)
    if not np.isfinite(nx) or nx == 0:
        raise ValueError("x must be finite and nonzero")
    V = directions(x, n_dirs, seed)
    return np.stack([x + d * nx * V[j] for d in deltas for j in range(n_dirs)])


def _deltas(deltas):
    d = np.asarray(deltas, dtype=np.float64)
    if d.ndim != 1 or len(d) < 2 or np.any(~np.isfinite(d)) or np.any(d <= 0):
        raise ValueError(f"deltas must be a 1-d list of at least 2 positive numbers; got {deltas!r}")
    return d


@dataclasses.dataclass
class HolderCurve:
    """deltas (D,): relative input distances ||x - y|| / ||x||; dist: Kernels of (D, n_dirs) relative
    feature distances ||Phi(x) - Phi(y)|| / ||Phi(x)||; label: a name for tables and plots; arch_name and
    activation (optional): the architecture and activation names, used to group curves in plots."""
    label: str
    deltas: np.ndarray
    dist: Kernels
    arch_name: str = ""
    activation: str = ""

    def slope(self, kind, dmin=None, dmax=None):
        return fit_slope(self.deltas, getattr(self.dist, kind), dmin=dmin, dmax=dmax)


def holder_curve(x, *, arch, deltas=DEFAULT_DELTAS, n_dirs=2, seed=0, device="auto", dtype="float64", label="",
                 progress=None):
    """Relative feature distances of ``arch``'s NNGP and NTK between x (one input: (H, W, C) image or (D,)
    vector) and its perturbations (see :func:`perturb`). Returns a :class:`HolderCurve`.

    ``progress``: None, or a callable ``progress(k)`` told each time k more deltas are done."""
    from .stability import relative_distances
    deltas = _deltas(deltas)
    x = np.asarray(x, dtype=np.float64)
    Y = perturb(x, deltas, n_dirs, seed)
    if progress is None:
        d = relative_distances(x[None], Y, arch=arch, device=device, dtype=dtype)
        dist = [np.asarray(k)[0] for k in d]
    else:                      # a few deltas per call, so that a bar can move
        step = max(1, len(deltas) // 4) * n_dirs
        parts = []
        for i in range(0, len(Y), step):
            parts.append([np.asarray(k)[0] for k in relative_distances(x[None], Y[i:i + step], arch=arch,
                                                                        device=device, dtype=dtype)])
            progress(len(Y[i:i + step]) // n_dirs)
        dist = [np.concatenate([p[j] for p in parts]) for j in range(2)]
    return HolderCurve(label, deltas, Kernels(*(k.reshape(len(deltas), n_dirs) for k in dist)))


def fit_slope(deltas, dist, dmin=None, dmax=None):
    """Least-squares slope of log(mean over directions of dist) against log(delta), on dmin <= delta <= dmax
    (all by default). deltas (D,), dist (D,) or (D, n_dirs). Returns a float: 1 for a Lipschitz map, 1/2 for
    the NTK (its ratio dist/delta then has slope -1/2)."""
    deltas = _deltas(deltas)
    dist = np.asarray(dist, dtype=np.float64)
    m = dist.reshape(len(deltas), -1).mean(axis=1)
    sel = (m > 0) & (deltas <= (np.inf if dmax is None else dmax)) & (deltas >= (0 if dmin is None else dmin))
    if sel.sum() < 2:
        raise ValueError("fit_slope needs at least 2 positive distances in the range")
    return float(np.polyfit(np.log(deltas[sel]), np.log(m[sel]), 1)[0])


def smoothness_experiment(image, vector, *, conv_arch="bietti_mairal", fc_depth=2, activation="relu",
                          deltas=DEFAULT_DELTAS, n_dirs=2, seed=0, device="auto", dtype="float64", progress=False):
    """Hölder curves for ``presets.fc(fc_depth)`` at ``vector`` (D,) and for the convolutional preset
    ``conv_arch`` (a name for :func:`ntkfast.presets.by_name`, or None to skip it) at ``image`` (H, W, C).

    ``activation``: a name among :data:`ntkfast.spectrum.ACTIVATION_NAMES` ('relu', 'relu2', 'erf', 'gelu',
    ...), an activation layer, or a list of them: each replaces every ReLU of both nets
    (:func:`ntkfast.spectrum.with_activation`). Returns a list of :class:`HolderCurve`: the fc curves (one per
    activation), then the conv curves; labels are ``fc{depth}`` and ``conv_arch`` for ReLU alone (the
    default), else ``'fc2 erf'``, ``'bietti_mairal erf'``, .... ``progress``: a bar over the deltas of every
    curve (stderr)."""
    from ..kernel import presets
    from ..progress import steps
    from .spectrum import activation_label, activation_layer, with_activation
    deltas = _deltas(deltas)
    acts = list(activation) if isinstance(activation, (list, tuple)) else [activation]
    if not acts:
        raise ValueError("activation must name at least one activation; got an empty list")
    layers = [activation_layer(a) for a in acts]
    names = [activation_label(l) for l in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"activation must list distinct activations; got {names}")
    plain = names == ["relu"]
    nets = [(f"fc{fc_depth}", presets.fc(fc_depth), vector)]
    if conv_arch is not None:
        nets.append((str(conv_arch), presets.by_name(conv_arch), image))
    curves = []
    with steps(len(nets) * len(layers) * len(deltas), "smoothness", enabled=bool(progress)) as bar:
        feed = bar.update if progress else None
        for arch_name, base, x in nets:
            for name, layer in zip(names, layers):
                curves.append(holder_curve(x, arch=with_activation(base, layer), deltas=deltas, n_dirs=n_dirs,
                                           seed=seed, device=device, dtype=dtype, progress=feed,
                                           label=arch_name if plain else f"{arch_name} {name}"))
                curves[-1].arch_name, curves[-1].activation = arch_name, name
    return curves


def smoothness_table(curves, dmin=1e-5, dmax=1e-3):
    """Text table: per curve and kernel, the fitted slope of ||dPhi|| vs ||dx|| (dmin <= delta <= dmax; below
    ~1e-5 the Lipschitz maps' distances, ~delta^2 relative in K, reach float64 rounding) and the ratio
    ||dPhi|| / ||dx|| (relative) at the smallest and largest delta."""
    w = max([16] + [len(c.label) + 1 for c in curves])
    lines = [f"fits on {dmin:g} <= delta <= {dmax:g}; ratio = (||dPhi||/||Phi(x)||) / (||dx||/||x||)",
             f"{'arch':<{w}} {'kernel':<6} {'slope':>7} {'ratio exp.':>10} {'ratio@min':>10} {'ratio@max':>10}"]
    for c in curves:
        for kind in ("nngp", "ntk"):
            m = getattr(c.dist, kind).mean(axis=1)
            s = c.slope(kind, dmin, dmax)
            lines.append(f"{c.label:<{w}} {kind.upper():<6} {s:7.3f} {s - 1:10.3f} {m[0] / c.deltas[0]:10.3g} "
                         f"{m[-1] / c.deltas[-1]:10.3g}")
    return "\n".join(lines)
