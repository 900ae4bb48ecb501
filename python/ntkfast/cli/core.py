"""Core subcommands of the ``ntkfast`` command line: ``info``, ``gram`` and ``bench``."""
from __future__ import annotations

import json
import time

from .common import (add_compute_args, add_data_args, check_compute_args, check_out_option, load_images, print_plan,
                     resume_hint)


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


# pending pairs above which a job is timed on a few pairs first, and the estimate printed


def _info(args):
    from ..config import show_config
    if args.json:
        import io
        cfg = show_config(file=io.StringIO())
        print(json.dumps(cfg, indent=2))
    else:
        show_config()
    return 0


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
    print_plan(job, "tiles", estimate=job.device != "auto")  # Dask with 'auto': devices of the workers
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


def _bench(args):
    from ..kernel.bench import WORKLOADS, bench_workload
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in names:
        if w not in WORKLOADS:
            raise ValueError(f"--workloads: unknown workload {w!r}; expected some of {sorted(WORKLOADS)}")
    for w in names:
        r = bench_workload(w, args.device, args.dtype, args.seconds, args.tile, args.threads)
        print(json.dumps(r), flush=True)
    return 0

