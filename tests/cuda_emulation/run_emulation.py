"""Host emulation of the CUDA kernel body against the CPU backend and the float64 reference.

Builds emulate.cpp with g++ (kernels.cuh without CUDA: the per-warp loop the GPU kernel runs, host teams
standing in for warps), runs nets through it and compares, in float64 and float32:

- with the CPU backend (``nf.gram(..., device='cpu')`` and its self data): bitwise. Every entry is computed
  with the CPU's arithmetic in the CPU's order; with one lane per team even the float64 readout sums are in
  the CPU's order. With 32 lanes the readout sums (float64) are added in another order, so float64 results
  may differ in the last bits (allowed: 1e-13 relative) and float32 results stay bitwise unless a float64
  sum falls within 1e-16 of a float32 rounding boundary (reported as a failure: it has not happened);
- with the float64 reference: the fixed nets (LAYER_NETS, PRESETS of test_backend_vs_reference, and the
  branching nets of residual_nets() here) within the relative tolerances of that module, the random nets
  (``random_case(seed)`` of tests/random_nets.py) elementwise within ``tolerances(case)`` of
  tests/test_random_nets.py.

    python tests/cuda_emulation/run_emulation.py [--lanes 1|32] [--teams N] [--seeds 0:40] [--quick]
                                                 [--nets a,b] [--tsan]

``--tsan`` builds with ThreadSanitizer (use with --lanes 32: 32 threads per team, several teams).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TESTS = os.path.join(ROOT, "tests")
for _p in (TESTS, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import emu_build  # noqa: E402  (tests/cuda_emulation/emu_build.py)
import ntkfast as nf  # noqa: E402
from ntkfast import _core  # noqa: E402
from ntkfast.kernel.tiled import compile_program  # noqa: E402

REF_TOL = {"float64": 1e-10, "float32": 1e-5}   # the fixed nets' relative tolerances (test_backend_vs_reference)
DTYPES = ("float64", "float32")


# ---- cases -------------------------------------------------------------------------------------------------

class EmuCase:
    """A net, inputs (float64) and how to judge it against the reference ('rel' for fixed nets, 'elementwise'
    with tolerances(case) for random nets)."""

    def __init__(self, label, arch, X, Y, random_case=None):
        self.label, self.arch, self.X, self.Y, self.random_case = label, arch, X, Y, random_case
        self._ref = None

    def reference(self):
        """(ref kernels, {dtype: (nngp tol, ntk tol)} elementwise or None)."""
        if self._ref is None:
            if self.random_case is not None:
                from test_random_nets import tolerances
                self._ref = tolerances(self.random_case)
            else:
                self._ref = (nf.reference.gram(self.X, self.Y, arch=self.arch), None)
        return self._ref


def residual_nets():
    """Branching nets (FanOut / parallel / FanInSum: several registers per plane), name -> (arch, input shape):
    WRN-style blocks with an Identity and a strided 1x1 shortcut, branches that pool alike (two registers
    entering a stage), a CIRCULAR and a VALID conv in one block (the change of representation of two
    registers), a nested block, a 3-branch fully-connected head after the readout, a fully-connected net."""
    from ntkfast import (AvgPool, Conv, Dense, Erf, FanInSum, FanOut, Flatten, GlobalAvgPool, Identity, ReLU,
                         parallel, serial)
    block = parallel([ReLU(), Conv(3), ReLU(), Conv(3)], Identity())
    return {
        "res_identity": (serial(Conv(3), FanOut(2), block, FanInSum(), FanOut(2), block, FanInSum(), ReLU(),
                                GlobalAvgPool(), Dense()), (7, 6, 2)),
        "res_strided": (serial(Conv(3, b_std=0.1), FanOut(2),
                               parallel([ReLU(), Conv(3, stride=2), ReLU(), Conv(3)], Conv(1, stride=2)),
                               FanInSum(), ReLU(), GlobalAvgPool(), Dense()), (8, 7, 1)),
        "res_pool_branches": (serial(Conv(3), FanOut(2), parallel([ReLU(), Conv(3), AvgPool(2)], AvgPool(2)),
                                     FanInSum(), ReLU(), Conv(3, padding="CIRCULAR"), ReLU(), GlobalAvgPool(),
                                     Dense()), (8, 8, 1)),
        "res_circ_valid": (serial(Conv(3, padding="CIRCULAR"), FanOut(2),
                                  parallel([ReLU(), Conv(3, padding="CIRCULAR"), ReLU(), Conv(3, padding="VALID")],
                                           Conv(3, padding="VALID")),
                                  FanInSum(), ReLU(), AvgPool(2), Conv(3), ReLU(), GlobalAvgPool()), (7, 6, 1)),
        "res_nested": (serial(Conv(3), FanOut(2),
                              parallel([FanOut(2), parallel([ReLU(), Conv(3)], Identity()), FanInSum(), ReLU(),
                                        Conv(3)], Identity()),
                              FanInSum(), ReLU(), Flatten(), Dense()), (6, 6, 1)),
        "res_fc_head3": (serial(Conv(3), ReLU(), Flatten(), Dense(1.3, 0.1), FanOut(3),
                                parallel([ReLU(), Dense()], Identity(), [Erf(), Dense(0.8, 0.2)]), FanInSum(),
                                ReLU(), Dense()), (5, 5, 1)),
        "res_fc": (serial(Dense(1.2, 0.3), FanOut(2), parallel([ReLU(), Dense()], Identity()), FanInSum(), ReLU(),
                          Dense()), (9,)),
    }


def fixed_cases(quick=False, names=None):
    from test_backend_vs_reference import LAYER_NETS, PRESETS
    cases = []
    for name, (arch, shape) in sorted({**LAYER_NETS, **residual_nets()}.items()):
        if names and name not in names:
            continue
        rng = np.random.default_rng(abs(hash(name)) % 2 ** 32)
        X = rng.standard_normal((5,) + shape)
        cases.append(EmuCase(name + "/sym", arch, X, None))
        cases.append(EmuCase(name + "/rect", arch, X[:3], X[3:] * 0.7 + 0.1))
    for name, (make, shape, n) in sorted(PRESETS.items()):
        if (quick and name.startswith("myrtle")) or (names and name not in names):
            continue
        X = np.random.default_rng(7).standard_normal((n,) + shape)
        cases.append(EmuCase(name + "/sym", make(), X, None))
    return cases


def random_cases(seeds):
    from random_nets import random_case
    out = []
    for s in seeds:
        c = random_case(s)
        out.append(EmuCase(f"random{s}", c.arch, c.X, c.Y, random_case=c))
    return out


# ---- running -----------------------------------------------------------------------------------------------

def _write(prefix, case, dtype):
    shape = case.X.shape[1:]
    with open(prefix + ".prog", "w") as f:
        f.write(case.arch.program_text(shape))
    nx, isz = len(case.X), int(np.prod(shape))
    ny = 0 if case.Y is None else len(case.Y)
    with open(prefix + ".bin", "wb") as f:
        np.array([nx, ny, isz, np.dtype(dtype).itemsize], dtype=np.int64).tofile(f)
        case.X.astype(dtype).astype(np.float64).tofile(f)
        if case.Y is not None:
            case.Y.astype(dtype).astype(np.float64).tofile(f)


def _read(prefix, case):
    nx = len(case.X)
    m = nx if case.Y is None else len(case.Y)
    ssz = compile_program(case.arch, case.X.shape[1:]).self_size
    out = np.fromfile(prefix + ".out", dtype=np.float64)
    if out.size != nx * ssz + 2 * nx * m:
        raise RuntimeError(f"{case.label}: emulation output has {out.size} values, expected {nx * ssz + 2 * nx * m}")
    so = out[:nx * ssz].reshape(nx, ssz)
    ks = out[nx * ssz:nx * ssz + nx * m].reshape(nx, m)
    kt = out[nx * ssz + nx * m:].reshape(nx, m)
    return so, ks, kt


def emulate(exe, cases, dtype, lanes, teams, tmp):
    """Runs every case through one emulate process; returns [(self data, nngp, ntk)] as float64."""
    prefixes = []
    for k, c in enumerate(cases):
        p = os.path.join(tmp, f"case{k}_{dtype}")
        _write(p, c, dtype)
        prefixes.append(p)
    r = subprocess.run([exe, str(lanes), str(teams), *prefixes], capture_output=True, text=True,
                       env=emu_build.run_env())
    if r.returncode != 0:
        raise RuntimeError(f"emulate failed (rc {r.returncode}):\n{r.stderr[-6000:]}")
    if "ThreadSanitizer" in r.stderr:
        raise RuntimeError(f"ThreadSanitizer reported:\n{r.stderr[-6000:]}")
    return [_read(p, c) for p, c in zip(prefixes, cases)]


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _fraction(err, tol):
    """max of err / tol elementwise (tol broadcasts; 0 / 0 counts 0, x / 0 infinity)."""
    tol = np.broadcast_to(np.asarray(tol, np.float64), err.shape)
    frac = np.divide(err, tol, out=np.where(err > 0, np.inf, 0.0), where=tol > 0)
    return float(np.max(frac)) if frac.size else 0.0


def judge(case, dtype, lanes, got):
    """One row of results: errors against the CPU backend and the reference, and whether it passes."""
    so, ks, kt = got
    X = np.ascontiguousarray(case.X, dtype=dtype)
    cpu = nf.gram(case.X, case.Y, arch=case.arch, dtype=dtype, device="cpu")
    prog = compile_program(case.arch, case.X.shape[1:])
    cpu_self = _core.self_data(prog, X, "cpu", 0)
    bitwise = (np.array_equal(ks, cpu.nngp.astype(np.float64)) and np.array_equal(kt, cpu.ntk.astype(np.float64))
               and np.array_equal(so, cpu_self.astype(np.float64)))
    e_cpu = max(rel(ks, cpu.nngp), rel(kt, cpu.ntk), rel(so, cpu_self) if so.size else 0.0)
    ref, tol = case.reference()
    if tol is None:
        e_ref = max(rel(ks, ref.nngp), rel(kt, ref.ntk))
        ref_ok = e_ref <= REF_TOL[dtype]
    else:  # worst error as a fraction of the elementwise tolerance
        e_ref = max(_fraction(np.abs(k - r), t) for k, r, t in zip((ks, kt), ref, tol[dtype]))
        ref_ok = e_ref <= 1.0
    finite = np.isfinite(ks).all() and np.isfinite(kt).all()
    sym = case.Y is not None or (np.array_equal(ks, ks.T) and np.array_equal(kt, kt.T))
    # Bitwise with the CPU is required, except float64 with 32 lanes (readout sums in another order).
    cpu_ok = bitwise or (dtype == "float64" and lanes > 1 and e_cpu <= 1e-13)
    ok = ref_ok and cpu_ok and finite and sym
    return {"label": case.label, "dtype": dtype, "e_ref": e_ref, "ref_kind": "rel" if tol is None else "x tol",
            "e_cpu": e_cpu, "bitwise": bitwise, "ok": bool(ok)}


def run(cases, lanes=1, teams=2, tsan=False, verbose=True, exe=None, dtypes=DTYPES):
    """Builds (unless exe is given), emulates every case in each dtype and judges them; returns the rows."""
    rows = []
    if exe is None:
        t0 = time.perf_counter()
        name = "emulate_tsan" if tsan else "emulate"
        exe = emu_build.build([name])[name]
        if verbose:
            print(f"built {name} in {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in dtypes:
            outs = emulate(exe, cases, dtype, lanes, teams, tmp)
            for c, got in zip(cases, outs):
                r = judge(c, dtype, lanes, got)
                rows.append(r)
                if verbose:
                    print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['label']:28s} {dtype}: vs ref {r['e_ref']:.2e} "
                          f"({r['ref_kind']})  vs cpu {r['e_cpu']:.2e}{' bitwise' if r['bitwise'] else ''}")
    return rows


def summary(rows):
    out = {}
    for dtype in DTYPES:
        rs = [r for r in rows if r["dtype"] == dtype]
        if not rs:
            continue
        rel_rows = [r["e_ref"] for r in rs if r["ref_kind"] == "rel"]
        tol_rows = [r["e_ref"] for r in rs if r["ref_kind"] == "x tol"]
        out[dtype] = {"cases": len(rs), "bitwise_with_cpu": sum(r["bitwise"] for r in rs),
                      "worst_rel_vs_ref_fixed": max(rel_rows, default=0.0),
                      "worst_fraction_of_tol_random": max(tol_rows, default=0.0),
                      "worst_rel_vs_cpu": max(r["e_cpu"] for r in rs),
                      "failures": [r["label"] for r in rs if not r["ok"]]}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", type=int, default=1, choices=(1, 32))
    ap.add_argument("--teams", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="skip the 32x32 Myrtle presets")
    ap.add_argument("--seeds", default="0:40", help="random nets random_case(seed), seed in A:B ('' for none)")
    ap.add_argument("--nets", default="", help="only these fixed nets (comma-separated names; 'none' for none)")
    ap.add_argument("--tsan", action="store_true", help="build with ThreadSanitizer")
    args = ap.parse_args(argv)
    if emu_build.compiler() is None:
        print("g++ not found", file=sys.stderr)
        return 2
    if args.tsan and not emu_build.sanitizer_works("thread"):
        print("ThreadSanitizer does not work here", file=sys.stderr)
        return 2
    names = set(n for n in args.nets.split(",") if n) or None
    cases = [] if names == {"none"} else fixed_cases(args.quick, names)
    if args.seeds:
        a, b = (int(v) for v in args.seeds.split(":"))
        cases += random_cases(range(a, b))
    t0 = time.perf_counter()
    name = "emulate_tsan" if args.tsan else "emulate"
    exe = emu_build.build([name])[name]
    print(f"built {name} in {time.perf_counter() - t0:.1f} s")
    subprocess.run([exe, "tri"], check=True, env=emu_build.run_env())
    rows = run(cases, args.lanes, args.teams, args.tsan, exe=exe)
    s = summary(rows)
    print(f"lanes={args.lanes} teams={args.teams}{' TSan' if args.tsan else ''}: {s}  "
          f"({time.perf_counter() - t0:.1f} s)")
    return 1 if any(v["failures"] for v in s.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
