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
import numbers

import numpy as np

from ..kernel.inputs import Kernels

__all__ = ["directions", "perturb", "holder_curve", "fit_slope", "HolderCurve", "smoothness_experiment",
           "smoothness_table", "plot_smoothness", "DEFAULT_DELTAS", "register_cli"]

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
    if isinstance(n_dirs, bool) or not isinstance(n_dirs, numbers.Integral) or n_dirs < 1:
        raise ValueError(f"n_dirs must be a positive int; got {n_dirs!r}")
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


def _default_inputs(data=None, dim=32, seed=0, image=True):
    """(conv image (28, 28, 1) or None without ``image``, fc vector (dim,) on the sphere of radius sqrt(dim))."""
    img = None
    if image:
        from .. import data as D
        from .stability import to_mnist_size
        X, _ = D.load(data)
        if X.shape[1:3] == (8, 8):
            X = to_mnist_size(X)
        img = D.normalize(X[:1], "center_scale")[0]
    v = np.random.default_rng(seed).standard_normal(dim)
    return img, v / np.linalg.norm(v) * np.sqrt(dim)


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


def plot_smoothness(curves, path, dmin=1e-5, dmax=1e-3, dpi=90):
    """Log-log plot of the ratio ||dPhi|| / ||dx|| (relative) against ||dx|| with fitted slopes; PNG. Curves of
    several activations (:func:`smoothness_experiment` with a list) get one panel per architecture."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if len({c.activation for c in curves if c.activation}) > 1:
        return _plot_by_arch(curves, path, dmin, dmax, dpi, plt)
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    slopes = []
    for i, c in enumerate(curves):
        for kind, mk, ls in (("nngp", "s", "--"), ("ntk", "o", "-")):
            m = getattr(c.dist, kind).mean(axis=1)
            s = c.slope(kind, dmin, dmax)
            name = "NNGP" if c.label.startswith("fc") and kind == "nngp" else ("CKN" if kind == "nngp" else "NTK")
            slopes.append(f"{c.label} {name} {s:.3f}")
            ax.loglog(c.deltas, m / c.deltas, mk + ls, ms=3.5, color=f"C{i}",
                      label=f"{c.label} {name}: slope {s:.3f}, ratio ~ dx^{s - 1:+.3f}")
    ax.axvspan(dmin, dmax, color="0.9", zorder=0, label=f"fit range {dmin:g} .. {dmax:g}")
    ax.set_xlabel("relative input distance ||x - y|| / ||x||")
    ax.set_ylabel("||Phi(x) - Phi(y)|| / ||Phi(x)||  over  ||x - y|| / ||x||")
    half = (len(slopes) + 1) // 2
    ax.set_title("measured log-log slopes of ||dPhi|| against ||dx||:\n" + ", ".join(slopes[:half]) + "\n"
                 + ", ".join(slopes[half:]), fontsize=9)
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _plot_by_arch(curves, path, dmin, dmax, dpi, plt):
    groups = list(dict.fromkeys(c.arch_name or c.label for c in curves))
    acts = list(dict.fromkeys(c.activation for c in curves))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.6 * len(groups), 5.2), squeeze=False)
    for ax, g in zip(axes[0], groups):
        for c in (c for c in curves if (c.arch_name or c.label) == g):
            i = acts.index(c.activation)
            for kind, mk, ls in (("nngp", "s", "--"), ("ntk", "o", "-")):
                m = getattr(c.dist, kind).mean(axis=1)
                s = c.slope(kind, dmin, dmax)
                name = "NNGP" if g.startswith("fc") and kind == "nngp" else ("CKN" if kind == "nngp" else "NTK")
                ax.loglog(c.deltas, m / c.deltas, mk + ls, ms=3, color=f"C{i}", lw=1.1,
                          label=f"{c.activation} {name}: slope {s:.3f}")
        ax.axvspan(dmin, dmax, color="0.9", zorder=0)
        ax.set_xlabel("relative input distance ||x - y|| / ||x||")
        ax.set_ylabel("||Phi(x) - Phi(y)|| / ||Phi(x)||  over  ||x - y|| / ||x||")
        ax.set_title(f"{g}: measured log-log slopes of ||dPhi|| vs ||dx||\n(fit range {dmin:g} .. {dmax:g}, "
                     f"shaded)", fontsize=9)
        ax.legend(fontsize=7, ncol=2, loc="upper right")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def register_cli(sub):
    p = sub.add_parser("smoothness", help="Hölder smoothness of NTK vs CKN feature maps (Props. 3-4)",
                       description="||Phi(x) - Phi(y)|| against ||x - y|| for nearby inputs, for the fc NTK/NNGP "
                                   "and a convolutional preset: fitted log-log slopes (1/2 for the NTK, 1 for "
                                   "the NNGP/CKN) and a plot of the ratio.")
    p.add_argument("--data", default=None, help="image source for the convolutional base point (default: the "
                                                "embedded digits, upsampled to 28x28)")
    p.add_argument("--arch", default="bietti_mairal", help="convolutional preset name (default bietti_mairal); "
                                                          "'none' skips the convolutional net")
    p.add_argument("--activation", default="relu",
                   help="comma-separated activations replacing every ReLU of both nets, among relu, relu2, relu3, "
                        "abs, leaky, sign, erf, gelu, sin, cos (relu2 = RectifiedMonomial(2), leaky = "
                        "LeakyRelu(0.1)); default relu")
    p.add_argument("--fc-depth", type=int, default=2, help="depth of the fc preset (default 2)")
    p.add_argument("--dim", type=int, default=32, help="input dimension of the fc base point (default 32)")
    p.add_argument("--deltas", default="1e-6,1e-1,11",
                   help="relative input distances as 'min,max,count' (log-spaced; default 1e-6,1e-1,11)")
    p.add_argument("--dmin", type=float, default=1e-5, help="smallest delta used in the slope fits (default 1e-5)")
    p.add_argument("--dmax", type=float, default=1e-3, help="largest delta used in the slope fits (default 1e-3)")
    p.add_argument("--n-dirs", type=int, default=2, help="random directions per delta (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64", help="default float64")
    p.add_argument("--out", default="smoothness.png", help="PNG path of the plot (default smoothness.png); "
                                                           "checked before any work")
    p.add_argument("--progress", action="store_true", help="show a progress bar (on stderr)")
    p.set_defaults(func=_cli)


def _cli(args):
    from ..cli.core import check_out_option
    check_out_option(args.out, None, "--out", (".png",), gram=False)
    try:
        lo, hi, n = args.deltas.split(",")
        deltas = np.logspace(np.log10(float(lo)), np.log10(float(hi)), int(n))
    except ValueError:
        raise ValueError(f"--deltas must be 'min,max,count'; got {args.deltas!r}") from None
    if args.dim < 2:
        raise ValueError(f"--dim must be >= 2; got {args.dim}")
    from .spectrum import parse_activations
    acts = parse_activations(args.activation, "--activation")
    conv = None if args.arch.strip().lower() == "none" else args.arch
    if conv is not None:
        from ..kernel.presets import by_name
        by_name(conv)                      # an unknown name fails here, before any work
    img, vec = _default_inputs(args.data, args.dim, args.seed, image=conv is not None)
    curves = smoothness_experiment(img, vec, conv_arch=conv, fc_depth=args.fc_depth, activation=acts,
                                   deltas=deltas, n_dirs=args.n_dirs, seed=args.seed, device=args.device,
                                   dtype=args.dtype, progress=args.progress)
    where = "" if conv is None else f", {conv} on {args.data or 'digits'} image 0 (center_scale)"
    print(f"ntkfast smoothness: fc{args.fc_depth} on a point of the sphere of radius sqrt({args.dim})"
          f"{where}, dtype={args.dtype}, {args.n_dirs} directions orthogonal to x per delta"
          + ("" if acts == ["relu"] else f"; activations {', '.join(acts)} in place of every ReLU"))
    print(smoothness_table(curves, args.dmin, args.dmax))
    plot_smoothness(curves, args.out, args.dmin, args.dmax)
    print(f"plot written to {args.out}")
    return 0
