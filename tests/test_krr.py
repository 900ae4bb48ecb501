"""ntkfast.krr: the eigendecomposition solver against numpy.linalg.solve and explicit refits, ridge
selection, precision, bad input, and the ``ntkfast krr`` command end to end."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import krr
from ntkfast.cli import main

EPS64 = np.finfo(np.float64).eps


def psd(n, rank=None, seed=0, decay=1.0):
    """A random PSD matrix with eigenvalues spread over a few decades."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    w = np.logspace(0, -3 * decay, n)
    if rank is not None:
        w[rank:] = 0.0
    return (Q * w) @ Q.T, rng


def explicit(K, Y, r):
    n = len(K)
    return np.linalg.solve(K + r * np.trace(K) / n * np.eye(n), Y)


@pytest.mark.parametrize("one_d", [False, True])
def test_solve_matches_numpy(one_d):
    K, rng = psd(40)
    Y = rng.normal(size=40) if one_d else rng.normal(size=(40, 3))
    ridges = [1e-3, 1e-2, 0.3]
    alpha = krr.solve(K, Y, ridges)
    assert alpha.shape == (3,) + Y.shape and alpha.dtype == np.float64
    for a, r in zip(alpha, ridges):
        ref = explicit(K, Y, r)
        # backward-stable solves of a system with condition number c agree to ~c * eps (relative)
        cond = np.linalg.cond(K + r * np.trace(K) / 40 * np.eye(40))
        assert np.abs(a - ref).max() <= 50 * cond * EPS64 * np.abs(ref).max()
    single = krr.solve(K, Y, 1e-2)
    np.testing.assert_allclose(single, alpha[1], rtol=1e-13)


def test_ridge_is_relative_to_trace():
    K, rng = psd(20)
    Y = rng.normal(size=(20, 2))
    # scaling K by c scales the absolute ridge by c too: alpha scales by 1/c
    np.testing.assert_allclose(krr.solve(7.0 * K, Y, 0.1), krr.solve(K, Y, 0.1) / 7.0, rtol=1e-12)
    e = krr.GramEigen(K)
    assert e.scale == pytest.approx(np.trace(K) / 20, rel=1e-15)
    np.testing.assert_allclose(e.absolute([0.1, 1.0]), [0.1 * e.scale, e.scale])


def test_loo_matches_refits():
    K, rng = psd(15, seed=1)
    Y = rng.normal(size=(15, 2))
    ridges = [1e-4, 1e-2, 1.0]
    pred = krr.loo_predictions(K, Y, ridges)
    lam = np.array(ridges) * np.trace(K) / 15       # the full Gram's absolute ridge, as documented
    for i in range(15):
        m = np.arange(15) != i
        for j in range(3):
            a = np.linalg.solve(K[np.ix_(m, m)] + lam[j] * np.eye(14), Y[m])
            np.testing.assert_allclose(pred[j, i], K[i, m] @ a, rtol=1e-9, atol=1e-9 * np.abs(Y).max())


def test_kfold_with_n_folds_is_loo_and_selection():
    K, rng = psd(12, seed=2)
    Y = rng.normal(size=12)
    ridges = [1e-3, 1e-1]
    np.testing.assert_allclose(krr.kfold_predictions(K, Y, ridges, folds=12), krr.loo_predictions(K, Y, ridges),
                               rtol=1e-9, atol=1e-10)
    # every out-of-fold prediction of a 3-fold split equals a refit without that fold
    pred = krr.kfold_predictions(K, Y, 1e-2, folds=3, random_state=5)
    lam = 1e-2 * np.trace(K) / 12
    # (the folds are not exposed: try every 4-point validation set, the three folds must be among them)
    from itertools import combinations
    ok = np.zeros(12, bool)
    for val in map(list, combinations(range(12), 4)):
        tr = [i for i in range(12) if i not in val]
        p = K[np.ix_(val, tr)] @ np.linalg.solve(K[np.ix_(tr, tr)] + lam * np.eye(8), Y[tr])
        if np.abs(p - pred[val]).max() < 1e-9:
            ok[val] = True
    assert ok.all()


