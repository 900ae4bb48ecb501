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
                                   "set (the embedded digits by default) and print shape, time and pairs/s. "
                                   "Before a long job it prints the pairs, the tiles and an estimated time "
                                   "(measured on a few pairs). Without --out the Grams are computed in memory "
                                   "and only timed: nothing is kept when the command ends; pass --out to keep "
                                   "them (a .zarr or .npy store also survives an interrupt and resumes).")
    add_data_args(p)
    add_compute_args(p)
    p.add_argument("--arch", default="gap5", help="preset name: gapN, flatN, myrtle5|7|10, bietti_mairal, fcN "
                                                  "(default gap5)")
    p.add_argument("-n", "--n", type=int, default=None, metavar="N",
                   help="use the first N images (default: 500 of the embedded digits, all of a given data set)")
    p.add_argument("--out", default=None,
                   help="where the Gram goes: a .zarr store (both kernels, chunked by tile; resumable: re-running "
                        "the same command continues), a .npy memmap (one --kind; resumable), or a .npz file "
                        "(written at the end, from memory). Checked before any work. Default: none (the Grams "
                        "are computed, timed and discarded)")
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

    p = sub.add_parser("bench", help="time the Gram kernel on the reference workloads",
                       description="Time ntkfast's Gram kernel (NNGP+NTK) on the workloads of docs/design.md "
                                   "(section 'Workloads'): gap5, flat5, myrtle5 and bietti_mairal with random "
                                   "inputs; prints pairs/s as JSON lines.")
    add_compute_args(p, progress=False)
    p.add_argument("--workloads", default="gap5,flat5,myrtle5,bietti_mairal",
                   help="comma-separated workloads (default: all four)")
    p.add_argument("--seconds", type=float, default=3.0, help="target seconds per workload (default 3)")
    p.set_defaults(func=_bench)


def add_data_args(p):
    p.add_argument("--data", default=None,
                   help="'digits' (embedded default: scikit-learn's 8x8 handwritten digits), a directory of "
                        "MNIST-like IDX files, or a .npy/.npz file (images (N, H, W, C), (N, H, W), or "
                        "channels-first with --layout NCHW)")
    p.add_argument("--layout", choices=("NHWC", "NCHW"), default=None,
                   help="axis order of 4-d images in a .npy/.npz file; default NHWC, refusing shapes that look "
                        "channels-first such as (N, 1, 28, 28)")
    p.add_argument("--normalize", choices=("none", "center_scale", "zca"), default="center_scale",
                   help="per-image normalization (default center_scale)")


