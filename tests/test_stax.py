"""ntkfast.stax: neural-tangents' names, defaults and return values, computed by ntkfast.

Each net is written once as a function of the stax module, so that the same code builds it with
``ntkfast.stax`` and with ``neural_tangents.stax`` (the peer, when importable: skipped otherwise).
"""
import math

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import stax
from conftest import rel_err
from peer import stax_or_skip


# ---- nets written against a stax module S ----------------------------------------------------------------

def cnn_gap(S):
    return S.serial(S.Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.1), S.Relu(),
                    S.Conv(8, (3, 3), padding="SAME", W_std=1.5), S.Relu(), S.GlobalAvgPool(), S.Dense(1))


def myrtle(S, depth=5):
    a, b, c = {5: (1, 0, 0), 7: (2, 1, 1)}[depth]
    conv = lambda: [S.Conv(16, (3, 3), padding="SAME", W_std=2 ** 0.5), S.Relu()]  # noqa: E731
    layers = conv() + [l for _ in range(a) for l in conv()] + [S.AvgPool((2, 2), (2, 2))]
    layers += [l for _ in range(b + 1) for l in conv()] + [S.AvgPool((2, 2), (2, 2))]
    layers += [l for _ in range(c + 1) for l in conv()] + [S.AvgPool((2, 2), (2, 2))] * 2
    return S.serial(*layers, S.Flatten(), S.Dense(10))


def wrn_block(S, channels, strides=(1, 1), mismatch=False):
    main = S.serial(S.Relu(), S.Conv(channels, (3, 3), strides, padding="SAME"), S.Relu(),
                    S.Conv(channels, (3, 3), padding="SAME"))
    shortcut = S.Identity() if not mismatch else S.Conv(channels, (3, 3), strides, padding="SAME")
    return S.serial(S.FanOut(2), S.parallel(main, shortcut), S.FanInSum())


def wrn(S):
    return S.serial(S.Conv(16, (3, 3), padding="SAME"),
                    wrn_block(S, 16, mismatch=True), wrn_block(S, 16),
                    wrn_block(S, 32, (2, 2), mismatch=True), wrn_block(S, 32),
                    S.AvgPool((2, 2)), S.Flatten(), S.Dense(10, 1.0, 0.0))


def fc_net(S):
    return S.serial(S.Dense(32, W_std=1.3, b_std=0.2), S.Erf(), S.Dense(32, W_std=1.1), S.Relu(),
                    S.Dense(1, W_std=0.9, b_std=0.05))


def fc_residual(S):
    return S.serial(S.Dense(16, W_std=1.2, b_std=0.1), S.FanOut(2),
                    S.parallel(S.serial(S.Gelu(), S.Dense(16, W_std=1.4)), S.Identity()), S.FanInSum(),
                    S.LeakyRelu(0.2), S.Dense(1))


def standard_param(S):
    return S.serial(S.Conv(6, (3, 3), (2, 2), padding="SAME", W_std=1.2, b_std=0.3, parameterization="standard"),
                    S.Relu(), S.Conv(4, (2, 2), padding="CIRCULAR", W_std=1.1, parameterization="standard"),
                    S.Erf(), S.GlobalSumPool(), S.Dense(3, W_std=0.8, b_std=0.1, parameterization="standard"))


def dense_on_channels(S):
    """A Dense before the readout acts on channels (a 1x1 conv)."""
    return S.serial(S.Conv(4, (3, 3), padding="SAME"), S.Dense(8, W_std=1.3, b_std=0.2), S.Abs(),
                    S.SumPool((2, 2), (1, 1), "SAME"), S.Flatten(), S.Dense(1))


NETS = {"cnn_gap": (cnn_gap, (6, 7, 2)), "myrtle5": (myrtle, (16, 16, 3)), "wrn": (wrn, (8, 8, 3)),
        "fc": (fc_net, (9,)), "fc_residual": (fc_residual, (7,)), "standard": (standard_param, (7, 6, 2)),
        "dense_on_channels": (dense_on_channels, (6, 6, 1))}


# ---- without the peer --------------------------------------------------------------------------------------

def test_defaults_are_stax_defaults():
    (layer,) = stax.Conv(8, (3, 3)).layers
    assert (layer.padding, layer.W_std, layer.b_std, layer.stride, layer.width) == ("VALID", 1.0, None, (1, 1), 8)
    (layer,) = stax.Dense(10).layers
    assert (layer.W_std, layer.b_std, layer.width) == (1.0, None, 10)
    (layer,) = stax.AvgPool((2, 2)).layers
    assert layer.stride == (1, 1) and layer.padding == "VALID"


