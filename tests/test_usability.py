"""What a new user runs into (issue 14): image layouts, input magnitudes, output paths, messages, progress."""
import os
import warnings

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import _core  # noqa: F401  (loaded here: an editable build's rebuild-on-import writes to stdout)
from ntkfast.cli import main
from ntkfast.inputs import is_homogeneous, safe_range

import ntkfast.kernel.tiled as gram_module  # noqa: E402  (the module; the package attribute ntkfast.gram is the function)
GAP = nf.presets.cntk(2, "gap")
RNG = np.random.default_rng(0)
X8 = RNG.standard_normal((4, 8, 8, 1))


# -- layouts: channels-first is caught before any work, NCHW is an explicit option -----------------------

def _no_tiles(monkeypatch):
    """Make any tile computation fail: a check that raises first did so before any work."""
    def boom(*a, **k):
        raise AssertionError("a tile was computed")
    monkeypatch.setattr(gram_module, "compute_tile", boom)


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (3, 3, 32, 32)])
def test_channels_first_is_refused_before_work_with_the_fix(shape, monkeypatch):
    X = RNG.standard_normal(shape)
    _no_tiles(monkeypatch)
    with pytest.raises(ValueError, match=r"looks channels-first .* np\.moveaxis\(X, 1, -1\), or pass layout='NCHW'"):
        nf.gram(X, arch=GAP)
    with pytest.raises(ValueError, match=r"looks channels-first"):
        nf.reference.gram(X[:1], arch=GAP)
    with pytest.raises(ValueError, match=r"Y has shape .* looks channels-first .*np\.moveaxis\(Y, 1, -1\)"):
        nf.gram(np.moveaxis(X, 1, -1), X, arch=GAP)


def test_nchw_layout_equals_moved_axes_and_nhwc_is_taken_as_given():
    X = RNG.standard_normal((3, 2, 9, 9))                     # NCHW: 2 channels of 9x9
    a = nf.gram(X, arch=GAP, layout="NCHW", dtype="float64")
    b = nf.gram(np.moveaxis(X, 1, -1), arch=GAP, dtype="float64")
    np.testing.assert_array_equal(a.ntk, b.ntk)
    c = nf.gram(X, arch=GAP, layout="NHWC", dtype="float64")  # read as 2x9 images with 9 channels: another kernel
    assert c.ntk.shape == (3, 3) and not np.allclose(c.ntk, a.ntk)
    with pytest.raises(ValueError, match=r"layout must be None, 'NHWC' or 'NCHW'; got 'CHW'"):
        nf.gram(X, arch=GAP, layout="CHW")


def test_single_channel_images_without_channel_axis():
    X = RNG.standard_normal((3, 8, 8))
    np.testing.assert_array_equal(nf.gram(X, arch=GAP).ntk, nf.gram(X[..., None], arch=GAP).ntk)
    np.testing.assert_array_equal(nf.reference.gram(X, arch=GAP).ntk, nf.reference.gram(X[..., None], arch=GAP).ntk)
    with pytest.raises(ValueError, match=r"looks like one image \(H, W, C\) without the batch axis"):
        nf.gram(X[0][..., None], arch=GAP)                   # (8, 8, 1): one image, not 8 images of 8x1


def test_estimator_and_krr_helper_take_layouts():
    from ntkfast.estimators import NTKRegressor
    from ntkfast.krr import prepare_images
    X = RNG.standard_normal((10, 1, 8, 8))
    y = RNG.standard_normal(10)
    with pytest.raises(ValueError, match="looks channels-first"):
        NTKRegressor(arch="gap1", ridge=1e-2).fit(X, y)
    a = NTKRegressor(arch="gap1", ridge=1e-2, layout="NCHW").fit(X, y).predict(X[:3])
    b = NTKRegressor(arch="gap1", ridge=1e-2).fit(np.moveaxis(X, 1, -1), y).predict(np.moveaxis(X[:3], 1, -1))
    np.testing.assert_array_equal(a, b)
    rows = NTKRegressor(arch="gap1", ridge=1e-2, layout="NCHW", image_shape=(8, 8, 1)).fit(X.reshape(10, -1), y)
    np.testing.assert_array_equal(rows.predict(X[:3].reshape(3, -1)), b)
    Xtr, Xte = prepare_images(X, X[:2], GAP, layout="NCHW")
    assert Xtr.shape == (10, 8, 8, 1) and Xte.shape == (2, 8, 8, 1)
    with pytest.raises(ValueError, match="looks channels-first"):
        prepare_images(X, X[:2], GAP)
    with pytest.raises(ValueError, match=r"pad must be an int >= the image side 8; got 6"):
        prepare_images(X, X[:2], GAP, pad=6, layout="NCHW")


