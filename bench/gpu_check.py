"""The one command to run on a lent GPU machine: build, test, sanitize and benchmark the CUDA backend.

    bash bench/gpu_check.sh [OUTDIR]        (or: python bench/gpu_check.py [OUTDIR] [--arch 90])

OUTDIR defaults to $OUT when set, else ./gpu_check_out. Steps, each with a time limit, all within about 7.5
minutes (a step that no longer fits is recorded as skipped):

1. environment: nvidia-smi (GPU, driver, compute capability), nvcc, CMake, Python, numpy, git commit;
2. build with NTKFAST_CUDA=ON for this GPU's architecture only (``<major><minor>-real``, from nvidia-smi
   --query-gpu=compute_cap; ``--arch`` or the first default architecture without a GPU) in OUTDIR/build,
   with plain CMake (needs pybind11's CMake files: ``python -m pybind11`` or $PYBIND11_DIR), and stage the
   package with that module in OUTDIR/site (nothing is installed; the repository's own build/ is not used);
3. ``NTKFAST_REQUIRE_GPU=1 pytest -m gpu tests/test_gpu.py`` (a missing GPU fails);
4. compute-sanitizer memcheck and racecheck on bench/gpu_sanitize_case.py, where the tool exists;
5. bench/bench_gpu.py (float32 pairs/s), then neural-tangents on the same workloads when importable (its
   peers folder: $NTKFAST_PEERS or ../shared/peers; JAX and neural-tangents 0.6.5 installed);
6. with the time left: compute-sanitizer synccheck, and the random-net differential test (which includes the
   GPU) when hypothesis is installed.

Logs go to OUTDIR/*.log, results to OUTDIR/gpu_check.json; a summary is printed at the end. The exit status
is 0 when every step that ran passed.
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
BUDGET = 450.0        # seconds for everything (the lent machine allows 8 minutes)
DEFAULT_ARCH = "90"   # without a GPU to ask (a dry run of the build path)


class Check:
    def __init__(self, out):
        self.out = out
        self.t0 = time.monotonic()
        self.steps = []
        self.results = {}

    def left(self):
        return BUDGET - (time.monotonic() - self.t0)

    def run(self, name, cmd, limit, env=None, need=10.0, cwd=ROOT):
        """Runs cmd (list) with its output in OUTDIR/<name>.log, within min(limit, time left). Returns
        (status, returncode, output) with status 'ok', 'failed', 'timeout' or 'skipped'."""
        log = os.path.join(self.out, name + ".log")
        budget = min(limit, self.left())
        if budget < need:
            self.steps.append({"step": name, "status": "skipped", "why": f"{self.left():.0f} s left"})
            return "skipped", None, ""
        t = time.monotonic()
        try:
            r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=budget)
            out, rc = r.stdout + r.stderr, r.returncode
            status = "ok" if rc == 0 else "failed"
            if rc == 5 and "pytest" in cmd:  # pytest: no test selected (e.g. -k cuda without a usable GPU)
                status = "skipped"
        except subprocess.TimeoutExpired as e:
            out = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")) + \
                  ((e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or ""))
            rc, status = None, "timeout"
        except OSError as e:
            out, rc, status = repr(e), None, "failed"
        with open(log, "w") as f:
            f.write("$ " + " ".join(cmd) + "\n" + out)
        self.steps.append({"step": name, "status": status, "seconds": round(time.monotonic() - t, 1),
                           "returncode": rc, "log": os.path.basename(log)})
        return status, rc, out

    def skip(self, name, why):
        self.steps.append({"step": name, "status": "skipped", "why": why})


def query(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def environment():
    smi = query(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"])
    gpus = [dict(zip(("name", "compute_cap", "driver", "memory"), (v.strip() for v in l.split(","))))
            for l in smi.splitlines() if l.strip()]
    import numpy
    return {"gpus": gpus, "nvcc": query(["nvcc", "--version"]).splitlines()[-1:] or ["nvcc not found"],
            "cmake": (query(["cmake", "--version"]).splitlines() or ["cmake not found"])[0],
            "python": sys.version.split()[0], "numpy": numpy.__version__,
            "commit": query(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]) or "unknown",
            "dirty": bool(query(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]))}


def pybind11_dir():
    if os.environ.get("PYBIND11_DIR"):
        return os.environ["PYBIND11_DIR"]
    return query([sys.executable, "-m", "pybind11", "--cmakedir"]) or None


def stage(out, build):
    """OUTDIR/site/ntkfast: the Python package with the module just built; and a sitecustomize that drops an
    editable install's import hook, so that this build is the one imported."""
    site = os.path.join(out, "site")
    pkg = os.path.join(site, "ntkfast")
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "python", "ntkfast"), pkg,
                    ignore=shutil.ignore_patterns("_core*.so", "__pycache__"))
    mods = [f for f in os.listdir(build) if f.startswith("_core") and f.endswith(".so")]
    if not mods:
        return None
    shutil.copy2(os.path.join(build, mods[0]), pkg)
    with open(os.path.join(site, "sitecustomize.py"), "w") as f:
        f.write("import sys\nsys.meta_path[:] = [f for f in sys.meta_path if 'ScikitBuild' not in type(f).__name__]\n")
    return site


