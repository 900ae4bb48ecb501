"""Tiled Gram matrices on the compiled backends.

``gram(X)`` computes only tiles on or above the diagonal and mirrors them (exactly symmetric); the
per-image self data (the diagonals that feed every ReLU) is computed once per image, not once per pair.
Any N works: the last tile row/column is simply smaller.

Tiles go to numpy arrays, memmaps or zarr stores (:mod:`ntkfast.store`), finished tiles are marked so that an
interrupted run resumes without recomputing them, ``memory_budget`` sets the tile from the memory model of
:mod:`ntkfast.memory`, and :mod:`ntkfast.distributed` runs the same tiles as Dask tasks. See docs/scale.md.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Tuple

import numpy as np

from .. import device as D
from ..progress import PairProgress, check_progress, label_of
from ..validation import check_choice, check_int
from .arch import Arch
from .inputs import (check_arch, check_dtype, check_finite, check_kind, check_layout, fingerprint, read_inputs,
                     rescale_rows, scale_back)
from .interruptible import call

if TYPE_CHECKING:  # field types of GramJob (the storage modules are imported when a job is prepared)
    from ..storage.memory import MemoryEstimate
    from ..storage.store import Store

__all__ = ["gram", "prepare", "GramJob", "compile_program", "compute_tile", "tiles", "save_npz"]

DEFAULT_TILE = {"cpu": 256, "cuda": 2048}


def compile_program(arch, input_shape):
    """The compiled program of ``arch`` for one input's shape (cached; see :meth:`ntkfast.Arch.plan`)."""
    return check_arch(arch).plan(input_shape).program


def _check_tile(tile):
    if tile is None:
        return None
    return check_int(tile, "tile", 1, expected="a positive int (images per tile side) or None")


def tiles(n, m, tile, symmetric):
    """Tile index ranges ((i0, i1), (j0, j1)) covering an n x m Gram; with ``symmetric`` only j0 >= i0."""
    rows = [(i, min(i + tile, n)) for i in range(0, n, tile)]
    cols = [(j, min(j + tile, m)) for j in range(0, m, tile)]
    return [(r, c) for a, r in enumerate(rows) for b, c in enumerate(cols) if not symmetric or b >= a]


