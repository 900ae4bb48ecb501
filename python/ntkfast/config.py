"""What this build compiled in, apart from what is usable now (``show_config``)."""
from __future__ import annotations

import functools
import os

__all__ = ["show_config", "build_info", "cuda_usable", "cuda_device_usable", "cuda_disabled"]

#: Set to 1 to hide every GPU from ntkfast (the compiled backend and cupy alike; see :mod:`ntkfast.device`).
DISABLE_ENV = "NTKFAST_DISABLE_CUDA"


def build_info():
    """Dict of compile-time facts: cuda_compiled, cuda_architectures, cuda_version, cpu_arch, compiler,
    openmp, cpu_threads."""
    from . import _core
    return dict(_core.build_info())


@functools.lru_cache(maxsize=1)
def _cuda_status():
    from . import _core
    return dict(_core.cuda_status())


def cuda_disabled():
    """True when NTKFAST_DISABLE_CUDA=1 hides every GPU."""
    return os.environ.get(DISABLE_ENV) == "1"


def cuda_usable():
    """(usable, reason): whether the compiled backend can run device='cuda' now. NTKFAST_DISABLE_CUDA=1 hides
    every GPU."""
    if cuda_disabled():
        return False, f"disabled by {DISABLE_ENV}=1"
    if not build_info()["cuda_compiled"]:
        return False, "not compiled in (this build has no CUDA backend: NTKFAST_CUDA=OFF or no nvcc at build time)"
    st = _cuda_status()
    return bool(st["usable"]), st["reason"] or "usable"


def cuda_device_usable(n):
    """(usable, reason) of GPU ``n`` for the compiled backend (a build for its architecture, a driver)."""
    usable, reason = cuda_usable()
    if not usable:
        return False, reason
    st = _cuda_status()
    count = int(st["device_count"])
    if not 0 <= n < count:
        return False, f"there are {count} GPU(s) (indices 0..{count - 1})"
    per = st.get("device_usable") or [True] * count
    why = st.get("device_reason") or [""] * count
    return (True, "usable") if per[n] else (False, why[n] or "not usable")


def show_config(file=None):
    """Print and return the configuration: version, what was compiled in, and what is usable now."""
    import sys
    import numpy as np
    from . import __version__
    b = build_info()
    st = _cuda_status() if b["cuda_compiled"] else {"usable": False, "device_count": 0, "names": [],
                                                    "reason": "not compiled in", "compute_capability": []}
    usable, reason = cuda_usable()
    cfg = {
        "version": __version__,
        "compiled": {"cpu_backend": True, "openmp": b["openmp"], "cpu_arch": b["cpu_arch"], "compiler": b["compiler"],
                     "cuda_backend": b["cuda_compiled"], "cuda_architectures": b["cuda_architectures"],
                     "cuda_version": b["cuda_version"]},
        "usable_now": {"cpu_threads": b["cpu_threads"], "cuda": usable, "cuda_reason": reason,
                       "cuda_devices": [f"{n} (sm_{c})" for n, c in zip(st["names"], st["compute_capability"])]},
        "numpy": np.__version__,
    }
    out = file or sys.stdout
    c, u = cfg["compiled"], cfg["usable_now"]
    print(f"ntkfast {cfg['version']} (numpy {cfg['numpy']})", file=out)
    print("compiled in:", file=out)
    print(f"  CPU backend : yes (OpenMP {'yes' if c['openmp'] else 'no'}, -march={c['cpu_arch'] or 'default'}, "
          f"{c['compiler']})", file=out)
    if c["cuda_backend"]:
        print(f"  CUDA backend: yes (CUDA {c['cuda_version']}, architectures {c['cuda_architectures']})", file=out)
    else:
        print("  CUDA backend: no", file=out)
    print("usable now:", file=out)
    print(f"  CPU threads : {u['cpu_threads']}", file=out)
    print(f"  GPU         : {'yes: ' + ', '.join(u['cuda_devices']) if u['cuda'] else 'no (' + u['cuda_reason'] + ')'}",
          file=out)
    return cfg
