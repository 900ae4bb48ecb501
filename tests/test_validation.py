"""Bad input gets a clear error before any heavy work: which argument, what was expected, what was given."""
import numpy as np
import pytest

import ntkfast as nf
from ntkfast import AvgPool, Conv, Dense, Flatten, GaussianPool, GlobalAvgPool, ReLU, serial

GAP = nf.presets.cntk(2, "gap")
X = np.random.default_rng(0).standard_normal((3, 8, 8, 1))


@pytest.mark.parametrize("make, exc, match", [
    (lambda: Conv(0), ValueError, r"Conv: k must be >= 1; got 0"),
    (lambda: Conv(2.5), TypeError, r"Conv: k must be an int or a pair of ints; got 2.5"),
    (lambda: Conv(3, W_std=-1.0), ValueError, r"Conv: W_std must be a finite number > 0; got -1.0"),
    (lambda: Conv(3, b_std=float("nan")), ValueError, r"Conv: b_std must be a finite number >= 0; got nan"),
    (lambda: Conv(3, padding="REFLECT"), ValueError, r"Conv: padding must be one of .*; got 'REFLECT'"),
    (lambda: AvgPool(2, stride=0), ValueError, r"AvgPool: stride must be >= 1; got 0"),
    (lambda: AvgPool(2, padding="CIRCULAR"), ValueError, r"AvgPool: padding must be 'SAME' or 'VALID'"),
    (lambda: GaussianPool(0), ValueError, r"GaussianPool: stride must be an int >= 1; got 0"),
    (lambda: GaussianPool(2, sigma=0), ValueError, r"GaussianPool: sigma must be a finite number > 0; got 0"),
    (lambda: Dense(W_std="a"), TypeError, r"Dense: W_std must be a real number; got 'a'"),
    (lambda: serial(), ValueError, r"serial: expected at least one layer; got none"),
    (lambda: serial(Conv(3), "relu"), TypeError, r"serial: layer 1 must be an ntkfast layer .*; got 'relu'"),
    (lambda: serial(Conv(3), ReLU(), Dense()), ValueError, r"needs a readout .*; got none"),
    (lambda: serial(Conv(3), GlobalAvgPool(), Flatten()), ValueError, r"exactly one readout; got 2"),
    (lambda: serial(Conv(3), GlobalAvgPool(), Conv(3)), ValueError, r"layer 2 \(Conv\) is spatial but comes after"),
    (lambda: serial(Conv(3), Dense(), GlobalAvgPool()), ValueError, r"layer 1 \(Dense\) comes before the readout"),
    (lambda: nf.presets.cntk(0), ValueError, r"cntk: depth must be >= 1; got 0"),
    (lambda: nf.presets.cntk(3, "max"), ValueError, r"readout must be 'gap' or 'flatten'; got 'max'"),
    (lambda: nf.presets.myrtle(6), ValueError, r"myrtle: depth must be one of \[5, 7, 10\]; got 6"),
    (lambda: nf.presets.by_name("resnet"), ValueError, r"unknown architecture name 'resnet'"),
])
def test_layer_and_arch_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("arch, shape, match", [
    (serial(*[Conv(3, padding="VALID"), ReLU()] * 4, Flatten(), Dense()), (7, 7, 1),
     r"layer 6 \(Conv\): a 3x3 VALID convolution does not fit the 1x1 state there; the net is too deep"),
    (nf.presets.myrtle(5), (28, 28, 1), r"layer \d+ \(AvgPool\): pooling the 1x1 state .* pooled too much"),
    (nf.presets.bietti_mairal(), (8, 8, 1), r"\(GaussianPool\): pooling the 3x3 state there leaves 0x0"),
])
def test_arch_does_not_fit_image(arch, shape, match):
    Xs = np.zeros((2,) + shape)
    for fn in (lambda: nf.gram(Xs, arch=arch, device="cpu"), lambda: nf.reference.gram(Xs, arch=arch)):
        with pytest.raises(ValueError, match=match):
            fn()


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(X=X[0]), ValueError, r"X has shape \(8, 8, 1\), which looks like one image \(H, W, C\) without the "
                               r"batch axis; .* Pass X\[None\]"),
    (dict(X=X[0, 0]), ValueError, r"X must have shape \(N, H, W, C\) or \(N, H, W\) for one channel .*; got shape "
                                  r"\(8, 1\)"),
    (dict(X=X[:0]), ValueError, r"X must be non-empty with shape \(N, H, W, C\); got shape \(0, 8, 8, 1\)"),
    (dict(X=X, Y=X[:, :7]), ValueError, r"X and Y must agree in every axis but the first; got X \(3, 8, 8, 1\) and Y \(3, 7, 8, 1\)"),
    (dict(X=np.where(X > 1, np.nan, X)), ValueError, r"X must be finite; got \d+ NaN/Inf entries"),
    (dict(X=X, Y=np.full_like(X, np.inf)), ValueError, r"Y must be finite; got 192 NaN/Inf entries"),
    (dict(X=X.astype(complex)), TypeError, r"X must have a real numeric dtype .*; got dtype complex128"),
    (dict(X=X > 0), TypeError, r"X must have a real numeric dtype .*; got dtype bool"),
    (dict(X=np.array([["a"]])), TypeError, r"X must have a real numeric dtype"),
    (dict(X=X * 1e300), ValueError, r"X overflows float32"),
    (dict(X=X, kind="cntk"), ValueError, r"kind must be None \(both\), 'nngp' or 'ntk'; got 'cntk'"),
    (dict(X=X, dtype="float16"), TypeError, r"dtype must be 'float32' or 'float64'; got 'float16'"),
    (dict(X=X, device="tpu"), ValueError, r"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' \(N a GPU index\); got 'tpu'"),
    (dict(X=X, tile=0), ValueError, r"tile must be a positive int .*; got 0"),
    (dict(X=X, arch="gap5"), TypeError, r"arch must be an ntkfast architecture .*; got str"),
    (dict(X=X, out=np.zeros((2, 2))), TypeError, r"out must be ntkfast.Kernels"),
    (dict(X=X, output="torch"), ValueError, r"output must be 'numpy' or 'cupy'; got 'torch'"),
    (dict(X=X, kind="ntk", out=np.zeros((2, 2))), ValueError, r"out \(ntk\) must have shape \(3, 3\); got \(2, 2\)"),
])
def test_gram_input_errors(kwargs, exc, match):
    kwargs = dict(kwargs)
    kwargs.setdefault("arch", GAP)
    Xa = kwargs.pop("X")
    Ya = kwargs.pop("Y", None)
    with pytest.raises(exc, match=match):
        nf.gram(Xa, Ya, **kwargs)


