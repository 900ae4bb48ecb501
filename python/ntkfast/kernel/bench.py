"""The reference workloads of docs/design.md (section 4) and their timing (``ntkfast bench``, bench/)."""
from __future__ import annotations

import time

import numpy as np

from . import presets
from .. import device as D
from .tiled import gram

__all__ = ["WORKLOADS", "bench_workload"]

#: workload name -> (preset name, input shape (H, W, C))
WORKLOADS = {
    "gap5": ("gap5", (28, 28, 1)),
    "flat5": ("flat5", (28, 28, 1)),
    "myrtle5": ("myrtle5", (32, 32, 3)),
    "bietti_mairal": ("bietti_mairal", (28, 28, 1)),
}


def bench_workload(name, device="auto", dtype="float32", seconds=3.0, tile=None, threads=None):
    """Time one workload of docs/design.md (section 4) on random inputs: returns a dict with pairs/s (a square
    X vs Y tile grown until one call takes about ``seconds``)."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; expected one of {sorted(WORKLOADS)}")
    arch_name, shape = WORKLOADS[name]
    arch = presets.by_name(arch_name)
    dev = D.backend(device)
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