def gram(X, Y=None, *, arch, kind=None, device="auto", dtype="float32", tile=None, progress=False, out=None,
         threads=None, memory_budget=None, output="numpy", layout=None):
    """NNGP/CKN and NTK Gram matrices of ``arch`` between X and Y (or X and itself).

    Parameters
    ----------
    X : array (N, H, W, C) of images (NHWC; (N, H, W) for one channel) for convolutional nets, or (N, D) for
        fully-connected nets; numpy, or anything exposing ``__array__`` / ``__cuda_array_interface__`` (copied
        to the host). Channels-first images need ``layout='NCHW'`` (see ``layout``).
    Y : array (M, ...) like X, or None for the symmetric Gram of X (only tiles on or above the diagonal are
        computed; the lower triangle is mirrored on write, so the result is exactly symmetric; its diagonal
        comes from the self recursion).
    arch : ntkfast.Arch (``ntkfast.serial(...)`` or ``ntkfast.presets``).
    kind : None (both kernels, returned as ``Kernels(nngp, ntk)``), 'nngp' or 'ntk' (one array).
    device : 'auto' (a usable GPU, else the CPU), 'cpu', 'cuda' or 'cuda:N' (GPU N); 'cuda' without a usable
        GPU is an error saying why (:mod:`ntkfast.device`).
    dtype : 'float32' (default) or 'float64': the arithmetic of the recursion and of the result; sums over
        positions are accumulated in float64 either way. The recursion works with about |x|^4, so float32 is
        accurate for rows whose largest |entry| is in [2^-24, 2^24] (``inputs.safe_range``). Outside it, a
        net without biases (``inputs.is_homogeneous``) is computed on rows rescaled by powers of two and its
        kernels scaled back exactly (K(a x, b y) = a b K(x, y)); any other net raises ValueError suggesting
        float64, before any work.
    tile : images per tile side. Default: the tile a resumed store was started with; else the largest tile
        within ``memory_budget`` (at most 4x the device default); else 256 on CPU, 2048 on GPU. Any N: the
        last tiles are ragged. For zarr outputs created here the tile is the chunk shape.
    progress : False (default), True, or a label (str, e.g. 'train Gram'): show a tqdm progress bar (on
        stderr) over pairs (pairs/s, ETA; tiles done in the postfix), labelled 'gram' or with the label.
    out : where the result goes (default None: new numpy arrays in memory).

        - a path ending in ``.npz``: computed in memory, then written with ``np.savez`` (keys ``nngp`` and/or
          ``ntk``) at the end; not resumable. The in-memory arrays are returned. The path is checked before
          any work;

        - a path ending in ``.zarr``: a zarr group with arrays ``nngp`` and/or ``ntk`` chunked (tile, tile),
          uncompressed, NaN where not yet computed; created if missing, resumed if it exists (see below);
        - a path ending in ``.npy`` (only with ``kind`` given): a numpy memmap (``np.load(path, mmap_mode='r')``
          reads it), with a sidecar ``<path>.ntkfast.json`` and markers ``<path>.ntkfast.done/``; resumable;
        - a zarr array, an ``np.memmap`` (resumable when it has a file), or any (N, M) array-like, when
          ``kind`` is given; ``Kernels`` of two of them when ``kind`` is None; or a zarr group. Zarr arrays
          must be chunked so that every tile covers whole chunks (tile a multiple of the chunk shape).

        Resume: a resumable store records arch, dtype, kinds, shapes, tile and a fingerprint of X and Y, and a
        marker per finished tile (written after the tile's data). Calling again with the same arguments skips
        marked tiles; the result is bitwise identical to an uninterrupted run. Other inputs, arch, dtype,
        kinds or tile give a ValueError naming what differs. See :mod:`ntkfast.store`.
    threads : CPU threads (default: OpenMP's default, all cores).
    memory_budget : None (default), bytes (int) or a string like '2GB', '512MiB': bounds the host memory of
        the computation (model in :mod:`ntkfast.memory`: inputs + self data + in-memory outputs + one tile in
        flight + per-thread CPU workspace) and sets the tile size. A budget that cannot hold even a one-image
        tile (or the given tile) raises MemoryError with the need and the budget, before any work.
    output : 'numpy' (default) or 'cupy': the type of in-memory results (cupy arrays on the current GPU;
        needs cupy, the ``gpu`` extra). Only with ``out=None``.
    layout : None (default), 'NHWC' or 'NCHW': the axis order of 4-d image inputs X and Y. None reads NHWC
        and refuses, before any work, a shape that looks channels-first such as (N, 1, 28, 28) or
        (N, 3, 32, 32) (it would be read as 1x28 images with 28 channels); 'NCHW' converts with
        ``np.moveaxis(X, 1, -1)``; 'NHWC' takes the shape as it is.

    Returns
    -------
    ``Kernels(nngp, ntk)`` of (N, M) arrays of ``dtype``, or one (N, M) array if ``kind`` is given: numpy
    arrays, or the store's arrays (zarr arrays, memmaps; ``out`` itself when it was an array).
    """
    xp = _output_module(output, out)
    npz = None
    if isinstance(out, (str, os.PathLike)) and os.fspath(out).endswith(".npz"):
        from ..storage.store import check_out_path
        npz = check_out_path(out, kind, "out")
        out = None
    job = prepare(X, Y, arch=arch, kind=kind, device=device, dtype=dtype, tile=tile, out=out, threads=threads,
                  memory_budget=memory_budget, progress=progress, layout=layout)
    job.run(progress=progress)
    res = job.result()
    if npz is not None:
        save_npz(npz, res, kind)
    if xp is None:
        return res
    return xp.asarray(res) if kind is not None else type(res)(*(xp.asarray(r) for r in res))


def save_npz(path, res, kind):
    """Write a Gram result (Kernels, or one array for ``kind``) to ``path`` with ``np.savez``."""
    arrays = {"nngp": np.asarray(res.nngp), "ntk": np.asarray(res.ntk)} if kind is None else {kind: np.asarray(res)}
    np.savez(path, **arrays)


def _output_module(output, out):
    """None for numpy results, the cupy module for output='cupy' (checked before any work)."""
    check_choice(output, "output", ("numpy", "cupy"))
    if output == "numpy":
        return None
    if out is not None:
        raise ValueError("output='cupy' returns new GPU arrays; it cannot be combined with out=")
    try:
        import cupy
    except ImportError as e:
        raise ImportError("output='cupy' needs cupy: pip install 'ntkfast[gpu]' (cupy-cuda13x)") from e
    return cupy


_META_ORDER = ("arch", "dtype", "kinds", "shape", "symmetric", "X", "Y", "tile")


