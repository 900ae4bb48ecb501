"""Stability of kernel representations to deformations (Bietti & Mairal 2019, Fig. 1).

Transformations of images ``(N, H, W, C)`` (all seeded, all float64):

- :func:`random_field`: a smooth random displacement field tau (2, H, W): white noise smoothed by a
  Gaussian of ``smoothness`` pixels, scaled so that max_u |tau(u)| = 1 pixel; a field of amplitude alpha is
  ``alpha * tau`` (alpha is the largest displacement in pixels).
- :func:`warp`: x_tau(u) = x(u - tau(u)) by cubic-spline interpolation (``scipy.ndimage.map_coordinates``,
  zero outside the image).
- :func:`tangent_deform`: the first-order ("tangent") version x(u) - tau(u) . grad x(u) used by Infinite
  MNIST, with the gradient by central differences.
- :func:`translate`: integer translations (zero fill); :func:`random_shift` draws one.

Distances in feature space: ``||Phi(x) - Phi(x')|| / ||Phi(x)|| = sqrt(K(x,x) + K(x',x') - 2 K(x,x')) /
sqrt(K(x,x))`` for the NNGP/CKN kernel and the NTK of an architecture, computed with :func:`ntkfast.gram`.
The default dtype of these analyses is float64: the distances are differences of nearly equal kernel values,
and float32 loses half its digits in the NTK where patches are nearly parallel (docs/design.md, section 3).

:func:`fig1` runs the Fig. 1 experiment: mean relative distance of reference digits to (a) their
deformations, (b) deformations plus a translation, as functions of alpha, and to (c) digits of the same
label and (d) digits of any label.
"""
from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from ..kernel.inputs import Kernels
from ..validation import check_choice, check_int, check_real

__all__ = ["random_field", "warp", "tangent_deform", "translate", "random_shift", "deform", "self_kernels",
           "relative_distances", "paired_distances", "to_mnist_size", "fig1", "Fig1Result", "fig1_table",
           "PAPER_ALPHA1"]

# Bietti & Mairal's poster, read at alpha = 1 (CKN, NTK).
PAPER_ALPHA1 = {"deformations": (0.022, 0.046), "same label": (0.19, 0.23), "any label": (0.25, 0.305)}


def _images(X, name="X"):
    X = np.asarray(X)
    if X.dtype.kind not in "iuf" or X.dtype == bool:
        raise TypeError(f"{name} must be a real numeric array; got dtype {X.dtype}")
    if X.ndim != 4:
        raise ValueError(f"{name} must have shape (N, H, W, C); got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} must be finite")
    return X.astype(np.float64, copy=False)


# ----------------------------------------------------------------------------------------------------------
# Transformations
# ----------------------------------------------------------------------------------------------------------

def random_field(shape, rng, smoothness=4.0):
    """A smooth random displacement field, float64 (2, H, W), with max_u |tau(u)| = 1 (pixels).

    shape : (H, W). rng : numpy Generator (or an int seed). smoothness : Gaussian std in pixels (> 0) of the
    filter applied to white noise (wrap-around boundary, so the field has no edge artefact)."""
    from scipy.ndimage import gaussian_filter
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W); got {shape!r}")
    smoothness = check_real(smoothness, "smoothness", 0.0, strict=True)
    rng = np.random.default_rng(rng)
    tau = np.stack([gaussian_filter(rng.standard_normal(tuple(shape)), smoothness, mode="wrap")
                    for _ in range(2)])
    return tau / np.sqrt((tau ** 2).sum(axis=0)).max()


def _check_field(X, field):
    field = np.asarray(field, dtype=np.float64)
    if field.shape != (2,) + X.shape[1:3]:
        raise ValueError(f"field must have shape (2, H, W) = {(2,) + X.shape[1:3]}; got {field.shape}")
    return field


