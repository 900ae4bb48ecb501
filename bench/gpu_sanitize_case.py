"""A small workload for compute-sanitizer (memcheck, racecheck, synccheck), run by bench/gpu_check.py: every
kind of pass of the CUDA kernel (circular planes and their SAME segments, VALID, average and Gaussian
pooling out of linear and circular stages, scalar heads, a vector net), self data and symmetric and
rectangular tiles, in float32 and float64, compared with the CPU backend. Exits 1 on a mismatch.
"""
import sys

import numpy as np

import ntkfast as nf
from ntkfast import AvgPool, Conv, Dense, Flatten, GaussianPool, GlobalAvgPool, ReLU, serial

NETS = [
    (serial(Conv(3, padding="CIRCULAR", b_std=0.1), ReLU(), AvgPool(2), Conv(3), ReLU(), GlobalAvgPool(), Dense()),
     (6, 5, 2)),
    (serial(Conv(3), ReLU(), GaussianPool(2), Conv(2, padding="VALID"), ReLU(), Flatten(), Dense(1.3, 0.2), ReLU(),
            Dense()), (7, 7, 1)),
    (serial(Conv(2, padding="VALID"), ReLU(), Conv(3, padding="CIRCULAR"), ReLU(), AvgPool(3, stride=2, padding="SAME"),
            GlobalAvgPool(), Dense()), (6, 5, 1)),
    (serial(Dense(1.2, 0.4), ReLU(), Dense(2 ** 0.5), ReLU(), Dense()), (9,)),
]


def main():
    rng = np.random.default_rng(0)
    worst = 0.0
    for arch, shape in NETS:
        X = rng.standard_normal((4,) + shape)
        for dtype in ("float32", "float64"):
            for Y in (None, X[:3] * 0.5):
                g = nf.gram(X, Y, arch=arch, device="cuda", dtype=dtype)
                c = nf.gram(X, Y, arch=arch, device="cpu", dtype=dtype)
                for a, b in zip(g, c):
                    worst = max(worst, float(np.max(np.abs(a - b)) / np.max(np.abs(b))))
    print(f"sanitize case: worst relative difference GPU vs CPU {worst:.2e}")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
