"""Tiled Gram matrices on the compiled backends.

``gram(X)`` computes only tiles on or above the diagonal and mirrors them (exactly symmetric); the
per-image self data (the diagonals that feed every ReLU) is computed once per image, not once per pair.
Any N works: the last tile row/column is simply smaller.

Tiles go to numpy arrays, memmaps or zarr stores (:mod:`ntkfast.store`), finished tiles are marked so that an
interrupted run resumes without recomputing them, ``memory_budget`` sets the tile from the memory model of
:mod:`ntkfast.memory`, and :mod:`ntkfast.distributed` runs the same tiles as Dask tasks. See docs/scale.md.
"""
from __future__ import annotations

import numbers

import numpy as np

from .inputs import check_arch, check_dtype, check_inputs, check_kind
from . import config

__all__ = ["gram", "prepare", "GramJob", "compile_program", "resolve_device", "tiles"]

DEFAULT_TILE = {"cpu": 256, "cuda": 2048}


def compile_program(arch, input_shape):
    """The compiled program of ``arch`` for one input's shape (cached; see :meth:`ntkfast.Arch.plan`)."""
    return check_arch(arch).plan(input_shape).program


def resolve_device(device):
    """'auto' -> 'cuda' when a GPU is usable with this build, else 'cpu'; 'cuda' without one raises
    RuntimeError with the reason."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda'; got {device!r}")
    if device == "cpu":
        return "cpu"
    usable, reason = config.cuda_usable()
    if device == "cuda" and not usable:
        raise RuntimeError(f"device='cuda' requested but no GPU is usable: {reason}")
    return "cuda" if usable else "cpu"


def _check_tile(tile):
    if tile is None:
        return None
    if isinstance(tile, bool) or not isinstance(tile, numbers.Integral) or tile < 1:
        raise ValueError(f"tile must be a positive int (images per tile side) or None; got {tile!r}")
    return int(tile)


def tiles(n, m, tile, symmetric):
    """Tile index ranges ((i0, i1), (j0, j1)) covering an n x m Gram; with ``symmetric`` only j0 >= i0."""
    rows = [(i, min(i + tile, n)) for i in range(0, n, tile)]
    cols = [(j, min(j + tile, m)) for j in range(0, m, tile)]
    return [(r, c) for a, r in enumerate(rows) for b, c in enumerate(cols) if not symmetric or b >= a]


def gram(X, Y=None, *, arch, kind=None, device="auto", dtype="float32", tile=None, progress=False, out=None,
         threads=None, memory_budget=None, output="numpy"):
    """NNGP/CKN and NTK Gram matrices of ``arch`` between X and Y (or X and itself).

    Parameters
    ----------
    X : array (N, H, W, C) of images (NHWC) for convolutional nets, or (N, D) for fully-connected nets;
        numpy, or anything exposing ``__array__`` / ``__cuda_array_interface__`` (copied to the host).
    Y : array (M, ...) like X, or None for the symmetric Gram of X (only tiles on or above the diagonal are
        computed; the lower triangle is mirrored on write, so the result is exactly symmetric; its diagonal
        comes from the self recursion).
    arch : ntkfast.Arch (``ntkfast.serial(...)`` or ``ntkfast.presets``).
    kind : None (both kernels, returned as ``Kernels(nngp, ntk)``), 'nngp' or 'ntk' (one array).
    device : 'auto' (a usable GPU, else the CPU), 'cpu' or 'cuda' (an error saying why if none is usable).
    dtype : 'float32' (default) or 'float64': the arithmetic of the recursion and of the result; sums over
        positions are accumulated in float64 either way.
    tile : images per tile side. Default: the tile a resumed store was started with; else the largest tile
        within ``memory_budget`` (at most 4x the device default); else 256 on CPU, 2048 on GPU. Any N: the
        last tiles are ragged. For zarr outputs created here the tile is the chunk shape.
    progress : show a tqdm progress bar over pairs (pairs/s, ETA; tiles done in the postfix).
    out : where the result goes (default None: new numpy arrays in memory).

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

    Returns
    -------
    ``Kernels(nngp, ntk)`` of (N, M) arrays of ``dtype``, or one (N, M) array if ``kind`` is given: numpy
    arrays, or the store's arrays (zarr arrays, memmaps; ``out`` itself when it was an array).
    """
    xp = _output_module(output, out)
    job = prepare(X, Y, arch=arch, kind=kind, device=device, dtype=dtype, tile=tile, out=out, threads=threads,
                  memory_budget=memory_budget, progress=progress)
    job.run(progress=progress)
    res = job.result()
    if xp is None:
        return res
    return xp.asarray(res) if kind is not None else type(res)(*(xp.asarray(r) for r in res))


def _output_module(output, out):
    """None for numpy results, the cupy module for output='cupy' (checked before any work)."""
    if output not in ("numpy", "cupy"):
        raise ValueError(f"output must be 'numpy' or 'cupy'; got {output!r}")
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


def _short(k, v):
    if k != "arch" and isinstance(v, str) and len(v) > 60:
        return v[:57] + "..."
    return v


class GramJob:
    """A prepared Gram computation: checked inputs, chosen tile, opened store, pending tiles.

    Attributes: ``X``, ``Y`` (None for a symmetric Gram), ``n``, ``m``, ``names`` (kernels), ``dtype``,
    ``device``, ``tile``, ``tiles`` (all, as [((a, b), ((i0, i1), (j0, j1)))] with tile-grid indices a, b),
    ``pending`` (those not marked done), ``store`` (:class:`ntkfast.store.Store`), ``estimate``
    (:class:`ntkfast.memory.MemoryEstimate`), ``threads`` (0 = backend default), ``budget`` (bytes or None).
    """

    def __init__(self, **kw):
        self.__dict__.update(kw)

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
        from . import _core
        prog = self.program()
        sx = _core.self_data(prog, self.X, self.device, self.threads)
        sy = sx if self.symmetric else _core.self_data(prog, self.Y, self.device, self.threads)
        return sx, sy

    def run(self, progress=False):
        """Compute and store every pending tile in this process; returns the number of tiles computed."""
        if not self.pending:
            return 0
        from . import _core
        prog = self.program()
        sx, sy = self.self_data()
        Yv = self.X if self.symmetric else self.Y
        # One session for all tiles: the CUDA backend uploads program, inputs and self data once.
        session = _core.GramSession(prog, self.X, self.Y, sx, None if self.symmetric else sy, self.device,
                                    self.threads)
        bar = _progress_bar(self) if progress else None
        count = 0
        try:
            for (a, b), bounds in list(self.pending):
                res = _compute_tile(prog, self.X, Yv, sx, sy, bounds, self.symmetric, self.names, self.device,
                                    self.threads, session)
                self.store.write_tile(bounds, res, mirror=self.symmetric and a != b)
                self.store.mark(a, b, bounds)
                del res                       # one tile in flight: free it before the next is computed
                count += 1
                if bar is not None:
                    bar.update(self.pairs_of(bounds, self.symmetric))
                    bar.set_postfix_str(f"tiles {len(self.tiles) - len(self.pending) + count}/{len(self.tiles)}",
                                        refresh=False)
        finally:
            if bar is not None:
                bar.close()
        self.pending = []
        return count

    def result(self):
        return self.store.result(self.kind)


def _progress_bar(job):
    from tqdm.auto import tqdm
    done = job.total_pairs - job.pending_pairs
    bar = tqdm(total=job.total_pairs, initial=done, unit="pair", unit_scale=True, desc="gram", smoothing=0.1,
               dynamic_ncols=True)
    bar.set_postfix_str(f"tiles {len(job.tiles) - len(job.pending)}/{len(job.tiles)}")
    return bar


def _compute_tile(prog, X, Yv, sx, sy, bounds, symmetric, names, device, threads, session=None):
    """One tile's results {name: (i1-i0, j1-j0) array}; a diagonal tile of a symmetric Gram is symmetric.
    With a ``_core.GramSession`` of these inputs the tile is computed against what the session holds."""
    from . import _core
    (i0, i1), (j0, j1) = bounds
    diag = symmetric and i0 == j0
    if session is not None:
        res = session.tile(i0, i1, j0, j1, "nngp" in names, "ntk" in names)
        return {k: r for k, r in zip(("nngp", "ntk"), res) if r is not None and k in names}
    res = _core.gram_tile(prog, X[i0:i1], Yv[j0:j1], sx[i0:i1], sy[j0:j1], diag, "nngp" in names, "ntk" in names,
                          device, threads)
    return {k: r for k, r in zip(("nngp", "ntk"), res) if r is not None and k in names}


def prepare(X, Y=None, *, arch, kind=None, device="auto", dtype="float32", tile=None, out=None, threads=None,
            memory_budget=None, progress=False, resolve=True):
    """Check everything, choose the tile, open or create the output store and find the pending tiles.

    Same arguments as :func:`gram`; ``resolve=False`` keeps ``device`` as given (for tasks that resolve
    'auto' where they run; the default tile is then the CPU's unless device='cuda'). Raises (TypeError, ValueError, MemoryError) before any kernel work.
    Returns a :class:`GramJob`; ``job.run()`` computes it here, :mod:`ntkfast.distributed` on a Dask cluster.
    """
    from . import memory as M
    from .store import open_store, fingerprint, FORMAT
    check_kind(kind)
    dt = check_dtype(dtype)
    tile = _check_tile(tile)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False; got {progress!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1):
        raise ValueError(f"threads must be a positive int or None; got {threads!r}")
    budget = None if memory_budget is None else M.parse_bytes(memory_budget, "memory_budget")
    X, Y, plan = check_inputs(arch, X, Y, dtype=dt)
    for name, a in (("X", X), ("Y", Y)):
        if a is not None and not np.isfinite(a).all():
            raise ValueError(f"{name} overflows {dt.name}: values beyond its range became Inf")
    if resolve:
        dev = resolve_device(device)
    elif device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda'; got {device!r}")
    else:
        dev = device
    input_shape = tuple(plan.input_shape)
    prog = compile_program(arch, input_shape)
    sym = Y is None
    n = len(X)
    m = n if sym else len(Y)
    names = ("nngp", "ntk") if kind is None else (kind,)
    store, create = open_store(out, kind, (n, m), dt)
    meta = store.read_meta()

    # tile: the store's, the caller's, the budget's or the default; zarr arrays need whole chunks per tile
    chunks = store.chunks if store.kind == "zarr" and store._arrays else None
    multiple = int(np.lcm(*chunks)) if chunks else 1
    stored_tile = meta.get("tile") if meta else None
    if tile is not None and stored_tile is not None and tile != stored_tile:
        raise ValueError(f"tile={tile} differs from the tile {stored_tile} that the store {store.location!r} was "
                         f"started with; pass tile=None or tile={stored_tile} to resume")
    if tile is None and stored_tile is not None:
        tile = int(stored_tile)
    kinds, isz = len(names), dt.itemsize
    nthreads_model = threads or M.default_threads()

    def est(t):
        return M.estimate(arch, input_shape, n, None if sym else m, program=prog, kinds=kinds, itemsize=isz,
                          tile=t, threads=nthreads_model, store=store.kind)
    if tile is None:
        if budget is not None:
            e0 = est(0)
            fixed = e0.total - e0.per_tile
            cap = max(min(4 * DEFAULT_TILE.get(dev, DEFAULT_TILE['cpu']), max(n, m)), multiple)
            tile = M.choose_tile(budget, fixed, kinds, isz, store.kind, cap, multiple, prog)
            if tile is None:
                e1 = est(multiple)
                raise MemoryError(_budget_message(budget, e1.total, e1, store.kind, multiple))
        else:
            tile = max(multiple, DEFAULT_TILE.get(dev, DEFAULT_TILE['cpu']) // multiple * multiple)
    if chunks and (tile % chunks[0] or tile % chunks[1]):
        raise ValueError(f"tile={tile} must be a multiple of the zarr chunk shape {chunks} of out, so that tiles "
                         "never share a chunk")
    estimate = est(tile)
    if budget is not None and estimate.total > budget:
        raise MemoryError(_budget_message(budget, estimate.total, estimate, store.kind, tile))

    new_meta = None
    if store.resumable or store.kind == "zarr":
        new_meta = {"format": FORMAT, "arch": repr(arch), "dtype": dt.name, "kinds": list(names), "shape": [n, m],
                    "symmetric": sym, "tile": tile, "X": fingerprint(X), "Y": fingerprint(Y),
                    "layout": "full matrix; symmetric: tiles with j0 >= i0 computed, lower triangle mirrored on write"}
        if meta is not None:
            diff = [k for k in _META_ORDER if meta.get(k) != new_meta[k]]
            if meta.get("format") != FORMAT:
                diff.insert(0, "format")
            if diff:
                what = "; ".join(f"{k}: stored {_short(k, meta.get(k))!r}, now {_short(k, new_meta.get(k))!r}"
                                 for k in diff)
                raise ValueError(f"out={store.location!r} was started with a different {', '.join(diff)}; refusing "
                                 f"to resume ({what}). Remove the store or pass another out")
    store = create(tile)
    if new_meta is not None and meta is None:
        store.write_meta(new_meta)
    all_tiles = [((i0 // tile, j0 // tile), ((i0, i1), (j0, j1))) for (i0, i1), (j0, j1) in tiles(n, m, tile, sym)]
    done = store.done() if meta is not None else set()
    pending = [t for t in all_tiles if t[0] not in done]
    return GramJob(arch=arch, kind=kind, X=X, Y=Y, n=n, m=m, names=names, dtype=dt, device=dev,
                   input_shape=input_shape, tile=tile, tiles=all_tiles, pending=pending, store=store,
                   estimate=estimate, threads=int(threads or 0), budget=budget)


def _budget_message(budget, need, e, store_kind, tile):
    from .memory import format_bytes as f
    parts = (f"inputs {f(e.inputs)}, self data {f(e.self_data)}, outputs in memory {f(e.outputs)}, "
             f"one {tile}-image tile {f(e.per_tile)}, {e.threads} thread(s) x {f(e.per_thread)}")
    hint = " or write to a store (out='gram.zarr')" if store_kind == "array" and e.outputs else ""
    return (f"memory_budget={f(budget)} is too small: the computation needs {f(need)} ({parts}); raise the "
            f"budget{hint}")