def warp(X, field, order=3):
    """x_tau(u) = x(u - tau(u)) for every image of X (N, H, W, C) and one field (2, H, W) in pixels (rows,
    columns); spline interpolation of ``order`` (0-5), zero outside the image. Returns float64 (N, H, W, C)."""
    from scipy.ndimage import map_coordinates
    X = _images(X)
    field = _check_field(X, field)
    order = check_int(order, "order", 0, 5)
    H, W = X.shape[1:3]
    grid = np.mgrid[0:H, 0:W].astype(np.float64)
    coords = grid - field
    out = np.empty_like(X)
    for n in range(X.shape[0]):
        for c in range(X.shape[3]):
            # 'grid-constant': the image continues as zeros, also for the spline prefilter ('constant' would
            # not interpolate between the edge pixel and the zero outside)
            out[n, :, :, c] = map_coordinates(X[n, :, :, c], coords, order=order, mode="grid-constant",
                                              cval=0.0)
    return out


def tangent_deform(X, field):
    """First-order deformation x(u) - tau(u) . grad x(u) (central differences), the linearization of
    :func:`warp`. X (N, H, W, C), field (2, H, W); returns float64 (N, H, W, C)."""
    X = _images(X)
    field = _check_field(X, field)
    gy, gx = np.gradient(X, axis=(1, 2))
    return X - field[0][None, :, :, None] * gy - field[1][None, :, :, None] * gx


def translate(X, shift):
    """Translate images by an integer shift (dy, dx) (content moves down/right for positive values), zero
    fill. X (N, H, W, C); returns float64 (N, H, W, C)."""
    X = _images(X)
    if len(shift) != 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in shift):
        raise TypeError(f"shift must be two ints (dy, dx); got {shift!r}")
    dy, dx = int(shift[0]), int(shift[1])
    H, W = X.shape[1:3]
    out = np.zeros_like(X)
    ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
    xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
    out[:, yd, xd] = X[:, ys, xs]
    return out


def random_shift(rng, max_shift=2):
    """A random integer translation (dy, dx), each uniform in [-max_shift, max_shift], not both zero."""
    max_shift = check_int(max_shift, "max_shift", 1)
    rng = np.random.default_rng(rng)
    while True:
        s = rng.integers(-max_shift, max_shift + 1, size=2)
        if s.any():
            return int(s[0]), int(s[1])


def deform(X, alpha, rng, *, method="warp", smoothness=4.0, shift=None, order=3):
    """One random deformation of amplitude ``alpha`` (pixels), the same field for every image of X.

    method : 'warp' (interpolated x(u - alpha tau(u))) or 'tangent' (x - alpha tau . grad x).
    shift : None, or an integer translation (dy, dx) applied after the deformation.
    Returns float64 (N, H, W, C)."""
    X = _images(X)
    alpha = check_real(alpha, "alpha", 0.0)
    check_choice(method, "method", ("warp", "tangent"))
    tau = alpha * random_field(X.shape[1:3], rng, smoothness)
    out = warp(X, tau, order) if method == "warp" else tangent_deform(X, tau)
    return out if shift is None else translate(out, shift)


def to_mnist_size(X):
    """Bring small digit images to MNIST's 28 x 28 layout: a (N, 8, 8, C) image (the embedded default) is
    upsampled by cubic splines to 20 x 20 (MNIST's digit box), clipped to [min, max] of the input and padded
    with 4 zero pixels on every side. 28 x 28 input is returned unchanged; other sizes raise ValueError."""
    from scipy.ndimage import zoom
    X = _images(X)
    if X.shape[1:3] == (28, 28):
        return X
    if X.shape[1:3] != (8, 8):
        raise ValueError(f"to_mnist_size converts (N, 8, 8, C) or (N, 28, 28, C) images; got {X.shape}")
    up = zoom(X, (1, 2.5, 2.5, 1), order=3)
    up = np.clip(up, X.min(), X.max())
    return np.pad(up, ((0, 0), (4, 4), (4, 4), (0, 0)))


# ----------------------------------------------------------------------------------------------------------
# Distances in feature space
# ----------------------------------------------------------------------------------------------------------

def _gram(X, Y=None, *, arch, device, dtype):
    from ..kernel.tiled import gram
    return gram(X, Y, arch=arch, device=device, dtype=dtype)


