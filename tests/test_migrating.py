"""docs/migrating.md's worked example runs as written, and gives neural-tangents' kernels where neural-tangents
is importable (the same code with the other import)."""
import os
import re

import numpy as np

from peer import stax_or_skip

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "migrating.md")


def _example():
    with open(DOC) as f:
        text = f.read()
    start = text.index("## Worked example")
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_worked_example_runs():
    ns = {}
    exec(compile(_example(), "docs/migrating.md", "exec"), ns)
    assert ns["k_train"].shape == (20, 20) and np.array_equal(ns["k_train"], ns["k_train"].T)
    assert ns["k_test"]._fields == ("nngp", "ntk") and ns["k_test"].ntk.shape == (5, 20)
    assert ns["prediction"].shape == (5, 10) and np.isfinite(ns["prediction"]).all()


def test_worked_example_matches_neural_tangents():
    """The same code with neural-tangents' stax (run in a worker process, tests/peer.py) in place of ours."""
    ours, theirs = {}, {"stax": stax_or_skip()}
    code = _example()
    exec(compile(code, "docs/migrating.md", "exec"), ours)
    assert "from ntkfast import stax\n" in code
    exec(compile(code.replace("from ntkfast import stax\n", ""), "peer", "exec"), theirs)
    off = ~np.eye(20, dtype=bool)   # stax's diagonal carries its sqrt(eps) angle error (docs/migrating.md)
    t = np.asarray(theirs["k_train"])
    assert np.max(np.abs(ours["k_train"] - t)[off]) <= 1e-12 * np.abs(t).max()
    assert np.max(np.abs(ours["k_train"] - t)) <= 1e-7 * np.abs(t).max()
    for k in ("nngp", "ntk"):
        t = np.asarray(getattr(theirs["k_test"], k))
        assert np.max(np.abs(getattr(ours["k_test"], k) - t)) <= 1e-12 * np.abs(t).max()
