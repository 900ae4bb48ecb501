"""The kernel core: what a Gram matrix of an architecture is, and its computation.

- :mod:`~ntkfast.kernel.arch`: layers, ``serial``/``parallel``, the structure checks and the text form the
  compiled backends read;
- :mod:`~ntkfast.kernel.presets`: named architectures (``cntk``, ``myrtle``, ``bietti_mairal``, ``fc``, ...);
- :mod:`~ntkfast.kernel.inputs`: checks and conversions of input arrays, ``Kernels``, row scaling;
- :mod:`~ntkfast.kernel.tiled`: ``gram`` on the compiled backends, in tiles, to any output store;
- :mod:`~ntkfast.kernel.paired`: ``gram_diag`` (K(x_i, x_i)) and ``gram_pairs`` (K(x_i, y_i)) without the Gram;
- :mod:`~ntkfast.kernel.interruptible`: backend calls that Ctrl-C stops within a tile, with live progress;
- :mod:`~ntkfast.kernel.reference`: the float64 numpy reference that defines correctness;
- :mod:`~ntkfast.kernel.stax`: a neural-tangents ``stax`` front end on the same kernels;
- :mod:`~ntkfast.kernel.bench`: the reference workloads and their timing.
"""