def test_fc_rank_error():
    with pytest.raises(ValueError, match=r"X must have shape \(N, D\) for this fully-connected arch; got shape \(3, 8, 8, 1\)"):
        nf.gram(X, arch=nf.presets.fc(2))


def test_cuda_request_without_gpu_says_why(monkeypatch):
    monkeypatch.setenv("NTKFAST_DISABLE_CUDA", "1")
    with pytest.raises(RuntimeError, match=r"device='cuda' requested but no GPU is usable: disabled by"):
        nf.gram(X, arch=GAP, device="cuda")
    k = nf.gram(X, arch=GAP, device="auto")  # auto falls back to the CPU
    assert k.ntk.shape == (3, 3)


# Regression tests of issue 11: the smallest nets that showed each defect.

def _agree(arch, X, Y=None, tol=1e-12):
    ref = nf.reference.gram(X, Y, arch=arch)
    got = nf.gram(X, Y, arch=arch, dtype="float64", device="cpu")
    for g, r in zip(got, ref):
        assert np.max(np.abs(g - r)) <= tol * np.max(np.abs(r))


def test_same_then_circular_conv():
    """SAME and CIRCULAR convolutions in one net (was 41 % off: one circular flag for the whole net)."""
    X = np.random.default_rng(0).standard_normal((3, 3, 3, 1))
    _agree(serial(Conv(2, padding="SAME"), Conv(1, padding="CIRCULAR"), Flatten()), X)
    _agree(serial(Conv(2, padding="CIRCULAR"), ReLU(), Conv(3, padding="SAME"), ReLU(), Flatten(), Dense()), X)


