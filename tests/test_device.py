"""The one device policy (ntkfast.device): the same names, checks, fallbacks and messages everywhere."""
import sys
import types

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import device as D

BAD = r"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' \(N a GPU index\); got 'tpu'"


def test_names():
    for ok in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert D.check(ok) == ok
    for bad in ("gpu", "cuda:", "cuda:-1", "cuda:x", "CUDA", "cuda:1:2", ""):
        with pytest.raises(ValueError, match=r"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
            D.check(bad)
    for bad in (0, None, 1.0):
        with pytest.raises(TypeError, match=r"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N'.*; got"):
            D.check(bad, "--device")
    assert D.index("cuda:3") == 3 and D.index("cuda") is None and D.is_cuda("cuda:3") and not D.is_cuda("cpu")
    assert D.core_name("cuda:3") == "cuda" and D.core_name("cpu") == "cpu"


def _every_entry_point(device):
    """Each public function or class that takes a device, called with it (cheap arguments)."""
    X = np.random.default_rng(0).standard_normal((3, 4))
    K = X @ X.T + np.eye(3)
    from ntkfast.estimators import NTKRegressor
    from ntkfast.predict import GradientFlow
    from ntkfast.taylor import TaylorModel, TwoLayer
    return {
        "gram": lambda: nf.gram(X, arch=nf.presets.fc(1), device=device),
        "krr.solve": lambda: nf.krr.solve(K, np.ones(3), 0.1, device=device),
        "krr.KRR": lambda: nf.krr.KRR(0.1, device=device).fit(K, np.ones(3)),
        "krr_stream.solve": lambda: nf.krr_stream.solve(K, np.ones(3), 0.1, device=device),
        "GradientFlow": lambda: GradientFlow(K, np.ones(3), device=device),
        "NTKRegressor": lambda: NTKRegressor("fc1", device=device).fit(X, np.ones(3)),
        "TaylorModel": lambda: TaylorModel("quadratic", device=device),
        "TwoLayer": lambda: TwoLayer(4, 4, device=device),
        "array_module": lambda: D.array_module(device),
    }


@pytest.mark.parametrize("name", list(_every_entry_point("cpu")))
def test_every_entry_point_says_the_same(name):
    with pytest.raises(ValueError, match=BAD):
        _every_entry_point("tpu")[name]()
    _every_entry_point("cpu")[name]()


def test_compiled_backend(monkeypatch):
    usable, reason = nf.config.cuda_usable()
    if not usable:
        assert D.backend("auto") == "cpu"
        for dev in ("cuda", "cuda:1"):
            with pytest.raises(RuntimeError, match=rf"device='{dev}' requested but no GPU is usable: "):
                nf.gram(np.ones((2, 3)), arch=nf.presets.fc(1), device=dev)
    monkeypatch.setenv("NTKFAST_DISABLE_CUDA", "1")
    assert D.backend("auto") == "cpu"
    with pytest.raises(RuntimeError, match="disabled by NTKFAST_DISABLE_CUDA=1"):
        D.backend("cuda:0")


@pytest.fixture
def fake_cupy(monkeypatch):
    """A stand-in for cupy that reports one GPU (the policy only asks it for the device count)."""
    shim = types.ModuleType("cupy")
    shim.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    monkeypatch.setitem(sys.modules, "cupy", shim)
    return shim


def test_array_module_follows_the_same_rules(fake_cupy, monkeypatch):
    assert D.array_module("auto") is fake_cupy and D.array_module("cuda:0") is fake_cupy
    assert D.array_module("cpu") is np
    with pytest.raises(RuntimeError, match=r"device='cuda:1' requested but cupy sees 1 GPU\(s\)"):
        D.array_module("cuda:1")
    monkeypatch.setenv("NTKFAST_DISABLE_CUDA", "1")             # hides cupy's GPUs too, as the backend's
    assert D.array_module("auto") is np
    with pytest.raises(RuntimeError, match=r"device='cuda' needs cupy and a usable GPU \(disabled by "
                                           r"NTKFAST_DISABLE_CUDA=1\); install the GPU extra"):
        D.array_module("cuda")


def test_cli_device_option(capsys):
    from ntkfast.cli import main
    with pytest.raises(SystemExit) as e:
        main(["gram", "--device", "gpu"])
    assert e.value.code == 2
    assert "--device must be 'auto', 'cpu', 'cuda' or 'cuda:N'" in capsys.readouterr().err