def add_compute_args(p, progress=True):
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default float32")
    p.add_argument("--tile", type=int, default=None, help="images per tile side (default: per device)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    if progress:
        p.add_argument("--progress", action="store_true", help="show a progress bar (on stderr)")


def check_compute_args(args):
    """Checks of the compute options that need no data (before any loading)."""
    for name in ("tile", "threads"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise ValueError(f"--{name} must be >= 1; got {v}")


# pending pairs above which a job is timed on a few pairs first, and the estimate printed
ESTIMATE_MIN_PAIRS = 20000


def print_plan(job, label, indent="  ", estimate=True):
    """Print a job's pairs and tiles and, for a long job (and ``estimate``), the time estimated from a short
    calibration on a few of its pairs. Returns the estimate in seconds (None when not estimated)."""
    done = len(job.tiles) - len(job.pending)
    shape = f"{'upper triangle of ' if job.symmetric else ''}{job.n} x {job.m}"
    line = (f"{indent}{label:<9}: {job.pending_pairs:,} pairs to compute ({shape}), {len(job.pending)} of "
            f"{len(job.tiles)} tiles of {job.tile} images")
    if done:
        line += f" ({done} already done)"
    print(line, flush=True)
    if not job.pending:
        where = f" in {job.store.location}" if job.store.location else ""
        print(f"{indent}{'':<9}  already complete{where}: nothing to compute", flush=True)
        return None
    if job.pending_pairs < ESTIMATE_MIN_PAIRS or not estimate:
        return None
    sec, rate, cal = job.estimate_seconds()
    print(f"{indent}{'estimate':<9}: about {format_seconds(sec)} at {rate:,.0f} pairs/s (measured on {cal:,} "
          f"pairs)", flush=True)
    return sec


def format_seconds(sec):
    if sec < 90:
        return f"{sec:.0f} s" if sec >= 10 else f"{sec:.1f} s"
    if sec < 5400:
        return f"{sec / 60:.0f} min"
    if sec < 2 * 86400:
        return f"{sec / 3600:.1f} h"
    return f"{sec / 86400:.1f} days"


def resume_hint(job, option="--out"):
    """A callable for the CLI's interrupt message of a job writing to a resumable store (else None)."""
    if not job.store.resumable:
        return None

    def hint():
        return (f"the {len(job.store.done())} of {len(job.tiles)} tiles finished are kept in {job.store.location}; "
                "run the same command again to resume")
    return hint


def check_out_option(path, kind, option, exts, gram=True):
    """Check an output option (before loading data): extension in ``exts``, folder exists and writable, and
    for a Gram output (``gram``) an existing store resumable. Returns the path or None."""
    import os
    if path is None:
        return None
    if exts and not str(path).lower().endswith(exts):
        raise ValueError(f"{option} must end with {', '.join(exts[:-1])} or {exts[-1]}; got {path!r}" if len(exts) > 1
                         else f"{option} must end with {exts[0]}; got {path!r}")
    if gram:
        from ..storage.store import check_out_path
        return check_out_path(path, kind, option)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{option} {path!r}: the folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"{option} {path!r} cannot be written (permission denied)")
    return path


def _info(args):
    from ..config import show_config
    if args.json:
        import io
        cfg = show_config(file=io.StringIO())
        print(json.dumps(cfg, indent=2))
    else:
        show_config()
    return 0


def load_images(data, normalize, n=None, default_n=None, layout=None):
    """Images (N, H, W, C) and labels from the --data argument, first n (or default_n for the embedded set)."""
    from .. import data as D
    from ..kernel.inputs import to_nhwc
    X, y = D.load(data)
    X = to_nhwc(X, layout, "--data", option="--layout")
    if n is None and (data is None or data == D.DEFAULT_NAME):
        n = default_n
    if n is not None:
        if n < 1:
            raise ValueError(f"--n must be >= 1; got {n}")
        X = X[:n]
        y = None if y is None else y[:n]
    return D.normalize(X, normalize), y


def _gram(args):
    from ..kernel import presets
    from ..kernel.tiled import prepare, save_npz
    from ..storage.memory import parse_bytes
    # every check that needs no data first: arch, options, output path
    arch = presets.by_name(args.arch)
    check_compute_args(args)
    out = args.out
    dask = args.scheduler is not None or args.workers is not None
    if out is not None and out.endswith(".npy") and args.kind is None:
        raise ValueError("--out .npy holds one kernel: pass --kind nngp|ntk, or use .zarr (or .npz) for both")
    check_out_option(out, args.kind, "--out", (".zarr", ".npy", ".npz"))
    if dask and (out is None or not out.endswith((".zarr", ".npy"))):
        raise ValueError("--scheduler/--workers need --out ending in .zarr (or .npy with --kind): the workers write "
                         "the tiles there")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1; got {args.workers}")
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be >= 1; got {args.n}")
    if args.memory_budget is not None:
        parse_bytes(args.memory_budget, "--memory-budget")
    X, _ = load_images(args.data, args.normalize, args.n, default_n=500, layout=args.layout)
    if not arch.convolutional:
        X = X.reshape(len(X), -1)
    store_out = out if out is not None and not out.endswith(".npz") else None
    t0 = time.perf_counter()
    job = prepare(X, arch=arch, kind=args.kind, device=args.device, dtype=args.dtype, tile=args.tile,
                  progress=args.progress, threads=args.threads, out=store_out, memory_budget=args.memory_budget,
                  resolve=not dask)
    args.resume_hint = resume_hint(job)
    where = "in memory, not kept (pass --out to keep it)" if out is None else \
        ("in memory, written to " + out + " at the end") if store_out is None else store_out
    print(f"ntkfast gram: arch={args.arch} inputs={tuple(X.shape)} device={job.device} dtype={args.dtype}")
    print(f"  kernels  : {'NNGP+NTK' if args.kind is None else args.kind.upper()}, shape ({job.n}, {job.m}), "
          f"{where}")
    print(f"  memory   : model {job.estimate.total / 1e6:.1f} MB"
          + (f" of a {job.budget / 1e6:.1f} MB budget" if job.budget else ""), flush=True)
    pairs = job.pending_pairs
    print_plan(job, "tiles", estimate=job.device in ("cpu", "cuda"))  # Dask with 'auto': devices of the workers
    if job.complete:
        return 0
    t1 = time.perf_counter()
    if dask:
        from distributed import Client, LocalCluster
        from ..storage import distributed as nd
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
        save_npz(out, job.result(), args.kind)
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
    """Time one workload of docs/design.md (section 4) on random inputs: returns a dict with pairs/s (a square
    X vs Y tile grown until one call takes about ``seconds``)."""
    import numpy as np
    from ..kernel import presets
    from ..kernel.tiled import gram, resolve_device
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

