"""``ntkfast taylor``: the sample-complexity study of the quadratic Taylor models
(:mod:`ntkfast.analyses.taylor`)."""
from __future__ import annotations

import time

from ..analyses.plots import plot_taylor_study
from ..analyses.taylor import ACTIVATIONS, MODELS, Study, fit_exponents, format_table, run_study
from ..validation import check_choice, check_int, check_real, check_seed


_QUICK = dict(dims=[8, 16], p=[2], r=[1], models=["quadratic", "randomized", "linearized", "ntk"],
              ns=[4, 8, 16, 32, 64, 128, 256, 512], width=200, steps=600)


_FULL = dict(dims=[8, 16, 32], p=[2, 3, 4], r=[1, 2],
             models=["quadratic", "randomized", "hierarchical", "full", "linearized", "ntk"],
             ns=[4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096], width=400, steps=1000)


def register_cli(sub):
    p = sub.add_parser(
        "taylor", help="quadratic Taylor models vs the NTK: sample complexity study",
        description="Fit the quadratic Taylor models of Bai & Lee (ICLR 2020), the randomized network, the "
                    "hierarchical learner of Bai, Chen & Lee (NeurIPS 2020), the linearized model and the "
                    "infinite-width NTK (kernel ridge regression) to low-rank polynomial targets on the sphere; "
                    "plot test error vs n per d and model, and print the n needed to reach a test error and its "
                    "fitted growth exponent in d. The default is a quick run (a few minutes on 2 cores); --full "
                    "runs the whole study (many hours on 2 cores; any option below overrides its defaults, and "
                    "--json saves every fit as it finishes so that --load can merge partial runs).")
    p.add_argument("--full", action="store_true", help="the full study (defaults: " + ", ".join(
        f"{k}={v}" for k, v in _FULL.items()) + ")")
    p.add_argument("--out", default="taylor.png", help="PNG plot path (default taylor.png); checked before any "
                                                       "work")
    p.add_argument("--json", default=None, help="also write the records and the table to this JSON file")
    p.add_argument("--models", default=None, help="comma-separated subset of " + ",".join(MODELS))
    p.add_argument("--dims", default=None, help="comma-separated dimensions d (quick: 8,16)")
    p.add_argument("--p", default=None, help="comma-separated degrees p (quick: 2)")
    p.add_argument("--r", default=None, help="comma-separated ranks r (quick: 1)")
    p.add_argument("--ns", default=None, help="comma-separated training-set sizes (quick: 4,8,..,512)")
    p.add_argument("--max-n", type=int, default=None, help="skip sizes above this (default: none)")
    p.add_argument("--width", type=int, default=None, help="neurons m, even (quick 200, full 400)")
    p.add_argument("--steps", type=int, default=None, help="maximum GD steps (quick 600, full 1000)")
    p.add_argument("--activation", choices=ACTIVATIONS, default=None,
                   help="activation of the trained models (default softplus for even p, tanh for odd p; "
                        "softplus for 'hierarchical')")
    p.add_argument("--noise", type=float, default=0.0, help="Langevin temperature of noisy GD (default 0)")
    p.add_argument("--reg", type=float, default=1e-7, help="R(W) coefficient of 'randomized' (default 1e-7)")
    p.add_argument("--threshold", type=float, default=0.1, help="test MSE defining n* (default 0.1)")
    p.add_argument("--n-test", type=int, default=2000, help="test points (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--load", nargs="+", default=None, metavar="JSON",
                   help="run nothing: merge the records of these --json files of earlier runs, then plot and "
                        "print the table")
    p.set_defaults(func=_cli)


def _ints(name, text):
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated integers; got {text!r}") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"--{name} must be comma-separated positive integers; got {text!r}")
    return vals


def _load(paths):
    """Merge the records of several ``--json`` outputs into one Study (config fields united in order)."""
    import json
    records, cfg = [], None
    for path in paths:
        with open(path) as fh:
            blob = json.load(fh)
        if not isinstance(blob, dict) or "records" not in blob or "config" not in blob:
            raise ValueError(f"--load {path!r} must be a JSON file written by 'ntkfast taylor --json'; it has no "
                             f"'records' and 'config'")
        records += blob["records"]
        if cfg is None:
            cfg = dict(blob["config"])
        else:
            for key in ("dims", "targets", "models", "ns"):
                cfg[key] = cfg[key] + [v for v in blob["config"][key] if v not in cfg[key]]
    cfg["dims"] = sorted(cfg["dims"])
    return Study(records, cfg)


def _cli(args):
    from .common import check_out_option
    threshold = check_real(args.threshold, "--threshold", 0.0, strict=True)
    check_out_option(args.out, None, "--out", (".png",), gram=False)
    if args.json:
        check_out_option(args.json, None, "--json", None, gram=False)
    if args.load:
        t0 = time.perf_counter()
        study = _load(args.load)
        return _report(study, args, threshold, t0)
    cfg = dict(_FULL if args.full else _QUICK)
    for key in ("dims", "p", "r", "ns"):
        text = getattr(args, key)
        if text is not None:
            cfg[key] = _ints(key, text)
    if args.models is not None:
        cfg["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
        for m in cfg["models"]:
            check_choice(m, "--models", MODELS)
    if args.width is not None:
        cfg["width"] = args.width
    if args.steps is not None:
        cfg["steps"] = args.steps
    targets = [(p, r) for p in cfg["p"] for r in cfg["r"]]
    max_n = (lambda p, d: args.max_n) if args.max_n else None
    save = (lambda st: _save(st, args.json, threshold)) if args.json else None
    t0 = time.perf_counter()
    study = run_study(dims=cfg["dims"], ns=sorted(cfg["ns"]), targets=targets, models=cfg["models"],
                      width=cfg["width"], steps=cfg["steps"], n_test=check_int(args.n_test, "--n-test", 1),
                      seed=check_seed(args.seed), randomized_reg=check_real(args.reg, "--reg", 0.0), noise=check_real(args.noise, "--noise", 0.0),
                      activation=args.activation, max_n=max_n, on_record=save)
    return _report(study, args, threshold, t0)


def _save(study, path, threshold, rows=None):
    import json
    blob = dict(config=study.config, threshold=threshold, records=study.records)
    if rows is not None:
        blob["exponents"] = [dict(row, nstar={str(k): v for k, v in row["nstar"].items()}) for row in rows]
    with open(path, "w") as fh:
        json.dump(blob, fh, indent=1)


def _report(study, args, threshold, t0):
    rows = fit_exponents(study, threshold)
    table = format_table(rows, threshold)
    plot_taylor_study(study, args.out, threshold)
    print()
    print(table)
    print(f"\nplot: {args.out}   ({time.perf_counter() - t0:.0f} s)")
    if args.json:
        _save(study, args.json, threshold, rows)
    return 0
