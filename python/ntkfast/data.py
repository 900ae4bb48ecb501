"""Image data: IDX files (MNIST-like, gzipped or not), .npy/.npz, the embedded default set, normalization.

All loaders return images as float arrays ``(N, H, W, C)`` (NHWC) and labels as int64 ``(N,)``.
The embedded default is scikit-learn's handwritten digits (1,797 real 8x8 grey images, 10 classes),
which ships inside the installed scikit-learn package (no download).
"""
from __future__ import annotations

import gzip
import os
import struct
import zipfile
import zlib

import numpy as np

from .validation import check_choice, check_int, check_real

__all__ = ["load_idx", "load_mnist", "load_npz", "load_default", "load", "normalize", "split", "pad",
           "prepare_images", "DEFAULT_NAME", "NORMALIZATIONS"]

DEFAULT_NAME = "digits"
NORMALIZATIONS = ("none", "center_scale", "zca")
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def load_idx(path):
    """Read one IDX file (gzipped or not, detected from its first bytes) into a numpy array.

    Returns an array of the stored shape and dtype (uint8, int8, int16, int32, float32 or float64, in
    native byte order). Raises FileNotFoundError, or ValueError for a bad magic number or truncated data.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file not found: {path}")
    with _open(path) as f:
        head = f.read(4)
        if len(head) != 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
            raise ValueError(f"{path}: not an IDX file (bad magic number {head!r})")
        ndim = head[3]
        raw = f.read(4 * ndim)
        if len(raw) != 4 * ndim:
            raise ValueError(f"{path}: truncated IDX header (expected {ndim} dimension sizes)")
        dims = struct.unpack(">" + "I" * ndim, raw)
        dt = np.dtype(_IDX_TYPES[head[2]])
        count = int(np.prod(dims)) if dims else 1
        buf = f.read(count * dt.itemsize)
        if len(buf) != count * dt.itemsize:
            raise ValueError(f"{path}: truncated IDX file (expected {count * dt.itemsize} data bytes, got {len(buf)})")
    return np.frombuffer(buf, dtype=dt).reshape(dims).astype(dt.newbyteorder("="))


def _find(directory, stems):
    for stem in stems:
        for ext in ("", ".gz"):
            p = os.path.join(directory, stem + ext)
            if os.path.isfile(p):
                return p
    return None


def load_mnist(directory, split="t10k"):
    """Load an MNIST-like directory of IDX files: ``{split}-images-idx3-ubyte[.gz]`` and
    ``{split}-labels-idx1-ubyte[.gz]`` (``split`` is 't10k' (default) or 'train'; the dotted names
    ``{split}-images.idx3-ubyte`` are accepted too).

    Returns (images float64 (N, H, W, 1) scaled to [0, 1] (uint8 / 255), labels int64 (N,)).
    """
    directory = os.fspath(directory)
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a file prefix such as 't10k' or 'train'; got {split!r}")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"data directory not found: {directory}")
    ip = _find(directory, [f"{split}-images-idx3-ubyte", f"{split}-images.idx3-ubyte"])
    lp = _find(directory, [f"{split}-labels-idx1-ubyte", f"{split}-labels.idx1-ubyte"])
    if ip is None or lp is None:
        raise FileNotFoundError(f"{directory}: expected {split}-images-idx3-ubyte[.gz] and "
                                f"{split}-labels-idx1-ubyte[.gz]")
    images, labels = load_idx(ip), load_idx(lp)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{directory}: expected images (N, H, W) and labels (N,); got images {images.shape} "
                         f"and labels {labels.shape}")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    return images[..., None].astype(np.float64) / scale, labels.astype(np.int64)


def load_npz(path):
    """Load images and labels from .npz (keys 'X'/'x'/'images' and 'y'/'labels') or .npy (images only,
    labels None). Images of shape (N, H, W) get a channel axis."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data source not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(6)
    is_npy, is_zip = magic == b"\x93NUMPY", magic[:2] == b"PK"
    if path.endswith(".npy") and not is_npy:
        raise ValueError(f"{path}: not a .npy file (expected numpy's '\\x93NUMPY' header, as np.save writes; "
                         f"it begins with {magic!r})")
    if path.endswith(".npz") and not (is_zip or is_npy):
        raise ValueError(f"{path}: not a .npz file (expected a zip archive of .npy arrays, as np.savez writes; "
                         f"it begins with {magic!r})")
    try:
        with open(path, "rb") as f:      # ours to close: np.load leaves a path it opened open when it fails
            if is_npy:           # also a .npy saved under a .npz name
                X, y = np.load(f, allow_pickle=False), None
            else:
                with np.load(f, allow_pickle=False) as z:
                    xk = next((k for k in ("X", "x", "images", "data") if k in z.files), None)
                    if xk is None:
                        raise ValueError(f"{path}: expected an array named X, x, images or data; found {z.files}")
                    yk = next((k for k in ("y", "labels", "targets") if k in z.files), None)
                    X, y = z[xk], (z[yk] if yk else None)
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
        raise ValueError(f"{path}: damaged file (truncated or corrupt: {type(e).__name__}: {e}); write it again "
                         "with np.savez / np.save") from None
    except ValueError as e:
        if "pickle" in str(e):
            raise ValueError(f"{path}: holds Python objects (a pickled object array), which ntkfast does not load "
                             "(loading pickles can run code); save numeric arrays") from None
        if str(e).startswith(path):
            raise
        raise ValueError(f"{path}: damaged or unreadable ({e}); write it again with np.savez / np.save") from None
    X = np.asarray(X)
    if X.ndim == 3:
        X = X[..., None]
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(X):
            raise ValueError(f"{path}: {len(X)} images but {len(y)} labels")
    return X.astype(np.float64), y


