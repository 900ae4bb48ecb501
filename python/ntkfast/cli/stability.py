"""``ntkfast stability``: Bietti & Mairal's Fig. 1 (:mod:`ntkfast.analyses.stability`)."""
from __future__ import annotations

from ..analyses.plots import plot_fig1
from ..analyses.stability import fig1, fig1_table, to_mnist_size
from .common import add_analysis_args


def register_cli(sub):
    p = sub.add_parser("stability", help="stability to deformations in CKN and NTK feature spaces (Fig. 1)",
                       description="Bietti & Mairal's Fig. 1: mean relative feature-space distance of reference "
                                   "digits to their deformations, deformations plus translations (vs alpha), "
                                   "and digits of the same label and of any label; CKN (NNGP) and NTK panels.")
    p.add_argument("--data", default=None,
                   help="MNIST IDX directory, .npy/.npz file, or 'digits' (default: the embedded 8x8 digits, "
                        "upsampled to 20x20 and padded to 28x28)")
    p.add_argument("--arch", default="bietti_mairal", help="preset name (default bietti_mairal)")
    p.add_argument("--alphas", default="0,0.25,0.5,0.75,1,1.5,2,2.5,3",
                   help="comma-separated deformation amplitudes in pixels (default 0,0.25,...,3)")
    p.add_argument("--n-ref", type=int, default=3, help="reference digits (default 3)")
    p.add_argument("--n-deform", type=int, default=5, help="deformations per reference and alpha (default 5)")
    p.add_argument("--n-compare", type=int, default=100, help="comparison digits (default 100)")
    p.add_argument("--method", choices=("warp", "tangent"), default="warp",
                   help="interpolated warp x(u - tau(u)) or first-order tangent deformation (default warp)")
    p.add_argument("--smoothness", type=float, default=4.0, help="displacement field smoothness, pixels (default 4)")
    p.add_argument("--max-shift", type=int, default=2, help="largest translation per axis, pixels (default 2)")
    p.add_argument("--normalize", choices=("none", "center_scale"), default="center_scale",
                   help="per-image preprocessing after each transformation (default center_scale)")
    add_analysis_args(p, "stability.png")
    p.set_defaults(func=_cli)


def _cli(args):
    import time
    from .. import data as D
    from ..kernel import presets
    from .common import check_out_option
    check_out_option(args.out, None, "--out", (".png",), gram=False)
    try:
        alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    except ValueError:
        raise ValueError(f"--alphas must be comma-separated numbers; got {args.alphas!r}") from None
    arch = presets.by_name(args.arch)
    X, y = D.load(args.data)
    if y is None:
        raise ValueError("stability needs labels: give an IDX directory or an .npz with labels")
    note = ""
    if X.shape[1:3] == (8, 8):
        X = to_mnist_size(X)
        note = " (8x8 digits upsampled to 20x20, padded to 28x28)"
    t0 = time.perf_counter()
    res = fig1(X, y, arch=arch, alphas=alphas, n_ref=args.n_ref, n_deform=args.n_deform,
               n_compare=args.n_compare, method=args.method, smoothness=args.smoothness,
               max_shift=args.max_shift, normalize=args.normalize, seed=args.seed, device=args.device,
               dtype=args.dtype, progress=args.progress)
    dt = time.perf_counter() - t0
    src = args.data or D.DEFAULT_NAME
    print(f"ntkfast stability: arch={args.arch} data={src}{note} method={args.method} "
          f"smoothness={args.smoothness} max_shift={args.max_shift} normalize={args.normalize}\n"
          f"  n_ref={args.n_ref} n_deform={args.n_deform} n_compare={args.n_compare} seed={args.seed} "
          f"dtype={args.dtype} ({dt:.1f} s)")
    print(fig1_table(res))
    plot_fig1(res, args.out, title=f"{args.arch} on {src}{note}, {args.method} deformations")
    print(f"plot written to {args.out}")
    return 0
