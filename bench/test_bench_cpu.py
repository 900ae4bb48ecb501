"""pytest-benchmark suite of the CPU backend on the workloads of docs/design.md (section 4) (float32, NNGP+NTK).

Run: ``pytest bench/test_bench_cpu.py --benchmark-only`` (not part of the unit-test command). The
``pairs_per_s`` extra_info of each benchmark is the figure to compare with neural-tangents
(``python bench/peer_compare.py`` runs both in one go).
"""
import numpy as np
import pytest

import ntkfast as nf

WORKLOADS = {
    # name: (arch, input shape, images per side of the timed X vs Y tile)
    "gap5": (nf.presets.cntk(5, "gap"), (28, 28, 1), 16),
    "flat5": (nf.presets.cntk(5, "flatten"), (28, 28, 1), 512),
    "myrtle5": (nf.presets.myrtle(5), (32, 32, 3), 16),
    "bietti_mairal": (nf.presets.bietti_mairal(), (28, 28, 1), 32),
}


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_cpu_gram(benchmark, name):
    arch, shape, n = WORKLOADS[name]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n,) + shape).astype(np.float32)
    Y = rng.standard_normal((n,) + shape).astype(np.float32)
    nf.gram(X[:2], Y[:2], arch=arch, device="cpu")  # warm-up: compile the program, touch the pages
    k = benchmark.pedantic(lambda: nf.gram(X, Y, arch=arch, device="cpu"), rounds=3, iterations=1)
    assert np.isfinite(k.ntk).all()
    benchmark.extra_info["pairs"] = n * n
    benchmark.extra_info["pairs_per_s"] = n * n / benchmark.stats.stats.min
    benchmark.extra_info["config"] = nf.config.build_info()