def load_default():
    """The embedded default set: scikit-learn's 1,797 handwritten digits, float64 (N, 8, 8, 1) in [0, 1],
    labels int64 (N,)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images[..., None].astype(np.float64) / 16.0, d.target.astype(np.int64)


def load(source=None, split="t10k"):
    """Load by source: None or 'digits' (embedded default), a directory of IDX files, or a .npy/.npz file."""
    if source is None or source == DEFAULT_NAME:
        return load_default()
    source = os.fspath(source)
    if os.path.isdir(source):
        return load_mnist(source, split=split)
    if source.endswith((".npz", ".npy")):
        return load_npz(source)
    if os.path.isfile(source):
        return load_idx(source)[..., None].astype(np.float64), None
    raise FileNotFoundError(f"data source not found: {source!r} (expected 'digits', an IDX directory or .npy/.npz)")


def normalize(X, method="center_scale", eps=1e-12, zca_reg=0.1, zca_fit=None):
    """Normalize images ``(N, H, W, C)`` (or vectors ``(N, D)``); returns float64 of the same shape.

    method : 'none' (a float64 copy); 'center_scale' (default; per image: subtract its mean, divide by its
        norm and multiply by sqrt(H W C), so every image has mean 0 and mean square 1, as in the CNTK
        literature; a constant image becomes 0); 'zca' (per-image centering and scaling, then ZCA whitening
        ``(x - mu) V diag((w + zca_reg mean(w))^-1/2) V^T`` from the eigendecomposition of the pixel
        covariance, fitted on ``zca_fit`` (e.g. the training set, when X is a test set) or on X).
    eps : float, norms below it count as 0 (default 1e-12).
    zca_reg : float >= 0, ZCA regularization relative to the mean eigenvalue (default 0.1); with 0,
        directions of zero variance are dropped (mapped to 0) rather than divided by 0.
    zca_fit : None or images (M, H, W, C) of X's per-image shape.
    """
    check_choice(method, "method", NORMALIZATIONS)
    X = _check_images(X, "X")
    if method == "none":
        return X.copy()
    zca_reg = check_real(zca_reg, "zca_reg", 0.0, expected="a finite float >= 0")
    if zca_fit is not None:
        zca_fit = _check_images(zca_fit, "zca_fit")
        if zca_fit.shape[1:] != X.shape[1:]:
            raise ValueError(f"zca_fit must have X's per-image shape {X.shape[1:]}; got {zca_fit.shape}")

    def cs(A):
        flat = A.reshape(len(A), -1)
        orig = np.linalg.norm(flat, axis=1, keepdims=True)
        flat = flat - flat.mean(axis=1, keepdims=True)
        nrm = np.linalg.norm(flat, axis=1, keepdims=True)
        # a constant image leaves only rounding after centering: it becomes exactly 0
        zero = nrm <= eps * np.maximum(orig, 1.0)
        out = flat / np.where(zero, 1.0, nrm) * np.sqrt(flat.shape[1])
        return np.where(zero, 0.0, out).reshape(A.shape)

    Xn = cs(X)
    if method == "center_scale":
        return Xn
    F = cs(zca_fit) if zca_fit is not None else Xn
    flat = F.reshape(len(F), -1)
    mu = flat.mean(axis=0)
    cov = np.cov(flat - mu, rowvar=False, bias=True)
    w, V = np.linalg.eigh(cov)
    # directions of (numerically) zero variance (per-image centering always makes one) are dropped when
    # zca_reg is 0 instead of being divided by 0
    keep = w > len(w) * np.finfo(np.float64).eps * max(w.max(), 0.0)
    d = np.where(keep, w, 0.0) + zca_reg * np.maximum(w, 0.0).mean()
    inv = np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)
    W = (V * inv) @ V.T
    return ((Xn.reshape(len(Xn), -1) - mu) @ W).reshape(X.shape)


def _check_images(X, name):
    try:
        A = np.asarray(X)
    except Exception as e:
        raise TypeError(f"{name} must be a numeric array (N, H, W, C) or (N, D); could not convert: {e}") from None
    if A.dtype == bool or A.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real numeric array (N, H, W, C) or (N, D); got dtype {A.dtype}")
    if A.ndim < 2 or 0 in A.shape:
        raise ValueError(f"{name} must be a non-empty array (N, H, W, C) or (N, D); got shape {A.shape}")
    A = A.astype(np.float64)
    if not np.isfinite(A).all():
        raise ValueError(f"{name} must be finite; got {int((~np.isfinite(A)).sum())} NaN/Inf entries")
    return A


def split(X, y, train=None, test=None):
    """Deterministic split of one set: the first ``train`` items train, the last ``test`` items test.

    X : (N, ...) array; y : (N,) labels or None. train, test : ints >= 1 with train + test <= N (default:
    test = N // 4 rounded down, at least 1, and train = N - test). The same split as the MNIST README's
    "first 8000 / last 2000". Returns (X_train, y_train, X_test, y_test) (y parts None if y is None).
    """
    n = len(X)
    if y is not None and len(y) != n:
        raise ValueError(f"y must have one label per item of X (N = {n}); got {len(y)} labels")
    for name, v in (("train", train), ("test", test)):
        if v is not None:
            check_int(v, name, 1, expected="a positive int (number of items) or None")
    if test is None:
        test = max(1, n // 4) if train is None else n - train
    if train is None:
        train = n - test
    if train < 1 or test < 1 or train + test > n:
        raise ValueError(f"train + test must be <= the {n} items available, each >= 1; got train = {train}, "
                         f"test = {test}")
    ys = (None, None) if y is None else (y[:train], y[n - test:])
    return X[:train], ys[0], X[n - test:], ys[1]


def pad(X, size):
    """Zero-pad images (N, H, W, C) symmetrically to (N, size, size, C) (e.g. 28x28 MNIST to 32x32 for
    myrtle); the extra row/column of an odd difference goes to the bottom/right. Returns float64."""
    X = _check_images(X, "X")
    if X.ndim != 4:
        raise ValueError(f"X must be images (N, H, W, C) to pad; got shape {X.shape}")
    side = max(X.shape[1:3])
    size = check_int(size, "size", side, expected=f"an int >= the image side {side}")
    dh, dw = size - X.shape[1], size - X.shape[2]
    return np.pad(X, ((0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2), (0, 0)))


_normalize, _pad = normalize, pad     # prepare_images' arguments of the same names shadow them


def prepare_images(X_train, X_test, arch, *, normalize="center_scale", pad=None, layout=None):
    """Normalize (ZCA, if asked, fitted on the training images only), zero-pad to ``pad`` x ``pad``, and
    flatten for a fully-connected ``arch``. Returns float64 (X_train, X_test) as ``arch`` takes them.

    Images are (N, H, W, C), or (N, H, W) for one channel; ``layout`` as in :func:`ntkfast.gram` (None: NHWC,
    refusing channels-first-looking shapes; 'NCHW': converted). ``pad`` must be >= the image side."""
    from .kernel.inputs import to_nhwc
    X_train, X_test = to_nhwc(np.asarray(X_train), layout, "X_train"), to_nhwc(np.asarray(X_test), layout, "X_test")
    if pad is not None:
        side = max(np.shape(X_train)[1:3]) if np.ndim(X_train) == 4 else None
        check_int(pad, "pad", side, expected=f"an int >= the image side {side if side is not None else '?'}")
    Xtr = _normalize(X_train, normalize)
    Xte = _normalize(X_test, normalize, zca_fit=X_train if normalize == "zca" else None)
    if pad is not None:
        Xtr, Xte = _pad(Xtr, pad), _pad(Xte, pad)
    if not arch.convolutional:
        Xtr, Xte = Xtr.reshape(len(Xtr), -1), Xte.reshape(len(Xte), -1)
    return Xtr, Xte
