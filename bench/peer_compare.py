"""ntkfast vs neural-tangents, measured side by side in one run (float32, NNGP+NTK, pairs/s).

neural-tangents is not a dependency: it runs in its own Python (``--peer-python``, e.g. a venv with jax and
neural-tangents 0.6.5) through the import shim and timing script of ``--peer-dir`` (default
../shared/peers, see its README). Also checks that both libraries give the same kernels (``--check``).

    python bench/peer_compare.py --peer-python /opt/ntpeer/bin/python --device cpu
"""
import argparse
import json
import os
import subprocess
import sys
import textwrap

import numpy as np

import ntkfast as nf
from ntkfast.cli.core import bench_workload

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PEER_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "peers"))
# Block sizes for the peer (images per side): its best found on each device (GPU: ../shared/peers/README.md;
# the 2-core CPU, measured here: gap5 5.0 pairs/s at 16, 4.7 at 8, 4.4 at 4, 3.5 at 2).
PEER_BLOCKS = {"cpu": {"gap5": 16, "flat5": 512, "myrtle5": 8}, "cuda": {"gap5": 16, "flat5": 1024, "myrtle5": 8}}
SHAPES = {"gap5": [28, 28, 1], "flat5": [28, 28, 1], "myrtle5": [32, 32, 3]}


def run_peer(python, peer_dir, configs):
    cmd = [python, os.path.join(peer_dir, "peer_bench_nt.py"), json.dumps(configs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    rows = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            rows[r["arch"]] = r
    if not rows:
        print("peer produced no timings:\n" + out.stdout[-2000:] + out.stderr[-2000:], file=sys.stderr)
    return rows, out.stdout.splitlines()[0] if out.stdout else ""


CHECK = textwrap.dedent("""
    import sys, json, numpy as np
    sys.path.insert(0, sys.argv[1])
    import nt_shim  # noqa
    from neural_tangents import stax
    from peer_bench_nt import arch
    import jax; jax.config.update('jax_enable_x64', sys.argv[5] == 'float64')
    X = np.load(sys.argv[2]).astype(sys.argv[5])
    k = arch(sys.argv[3])(X, None, get=('nngp', 'ntk'))
    np.savez(sys.argv[4], nngp=np.asarray(k.nngp), ntk=np.asarray(k.ntk))
""")


def check_agreement(python, peer_dir, name, tmp):
    shape = tuple(SHAPES[name])
    X = np.random.default_rng(1).standard_normal((3,) + shape)
    xp, op = os.path.join(tmp, f"{name}_x.npy"), os.path.join(tmp, f"{name}_nt.npz")
    np.save(xp, X)
    for dtype in ("float64", "float32"):  # the peer's x64 mode crashes on some nets: fall back to float32
        r = subprocess.run([python, "-c", CHECK, peer_dir, xp, name, op, dtype], capture_output=True, text=True)
        if r.returncode == 0:
            break
    else:
        return None
    nt = np.load(op)
    ours = nf.gram(X, arch=nf.presets.by_name(name), dtype="float64", device="cpu")
    err = {k: float(np.max(np.abs(getattr(ours, k) - nt[k])) / np.max(np.abs(nt[k]))) for k in ("nngp", "ntk")}
    return dict(err, peer_dtype=dtype)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-python", default=sys.executable, help="Python that can import jax + neural-tangents")
    ap.add_argument("--peer-dir", default=DEFAULT_PEER_DIR, help="folder with nt_shim.py and peer_bench_nt.py")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--workloads", default="gap5,flat5,myrtle5")
    ap.add_argument("--seconds", type=float, default=5.0, help="target seconds per ntkfast timing")
    ap.add_argument("--check", action="store_true", help="also compare the kernels of both libraries (float64)")
    args = ap.parse_args(argv)
    names = [w for w in args.workloads.split(",") if w]
    env_note = {"ntkfast": nf.__version__, "build": nf.config.build_info()}
    try:
        env_note["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                            cwd=HERE).stdout.strip()
    except OSError:
        pass
    print(json.dumps(env_note))
    ours = {w: bench_workload(w, device=args.device, seconds=args.seconds) for w in names}
    have_peer = os.path.isfile(os.path.join(args.peer_dir, "peer_bench_nt.py"))
    peer, peer_env = {}, ""
    if have_peer:
        blocks = PEER_BLOCKS[args.device]
        peer, peer_env = run_peer(args.peer_python, args.peer_dir, [[w, SHAPES[w], blocks[w]] for w in names
                                                                    if w in blocks])
    print(f"peer: {peer_env or 'neural-tangents not available'}")
    print(f"{'workload':10s} {'ntkfast pairs/s':>16s} {'neural-tangents':>16s} {'ratio':>8s}")
    for w in names:
        o = ours[w]["pairs_per_s"]
        p = peer.get(w, {}).get("pairs_per_s")
        print(f"{w:10s} {o:16,.1f} {p if p is None else format(p, ',.1f'):>16} "
              f"{'' if p is None else format(o / p, '.1f') + 'x':>8s}")
        print(json.dumps({"workload": w, "ntkfast": ours[w], "peer": peer.get(w)}))
    if args.check and have_peer:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            for w in names:
                print(f"agreement {w} (float64, max-norm relative):", check_agreement(args.peer_python, args.peer_dir,
                                                                                     w, tmp))


if __name__ == "__main__":
    main()
