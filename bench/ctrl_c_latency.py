"""How long Ctrl-C takes to stop a running tile: SIGINT to a process in the middle of a large tile, to exit.

Runs ``ntkfast gram`` on random 32x32x3 images with myrtle5 (about 2 ms per pair per core, so a 256 x 256
tile runs for a minute or more on 2 cores) writing to a zarr store, sends SIGINT after ``--after`` seconds
(well inside the first tile), and reports the seconds from the signal to the process's exit, its exit
status and the last line it printed (the resume note). Then the same for Python calls: ``ntkfast.gram`` on
100 gap5 images (the case of issue 14: one tile, 136 s from Ctrl-C to the prompt before cancellation) and
``ntkfast.gram_diag`` on 4,096 images (one long paired-mode call per chunk).

    python bench/ctrl_c_latency.py [--after 6] [--repeats 3]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

PY_GAP5 = """
import numpy as np, ntkfast as nf
X = np.random.default_rng(0).standard_normal((100, 28, 28, 1)).astype(np.float32)
print('start', flush=True)
nf.gram(X, arch=nf.presets.by_name('gap5'))
"""

PY_DIAG = """
import numpy as np, ntkfast as nf
X = np.random.default_rng(0).standard_normal((4096, 32, 32, 3)).astype(np.float32)
print('start', flush=True)
nf.gram_diag(X, arch=nf.presets.myrtle(5))
"""


def stop_after(cmd, after, env=None):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    time.sleep(after)
    t0 = time.perf_counter()
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=600)
    dt = time.perf_counter() - t0
    last = [line for line in out.splitlines() if line.strip()][-1:] or [""]
    return {"seconds_to_exit": dt, "returncode": p.returncode, "last_line": last[0][-300:]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--after", type=float, default=6.0, help="seconds before SIGINT")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "x.npz")
        X = np.random.default_rng(0).standard_normal((512, 32, 32, 3)).astype(np.float32)
        np.savez(data, X=X, y=np.zeros(len(X), np.int64))
        for r in range(args.repeats):
            out = os.path.join(d, f"g{r}.zarr")
            cmd = [sys.executable, "-m", "ntkfast", "gram", "--arch", "myrtle5", "--data", data, "--out", out,
                   "--tile", "256"]
            row = {"what": "ntkfast gram (CLI), myrtle5 32x32x3, tile 256", **stop_after(cmd, args.after)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        for r in range(args.repeats):
            row = {"what": "ntkfast.gram (Python), gap5, 100 images 28x28 (one 100x100 tile)",
                   **stop_after([sys.executable, "-c", PY_GAP5], args.after)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        for r in range(args.repeats):
            row = {"what": "ntkfast.gram_diag (Python), myrtle5, 4096 images",
                   **stop_after([sys.executable, "-c", PY_DIAG], args.after)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for what in dict.fromkeys(r["what"] for r in rows):
        t = [r["seconds_to_exit"] for r in rows if r["what"] == what]
        print(f"{what}: SIGINT to exit {min(t):.2f} .. {max(t):.2f} s over {len(t)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