def test_select_ridge_matches_brute_force():
    # a noisy smooth target: too small a ridge overfits the noise, too large underfits
    rng = np.random.default_rng(3)
    x = np.sort(rng.uniform(-3, 3, 60))
    K = np.exp(-0.5 * (x[:, None] - x[None]) ** 2)
    Y = np.sin(x) + 0.3 * rng.normal(size=60)
    ridges = np.logspace(-6, 1, 8)
    sel = krr.select_ridge(K, Y, ridges, cv="loo")
    errs = []
    for r in ridges:
        lam = r * np.trace(K) / 60
        e = 0.0
        for i in range(60):
            m = np.arange(60) != i
            e += (K[i, m] @ np.linalg.solve(K[np.ix_(m, m)] + lam * np.eye(59), Y[m]) - Y[i]) ** 2
        errs.append(e / 60)
    assert sel.index == int(np.argmin(errs))
    np.testing.assert_allclose(sel.mse, errs, rtol=1e-6)
    assert 0 < sel.index < len(ridges) - 1          # an interior optimum: the test can tell grids apart
    sel5 = krr.select_ridge(K, Y, ridges, cv=5)
    assert abs(sel5.index - sel.index) <= 1


def test_accuracy_scoring_and_krr_class():
    rng = np.random.default_rng(4)
    X = np.concatenate([rng.normal(-1, 0.7, (30, 2)), rng.normal(1, 0.7, (30, 2))])
    labels = np.repeat([3, 8], 30)
    K = nf.reference.fc_closed_form(X, depth=2, kind="ntk")
    Y, classes = krr.one_hot(labels)
    assert classes.tolist() == [3, 8] and Y.sum(1).tolist() == [1.0] * 60
    m = krr.KRR(ridge=[1e-4, 1e-2, 1.0], scoring="accuracy").fit(K, Y)
    loo = krr.loo_predictions(K, Y, m.selection_.ridges)
    acc = (loo.argmax(2) == Y.argmax(1)).mean(1)
    np.testing.assert_allclose(m.selection_.scores, acc)
    assert m.selection_.scores[m.selection_.index] == acc.max()
    np.testing.assert_allclose(m.predict(K[:5]), K[:5] @ explicit(K, Y, m.ridge_), rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match=r"K_test must have shape \(M, N\) with N = 60 .*got shape \(5, 59\)"):
        m.predict(K[:5, :59])
    with pytest.raises(RuntimeError, match="not fitted"):
        krr.KRR().predict(K)


