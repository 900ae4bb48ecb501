"""Shared fixtures: data paths, available devices, tolerances.

GPU tests carry the ``gpu`` marker and skip when no GPU is usable; NTKFAST_REQUIRE_GPU=1 turns those skips
into failures (for runs on GPU machines).
"""
import os

import numpy as np
import pytest

MNIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")


def cuda_usable():
    try:
        from ntkfast.config import cuda_usable as cu
        return cu()
    except Exception as e:  # the extension itself failing to import is a failure elsewhere
        return False, repr(e)


def available_devices():
    devs = ["cpu"]
    if cuda_usable()[0]:
        devs.append("cuda")
    return devs


@pytest.fixture(autouse=True)
def _gpu_guard(request):
    """Tests marked ``gpu`` skip without a usable GPU; with NTKFAST_REQUIRE_GPU=1 they fail instead."""
    if "gpu" not in request.keywords:
        return
    usable, reason = cuda_usable()
    if usable:
        return
    if os.environ.get("NTKFAST_REQUIRE_GPU") == "1":
        pytest.fail(f"NTKFAST_REQUIRE_GPU=1 but no GPU is usable: {reason}")
    pytest.skip(f"no usable GPU: {reason}")


@pytest.fixture(scope="session")
def mnist():
    """(images float64 (10000, 28, 28, 1) in [0, 1], labels) of ../shared/data/mnist; skip when absent."""
    if not os.path.isdir(MNIST_DIR):
        pytest.skip("MNIST not present at ../shared/data/mnist")
    from ntkfast.data import load_mnist
    return load_mnist(MNIST_DIR)


def rel_err(a, ref):
    """max |a - ref| / max |ref|: the norm every accuracy tolerance in this suite uses."""
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))
