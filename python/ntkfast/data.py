"""Image data: IDX files (MNIST-like, gzipped or not), .npy/.npz, the embedded default set, normalization.

All loaders return images as float arrays ``(N, H, W, C)`` (NHWC) and labels as int64 ``(N,)``.
The embedded default is scikit-learn's handwritten digits (1,797 real 8x8 grey images, 10 classes),
which ships inside the installed scikit-learn package (no download).
"""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np

__all__ = ["load_idx", "load_mnist", "load_npz", "load_default", "load", "normalize", "DEFAULT_NAME"]

DEFAULT_NAME = "digits"
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def load_idx(path):
    """Read one IDX file (gzipped or not) into a numpy array of its stored shape and dtype."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file not found: {path}")
    with _open(path) as f:
        head = f.read(4)
        if len(head) != 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
            raise ValueError(f"{path}: not an IDX file (bad magic number {head!r})")
        ndim = head[3]
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
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
    """Load an MNIST-like directory of IDX files: ``{split}-images-idx3-ubyte[.gz]`` and labels.

    Returns (images float64 (N, 28, 28, 1) scaled to [0, 1], labels int64 (N,)).
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"data directory not found: {directory}")
    ip = _find(directory, [f"{split}-images-idx3-ubyte", f"{split}-images.idx3-ubyte"])
    lp = _find(directory, [f"{split}-labels-idx1-ubyte", f"{split}-labels.idx1-ubyte"])
    if ip is None or lp is None:
        raise FileNotFoundError(f"{directory}: expected {split}-images-idx3-ubyte[.gz] and "
                                f"{split}-labels-idx1-ubyte[.gz]")
    images, labels = load_idx(ip), load_idx(lp)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{directory}: images {images.shape} and labels {labels.shape} do not match")
    return images[..., None].astype(np.float64) / 255.0, labels.astype(np.int64)


def load_npz(path):
    """Load images and labels from .npz (keys 'X'/'x'/'images' and 'y'/'labels') or .npy (images only,
    labels None). Images of shape (N, H, W) get a channel axis."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path}")
    if path.endswith(".npy"):
        X, y = np.load(path, allow_pickle=False), None
    else:
        with np.load(path, allow_pickle=False) as z:
            xk = next((k for k in ("X", "x", "images", "data") if k in z.files), None)
            if xk is None:
                raise ValueError(f"{path}: expected an array named X, x, images or data; found {z.files}")
            yk = next((k for k in ("y", "labels", "targets") if k in z.files), None)
            X, y = z[xk], (z[yk] if yk else None)
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
    """Normalize images ``(N, H, W, C)``.

    method: 'none'; 'center_scale' (per image: subtract its mean, divide by its norm times sqrt(HWC),
    as in the CNTK literature; a constant image becomes 0); 'zca' (per-image centering and scaling, then
    ZCA whitening with regularization ``zca_reg`` times the mean eigenvalue, fitted on ``zca_fit`` or X).
    Returns float64 of the same shape.
    """
    X = np.asarray(X, dtype=np.float64)
    if method == "none":
        return X.copy()
    if method not in ("center_scale", "zca"):
        raise ValueError(f"method must be 'none', 'center_scale' or 'zca'; got {method!r}")

    def cs(A):
        flat = A.reshape(len(A), -1)
        flat = flat - flat.mean(axis=1, keepdims=True)
        nrm = np.linalg.norm(flat, axis=1, keepdims=True)
        return (flat / np.maximum(nrm, eps) * np.sqrt(flat.shape[1])).reshape(A.shape)

    Xn = cs(X)
    if method == "center_scale":
        return Xn
    F = cs(np.asarray(zca_fit, dtype=np.float64)) if zca_fit is not None else Xn
    flat = F.reshape(len(F), -1)
    mu = flat.mean(axis=0)
    cov = np.cov(flat - mu, rowvar=False, bias=True)
    w, V = np.linalg.eigh(cov)
    w = np.maximum(w, 0.0)
    W = (V / np.sqrt(w + zca_reg * w.mean())) @ V.T
    return ((Xn.reshape(len(Xn), -1) - mu) @ W).reshape(X.shape)