# -- magnitudes: exact power-of-two rescaling for homogeneous nets, a clear refusal elsewhere ----------------

def test_homogeneous_property():
    assert is_homogeneous(GAP) and is_homogeneous(nf.presets.bietti_mairal()) and is_homogeneous(nf.presets.fc(3))
    assert not is_homogeneous(nf.serial(nf.Conv(3, b_std=0.1), nf.ReLU(), nf.Flatten(), nf.Dense()))
    assert not is_homogeneous(nf.serial(nf.Dense(2 ** 0.5), nf.ReLU(), nf.Dense(b_std=0.5)))


def test_float32_rescales_homogeneous_nets_exactly():
    X = X8 / np.abs(X8).reshape(4, -1).max(axis=1)[:, None, None, None] * 1.5   # row maxima 1.5: scaled as is
    base = nf.gram(X, arch=GAP)
    for e in (40, 50, -40, -50):                            # 1e12, 1e15, 1e-12, 1e-15: float32 failed at all four
        k = nf.gram(X * 2.0 ** e, arch=GAP)
        for got, ref in zip(k, base):                       # bitwise: K(2^e x, 2^e y) = 2^2e K(x, y) exactly
            np.testing.assert_array_equal(got, np.ldexp(ref, 2 * e))
    # rows of mixed magnitudes (the 3e9 and 1e14, a tiny one, a plain one), X against Y too
    s = np.array([3e9, 1e14, 1e-12, 1.0])[:, None, None, None]
    ref = nf.reference.gram(X8[:3], X8, arch=GAP)
    k = nf.gram(X8[:3] * s[:3], X8 * s, arch=GAP)
    scale = (s[:3, 0, 0, 0, None] * s[None, :, 0, 0, 0])
    for got, r in zip(k, ref):
        assert np.isfinite(got).all()
        # float32 against float64, entry by entry relative: the backend's float32 tolerance of the suite
        assert np.max(np.abs(got / scale - r) / np.abs(r)) <= 1e-5


def test_float32_refuses_unsafe_magnitudes_of_non_homogeneous_nets(monkeypatch):
    biased = nf.serial(nf.Conv(3, b_std=0.1), nf.ReLU(), nf.Conv(3), nf.ReLU(), nf.GlobalAvgPool(), nf.Dense())
    lo, hi = safe_range("float32")
    _no_tiles(monkeypatch)
    with pytest.raises(ValueError, match=r"X has magnitudes up to 3\.\d+e\+14, outside the range .* not homogeneous "
                                         r".*use dtype='float64'"):
        nf.gram(X8 / np.abs(X8).max() * 3.5e14, arch=biased)
    with pytest.raises(ValueError, match=r"Y has magnitudes as small as"):
        nf.gram(X8, X8 * lo / 4, arch=biased)
    with pytest.raises(ValueError, match=r"kernels \(about \|x\|\^2\) would leave float32's range.*dtype='float64'"):
        nf.gram(X8 * 1e30, arch=GAP)                       # homogeneous, but K ~ 1e60 is beyond float32
    monkeypatch.undo()
    ok = nf.gram(X8 / np.abs(X8).max() * hi, arch=biased)  # the edge of the range is computed
    assert np.isfinite(ok.ntk).all()
    k64 = nf.gram(X8 * 1e14, arch=biased, dtype="float64")
    assert np.isfinite(k64.ntk).all()