def test_circular_then_valid_conv():
    """CIRCULAR followed by VALID (was an internal ProgramError: 'circular programs keep the size')."""
    X = np.random.default_rng(1).standard_normal((3, 6, 6, 1))
    _agree(serial(Conv(3, padding="CIRCULAR"), Conv(3, padding="VALID"), GlobalAvgPool()), X)
    _agree(serial(Conv(3, padding="VALID"), ReLU(), Conv(3, padding="CIRCULAR"), ReLU(), GlobalAvgPool()), X)


@pytest.mark.parametrize("pool", [AvgPool(2, padding="SAME"), AvgPool(2, stride=3), AvgPool((3, 2), stride=(2, 1)),
                                  GaussianPool(2)])
def test_circular_with_any_pooling(pool):
    """CIRCULAR convolutions with SAME pools, strides that do not tile, Gaussian pools (were NotImplementedError)."""
    X = np.random.default_rng(2).standard_normal((3, 7, 6, 1))
    _agree(serial(Conv(3, padding="CIRCULAR"), ReLU(), pool, Conv(2, padding="CIRCULAR"), ReLU(), Flatten(), Dense()), X)


def test_circular_window_wider_than_the_state():
    """A CIRCULAR window wider than the (pooled) state wraps more than once."""
    X = np.random.default_rng(3).standard_normal((3, 6, 5, 2))
    _agree(serial(AvgPool(3), Conv((4, 5), padding="CIRCULAR"), ReLU(), GlobalAvgPool(), Dense()), X)


@pytest.mark.parametrize("layers, match", [
    ((ReLU(), Conv(3), GlobalAvgPool()), r"layer 0 \(ReLU\) needs a Gaussian input.* gets the network input"),
    ((Conv(3), ReLU(), ReLU(), GlobalAvgPool()),
     r"layer 2 \(ReLU\) needs a Gaussian input.* gets the output of layer 1 \(ReLU\); put a Conv or Dense before it"),
    ((Conv(3), ReLU(), GlobalAvgPool(), ReLU(), Dense()), r"layer 3 \(ReLU\) needs a Gaussian input"),
    ((Conv(3), ReLU(), AvgPool(2), ReLU(), Flatten()), r"layer 3 \(ReLU\) needs a Gaussian input"),
    ((ReLU(), Dense()), r"layer 0 \(ReLU\) needs a Gaussian input"),
    ((Dense(), ReLU(), ReLU()), r"layer 2 \(ReLU\) needs a Gaussian input"),
])
def test_relu_needs_a_gaussian_input(layers, match):
    """A ReLU on the raw input, after another ReLU, or on a readout of ReLU features has no arc-cosine form:
    refused when the net is built (it used to get the Gaussian formula)."""
    with pytest.raises(ValueError, match=match):
        serial(*layers)


def test_relu_after_linear_layers_of_a_gaussian_is_fine():
    for layers in [(Conv(3), AvgPool(2), ReLU(), GlobalAvgPool()), (Conv(3), GlobalAvgPool(), ReLU(), Dense()),
                   (Conv(3), ReLU(), GlobalAvgPool(), Dense(), ReLU(), Dense())]:
        serial(*layers)


