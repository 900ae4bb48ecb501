"""NTKRegressor / NTKClassifier: scikit-learn's estimator checks, agreement with an independent KRR,
the Gram cache, Pipeline/GridSearchCV use, and bad input."""
import warnings

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import check_estimator

import ntkfast as nf
from ntkfast import krr
from ntkfast.estimators import NTKClassifier, NTKRegressor


# threads=1: scikit-learn's checks make many tiny Grams, for which threads only add synchronization
@pytest.mark.parametrize("est", [NTKRegressor(arch="fc2", threads=1), NTKClassifier(arch="fc2", threads=1)],
                         ids=lambda e: type(e).__name__)
def test_sklearn_check_estimator(est):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(est, on_fail=None, on_skip=None)
    failed = [(r["check_name"], repr(r["exception"])[:300]) for r in results if r["status"] == "failed"]
    assert not failed
    assert sum(r["status"] == "passed" for r in results) >= 45


def test_regressor_matches_closed_form_krr():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4))
    y = np.sin(X[:, 0]) + X[:, 1] ** 2
    Xt = rng.normal(size=(7, 4))
    est = NTKRegressor(arch=nf.presets.fc(2), kind="nngp", ridge=0.05, dtype="float64").fit(X, y)
    K = nf.reference.fc_closed_form(X, depth=2, kind="nngp")
    Kt = nf.reference.fc_closed_form(Xt, X, depth=2, kind="nngp")
    alpha = np.linalg.solve(K + 0.05 * np.trace(K) / 40 * np.eye(40), y)
    np.testing.assert_allclose(est.predict(Xt), Kt @ alpha, rtol=1e-9, atol=1e-12)
    assert est.ridge_ == 0.05 and est.ridge_selection_ is None
    # multi-output targets
    Y2 = np.stack([y, -2 * y], 1)
    p2 = NTKRegressor(arch="fc2", kind="nngp", ridge=0.05, dtype="float64").fit(X, Y2).predict(Xt)
    np.testing.assert_allclose(p2, np.stack([Kt @ alpha, -2 * Kt @ alpha], 1), rtol=1e-9, atol=1e-12)


def _digits(n, classes=(0, 1, 2, 3)):
    from ntkfast import data
    X, y = data.load_default()
    keep = np.isin(y, classes)
    return data.normalize(X[keep][:n]), y[keep][:n]


def test_classifier_on_images_with_ridge_grid():
    X, y = _digits(90)
    clf = NTKClassifier(arch="gap2", ridge=(1e-4, 1e-2, 1.0)).fit(X[:60], y[:60])
    K = clf.train_gram()
    sel = krr.select_ridge(K, krr.one_hot(y[:60])[0], [1e-4, 1e-2, 1.0], scoring="accuracy")
    assert clf.ridge_ == sel.ridge
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2, 3])
    Kt = nf.gram(X[60:], X[:60], arch=nf.presets.cntk(2, "gap"), kind="ntk")
    Y, _ = krr.one_hot(y[:60])
    n = 60
    expect = np.argmax(Kt.astype(np.float64) @ np.linalg.solve(
        K.astype(np.float64) + clf.ridge_ * np.trace(K.astype(np.float64)) / n * np.eye(n), Y), axis=1)
    np.testing.assert_array_equal(clf.predict(X[60:]), clf.classes_[expect])
    assert clf.score(X[60:], y[60:]) >= 0.9                 # 4 digit classes, 60 examples
    assert clf.decision_function(X[60:]).shape == (30, 4)


def test_binary_decision_function():
    X, y = _digits(40, classes=(3, 8))
    clf = NTKClassifier(arch="fc1").fit(X[:30], y[:30])
    d = clf.decision_function(X[30:])
    assert d.shape == (10,)
    np.testing.assert_array_equal(clf.predict(X[30:]), np.where(d > 0, 8, 3))


def test_training_gram_is_cached(monkeypatch):
    X, y = _digits(30)
    calls = []
    import ntkfast.kernel.tiled as gmod
    real = gmod.gram

    def counting(*a, **k):
        calls.append(a[1] is None)          # True for a training Gram
        return real(*a, **k)

    monkeypatch.setattr(gmod, "gram", counting)
    clf = NTKClassifier(arch="fc2", ridge=1e-3).fit(X, y)
    p1 = clf.predict(X[:5])
    clf.set_params(ridge=1e-1).fit(X, y)
    assert calls.count(True) == 1                # the second fit reused the training Gram
    assert clf.ridge_ == 0.1
    clf.set_params(kind="nngp").fit(X, y)
    assert calls.count(True) == 2                # another kernel: recomputed
    clf.fit(X[:20], y[:20])
    assert calls.count(True) == 3                # other data: recomputed
    assert p1.shape == (5,)


def test_pipeline_and_grid_search():
    X, y = _digits(60)
    flat = X.reshape(len(X), -1)
    pipe = make_pipeline(FunctionTransformer(lambda A: A * 2.0),
                         NTKClassifier(arch="gap2", image_shape=(8, 8, 1), ridge=1e-3))
    gs = GridSearchCV(pipe, {"ntkclassifier__kind": ["ntk", "nngp"]}, cv=2).fit(flat, y)
    assert gs.best_params_["ntkclassifier__kind"] in ("ntk", "nngp")
    assert gs.best_score_ > 0.8
    assert gs.predict(flat[:4]).shape == (4,)
    p = NTKClassifier(arch="gap2").get_params()
    assert p["arch"] == "gap2" and p["kind"] == "ntk" and p["ridge"] == krr.DEFAULT_RIDGES


def test_estimator_errors():
    X, y = _digits(20)
    with pytest.raises(TypeError, match="arch must be an ntkfast Arch .* or a preset name .*; got int"):
        NTKClassifier(arch=5).fit(X, y)
    with pytest.raises(ValueError, match="unknown architecture name 'resnet'"):
        NTKClassifier(arch="resnet").fit(X, y)
    with pytest.raises(ValueError, match="kind must be 'ntk' or 'nngp'; got 'both'"):
        NTKClassifier(arch="fc1", kind="both").fit(X, y)
    with pytest.raises(ValueError, match=r"X must be images \(N, H, W, C\) \(or \(N, H, W\)\) for the convolutional arch 'gap2'"):
        NTKClassifier(arch="gap2").fit(X.reshape(20, -1), y)
    with pytest.raises(ValueError, match="X rows must have H\\*W\\*C = 36 features for image_shape"):
        NTKClassifier(arch="gap2", image_shape=(6, 6, 1)).fit(X.reshape(20, -1), y)
    with pytest.raises(ValueError, match="at least 2 classes; got 1 class: \\[5\\]"):
        NTKClassifier(arch="fc1").fit(X, np.full(20, 5))
    with pytest.raises(ValueError, match=r"ridge must be finite and >= 0 .*got \[-1.0\]"):
        NTKRegressor(arch="fc1", ridge=-1.0).fit(X, y.astype(float))
    yn = y.astype(float)
    yn[2] = np.nan
    with pytest.raises(ValueError, match="(?i)nan"):
        NTKRegressor(arch="fc1").fit(X, yn)
    clf = NTKClassifier(arch="gap2").fit(X, y)
    with pytest.raises(ValueError, match="X has 6 features, but NTKClassifier is expecting 8 features"):
        clf.predict(np.zeros((3, 6, 6, 1)))
