"""The package's layout is its architecture (issue 15): library modules carry no command line and no plots,
the short module paths of the public API keep working, and ``ntkfast.gram`` is the function."""
import json
import os
import subprocess
import sys

import ntkfast as nf

PACKAGE_DIRS = [p for p in nf.__path__ if os.path.isdir(p)]

# The command line and the figures: the only modules that may import argparse and matplotlib.
FRONT_ENDS = ("ntkfast.cli", "ntkfast.__main__", "ntkfast.analyses.plots")


def _modules():
    """Every Python module of the package, by dotted name (found on disk: listing does not import)."""
    names = set()
    for root in PACKAGE_DIRS:
        for folder, _, files in os.walk(root):
            rel = os.path.relpath(folder, root)
            pkg = "ntkfast" if rel == "." else "ntkfast." + rel.replace(os.sep, ".")
            if "__pycache__" in pkg:
                continue
            for f in files:
                if f.endswith(".py"):
                    names.add(pkg if f == "__init__.py" else f"{pkg}.{f[:-3]}")
    return sorted(names)


def _library_modules():
    return [m for m in _modules() if not any(m == f or m.startswith(f + ".") for f in FRONT_ENDS)]


_PROBE = r"""
import builtins, json, sys
importers = {}
real_import = builtins.__import__

def spy(name, globals=None, locals=None, fromlist=(), level=0):
    top = name.partition(".")[0]
    if level == 0 and top in ("argparse", "matplotlib"):
        importers.setdefault(top, set()).add((globals or {}).get("__name__", "?"))
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = spy
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
builtins.__import__ = real_import
print("RESULT " + json.dumps({"importers": {k: sorted(v) for k, v in importers.items()},
                              "matplotlib_loaded": "matplotlib" in sys.modules}))
"""


def test_library_modules_import_neither_argparse_nor_matplotlib():
    """Import every library module in a fresh interpreter: none of them imports argparse or matplotlib at
    import time (dependencies may: scikit-learn imports argparse itself), and matplotlib is not loaded."""
    mods = _library_modules()
    assert "ntkfast.learning.krr" in mods and "ntkfast.analyses.taylor.study" in mods and len(mods) > 25
    out = subprocess.run([sys.executable, "-c", _PROBE, *mods], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.rpartition("RESULT ")[2])
    ours = {k: [m for m in v if m.startswith("ntkfast")] for k, v in res["importers"].items()}
    assert ours.get("argparse", []) == [] and ours.get("matplotlib", []) == [], ours
    assert not res["matplotlib_loaded"]


def test_front_ends_exist_where_the_library_does_not():
    mods = _modules()
    for name in ("ntkfast.cli.core", "ntkfast.cli.krr", "ntkfast.cli.taylor", "ntkfast.cli.stability",
                 "ntkfast.cli.spectrum", "ntkfast.cli.smoothness", "ntkfast.cli.dynamics", "ntkfast.analyses.plots"):
        assert name in mods
    import ntkfast.learning.krr as krr
    import ntkfast.analyses.taylor as taylor
    for lib in (krr, taylor, nf.stability, nf.spectrum, nf.smoothness, nf.dynamics):
        assert not hasattr(lib, "register_cli")


def test_short_module_paths_are_the_modules_themselves():
    import importlib
    from ntkfast import _aliases
    for short, real in _aliases.ALIASES.items():
        a = importlib.import_module(f"ntkfast.{short}")
        assert a is importlib.import_module(f"ntkfast.{real}") is getattr(nf, short)
        assert a.__name__ == a.__spec__.name == f"ntkfast.{real}"      # its own spec, not the alias's
    from ntkfast.predict import GradientFlow
    from ntkfast.learning.predict import GradientFlow as G2
    assert GradientFlow is G2
    import ntkfast.taylor.model as m
    assert m is importlib.import_module("ntkfast.analyses.taylor.model")


def test_gram_is_the_function():
    import ntkfast.kernel.tiled as tiled
    assert callable(nf.gram) and nf.gram is tiled.gram
    import ntkfast.distributed  # noqa: F401  (used to reach the module through ntkfast.gram)
    assert nf.gram is tiled.gram


def test_one_version_source():
    """__version__ in ntkfast/__init__.py is the version; pyproject.toml reads it from there at build time."""
    import importlib.metadata
    import re
    root = os.path.join(os.path.dirname(__file__), "..")
    with open(os.path.join(root, "pyproject.toml")) as f:
        text = f.read()
    assert re.search(r'^dynamic = \["version"\]', text, re.M) and not re.search(r"^version\s*=", text, re.M)
    assert importlib.metadata.version("ntkfast") == nf.__version__
