"""GPU throughput of ntkfast (float32, NNGP + NTK together, pairs/s), beside neural-tangents on the same GPU.

Workloads (docs/design.md, section 4): gap5 = cntk(5, 'gap') and flat5 = cntk(5, 'flatten') on 28x28x1, myrtle5 on
32x32x3, bietti_mairal on 28x28x1. Each is timed on an n x n rectangular tile (X vs Y, every pair computed)
grown until one call takes about --seconds; the call returns host arrays, so it has synchronized with the
device when the timer stops (warm-up call excluded). One JSON line per result, with the device name,
the ntkfast build and the git commit.

neural-tangents (not a dependency) runs in a subprocess (so that JAX's GPU memory pool cannot starve
ntkfast) through peer_bench_nt.py and its import shim from the peers folder ($NTKFAST_PEERS, else
../shared/peers beside the repository, else shared/peers inside it), with --peer-python (default: this
Python); when it is not importable there, the peer lines say so and no ratio is printed.

    python bench/bench_gpu.py [--workloads gap5,flat5,myrtle5,bietti_mairal] [--seconds 5] [--out results.jsonl]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

import ntkfast as nf
from ntkfast.config import build_info, cuda_usable

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_DIRS = [os.environ.get("NTKFAST_PEERS", ""), os.path.join(HERE, "..", "..", "shared", "peers"),
             os.path.join(HERE, "..", "shared", "peers")]
PEER_DIR = next((os.path.normpath(d) for d in PEER_DIRS if d and os.path.isfile(os.path.join(d, "peer_bench_nt.py"))),
                None)
WORKLOADS = {
    "gap5": (lambda: nf.presets.cntk(5, "gap"), (28, 28, 1)),
    "flat5": (lambda: nf.presets.cntk(5, "flatten"), (28, 28, 1)),
    "myrtle5": (lambda: nf.presets.myrtle(5), (32, 32, 3)),
    "bietti_mairal": (lambda: nf.presets.bietti_mairal(), (28, 28, 1)),
}
# Block sizes (images per side) tried for the peer; its best per ../shared/peers/README.md is among them.
PEER_BLOCKS = {"gap5": [8, 16, 32], "flat5": [256, 1024], "myrtle5": [4, 8, 16]}


def commit():
    try:
        rev = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", HERE, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name():
    from ntkfast import _core
    st = dict(_core.cuda_status())
    return st["names"][0] if st["names"] else "unknown"


def time_ntkfast(name, seconds, tile, max_n):
    make, shape = WORKLOADS[name]
    arch = make()
    rng = np.random.default_rng(0)
    n = 16
    warm = rng.random((4,) + shape, dtype=np.float32)
    nf.gram(warm, warm, arch=arch, device="cuda", dtype="float32")  # context creation, first launch
    while True:
        X = rng.random((n,) + shape, dtype=np.float32)
        Y = rng.random((n,) + shape, dtype=np.float32)
        t0 = time.perf_counter()
        nf.gram(X, Y, arch=arch, device="cuda", dtype="float32", tile=tile)  # returns host arrays: synchronized
        dt = time.perf_counter() - t0
        if dt >= seconds or n >= max_n:
            break
        n = min(max_n, max(2 * n, int(n * (seconds / max(dt, 1e-6)) ** 0.5 * 1.1)))
    return {"library": "ntkfast", "workload": name, "shape": list(shape), "dtype": "float32", "n": n,
            "pairs": n * n, "sec": dt, "pairs_per_s": n * n / dt}


def time_peer(python, name, timeout=1800):
    """Best pairs/s of neural-tangents over PEER_BLOCKS, or a dict saying why there is none."""
    if PEER_DIR is None:
        return {"library": "neural-tangents", "workload": name, "available": False,
                "reason": "no peers folder with peer_bench_nt.py (set NTKFAST_PEERS)"}
    if name not in PEER_BLOCKS:
        return {"library": "neural-tangents", "workload": name, "available": False,
                "reason": "no neural-tangents equivalent of this workload"}
    shape = list(WORKLOADS[name][1])
    cfgs = [[name, shape, b] for b in PEER_BLOCKS[name]]
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    try:
        out = subprocess.run([python, os.path.join(PEER_DIR, "peer_bench_nt.py"), json.dumps(cfgs)],
                             capture_output=True, text=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"library": "neural-tangents", "workload": name, "available": False, "reason": repr(e)[:300]}
    rows = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    if not rows:
        why = (out.stderr.strip().splitlines() or out.stdout.strip().splitlines() or ["no output"])[-1]
        return {"library": "neural-tangents", "workload": name, "available": False, "reason": why[:300]}
    best = max(rows, key=lambda r: r["pairs_per_s"])
    jax_line = out.stdout.splitlines()[0] if out.stdout.startswith("jax") else ""
    return {"library": "neural-tangents", "workload": name, "available": True, "block": best["block"],
            "pairs_per_s": best["pairs_per_s"], "tried": {r["block"]: r["pairs_per_s"] for r in rows},
            "jax": jax_line}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="gap5,flat5,myrtle5,bietti_mairal")
    ap.add_argument("--seconds", type=float, default=5.0, help="target duration of one timed call")
    ap.add_argument("--tile", type=int, default=None, help="ntkfast tile (default: gram()'s GPU default)")
    ap.add_argument("--max-n", type=int, default=16384, help="largest n of the n x n timed tile")
    ap.add_argument("--peer-python", default=sys.executable, help="Python with jax + neural-tangents 0.6.5")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--peer-only", action="store_true",
                    help="time only the peer; ratios use the ntkfast lines already in --out")
    ap.add_argument("--peer-timeout", type=float, default=1800, help="seconds per peer workload")
    ap.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = ap.parse_args(argv)
    sink = open(args.out, "a") if args.out else None

    def emit(obj):
        line = json.dumps(obj)
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")
            sink.flush()
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in names:
        if w not in WORKLOADS:
            ap.error(f"--workloads: unknown workload {w!r}; expected some of {sorted(WORKLOADS)}")
    usable, reason = cuda_usable()
    if not usable:
        print(f"bench_gpu: no usable GPU ({reason}); nothing to measure", file=sys.stderr)
        return 2
    env = {"device": device_name(), "commit": commit(), "ntkfast": nf.__version__,
           "cuda": build_info()["cuda_version"], "architectures": build_info()["cuda_architectures"]}
    emit({"environment": env})
    ours = {}
    if args.peer_only and args.out and os.path.exists(args.out):
        with open(args.out) as f:
            for l in f:
                r = json.loads(l) if l.strip().startswith("{") else {}
                if r.get("library") == "ntkfast":
                    ours[r["workload"]] = r
    for w in ([] if args.peer_only else names):
        r = time_ntkfast(w, args.seconds, args.tile, args.max_n)
        ours[w] = r
        emit({**r, **env})
    if args.no_peer:
        return 0
    for w in names:
        p = time_peer(args.peer_python, w, args.peer_timeout)
        line = {**p, "device": env["device"], "commit": env["commit"]}
        if p.get("available") and w in ours:
            line["ntkfast_over_peer"] = ours[w]["pairs_per_s"] / p["pairs_per_s"]
        emit(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
