"""Core subcommands of the ``ntkfast`` command line: ``info``, ``gram`` and ``bench``."""
from __future__ import annotations

import json
import time


def register_cli(sub):
    p = sub.add_parser("info", help="show what was compiled in and what is usable now",
                       description="Show the build configuration (CPU/CUDA backends compiled in, CUDA "
                                   "architectures) apart from what is usable now (threads, GPUs).")
    p.add_argument("--json", action="store_true", help="print the configuration as JSON")
    p.set_defaults(func=_info)

    p = sub.add_parser("gram", help="compute NNGP+NTK Gram matrices of an image set",
                       description="Compute the NNGP/CKN and NTK Gram matrices of an architecture on an image "
                                   "set (the embedded digits by default) and print shape, time and pairs/s.")
    add_data_args(p)
    add_compute_args(p)
    p.add_argument("--arch", default="gap5", help="preset name: gapN, flatN, myrtle5|7|10, bietti_mairal, fcN "
                                                  "(default gap5)")
    p.add_argument("-n", "--n", type=int, default=None, metavar="N",
                   help="use the first N images (default: 500 of the embedded digits, all of a given data set)")
    p.add_argument("--out", default=None, help="write the Gram matrices to a .npy (one kind), .npz (both) file")
    p.add_argument("--kind", choices=("nngp", "ntk"), default=None, help="compute one kernel only")
    p.set_defaults(func=_gram)

    p = sub.add_parser("bench", help="time the Gram kernel on the DESIGN workloads",
                       description="Time ntkfast's Gram kernel (NNGP+NTK) on gap5, flat5, myrtle5 and "
                                   "bietti_mairal with random inputs; prints pairs/s as JSON lines.")
    add_compute_args(p)
    p.add_argument("--workloads", default="gap5,flat5,myrtle5,bietti_mairal",
                   help="comma-separated workloads (default: all four)")
    p.add_argument("--seconds", type=float, default=3.0, help="target seconds per workload (default 3)")
    p.set_defaults(func=_bench)


def add_data_args(p):
    p.add_argument("--data", default=None,
                   help="'digits' (embedded default: scikit-learn's 8x8 handwritten digits), a directory of "
                        "MNIST-like IDX files, or a .npy/.npz file")
    p.add_argument("--normalize", choices=("none", "center_scale", "zca"), default="center_scale",
                   help="per-image normalization (default center_scale)")


def add_compute_args(p):
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default float32")
    p.add_argument("--tile", type=int, default=None, help="images per tile side (default: per device)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")


def _info(args):
    from .config import show_config
    if args.json:
        import io
        cfg = show_config(file=io.StringIO())
        print(json.dumps(cfg, indent=2))
    else:
        show_config()
    return 0


def load_images(data, normalize, n=None, default_n=None):
    """Images (N, H, W, C) and labels from the --data argument, first n (or default_n for the embedded set)."""
    from . import data as D
    X, y = D.load(data)
    if n is None and (data is None or data == D.DEFAULT_NAME):
        n = default_n
    if n is not None:
        if n < 1:
            raise ValueError(f"--n must be >= 1; got {n}")
        X = X[:n]
        y = None if y is None else y[:n]
    return D.normalize(X, normalize), y


def _gram(args):
    import numpy as np
    from . import presets
    from .gram import gram, resolve_device
    arch = presets.by_name(args.arch)
    X, _ = load_images(args.data, args.normalize, args.n, default_n=500)
    if not arch.convolutional:
        X = X.reshape(len(X), -1)
    dev = resolve_device(args.device)
    t0 = time.perf_counter()
    k = gram(X, arch=arch, kind=args.kind, device=dev, dtype=args.dtype, tile=args.tile,
             progress=args.progress, threads=args.threads)
    dt = time.perf_counter() - t0
    n = len(X)
    pairs = n * (n + 1) // 2
    shape = k.shape if args.kind else k.nngp.shape
    print(f"ntkfast gram: arch={args.arch} inputs={tuple(X.shape)} device={dev} dtype={args.dtype}")
    print(f"  kernels  : {'NNGP+NTK' if args.kind is None else args.kind.upper()}, shape {shape}")
    print(f"  time     : {dt:.3f} s for {pairs:,} pairs (upper triangle, mirrored)")
    print(f"  speed    : {pairs / dt:,.0f} pairs/s")
    if args.out:
        if args.out.endswith(".npz"):
            np.savez(args.out, **({"nngp": k.nngp, "ntk": k.ntk} if args.kind is None else {args.kind: k}))
        elif args.out.endswith(".npy"):
            if args.kind is None:
                raise ValueError("--out .npy holds one kernel: pass --kind nngp|ntk, or use .npz for both")
            np.save(args.out, k)
        else:
            raise ValueError(f"--out must end with .npy or .npz; got {args.out!r}")
        print(f"  written  : {args.out}")
    return 0


WORKLOADS = {
    "gap5": ("gap5", (28, 28, 1)),
    "flat5": ("flat5", (28, 28, 1)),
    "myrtle5": ("myrtle5", (32, 32, 3)),
    "bietti_mairal": ("bietti_mairal", (28, 28, 1)),
}


def bench_workload(name, device="auto", dtype="float32", seconds=3.0, tile=None, threads=None):
    """Time one DESIGN workload on random inputs: returns a dict with pairs/s (a square X vs Y tile grown
    until one call takes about ``seconds``)."""
    import numpy as np
    from . import presets
    from .gram import gram, resolve_device
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; expected one of {sorted(WORKLOADS)}")
    arch_name, shape = WORKLOADS[name]
    arch = presets.by_name(arch_name)
    dev = resolve_device(device)
    rng = np.random.default_rng(0)
    n = 4
    while True:
        X = rng.standard_normal((n,) + shape).astype(dtype)
        Y = rng.standard_normal((n,) + shape).astype(dtype)
        t0 = time.perf_counter()
        gram(X, Y, arch=arch, device=dev, dtype=dtype, tile=tile, threads=threads)
        dt = time.perf_counter() - t0
        if dt >= seconds or n >= 8192:
            break
        n = min(8192, max(n * 2, int(n * (seconds / max(dt, 1e-6)) ** 0.5 * 1.1)))
    return {"workload": name, "shape": list(shape), "device": dev, "dtype": dtype, "pairs": n * n,
            "sec": dt, "pairs_per_s": n * n / dt}


def _bench(args):
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in names:
        if w not in WORKLOADS:
            raise ValueError(f"--workloads: unknown workload {w!r}; expected some of {sorted(WORKLOADS)}")
    for w in names:
        r = bench_workload(w, args.device, args.dtype, args.seconds, args.tile, args.threads)
        print(json.dumps(r), flush=True)
    return 0

