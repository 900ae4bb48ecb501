"""Out-of-core, resumable and distributed Gram matrices; the streaming KRR solver; memory budgets."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import data as D
from ntkfast import krr, krr_stream
from ntkfast.kernel.tiled import prepare
from ntkfast.memory import parse_bytes

zarr = pytest.importorskip("zarr")
import ntkfast.kernel.tiled as gram_module  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    X, y = D.load(None)
    return D.normalize(X, "center_scale").astype(np.float32), y


def _eq(a, b):
    return np.array_equal(np.asarray(a[...]), np.asarray(b))


def test_stores_equal_in_memory(digits, tmp_path):
    X = digits[0][:150]
    Y = digits[0][150:190]
    arch = nf.presets.by_name("gap2")
    ref = nf.gram(X, arch=arch, tile=64)
    z = nf.gram(X, arch=arch, tile=64, out=str(tmp_path / "g.zarr"))          # ragged last tiles: 150 = 2*64+22
    assert _eq(z.nngp, ref.nngp) and _eq(z.ntk, ref.ntk)
    assert z.ntk.chunks == (64, 64)
    assert len(os.listdir(tmp_path / "g.zarr" / "nngp" / "ntkfast_done")) == 6           # 3 x 3 tile grid, upper triangle
    m = nf.gram(X, arch=arch, kind="ntk", tile=50, out=str(tmp_path / "g.npy"))
    assert isinstance(m, np.memmap) and _eq(np.load(tmp_path / "g.npy"), ref.ntk)
    # user-provided zarr array (tile defaults to a multiple of its chunks) and memmap
    za = zarr.create_array(str(tmp_path / "u.zarr"), shape=(150, 150), chunks=(32, 32), dtype="float32")
    assert nf.gram(X, arch=arch, kind="nngp", out=za) is za and _eq(za, ref.nngp)
    mm = np.lib.format.open_memmap(str(tmp_path / "u.npy"), mode="w+", dtype="float32", shape=(150, 150))
    nf.gram(X, arch=arch, kind="ntk", out=mm, tile=40)
    assert _eq(mm, ref.ntk) and os.path.exists(str(tmp_path / "u.npy") + ".ntkfast.json")
    # a rectangular X vs Y Gram
    rxy = nf.gram(X, Y, arch=arch)
    zxy = nf.gram(X, Y, arch=arch, tile=32, out=str(tmp_path / "xy.zarr"))
    assert _eq(zxy.nngp, rxy.nngp) and _eq(zxy.ntk, rxy.ntk)


def test_out_validation(digits, tmp_path):
    X = digits[0][:40]
    arch = nf.presets.by_name("gap2")
    with pytest.raises(ValueError, match="kind='nngp' or 'ntk'"):
        nf.gram(X, arch=arch, out=str(tmp_path / "a.npy"))
    with pytest.raises(ValueError, match=r"a\.h5': expected a path ending in \.zarr"):
        nf.gram(X, arch=arch, out=str(tmp_path / "a.h5"))
    za = zarr.create_array(str(tmp_path / "c.zarr"), shape=(40, 40), chunks=(16, 16), dtype="float32")
    with pytest.raises(ValueError, match="multiple of the zarr chunk shape"):
        nf.gram(X, arch=arch, kind="ntk", out=za, tile=24)
    zb = zarr.create_array(str(tmp_path / "d.zarr"), shape=(40, 40), chunks=(16, 16), dtype="float64")
    with pytest.raises(TypeError, match="dtype float32"):
        nf.gram(X, arch=arch, kind="ntk", out=zb)
    open(tmp_path / "e.npy", "wb").close()
    with pytest.raises(ValueError, match="not an ntkfast Gram store"):
        nf.gram(X, arch=arch, kind="ntk", out=str(tmp_path / "e.npy"))


def test_resume_refuses_other_inputs(digits, tmp_path):
    X = digits[0][:60].copy()
    arch = nf.presets.by_name("gap2")
    path = str(tmp_path / "r.zarr")
    nf.gram(X, arch=arch, tile=32, out=path)
    X2 = X.copy()
    X2[7, 3, 3, 0] += 0.5
    with pytest.raises(ValueError, match=r"other arguments \(inputs X: stored 60 x 8 x 8 x 1 float32 \(hash \w+\), "
                                         r"now 60 x 8 x 8 x 1 float32 \(hash \w+\)\)"):
        nf.gram(X2, arch=arch, out=path)
    with pytest.raises(ValueError, match=r"\(architecture: stored gap2, now gap3\); refusing to resume"):
        nf.gram(X, arch=nf.presets.by_name("gap3"), out=path)
    with pytest.raises(ValueError, match="dtype: stored 'float32', now 'float64'"):
        nf.gram(X, arch=arch, dtype="float64", out=path)
    with pytest.raises(ValueError, match=r"kernels: stored \['nngp', 'ntk'\], now \['ntk'\]"):
        nf.gram(X, arch=arch, kind="ntk", out=path)
    with pytest.raises(ValueError, match="tile=16 differs"):
        nf.gram(X, arch=arch, tile=16, out=path)
    npy = str(tmp_path / "r.npy")
    nf.gram(X, arch=arch, kind="ntk", tile=32, out=npy)
    with pytest.raises(ValueError, match="inputs X: stored"):
        nf.gram(X2, arch=arch, kind="ntk", out=npy)


_CHILD = textwrap.dedent("""
    import sys, numpy as np, ntkfast as nf
    X = np.load(sys.argv[1])
    nf.gram(X, arch=nf.presets.by_name("gap3"), tile=16, threads=1, out=sys.argv[2])
