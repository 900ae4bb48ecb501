"""ntkfast.data: IDX round trips (written here byte by byte), npz/npy, the embedded default, normalization,
split and pad; real MNIST when ../shared/data/mnist exists."""
import gzip
import os
import struct

import numpy as np
import pytest

from ntkfast import data

MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")

# IDX type codes (LeCun's format description), written independently of ntkfast.data's table
CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
         np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def write_idx(path, arr, big_endian_dtype, gz=False):
    arr = np.asarray(arr).astype(big_endian_dtype)
    head = bytes([0, 0, CODES[np.dtype(big_endian_dtype)], arr.ndim]) + struct.pack(">" + "I" * arr.ndim,
                                                                                   *arr.shape)
    payload = head + arr.tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(payload)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dt", [np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_idx_round_trip(tmp_path, gz, dt):
    rng = np.random.default_rng(0)
    a = rng.integers(-100, 100, size=(3, 4, 5)) if np.dtype(dt).kind == "i" else rng.integers(0, 255, (3, 4, 5))
    if np.dtype(dt).kind == "f":
        a = rng.normal(size=(3, 4, 5))
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(p, a, dt, gz)
    b = data.load_idx(p)
    assert b.shape == (3, 4, 5)
    assert b.dtype == np.dtype(dt).newbyteorder("=")
    np.testing.assert_array_equal(b, np.asarray(a).astype(dt))


def test_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        data.load_idx(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="bad magic number"):
        data.load_idx(bad)
    short = tmp_path / "short"
    write_idx(short, np.zeros((4, 3), np.uint8), np.uint8)
    short.write_bytes(short.read_bytes()[:-2])
    with pytest.raises(ValueError, match="truncated IDX file .expected 12 data bytes, got 10"):
        data.load_idx(short)


def make_mnist_dir(d, n=6, gz=True, h=5):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(n, h, h)).astype(np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    ext = ".gz" if gz else ""
    write_idx(os.path.join(d, "t10k-images-idx3-ubyte" + ext), imgs, np.uint8, gz)
    write_idx(os.path.join(d, "t10k-labels-idx1-ubyte" + ext), labels, np.uint8, gz)
    return imgs, labels


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_dir(tmp_path, gz):
    imgs, labels = make_mnist_dir(tmp_path, gz=gz)
    X, y = data.load_mnist(tmp_path)
    assert X.shape == (6, 5, 5, 1) and X.dtype == np.float64 and y.dtype == np.int64
    np.testing.assert_array_equal(X[..., 0] * 255.0, imgs.astype(np.float64))
    np.testing.assert_array_equal(y, labels)
    X2, y2 = data.load(str(tmp_path))                           # by directory
    np.testing.assert_array_equal(X2, X)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load_mnist(tmp_path, split="train")


def test_load_mnist_mismatch(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 2, 2)), np.uint8)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4), np.uint8)
    with pytest.raises(ValueError, match=r"images \(3, 2, 2\) and labels \(4,\)"):
        data.load_mnist(tmp_path)


def test_npz_npy(tmp_path):
    X = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    np.savez(tmp_path / "d.npz", images=X, labels=np.array([1, 0]))
    A, y = data.load(tmp_path / "d.npz")
    assert A.shape == (2, 3, 3, 1) and A.dtype == np.float64
    np.testing.assert_array_equal(A[..., 0], X)
    np.testing.assert_array_equal(y, [1, 0])
    np.save(tmp_path / "d.npy", X[..., None])
    A, y = data.load(str(tmp_path / "d.npy"))
    assert y is None and A.shape == (2, 3, 3, 1)
    np.savez(tmp_path / "bad.npz", foo=X)
    with pytest.raises(ValueError, match="expected an array named X"):
        data.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad2.npz", X=X, y=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        data.load(tmp_path / "bad2.npz")
    with pytest.raises(FileNotFoundError, match="data source not found"):
        data.load(tmp_path / "nothing.npz")


def test_default_set():
    X, y = data.load()
    from sklearn.datasets import load_digits
    d = load_digits()
    assert X.shape == (1797, 8, 8, 1) and y.shape == (1797,)
    np.testing.assert_array_equal(X[..., 0] * 16.0, d.images)
    np.testing.assert_array_equal(y, d.target)
    assert X.min() == 0.0 and X.max() == 1.0


