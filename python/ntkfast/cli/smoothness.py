"""``ntkfast smoothness``: Hölder smoothness of the feature maps (:mod:`ntkfast.analyses.smoothness`)."""
from __future__ import annotations

import numpy as np

from ..analyses.plots import plot_smoothness
from ..analyses.smoothness import smoothness_experiment, smoothness_table
from .common import add_analysis_args


def _default_inputs(data=None, dim=32, seed=0, image=True):
    """(conv image (28, 28, 1) or None without ``image``, fc vector (dim,) on the sphere of radius sqrt(dim))."""
    img = None
    if image:
        from .. import data as D
        from ..analyses.stability import to_mnist_size
        X, _ = D.load(data)
        if X.shape[1:3] == (8, 8):
            X = to_mnist_size(X)
        img = D.normalize(X[:1], "center_scale")[0]
    v = np.random.default_rng(seed).standard_normal(dim)
    return img, v / np.linalg.norm(v) * np.sqrt(dim)


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
    add_analysis_args(p, "smoothness.png")
    p.set_defaults(func=_cli)


def _cli(args):
    from .common import check_out_option
    check_out_option(args.out, None, "--out", (".png",), gram=False)
    try:
        lo, hi, n = args.deltas.split(",")
        deltas = np.logspace(np.log10(float(lo)), np.log10(float(hi)), int(n))
    except ValueError:
        raise ValueError(f"--deltas must be 'min,max,count'; got {args.deltas!r}") from None
    if args.dim < 2:
        raise ValueError(f"--dim must be >= 2; got {args.dim}")
    from ..analyses.spectrum import parse_activations
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
