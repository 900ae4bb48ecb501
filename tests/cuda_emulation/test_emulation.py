"""The CUDA kernel body (csrc/cuda/kernels.cuh) run on the host by g++, on machines without a GPU.

Complements the GPU tests (tests/test_gpu.py) and does not replace them: no GPU instruction, warp shuffle or
memory model is exercised here, only the code that the kernel runs, with host threads standing in for lanes.

- one-lane teams (two at once): every layer-type net and the small presets of test_backend_vs_reference,
  the branching nets of run_emulation.residual_nets(), and the random nets random_case(0..11), in float64
  and float32, bitwise equal to the CPU backend (self data and both kernels) and within the reference
  tolerances (``run_emulation.judge``);
- ThreadSanitizer build, two teams of 32 threads (a barrier per warp sync, the butterfly for the sums) on a
  few small nets covering every kind of pass (circular planes and their segments, VALID, both poolings out
  of linear and circular stages, the change of representation, scalar heads, a vector net, and the register
  passes of branching nets: copies, adds, several registers pooled and changing representation, a 3-branch
  scalar head): no data race, float32 bitwise equal to the CPU backend.
``python tests/cuda_emulation/run_emulation.py`` runs larger sets (all presets, 40 random nets, --lanes 32).
"""
import time

import numpy as np
import pytest

import emu_build
import run_emulation as R
from ntkfast import (AvgPool, Conv, Dense, Erf, FanInSum, FanOut, Flatten, GaussianPool, GlobalAvgPool, Identity, ReLU,
                     parallel, serial)

pytestmark = pytest.mark.skipif(emu_build.compiler() is None or not emu_build.barrier_works(),
                                reason="no C++20 compiler with std::barrier (g++ >= 11)")

# Small nets for the 32-thread ThreadSanitizer runs (each pair crosses hundreds of barriers per thread).
TSAN_NETS = {
    "circular_pool_same": (serial(Conv(3, padding="CIRCULAR", b_std=0.1), ReLU(), AvgPool(2), Conv(3), ReLU(),
                                  GlobalAvgPool(), Dense()), (6, 5, 2)),
    "gauss_valid_head": (serial(Conv(3), ReLU(), GaussianPool(2), Conv(2, padding="VALID"), ReLU(), Flatten(),
                                Dense(1.3, 0.2), ReLU(), Dense()), (7, 7, 1)),
    "valid_then_circular": (serial(Conv(2, padding="VALID"), ReLU(), Conv(3, padding="CIRCULAR"), ReLU(),
                                   AvgPool(3, stride=2, padding="SAME"), GlobalAvgPool(), Dense()), (6, 5, 1)),
    "circular_flatten_pool": (serial(Conv((3, 2), padding="CIRCULAR"), ReLU(), GaussianPool(1), Conv(3), ReLU(),
                                     Flatten(), Dense()), (5, 6, 1)),
    "fc": (serial(Dense(1.2, 0.4), ReLU(), Dense(2 ** 0.5), ReLU(), Dense()), (9,)),
    # Registers: copies and adds, a change of representation and a strided pooling of two registers.
    "res_circ_valid_strided": (serial(Conv(3, padding="CIRCULAR"), FanOut(2),
                                      parallel([ReLU(), Conv(3, padding="CIRCULAR"), ReLU(), Conv(2, padding="VALID")],
                                               Conv(2, padding="VALID")),
                                      FanInSum(), FanOut(2), parallel([ReLU(), Conv(3, stride=2)], Conv(1, stride=2)),
                                      FanInSum(), ReLU(), GlobalAvgPool(), Dense()), (6, 5, 1)),
    "res_fc_head3": (serial(Conv(3), ReLU(), Flatten(), Dense(), FanOut(3),
                            parallel([ReLU(), Dense()], Identity(), [Erf(), Dense(0.8, 0.2)]), FanInSum(), ReLU(),
                            Dense()), (5, 4, 1)),
}
HEAVY = {"bietti_mairal/sym"}  # 28x28: its float64 reference alone takes seconds; run_emulation.py covers it


def _report(rows):
    bad = [r for r in rows if not r["ok"]]
    return "\n".join(f"{r['label']} {r['dtype']}: vs ref {r['e_ref']:.2e} ({r['ref_kind']}), vs cpu "
                     f"{r['e_cpu']:.2e}, bitwise {r['bitwise']}" for r in bad)


@pytest.fixture(scope="module")
def emu_exes():
    return emu_build.build_all()  # every host test program in one parallel batch, cached


@pytest.fixture(scope="module")
def emulate_exe(emu_exes):
    return emu_exes["emulate"]


def test_tri_decode(emulate_exe):
    import subprocess
    out = subprocess.run([emulate_exe, "tri"], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_kernel_body_matches_cpu_and_reference(emulate_exe):
    cases = [c for c in R.fixed_cases(quick=True) if c.label not in HEAVY] + R.random_cases(range(12))
    rows = R.run(cases, lanes=1, teams=2, exe=emulate_exe, verbose=False)
    assert all(r["ok"] for r in rows), _report(rows)
    # One-lane teams add even the float64 readout sums in the CPU's order: everything is bitwise.
    assert all(r["bitwise"] for r in rows), _report([dict(r, ok=False) for r in rows if not r["bitwise"]])


def test_kernel_body_threaded_without_races(emu_exes):
    if "emulate_tsan" not in emu_exes:
        pytest.skip("ThreadSanitizer does not build or run here")
    exe = emu_exes["emulate_tsan"]
    rng = np.random.default_rng(5)
    cases = []
    for name, (arch, shape) in TSAN_NETS.items():  # 3 + 2 pairs per net and dtype, two teams at once
        X = rng.standard_normal((3,) + shape)
        cases.append(R.EmuCase(name + "/sym", arch, X[:2], None))
        cases.append(R.EmuCase(name + "/rect", arch, X[:1], X[1:] * 0.7 + 0.1))
    t0 = time.perf_counter()
    rows = R.run(cases, lanes=32, teams=2, exe=exe, verbose=False, dtypes=("float32",))
    assert all(r["ok"] and r["bitwise"] for r in rows), _report([dict(r, ok=False) for r in rows])
    print(f"TSan, 2 teams x 32 threads, {len(cases)} cases: {time.perf_counter() - t0:.1f} s")