@dataclass(eq=False)
class GramJob:
    """A prepared Gram computation (made by :func:`prepare`): checked inputs, chosen tile, opened store,
    pending tiles.

    Fields: ``arch``, ``kind``, ``X``, ``Y`` (None for a symmetric Gram), ``n``, ``m``, ``names`` (kernels),
    ``dtype``, ``device``, ``input_shape``, ``tile``, ``tiles`` (all, as [((a, b), ((i0, i1), (j0, j1)))]
    with tile-grid indices a, b), ``pending`` (those not marked done), ``store``
    (:class:`ntkfast.store.Store`), ``estimate`` (:class:`ntkfast.memory.MemoryEstimate`), ``threads``
    (0 = backend default), ``budget`` (bytes or None), ``scales`` (None, or power-of-two row exponents
    (ex, ey) of X and Y rescaled into float's safe range; X and Y are then the rescaled rows, and tiles are
    scaled back: see :func:`ntkfast.inputs.row_scales`).
    """

    arch: Arch
    kind: Optional[str]
    X: np.ndarray = field(repr=False)
    Y: Optional[np.ndarray] = field(repr=False)
    n: int
    m: int
    names: Tuple[str, ...]
    dtype: np.dtype
    device: str
    input_shape: Tuple[int, ...]
    tile: int
    tiles: list = field(repr=False)
    pending: list = field(repr=False)
    store: Store = field(repr=False)
    estimate: MemoryEstimate
    threads: int = 0
    budget: Optional[int] = None
    scales: Optional[tuple] = field(default=None, repr=False)

    @property
    def symmetric(self):
        return self.Y is None

    @staticmethod
    def pairs_of(bounds, symmetric):
        (i0, i1), (j0, j1) = bounds
        return (i1 - i0) * (i1 - i0 + 1) // 2 if symmetric and i0 == j0 else (i1 - i0) * (j1 - j0)

    @property
    def total_pairs(self):
        return self.n * (self.n + 1) // 2 if self.symmetric else self.n * self.m

    @property
    def pending_pairs(self):
        return sum(self.pairs_of(b, self.symmetric) for _, b in self.pending)

    def program(self):
        return compile_program(self.arch, self.input_shape)

    def self_data(self):
        from .. import _core
        prog = self.program()
        dev = D.core_name(self.device)
        sx = call(_core.self_data, prog, self.X, dev, self.threads)
        sy = sx if self.symmetric else call(_core.self_data, prog, self.Y, dev, self.threads)
        return sx, sy

    @property
    def complete(self):
        """True when every tile is already done (a finished store opened again)."""
        return not self.pending

    def run(self, progress=False):
        """Compute and store every pending tile in this process; returns the number of tiles computed.

        ``progress``: False, True or a label (str) for the bar. On KeyboardInterrupt with a resumable store, the
        exception gets a note saying that finished tiles are kept and that the same call resumes.
        """
        if not self.pending:
            if progress:
                print(f"{label_of(progress, 'gram')}: already complete ({len(self.tiles)} tiles"
                      f"{' in ' + str(self.store.location) if self.store.location else ''}); nothing to compute",
                      file=sys.stderr)
            return 0
        from .. import _core
        prog = self.program()
        Yv = self.X if self.symmetric else self.Y
        bar = progress_bar(self, progress) if progress else None
        count = 0
        try:
            sx, sy = self.self_data()
            # One session for all tiles: the CUDA backend uploads program, inputs and self data once.
            session = _core.GramSession(prog, self.X, self.Y, sx, None if self.symmetric else sy, self.device,
                                        self.threads)
            for (a, b), bounds in list(self.pending):
                res = compute_tile(prog, self.X, Yv, sx, sy, bounds, self.symmetric, self.names, self.device,
                                   self.threads, self.scales, session,
                                   progress=None if bar is None else bar.tile_progress)
                self.store.write_tile(bounds, res, mirror=self.symmetric and a != b)
                self.store.mark(a, b, bounds)
                del res                       # one tile in flight: free it before the next is computed
                count += 1
                if bar is not None:
                    bar.tile_done(self.pairs_of(bounds, self.symmetric))
        except KeyboardInterrupt as e:
            if self.store.resumable and hasattr(e, "add_note"):
                e.add_note(self.interrupt_note(count))
            raise
        finally:
            if bar is not None:
                bar.close()
        self.pending = []
        return count

    def interrupt_note(self, finished_now=0):
        """What an interrupted run leaves behind (for messages)."""
        done = len(self.tiles) - len(self.pending) + finished_now
        return (f"ntkfast: interrupted; the {done} of {len(self.tiles)} tiles finished are kept in "
                f"{self.store.location}; the same call (or command) resumes from them")

    def calibrate(self, target_s=0.25, max_side=None):
        """Measured pairs/s of this job's program on a few of its own pairs (rectangular blocks of X against
        Y, grown from 16x16 until one takes ``target_s`` seconds); the results are discarded."""
        from .. import _core
        prog = self.program()
        Yv = self.X if self.symmetric else self.Y
        cap = min(self.n, self.m, max_side or self.tile)
        side = min(16, cap)
        while True:
            xa, yb = self.X[:side], Yv[:side]
            dev = D.core_name(self.device)
            sx = _core.self_data(prog, xa, dev, self.threads)
            sy = _core.self_data(prog, yb, dev, self.threads)
            t1 = time.perf_counter()
            _core.gram_tile(prog, xa, yb, sx, sy, False, "nngp" in self.names, "ntk" in self.names, dev,
                            self.threads)
            dt = time.perf_counter() - t1
            if dt >= target_s or side >= cap:
                return side * side / max(dt, 1e-9), side * side
            side = min(cap, side * 2 if dt < target_s / 8 else int(side * 1.5) + 1)

    def estimate_seconds(self, target_s=0.25):
        """(seconds, pairs/s, calibration pairs): the time the pending pairs will take at a calibrated rate."""
        rate, cal = self.calibrate(target_s)
        return self.pending_pairs / rate, rate, cal

    def result(self):
        return self.store.result(self.kind)


