"""ntkfast vs neural-tangents on the layers of issue 16, side by side in one run on the CPU (float32, NNGP+NTK).

Workloads (every Conv 3x3, W_std = sqrt 2, no bias; all nets end with GlobalAvgPool, Dense(1)):

- ``wrn``:  a WideResNet-style stack of strided convs without skip connections on 32x32x3: Conv(3), ReLU,
  2 x [Conv(3, stride 2), ReLU, Conv(3), ReLU] (32 -> 16 -> 8 positions per axis), SAME padding;
- ``erf5``: 5 x [Conv(3) SAME, Erf()] on 28x28x1;
- ``gap5``: 5 x [Conv(3) SAME, ReLU] on 28x28x1 (the reference workload of docs/design.md, as a sanity anchor);
- ``wrn10``: ``ntkfast.presets.wrn(10)`` on 32x32x3, a WideResNet with skip connections (issue 17): Conv, then
  3 groups (strides 1, 2, 2) of one block FanOut(2), parallel([ReLU, Conv(stride), ReLU, Conv], Conv(stride)),
  FanInSum; GlobalAvgPool; Dense (W_std = 1 everywhere, no bias), written for the peer with its own stax.

ntkfast: ``ntkfast.gram(X, Y, arch=..., device='cpu', dtype='float32')`` on an n x n block grown until one
call takes ``--seconds``, then the best of ``--repeats`` calls. neural-tangents 0.6.5: its ``kernel_fn`` under
``jax.jit`` in float32, at each block size of ``--blocks``; the first call (compilation) is excluded, then calls
are repeated until ``--seconds`` have passed (at least one) and the best counts; the best block is reported.
Each workload runs ntkfast, then the peer, then ntkfast again (the better ntkfast round counts), so that a
change of load on a shared machine shows in both; the 1-minute load average is recorded with every figure.

The peer runs in its own Python (``--peer-python``: any interpreter that imports jax and neural-tangents
through ``--peer-dir``/nt_shim.py, see ../shared/peers/README.md), one subprocess per block size, through this
same file in ``--peer-worker`` mode (which does not import ntkfast). As a check that both sides compute the same
net, the peer's float32 kernels of its first 2x2 pairs are compared with ntkfast's float64 kernels.

    python bench/peer_compare_layers.py --peer-python /opt/ntpeer/bin/python \\
        | tee bench/results/peer_compare_layers_cpu.log          # writes bench/results/peer_compare_layers_cpu.json
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PEER_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "peers"))
DEFAULT_OUT = os.path.join(HERE, "results", "peer_compare_layers_cpu.json")

# A net as a list of (layer, arguments), read by _ours and _peer below.
_C = ("conv", {})
_C2 = ("conv", {"stride": 2})
WORKLOADS = {
    "wrn": ((32, 32, 3), [_C, ("relu",)] + [_C2, ("relu",), _C, ("relu",)] * 2 + [("gap",), ("dense",)]),
    "erf5": ((28, 28, 1), [_C, ("erf",)] * 5 + [("gap",), ("dense",)]),
    "gap5": ((28, 28, 1), [_C, ("relu",)] * 5 + [("gap",), ("dense",)]),
    "wrn10": ((32, 32, 3), None),    # a preset with branches: built by _ours / _peer below
}
DESCRIPTIONS = {
    "wrn": "Conv3, ReLU, 2 x [Conv3 stride 2, ReLU, Conv3, ReLU], GAP, Dense; 32x32x3",
    "erf5": "5 x [Conv3 SAME, Erf], GAP, Dense; 28x28x1",
    "gap5": "5 x [Conv3 SAME, ReLU], GAP, Dense; 28x28x1",
    "wrn10": "presets.wrn(10): Conv3, 3 x residual block (strides 1, 2, 2; Conv3 shortcuts), GAP, Dense; 32x32x3",
}


def _ours(name):
    import ntkfast as nf
    if name == "wrn10":
        return nf.presets.wrn(10)
    make = {"conv": lambda stride=1: nf.Conv(3, W_std=2 ** 0.5, b_std=None, padding="SAME", stride=stride),
            "relu": nf.ReLU, "erf": nf.Erf, "gap": nf.GlobalAvgPool, "dense": lambda: nf.Dense(1.0, None)}
    return nf.serial(*[make[layer[0]](**(layer[1] if len(layer) > 1 else {})) for layer in WORKLOADS[name][1]])


def _peer(stax, name):
    if name == "wrn10":     # the layers of ntkfast.presets.wrn(10), in the peer's stax
        conv = lambda s=1: stax.Conv(1, (3, 3), (s, s), padding="SAME", W_std=1.0, b_std=None)  # noqa: E731
        blocks = [stax.serial(stax.FanOut(2), stax.parallel(stax.serial(stax.Relu(), conv(s), stax.Relu(), conv()),
                                                            conv(s)), stax.FanInSum()) for s in (1, 2, 2)]
        return stax.serial(conv(), *blocks, stax.GlobalAvgPool(), stax.Dense(1, 1.0, 0.0))[2]
    make = {"conv": lambda stride=1: stax.Conv(1, (3, 3), strides=(stride, stride), padding="SAME", W_std=2 ** 0.5,
                                               b_std=None),
            "relu": stax.Relu, "erf": stax.Erf, "gap": stax.GlobalAvgPool, "dense": lambda: stax.Dense(1, 1.0, None)}
    return stax.serial(*[make[layer[0]](**(layer[1] if len(layer) > 1 else {})) for layer in WORKLOADS[name][1]])[2]


def _inputs(name, n, seed, dtype):
    rng = np.random.default_rng(seed)
    shape = WORKLOADS[name][0]
    return rng.standard_normal((n,) + shape).astype(dtype), rng.standard_normal((n,) + shape).astype(dtype)


def _load():
    return os.getloadavg()[0]


# ---------------------------------------------------------------------------------------------- the peer side
def peer_worker(cfg):
    """Time the peer's jitted kernel_fn on a block x block pair grid; print one JSON line."""
    sys.path.insert(0, cfg["peer_dir"])
    import nt_shim  # noqa: F401  (must come before neural_tangents)
    from neural_tangents import stax
    import jax
    name, b = cfg["workload"], cfg["block"]
    kfn = jax.jit(_peer(stax, name), static_argnames="get")
    x1, x2 = _inputs(name, b, 0, np.float32)
    x1, x2 = jax.numpy.asarray(x1), jax.numpy.asarray(x2)
    t0 = time.perf_counter()
    k = kfn(x1, x2, get=("nngp", "ntk"))
    jax.block_until_ready(k)
    first = time.perf_counter() - t0
    times, load, t_start = [], [], time.perf_counter()
    while not times or time.perf_counter() - t_start < cfg["seconds"]:
        load.append(_load())
        t0 = time.perf_counter()
        k = kfn(x1, x2, get=("nngp", "ntk"))
        jax.block_until_ready(k)
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(json.dumps({"workload": name, "block": b, "pairs": b * b, "calls": len(times), "sec_best": best,
                      "sec_all": times, "first_call_sec": first, "pairs_per_s": b * b / best,
                      "load1": max(load), "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
                      "jax": jax.__version__, "jax_devices": str(jax.devices()),
                      "check": {"nngp": np.asarray(k.nngp)[:2, :2].tolist(), "ntk": np.asarray(k.ntk)[:2, :2].tolist()}}),
          flush=True)