def junit_counts(path):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root)
    tot = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in suites:
        for k in tot:
            tot[k] += int(s.get(k, 0))
    tot["passed"] = tot["tests"] - tot["failures"] - tot["errors"] - tot["skipped"]
    return tot


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", nargs="?", default=os.environ.get("OUT") or os.path.join(os.getcwd(), "gpu_check_out"))
    ap.add_argument("--arch", default=None, help="CUDA architecture to build (e.g. 90); default: the GPU's")
    ap.add_argument("--bench-seconds", type=float, default=2.0)
    args = ap.parse_args(argv)
    out = os.path.abspath(args.outdir)
    os.makedirs(out, exist_ok=True)
    ck = Check(out)
    env_info = environment()
    ck.results["environment"] = env_info
    caps = [g["compute_cap"].replace(".", "") for g in env_info["gpus"] if g.get("compute_cap")]
    arch = args.arch or (caps[0] if caps else DEFAULT_ARCH)
    if caps and len(set(caps)) > 1 and not args.arch:
        arch = ";".join(f"{c}-real" for c in sorted(set(caps)))
    arch_list = arch if "real" in arch or "virtual" in arch else f"{arch}-real"
    ck.results["architectures"] = arch_list

    # ---- build ----
    build = os.path.join(out, "build")
    pb = pybind11_dir()
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    site = None
    if pb is None:
        ck.skip("build", "pybind11 not found (pip install pybind11, or set PYBIND11_DIR to its CMake folder)")
    else:
        st, _, _ = ck.run("configure", ["cmake", "-S", ROOT, "-B", build, *gen, "-DNTKFAST_CUDA=ON",
                                        f"-DNTKFAST_CUDA_ARCHITECTURES={arch_list}", "-DCMAKE_BUILD_TYPE=Release",
                                        f"-Dpybind11_DIR={pb}", f"-DPython_EXECUTABLE={sys.executable}"], 120)
        if st == "ok":
            st, _, _ = ck.run("build", ["cmake", "--build", build, "-j", str(os.cpu_count() or 2)], 300)
            if st == "ok":
                site = stage(out, build)
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = site + os.pathsep + env.get("PYTHONPATH", "")
        st, _, cfg = ck.run("show_config", [sys.executable, "-c", "import ntkfast, json; "
                                            "c = ntkfast.show_config(); print(json.dumps(c['usable_now']))"], 60, env=env)
        m = re.search(r"^\{.*\}$", cfg, re.M)
        ck.results["usable_now"] = json.loads(m.group(0)) if m else None

        # ---- tests ----
        xml = os.path.join(out, "pytest_gpu.xml")
        genv = dict(env, NTKFAST_REQUIRE_GPU="1")
        ck.run("pytest_gpu", [sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q", "-p",
                              "no:cacheprovider", f"--junitxml={xml}"], 200, env=genv, need=30)
        ck.results["pytest_gpu"] = junit_counts(xml)
        # ---- compute-sanitizer ----
        cs = shutil.which("compute-sanitizer")
        if not cs and shutil.which("nvcc"):
            cand = os.path.join(os.path.dirname(os.path.realpath(shutil.which("nvcc"))), "compute-sanitizer")
            cs = cand if os.path.exists(cand) else None
        san = {}

        def sanitize(tool):
            if not cs:
                ck.skip(f"sanitizer_{tool}", "compute-sanitizer not found")
                return
            st, _, text = ck.run(f"sanitizer_{tool}", [cs, "--tool", tool, "--error-exitcode", "99", sys.executable,
                                                       "bench/gpu_sanitize_case.py"], 90, env=env, need=20)
            lines = [l for l in text.splitlines() if "SUMMARY" in l]
            san[tool] = {"status": st, "summary": lines[-1].strip() if lines else None}

        sanitize("memcheck")
        sanitize("racecheck")
        ck.results["sanitizers"] = san

        # ---- benchmark: ntkfast first (its lines are written as they come), then the peer ----
        bench = os.path.join(out, "bench.jsonl")
        if os.path.exists(bench):
            os.remove(bench)
        ck.run("bench_gpu", [sys.executable, "bench/bench_gpu.py", "--seconds", str(args.bench_seconds), "--no-peer",
                             "--out", bench], 90, env=env, need=30)
        ck.run("bench_peer", [sys.executable, "bench/bench_gpu.py", "--peer-only", "--workloads", "gap5,flat5,myrtle5",
                              "--peer-timeout", "50", "--out", bench], 170,
               env=dict(env, XLA_PYTHON_CLIENT_PREALLOCATE="false"), need=40)
        rows = []
        if os.path.exists(bench):
            with open(bench) as f:
                rows = [json.loads(l) for l in f if l.strip()]
        ck.results["bench"] = rows

        # ---- if time is left: synccheck, and the random nets on this GPU ----
        sanitize("synccheck")
        ck.results["sanitizers"] = san
        if importlib.util.find_spec("hypothesis"):
            xml3 = os.path.join(out, "pytest_random_nets.xml")
            ck.run("pytest_random_nets", [sys.executable, "-m", "pytest", "tests/test_random_nets.py", "-q", "-p",
                                          "no:cacheprovider", f"--junitxml={xml3}"], 120, env=genv, need=60)
            ck.results["pytest_random_nets"] = junit_counts(xml3)
        else:
            ck.skip("pytest_random_nets", "hypothesis not installed")
    else:
        for name in ("pytest_gpu", "sanitizers", "bench_gpu"):
            ck.skip(name, "no build")

    ck.results["steps"] = ck.steps
    ck.results["seconds"] = round(time.monotonic() - ck.t0, 1)
    with open(os.path.join(out, "gpu_check.json"), "w") as f:
        json.dump(ck.results, f, indent=1)

    # ---- summary ----
    print(f"\ngpu_check summary ({ck.results['seconds']} s, results in {out}/gpu_check.json)")
    gpus = ", ".join(f"{g['name']} (sm_{g['compute_cap'].replace('.', '')})" for g in env_info["gpus"]) or "none"
    print(f"  GPU: {gpus}; built for {arch_list}; commit {env_info['commit']}{'+dirty' if env_info['dirty'] else ''}")
    if not env_info["gpus"]:
        print("  note: nvidia-smi sees no GPU here: the GPU tests fail (NTKFAST_REQUIRE_GPU=1) and the rest skips, "
              "by design")
    for s in ck.steps:
        extra = s.get("why") or (f"{s.get('seconds')} s, {s.get('log')}")
        print(f"  {s['step']:22s} {s['status']:8s} {extra}")
    for k in ("pytest_gpu", "pytest_random_nets"):
        if ck.results.get(k):
            c = ck.results[k]
            print(f"  {k}: {c['passed']} passed, {c['failures']} failed, {c['errors']} errors, {c['skipped']} skipped")
    for tool, v in ck.results.get("sanitizers", {}).items():
        print(f"  compute-sanitizer {tool}: {v['status']} {v['summary'] or ''}")
    for r in ck.results.get("bench", []):
        if r.get("library") == "ntkfast":
            print(f"  ntkfast {r['workload']:14s} {r['pairs_per_s']:12.0f} pairs/s (n={r['n']})")
        elif r.get("library") == "neural-tangents":
            print(f"  neural-tangents {r['workload']:6s} " + (f"{r['pairs_per_s']:12.0f} pairs/s (block {r['block']}), "
                  f"ntkfast/peer {r.get('ntkfast_over_peer', float('nan')):.1f}x" if r.get("available")
                  else f"unavailable: {r.get('reason', '')[:100]}"))
    ran = [s for s in ck.steps if s["status"] != "skipped"]
    return 0 if ran and all(s["status"] == "ok" for s in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
