"""With NTKFAST_REQUIRE_GPU=1 (runs on GPU machines) a missing GPU is a failure, not a skip.

This test carries no ``gpu`` marker: the conftest's guard would skip it without a GPU (or fail it with
NTKFAST_REQUIRE_GPU=1, before it could say why), so it lives apart from tests/test_gpu.py, whose tests all
carry the marker.
"""
import os

import pytest

from ntkfast.config import cuda_usable


def test_gpu_usable_when_required():
    usable, reason = cuda_usable()
    if os.environ.get("NTKFAST_REQUIRE_GPU") != "1" and not usable:
        pytest.skip(f"no usable GPU: {reason}")
    assert usable, f"NTKFAST_REQUIRE_GPU=1 but no GPU is usable: {reason}"
