"""The CUDA kernel body (csrc/cuda/kernels.cuh) run on the host by g++, on machines without a GPU.

The same per-pair code the GPU runs, one host thread standing in for the warp, against the CPU backend and
the float64 reference on every layer type and the presets (the 32x32 Myrtle presets are left to
``python tests/cuda_emulation/run_emulation.py``, which also has a 32-thread lockstep mode).
"""
import shutil

import pytest

import run_emulation


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")
def test_kernel_body_on_host(capsys):
    rc = run_emulation.main(["--lanes", "1", "--quick"])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
