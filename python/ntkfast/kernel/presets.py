"""Named architectures from the literature (all with W_std = sqrt(2), b_std = 0 and a Dense() readout).

- ``cntk(depth, readout)``: Arora et al. 2019, ``depth`` x [Conv(3), ReLU], GlobalAvgPool or Flatten.
- ``myrtle(5|7|10)``: Shankar et al. 2020 (neural-tangents' layout; 32x32 inputs).
- ``bietti_mairal()``: Bietti & Mairal 2019, 2 x [Conv(3), ReLU, GaussianPool] with subsampling 2 then 5
  (28x28 inputs), Flatten.
- ``fc(depth)``: ``depth`` x [Dense(sqrt 2), ReLU], Dense() on (N, D) inputs.
- ``wrn(depth)``: the WideResNet of neural-tangents' examples and Novak et al. (2019) (widths do not enter
  the kernel), with their parameters (W_std = 1, no biases).
- ``resnet(depth)``: a pre-activation CIFAR ResNet (He et al. 2016), W_std = sqrt 2.
"""
from __future__ import annotations

from .arch import (AvgPool, Conv, Dense, FanInSum, FanOut, Flatten, GaussianPool, GlobalAvgPool, Identity, ReLU,
                   parallel, serial)

from ..validation import check_choice, check_int

__all__ = ["cntk", "myrtle", "bietti_mairal", "fc", "wrn", "resnet", "by_name", "NAMES"]


def _depth(depth, name, minimum=1):
    return check_int(depth, f"{name}: depth", minimum)


def cntk(depth=5, readout="gap"):
    """Convolutional NTK of Arora et al.: depth x [Conv(3, SAME), ReLU], then GlobalAvgPool ('gap') or
    Flatten ('flatten'), then Dense(). ``cntk(5, 'gap')`` is the gap5 workload of docs/design.md (section 4),
    ``cntk(5, 'flatten')`` flat5."""
    depth = _depth(depth, "cntk")
    check_choice(readout, "cntk: readout", ("gap", "flatten"))
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


def _residual(main, shortcut):
    return [FanOut(2), parallel(main, shortcut), FanInSum()]


def wrn(depth=16):
    """WideResNet kernel, as neural-tangents' ``WideResnet(block_size, k, num_classes)`` example (Zagoruyko &
    Komodakis 2016; the kernels of Novak et al. 2019): ``depth = 6 n + 4``, n blocks per group.

    Layers (every Conv 3x3 SAME, W_std = 1, no bias): Conv; 3 groups, strides 1, 2, 2, of n blocks
    ``FanOut(2), parallel([ReLU, Conv(stride), ReLU, Conv], shortcut), FanInSum`` where the shortcut is a
    Conv(3, stride) in each group's first block and Identity after; GlobalAvgPool; Dense(W_std = 1, b_std =
    0). On 32x32 images the last group is 8x8 and GlobalAvgPool equals the example's AvgPool(8) + Flatten.
    The widen factor scales channels only and does not enter the infinite-width kernel.
    """
    depth = _depth(depth, "wrn", minimum=10)
    if (depth - 4) % 6:
        raise ValueError(f"wrn: depth must be 6 n + 4 (10, 16, 22, 28, ...); got {depth}")
    n = (depth - 4) // 6
    conv = lambda stride=1: Conv(3, W_std=1.0, b_std=None, stride=stride)  # noqa: E731
    layers = [conv()]
    for stride in (1, 2, 2):
        for b in range(n):
            s = stride if b == 0 else 1
            layers += _residual([ReLU(), conv(s), ReLU(), conv()], conv(s) if b == 0 else Identity())
    return serial(*layers, GlobalAvgPool(), Dense(1.0, 0.0))


def resnet(depth=20):
    """Pre-activation CIFAR ResNet kernel (He et al. 2016, "Identity mappings"): ``depth = 6 n + 2``.

    Layers (Conv 3x3 SAME, W_std = sqrt 2, no bias): Conv(3); 3 stages of n blocks ``FanOut(2),
    parallel([ReLU, Conv(3, stride), ReLU, Conv(3)], shortcut), FanInSum`` with strides 1, 2, 2 on each
    stage's first block, whose shortcut is a 1x1 projection Conv(1, stride) in stages 2 and 3 (Identity
    elsewhere); ReLU; GlobalAvgPool; Dense(). (A post-activation block, ReLU after the sum, has a
    non-Gaussian shortcut and no closed-form kernel; neural-tangents refuses it too.)
    """
    depth = _depth(depth, "resnet", minimum=8)
    if (depth - 2) % 6:
        raise ValueError(f"resnet: depth must be 6 n + 2 (8, 14, 20, 32, 44, 56, 110, ...); got {depth}")
    n = (depth - 2) // 6
    layers = [Conv(3)]
    for stage, stride in enumerate((1, 2, 2)):
        for b in range(n):
            s = stride if b == 0 else 1
            proj = b == 0 and stage > 0
            layers += _residual([ReLU(), Conv(3, stride=s), ReLU(), Conv(3)], Conv(1, stride=s) if proj else Identity())
    return serial(*layers, ReLU(), GlobalAvgPool(), Dense())


NAMES = ("gap5", "flat5", "myrtle5", "myrtle7", "myrtle10", "bietti_mairal", "fc1", "fc2", "fc3", "wrn16", "wrn28",
         "resnet20")


def by_name(name):
    """Preset by short name: 'gapN'/'cntkN' (GlobalAvgPool), 'flatN', 'myrtleN', 'bietti_mairal', 'fcN',
    'wrnN', 'resnetN'; or 'module:attribute' / 'path/to/file.py:attribute' naming a net (an ntkfast.Arch, an
    ntkfast.stax layer or its kernel_fn) in a Python module, e.g. a net written with ntkfast.stax."""
    import re
    if isinstance(name, str) and ":" in name:
        return _from_python(name)
    m = re.fullmatch(r"(gap|cntk|flat|myrtle|fc|wrn|resnet)(\d+)", str(name))
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
    if kind == "wrn":
        return wrn(depth)
    if kind == "resnet":
        return resnet(depth)
    return fc(depth)


def _from_python(spec):
    """The net at 'module:attr' or 'file.py:attr' (an Arch, a stax layer or its kernel_fn)."""
    import importlib
    import importlib.util
    import os
    from .inputs import check_arch
    where, _, attr = spec.rpartition(":")
    try:
        if where.endswith(".py"):
            if not os.path.isfile(where):
                raise FileNotFoundError(f"arch {spec!r}: no file {where!r}")
            sp = importlib.util.spec_from_file_location("_ntkfast_user_arch", where)
            module = importlib.util.module_from_spec(sp)
            sp.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
        obj = getattr(module, attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"arch {spec!r}: cannot load {attr!r} from {where!r}: {e}") from None
    obj = obj() if callable(obj) and not hasattr(obj, "ntkfast_arch") and not hasattr(obj, "layers") else obj
    return check_arch(obj)