def self_kernels(X, *, arch, device="auto", dtype="float64"):
    """K(x, x) for every image of X (N, ...): ``Kernels(nngp=(N,), ntk=(N,))`` float64, bitwise the diagonal of
    a symmetric :func:`ntkfast.gram`, in N pair evaluations (:func:`ntkfast.gram_diag`), no N x N Gram."""
    from ..kernel.paired import gram_diag
    k = gram_diag(X, arch=arch, device=device, dtype=dtype)
    return Kernels(*(np.asarray(v, np.float64) for v in k))


def _rel(kxx, kyy, kxy):
    d2 = np.maximum(kxx + kyy - 2.0 * kxy, 0.0)
    return np.sqrt(d2) / np.sqrt(kxx)


def relative_distances(X, Y, *, arch, device="auto", dtype="float64", self_x=None, self_y=None):
    """Relative feature-space distances ||Phi(x) - Phi(y)|| / ||Phi(x)|| between every x of X (N, ...) and
    every y of Y (M, ...): ``Kernels(nngp=(N, M), ntk=(N, M))`` float64. ``self_x``/``self_y`` (Kernels of
    (N,)/(M,)) reuse precomputed :func:`self_kernels`."""
    sx = self_x if self_x is not None else self_kernels(X, arch=arch, device=device, dtype=dtype)
    sy = self_y if self_y is not None else self_kernels(Y, arch=arch, device=device, dtype=dtype)
    k = _gram(X, Y, arch=arch, device=device, dtype=dtype)
    return Kernels(*(_rel(np.asarray(s1, np.float64)[:, None], np.asarray(s2, np.float64)[None, :],
                          np.asarray(kk, np.float64)) for s1, s2, kk in zip(sx, sy, k)))


def paired_distances(X, Y, *, arch, device="auto", dtype="float64", relative=False):
    """||Phi(x_i) - Phi(y_i)|| for matched pairs (x_i, y_i) of X, Y (N, ...): ``Kernels`` of float64 (N,)
    (divided by ||Phi(x_i)|| if ``relative``); 3N pair evaluations (:func:`ntkfast.gram_diag` of X and Y,
    :func:`ntkfast.gram_pairs` of X and Y)."""
    from ..kernel.paired import gram_pairs
    X, Y = np.asarray(X), np.asarray(Y)
    if X.shape != Y.shape:
        raise ValueError(f"X and Y must have the same shape; got {X.shape} and {Y.shape}")
    sx = self_kernels(X, arch=arch, device=device, dtype=dtype)
    sy = self_kernels(Y, arch=arch, device=device, dtype=dtype)
    cross = gram_pairs(X, Y, arch=arch, device=device, dtype=dtype)
    res = []
    for kxx, kyy, kxy in zip(sx, sy, cross):
        d = np.sqrt(np.maximum(kxx + kyy - 2 * np.asarray(kxy, np.float64), 0.0))
        res.append(d / np.sqrt(kxx) if relative else d)
    return Kernels(*res)


# ----------------------------------------------------------------------------------------------------------
# The Fig. 1 experiment
# ----------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Fig1Result:
    """Mean relative distances (rows: 0 = NNGP/CKN, 1 = NTK).

    alphas (A,); deform, deform_shift : (2, A) means over references and draws (std in ``*_std``);
    same_label, any_label : (2,) means over references and comparison digits; raw per-reference arrays in
    ``raw`` (deform (2, R, A, D), deform_shift (2, R, A, D), same (list of (2, n_r)), any (2, R, P));
    ``params`` the settings."""
    alphas: np.ndarray
    deform: np.ndarray
    deform_std: np.ndarray
    deform_shift: np.ndarray
    deform_shift_std: np.ndarray
    same_label: np.ndarray
    any_label: np.ndarray
    raw: dict
    params: dict

    def at(self, alpha):
        """(2, 2) array [[ckn_def, ckn_def+shift], [ntk_def, ntk_def+shift]] interpolated at ``alpha``."""
        return np.array([[np.interp(alpha, self.alphas, c[i]) for c in (self.deform, self.deform_shift)]
                         for i in range(2)])

    def alpha_exponents(self, amax=2.0):
        """(2,) log-log slopes s of the deformation curves, mean distance ~ alpha^s on 0 < alpha <= amax
        (CKN, NTK); NaN with fewer than 2 such alphas. A Lipschitz map gives about 1, the NTK about 1/2."""
        sel = (self.alphas > 0) & (self.alphas <= amax)
        if sel.sum() < 2:
            return np.full(2, np.nan)
        return np.array([np.polyfit(np.log(self.alphas[sel]), np.log(self.deform[j, sel]), 1)[0]
                         for j in range(2)])