def run_peer(python, peer_dir, name, block, seconds):
    cfg = {"workload": name, "block": block, "seconds": seconds, "peer_dir": peer_dir}
    r = subprocess.run([python, os.path.abspath(__file__), "--peer-worker", json.dumps(cfg)], capture_output=True,
                       text=True, check=False)
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    return {"workload": name, "block": block, "error": (r.stdout + r.stderr)[-1500:], "returncode": r.returncode}


# ---------------------------------------------------------------------------------------------- ntkfast side
def time_ours(name, seconds, repeats):
    """Grow an n x n block until one gram call takes ``seconds``, then the best of ``repeats`` calls."""
    import ntkfast as nf
    arch, n = _ours(name), 4
    while True:
        X, Y = _inputs(name, n, 0, np.float32)
        t0 = time.perf_counter()
        nf.gram(X, Y, arch=arch, device="cpu", dtype="float32")
        dt = time.perf_counter() - t0
        if dt >= seconds or n >= 4096:
            break
        n = min(4096, max(n * 2, int(n * (seconds / max(dt, 1e-6)) ** 0.5 * 1.1)))
    times, load = [], []
    for _ in range(repeats):
        load.append(_load())
        t0 = time.perf_counter()
        nf.gram(X, Y, arch=arch, device="cpu", dtype="float32")
        times.append(time.perf_counter() - t0)
    return {"pairs": n * n, "sec_best": min(times), "sec_all": times, "pairs_per_s": n * n / min(times),
            "load1": max(load)}


