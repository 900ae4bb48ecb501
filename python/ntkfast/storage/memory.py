"""Host-memory model of a tiled Gram computation, and memory budgets.

A Gram computation holds, at its peak (bytes; ``s`` = itemsize of ``dtype``, 4 or 8; ``k`` = kernels
computed, 1 or 2; ``t`` = tile side; ``P`` = threads):

========================  ====================================================================================
inputs                    ``(N + M) * d * s``: X and Y converted to ``dtype`` (``d`` values per image; M = 0
                          for a symmetric Gram)
self data                 ``(N + M) * program.self_size * s``: the per-image recursion computed once
outputs in memory         ``k * N * M * s`` when the result is a numpy array in memory; 0 when it goes to a
                          zarr store or a memmap (their pages are file-backed page cache, not heap)
per tile                  ``k * t^2 * s`` for the tile's results, the C++ backend's packed copy of the tile's
                          columns and its batch list (``program.cpu_tile_bytes``), and for a zarr store
                          ``3 * t^2 * s`` more while a (transposed) tile is copied and encoded (measured 1.8 to 2.8)
per thread (CPU)          the C++ engine's workspace as it allocates it (``program.cpu_thread_bytes``: planes,
                          row buffers, the pooled stores of one pair, the broadcast input), times P threads
========================  ====================================================================================

The Python interpreter and its loaded libraries (about 100 MB of resident memory) are not counted: a
budget bounds what the computation allocates on top of them. GPU memory is not modelled here.
"""
from __future__ import annotations

import numbers
import os
import re
from collections import namedtuple

import numpy as np

__all__ = ["parse_bytes", "MemoryEstimate", "MemoryModel", "estimate", "choose_tile", "format_bytes",
           "default_threads"]

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}

MemoryEstimate = namedtuple("MemoryEstimate", ["inputs", "self_data", "outputs", "per_tile", "per_thread",
                                               "threads", "total"])
MemoryEstimate.__doc__ = """Bytes of each part of the memory model (see :mod:`ntkfast.memory`); ``per_thread``
is for one thread, ``total = inputs + self_data + outputs + per_tile + threads * per_thread``."""


def parse_bytes(value, name="memory_budget"):
    """Bytes from an int/float (bytes) or a string such as '2GB', '512 MiB', '50MB', '1e9'.

    Decimal units (KB, MB, GB, TB = 10^3..10^12) and binary ones (KiB, MiB, GiB, TiB). Returns a positive int.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number of bytes or a string like '2GB'; got {value!r}")
    if isinstance(value, numbers.Real):
        v = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"{name} must be a number of bytes or a string like '2GB', '512MiB'; got {value!r}")
        v = float(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        raise TypeError(f"{name} must be a number of bytes or a string like '2GB'; got {type(value).__name__}")
    if not np.isfinite(v) or v < 1:
        raise ValueError(f"{name} must be at least 1 byte; got {value!r}")
    return int(v)


def format_bytes(b):
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(b) >= f:
            return f"{b / f:.3g} {unit}"
    return f"{int(b)} B"


def default_threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def per_thread_bytes(program, itemsize):
    """Bytes of one CPU thread's engine workspace, as the C++ backend allocates it."""
    return int(program.cpu_thread_bytes(itemsize))


def tile_bytes(t, kinds, itemsize, store, program=None):
    """Bytes of one t x t tile in flight: results, the C++ packed columns and batch list, zarr's encoding copy."""
    b = kinds * t * t * itemsize
    if program is not None and t > 0:
        b += int(program.cpu_tile_bytes(itemsize, t, t))
    if store == "zarr":
        b += 3 * t * t * itemsize
    return int(b)


class MemoryModel:
    """The memory model of one (n, m) Gram (m = None for symmetric) for every tile size: the parts that do
    not depend on the tile (inputs, self data, outputs, the per-thread workspace from the C++ engine) are
    computed once, when the model is made; :meth:`at` adds one tile, :meth:`choose_tile` finds the largest
    tile within a budget.

    store : 'array' (outputs held in memory), 'memmap' or 'zarr'.
    """

    def __init__(self, input_shape, n, m, *, program, kinds, itemsize, threads, store):
        d = int(np.prod(input_shape))
        images = n + (m or 0)
        self.program, self.kinds, self.itemsize, self.store, self.threads = program, kinds, itemsize, store, threads
        self.inputs = images * d * itemsize
        self.self_data = images * program.self_size * itemsize
        self.outputs = kinds * n * (m or n) * itemsize if store == "array" else 0
        self.per_thread = per_thread_bytes(program, itemsize)
        self.fixed = self.inputs + self.self_data + self.outputs + threads * self.per_thread

    def tile_bytes(self, tile):
        return tile_bytes(tile, self.kinds, self.itemsize, self.store, self.program)

    def at(self, tile):
        """The :class:`MemoryEstimate` with tiles of side ``tile``."""
        tb = self.tile_bytes(tile)
        return MemoryEstimate(self.inputs, self.self_data, self.outputs, tb, self.per_thread, self.threads,
                              self.fixed + tb)

    def choose_tile(self, budget, cap, multiple=1):
        """Largest tile t <= cap, a multiple of ``multiple``, whose estimate is within ``budget``; None if none."""
        return choose_tile(budget, self.fixed, self.kinds, self.itemsize, self.store, cap, multiple, self.program)


def estimate(arch, input_shape, n, m, *, program, kinds, itemsize, tile, threads, store):
    """The memory model for an (n, m) Gram (m = None for symmetric) in tiles of ``tile``.

    store : 'array' (outputs held in memory), 'memmap' or 'zarr'. Returns a :class:`MemoryEstimate`
    (:class:`MemoryModel` gives it for any tile without recomputing the rest)."""
    return MemoryModel(input_shape, n, m, program=program, kinds=kinds, itemsize=itemsize, threads=threads,
                       store=store).at(tile)


def choose_tile(budget, fixed, kinds, itemsize, store, cap, multiple=1, program=None):
    """Largest tile t <= cap, a multiple of ``multiple``, with fixed + tile_bytes(t) <= budget; None if none."""
    lo, hi = 0, cap // multiple
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fixed + tile_bytes(mid * multiple, kinds, itemsize, store, program) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo * multiple or None