def fig1(X, labels, *, arch=None, alphas=(0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0), n_ref=3, n_deform=5,
         n_compare=100, method="warp", smoothness=4.0, max_shift=2, normalize="center_scale", seed=0,
         device="auto", dtype="float64", progress=False):
    """Bietti & Mairal's Fig. 1 on images X (N, H, W, C) with integer labels (N,).

    ``n_ref`` reference digits and ``n_compare`` comparison digits are drawn without replacement (seeded);
    for each reference and alpha, ``n_deform`` random deformations (``method`` 'warp' or 'tangent', field
    smoothness in pixels) and as many deformations followed by a random integer shift of up to ``max_shift``
    pixels. ``normalize`` ('center_scale' (default) or 'none', see :func:`ntkfast.data.normalize`) is applied
    to every image after its transformation, as a preprocessing step of the kernel. Same-label distances
    use the comparison digits that share the reference's label (at least one is required), any-label
    distances all of them. ``arch`` defaults to ``presets.bietti_mairal()`` (28 x 28 inputs).
    Returns a :class:`Fig1Result`. Cost: n_ref * (2 len(alphas) n_deform) + n_compare + n_ref
    self kernels plus as many cross pairs. ``progress``: show a bar over these kernel evaluations (stderr).
    """
    from ..kernel import presets
    arch = presets.bietti_mairal() if arch is None else arch
    X = _images(X)
    labels = np.asarray(labels)
    if labels.shape != (len(X),) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers of shape ({len(X)},); got {labels.dtype} {labels.shape}")
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 1 or len(alphas) < 1 or np.any(~np.isfinite(alphas)) or np.any(alphas < 0):
        raise ValueError(f"alphas must be a non-empty 1-d list of numbers >= 0; got {alphas!r}")
    if np.any(np.diff(alphas) <= 0):
        raise ValueError(f"alphas must be increasing; got {alphas.tolist()}")
    n_ref = check_int(n_ref, "n_ref", 1)
    n_deform = check_int(n_deform, "n_deform", 1)
    n_compare = check_int(n_compare, "n_compare", 2)
    max_shift = check_int(max_shift, "max_shift", 1)
    smoothness = check_real(smoothness, "smoothness", 0.0, strict=True)
    check_choice(method, "method", ("warp", "tangent"))
    check_choice(normalize, "normalize", ("none", "center_scale"))
    from ..data import normalize as _normalize
    prep = lambda Z: _normalize(Z, normalize)  # noqa: E731
    if n_ref + n_compare > len(X):
        raise ValueError(f"n_ref + n_compare = {n_ref + n_compare} exceeds the {len(X)} images given")
    from ..kernel.inputs import check_inputs
    check_inputs(arch, X[:1])  # shape errors before any work

    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    ref_idx, cmp_idx = perm[:n_ref], perm[n_ref:n_ref + n_compare]
    for r in ref_idx:
        if not np.any(labels[cmp_idx] == labels[r]):
            raise ValueError(f"no comparison digit has label {labels[r]} of reference {r}: raise n_compare")
    refs, cmps = X[ref_idx], prep(X[cmp_idx])
    kw = dict(arch=arch, device=device, dtype=dtype)
    A = len(alphas)
    from ..progress import steps
    bar = steps(n_ref + n_compare + n_ref * n_compare + n_ref * 4 * A * n_deform, "stability", enabled=progress,
                unit="kernel")
    s_ref = self_kernels(prep(refs), **kw)
    bar.update(n_ref)
    s_cmp = self_kernels(cmps, **kw)
    bar.update(n_compare)
    d_cmp = relative_distances(prep(refs), cmps, self_x=s_ref, self_y=s_cmp, **kw)
    bar.update(n_ref * n_compare)

    dd = np.zeros((2, n_ref, A, n_deform))
    ds = np.zeros((2, n_ref, A, n_deform))
    for r in range(n_ref):
        x = refs[r:r + 1]
        plain, shifted = [], []
        for a, alpha in enumerate(alphas):
            g = np.random.default_rng([seed, int(ref_idx[r]), a])
            for _ in range(n_deform):
                field_seed = int(g.integers(2 ** 63))
                shift = random_shift(g, max_shift)
                plain.append(deform(x, alpha, field_seed, method=method, smoothness=smoothness)[0])
                shifted.append(deform(x, alpha, field_seed, method=method, smoothness=smoothness, shift=shift)[0])
        Y = prep(np.stack(plain + shifted))
        d = relative_distances(prep(x), Y, self_x=Kernels(s_ref.nngp[r:r + 1], s_ref.ntk[r:r + 1]), **kw)
        for j in range(2):
            v = np.asarray(d[j])[0]
            dd[j, r] = v[:A * n_deform].reshape(A, n_deform)
            ds[j, r] = v[A * n_deform:].reshape(A, n_deform)
        bar.update(4 * A * n_deform)
    bar.close()
    same = [np.stack([np.asarray(d_cmp[j])[r, labels[cmp_idx] == labels[ref_idx[r]]] for j in range(2)])
            for r in range(n_ref)]
    any_ = np.stack([np.asarray(d_cmp[j]) for j in range(2)])
    return Fig1Result(
        alphas=alphas,
        deform=dd.mean(axis=(1, 3)), deform_std=dd.std(axis=(1, 3)),
        deform_shift=ds.mean(axis=(1, 3)), deform_shift_std=ds.std(axis=(1, 3)),
        same_label=np.array([np.mean(np.concatenate([s[j] for s in same])) for j in range(2)]),
        any_label=any_.mean(axis=(1, 2)),
        raw={"deform": dd, "deform_shift": ds, "same": same, "any": any_, "ref_idx": ref_idx,
             "cmp_idx": cmp_idx},
        params=dict(n_ref=n_ref, n_deform=n_deform, n_compare=n_compare, method=method, smoothness=smoothness,
                    max_shift=max_shift, normalize=normalize, seed=seed, dtype=str(dtype), arch=repr(arch)))


