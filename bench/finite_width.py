"""Finite networks against the infinite-width prediction of ntkfast.predict.

Trains the two-layer ReLU net of ntkfast.taylor (TwoLayer, first layer trained, symmetric initialization so
that its output is 0 at W = 0) by plain gradient descent with a fixed step (ntkfast.taylor.gradient_descent)
at widths 512 to 8192, and compares its test outputs with GradientFlow(..., discrete=True) on the
infinite-width NTK of that net (ntkfast.dynamics.two_layer_ntk) after the same number of steps.

    python bench/finite_width.py [--widths 512,1024,2048,4096,8192] [--seeds 0,1,2] [--json out.json]
"""
import argparse
import json
import sys
import time

from ntkfast import dynamics as D


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="512,1024,2048,4096,8192")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr-fraction", type=float, default=0.1, help="step as a fraction of 2 n / lambda_max")
    ap.add_argument("--n", type=int, default=64, help="training points (sphere of radius sqrt(d))")
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    res = D.finite_width_study(widths, d=args.d, n=args.n, n_test=args.n, steps=args.steps,
                               lr_fraction=args.lr_fraction, seeds=seeds,
                               checkpoints=(args.steps // 100, args.steps // 10, args.steps),
                               progress=lambda m: print(m, flush=True))
    cfg = res["config"]
    print(f"TwoLayer(relu) 'full', d = {cfg['d']}, n = {cfg['n']} train / {cfg['n_test']} test, {cfg['steps']} steps "
          f"of lr = {cfg['lr']:.4g} ({cfg['lr_fraction']} x the limit {cfg['lr_limit']:.4g}), seeds {cfg['seeds']}")
    print(D.format_finite_width_table(res))
    print(f"total {time.perf_counter() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(D.jsonable(res), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
