"""KRR test accuracy on an MNIST split with convolutional NTK/NNGP kernels and the RBF / fully-connected
baselines (issue 5's accuracy table).

    python bench/krr_mnist.py --data ../shared/data/mnist --train 400 --test 200

Split: train = the first ``--train`` digits of the MNIST test file, test = the last ``--test`` digits
(the fixed split of ../shared/data/mnist/README.md is --train 8000 --test 2000). Images are normalized
per image (``ntkfast.data.normalize``, 'center_scale'); myrtle5 sees them zero-padded from 28x28 to 32x32;
fc3 and RBF see them flattened. Targets are one-hot; the relative ridge (``K + ridge tr(K)/N I``) is chosen
from ``ntkfast.krr.DEFAULT_RIDGES`` by closed-form leave-one-out accuracy on the training set (for RBF
jointly with the bandwidth); the table gives the test accuracy at that ridge and, for reference, the best
test accuracy over the grid. Prints a markdown table and writes it with the timings and environment to
``--out`` (JSON). ``--cache DIR`` keeps the Grams (.npy) so that a rerun skips their computation.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

import ntkfast as nf
from ntkfast import data, krr


def kernels(names):
    table = {
        "cntk(5,'gap')": (lambda: nf.presets.cntk(5, "gap"), "image"),
        "myrtle(5)": (lambda: nf.presets.myrtle(5), "pad32"),
        "bietti_mairal()": (lambda: nf.presets.bietti_mairal(), "image"),
        "fc(3)": (lambda: nf.presets.fc(3), "flat"),
    }
    return [(n, *table[n]) for n in names]


def prepare(X, how):
    if how == "pad32":
        return np.pad(X, ((0, 0), (2, 2), (2, 2), (0, 0)))
    if how == "flat":
        return X.reshape(len(X), -1)
    return X


def evaluate(K_tr, K_te, Ytr, yte, ridges):
    eig = krr.GramEigen(K_tr)
    sel = krr.select_ridge(K_tr, Ytr, ridges, scoring="accuracy", eigen=eig)
    alphas = eig.solve(Ytr, ridges, check=False)                       # (R, N, C)
    test_acc = np.array([(np.argmax(np.asarray(K_te, dtype=np.float64) @ a, axis=1) == yte).mean()
                         for a in alphas])
    eig.check_conditioning(sel.ridge)
    return {"ridge": sel.ridge, "loo_acc": float(sel.scores[sel.index]), "test_acc": float(test_acc[sel.index]),
            "best_test_acc": float(test_acc.max()), "best_ridge": float(ridges[int(test_acc.argmax())])}


def rbf(Xtr, Xte, Ytr, yte, ridges):
    A, B = Xtr.reshape(len(Xtr), -1), Xte.reshape(len(Xte), -1)
    d_tr = np.maximum((A * A).sum(1)[:, None] + (A * A).sum(1)[None] - 2 * A @ A.T, 0)
    d_te = np.maximum((B * B).sum(1)[:, None] + (A * A).sum(1)[None] - 2 * B @ A.T, 0)
    med = np.median(d_tr[np.triu_indices(len(A), 1)])
    best = None
    for f in (0.125, 0.25, 0.5, 1.0, 2.0, 4.0):          # gamma = f / median squared distance
        g = f / med
        res = evaluate(np.exp(-g * d_tr), np.exp(-g * d_te), Ytr, yte, ridges)
        res["gamma_factor"] = f
        if best is None or res["loo_acc"] > best["loo_acc"]:
            best = res
    return best


def _from_larger_cache(cache, tag, n, m, dtype):
    """Grams of a larger cached split (train N >= n, test M >= m) contain this one: the first n training
    images are the same, and the last m test images are the last m of the larger test set."""
    import glob
    import re
    base = tag[: -len(f"_{n}_{m}_{dtype}")]
    for q in sorted(glob.glob(os.path.join(cache, f"{base}_*_*_{dtype}_tr_nngp.npy"))):
        mt = re.fullmatch(re.escape(base) + rf"_(\d+)_(\d+)_{dtype}_tr_nngp\.npy", os.path.basename(q))
        if not mt:
            continue
        N, M = int(mt.group(1)), int(mt.group(2))
        stem = q[: -len("_tr_nngp.npy")]
        if N >= n and M >= m and all(os.path.exists(f"{stem}_{k}.npy") for k in ("tr_ntk", "te_nngp", "te_ntk")):
            G = {k: np.load(f"{stem}_{k}.npy") for k in ("tr_nngp", "tr_ntk", "te_nngp", "te_ntk")}
            return {"tr_nngp": G["tr_nngp"][:n, :n], "tr_ntk": G["tr_ntk"][:n, :n],
                    "te_nngp": G["te_nngp"][M - m:, :n], "te_ntk": G["te_ntk"][M - m:, :n]}
    return None


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        return "unknown"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist"),
                   help="directory with t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]")
    p.add_argument("--train", type=int, default=400, help="first N digits are the training set (default 400)")
    p.add_argument("--test", type=int, default=200, help="last M digits are the test set (default 200)")
    p.add_argument("--kernels", nargs="+", default=["cntk(5,'gap')", "myrtle(5)", "bietti_mairal()", "fc(3)"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", default=None, help="JSON file for the results (default: print only)")
    p.add_argument("--cache", default=None, help="directory to keep/reuse the Grams as .npy files")
    a = p.parse_args(argv)

    X, y = data.load_mnist(a.data)
    if a.train + a.test > len(X):
        p.error(f"--train + --test must be <= {len(X)}; got {a.train} + {a.test}")
    X = data.normalize(X, "center_scale")
    Xtr, ytr, Xte, yte = X[:a.train], y[:a.train], X[len(X) - a.test:], y[len(y) - a.test:]
    Ytr, _ = krr.one_hot(ytr, np.arange(10))
    ridges = np.array(krr.DEFAULT_RIDGES)
    rows, timings = [], {}
    for name, make, how in kernels(a.kernels):
        arch = make()
        A, B = prepare(Xtr, how), prepare(Xte, how)
        tag = f"{name.replace(chr(39), '').replace('(', '_').replace(')', '').replace(',', '_')}_{a.train}_{a.test}_{a.dtype}"
        paths = {k: os.path.join(a.cache, f"{tag}_{k}.npy") for k in ("tr_nngp", "tr_ntk", "te_nngp", "te_ntk")} \
            if a.cache else None
        sliced = _from_larger_cache(a.cache, tag, a.train, a.test, a.dtype) if a.cache else None
        if paths and all(os.path.exists(q) for q in paths.values()):
            G = {k: np.load(q) for k, q in paths.items()}
            secs = None
        elif sliced is not None:
            G, secs = sliced, None
        else:
            t0 = time.perf_counter()
            k_tr = nf.gram(A, arch=arch, device=a.device, dtype=a.dtype)
            k_te = nf.gram(B, A, arch=arch, device=a.device, dtype=a.dtype)
            secs = time.perf_counter() - t0
            G = {"tr_nngp": k_tr.nngp, "tr_ntk": k_tr.ntk, "te_nngp": k_te.nngp, "te_ntk": k_te.ntk}
            if paths:
                os.makedirs(a.cache, exist_ok=True)
                for k, q in paths.items():
                    np.save(q, G[k])
        pairs = a.train * (a.train + 1) // 2 + a.train * a.test
        timings[name] = {"gram_s": secs, "pairs": pairs, "pairs_per_s": pairs / secs if secs else None}
        print(f"{name}: {pairs} pairs" + (f" in {secs:.1f} s ({pairs / secs:.0f} pairs/s, both kernels)" if secs
                                          else " (Grams from the cache)"), flush=True)
        for kind in ("nngp", "ntk"):
            res = evaluate(G[f"tr_{kind}"], G[f"te_{kind}"], Ytr, yte, ridges)
            rows.append({"kernel": name, "kind": kind.upper() if kind == "ntk" else "NNGP/CKN", **res})
            print(f"  {kind}: {res}", flush=True)
    res = rbf(Xtr, Xte, Ytr, yte, ridges)
    rows.append({"kernel": "RBF", "kind": f"exp(-g|x-y|^2), g = {res['gamma_factor']}/median", **res})
    print(f"RBF: {res}", flush=True)

    head = (f"MNIST (t10k file): train = first {a.train}, test = last {a.test}; {a.dtype} Grams; "
            f"ridge by leave-one-out accuracy")
    lines = [head, "", "| kernel | kind | test accuracy (LOO ridge) | LOO accuracy | ridge | best test accuracy on grid |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['kind']} | {100 * r['test_acc']:.1f} % | {100 * r['loo_acc']:.1f} % | "
                     f"{r['ridge']:g} | {100 * r['best_test_acc']:.1f} % |")
    print("\n".join(lines))
    env = {"commit": git_commit(), "python": sys.version.split()[0], "machine": platform.machine(),
           "cpus": os.cpu_count(), "numpy": np.__version__, "ntkfast": nf.__version__}
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"split": {"train": a.train, "test": a.test}, "dtype": a.dtype, "rows": rows,
                       "timings": timings, "environment": env, "table": lines}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
