"""The sample-complexity study of the quadratic Taylor models against the NTK (Bai & Lee, ICLR 2020).

:func:`run_study` fits every model to targets f*(x) = c sum_{s<=r} (beta_s^T x)^p (:class:`PolynomialTarget`)
with x uniform on the sphere of radius sqrt(d) (so beta^T x has variance 1 for a unit beta) for several d and
a log grid of n, finds the n needed to reach a test error (MSE against a unit-variance target), and fits its
growth with d; ``ntkfast taylor`` drives it from the command line. The study uses softplus for even p and
tanh for odd p (:func:`default_activation`), softplus for the hierarchical learner.

The models, the network and the training loop are those of :mod:`ntkfast.analyses.taylor.model`; the
figure is :func:`ntkfast.analyses.plots.plot_taylor_study`, the command line :mod:`ntkfast.cli.taylor`.
"""
from __future__ import annotations

import math
import time
from collections import namedtuple

import numpy as np

from ...validation import check_choice, check_seed
from .model import MODELS, PolynomialTarget, TaylorModel, sphere

__all__ = ["THEORY_EXPONENT", "Study", "hierarchical_features", "default_activation", "run_study", "crossing",
           "fit_exponents", "format_table"]

#: Theory's exponent e in n ~ d^e for a degree-p target (None: no claim). Bai & Lee; Bai, Chen & Lee.
#: Bai, Chen & Lee prove d^ceil(p/2) for the hierarchical learner (for p >= 4 an improvement over d^(p-1);
#: for p = 2, 3 the same exponent as the quadratic model).
THEORY_EXPONENT = {"ntk": lambda p: p, "linearized": lambda p: p, "quadratic": lambda p: p - 1,
                   "randomized": lambda p: p - 1, "hierarchical": lambda p: math.ceil(p / 2),
                   "full": lambda p: None}

Study = namedtuple("Study", ["records", "config"])
Study.__doc__ = """Result of :func:`run_study`. records: list of dicts (p, r, d, n, model, activation, error,
seconds, steps); config: dict of the settings."""


def hierarchical_features(d, p):
    """Degree-2 random features of the study's hierarchical representation: none for p <= 2 (h = [1, x]),
    else d(d+1)/2 - 1, all degree-2 directions (D = Theta(d^ceil(p/2)) for p = 3, 4, the size of the
    representation of Bai, Chen & Lee; with D = d^(p/2) < d(d+1)/2 random quadratics, a given (beta^T x)^2 is
    only partly in their span and the fit stalls at the projection error)."""
    return 0 if p <= 2 else d * (d + 1) // 2 - 1


def default_activation(p, model="quadratic"):
    """The study's activation: softplus (even sigma'') for even p, tanh (odd sigma'') for odd p. f^(2)(x) has
    the parity of sigma'' (exactly, for any W0 and W), so softplus fits only even targets and tanh only odd
    ones. The hierarchical learner always uses softplus: its f^(2) is even in h(x), which does not make it
    even in x (h(-x) = [1, -x, q(x)]), and E sigma'' > 0 lets it form the quadratic forms in h that a target
    (beta^T x)^3 = (beta^T x) (beta^T x)^2 or (beta^T x)^4 is; tanh would need cubic forms in h (measured at
    d = 8, p = 3, n = 256: test MSE 0.26 with tanh, 0.006 with softplus)."""
    if model == "hierarchical":
        return "softplus"
    return "softplus" if p % 2 == 0 else "tanh"


def run_study(*, dims=(8, 16), ns=(16, 32, 64, 128, 256, 512), targets=((2, 1),),
              models=("quadratic", "linearized", "ntk"), width=200, steps=1000, n_test=2000, seed=0,
              randomized_reg=1e-7, noise=0.0, activation=None, max_n=None, log=print, on_record=None):
    """Test error of each model for each target (p, r), dimension d and sample size n.

    dims : dimensions d; ns : training-set sizes (the same grid for every d, points with n > max_n(d)
    skipped when ``max_n`` is a callable (p, d) -> int or None); targets : (p, r) pairs;
    models : subset of ``MODELS``; width, steps : of the trained models; n_test : test points.
    Test error = mean squared error on fresh sphere points against the unit-variance target (so 1 is the
    error of predicting 0 for a centered target). One training set per (target, d, n), shared by the models.
    log : print-like callable for one line per fit, or None. on_record : called with the partial
    :class:`Study` after each fit (e.g. to save it). Returns :class:`Study`.
    """
    for mdl in models:
        check_choice(mdl, "models[i]", MODELS)
    records = []
    base = np.random.default_rng(check_seed(seed))
    cfg = dict(dims=list(dims), ns=list(ns), targets=[list(t) for t in targets], models=list(models),
               width=width, steps=steps, n_test=n_test, seed=seed, randomized_reg=randomized_reg, noise=noise,
               activation=activation)
    for (p, r) in targets:
        for d in dims:
            tseed = int(base.integers(2 ** 31))
            target = PolynomialTarget(d, r, p, seed=tseed)
            Xte = sphere(n_test, d, seed=tseed + 1)
            yte = target(Xte)
            for n in ns:
                if max_n is not None and max_n(p, d) is not None and n > max_n(p, d):
                    continue
                X = sphere(n, d, seed=tseed + 2 + n)
                y = target(X)
                for mdl in models:
                    act = activation or default_activation(p, mdl)
                    kw = dict(width=width, activation=act, steps=steps, noise=noise, seed=tseed + 7)
                    if mdl == "randomized":
                        kw["reg"] = randomized_reg
                    if mdl == "hierarchical":
                        kw["features"] = hierarchical_features(d, p)
                    t0 = time.perf_counter()
                    est = TaylorModel(mdl, **kw).fit(X, y)
                    err = float(np.mean((est.predict(Xte) - yte) ** 2))
                    dt = time.perf_counter() - t0
                    rec = dict(p=p, r=r, d=d, n=n, model=mdl, activation=act if mdl != "ntk" else "relu-ntk",
                               error=err, seconds=dt,
                               steps=int(est.history_.steps) if hasattr(est, "history_") else 0)
                    records.append(rec)
                    if log:
                        log(f"p={p} r={r} d={d:3d} n={n:5d} {mdl:12s} test error {err:8.4f}  ({dt:5.1f} s)")
                    if on_record:
                        on_record(Study(records, cfg))
    return Study(records, cfg)