def test_center_scale():
    rng = np.random.default_rng(2)
    X = rng.uniform(size=(4, 3, 3, 2))
    X[1] = 0.7                                              # constant image -> 0
    Z = data.normalize(X)
    flat = Z.reshape(4, -1)
    np.testing.assert_allclose(flat[[0, 2, 3]].mean(axis=1), 0.0, atol=1e-15)
    np.testing.assert_allclose((flat[[0, 2, 3]] ** 2).mean(axis=1), 1.0, rtol=1e-14)
    assert np.all(Z[1] == 0.0)
    # per image: the same image in another batch normalizes the same way
    np.testing.assert_allclose(data.normalize(X[2:3]), Z[2:3], rtol=0, atol=0)
    v = (X[0] - X[0].mean()) / np.linalg.norm(X[0] - X[0].mean()) * np.sqrt(18)
    np.testing.assert_allclose(Z[0], v, rtol=1e-14)
    np.testing.assert_array_equal(data.normalize(X, "none"), X)


def test_zca_whitens():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 2, 2, 1)) * np.array([1.0, 3.0, 0.5, 2.0]).reshape(1, 2, 2, 1)
    Z = data.normalize(X, "zca", zca_reg=0.0)
    flat = Z.reshape(len(Z), -1)
    cov = np.cov(flat, rowvar=False, bias=True)
    # per-image centering leaves a rank-3 covariance in 4 pixels: whitened, its nonzero eigenvalues are 1
    w = np.linalg.eigvalsh(cov)
    np.testing.assert_allclose(np.sort(w)[1:], 1.0, rtol=1e-8)
    assert abs(np.sort(w)[0]) < 1e-8
    # ZCA (not PCA): the whitening matrix is symmetric, so Z stays close to the centered-scaled input
    cs = data.normalize(X).reshape(len(X), -1)
    assert np.mean(np.sum(flat * (cs - cs.mean(0)), 1)) > 0
    # fitted on a training set, applied to other images with the same transform
    Zt = data.normalize(X[:5], "zca", zca_reg=0.0, zca_fit=X)
    np.testing.assert_allclose(Zt, Z[:5], atol=1e-10)


def test_normalize_errors():
    X = np.ones((2, 3, 3, 1))
    with pytest.raises(ValueError, match="method must be 'none', 'center_scale' or 'zca'; got 'pca'"):
        data.normalize(X, "pca")
    with pytest.raises(ValueError, match="X must be finite; got 1 NaN"):
        bad = X.copy()
        bad[0, 0, 0, 0] = np.nan
        data.normalize(bad)
    with pytest.raises(TypeError, match="X must be a real numeric array"):
        data.normalize(np.array([["a"]]))
    with pytest.raises(ValueError, match="zca_fit must have X's per-image shape"):
        data.normalize(X, "zca", zca_fit=np.ones((3, 2, 2, 1)))
    with pytest.raises(ValueError, match="zca_reg must be a finite float >= 0; got -1"):
        data.normalize(X, "zca", zca_reg=-1)


def test_split_and_pad():
    X = np.arange(10)[:, None] * 1.0
    y = np.arange(10)
    Xtr, ytr, Xte, yte = data.split(X, y, 6, 3)
    np.testing.assert_array_equal(ytr, np.arange(6))
    np.testing.assert_array_equal(yte, [7, 8, 9])
    _, ytr, _, yte = data.split(X, y)
    assert len(ytr) == 8 and len(yte) == 2 and yte[0] == 8
    with pytest.raises(ValueError, match="train \\+ test must be <= the 10 items available.*train = 8, test = 3"):
        data.split(X, y, 8, 3)
    with pytest.raises(ValueError, match="test must be a positive int"):
        data.split(X, y, 5, 0)
    P = data.pad(np.ones((2, 28, 28, 1)), 32)
    assert P.shape == (2, 32, 32, 1)
    assert P.sum() == 2 * 28 * 28 and P[:, 2:30, 2:30].sum() == 2 * 28 * 28
    with pytest.raises(ValueError, match="size must be an int >= the image side 28; got 20"):
        data.pad(np.ones((1, 28, 28, 1)), 20)


@pytest.mark.skipif(not os.path.isdir(MNIST), reason="../shared/data/mnist not present")
def test_real_mnist():
    X, y = data.load_mnist(MNIST)
    assert X.shape == (10000, 28, 28, 1) and y.shape == (10000,)
    # class counts stated in ../shared/data/mnist/README.md
    np.testing.assert_array_equal(np.bincount(y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    assert X.min() == 0.0 and X.max() == 1.0
    assert y[:5].tolist() == [7, 2, 1, 0, 4]        # the well-known first test digits
