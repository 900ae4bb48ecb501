"""ntkfast.predict vs neural-tangents' predict functions (float64), side by side.

neural-tangents is not a dependency: it runs in its own Python (``--peer-python``) through the import shim
of ``--peer-dir`` (default ../shared/peers, see its README). Both sides get the same inputs; the peer
computes its kernels with its own ``stax`` and its predictions with ``predict.gradient_descent_mse_ensemble``
and ``predict.gp_inference``; ntkfast computes its Grams with ``ntkfast.gram`` and its predictions with
``ntkfast.predict``. Prints the relative error ``max|ours - peer| / max|peer|`` of every output and the
worst, twice: with the same Gram blocks given to both predict modules (ntkfast's, passed to the peer
through a look-up kernel function: this isolates the prediction code) and end to end (each library with
its own kernels).
(The peer's ``predict.max_learning_rate`` is not compared: with scipy >= 1.14 it fails, calling
``scipy.linalg.eigvalsh`` with the removed ``eigvals`` keyword.)

    python bench/peer_predict.py --peer-python /opt/ntpeer/bin/python
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

import ntkfast as nf
from ntkfast.predict import GradientFlow, gp_inference

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PEER_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "peers"))
TIMES = [0.0, 0.3, 3.0, 30.0, 300.0, 3000.0]
# (learning_rate, diag_reg): the regularizer is relative to tr(K)/N in both libraries
SETTINGS = [(1.0, 0.0), (0.25, 1e-2)]

PEER = textwrap.dedent("""
    import sys, json, collections, numpy as np
    sys.path.insert(0, sys.argv[1])
    import nt_shim  # noqa: F401
    import jax
    jax.config.update('jax_enable_x64', True)
    from neural_tangents import stax
    from neural_tangents._src import predict
    d = np.load(sys.argv[2])
    X, Xt, Y = d['X'], d['Xt'], d['Y']
    times, settings = json.loads(sys.argv[4]), json.loads(sys.argv[5])
    stax_fn = stax.serial(stax.Dense(1, W_std=2 ** 0.5), stax.Relu(), stax.Dense(1, W_std=2 ** 0.5), stax.Relu(),
                          stax.Dense(1))[2]
    Pair = collections.namedtuple('Pair', 'nngp ntk')

    def given_fn(x1, x2, get, **kw):
        # ntkfast's Gram blocks, looked up by the inputs' sizes (train N != test M)
        key = ('tt' if len(x1) == len(Xt) else 'xx') if x2 is None else 'tx'
        pair = Pair(d['nngp_' + key], d['ntk_' + key])
        return getattr(pair, get) if isinstance(get, str) else pair

    out = {}
    for src, kfn in (('stax', stax_fn), ('same', given_fn)):
        for i, (lr, reg) in enumerate(settings):
            fn = predict.gradient_descent_mse_ensemble(kfn, X, Y, learning_rate=lr, diag_reg=reg)
            for g in ('nngp', 'ntk'):
                p = f'{src}:{i}_{g}'
                te = fn(t=np.array(times), x_test=Xt, get=g, compute_cov=True)
                tr = fn(t=np.array(times), x_test=None, get=g, compute_cov=True)
                out[p + '_test_mean'], out[p + '_test_cov'] = np.asarray(te.mean), np.asarray(te.covariance)
                out[p + '_train_mean'], out[p + '_train_cov'] = np.asarray(tr.mean), np.asarray(tr.covariance)
                inf = fn(t=None, x_test=Xt, get=g, compute_cov=True)
                out[p + '_inf_mean'], out[p + '_inf_cov'] = np.asarray(inf.mean), np.asarray(inf.covariance)
            ktr, kte, ktt = kfn(X, None, ('nngp', 'ntk')), kfn(Xt, X, ('nngp', 'ntk')), kfn(Xt, None, ('nngp', 'ntk'))
            gp = predict.gp_inference(ktr, Y, diag_reg=max(reg, 1e-4))
            for g in ('nngp', 'ntk', 'ntkgp'):
                r = gp(get=g, k_test_train=kte, k_test_test=ktt)
                p = f'{src}:{i}_gp_{g}'
                out[p + '_mean'], out[p + '_cov'] = np.asarray(r.mean), np.asarray(r.covariance)
        if src == 'stax':
            for key, (a, b) in (('xx', (X, None)), ('tx', (Xt, X)), ('tt', (Xt, None))):
                k = kfn(a, b, ('nngp', 'ntk'))
                out['kernel:nngp_' + key], out['kernel:ntk_' + key] = np.asarray(k.nngp), np.asarray(k.ntk)
    np.savez(sys.argv[3], **out)