def check_same_net(name, peer_row):
    """Relative difference between the peer's float32 kernels of the first 2x2 pairs and ours in float64."""
    import ntkfast as nf
    X, Y = _inputs(name, peer_row["block"], 0, np.float32)       # the peer's own inputs: its first 2 x 2 pairs
    X, Y = X[:2].astype(np.float64), Y[:2].astype(np.float64)
    k = nf.gram(X, Y, arch=_ours(name), device="cpu", dtype="float64")
    return {kind: float(np.max(np.abs(getattr(k, kind) - np.asarray(peer_row["check"][kind])))
                        / np.max(np.abs(getattr(k, kind)))) for kind in ("nngp", "ntk")}


def environment():
    import ntkfast as nf
    env = {"ntkfast": nf.__version__, "build": nf.config.build_info(), "python": platform.python_version(),
           "cpus": os.cpu_count(), "machine": platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu_model"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=HERE).stdout.strip()
    except OSError:
        pass
    return env


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-worker", help=argparse.SUPPRESS)
    ap.add_argument("--peer-python", default=sys.executable, help="Python that can import jax + neural-tangents")
    ap.add_argument("--peer-dir", default=DEFAULT_PEER_DIR, help="folder with nt_shim.py")
    ap.add_argument("--workloads", default="wrn,erf5,gap5,wrn10", help=f"some of {','.join(WORKLOADS)}")
    ap.add_argument("--blocks", default="4,8,16", help="peer block sizes (images per side) to try")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement (ntkfast call; peer calls)")
    ap.add_argument("--repeats", type=int, default=3, help="ntkfast calls per round (best counts)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="JSON file for the figures ('' for none)")
    args = ap.parse_args(argv)
    if args.peer_worker:
        return peer_worker(json.loads(args.peer_worker))
    names = [w for w in args.workloads.split(",") if w]
    for w in names:
        if w not in WORKLOADS:
            ap.error(f"--workloads: unknown workload {w!r}; expected some of {sorted(WORKLOADS)}")
    blocks = [int(b) for b in args.blocks.split(",") if b]
    env = environment()
    env["load1_start"] = _load()
    print(json.dumps(env), flush=True)
    rows = []
    for w in names:
        first = time_ours(w, args.seconds, args.repeats)
        print(json.dumps({"workload": w, "side": "ntkfast", **first}), flush=True)
        peer = []
        for b in blocks:
            p = run_peer(args.peer_python, args.peer_dir, w, b, args.seconds)
            print(json.dumps({"side": "neural-tangents", **{k: v for k, v in p.items() if k != "check"}}), flush=True)
            peer.append(p)
        second = time_ours(w, args.seconds, args.repeats)
        print(json.dumps({"workload": w, "side": "ntkfast", **second}), flush=True)
        ours = max((first, second), key=lambda r: r["pairs_per_s"])
        ok = [p for p in peer if "pairs_per_s" in p]
        best = max(ok, key=lambda p: p["pairs_per_s"]) if ok else None
        rows.append({"workload": w, "net": DESCRIPTIONS[w], "ntkfast": ours, "ntkfast_rounds": [first, second],
                     "peer_best": best and {k: v for k, v in best.items() if k != "check"},
                     "peer_blocks": [{k: v for k, v in p.items() if k != "check"} for p in peer],
                     "agreement": check_same_net(w, best) if best else None})
    env["load1_end"] = _load()
    print(f"\nntkfast {env['ntkfast']} ({env.get('commit', '?')}), float32, NNGP+NTK, device='cpu', "
          f"{env['build'].get('cpu_threads')} threads; peer: jax {rows[0]['peer_best'] and rows[0]['peer_best']['jax']}; "
          f"load average {env['load1_start']:.1f} at start, {env['load1_end']:.1f} at end")
    print(f"{'workload':9s} {'ntkfast pairs/s':>16s} {'peer pairs/s (block)':>22s} {'ratio':>8s}  "
          f"{'load (ours/peer)':>16s}  {'peer vs ours f64':>17s}")
    for r in rows:
        o, p = r["ntkfast"], r["peer_best"]
        pb = "failed" if p is None else f"{p['pairs_per_s']:,.2f} ({p['block']}x{p['block']})"
        ratio = "" if p is None else f"{o['pairs_per_s'] / p['pairs_per_s']:,.0f}x"
        ld = f"{o['load1']:.1f}/" + ("-" if p is None else f"{p['load1']:.1f}")
        ag = "" if r["agreement"] is None else f"{max(r['agreement'].values()):.1e}"
        print(f"{r['workload']:9s} {o['pairs_per_s']:16,.1f} {pb:>22s} {ratio:>8s}  {ld:>16s}  {ag:>17s}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"environment": env, "args": vars(args), "rows": rows}, f, indent=1)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