""")


def test_sigkill_then_resume_is_bitwise_and_recomputes_nothing(digits, tmp_path, monkeypatch):
    X = digits[0][:300]
    np.save(tmp_path / "x.npy", X)
    store = str(tmp_path / "k.zarr")
    done_dir = os.path.join(store, "nngp", "ntkfast_done")
    n_tiles = 19 * 20 // 2                                   # ceil(300 / 16) = 19 tile rows
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "x.npy"), store])
    try:
        t0 = time.time()
        while time.time() - t0 < 60:
            if os.path.isdir(done_dir) and len([f for f in os.listdir(done_dir) if ".tmp" not in f]) >= 25:
                break
            if child.poll() is not None:
                pytest.fail(f"the child exited (rc {child.returncode}) before it could be killed")
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    markers = {f: os.stat(os.path.join(done_dir, f)).st_mtime_ns for f in os.listdir(done_dir)
               if ".tmp" not in f}
    assert 25 <= len(markers) < n_tiles

    computed = []
    real = gram_module.compute_tile

    def counting(prog, X_, Yv, sx, sy, bounds, *a, **kw):
        computed.append(bounds)
        return real(prog, X_, Yv, sx, sy, bounds, *a, **kw)
    monkeypatch.setattr(gram_module, "compute_tile", counting)
    k = nf.gram(X, arch=nf.presets.by_name("gap3"), out=store)      # same arguments; tile taken from the store
    monkeypatch.setattr(gram_module, "compute_tile", real)

    done_names = {f"{i0 // 16}_{j0 // 16}" for (i0, _), (j0, _) in computed}
    assert len(computed) == n_tiles - len(markers)
    assert not done_names & set(markers)                            # no finished tile recomputed
    for f, t in markers.items():                                     # and no marker rewritten
        assert os.stat(os.path.join(done_dir, f)).st_mtime_ns == t
    ref = nf.gram(X, arch=nf.presets.by_name("gap3"), tile=16)
    assert _eq(k.nngp, ref.nngp) and _eq(k.ntk, ref.ntk)
    assert len([f for f in os.listdir(done_dir) if ".tmp" not in f]) == n_tiles


def test_dask_local_cluster_equals_single_process(digits, tmp_path):
    distributed = pytest.importorskip("distributed")
    import ntkfast.distributed as nd
    X = digits[0][:160]
    arch = nf.presets.by_name("gap2")
    ref = nf.gram(X, arch=arch, tile=48)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        k = nd.gram(X, arch=arch, client=client, out=str(tmp_path / "d.zarr"), tile=48)
        assert _eq(k.nngp, ref.nngp) and _eq(k.ntk, ref.ntk)
        # all tiles marked: a second run computes nothing and returns the same store
        job = prepare(X, arch=arch, out=str(tmp_path / "d.zarr"), resolve=False)
        assert job.pending == [] and nd.run(job, client) == 0
        with pytest.raises(ValueError, match="filesystem the workers share"):
            nd.gram(X, arch=arch, client=client, out=Kernels_of_arrays(160))
    assert len(os.listdir(tmp_path / "d.zarr" / "nngp" / "ntkfast_done")) == 10    # 4 x 4 grid, upper triangle


def Kernels_of_arrays(n):
    return nf.Kernels(np.empty((n, n), np.float32), np.empty((n, n), np.float32))


def test_parse_bytes():
    assert parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("512 MiB") == 512 * 2**20
    assert parse_bytes(1e6) == 10**6
    with pytest.raises(ValueError, match="memory_budget"):
        parse_bytes("2 parsecs")
    with pytest.raises(TypeError, match="memory_budget"):
        parse_bytes([1])
    with pytest.raises(ValueError, match="at least 1 byte"):
        parse_bytes(0)


def test_memory_budget_is_honoured(digits, tmp_path):
    X = digits[0][:600]
    arch = nf.presets.by_name("flat3")
    budget = 3_000_000
    full = 2 * 600 * 600 * 4                                   # both kernels in memory: 2.88 MB
    job = prepare(X, arch=arch, out=str(tmp_path / "b.zarr"), memory_budget=budget)
    assert job.tile < 600 and job.estimate.total <= budget
    t = job.tile
    # the next larger tile would not fit: the budget sets the tile
    from ntkfast.memory import tile_bytes
    prog = job.program()
    assert job.estimate.total - job.estimate.per_tile + tile_bytes(t + 1, 2, 4, "zarr", prog) > budget
    ref = nf.gram(X, arch=arch)
    # Measured in a fresh interpreter: tracemalloc counts every thread, and threads left by earlier tests
    # (Dask clusters, zarr's I/O pool) would be charged to this run; a warm-up run does the lazy imports.
    script = textwrap.dedent(f"""
        import json, tracemalloc, numpy as np, ntkfast as nf
        from ntkfast.kernel.tiled import prepare
        X = np.load({str(tmp_path / 'x.npy')!r})
        # warm-up: lazy imports (zarr codecs, first-time bytecode compilation) are not the run's memory
        prepare(X[:40], arch=nf.presets.by_name("flat3"), out={str(tmp_path / 'w.zarr')!r}, tile=16).run()
        job = prepare(X, arch=nf.presets.by_name("flat3"), out={str(tmp_path / 'm.zarr')!r}, memory_budget={budget})
        tracemalloc.start()
        job.run()
        peak = tracemalloc.get_traced_memory()[1]
        e = job.estimate
        cpp = e.threads * e.per_thread + job.program().cpu_tile_bytes(4, job.tile, job.tile)
        print(json.dumps(dict(peak=peak, tile=job.tile, python_side=e.total - cpp)))
    """)
    np.save(tmp_path / "x.npy", X)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout.strip().splitlines()[-1])
    peak, python_side = m["peak"], m["python_side"]   # the C++ workspace and packed tile are untraced
    print("tracemalloc peak", peak, "model (python side)", python_side, "budget", budget, "tile", t)
    assert m["tile"] == t
    assert peak <= python_side <= budget, (peak, python_side, budget)
    assert peak < full                                                # less than the Gram itself
    job.run()
    k = job.result()
    assert _eq(k.nngp, ref.nngp) and _eq(k.ntk, ref.ntk)
    with pytest.raises(MemoryError, match=r"memory_budget=20 kB is too small: the computation needs [0-9.]+ (kB|MB)"):
        nf.gram(X, arch=arch, out=str(tmp_path / "c.zarr"), memory_budget="20kB")
    with pytest.raises(MemoryError, match=r"out='gram.zarr'"):                 # in memory, the outputs alone
        nf.gram(X, arch=arch, memory_budget=budget)
    with pytest.raises(MemoryError, match="one 600-image tile"):
        nf.gram(X, arch=arch, out=str(tmp_path / "d.zarr"), memory_budget=budget, tile=600)
    assert not os.path.exists(tmp_path / "c.zarr") and not os.path.exists(tmp_path / "d.zarr")


@pytest.mark.parametrize("store", ["npy", "zarr"])
def test_streaming_solver_matches_dense(digits, tmp_path, store):
    X, y = digits
    X, y = X[:400], y[:400]
    arch = nf.presets.by_name("flat3")
    path = str(tmp_path / f"s.{store}")
    nf.gram(X, arch=arch, kind="ntk", tile=100, out=path)
    K = krr_stream.open_gram(path, "ntk")
    Kd = np.asarray(K[...], dtype=np.float64)
    Y, _ = krr.one_hot(y)
    ridge, tol = 1e-4, 1e-9
    dense = krr.solve(Kd, Y, ridge)
    a, info = krr_stream.solve(path, Y, ridge, kind="ntk", tol=tol, rank=100, block_rows=100, return_info=True)
    w = np.linalg.eigvalsh(Kd)
    lam = ridge * np.trace(Kd) / len(Kd)
    assert info.lam == pytest.approx(lam, rel=1e-12)
    cond = (w[-1] + lam) / (max(w[0], 0) + lam)
    assert info.converged and info.residuals.max() <= 10 * tol
    # error <= cond * residual, plus the dense solver's own rounding (cond * eps64)
    err = np.linalg.norm(a - dense) / np.linalg.norm(dense)
    assert err <= cond * (10 * tol + 1e3 * np.finfo(float).eps), (err, cond)
    # the preconditioner earns its pass: plain CG needs more iterations to the same tolerance
    _, plain = krr_stream.solve(K, Y, ridge, tol=tol, rank=0, block_rows=100, return_info=True)
    assert info.iterations < plain.iterations
    # streamed prediction
    Kt = nf.gram(digits[0][400:450], X, arch=arch, kind="ntk")
    Kt64 = Kt.astype(np.float64)
    bound = 2 * Kt.shape[1] * np.finfo(float).eps * (np.abs(Kt64) @ np.abs(a))    # summation-order rounding
    assert np.all(np.abs(krr_stream.predict(Kt, a, block_rows=7) - Kt64 @ a) <= bound)


def test_streaming_solver_single_rhs_and_checks(digits):
    X = digits[0][:200]
    K = nf.gram(X, arch=nf.presets.by_name("flat3"), kind="nngp").astype(np.float64)
    yv = np.sin(np.arange(200.0))
    a = krr_stream.solve(K, yv, 1e-3, tol=1e-10, rank=50, block_rows=64)
    assert a.shape == (200,)
    assert np.allclose(a, krr.solve(K, yv, 1e-3), rtol=0, atol=1e-6 * np.abs(krr.solve(K, yv, 1e-3)).max())
    with pytest.raises(ValueError, match="Y must have shape"):
        krr_stream.solve(K, yv[:10], 1e-3)
    with pytest.raises(ValueError, match="ridge must be"):
        krr_stream.solve(K, yv, -1.0)
    with pytest.raises(MemoryError, match="too small for the streaming solver"):
        krr_stream.solve(K, yv, 1e-3, memory_budget="10kB")


def test_cli_gram_zarr_resumes(digits, tmp_path, capsys):
    from ntkfast.cli import main
    out = str(tmp_path / "cli.zarr")
    args = ["gram", "--arch", "gap2", "-n", "100", "--out", out, "--tile", "32", "--memory-budget", "50MB"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "5,050 pairs to compute (upper triangle of 100 x 100), 10 of 10 tiles of 32 images" in text
    assert main(args) == 0                          # run again: nothing to do, and it says so
    text = capsys.readouterr().out
    assert "0 of 10 tiles of 32 images (10 already done)" in text and "already complete in" in text
    assert "pairs/s" not in text
    X = D.normalize(D.load(None)[0][:100], "center_scale")
    ref = nf.gram(X, arch=nf.presets.by_name("gap2"), tile=32)
    g = zarr.open_group(out, mode="r")
    assert _eq(g["ntk"], ref.ntk) and _eq(g["nngp"], ref.nngp)
    assert main(["gram", "--arch", "gap2", "-n", "100", "--out", str(tmp_path / "x.npz"), "--workers", "2"]) == 2


def test_streaming_solver_memory_budget(digits, tmp_path):
    X, y = digits[0][:400], digits[1][:400]
    path = str(tmp_path / "m.zarr")
    nf.gram(X, arch=nf.presets.by_name("flat3"), kind="ntk", tile=100, out=path)
    Y, _ = krr.one_hot(y)
    budget = 2_500_000
    K = krr_stream.open_gram(path)
    rows = krr_stream.block_rows_for(K, Y.shape[1], 100, budget)
    assert 100 <= rows < 400 and rows % 100 == 0                  # whole chunk rows, fewer than N
    tracemalloc.start()
    a = krr_stream.solve(K, Y, 1e-3, tol=1e-8, rank=100, memory_budget=budget)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print("solver tracemalloc peak", peak, "budget", budget, "rows", rows)
    assert peak <= budget
    Kd = np.asarray(K[...], dtype=np.float64)
    ref = krr.solve(Kd, Y, 1e-3)
    w = np.linalg.eigvalsh(Kd)
    lam = 1e-3 * np.trace(Kd) / len(Kd)
    cond = (w[-1] + lam) / (max(w[0], 0) + lam)
    assert np.linalg.norm(a - ref) / np.linalg.norm(ref) <= cond * (10 * 1e-8 + 1e3 * np.finfo(float).eps)


def test_cli_gram_on_a_dask_scheduler(tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    from ntkfast.cli import main
    out = str(tmp_path / "sched.zarr")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        args = ["gram", "--arch", "gap2", "-n", "90", "--out", out, "--tile", "32", "--scheduler",
                cluster.scheduler_address]
        assert main(args) == 0
        text = capsys.readouterr().out
        assert "4,095 pairs to compute" in text and "Dask scheduler" in text
    X = D.normalize(D.load(None)[0][:90], "center_scale")
    ref = nf.gram(X, arch=nf.presets.by_name("gap2"), tile=32)
    g = zarr.open_group(out, mode="r")
    assert _eq(g["ntk"], ref.ntk) and _eq(g["nngp"], ref.nngp)
