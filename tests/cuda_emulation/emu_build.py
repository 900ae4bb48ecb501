"""Builds the host test programs of the CUDA backend with g++ (no GPU, no nvcc):

- ``emulate``: the kernel body (csrc/cuda/kernels.cuh) on host teams (emulate.cpp);
- ``emulate_tsan``: the same with ThreadSanitizer (32 threads per team, barriers for the warp syncs);
- ``orchestration``: csrc/cuda/gram_cuda.cu's host code against the stand-in CUDA runtime of stand_in/,
  with AddressSanitizer when it works here (orchestration.cpp drives it).

Objects compile in parallel and are cached under ``$NTKFAST_EMU_CACHE`` (default: a per-user folder in the
system temp dir), keyed by a hash of every source and header under csrc/ and tests/cuda_emulation/, the
flags and the compiler, so a second run with unchanged sources links nothing and compiles nothing.
"""
import concurrent.futures
import hashlib
import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

WARN = ["-Wall", "-Wextra", "-Werror=switch", "-Werror=return-type"]
# Bitwise agreement with the CPU backend needs the same rounding: no FMA contraction.
FP = ["-ffp-contract=off", "-fno-math-errno"]
INC = [f"-I{ROOT}/csrc"]
STAND_IN = [f"-I{HERE}/stand_in"]
CORE = [("csrc/core/program.cpp", ["-std=c++17", "-O1"] + FP + INC),
        ("csrc/core/serialize.cpp", ["-std=c++17", "-O1"] + FP + INC)]
ASAN = ["-fsanitize=address", "-fno-omit-frame-pointer"]


def targets(asan):
    """name -> (units [(source, flags)], link flags)."""
    san = ASAN if asan else []
    return {
        "emulate": ([("tests/cuda_emulation/emulate.cpp", ["-std=c++20", "-O2"] + WARN + FP + INC)] + CORE,
                    ["-pthread"]),
        "emulate_tsan": ([("tests/cuda_emulation/emulate.cpp",
                           ["-std=c++20", "-O1", "-fsanitize=thread"] + WARN + FP + INC)] + CORE,
                         ["-pthread", "-fsanitize=thread"]),
        "orchestration": ([("csrc/cuda/gram_cuda.cu", ["-x", "c++", "-std=c++17", "-O1"] + san + WARN + FP + INC + STAND_IN),
                           ("tests/cuda_emulation/stand_in/stand_in.cpp", ["-std=c++17", "-O1"] + san + WARN + STAND_IN),
                           ("tests/cuda_emulation/orchestration.cpp", ["-std=c++17", "-O1"] + san + WARN + FP + INC + STAND_IN),
                           ("csrc/cpu/gram_cpu.cpp", ["-std=c++17", "-O1"] + FP + INC)] + CORE,
                          ["-pthread"] + san),
    }


def compiler():
    """The C++ compiler ($CXX or g++), or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


_PROBES = {}


def sanitizer_works(kind):
    """Whether the compiler builds and runs a program with -fsanitize=kind here (the runtime may be missing,
    or refuse to start under some address-space layouts)."""
    if kind in _PROBES:
        return _PROBES[kind]
    cxx = compiler()
    ok = False
    if cxx:
        with tempfile.TemporaryDirectory() as tmp:
            src, exe = os.path.join(tmp, "t.cpp"), os.path.join(tmp, "t")
            with open(src, "w") as f:
                f.write("#include <thread>\nint main(){int x=0; std::thread t([&]{x=1;}); t.join(); return x-1;}\n")
            try:
                subprocess.run([cxx, "-std=c++17", f"-fsanitize={kind}", src, "-o", exe, "-pthread"], check=True,
                               capture_output=True, timeout=120)
                subprocess.run([exe], check=True, capture_output=True, timeout=60, env=run_env())
                ok = True
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
                ok = False
    _PROBES[kind] = ok
    return ok


def barrier_works():
    """Whether the compiler has C++20's std::barrier (the 32-thread teams of emulate.cpp need it)."""
    if "barrier" in _PROBES:
        return _PROBES["barrier"]
    cxx = compiler()
    ok = False
    if cxx:
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "b.cpp")
            with open(src, "w") as f:
                f.write("#include <barrier>\nint main(){std::barrier<> b(1); b.arrive_and_wait(); return 0;}\n")
            r = subprocess.run([cxx, "-std=c++20", "-fsyntax-only", src], capture_output=True)
            ok = r.returncode == 0
    _PROBES["barrier"] = ok
    return ok


