"""Agreement with neural-tangents' analytic ``stax`` kernels, when it is importable (it is not a dependency;
../shared/peers/nt_shim.py imports it on current JAX; tests/peer.py runs it in a worker process). Skipped
otherwise."""
import numpy as np
import pytest

import ntkfast as nf
from conftest import rel_err
from peer import stax_or_skip


@pytest.fixture(scope="module")
def stax():
    """neural-tangents' stax, run in a worker process (tests/peer.py); skipped when it is not importable."""
    return stax_or_skip()


def test_matches_stax(stax):
    C = lambda: stax.Conv(1, (3, 3), padding="SAME", W_std=2 ** 0.5)  # noqa: E731
    nt = stax.serial(C(), stax.Relu(), stax.AvgPool((2, 2), strides=(2, 2)), C(), stax.Relu(), stax.GlobalAvgPool(),
                     stax.Dense(1))[2]
    ours = nf.serial(nf.Conv(3), nf.ReLU(), nf.AvgPool(2), nf.Conv(3), nf.ReLU(), nf.GlobalAvgPool(), nf.Dense())
    X = np.random.default_rng(0).standard_normal((4, 8, 8, 2))
    k = nt(X, None, get=("nngp", "ntk"))
    got = nf.gram(X, arch=ours, dtype="float64", device="cpu")
    assert rel_err(got.nngp, np.asarray(k.nngp)) <= 1e-12
    assert rel_err(got.ntk, np.asarray(k.ntk)) <= 1e-12


def _nt_conv(stax, k, padding, W_std=2 ** 0.5, b_std=None):
    k = (k, k) if isinstance(k, int) else k
    return stax.Conv(1, k, padding=padding, W_std=W_std, b_std=b_std)


@pytest.mark.parametrize("spec", [
    # (kernel, padding) per conv; every conv is followed by a ReLU; then an optional pool and the readout
    ([(2, "SAME"), (1, "CIRCULAR")], None, "flatten"),
    ([(3, "CIRCULAR"), (3, "VALID")], None, "gap"),
    ([(2, "CIRCULAR"), (4, "CIRCULAR"), ((2, 3), "SAME")], None, "gap"),
    ([(3, "CIRCULAR")], ("avg", 2, 1, "SAME"), "flatten"),
    ([(3, "VALID"), (2, "CIRCULAR")], ("avg", 3, 2, "VALID"), "gap"),
])
def test_mixed_paddings_match_stax(stax, spec):
    """Per-layer padding (issue 11): mixed SAME/VALID/CIRCULAR convolutions, even and wide windows, pools."""
    convs, pool, readout = spec
    nt_layers, ours = [], []
    for k, pad in convs:
        nt_layers += [_nt_conv(stax, k, pad), stax.Relu()]
        ours += [nf.Conv(k, padding=pad), nf.ReLU()]
    if pool is not None:
        _, p, s, pad = pool
        nt_layers.append(stax.AvgPool((p, p), strides=(s, s), padding=pad))
        ours.append(nf.AvgPool(p, stride=s, padding=pad))
    nt_layers += [stax.GlobalAvgPool() if readout == "gap" else stax.Flatten(), stax.Dense(1)]
    ours += [nf.GlobalAvgPool() if readout == "gap" else nf.Flatten(), nf.Dense()]
    nt = stax.serial(*nt_layers)[2]
    X = np.random.default_rng(1).standard_normal((3, 7, 6, 2))
    k = nt(X, None, get=("nngp", "ntk"))
    got = nf.gram(X, arch=nf.serial(*ours), dtype="float64", device="cpu")
    assert rel_err(got.nngp, np.asarray(k.nngp)) <= 1e-12
    # stax computes a pair (x, x) like any pair, so where correlations are +-1 (here after a 1x1 conv, on the
    # diagonal) its NTK carries the sqrt(eps) angle error that our self recursion avoids (docs/design.md)
    bound = nf.reference.angle_error_bound(X, arch=nf.serial(*ours), delta=16 * 2.0 ** -53).ntk
    assert np.all(np.abs(got.ntk - np.asarray(k.ntk)) <= 1e-12 * np.abs(got.ntk).max() + bound)


