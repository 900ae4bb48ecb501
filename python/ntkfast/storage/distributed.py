"""Gram matrices as Dask tasks: one task per tile on a ``distributed.Client``, writing to a shared store.

>>> from distributed import Client, LocalCluster
>>> import ntkfast.distributed as nd
>>> with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
...     k = nd.gram(X, arch=arch, client=client, out="gram.zarr")

The calling process (the driver) checks the arguments, chooses the tile, creates or reopens the store and
finds the tiles not yet marked done, exactly as :func:`ntkfast.gram` does (:func:`ntkfast.gram.prepare`).
The inputs are scattered to the workers once; one task computes the per-image self data; then each pending
tile is a task that computes the tile, writes it (and its mirror) to the store and writes the tile's
completion marker. Dask schedules, retries and balances the tasks: there is no scheduler of our own.

The store must be reachable by every worker at the same path: a ``.zarr`` path (or a zarr array/group on a
LocalStore) on a filesystem shared by the workers, or on the local disk for a LocalCluster; a ``.npy``
memmap works on one host. Markers and resume are those of :mod:`ntkfast.store`, so an interrupted run
resumes with the distributed or the single-process path alike, and both give bitwise identical results
on the same device type.

Devices: ``device`` is resolved on each worker ('auto' takes that worker's GPU when usable). On a multi-GPU
host, run one worker per GPU (e.g. dask-cuda's ``LocalCUDACluster``) and pass device='cuda'. Each task uses
``threads`` CPU threads (default 1): give a CPU cluster one single-threaded worker per core, or workers with
several threads each (then several tiles run at once per worker).
"""
from __future__ import annotations

import time
import uuid

from .. import device as D
from ..kernel import tiled as _tiled
from ..validation import check_int

__all__ = ["gram", "run"]


def _self_task(arch, input_shape, X, device, threads):
    from .. import _core
    prog = _tiled.compile_program(arch, input_shape)
    return _core.self_data(prog, X, D.core_name(D.backend(device)), threads)


def _tile_task(arch, input_shape, X, Y, sx, sy, store, ab, bounds, symmetric, names, device, threads, scales=None):
    t0 = time.perf_counter()
    prog = _tiled.compile_program(arch, input_shape)
    Yv = X if Y is None else Y
    res = _tiled.compute_tile(prog, X, Yv, sx, sy, bounds, symmetric, names, D.backend(device),
                              threads, scales)
    store.write_tile(bounds, res, mirror=symmetric and ab[0] != ab[1])
    store.mark(ab[0], ab[1], bounds)
    return ab, time.perf_counter() - t0


def gram(X, Y=None, *, arch, client, out, kind=None, device="auto", dtype="float32", tile=None, threads=1,
         memory_budget=None, progress=False, layout=None):
    """:func:`ntkfast.gram` with each tile a task on the Dask cluster of ``client``.

    Parameters
    ----------
    X, Y, arch, kind, dtype, tile, progress, layout : as :func:`ntkfast.gram`.
    client : ``distributed.Client`` connected to the cluster (a LocalCluster, or a scheduler's address).
    out : the store every worker writes to: a path ending in ``.zarr`` (created or resumed), a zarr array
        (``kind`` given), ``Kernels`` of zarr arrays or a zarr group, on a LocalStore whose path every worker
        sees; or a ``.npy`` path or file-backed memmap on a single host. In-memory arrays are refused.
    device : 'auto' (default; resolved on each worker), 'cpu', 'cuda' or 'cuda:N'.
    threads : CPU threads per task (default 1).
    memory_budget : None, bytes or a string like '2GB': the host memory of *each worker* (it holds the
        inputs, their self data, and one tile per worker thread); sets the tile as in :func:`ntkfast.gram`.

    Returns
    -------
    The store's arrays: ``Kernels(nngp, ntk)`` of zarr arrays / memmaps, or one array when ``kind`` is given.
    """
    if client is None or not hasattr(client, "submit") or not hasattr(client, "scatter"):
        raise TypeError(f"client must be a distributed.Client; got {type(client).__name__}")
    if out is None:
        raise ValueError("out must be a store the workers can write to (a path ending in .zarr, or a zarr array); "
                         "got None")
    threads = check_int(threads, "threads", 1, expected="a positive int (CPU threads per task)")
    job = _tiled.prepare(X, Y, arch=arch, kind=kind, device=device, dtype=dtype, tile=tile, out=out, threads=threads,
                        memory_budget=memory_budget, progress=progress, resolve=False,
                        layout=layout)
    run(job, client, progress=progress)
    return job.result()


def run(job, client, *, progress=False):
    """Compute the pending tiles of a prepared :class:`ntkfast.gram.GramJob` (``prepare(..., resolve=False)``)
    as tasks on ``client``'s cluster; returns the number of tiles computed."""
    if client is None or not hasattr(client, "submit") or not hasattr(client, "scatter"):
        raise TypeError(f"client must be a distributed.Client; got {type(client).__name__}")
    if not job.store.resumable:
        raise ValueError("out must be a store on a filesystem the workers share: a path ending in .zarr (or .npy), "
                         f"or a zarr array on a LocalStore, or a file-backed memmap; got a {job.store.kind} store")
    if not job.pending:
        return 0
    threads = max(job.threads, 1)
    try:
        from distributed import as_completed
    except ImportError as e:
        raise ImportError(f"ntkfast.distributed needs dask.distributed ({e}); install it: pip install "
                          "'dask[distributed]' (the 'scale' extra: pip install 'ntkfast[scale]')") from None
    token = uuid.uuid4().hex[:8]
    Xf = client.scatter(job.X, broadcast=True)
    Yf = None if job.symmetric else client.scatter(job.Y, broadcast=True)
    sxf = client.submit(_self_task, job.arch, job.input_shape, Xf, job.device, threads, pure=False,
                        key=f"ntkfast-self-x-{token}")
    syf = sxf if job.symmetric else client.submit(_self_task, job.arch, job.input_shape, Yf, job.device, threads,
                                                  pure=False, key=f"ntkfast-self-y-{token}")
    futures = [client.submit(_tile_task, job.arch, job.input_shape, Xf, Yf, sxf, syf, job.store, ab, bounds,
                             job.symmetric, job.names, job.device, threads, job.scales, pure=False,
                             key=f"ntkfast-tile-{ab[0]}-{ab[1]}-{token}")
               for ab, bounds in job.pending]
    bounds_of = dict(job.pending)
    bar = _tiled.progress_bar(job, progress) if progress else None
    finished = 0
    try:
        for fut in as_completed(futures):
            ab, _ = fut.result()          # re-raises a task's error here
            finished += 1
            if bar is not None:
                bar.tile_done(job.pairs_of(bounds_of[tuple(ab)], job.symmetric))
    except BaseException as e:
        client.cancel(futures)
        if isinstance(e, KeyboardInterrupt) and hasattr(e, "add_note"):
            e.add_note(job.interrupt_note(finished))
        raise
    finally:
        if bar is not None:
            bar.close()
    n_done = len(job.pending)
    job.pending = []
    return n_done
