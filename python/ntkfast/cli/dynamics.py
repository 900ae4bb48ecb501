"""``ntkfast dynamics``: spectral bias of the training dynamics, MNIST accuracy against time
(:mod:`ntkfast.analyses.dynamics`)."""
from __future__ import annotations

import time

from ..analyses.dynamics import format_degree_table, format_mnist_table, jsonable, mnist_study, sphere_study
from ..analyses.plots import plot_dynamics_study
from ..validation import check_int
from .common import add_device_arg


def register_cli(sub):
    """Add the ``dynamics`` subcommand (see :mod:`ntkfast.cli`)."""
    import argparse
    p = sub.add_parser(
        "dynamics", help="training dynamics of the infinite network: spectral bias on the sphere, MNIST vs time",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Gradient flow of infinitely wide ReLU nets (ntkfast.predict) on a target made of one\n"
                    "spherical harmonic of each degree 1..kmax (equal norms) on S^{p-1}: the time at which each\n"
                    "degree's error halves against 1/mu_k (Funk-Hecke eigenvalues, ntkfast.spectrum), for the\n"
                    "two-layer NTK (mu_k = 0 at odd k >= 3), a deeper fc NTK and a two-layer NTK with bias;\n"
                    "then (with --data) MNIST test accuracy against training time for the NTK and CKN/NNGP of\n"
                    "presets.bietti_mairal().",
        epilog="example:\n  ntkfast dynamics --data ../shared/data/mnist --out docs/img/dynamics.png")
    p.add_argument("--n", type=int, default=1000, help="training points on the sphere (default 1000)")
    p.add_argument("--p", type=int, default=3, help="ambient dimension, sphere S^{p-1} (default 3)")
    p.add_argument("--kmax", type=int, default=6, help="target degrees 1..kmax (default 6)")
    p.add_argument("--depth", type=int, default=2, help="depth of the deeper fc NTK (default 2: presets.fc(2))")
    p.add_argument("--bias", type=float, default=1.0, help="b_std of the first layer of the bias kernel (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the points and the target (default 0)")
    p.add_argument("--data", default=None, help="MNIST IDX directory for the accuracy-vs-time part (skipped "
                                                "without it), e.g. ../shared/data/mnist")
    p.add_argument("--train", type=int, default=200, help="MNIST training images (first of t10k; default 200)")
    p.add_argument("--test", type=int, default=100, help="MNIST test images (last of t10k; default 100)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of the MNIST Grams (default float32; the dynamics always run in float64)")
    add_device_arg(p, default="cpu", help="where the MNIST Grams are computed: auto, cpu, cuda or cuda:N (default "
                                        "cpu)")
    p.add_argument("--gram-cache", default=None, metavar="PATH.npz",
                   help="keep the MNIST Grams in this .npz file: read when it holds the same split and dtype, "
                        "else computed and written")
    p.add_argument("--out", default="dynamics.png", help="PNG path of the plot (default dynamics.png)")
    p.add_argument("--json", default=None, help="also write the measured figures to this JSON file")
    p.set_defaults(func=_cli)


def _cli(args):
    check_int(args.n, "--n", 10)
    check_int(args.p, "--p", 2)
    check_int(args.kmax, "--kmax", 1)
    check_int(args.depth, "--depth", 2)
    if not str(args.out).lower().endswith(".png"):
        raise ValueError(f"--out must be a .png path; got {args.out!r}")
    if args.data is not None:
        import os
        if not os.path.isdir(args.data):
            raise FileNotFoundError(f"--data must be an MNIST IDX directory; {args.data!r} is not a directory")
    t0 = time.perf_counter()
    print(f"ntkfast dynamics: sphere S^{args.p - 1}, n = {args.n}, degrees 1..{args.kmax}, seed {args.seed}",
          flush=True)
    sphere = sphere_study(args.n, args.p, args.kmax, args.depth, args.bias, args.seed,
                          progress=lambda m: print(m, flush=True))
    print(format_degree_table(sphere))
    mnist = None
    if args.data is not None:
        print(f"MNIST: bietti_mairal(), train {args.train} (first of t10k), test {args.test} (last)", flush=True)
        mnist = mnist_study(args.data, args.train, args.test, dtype=args.dtype, device=args.device,
                            gram_cache=args.gram_cache, progress=lambda m: print(m, flush=True))
        print(format_mnist_table(mnist))
    plot_dynamics_study(sphere, mnist, args.out)
    print(f"plot written to {args.out}")
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump({"command": "ntkfast dynamics " + " ".join(_argv_of(args)), "sphere": jsonable(sphere),
                       "mnist": jsonable(mnist)}, f, indent=1)
        print(f"figures written to {args.json}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


def _argv_of(args):
    out = []
    for key in ("n", "p", "kmax", "depth", "bias", "seed", "data", "train", "test", "dtype", "gram_cache", "out",
                "json"):
        v = getattr(args, key)
        if v is not None:
            out.append(f"--{key.replace('_', '-')} {v}")
    return out
