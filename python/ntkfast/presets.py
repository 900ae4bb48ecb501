"""Named architectures from the literature (all with W_std = sqrt(2), b_std = 0 and a Dense() readout).

- ``cntk(depth, readout)``: Arora et al. 2019, ``depth`` x [Conv(3), ReLU], GlobalAvgPool or Flatten.
- ``myrtle(5|7|10)``: Shankar et al. 2020 (neural-tangents' layout; 32x32 inputs).
- ``bietti_mairal()``: Bietti & Mairal 2019, 2 x [Conv(3), ReLU, GaussianPool] with subsampling 2 then 5
  (28x28 inputs), Flatten.
- ``fc(depth)``: ``depth`` x [Dense(sqrt 2), ReLU], Dense() on (N, D) inputs.
"""
from __future__ import annotations

import numbers

from .arch import AvgPool, Conv, Dense, Flatten, GaussianPool, GlobalAvgPool, ReLU, serial

__all__ = ["cntk", "myrtle", "bietti_mairal", "fc", "by_name", "NAMES"]


def _depth(depth, name, minimum=1):
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
        raise TypeError(f"{name}: depth must be an int; got {depth!r}")
    if depth < minimum:
        raise ValueError(f"{name}: depth must be >= {minimum}; got {depth}")
    return int(depth)


def cntk(depth=5, readout="gap"):
    """Convolutional NTK of Arora et al.: depth x [Conv(3, SAME), ReLU], then GlobalAvgPool ('gap') or
    Flatten ('flatten'), then Dense(). ``cntk(5, 'gap')`` is the gap5 workload of docs/design.md (section 4),
    ``cntk(5, 'flatten')`` flat5."""
    depth = _depth(depth, "cntk")
    if readout not in ("gap", "flatten"):
        raise ValueError(f"cntk: readout must be 'gap' or 'flatten'; got {readout!r}")
    body = [l for _ in range(depth) for l in (Conv(3), ReLU())]
    return serial(*body, GlobalAvgPool() if readout == "gap" else Flatten(), Dense())


_MYRTLE = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}


def myrtle(depth=5):
    """Myrtle CNN of Shankar et al. (depth 5, 7 or 10), for 32x32 images."""
    if depth not in _MYRTLE:
        raise ValueError(f"myrtle: depth must be one of {sorted(_MYRTLE)}; got {depth!r}")
    a, b, c = _MYRTLE[depth]
    block = lambda n: [l for _ in range(n) for l in (Conv(3), ReLU())]  # noqa: E731
    layers = block(a) + [AvgPool(2)] + block(b) + [AvgPool(2)] + block(c) + [AvgPool(2)] * 3
    return serial(*layers, Flatten(), Dense())


def bietti_mairal():
    """Bietti & Mairal's 2-layer CKN/NTK: [Conv(3), ReLU, GaussianPool(2)], [Conv(3), ReLU, GaussianPool(5)],
    Flatten, Dense(); on 28x28 images the pooled resolutions are 13x13 and 1x1."""
    return serial(Conv(3), ReLU(), GaussianPool(2), Conv(3), ReLU(), GaussianPool(5), Flatten(), Dense())


def fc(depth=3):
    """Fully-connected ReLU net: depth x [Dense(sqrt 2), ReLU], Dense(); inputs (N, D)."""
    depth = _depth(depth, "fc")
    return serial(*[l for _ in range(depth) for l in (Dense(2 ** 0.5), ReLU())], Dense())


NAMES = ("gap5", "flat5", "myrtle5", "myrtle7", "myrtle10", "bietti_mairal", "fc1", "fc2", "fc3")


def by_name(name):
    """Preset by short name: 'gapN'/'cntkN' (GlobalAvgPool), 'flatN', 'myrtleN', 'bietti_mairal', 'fcN'."""
    import re
    m = re.fullmatch(r"(gap|cntk|flat|myrtle|fc)(\d+)", str(name))
    if name == "bietti_mairal":
        return bietti_mairal()
    if not m:
        raise ValueError(f"unknown architecture name {name!r}; expected one of gapN, flatN, myrtle5|7|10, "
                         f"bietti_mairal, fcN (e.g. {', '.join(NAMES[:4])})")
    kind, depth = m.group(1), int(m.group(2))
    if kind in ("gap", "cntk"):
        return cntk(depth, "gap")
    if kind == "flat":
        return cntk(depth, "flatten")
    if kind == "myrtle":
        return myrtle(depth)
    return fc(depth)