""")


def grams(X, Xt):
    arch = nf.presets.fc(2)
    g = lambda a, b=None: nf.gram(a, b, arch=arch, dtype="float64", device="cpu")  # noqa: E731
    return g(X), g(Xt, X), g(Xt)


def ours(k, kt, ktt, Y, times, settings):
    out = {}
    for i, (lr, reg) in enumerate(settings):
        for g in ("nngp", "ntk"):
            fl = GradientFlow(k, Y, kind=g, learning_rate=lr, diag_reg=reg, device="cpu")
            te = fl.predict(times, kt, ktt, compute_cov=True)
            out[f"{i}_{g}_test_mean"], out[f"{i}_{g}_test_cov"] = te
            out[f"{i}_{g}_train_mean"] = fl.mean(times)
            out[f"{i}_{g}_train_cov"] = fl.covariance(times)
            out[f"{i}_{g}_inf_mean"], out[f"{i}_{g}_inf_cov"] = fl.predict(np.inf, kt, ktt, compute_cov=True)
        for g in ("nngp", "ntk", "ntkgp"):
            r = gp_inference(k, Y, kt, ktt, kind=g, diag_reg=max(reg, 1e-4), device="cpu")
            out[f"{i}_gp_{g}_mean"], out[f"{i}_gp_{g}_cov"] = r
    return out


def compare(python, peer_dir, n=24, m=9, outputs=3, seed=0):
    rng = np.random.default_rng(seed)
    X, Xt = rng.standard_normal((n, 6)), rng.standard_normal((m, 6))
    Y = rng.standard_normal((n, outputs))
    k, kt, ktt = grams(X, Xt)
    blocks = {f"{g}_{key}": getattr(b, g) for key, b in (("xx", k), ("tx", kt), ("tt", ktt)) for g in ("nngp", "ntk")}
    with tempfile.TemporaryDirectory() as tmp:
        inp, outp = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(inp, X=X, Xt=Xt, Y=Y, **blocks)
        r = subprocess.run([python, "-c", PEER, peer_dir, inp, outp, json.dumps(TIMES), json.dumps(SETTINGS)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"the peer failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        peer = dict(np.load(outp))
    mine = ours(k, kt, ktt, Y, TIMES, SETTINGS)
    errs = {}
    for key, ref in peer.items():
        src, name = key.split(":")
        got = np.asarray(blocks[name] if src == "kernel" else mine[name])
        if got.shape != ref.shape:
            raise AssertionError(f"{key}: shape {got.shape} vs the peer's {ref.shape}")
        errs[key] = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
    return errs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-python", default=sys.executable, help="Python that can import jax + neural-tangents")
    ap.add_argument("--peer-dir", default=DEFAULT_PEER_DIR, help="folder with nt_shim.py")
    args = ap.parse_args(argv)
    errs = compare(args.peer_python, args.peer_dir)
    for key in sorted(errs):
        print(f"{key:<30} {errs[key]:.2e}")
    print(f"fc(2), N=24, M=9, K=3, t in {TIMES} and inf, (learning_rate, diag_reg) in {SETTINGS}")
    for src, what in (("same", "same Gram blocks (ntkfast's) in both predict modules"),
                      ("stax", "end to end, each library with its own kernels"),
                      ("kernel", "the kernels themselves (ntkfast.gram vs stax)")):
        sub = {k: v for k, v in errs.items() if k.startswith(src + ":")}
        worst = max(sub, key=sub.get)
        print(f"worst relative error, {what}: {sub[worst]:.2e} ({worst}; {len(sub)} outputs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