def crossing(ns, errors, threshold):
    """Smallest n at which the error curve first reaches ``threshold``, by linear interpolation of
    log(error) against log(n) between the last grid point above and the first one at or below it.

    ns increasing (K,), errors (K,). Returns float n, or None when no grid point reaches the threshold
    (the true n* is then beyond the grid). A curve already below the threshold at its first point returns
    that point (n* is at most that)."""
    ns, errors = np.asarray(ns, float), np.asarray(errors, float)
    below = np.nonzero(errors <= threshold)[0]
    if below.size == 0:
        return None
    i = int(below[0])
    if i == 0:
        return float(ns[0])
    x0, x1 = math.log(ns[i - 1]), math.log(ns[i])
    e0, e1 = math.log(errors[i - 1]), math.log(max(errors[i], 1e-300))
    t = (math.log(threshold) - e0) / (e1 - e0)
    return float(math.exp(x0 + t * (x1 - x0)))


def fit_exponents(study, threshold=0.1):
    """Per (p, r, model): n*(d) from :func:`crossing` and the least-squares slope of log n* on log d.

    Returns a list of dicts (p, r, model, theory, exponent (None when fewer than 2 dims have an n* inside
    the grid), nstar {d: n* or None}, below_grid [d whose first grid point already reaches the threshold, so
    that n* <= that point; excluded from the fit], beyond_grid [d that never reach it])."""
    rows = []
    keys = []
    for rec in study.records:
        k = (rec["p"], rec["r"], rec["model"])
        if k not in keys:
            keys.append(k)
    for (p, r, mdl) in keys:
        recs = [x for x in study.records if (x["p"], x["r"], x["model"]) == (p, r, mdl)]
        nstar, first = {}, {}
        for d in sorted({x["d"] for x in recs}):
            cur = sorted((x["n"], x["error"]) for x in recs if x["d"] == d)
            nstar[d] = crossing([c[0] for c in cur], [c[1] for c in cur], threshold)
            first[d] = cur[0][0]
        ok = [d for d in nstar if nstar[d] is not None and nstar[d] > first[d]]
        exponent = None
        if len(ok) >= 2:
            exponent = float(np.polyfit(np.log(ok), np.log([nstar[d] for d in ok]), 1)[0])
        censored = [d for d in nstar if nstar[d] is None]
        rows.append(dict(p=p, r=r, model=mdl, theory=THEORY_EXPONENT[mdl](p), exponent=exponent, nstar=nstar,
                         below_grid=[d for d in nstar if nstar[d] is not None and nstar[d] <= first[d]],
                         beyond_grid=censored))
    return rows


def format_table(rows, threshold):
    """Markdown table of :func:`fit_exponents` rows."""
    dims = sorted({d for row in rows for d in row["nstar"]})
    head = ["target", "model", "theory", "fitted"] + [f"n* (d={d})" for d in dims]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        th = "-" if row["theory"] is None else f"{row['theory']:g}"
        ex = "n/a" if row["exponent"] is None else f"{row['exponent']:.2f}"
        if row["exponent"] is not None and (row.get("beyond_grid") or row.get("below_grid")):
            ex += " †"
        cells = []
        for d in dims:
            v = row["nstar"].get(d, "missing")
            if v == "missing":
                cells.append("-")
            elif v is None:
                cells.append(">grid")
            else:
                cells.append(("<=" if d in row.get("below_grid", ()) else "") + f"{v:.0f}")
        tgt = f"p={row['p']}, r={row['r']}"
        lines.append("| " + " | ".join([tgt, row["model"], th, ex] + cells) + " |")
    lines.append(f"\nn* = training-set size at which the test MSE (target variance 1) first reaches "
                 f"{threshold:g} (log-log interpolation); '>grid': not reached; '<=n': reached at the first grid "
                 f"point; fitted = least-squares slope of log n* on log d over the dims with n* inside the grid; "
                 f"†: some dims are outside the grid and left out of the fit (a '>grid' at a larger d means "
                 f"faster growth than the fitted slope).")
    return "\n".join(lines)