def test_float32_gram_solved_in_float64():
    K, rng = psd(50, seed=5, decay=1.5)
    K32 = K.astype(np.float32)
    Y = rng.normal(size=(50, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", krr.IllConditionedWarning)
        a = krr.solve(K32, Y, 1e-4)
    assert a.dtype == np.float64
    ref64 = explicit(K32.astype(np.float64), Y, 1e-4)          # the float64 solve of the rounded matrix
    a32 = np.linalg.solve(K32 + np.float32(1e-4 * np.trace(K32.astype(np.float64)) / 50) * np.eye(50, dtype=np.float32),
                          Y.astype(np.float32))
    err64 = np.abs(a - ref64).max() / np.abs(ref64).max()
    err32 = np.abs(a32 - ref64).max() / np.abs(ref64).max()
    assert err64 < 1e-9          # cond ~ 1e4: float64 keeps ~1e-12
    assert err32 > 1e3 * err64   # a float32 solve would not (this is what the test can tell apart)


def test_bad_input_errors():
    K, rng = psd(6)
    Y = rng.normal(size=6)
    with pytest.raises(ValueError, match=r"ridge must be finite and >= 0 \(relative to tr\(K\)/N\); got \[-0.1\]"):
        krr.solve(K, Y, -0.1)
    with pytest.raises(ValueError, match=r"ridge must be finite and >= 0.*got \[nan\]"):
        krr.solve(K, Y, [0.1, np.nan])
    with pytest.raises(TypeError, match="ridge must be a float >= 0 or a sequence"):
        krr.solve(K, Y, "0.1")
    with pytest.raises(ValueError, match=r"K must be a square \(N, N\) Gram matrix; got shape \(6, 5\)"):
        krr.solve(K[:, :5], Y, 0.1)
    Kn = K.copy()
    Kn[1, 2] = np.nan
    with pytest.raises(ValueError, match="K must be finite; got 1 NaN/Inf entries"):
        krr.solve(Kn, Y, 0.1)
    with pytest.raises(ValueError, match=r"Y must have N = 6 rows .*got shape \(5,\)"):
        krr.solve(K, Y[:5], 0.1)
    Yn = Y.copy()
    Yn[3] = np.nan
    with pytest.raises(ValueError, match=r"Y must be finite; got 1 NaN/Inf entries \(rows \[3\]\)"):
        krr.solve(K, Yn, 0.1)
    Ka = K.copy()
    Ka[0, 1] += 0.5
    with pytest.raises(ValueError, match="K must be symmetric"):
        krr.solve(Ka, Y, 0.1)
    with pytest.raises(ValueError, match="cv must be 'loo' or an int"):
        krr.select_ridge(K, Y, [0.1], cv="kfold")
    with pytest.raises(ValueError, match="folds must be between 2 and N = 6; got 7"):
        krr.kfold_predictions(K, Y, 0.1, folds=7)
    with pytest.raises(ValueError, match=r"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' \(N a GPU index\); got 'gpu'"):
        krr.solve(K, Y, 0.1, device="gpu")
    with pytest.raises(ValueError, match=r"labels contain values not in classes \[0, 1\]: \[2\]"):
        krr.one_hot([0, 2], classes=[0, 1])


def test_singular_and_ill_conditioned():
    K, rng = psd(10, rank=4)
    Y = rng.normal(size=10)
    with pytest.raises(ValueError, match=r"ridge = \[0.0\] leaves K \+ ridge \* tr\(K\)/N \* I singular"):
        krr.solve(K, Y, 0.0)
    with pytest.warns(krr.IllConditionedWarning, match="condition number of .* > 1/eps"):
        a = krr.solve(K.astype(np.float32), Y, 1e-9)
    assert np.isfinite(a).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        krr.solve(K.astype(np.float32), Y, 1e-3)              # well conditioned: no warning


def test_indefinite_gram_warns():
    K, rng = psd(8)
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    w = np.linspace(1, 2, 8)
    w[0] = -0.5
    bad = (Q * w) @ Q.T
    with pytest.warns(krr.IndefiniteGramWarning, match="not positive semi-definite: its smallest eigenvalue is -0.5"):
        e = krr.GramEigen(bad)
    assert e.w.min() == 0.0 and e.min_eigenvalue == pytest.approx(-0.5)
    with warnings.catch_warnings():                           # rounding-level negatives are not reported
        warnings.simplefilter("error")
        krr.GramEigen(psd(8, rank=3)[0])


def test_cupy_requested_without_cupy():
    pytest.importorskip("numpy")
    try:
        import cupy  # noqa: F401
        pytest.skip("cupy is installed")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match=r"device='cuda' needs cupy.*pip install 'ntkfast\[gpu\]'"):
        krr.solve(np.eye(3), np.ones(3), 0.1, device="cuda")


# ------------------------------------------------------------------------------------------ command line


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    from ntkfast import data
    X, y = data.load_default()
    keep = np.isin(y, [0, 1, 7])
    X, y = X[keep][:36, 1:7, 1:7], y[keep][:36]          # 36 images of 6x6, three classes
    p = tmp_path_factory.mktemp("d") / "tiny.npz"
    np.savez(p, X=X, y=y)
    return str(p), X, y


def test_cli_krr_end_to_end(tiny_npz, tmp_path, capsys):
    path, X, y = tiny_npz
    out = tmp_path / "pred.csv"
    rc = main(["krr", "--data", path, "--arch", "gap2", "--train", "28", "--test", "8", "--ridge", "0.01",
               "--dtype", "float64", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "gram     : train" in text and "pairs/s" in text and "solve    :" in text
    # independent computation: float64 reference Grams and numpy.linalg.solve
    from ntkfast import data
    Z = data.normalize(X)
    arch = nf.presets.cntk(2, "gap")
    K = nf.reference.gram(Z[:28], arch=arch, kind="ntk")
    Kt = nf.reference.gram(Z[28:], Z[:28], arch=arch, kind="ntk")
    Y, classes = krr.one_hot(y[:28])
    expect = classes[np.argmax(Kt @ explicit(K, Y, 0.01), axis=1)]
    rows = out.read_text().splitlines()
    assert rows[0] == "index,predicted,label"
    got = np.array([int(r.split(",")[1]) for r in rows[1:]])
    np.testing.assert_array_equal(got, expect)
    acc = np.mean(expect == y[28:])
    assert f"accuracy : {100 * acc:.2f} % on 8 test items" in text


def test_cli_krr_gram_store_streams_the_same_answer(tiny_npz, tmp_path, capsys):
    """--gram-store: Grams in resumable zarr stores, coefficients by streamed PCG; same predictions as the
    in-memory path with the same ridge."""
    path = tiny_npz[0]
    mem, streamed = tmp_path / "mem.npy", tmp_path / "streamed.npy"
    base = ["krr", "--data", path, "--arch", "gap2", "--train", "28", "--test", "8", "--ridge", "0.01",
            "--dtype", "float64"]
    assert main(base + ["--out", str(mem)]) == 0
    capsys.readouterr()
    store = tmp_path / "g.zarr"
    assert main(base + ["--out", str(streamed), "--gram-store", str(store), "--memory-budget", "50MB"]) == 0
    text = capsys.readouterr().out
    assert "streamed Nystrom-PCG" in text and store.exists() and (tmp_path / "g_test.zarr").exists()
    np.testing.assert_array_equal(np.load(streamed), np.load(mem))
    # a grid of ridges cannot be selected from a store; a budget needs a store
    assert main(base[:-4] + ["--gram-store", str(tmp_path / "h.zarr")]) == 2
    assert "pass --ridge R" in capsys.readouterr().err
    assert main(base + ["--memory-budget", "50MB"]) == 2
    assert "--memory-budget applies with --gram-store" in capsys.readouterr().err


def test_cli_krr_subprocess(tiny_npz, tmp_path):
    path = tiny_npz[0]
    out = tmp_path / "pred.npy"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(os.path.dirname(nf.__file__), "..") + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-m", "ntkfast.cli", "krr", "--data", path, "--arch", "fc2",
                        "--train", "30", "--test", "6", "--cv", "3", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "accuracy :" in r.stdout and "3-fold accuracy" in r.stdout
    pred = np.load(out)
    assert pred.shape == (6,) and set(pred.tolist()) <= {0, 1, 7}


def test_cli_krr_bad_input(tiny_npz, tmp_path, capsys):
    path, X, y = tiny_npz
    assert main(["krr", "--data", path, "--arch", "fc1", "--ridge", "-1"]) == 2
    assert "--ridge must be finite and >= 0" in capsys.readouterr().err
    assert main(["krr", "--data", path, "--arch", "fc1", "--cv", "1"]) == 2
    assert "--cv must be 'loo' or an int number of folds >= 2; got 1" in capsys.readouterr().err
    other = tmp_path / "other.npz"
    np.savez(other, X=np.zeros((4, 5, 5)), y=np.arange(4))
    assert main(["krr", "--data", path, "--test-data", str(other), "--arch", "fc1"]) == 2
    assert "train and test images must have the same shape; got train (6, 6, 1) and test (5, 5, 1)" \
        in capsys.readouterr().err
    one = tmp_path / "one.npz"
    np.savez(one, X=X[:10], y=np.full(10, 4))
    assert main(["krr", "--data", str(one), "--arch", "fc1", "--train", "6", "--test", "4"]) == 2
    assert "at least 2 classes; got 1 class: [4]" in capsys.readouterr().err
    assert main(["krr", "--data", path, "--arch", "fc1", "--train", "30", "--test", "10"]) == 2
    assert "train + test must be <= the 36 items available" in capsys.readouterr().err
    assert main(["krr", "--data", path, "--out", "pred.txt"]) == 2
    assert "--out must end with .npy or .csv; got 'pred.txt'" in capsys.readouterr().err


def test_prepare_images_fits_zca_on_train_only():
    from ntkfast import data
    rng = np.random.default_rng(6)
    A, B = rng.uniform(size=(30, 4, 4, 1)), rng.uniform(size=(5, 4, 4, 1)) * 3.0
    tr, te = krr.prepare_images(A, B, nf.presets.cntk(1), normalize="zca", pad=6)
    assert tr.shape == (30, 6, 6, 1) and te.shape == (5, 6, 6, 1)
    np.testing.assert_allclose(te[:, 1:5, 1:5], data.normalize(B, "zca", zca_fit=A), rtol=1e-12)
    assert not np.allclose(te[:, 1:5, 1:5], data.normalize(B, "zca"))     # fitted on the test set instead
    tr, te = krr.prepare_images(A, B, nf.presets.fc(1))
    assert tr.shape == (30, 16) and te.shape == (5, 16)


def test_array_module_path_with_a_numpy_shim(monkeypatch):
    """The GPU path uses only the array module's own functions (no scipy): run it with a stand-in module
    that forwards to numpy and reports one device (cupy itself is not needed)."""
    import types
    shim = types.ModuleType("cupy")
    shim.__getattr__ = lambda name: getattr(np, name)
    shim.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    monkeypatch.setitem(sys.modules, "cupy", shim)
    K, rng = psd(20, seed=7)
    Y = rng.normal(size=(20, 2))
    e = krr.GramEigen(K, device="cuda")
    assert e.xp is shim
    np.testing.assert_allclose(e.solve(Y, [1e-2, 1.0]), krr.GramEigen(K, device="cpu").solve(Y, [1e-2, 1.0]),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(e.loo(Y, 0.1), krr.loo_predictions(K, Y, 0.1, device="cpu"), rtol=1e-9, atol=1e-12)