def run_env():
    """Environment for the sanitized programs: fail on the first report, no leak checker (it needs ptrace,
    which containers often forbid)."""
    return dict(os.environ, ASAN_OPTIONS="detect_leaks=0:halt_on_error=1",
                TSAN_OPTIONS="halt_on_error=1:exitcode=66")


def _tree_hash(cxx):
    h = hashlib.sha256()
    h.update(subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.encode())
    for base in ("csrc", "tests/cuda_emulation"):
        for d, dirs, files in sorted(os.walk(os.path.join(ROOT, base))):
            dirs.sort()
            for f in sorted(files):
                if f.endswith((".cpp", ".hpp", ".h", ".cu", ".cuh")):
                    p = os.path.join(d, f)
                    h.update(os.path.relpath(p, ROOT).encode())
                    with open(p, "rb") as fh:
                        h.update(fh.read())
    return h.hexdigest()[:16]


def cache_root():
    """Per user and per checkout (so that two worktrees testing at once keep their builds)."""
    if os.environ.get("NTKFAST_EMU_CACHE"):
        return os.environ["NTKFAST_EMU_CACHE"]
    tree = hashlib.sha256(os.path.abspath(ROOT).encode()).hexdigest()[:8]
    return os.path.join(tempfile.gettempdir(), f"ntkfast-emulation-{os.getuid()}-{tree}")


def build(names, asan=None, jobs=None):
    """Builds the named targets; returns {name: executable path}. asan: None = when it works here."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++ or $CXX)")
    if asan is None:
        asan = sanitizer_works("address")
    tg = targets(asan)
    key = _tree_hash(cxx)
    out = os.path.join(cache_root(), key)
    os.makedirs(out, exist_ok=True)
    for old in os.listdir(cache_root()):  # sources changed: older builds are of no use
        if old != key:
            shutil.rmtree(os.path.join(cache_root(), old), ignore_errors=True)

    def obj_of(src, flags):
        tag = hashlib.sha256((src + "\0" + "\0".join(flags)).encode()).hexdigest()[:12]
        return os.path.join(out, os.path.basename(src) + "." + tag + ".o")

    units = {}
    for n in names:
        for src, flags in tg[n][0]:
            units[obj_of(src, flags)] = (src, flags)
    todo = {o: u for o, u in units.items() if not os.path.exists(o)}

    def compile_one(item):
        obj, (src, flags) = item
        tmp = obj + f".{os.getpid()}.tmp"
        r = subprocess.run([cxx, *flags, "-c", os.path.join(ROOT, src), "-o", tmp], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"compiling {src} failed:\n{r.stderr[-8000:]}")
        os.replace(tmp, obj)
        return r.stderr

    with concurrent.futures.ThreadPoolExecutor(jobs or os.cpu_count() or 2) as ex:
        list(ex.map(compile_one, todo.items()))
    exes = {}
    for n in names:
        exe = os.path.join(out, n + ("_asan" if asan and n == "orchestration" else ""))
        if not os.path.exists(exe):
            objs = [obj_of(src, flags) for src, flags in tg[n][0]]
            tmp = exe + f".{os.getpid()}.tmp"
            r = subprocess.run([cxx, *objs, "-o", tmp, *tg[n][1]], capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"linking {n} failed:\n{r.stderr[-8000:]}")
            os.replace(tmp, exe)
        exes[n] = exe
    return exes


def build_all():
    """Every target this machine can build, in one parallel batch (later calls hit the cache): 'orchestration',
    'emulate' with a C++20 compiler, 'emulate_tsan' where ThreadSanitizer works."""
    names = ["orchestration"]
    if barrier_works():
        names.append("emulate")
        if sanitizer_works("thread"):
            names.append("emulate_tsan")
    return build(names)


if __name__ == "__main__":
    import sys
    import time
    t0 = time.perf_counter()
    print(build(sys.argv[1:] or ["emulate", "emulate_tsan", "orchestration"]))
    print(f"{time.perf_counter() - t0:.1f} s")