# -- outputs: .npz from the API, paths checked before any work ------------------------------------------------

def test_api_writes_npz_like_the_cli(tmp_path):
    k = nf.gram(X8, arch=GAP, out=str(tmp_path / "k.npz"))
    z = np.load(tmp_path / "k.npz")
    np.testing.assert_array_equal(z["ntk"], k.ntk)
    np.testing.assert_array_equal(z["nngp"], nf.gram(X8, arch=GAP).nngp)
    K = nf.gram(X8, arch=GAP, kind="nngp", out=str(tmp_path / "n.npz"))
    assert list(np.load(tmp_path / "n.npz").files) == ["nngp"] and K.shape == (4, 4)


def test_output_paths_are_checked_before_work(tmp_path, monkeypatch, capsys):
    _no_tiles(monkeypatch)
    missing = str(tmp_path / "nope" / "k.zarr")
    with pytest.raises(FileNotFoundError, match=r"out='.*nope/k\.zarr': the folder .* does not exist"):
        nf.gram(X8, arch=GAP, out=missing)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        nf.gram(X8, arch=GAP, out=str(tmp_path / "nope" / "k.npz"))
    for argv in (["gram", "-n", "5", "--out", missing],
                 ["krr", "--out", str(tmp_path / "nope" / "p.csv")],
                 ["stability", "--out", str(tmp_path / "nope" / "s.png")],
                 ["spectrum", "--out", str(tmp_path / "nope" / "s.png")],
                 ["smoothness", "--out", str(tmp_path / "nope" / "s.png")],
                 ["taylor", "--out", str(tmp_path / "nope" / "t.png")]):
        assert main(argv) == 2, argv
        assert "does not exist; create it first" in capsys.readouterr().err, argv
    assert main(["spectrum", "--out", str(tmp_path / "s.pdf")]) == 2
    assert "--out must end with .png; got" in capsys.readouterr().err


# -- the command line ----------------------------------------------------------------------------------------