# ---------------------------------------------------------------------------------------------------------------
# Issue 16: every activation, strided convolutions, SumPool, GlobalSumPool, LayerNorm, standard parameterization
# and bias-free layers, in conv nets (GlobalAvgPool and Flatten readouts) and fully-connected nets, float64.
#
# Each net is written once as a list of layer makers; a maker returns the same layer in both libraries. Our
# defaults differ from stax's (our Conv: SAME, W_std = sqrt 2; stax.Conv: VALID, W_std = 1), so every argument is
# given explicitly on both sides. Our ``width`` is stax's out_chan / out_dim (it matters only where a standard-
# parameterized layer follows; elsewhere stax gets 1 output channel, which its infinite-width kernels ignore).

def _two(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv(k=3, padding="SAME", stride=1, W_std=2 ** 0.5, b_std=0.0, parameterization="ntk", width=None):
    def make(s):
        return (nf.Conv(k, W_std=W_std, b_std=b_std, padding=padding, stride=stride,
                        parameterization=parameterization, width=width),
                s.Conv(width or 1, _two(k), strides=_two(stride), padding=padding, W_std=W_std, b_std=b_std,
                       parameterization=parameterization))
    return make


def dense(W_std=1.0, b_std=0.0, parameterization="ntk", width=None):
    def make(s):
        return (nf.Dense(W_std, b_std, parameterization=parameterization, width=width),
                s.Dense(width or 1, W_std=W_std, b_std=b_std, parameterization=parameterization))
    return make


def same(name, *args, ours=None):
    """A layer with the same name and arguments in both libraries (``ours`` when our name differs)."""
    def make(s):
        return getattr(nf, ours or name)(*args), getattr(s, name)(*args)
    return make


def relu():
    return lambda s: (nf.ReLU(), s.Relu())


def pool(kind, p, stride, padding):
    def make(s):
        return (getattr(nf, kind)(p, stride=stride, padding=padding),
                getattr(s, kind)(_two(p), strides=_two(stride), padding=padding))
    return make


def layernorm(eps):
    return lambda s: (nf.LayerNorm(eps), s.LayerNorm(axis=-1, eps=eps))


GAP, FLAT, GSP = same("GlobalAvgPool"), same("Flatten"), same("GlobalSumPool")

# Every activation of issue 16, with non-default parameters. Hermite: the peer's kernel (S^degree) holds only for
# unit-variance inputs, so its nets put a LayerNorm(eps=0) before it (ours is exact for any variance).
ACTIVATIONS = {
    "ABRelu(-0.3,1.7)": same("ABRelu", -0.3, 1.7),
    "LeakyRelu(0.2)": same("LeakyRelu", 0.2),
    "Abs": same("Abs"),
    "RectifiedMonomial(0)": same("RectifiedMonomial", 0),
    "RectifiedMonomial(2)": same("RectifiedMonomial", 2),
    "RectifiedMonomial(3)": same("RectifiedMonomial", 3),
    "Erf(0.7,1.3,0.2)": same("Erf", 0.7, 1.3, 0.2),
    "Gelu": same("Gelu"),
    "Sin(0.8,1.2,0.3)": same("Sin", 0.8, 1.2, 0.3),
    "Cos(1.1,0.7,0.4)": same("Cos", 1.1, 0.7, 0.4),
    "Monomial(2)": same("Monomial", 2),
    "Monomial(3)": same("Monomial", 3),
    "Monomial(5)": same("Monomial", 5),
    "Hermite(2)": same("Hermite", 2),
    "Hermite(3)": same("Hermite", 3),
    "Hermite(4)": same("Hermite", 4),
    "Polynomial(0.1,-0.5,0.3,0.2)": same("Polynomial", (0.1, -0.5, 0.3, 0.2)),
    "Sign": same("Sign"),
}
# Known defect of the peer (../shared/peers/README.md): stax.RectifiedMonomial gives NaN on the diagonal of conv-net
# kernels and a wrong NTK diagonal on fully-connected nets. Nets with it are compared off the diagonal only; the
# diagonal of ours is checked against quadrature in tests/test_activations.py. In a conv net the peer's NaN sits in
# the self-covariance of each image at equal positions (its formula divides by sin(theta) = 0 there) and poisons
# every entry after a second nonlinearity (on fully-connected nets too, with JAX 0.10), so its nets here have a
# single RectifiedMonomial, followed by linear layers only.
PEER_DIAGONAL_DEFECT = ("RectifiedMonomial",)


def _act_nets(name):
    act = ACTIVATIONS[name]
    pre = [layernorm(0.0)] if name.startswith("Hermite") else []
    if name.startswith(PEER_DIAGONAL_DEFECT):
        return [
            (f"{name} conv gap", "image", [conv(3, W_std=1.1), act, conv(3, "VALID", W_std=0.9, b_std=0.2), GAP,
                                           dense()]),
            (f"{name} conv flatten", "image", [conv(2, "CIRCULAR", W_std=1.2, b_std=0.1), act, conv(3, stride=2),
                                               FLAT, dense(1.3, 0.1)]),
            (f"{name} fc", "vector", [dense(1.2, 0.3), act, dense(0.8, None)]),
        ]
    return [
        (f"{name} conv gap", "image", [conv(3, W_std=1.1), *pre, act, conv(3, "VALID", W_std=0.9, b_std=0.2), *pre,
                                       act, GAP, dense()]),
        (f"{name} conv flatten", "image", [conv(2, "CIRCULAR", W_std=1.2, b_std=0.1), *pre, act, FLAT,
                                           dense(1.3, 0.1), *pre, act, dense()]),
        (f"{name} fc", "vector", [dense(1.2, 0.3), *pre, act, dense(0.8, None), *pre, act, dense()]),
    ]


STRIDED = [
    (f"Conv stride {st} {pad} {ro}", "image", [conv(3, pad, st), relu(), conv(3, "SAME", 1, b_std=0.2), relu(),
                                               conv(2, pad, st), relu(), GAP if ro == "gap" else FLAT, dense()])
    for st, ro in ((2, "gap"), ((1, 2), "flatten")) for pad in ("SAME", "VALID", "CIRCULAR")
] + [
    ("Conv stride 2 mixed, Erf", "image", [conv((2, 3), "CIRCULAR", (2, 1), W_std=1.0), same("Erf", 1.0, 0.8, 0.1),
                                           conv(3, "VALID", 2, b_std=0.3), relu(), FLAT, dense()]),
]

POOLS = [
    ("SumPool 2/2 VALID", "image", [conv(3), relu(), pool("SumPool", 2, 2, "VALID"), conv(3), relu(), GAP, dense()]),
    ("SumPool 3/2 SAME", "image", [conv(3), relu(), pool("SumPool", 3, 2, "SAME"), conv(2, "VALID"), relu(), FLAT,
                                   dense()]),
    ("SumPool (2,1)/(2,1) SAME, Erf", "image", [conv(3, W_std=0.7), same("Erf", 1.0, 1.0, 0.0),
                                                pool("SumPool", (2, 1), (2, 1), "SAME"), conv(3, W_std=0.5), relu(),
                                                GAP, dense()]),
    ("GlobalSumPool", "image", [conv(3), relu(), conv(3, "CIRCULAR", b_std=0.1), relu(), GSP, dense()]),
    ("GlobalSumPool strided", "image", [conv(3, "VALID", 2), same("Gelu"), GSP, dense(0.5, 0.2), relu(), dense()]),
]

LAYERNORMS = [
    ("LayerNorm image gap", "image", [conv(3, b_std=0.3), layernorm(1e-3), relu(), conv(3), layernorm(0.5), relu(),
                                      GAP, dense()]),
    ("LayerNorm image flatten", "image", [conv(3, "VALID"), layernorm(1e-12), same("Erf", 1.0, 2.0, 0.0),
                                          conv(2, "CIRCULAR", 2), relu(), FLAT, dense()]),
    ("LayerNorm after readout", "image", [conv(3), relu(), conv(3), GAP, layernorm(0.1), relu(), dense()]),
    ("LayerNorm vector", "vector", [dense(1.5, 0.2), layernorm(0.3), relu(), dense(1.2), layernorm(1e-12),
                                    same("Gelu"), dense()]),
]

STANDARD = [
    ("standard conv gap", "image", [conv(3, W_std=1.2, b_std=0.3, parameterization="standard", width=4), relu(),
                                    conv(3, W_std=1.5, b_std=None, parameterization="standard", width=6), relu(),
                                    GAP, dense(0.9, 0.1, "standard", 1)]),
    ("standard conv flatten", "image", [conv(3, b_std=0.0, parameterization="standard", width=3),
                                        same("Erf", 1.0, 1.0, 0.0),
                                        conv(3, stride=2, W_std=0.8, b_std=0.2, parameterization="standard",
                                             width=5), relu(), FLAT, dense(1.0, None, "standard", 2)]),
    ("standard after ntk (widths)", "image", [conv(3, width=7), relu(), pool("SumPool", 2, 2, "VALID"),
                                              conv(2, "CIRCULAR", W_std=1.1, parameterization="standard", width=3),
                                              relu(), GAP, dense(1.0, 0.0, "standard", 1)]),
    ("standard fc", "vector", [dense(1.3, 0.2, "standard", 5), relu(), dense(1.1, None, "standard", 8),
                               same("Erf", 0.7, 1.3, 0.2), dense(1.0, 0.0, "standard", 1)]),
    ("b_std=None conv", "image", [conv(3, b_std=None), relu(), conv(3, "VALID", 2, b_std=None), relu(), GAP,
                                  dense(1.0, None)]),
    ("b_std=None fc", "vector", [dense(2 ** 0.5, None), relu(), dense(2 ** 0.5, None), same("Abs"), dense(1.0, None)]),
]

CASES = [c for name in ACTIVATIONS for c in _act_nets(name)] + STRIDED + POOLS + LAYERNORMS + STANDARD


def _inputs(kind):
    rng = np.random.default_rng(16)
    return rng.standard_normal((3, 7, 6, 2)) if kind == "image" else rng.standard_normal((4, 5))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_new_layers_match_stax(stax, case):
    """float64 agreement with stax: |ours - stax| <= 1e-12 max|K| + the angle allowance of the net, entrywise.

    The allowance (reference.angle_error_bound with delta = 16 eps) covers the sqrt(eps) error that stax makes
    on the diagonal, where rho = 1 and it computes the pair (x, x) like any other pair while our self recursion
    avoids the rounding of the angle (docs/design.md, numerics); elsewhere it is O(eps)."""
    name, kind, makers = case
    pairs = [m(stax) for m in makers]
    ours = nf.serial(*[p[0] for p in pairs])
    nt = stax.serial(*[p[1] for p in pairs])[2]
    X = _inputs(kind)
    got = nf.gram(X, arch=ours, dtype="float64", device="cpu")
    ref = nt(X, None, get=("nngp", "ntk"))
    bound = nf.reference.angle_error_bound(X, arch=ours, delta=16 * 2.0 ** -53)
    keep = np.ones((len(X), len(X)), bool)
    if name.startswith(PEER_DIAGONAL_DEFECT):
        np.fill_diagonal(keep, False)  # the peer's known defect: off-diagonal entries only (see above)
    off = ~np.eye(len(X), dtype=bool)
    report = []
    for k in ("nngp", "ntk"):
        a, b, allow = getattr(got, k), np.asarray(getattr(ref, k)), getattr(bound, k)
        assert np.all(np.isfinite(a))
        d, scale = np.abs(a - b), np.abs(a).max()
        # relative errors off and on the diagonal (for the table in docs/layers.md: pytest -s | grep PEER16)
        report += [f"{d[off].max() / scale:.1e}", "-" if not keep.all() else f"{d[~off].max() / scale:.1e}"]
        assert np.all(d[keep] <= 1e-12 * scale + allow[keep]), (k, (d[keep] / scale).max())
    print(f"PEER16 | {name} | " + " | ".join(report))


def test_sign_diagonal_is_exact_where_stax_rounds():
    """(Runs without the peer.) Where the table of docs/layers.md shows stax 1.8e-5 off on a diagonal (the net
    'Sign conv flatten' above), the exact value is known: E[sign(u)^2] = 1, so after [..., Sign, Dense(1, 0)] the
    NNGP diagonal is 1 and so is the NTK (0 through a Sign). Ours gives it exactly (self recursion, rho = 1); stax
    takes the arccos of a rounded rho = 1 - O(eps) at the first Sign and of 1 - O(sqrt eps) at the second, which
    moves it by O(eps^(1/4))."""
    ours = nf.serial(nf.Conv(2, 1.2, 0.1, "CIRCULAR"), nf.Sign(), nf.Flatten(), nf.Dense(1.3, 0.1), nf.Sign(),
                     nf.Dense(1.0, 0.0))
    X = _inputs("image")
    got = nf.gram(X, arch=ours, dtype="float64", device="cpu")
    assert np.all(np.diag(got.nngp) == 1.0) and np.all(np.diag(got.ntk) == 1.0)
