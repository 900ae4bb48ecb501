"""``ntkfast spectrum``: Mercer eigenvalues on the sphere (:mod:`ntkfast.analyses.spectrum`)."""
from __future__ import annotations

import numpy as np

from ..analyses.plots import plot_activation_spectrum, plot_spectrum
from ..analyses.spectrum import (ACTIVATION_NAMES, activation_spectrum, activation_table, format_activation_table,
                                format_table, parse_activations, spectrum, spectrum_table)
from ..validation import check_int
from .common import add_device_arg, add_png_out_arg


def register_cli(sub):
    p = sub.add_parser("spectrum", help="Mercer eigenvalues of ReLU dot-product kernels on the sphere (Prop. 5)",
                       description="Mercer eigenvalues mu_k of kappa0, kappa1, the two-layer ReLU NTK and deeper "
                                   "fc NTK/NNGP kernels on S^{p-1} (Funk-Hecke, Gauss-Legendre in the angle); "
                                   "prints decay fits and parity zeros, writes a log-log plot.")
    p.add_argument("--p", type=int, default=3, help="ambient dimension p >= 2 (sphere S^{p-1}; default 3)")
    p.add_argument("--kmax", type=int, default=200, help="largest degree k (default 200)")
    p.add_argument("--kmin", type=int, default=None, help="smallest k in the decay fits (default kmax/10, >= 10)")
    p.add_argument("--depth", type=int, default=3, help="depth of the deeper fc NTK/NNGP shown (default 3)")
    add_png_out_arg(p, "spectrum.png")
    p.add_argument("--activation", default=None,
                   help="comma-separated activations among " + ", ".join(ACTIVATION_NAMES) + " (relu2 = "
                        "RectifiedMonomial(2), leaky = LeakyRelu(0.1)): show instead the two-layer kernel of "
                        "serial(Dense(W_STD), act, Dense()) for each, computed by ntkfast.gram (default: the "
                        "closed-form ReLU kernels above)")
    p.add_argument("--kind", choices=("ntk", "nngp"), default="ntk",
                   help="with --activation: the two-layer NTK (default) or NNGP")
    p.add_argument("--w-std", type=float, default=2 ** 0.5,
                   help="with --activation: W_std of the first Dense, the pre-activation standard deviation "
                        "(default sqrt(2), as presets.fc; 1 gives t E[phi' phi'] + E[phi phi] at unit variance)")
    p.add_argument("--window", default="20,40",
                   help="with --activation: degrees 'lo,hi' of the first power-law fit (default 20,40)")
    add_device_arg(p, help="with --activation: where the kernels are evaluated: auto, cpu, cuda or cuda:N "
                           "(default auto)")
    p.set_defaults(func=_cli)


def _cli(args):
    check_int(args.p, "--p", 2)
    check_int(args.kmax, "--kmax", 20)
    check_int(args.depth, "--depth", 1)
    from .common import check_out_option
    check_out_option(args.out, None, "--out", (".png",), gram=False)
    if args.activation is not None:
        return _cli_activation(args)
    kernels = [("kappa0", 1), ("kappa1", 1), ("ntk", 1)]
    if args.depth > 1:
        kernels += [("ntk", args.depth), ("nngp", args.depth)]
    sp = spectrum(args.p, args.kmax, kernels)
    kmin = args.kmin or max(10, args.kmax // 10)
    print(format_table(spectrum_table(sp, kmin), args.p, kmin, args.kmax))
    return _finish(sp, 22, plot_spectrum, args.out)


def _cli_activation(args):
    names = parse_activations(args.activation, "--activation")
    try:
        lo, hi = (int(v) for v in args.window.split(","))
    except ValueError:
        raise ValueError(f"--window must be 'lo,hi' (two ints); got {args.window!r}") from None
    if not 1 <= lo < hi <= args.kmax:
        raise ValueError(f"--window must satisfy 1 <= lo < hi <= --kmax ({args.kmax}); got {args.window!r}")
    if not (0 < args.w_std < np.inf):
        raise ValueError(f"--w-std must be a positive finite number; got {args.w_std}")
    kmin = args.kmin or max(10, args.kmax // 10)
    sp = activation_spectrum(names, args.p, args.kmax, kind=args.kind, w_std=args.w_std, device=args.device)
    rows = activation_table(sp, (lo, hi), kmin)
    print(format_activation_table(rows, args.p, args.kind, args.w_std, (lo, hi), kmin, args.kmax))
    return _finish(sp, 10, plot_activation_spectrum, args.out)


def _finish(sp, width, plot, out):
    """Print the first eigenvalues of every kernel of ``sp`` and write its plot to ``out``; exit status 0."""
    print("first eigenvalues (k = 0..8):")
    for kd in sp.kernels:
        print(f"  {kd.label:<{width}} " + " ".join(f"{m:.3e}" for m in sp.mu[kd.label][:9]))
    plot(sp, out)
    print(f"plot written to {out}")
    return 0