def test_version_and_lazy_submodules(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"ntkfast {nf.__version__}"
    assert nf.krr.KRR is not None and nf.estimators.NTKClassifier is not None and nf.data.load is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nf.nope


def test_gram_help_says_what_happens_without_out(capsys):
    with pytest.raises(SystemExit):
        main(["gram", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Without --out the Grams are computed in memory and only timed: nothing is kept" in text
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    assert "docs/design.md" in text and "DESIGN" not in text and "--progress" not in text


def test_bad_data_files_get_clear_errors(tmp_path, capsys):
    np.savez(tmp_path / "ok.npz", X=X8, y=np.arange(4))
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[:len(raw) // 2])
    (tmp_path / "text.npz").write_text("not numpy\n")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for name, want in (("trunc.npz", "damaged file (truncated or corrupt: BadZipFile"),
                       ("text.npz", "not a .npz file (expected a zip archive of .npy arrays"),
                       ("obj.npy", "holds Python objects (a pickled object array)")):
        assert main(["gram", "--data", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert want in err and "Traceback" not in err and "allow_pickle" not in err, err


def test_cli_layout_option(tmp_path, capsys):
    X = RNG.random((12, 1, 9, 9))
    np.savez(tmp_path / "nchw.npz", X=X, y=np.arange(12) % 2)
    assert main(["gram", "--arch", "flat1", "--data", str(tmp_path / "nchw.npz"), "--normalize", "none"]) == 2
    err = capsys.readouterr().err
    assert "--data has shape (12, 1, 9, 9), which looks channels-first" in err and "Pass --layout NCHW" in err
    assert "layout='" not in err and "np.moveaxis" not in err
    out = str(tmp_path / "k.npz")
    assert main(["gram", "--arch", "flat1", "--data", str(tmp_path / "nchw.npz"), "--normalize", "none",
                 "--layout", "NCHW", "--dtype", "float64", "--out", out]) == 0
    assert "inputs=(12, 9, 9, 1)" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(out)["ntk"],
                                  nf.gram(np.moveaxis(X, 1, -1), arch=nf.presets.cntk(1, "flatten"), dtype="float64").ntk)


def test_krr_regresses_real_targets_and_refuses_them_as_classes(tmp_path, capsys):
    from ntkfast import data
    X, _ = data.load_default()
    X = X[:40, 1:7, 1:7]
    t = X.reshape(40, -1).mean(axis=1) * 10 + 0.25            # a smooth real target of the image
    np.savez(tmp_path / "r.npz", X=X, y=t)
    args = ["krr", "--data", str(tmp_path / "r.npz"), "--arch", "gap1", "--train", "32", "--test", "8"]
    assert main(args + ["--out", str(tmp_path / "p.npy")]) == 0
    out = capsys.readouterr().out
    assert "real-valued targets (1 output): regression" in out and "leave-one-out mean squared error" in out
    assert "RMSE" in out and "accuracy" not in out and "classes" not in out
    pred = np.load(tmp_path / "p.npy")
    assert pred.shape == (8,) and pred.dtype == np.float64
    assert np.sqrt(np.mean((pred - t[-8:]) ** 2)) < np.std(t[-8:])      # better than predicting the mean
    assert main(args + ["--task", "classify"]) == 2
    assert "--task classify needs integer class labels (N,); --data has non-integer targets" in \
        capsys.readouterr().err


def test_krr_option_errors_name_the_option_before_loading(tmp_path, capsys):
    missing = str(tmp_path / "absent.npz")                    # loading it would fail: the option errors come first
    for argv, want in (
            (["--gram-store", str(tmp_path / "g.zarr")], "--gram-store solves for one ridge"),
            (["--gram-store", str(tmp_path / "g.txt"), "--ridge", "1e-3"], "--gram-store must end with .zarr"),
            (["--gram-store", str(tmp_path / "g.zarr"), "--ridge", "1e-3", "--memory-budget", "5XB"],
             "--memory-budget must be"),
            (["--memory-budget", "1GB"], "--memory-budget applies with --gram-store"),
            (["--pad", "0"], "--pad must be >= 1; got 0")):
        assert main(["krr", "--data", missing] + argv) == 2
        err = capsys.readouterr().err
        assert want in err and "not found" not in err, (argv, err)
    assert main(["krr", "--pad", "6"]) == 2                   # the embedded 8x8 digits
    assert "--pad must be >= the image side 8 (images are 8x8); got 6" in capsys.readouterr().err


def test_resume_refusal_speaks_cli(tmp_path, capsys):
    out = str(tmp_path / "g.zarr")
    assert main(["gram", "--arch", "gap1", "-n", "20", "--out", out, "--tile", "8"]) == 0
    capsys.readouterr()
    assert main(["gram", "--arch", "gap2", "-n", "20", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "architecture: stored gap1, now gap2" in err and f"rm -r {out}" in err
    assert "serial(" not in err and "tile=None" not in err and "out=" not in err
    assert main(["gram", "--arch", "gap1", "-n", "20", "--out", out, "--tile", "4"]) == 2
    err = capsys.readouterr().err
    assert "--tile 4 differs from the tile 8 that --out" in err and "leave out --tile or pass --tile 8" in err
    assert "tile=None" not in err


def test_resume_refusal_names_custom_nets_briefly(tmp_path):
    a = nf.serial(nf.Conv(3), nf.ReLU(), nf.GaussianPool(2), nf.Flatten(), nf.Dense())
    b = nf.serial(nf.Conv(5), nf.ReLU(), nf.GaussianPool(2), nf.Flatten(), nf.Dense())
    path = str(tmp_path / "c.zarr")
    X = RNG.standard_normal((3, 9, 9, 1))
    nf.gram(X, arch=a, out=path)
    with pytest.raises(ValueError, match=r"architecture \(layer 0\): stored Conv\(k=\(3, 3\).*\), now Conv\(k=\(5, 5\)"):
        nf.gram(X, arch=b, out=path)
    with pytest.raises(ValueError, match=r"architecture: stored a custom net of 5 layers \(Conv, ReLU, GaussianPool, "
                                         r"Flatten, Dense\), now gap2\)"):
        nf.gram(X, arch=GAP, out=path)


def test_interrupt_keeps_tiles_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "g.zarr")
    real, calls = gram_module.compute_tile, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(gram_module, "compute_tile", interrupted)
    assert main(["gram", "--arch", "gap1", "-n", "20", "--out", out, "--tile", "8"]) == 130
    err = capsys.readouterr().err
    assert "interrupted; the 2 of 6 tiles finished are kept in" in err and "run the same command again" in err
    calls.clear()
    with pytest.raises(KeyboardInterrupt) as e:                # the API says it in a note of the exception
        nf.gram(X8, arch=GAP, out=str(tmp_path / "h.zarr"), tile=1)
    if hasattr(e.value, "__notes__"):
        assert "the same call (or command) resumes" in e.value.__notes__[0]
    monkeypatch.setattr(gram_module, "compute_tile", real)
    assert main(["gram", "--arch", "gap1", "-n", "20", "--out", out]) == 0
    assert "4 of 6 tiles of 8 images (2 already done)" in capsys.readouterr().out


# -- progress ------------------------------------------------------------------------------------------------

def test_progress_bars_are_labelled_and_count_pairs(tmp_path, capsys):
    from ntkfast.progress import PairProgress
    nf.gram(X8, arch=GAP, progress="train Gram", tile=2)
    err = capsys.readouterr().err
    assert "train Gram: 100%" in err and "tiles 3/3" in err
    path = str(tmp_path / "p.zarr")
    nf.gram(X8, arch=GAP, out=path, progress=True)
    capsys.readouterr()
    nf.gram(X8, arch=GAP, out=path, progress=True)
    assert "gram: already complete (1 tiles in" in capsys.readouterr().err
    with pytest.raises(TypeError, match="progress must be True, False or a label"):
        nf.gram(X8, arch=GAP, progress=1)
    # a per-pair feed inside tiles (a backend counter) and whole tiles add up to the same total
    with open(os.devnull, "w") as null:
        bar = PairProgress(total=100, done=10, tiles_total=3, tiles_done=1, desc="t", file=null)
        bar.tile_progress(15)
        bar.tile_progress(40)
        bar.tile_done(50)
        bar.tile_done(40)
        assert bar.bar.n == 100 and bar.tiles_done == 3
        bar.close()


def test_gram_command_estimates_long_jobs(capsys):
    assert main(["gram", "--arch", "flat1", "-n", "300"]) == 0      # 45,150 pairs: over the threshold
    out = capsys.readouterr().out
    assert "45,150 pairs to compute (upper triangle of 300 x 300)" in out
    assert "estimate : about" in out and "pairs/s (measured on" in out
    assert "in memory, not kept (pass --out to keep it)" in out


# -- zarr stores: markers zarr does not see; older stores still resume -----------------------------------------

def test_zarr_store_has_no_foreign_objects_and_old_stores_resume(tmp_path, monkeypatch):
    zarr = pytest.importorskip("zarr")
    path = str(tmp_path / "z.zarr")
    ref = nf.gram(X8, arch=GAP, out=path, tile=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = zarr.open_group(path, mode="r")
        assert sorted(name for name, _ in g.arrays()) == ["nngp", "ntk"]
        assert sorted(name for name, _ in g.members(max_depth=None)) == ["nngp", "ntk"]
    # an older store: markers at the group's top level; resuming computes nothing and moves them
    new = os.path.join(path, "nngp", "ntkfast_done")
    old = os.path.join(path, "ntkfast_done")
    os.rename(new, old)
    _no_tiles(monkeypatch)
    k = nf.gram(X8, arch=GAP, out=path)
    np.testing.assert_array_equal(k.ntk[...], ref.ntk[...])
    assert not os.path.exists(old) and len(os.listdir(new)) == 3
