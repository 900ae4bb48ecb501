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
    p.add_argument("--out", default=None,
                   help="where the Gram goes: a .zarr store (both kernels, chunked by tile; resumable: re-running "
                        "the same command continues), a .npy memmap (one --kind; resumable), or a .npz file "
                        "(written at the end, from memory)")
    p.add_argument("--kind", choices=("nngp", "ntk"), default=None, help="compute one kernel only")
    p.add_argument("--memory-budget", default=None, metavar="BYTES",
                   help="bound host memory, e.g. 2GB or 512MiB; sets the tile size (see docs/scale.md)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run tiles as tasks on this Dask scheduler (e.g. tcp://host:8786); needs --out .zarr on a "
                        "filesystem the workers share")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run tiles on a local Dask cluster of N single-threaded worker processes (needs --out)")
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
    from .gram import prepare
    arch = presets.by_name(args.arch)
    out = args.out
    dask = args.scheduler is not None or args.workers is not None
    if out is not None and not out.endswith((".zarr", ".npy", ".npz")):
        raise ValueError(f"--out must end with .zarr, .npy or .npz; got {out!r}")
    if out is not None and out.endswith(".npy") and args.kind is None:
        raise ValueError("--out .npy holds one kernel: pass --kind nngp|ntk, or use .zarr (or .npz) for both")
    if dask and (out is None or not out.endswith((".zarr", ".npy"))):
        raise ValueError("--scheduler/--workers need --out ending in .zarr (or .npy with --kind): the workers write "
                         "the tiles there")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1; got {args.workers}")
    X, _ = load_images(args.data, args.normalize, args.n, default_n=500)
    if not arch.convolutional:
        X = X.reshape(len(X), -1)
    store_out = out if out is not None and not out.endswith(".npz") else None
    t0 = time.perf_counter()
    job = prepare(X, arch=arch, kind=args.kind, device=args.device, dtype=args.dtype, tile=args.tile,
                  progress=args.progress, threads=args.threads, out=store_out, memory_budget=args.memory_budget,
                  resolve=not dask)
    where = "in memory" if store_out is None else store_out
    print(f"ntkfast gram: arch={args.arch} inputs={tuple(X.shape)} device={job.device} dtype={args.dtype}")
    print(f"  kernels  : {'NNGP+NTK' if args.kind is None else args.kind.upper()}, shape ({job.n}, {job.m}), "
          f"{where}")
    print(f"  tiles    : {len(job.tiles)} of {job.tile} images (upper triangle), {len(job.tiles) - len(job.pending)} "
          f"already done; model memory {job.estimate.total / 1e6:.1f} MB"
          + (f" of a {job.budget / 1e6:.1f} MB budget" if job.budget else ""), flush=True)
    pairs = job.pending_pairs
    t1 = time.perf_counter()
    if dask:
        from distributed import Client, LocalCluster
        from . import distributed as nd
        if args.scheduler is not None:
            with Client(args.scheduler) as client:
                t1 = time.perf_counter()
                nd.run(job, client, progress=args.progress)
        else:
            with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                t1 = time.perf_counter()
                nd.run(job, client, progress=args.progress)
    else:
        job.run(progress=args.progress)
    dt = time.perf_counter() - t1
    engine = (f"Dask scheduler {args.scheduler}" if args.scheduler else
              f"Dask LocalCluster of {args.workers} workers" if args.workers else "this process")
    print(f"  time     : {dt:.3f} s for {pairs:,} pairs ({engine}; {t1 - t0:.2f} s of setup before)")
    print(f"  speed    : {pairs / max(dt, 1e-9):,.0f} pairs/s")
    if out is not None and out.endswith(".npz"):
        k = job.result()
        np.savez(out, **({"nngp": k.nngp, "ntk": k.ntk} if args.kind is None else {args.kind: k}))
    if out is not None:
        print(f"  written  : {out}")
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

