"""The CUDA backend's host code (csrc/cuda/gram_cuda.cu) compiled by g++ against a stand-in CUDA runtime
(tests/cuda_emulation/stand_in), with AddressSanitizer where it works: sessions and tiles, bands streamed
back on a second stream, mirroring, out-of-memory retries (fewer resident warps, fewer rows per band,
inputs streamed per tile and split), cancellation and progress, device selection and per-device kernel
probes, the shared-memory attribute set once per device (and sized by the registers of branching nets), kernel
faults reported with their launch and the refusal that follows, malformed programs refused by the program
blob. Results are compared bitwise with the CPU backend (orchestration.cpp).

Complements the GPU tests (tests/test_gpu.py) and does not replace them: the stand-in models the runtime
semantics the host code relies on, not a GPU.
"""
import subprocess

import pytest

import emu_build

pytestmark = pytest.mark.skipif(emu_build.compiler() is None, reason="g++ not found")

SCENARIOS = ["basic", "bands", "session", "oom_scratch", "oom_inputs", "oom_fail", "cancel", "devices",
             "device_index", "attributes_once", "smem_attribute", "fault", "fault_sync", "fault_self", "no_driver",
             "malformed"]


@pytest.fixture(scope="module")
def exe():
    return emu_build.build_all()["orchestration"]  # one parallel batch with the emulation, cached


def test_scenario_list(exe):
    out = subprocess.run([exe, "list"], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(out) == sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_host_orchestration(exe, scenario):
    r = subprocess.run([exe, scenario], capture_output=True, text=True, timeout=300, env=emu_build.run_env())
    assert r.returncode == 0 and r.stdout.startswith(f"ok {scenario}"), (r.stdout + r.stderr)[-6000:]
