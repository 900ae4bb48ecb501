"""Work done once per call (issue 15): one pass over the inputs, one compile of the net, one memory model,
one hash function."""
import numpy as np
import pytest

import ntkfast as nf
import ntkfast.kernel.inputs as inputs_module
import ntkfast.kernel.tiled as tiled
import ntkfast.storage.memory as memory
from ntkfast import _core

RNG = np.random.default_rng(5)


def _count(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counting(*a, **k):
        calls.append(a)
        return real(*a, **k)
    monkeypatch.setattr(module, name, counting)
    return calls


def _fresh_arch():
    """A net no other test has compiled (the plan cache is per arch and input shape)."""
    return nf.serial(nf.Conv(3, W_std=1.0 + RNG.uniform(0.1, 0.9)), nf.ReLU(), nf.GlobalAvgPool(), nf.Dense())


def test_one_pass_over_each_input(monkeypatch):
    rows = _count(monkeypatch, inputs_module, "row_max")
    hashes = _count(monkeypatch, tiled, "fingerprint")
    X, Y = RNG.standard_normal((5, 6, 6, 1)), RNG.standard_normal((3, 6, 6, 1))
    nf.gram(X, Y, arch=nf.presets.cntk(1), dtype="float32")
    assert len(rows) == 2                  # NaN/Inf, overflow and magnitudes: one pass over X, one over Y
    assert hashes == []                    # an in-memory result records no fingerprint: nothing is hashed
    # out-of-range magnitudes are rescaled from the same pass
    rows.clear()
    k = nf.gram(X * 2.0 ** 40, arch=nf.presets.cntk(1), dtype="float32", kind="ntk")
    assert len(rows) == 1
    np.testing.assert_allclose(k, nf.gram(X, arch=nf.presets.cntk(1), dtype="float32", kind="ntk") * 2.0 ** 80,
                               rtol=1e-6)


def test_a_resumable_store_hashes_each_input_once(monkeypatch, tmp_path):
    pytest.importorskip("zarr")
    hashes = _count(monkeypatch, tiled, "fingerprint")
    X = RNG.standard_normal((6, 5, 5, 1))
    nf.gram(X, arch=nf.presets.cntk(1), out=str(tmp_path / "g.zarr"))
    assert len(hashes) == 2                # X and Y (None) once each


def test_the_net_compiles_once_per_call(monkeypatch):
    compiles = _count(monkeypatch, _core, "compile_program")
    arch = _fresh_arch()
    X = RNG.standard_normal((4, 7, 7, 1))
    nf.gram(X, arch=arch)
    assert len(compiles) == 1              # the plan of read_inputs is the program of the tiles
    nf.gram(X[:2], X, arch=arch)
    assert len(compiles) == 1              # and it is cached per (arch, input shape)


def test_the_memory_model_is_made_once_per_prepare(monkeypatch):
    per_thread = _count(monkeypatch, memory, "per_thread_bytes")
    X = RNG.standard_normal((40, 6, 6, 1))
    job = tiled.prepare(X, arch=nf.presets.cntk(1), memory_budget="50MB")
    assert len(per_thread) == 1 and job.estimate.total <= 50e6


def test_estimators_key_their_cache_by_the_store_fingerprint():
    from ntkfast.estimators import NTKRegressor
    import ntkfast.learning.estimators as E
    assert not hasattr(E, "_digest") and E.fingerprint is nf.store.fingerprint is inputs_module.fingerprint
    X = RNG.standard_normal((12, 4))
    est = NTKRegressor("fc1", ridge=0.1).fit(X, X[:, 0])
    assert est._gram_cache[0][-1] == inputs_module.fingerprint(est.X_fit_)
