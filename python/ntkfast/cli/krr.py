"""``ntkfast krr``: kernel ridge regression end to end (Grams, ridge selection, test accuracy or RMSE)."""
from __future__ import annotations

import numpy as np

from ..data import prepare_images
from ..device import backend
from ..learning.krr import DEFAULT_RIDGES, KRR, _check_ridges, one_hot


_DEFAULT_ARCH = "gap5"
_DIGITS_TEST = 500          # embedded digits: the last 500 are the test set, the first 1297 train


def register_cli(sub):
    """Add the ``krr`` subcommand to an argparse subparsers object (see :mod:`ntkfast.cli`)."""
    import argparse

    from .common import add_compute_args, add_data_args
    p = sub.add_parser(
        "krr", help="kernel ridge regression: Gram, ridge by leave-one-out, test accuracy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Classify images by kernel ridge regression on one-hot labels with the NTK or NNGP/CKN of\n"
                    "an architecture: compute the training Gram and the test-vs-train Gram, pick the ridge\n"
                    "from a grid by closed-form leave-one-out accuracy, print accuracy and timings.\n"
                    "Real-valued targets (not all integers) are regressed instead: ridge by leave-one-out\n"
                    "mean squared error, test RMSE and R^2 (see --task).\n\n"
                    "Ridges are relative to the trace: K + ridge * tr(K)/N * I.\n"
                    "With no options: gap5 NTK on the embedded 8x8 digits, train = first 1297, test = last 500.\n"
                    "Before each long Gram it prints the pairs and an estimated time (measured on a few pairs).",
        epilog="examples:\n"
               "  ntkfast krr\n"
               "  ntkfast krr --arch bietti_mairal --kind nngp --data ../shared/data/mnist --train 2000 --test 500\n"
               "  ntkfast krr --arch myrtle5 --pad 32 --data mnist/ --ridge 1e-4,1e-3 --out pred.csv --progress")
    add_data_args(p)
    p.add_argument("--test-data", default=None,
                   help="a separate test set (same forms as --data); default: split --data into train/test")
    p.add_argument("--split", default="t10k", metavar="PREFIX",
                   help="IDX file prefix read from directories, e.g. 't10k' (default) or 'train'")
    p.add_argument("--train", type=int, default=None, metavar="N",
                   help="training set: the first N items (default: all but the test set)")
    p.add_argument("--test", type=int, default=None, metavar="M",
                   help=f"test set: the last M items of --data, or the first M of --test-data (default: the "
                        f"items after --train; without --train, {_DIGITS_TEST} for the embedded digits, a quarter "
                        f"of a given set, all of --test-data)")
    p.add_argument("--arch", default=_DEFAULT_ARCH,
                   help=f"preset name: gapN, flatN, myrtle5|7|10, bietti_mairal, fcN (default {_DEFAULT_ARCH})")
    p.add_argument("--kind", choices=("ntk", "nngp"), default="ntk", help="kernel (default ntk)")
    p.add_argument("--ridge", default=None, metavar="R[,R...]",
                   help="relative ridge or comma-separated grid, selected by --cv (default "
                        + ",".join(f"{r:g}" for r in DEFAULT_RIDGES) + ")")
    p.add_argument("--cv", default="loo", metavar="loo|K",
                   help="ridge selection: 'loo' (closed form, default) or K for K-fold")
    p.add_argument("--task", choices=("auto", "classify", "regress"), default="auto",
                   help="classify (one-hot KRR on integer labels, accuracy) or regress (KRR on the targets, RMSE "
                        "and R^2); default auto: classify when every target is an integer, else regress")
    p.add_argument("--pad", type=int, default=None, metavar="SIZE",
                   help="zero-pad images to SIZE x SIZE (e.g. 32 for myrtle on 28x28 MNIST); SIZE >= the image "
                        "side")
    p.add_argument("--out", default=None, help="write test predictions: .npy (labels or values) or .csv "
                                               "(index,predicted[,label]); checked before any work")
    add_compute_args(p)
    p.add_argument("--gram-store", default=None, metavar="PATH.zarr",
                   help="beyond memory: write the train Gram to PATH.zarr and the test Gram beside it "
                        "(PATH_test.zarr), both resumable, and solve by streamed Nystrom-preconditioned CG "
                        "(ntkfast.krr_stream) for one --ridge")
    p.add_argument("--memory-budget", default=None, metavar="BYTES",
                   help="with --gram-store: host memory bound of the Gram and the solver, e.g. 500MB")
    p.set_defaults(func=_cli_krr)


