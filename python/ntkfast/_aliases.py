"""The short module paths of the public API: ``ntkfast.krr`` is ``ntkfast.learning.krr``, and so on.

The package is laid out by part (``kernel/``, ``storage/``, ``learning/``, ``analyses/``, ``cli/``), while
users, the README and the docs name the modules by their short paths: ``nf.krr.solve``, ``from
ntkfast.predict import GradientFlow``, ``import ntkfast.distributed as nd``. A meta path finder maps each
short path (and anything below it) to the module itself, the same object and not a copy, imported only
when it is first asked for. ``ntkfast.gram`` is the function, not a module: the tiled computation lives in
:mod:`ntkfast.kernel.tiled`.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: short name -> the module's place in the tree (both below ``ntkfast``)
ALIASES = {
    "arch": "kernel.arch", "presets": "kernel.presets", "inputs": "kernel.inputs", "reference": "kernel.reference",
    "stax": "kernel.stax",
    "store": "storage.store", "memory": "storage.memory", "distributed": "storage.distributed",
    "krr": "learning.krr", "krr_stream": "learning.krr_stream", "estimators": "learning.estimators",
    "predict": "learning.predict",
    "stability": "analyses.stability", "spectrum": "analyses.spectrum", "smoothness": "analyses.smoothness",
    "dynamics": "analyses.dynamics", "taylor": "analyses.taylor", "plots": "analyses.plots",
}

_PACKAGE = __name__.rpartition(".")[0]


def target(fullname):
    """The real module name behind a short path such as 'ntkfast.krr' (or 'ntkfast.taylor.model'), or None."""
    head, _, rest = fullname.partition(".")
    if head != _PACKAGE:
        return None
    name, _, below = rest.partition(".")
    if name not in ALIASES:
        return None
    return f"{_PACKAGE}.{ALIASES[name]}" + (f".{below}" if below else "")


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a short path as the module it names (see the module docstring)."""

    def __init__(self):
        self._specs = {}

    def find_spec(self, fullname, path=None, target_module=None):
        if target(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(target(spec.name))
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module):
        # module_from_spec has just given the module the alias's spec: give it its own back
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)


def install():
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