def progress_bar(job, progress=True):
    """A :class:`ntkfast.progress.PairProgress` over the job's pairs, labelled by ``progress`` (a str) or
    'gram'."""
    return PairProgress(job.total_pairs, job.total_pairs - job.pending_pairs, len(job.tiles),
                        len(job.tiles) - len(job.pending), desc=label_of(progress, "gram"))


def compute_tile(prog, X, Yv, sx, sy, bounds, symmetric, names, device, threads, scales=None, session=None,
                 progress=None):
    """One tile's results {name: (i1-i0, j1-j0) array}; a diagonal tile of a symmetric Gram is symmetric.

    ``scales``: None, or (ex, ey) power-of-two exponents of the rows of X and Y (see
    :func:`ntkfast.inputs.row_scales`): the kernels of rescaled rows are scaled back by 2^-(ex_i + ey_j).
    ``session``: a ``_core.GramSession`` of these inputs, which computes the tile against what it holds.
    ``progress``: None or a callable given the pairs done so far in this tile. Ctrl-C stops the tile within a
    few pairs (:mod:`ntkfast.kernel.interruptible`)."""
    from .. import _core
    (i0, i1), (j0, j1) = bounds
    diag = symmetric and i0 == j0
    if session is not None:
        res = call(session.tile, i0, i1, j0, j1, "nngp" in names, "ntk" in names, progress=progress)
    else:
        res = call(_core.gram_tile, prog, X[i0:i1], Yv[j0:j1], sx[i0:i1], sy[j0:j1], diag, "nngp" in names,
                   "ntk" in names, D.core_name(device), threads, progress=progress)
    res = {k: r for k, r in zip(("nngp", "ntk"), res) if r is not None and k in names}
    check_finite(res, f"tile rows {i0}:{i1}, columns {j0}:{j1}")
    if scales is not None:
        ex, ey = scales
        res = {k: scale_back(r, ex[i0:i1, None], ey[None, j0:j1]) for k, r in res.items()}
    return res