def test_program_text_round_trips_and_refuses_garbage():
    from ntkfast import _core
    arch = serial(Conv((2, 3), W_std=1.1, b_std=0.2, padding="CIRCULAR"), ReLU(), AvgPool(2, stride=1, padding="SAME"),
                  GaussianPool(2, sigma=0.3), Conv(1), GlobalAvgPool(), Dense(0.7, 0.1))
    text = arch.program_text((9, 9, 2))
    prog = _core.compile_program(text)
    assert _core.compile_program(prog.canonical_text).canonical_text == prog.canonical_text
    for bad, match in [(text.replace("conv 2 3", "conv 2 x"), "not an integer"),
                       (text.replace("relu", "tanh"), "unknown layer kind 'tanh'"),
                       (text.replace("CIRCULAR", "REFLECT"), "unknown padding REFLECT"),
                       (text.replace("dense 0.7 0.1 ntk 0", "dense 0.7"), "dense takes 4 arguments"),
                       (text.replace("ntk 0", "xyz 0"), "parameterization must be ntk or standard"),
                       (text.replace("ntkfast-program 2", "ntkfast-program 1"), "expected 'ntkfast-program 2'")]:
        with pytest.raises(ValueError, match=match):
            _core.compile_program(bad)


# -- the one validation module: TypeError for types, ValueError for values, the argument named ---------

def test_scalar_checks():
    from ntkfast.validation import check_choice, check_int, check_real, check_seed
    assert check_int(np.int64(3), "n", 1) == 3 and check_real(2, "x", 0.0) == 2.0
    for bad, exc, msg in [(lambda: check_int(2.0, "n", 1), TypeError, "n must be an int; got 2.0"),
                          (lambda: check_int(True, "n", 1), TypeError, "n must be an int; got True"),
                          (lambda: check_int(0, "n", 1), ValueError, "n must be >= 1; got 0"),
                          (lambda: check_int(9, "n", 1, 5), ValueError, r"n must be in 1..5; got 9"),
                          (lambda: check_real("1", "lr", 0.0), TypeError, "lr must be a real number; got '1'"),
                          (lambda: check_real(0.0, "lr", 0.0, strict=True), ValueError,
                           r"lr must be a finite number > 0.0; got 0.0"),
                          (lambda: check_real(float("nan"), "x"), ValueError, "x must be a finite number; got nan"),
                          (lambda: check_choice("c", "kind", ("a", "b")), ValueError, "kind must be 'a' or 'b'; got 'c'"),
                          (lambda: check_choice(3, "kind", ("a", "b")), TypeError, "kind must be 'a' or 'b'; got 3"),
                          (lambda: check_choice("e", "m", "abcd"), ValueError,
                           "m must be one of 'a', 'b', 'c', 'd'; got 'e'"),
                          (lambda: check_seed(-1), ValueError, "seed must be a non-negative int"),
                          (lambda: check_seed(1.5), TypeError, "seed must be a non-negative int")]:
        with pytest.raises(exc, match=msg):
            bad()


@pytest.mark.parametrize("call", [
    lambda: nf.gram(X, arch=GAP, tile=2.5),
    lambda: nf.gram(X, arch=GAP, threads="2"),
    lambda: nf.presets.cntk(2.0),
    lambda: nf.krr_stream.solve(np.eye(3), np.ones(3), "0.1"),
    lambda: nf.krr.kfold_predictions(np.eye(4), np.ones(4), 0.1, folds=2.0),
    lambda: nf.taylor.sphere(3.0, 2),
    lambda: nf.taylor.TaylorModel(width=4.0),
    lambda: nf.stability.random_field((8, 8), 0, smoothness="4"),
    lambda: nf.spectrum.mercer_eigenvalues("ntk", p=3.0, kmax=10),
    lambda: nf.smoothness.perturb(np.ones(3), [1e-3, 1e-2], n_dirs=1.0),
    lambda: nf.data.pad(np.zeros((1, 4, 4, 1)), 6.0),
])
def test_a_wrong_type_is_a_type_error_everywhere(call):
    with pytest.raises(TypeError, match=r"must be .*; got "):
        call()
