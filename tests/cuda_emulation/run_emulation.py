"""Host emulation of the CUDA kernel body against the CPU backend and the float64 reference.

Builds emulate.cpp with g++ (kernels.cuh with no CUDA: the same per-pair code the GPU runs, a host "team"
standing in for the warp), runs every layer-type net and preset of the backend tests through it, and
compares: self data and both kernels with the CPU backend (same dtype) and with the float64 reference.

    python tests/cuda_emulation/run_emulation.py [--lanes 1|32] [--quick]

Not collected by pytest (it compiles a program); it is a development check for machines without a GPU.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import ntkfast as nf  # noqa: E402
from ntkfast import _core  # noqa: E402
from test_backend_vs_reference import LAYER_NETS, PRESETS  # noqa: E402

TOL = {"float64": 1e-10, "float32": 1e-5}


def build(exe):
    src = os.path.join(HERE, "emulate.cpp")
    cmd = ["g++", "-std=c++20", "-O2", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Wextra", "-Werror",
           f"-I{ROOT}/csrc", src, f"{ROOT}/csrc/core/program.cpp", "-o", exe, "-pthread"]
    subprocess.run(cmd, check=True)


def write_program(prog, path):
    ro = {"none": 0, "gap": 1, "flatten": 2}[prog["readout"]]
    lines = [f"prog {prog['H']} {prog['W']} {prog['C']} {int(prog['spatial'])} {int(prog['circular'])} {ro} "
             f"{len(prog['stages'])} {len(prog['scalar'])}"]
    for st in prog["stages"]:
        pool = st["pool"]
        lines.append(f"stage {st['h_in']} {st['w_in']} {st['h_out']} {st['w_out']} {len(st['ops'])} "
                     f"{int(pool is not None)} {int(st['self_active'])} " + " ".join(map(str, st["need_pair"])) + " "
                     + " ".join(map(str, st["need_self"])))
        for op in st["ops"]:
            if op["kind"] == "conv":
                lines.append(f"op 0 {op['ky']} {op['kx']} {op['pad_y']} {op['pad_x']} {op['scale']!r} {op['bias2']!r} "
                             f"{op['h_in']} {op['w_in']} {op['h_out']} {op['w_out']}")
            else:
                lines.append(f"op 1 1 1 0 0 1.0 0.0 {op['h_in']} {op['w_in']} {op['h_out']} {op['w_out']}")
        if pool is not None:
            for ax, n in (("y", pool["h_out"]), ("x", pool["w_out"])):
                taps = pool[f"taps_{ax}"]
                lines.append(f"pool {pool[f'stride_{ax}']} {pool[f'origin_{ax}']} {n} {len(taps)} "
                             + " ".join(repr(float(t)) for t in taps))
    for op in prog["scalar"]:
        lines.append(f"scalar 0 {op['w2']!r} {op['b2']!r}" if op["kind"] == "dense" else "scalar 1 1.0 0.0")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def emulate(exe, tmp, arch, X, Y, dtype, lanes):
    plan_shape = X.shape[1:]
    prog = arch.program(plan_shape)
    write_program(prog, os.path.join(tmp, "prog.txt"))
    nx, isz = len(X), int(np.prod(plan_shape))
    ny = 0 if Y is None else len(Y)
    with open(os.path.join(tmp, "data.bin"), "wb") as f:
        np.array([nx, ny, isz, np.dtype(dtype).itemsize], dtype=np.int64).tofile(f)
        X.astype(dtype).astype(np.float64).tofile(f)
        if Y is not None:
            Y.astype(dtype).astype(np.float64).tofile(f)
    subprocess.run([exe, os.path.join(tmp, "prog.txt"), os.path.join(tmp, "data.bin"), os.path.join(tmp, "out.bin"),
                    str(lanes)], check=True)
    ssz = _core.make_program(prog).self_size
    m = nx if Y is None else ny
    out = np.fromfile(os.path.join(tmp, "out.bin"), dtype=np.float64)
    so = out[:nx * ssz].reshape(nx, ssz)
    ks = out[nx * ssz:nx * ssz + nx * m].reshape(nx, m)
    kt = out[nx * ssz + nx * m:].reshape(nx, m)
    return so, ks, kt


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--lanes", type=int, default=1, choices=(1, 32))
    ap.add_argument("--quick", action="store_true", help="skip the 32x32 Myrtle presets")
    args = ap.parse_args(argv)
    cases = []
    for name, (arch, shape) in sorted(LAYER_NETS.items()):
        rng = np.random.default_rng(abs(hash(name)) % 2 ** 32)
        X = rng.standard_normal((5,) + shape)
        cases.append((name + "/sym", arch, X, None))
        cases.append((name + "/rect", arch, X[:3], X[3:] * 0.7 + 0.1))
    for name, (make, shape, n) in sorted(PRESETS.items()):
        if args.quick and name.startswith("myrtle"):
            continue
        X = np.random.default_rng(7).standard_normal((n,) + shape)
        cases.append((name + "/sym", make(), X, None))
    worst = {}
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "emulate")
        build(exe)
        subprocess.run([exe, "tri"], check=True)
        for label, arch, X, Y in cases:
            ref = nf.reference.gram(X, Y, arch=arch)
            for dtype in ("float64", "float32"):
                so, ks, kt = emulate(exe, tmp, arch, X, Y, dtype, args.lanes)
                cpu = nf.gram(X, Y, arch=arch, dtype=dtype, device="cpu")
                pc = _core.make_program(arch.program(X.shape[1:]))
                cpu_self = _core.self_data(pc, np.ascontiguousarray(X, dtype=dtype), "cpu", 0)
                e_self = rel(so, cpu_self) if so.size else 0.0
                e_cpu = max(rel(ks, cpu.nngp), rel(kt, cpu.ntk))
                e_ref = max(rel(ks, ref.nngp), rel(kt, ref.ntk))
                sym_ok = Y is None and np.array_equal(ks, ks.T) and np.array_equal(kt, kt.T) or Y is not None
                ok = e_ref <= TOL[dtype] and e_cpu <= TOL[dtype] and np.isfinite(ks).all() and np.isfinite(kt).all() \
                    and sym_ok and e_self <= (1e-12 if dtype == "float64" else 1e-5)
                print(f"{'ok  ' if ok else 'FAIL'} {label:32s} {dtype}: vs ref {e_ref:.2e}  vs cpu {e_cpu:.2e}  "
                      f"self vs cpu {e_self:.2e}")
                worst[dtype] = max(worst.get(dtype, 0.0), e_ref)
                if not ok:
                    failed.append((label, dtype))
    print(f"lanes={args.lanes}: worst rel. error vs the float64 reference: {worst}; failures: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
