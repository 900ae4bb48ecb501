"""How the measured halving times of ``ntkfast dynamics`` approach ln 2 / mu_k as the number n of training
points on the sphere grows: t_half / (ln 2 / mu_k) per degree, mean and spread over seeds, and the fitted
slope of log t_half against log(1/mu_k).

    python bench/spectral_bias_n.py --ns 250,1000,4000 --seeds 0,1,2
"""
import argparse
import json
import sys
import time

import numpy as np

from ntkfast import dynamics as D


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default="250,1000,4000")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    ns = [int(v) for v in args.ns.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    rows = []
    for n in ns:
        for seed in seeds:
            t0 = time.perf_counter()
            res = D.sphere_study(n=n, seed=seed, n_times=120, quadrature=False)
            for label, r in res["kernels"].items():
                ratios = {k: r["t_half"][k] / r["predicted"][k] for k in r["t_half"] if r["mu"][k] > 0}
                rows.append(dict(n=n, seed=seed, kernel=label, slope=r["slope"], ratios=ratios))
            print(f"n = {n} seed {seed}: {time.perf_counter() - t0:.1f} s, slopes "
                  + ", ".join(f"{r['slope']:.3f}" for r in rows[-3:]), flush=True)
    labels = list(dict.fromkeys(r["kernel"] for r in rows))
    print("\nt_half / (ln2 / mu_k), mean (min..max) over seeds " + str(seeds))
    print("| kernel | n | " + " | ".join(f"k = {k}" for k in range(1, 7)) + " | slope |")
    print("|---|---|" + "---|" * 7)
    for label in labels:
        for n in ns:
            rs = [r for r in rows if r["kernel"] == label and r["n"] == n]
            cells = []
            for k in range(1, 7):
                v = [r["ratios"][k] for r in rs if k in r["ratios"]]
                cells.append("-" if not v else f"{np.mean(v):.3f} ({min(v):.2f}..{max(v):.2f})")
            sl = [r["slope"] for r in rs]
            print(f"| {label} | {n} | " + " | ".join(cells) + f" | {np.mean(sl):.3f} ({min(sl):.3f}..{max(sl):.3f}) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(D.jsonable(rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