def _parse_ridges(text):
    if text is None:
        return np.array(DEFAULT_RIDGES)
    try:
        vals = [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--ridge must be a float or comma-separated floats >= 0; got {text!r}") from None
    return _check_ridges(vals, "--ridge")[0]


def _parse_cv(text):
    if text == "loo":
        return "loo"
    try:
        k = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"--cv must be 'loo' or an int number of folds >= 2; got {text!r}") from None
    if k < 2:
        raise ValueError(f"--cv must be 'loo' or an int number of folds >= 2; got {k}")
    return k


def targets_task(y, task="auto", name="--data"):
    """'classify' or 'regress' for targets ``y`` and the requested ``task`` ('auto', 'classify', 'regress').

    auto: classify when y is 1-d and every value is an integer (int, bool or integral floats), else regress.
    Raises ValueError for 'classify' with non-integer or multi-column targets, naming ``name``.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{name} targets must be numeric (integer class labels or real values); got dtype {y.dtype}")
    integral = y.ndim == 1 and (y.dtype.kind in "biu" or bool(np.all(np.isfinite(y) & (y == np.round(y)))))
    if task == "auto":
        return "classify" if integral else "regress"
    if task == "classify" and not integral:
        bad = y.ravel()[~(y.ravel() == np.round(y.ravel()))][:3] if y.dtype.kind == "f" else []
        raise ValueError(f"--task classify needs integer class labels (N,); {name} has "
                         + (f"targets of shape {y.shape}" if y.ndim != 1 else
                            f"non-integer targets (e.g. {', '.join(f'{v:g}' for v in bad)})")
                         + "; use --task regress (or the default, auto)")
    return task


def _cli_krr(args):
    import time

    from .. import data as D
    from .common import (check_compute_args, check_out_option, print_plan, resume_hint)
    from ..kernel.tiled import prepare
    from ..kernel.inputs import to_nhwc
    from ..storage.memory import parse_bytes
    from ..kernel.presets import by_name

    # every check that needs no data, before loading any
    arch = by_name(args.arch)
    ridges = _parse_ridges(args.ridge)
    cv = _parse_cv(args.cv)
    check_compute_args(args)
    check_out_option(args.out, None, "--out", (".npy", ".csv"), gram=False)
    for name in ("train", "test", "pad"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name} must be >= 1; got {v}")
    store = args.gram_store
    if store is not None:
        check_out_option(store, args.kind, "--gram-store", (".zarr",))
        check_out_option(store[:-5] + "_test.zarr", args.kind, "--gram-store (its test store)", (".zarr",))
        if args.ridge is None or len(ridges) != 1:
            raise ValueError("--gram-store solves for one ridge (no leave-one-out from a store): pass --ridge R; "
                             f"got {'the default grid' if args.ridge is None else f'{len(ridges)} ridge values'}")
        if args.memory_budget is not None:
            parse_bytes(args.memory_budget, "--memory-budget")
    elif args.memory_budget is not None:
        raise ValueError("--memory-budget applies with --gram-store; pass both or neither")
    device = backend(args.device, "--device")

    def load(src, option):
        X, y = D.load(src) if src is None or src == D.DEFAULT_NAME or not _is_dir(src) else \
            D.load_mnist(src, split=args.split)
        return to_nhwc(X, args.layout, option, option="--layout"), y

    X, y = load(args.data, "--data")
    if y is None:
        raise ValueError(f"--data must provide labels (an IDX directory, the embedded digits or an .npz with y); "
                         f"{args.data!r} has none")
    if args.test_data is None:
        test = args.test
        if test is None and (args.data is None or args.data == D.DEFAULT_NAME) and args.train is None:
            test = _DIGITS_TEST
        Xtr, ytr, Xte, yte = D.split(X, y, args.train, test)
    else:
        Xte, yte = load(args.test_data, "--test-data")
        Xtr, ytr = X[:args.train] if args.train else X, y[:args.train] if args.train else y
        if args.test is not None:
            if args.test > len(Xte):
                raise ValueError(f"--test must be <= the {len(Xte)} items of --test-data; got {args.test}")
            Xte, yte = Xte[:args.test], (None if yte is None else yte[:args.test])
    if Xtr.shape[1:] != Xte.shape[1:]:
        raise ValueError(f"train and test images must have the same shape; got train {Xtr.shape[1:]} and "
                         f"test {Xte.shape[1:]}")
    if args.pad is not None and Xtr.ndim == 4 and args.pad < max(Xtr.shape[1:3]):
        raise ValueError(f"--pad must be >= the image side {max(Xtr.shape[1:3])} (images are "
                         f"{Xtr.shape[1]}x{Xtr.shape[2]}); got {args.pad}")
    task = targets_task(ytr, args.task)
    if task == "classify":
        classes = np.unique(ytr)
        if len(classes) < 2:
            raise ValueError(f"the training labels must contain at least 2 classes; got 1 class: {classes.tolist()}")
        Ytr, _ = one_hot(ytr, classes)
    else:
        classes = None
        Ytr = np.asarray(ytr, dtype=np.float64)
        Ytr = Ytr[:, None] if Ytr.ndim == 1 else Ytr.reshape(len(Ytr), -1)
    Xtr, Xte = prepare_images(Xtr, Xte, arch, normalize=args.normalize, pad=args.pad)
    arch.plan(Xtr.shape[1:])          # a net that does not fit the images fails here, before any work
    n, m = len(Xtr), len(Xte)
    print(f"ntkfast krr: arch={args.arch} kind={args.kind} device={device} dtype={args.dtype}")
    what = (f"{len(classes)} classes" if task == "classify" else
            f"real-valued targets ({Ytr.shape[1]} output{'s' if Ytr.shape[1] > 1 else ''}): regression")
    print(f"  data     : {args.data or D.DEFAULT_NAME}"
          + (f" / test {args.test_data}" if args.test_data else "")
          + f"; train {n} x {tuple(Xtr.shape[1:])}, test {m}; {what}; normalize={args.normalize}",
          flush=True)

    kw = dict(arch=arch, kind=args.kind, device=device, dtype=args.dtype, tile=args.tile, threads=args.threads,
              memory_budget=args.memory_budget if store is not None else None)
    args.store_option = "--gram-store"
    job_tr = prepare(Xtr, out=store, progress=args.progress, **kw)
    job_te = prepare(Xte, Xtr, out=None if store is None else store[:-5] + "_test.zarr", progress=args.progress,
                     **kw)
    hints = [h for h in (resume_hint(job_tr, "--gram-store"), resume_hint(job_te, "--gram-store")) if h]
    args.resume_hint = (lambda: "; ".join(h() for h in hints)) if hints else None
    estimates = [print_plan(job, label) for job, label in ((job_tr, "train"), (job_te, "test"))]
    if all(e is not None for e in estimates) and len(estimates) == 2:
        from .common import format_seconds
        print(f"  {'':<9}  about {format_seconds(sum(estimates))} of Gram time in all", flush=True)
    complete = {id(job_tr): job_tr.complete, id(job_te): job_te.complete}
    t0 = time.perf_counter()
    job_tr.run(progress="train Gram" if args.progress else False)
    K = job_tr.result()
    t1 = time.perf_counter()
    job_te.run(progress="test Gram" if args.progress else False)
    Kt = job_te.result()
    t2 = time.perf_counter()

    def speed(job, dt):
        if complete[id(job)]:
            return f"already complete in {job.store.location}"
        pairs = job.total_pairs
        return f"{dt:.2f} s ({pairs:,} pairs, {pairs / max(dt, 1e-9):,.0f} pairs/s)"
    print(f"  gram     : train {speed(job_tr, t1 - t0)}, test {speed(job_te, t2 - t1)}", flush=True)

    score = "accuracy" if task == "classify" else "mse"
    if store is not None:
        from ..learning import krr_stream
        alpha, info = krr_stream.solve(K, Ytr, ridges[0], memory_budget=args.memory_budget,
                                       device="cpu" if device == "cpu" else "auto", return_info=True)
        F = krr_stream.predict(Kt, alpha, memory_budget=args.memory_budget)
        t3 = time.perf_counter()
        print(f"  solve    : {t3 - t2:.2f} s (streamed Nystrom-PCG from {store}: {info.iterations} iterations, "
              f"{info.passes} passes, max residual {float(np.max(info.residuals)):.1e})")
        print(f"  ridge    : {ridges[0]:g} (relative to tr(K)/N; fixed)")
    else:
        model = KRR(ridges, cv=cv, scoring=score, device="cpu" if device == "cpu" else "auto").fit(K, Ytr)
        F = model.predict(Kt)
        t3 = time.perf_counter()
        sel = model.selection_
        if sel is None:
            how = "fixed"
        else:
            crit = "accuracy" if task == "classify" else "mean squared error"
            val = f"{100 * sel.scores[sel.index]:.2f} %" if task == "classify" else f"{-sel.scores[sel.index]:.4g}"
            how = f"{'leave-one-out' if cv == 'loo' else f'{cv}-fold'} {crit} {val}"
        print(f"  solve    : {t3 - t2:.2f} s (float64 eigendecomposition of {n} x {n}, {len(ridges)} ridge(s))")
        print(f"  ridge    : {model.ridge_:g} (relative to tr(K)/N; {how})")
    F = np.asarray(F)
    if task == "classify":
        pred = classes[np.argmax(F, axis=1)]
    else:
        pred = F[:, 0] if (np.ndim(ytr) == 1) else F
    return _report(args, pred, yte, m, t0, t3, task)


def _report(args, pred, yte, m, t0, t3, task="classify"):
    """Accuracy (or RMSE and R^2), predictions file and total time of ``ntkfast krr``."""
    if yte is not None and task == "classify":
        acc = float(np.mean(pred == yte))
        print(f"  accuracy : {100 * acc:.2f} % on {m} test items ({int(np.sum(pred == yte))}/{m})")
    elif yte is not None:
        t = np.asarray(yte, dtype=np.float64).reshape(np.shape(pred))
        mse = float(np.mean((pred - t) ** 2))
        var = float(np.mean((t - t.mean(axis=0)) ** 2))
        r2 = 1 - mse / var if var > 0 else float("nan")
        print(f"  error    : RMSE {mse ** 0.5:.4g}, R^2 {r2:.4f} on {m} test items (target std {var ** 0.5:.4g})")
    if args.out:
        if args.out.endswith(".npy"):
            np.save(args.out, pred)
        else:
            with open(args.out, "w") as f:
                f.write("index,predicted" + (",label" if yte is not None else "") + "\n")
                for i, pv in enumerate(pred):
                    pv = ";".join(f"{v:g}" for v in pv) if np.ndim(pv) else (f"{pv:g}" if task == "regress" else pv)
                    tv = "" if yte is None else ("," + (";".join(f"{v:g}" for v in np.ravel(yte[i]))
                                                         if task == "regress" else str(yte[i])))
                    f.write(f"{i},{pv}{tv}\n")
        print(f"  written  : {args.out}")
    print(f"  total    : {t3 - t0:.2f} s")
    return 0


def _is_dir(path):
    import os
    return os.path.isdir(os.fspath(path))