def test_kernel_fn_returns_what_stax_returns():
    _, _, kernel_fn = cnn_gap(stax)
    X = np.random.default_rng(0).standard_normal((3, 6, 7, 2))
    Y = X[:2] * 0.5
    k = kernel_fn(X, Y)
    assert k.nngp.shape == k.ntk.shape == (3, 2) and k.ntk.dtype == np.float64
    ref = nf.reference.gram(X, Y, arch=kernel_fn.arch)
    assert rel_err(k.ntk, ref.ntk) <= 1e-12 and rel_err(k.nngp, ref.nngp) <= 1e-12
    assert np.array_equal(kernel_fn(X, Y, get="ntk"), k.ntk)
    both = kernel_fn(X, Y, get=("ntk", "nngp"))
    assert both._fields == ("ntk", "nngp") and np.array_equal(both.nngp, k.nngp)
    assert kernel_fn(X.astype(np.float32), get="nngp").dtype == np.float32
    sym = kernel_fn(X, None, "ntk")
    assert sym.shape == (3, 3) and np.array_equal(sym, sym.T)


def test_gram_accepts_stax_layers_and_kernel_fns(tmp_path):
    net = wrn(stax)
    X = np.random.default_rng(1).standard_normal((5, 8, 8, 3))
    a = nf.gram(X, arch=net, dtype="float64")
    b = nf.gram(X, arch=net[2], dtype="float64", tile=2, out=str(tmp_path / "g.zarr"))
    assert np.array_equal(a.ntk, np.asarray(b.ntk)) and np.array_equal(a.nngp, np.asarray(b.nngp))


def test_finite_networks_and_unknown_layers_are_refused():
    init_fn, apply_fn, _ = stax.serial(stax.Dense(3), stax.Relu())
    with pytest.raises(NotImplementedError, match="infinite-width kernels only"):
        init_fn(None, (1, 4))
    with pytest.raises(NotImplementedError, match="infinite-width kernels only"):
        apply_fn((), np.ones((1, 4)))
    with pytest.raises(NotImplementedError, match=r"ntkfast.stax.Dropout: ntkfast does not compute this layer"):
        stax.Dropout(0.5)
    with pytest.raises(NotImplementedError, match="only axis=-1"):
        stax.LayerNorm(axis=(1, 2, 3))
    with pytest.raises(ValueError, match="get must be None, 'nngp', 'ntk'"):
        cnn_gap(stax)[2](np.ones((1, 6, 7, 2)), get="cov1")


def test_dense_before_the_readout_is_a_1x1_conv():
    X = np.random.default_rng(2).standard_normal((3, 6, 6, 1))
    ours = dense_on_channels(stax)[2].arch
    assert isinstance(ours.layers[1], nf.Conv) and ours.layers[1].k == (1, 1)
    hand = nf.serial(nf.Conv(3, W_std=1.0, b_std=None, padding="SAME"), nf.Conv(1, W_std=1.3, b_std=0.2), nf.Abs(),
                     nf.SumPool(2, stride=1, padding="SAME"), nf.Flatten(), nf.Dense(b_std=None))
    k, r = nf.gram(X, arch=ours, dtype="float64"), nf.gram(X, arch=hand, dtype="float64")
    assert np.array_equal(k.ntk, r.ntk)


# ---- against neural-tangents --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nt_stax():
    """neural-tangents' stax, run in a worker process (tests/peer.py); skipped when it is not importable."""
    return stax_or_skip()


@pytest.mark.parametrize("name", sorted(NETS))
def test_same_code_same_kernels_as_neural_tangents(nt_stax, name):
    make, shape = NETS[name]
    X = np.random.default_rng(3).standard_normal((4,) + shape)
    theirs = make(nt_stax)[2](X, None, get=("nngp", "ntk"))
    ours = make(stax)[2](X, None, get=("nngp", "ntk"))
    arch = make(stax)[2].arch
    # stax computes a pair (x, x) like any pair: where rho = 1 its NTK carries the sqrt(eps) angle error that
    # ntkfast's self recursion avoids (docs/design.md); that is the allowance beyond rounding.
    bound = nf.reference.angle_error_bound(X, arch=arch, delta=16 * 2.0 ** -53)
    for kind in ("nngp", "ntk"):
        t, o = np.asarray(getattr(theirs, kind)), getattr(ours, kind)
        assert np.all(np.abs(o - t) <= 1e-12 * np.abs(t).max() + getattr(bound, kind)), (kind, rel_err(o, t))
