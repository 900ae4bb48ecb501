"""Where the tiles of a Gram go, and how many machines compute them.

- :mod:`~ntkfast.storage.store`: in-memory arrays, numpy memmaps and zarr stores, with resume;
- :mod:`~ntkfast.storage.memory`: the host-memory model behind ``memory_budget``;
- :mod:`~ntkfast.storage.distributed`: the tiles as Dask tasks.
"""