def fig1_table(res, paper=True):
    """The table of a :class:`Fig1Result` as text: per alpha the four curves, then the label levels and (if
    ``paper``) our values at alpha = 1 beside the paper's poster values."""
    lines = [f"{'alpha':>5} | {'CKN deform':>10} {'CKN def+tr':>10} | {'NTK deform':>10} {'NTK def+tr':>10}"]
    for a, alpha in enumerate(res.alphas):
        lines.append(f"{alpha:5.2f} | {res.deform[0, a]:10.4f} {res.deform_shift[0, a]:10.4f} | "
                     f"{res.deform[1, a]:10.4f} {res.deform_shift[1, a]:10.4f}")
    lines.append(f"{'same label':>16}: CKN {res.same_label[0]:.4f}  NTK {res.same_label[1]:.4f}")
    lines.append(f"{'any label':>16}: CKN {res.any_label[0]:.4f}  NTK {res.any_label[1]:.4f}")
    ex = res.alpha_exponents()
    if np.all(np.isfinite(ex)):
        lines.append(f"deformation curves ~ alpha^s on 0 < alpha <= 2: CKN s = {ex[0]:.2f}, NTK s = {ex[1]:.2f}")
    if paper and res.alphas[0] <= 1.0 <= res.alphas[-1]:
        at1 = res.at(1.0)
        lines.append("")
        lines.append("at alpha = 1       | this run: CKN    NTK   NTK/CKN | paper poster: CKN    NTK   NTK/CKN")
        rows = [("deformations", at1[0, 0], at1[1, 0]), ("deform.+transl.", at1[0, 1], at1[1, 1]),
                ("same label", *res.same_label), ("any label", *res.any_label)]
        for name, c, t in rows:
            pc = PAPER_ALPHA1.get(name)
            ps = f"{pc[0]:6.3f} {pc[1]:6.3f} {pc[1] / pc[0]:7.2f}" if pc else f"{'-':>6} {'-':>6} {'-':>7}"
            lines.append(f"{name:<18} |          {c:6.3f} {t:6.3f} {t / c:7.2f} |               {ps}")
    return "\n".join(lines)