def prepare(X, Y=None, *, arch, kind=None, device="auto", dtype="float32", tile=None, out=None, threads=None,
            memory_budget=None, progress=False, resolve=True, layout=None):
    """Check everything, choose the tile, open or create the output store and find the pending tiles.

    Same arguments as :func:`gram`; ``resolve=False`` keeps ``device`` as given (for tasks that resolve
    'auto' where they run; the default tile is then the CPU's unless device='cuda'). Raises (TypeError, ValueError, MemoryError) before any kernel work.
    Returns a :class:`GramJob`; ``job.run()`` computes it here, :mod:`ntkfast.distributed` on a Dask cluster.
    """
    from ..storage import memory as M
    from ..storage.store import FORMAT, StoreMismatchError, check_out_path, open_store
    check_kind(kind)
    dt = check_dtype(dtype)
    tile = _check_tile(tile)
    check_progress(progress)
    layout = check_layout(layout)
    if threads is not None:
        check_int(threads, "threads", 1, expected="a positive int or None")
    budget = None if memory_budget is None else M.parse_bytes(memory_budget, "memory_budget")
    arch = check_arch(arch)
    # one pass over each input: NaN/Inf, overflow of the conversion and the row magnitudes (read_inputs)
    X, Y, plan, x_max, y_max = read_inputs(arch, X, Y, dtype=dt, layout=layout)
    dev = D.backend(device) if resolve else D.check(device)
    default_tile = DEFAULT_TILE["cuda" if D.is_cuda(dev) else "cpu"]
    input_shape = tuple(plan.input_shape)
    prog = compile_program(arch, input_shape)            # the plan's program: compiled once, by read_inputs
    sym = Y is None
    n = len(X)
    m = n if sym else len(Y)
    names = ("nngp", "ntk") if kind is None else (kind,)
    if isinstance(out, (str, os.PathLike)):
        check_out_path(out, kind, "out")
    store, create = open_store(out, kind, (n, m), dt)
    meta = store.read_meta()
    # the inputs' identity, hashed only for a store that records it (before any rescaling below)
    fp_x, fp_y = (fingerprint(X), fingerprint(Y)) if store.records_meta else (None, None)
    # magnitudes outside dtype's safe range: rescale rows exactly (homogeneous nets) or refuse
    X, Y, scales = rescale_rows(arch, X, Y, dt, x_max, y_max)

    # tile: the store's, the caller's, the budget's or the default; zarr arrays need whole chunks per tile
    chunks = store.existing_chunks
    multiple = int(np.lcm(*chunks)) if chunks else 1
    stored_tile = meta.get("tile") if meta else None
    if tile is not None and stored_tile is not None and tile != stored_tile:
        raise StoreMismatchError(store.location, [("tile", stored_tile, tile)])
    if tile is None and stored_tile is not None:
        tile = int(stored_tile)
    # the memory model: everything but the tile computed once (per-thread workspace from the C++ engine)
    model = M.MemoryModel(input_shape, n, None if sym else m, program=prog, kinds=len(names), itemsize=dt.itemsize,
                          threads=threads or M.default_threads(), store=store.kind)
    if tile is None:
        if budget is not None:
            cap = max(min(4 * default_tile, max(n, m)), multiple)
            tile = model.choose_tile(budget, cap, multiple)
            if tile is None:
                e1 = model.at(multiple)
                raise MemoryError(_budget_message(budget, e1.total, e1, store.kind, multiple))
        else:
            tile = max(multiple, default_tile // multiple * multiple)
    if chunks and (tile % chunks[0] or tile % chunks[1]):
        raise ValueError(f"tile={tile} must be a multiple of the zarr chunk shape {chunks} of out, so that tiles "
                         "never share a chunk")
    estimate = model.at(tile)
    if budget is not None and estimate.total > budget:
        raise MemoryError(_budget_message(budget, estimate.total, estimate, store.kind, tile))

    new_meta = None
    if store.records_meta:
        new_meta = {"format": FORMAT, "arch": repr(arch), "dtype": dt.name, "kinds": list(names), "shape": [n, m],
                    "symmetric": sym, "tile": tile, "X": fp_x, "Y": fp_y,
                    "layout": "full matrix; symmetric: tiles with j0 >= i0 computed, lower triangle mirrored on write"}
        if meta is not None:
            diff = [k for k in _META_ORDER if meta.get(k) != new_meta[k]]
            if meta.get("format") != FORMAT:
                diff.insert(0, "format")
            if diff:
                raise StoreMismatchError(store.location, [(k, meta.get(k), new_meta.get(k)) for k in diff])
    store = create(tile)
    if new_meta is not None and meta is None:
        store.write_meta(new_meta)
    all_tiles = [((i0 // tile, j0 // tile), ((i0, i1), (j0, j1))) for (i0, i1), (j0, j1) in tiles(n, m, tile, sym)]
    if meta is not None:
        store.migrate_markers()
    done = store.done() if meta is not None else set()
    pending = [t for t in all_tiles if t[0] not in done]
    return GramJob(arch=arch, kind=kind, X=X, Y=Y, n=n, m=m, names=names, dtype=dt, device=dev,
                   input_shape=input_shape, tile=tile, tiles=all_tiles, pending=pending, store=store,
                   estimate=estimate, threads=int(threads or 0), budget=budget, scales=scales)


def _budget_message(budget, need, e, store_kind, tile):
    from ..storage.memory import format_bytes as f
    parts = (f"inputs {f(e.inputs)}, self data {f(e.self_data)}, outputs in memory {f(e.outputs)}, "
             f"one {tile}-image tile {f(e.per_tile)}, {e.threads} thread(s) x {f(e.per_thread)}")
    hint = " or write to a store (out='gram.zarr')" if store_kind == "array" and e.outputs else ""
    return (f"memory_budget={f(budget)} is too small: the computation needs {f(need)} ({parts}); raise the "
            f"budget{hint}")

