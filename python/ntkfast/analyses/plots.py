"""The figures of the analyses, written as PNG files; matplotlib is imported here and only here.

Each function takes the result of an analysis and a path, draws with matplotlib's non-interactive Agg
backend and returns the path:

- :func:`plot_fig1`: :func:`ntkfast.analyses.stability.fig1` (Bietti & Mairal's Fig. 1);
- :func:`plot_spectrum`, :func:`plot_activation_spectrum`: :func:`ntkfast.analyses.spectrum.spectrum` and
  :func:`~ntkfast.analyses.spectrum.activation_spectrum`;
- :func:`plot_smoothness`: the curves of :func:`ntkfast.analyses.smoothness.smoothness_experiment`;
- :func:`plot_dynamics_study`: :func:`ntkfast.analyses.dynamics.sphere_study` and
  :func:`~ntkfast.analyses.dynamics.mnist_study`;
- :func:`plot_taylor_study`: :func:`ntkfast.analyses.taylor.run_study`.
"""
from __future__ import annotations

import numpy as np

from . import dynamics as D
from . import spectrum as S

__all__ = ["plot_fig1", "plot_spectrum", "plot_activation_spectrum", "plot_smoothness", "plot_dynamics_study",
           "plot_taylor_study"]


def _pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# ----------------------------------------------------------------------------------------------------------
# stability


def plot_fig1(res, path, title=None, dpi=90):
    """Two panels (CKN, NTK): mean relative distance vs alpha for deformations and deformations plus
    translations (bands: +- one std), with the same-label and any-label levels; written to ``path``."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), sharey=True)
    top = 1.15 * max(res.any_label.max(), res.deform_shift.max())
    for j, (ax, name) in enumerate(zip(axes, ("CKN (NNGP)", "NTK"))):
        for m, s, lab, c in ((res.deform, res.deform_std, "deformations", "C0"),
                             (res.deform_shift, res.deform_shift_std, "deformations + translations", "C1")):
            ax.plot(res.alphas, m[j], "o-", ms=3, color=c, label=lab)
            ax.fill_between(res.alphas, m[j] - s[j], m[j] + s[j], color=c, alpha=0.15, lw=0)
        ax.axhline(res.same_label[j], color="C2", ls="--", label="same label")
        ax.axhline(res.any_label[j], color="C3", ls=":", label="any label")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("deformation amplitude alpha (pixels)")
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean relative distance")
    axes[0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------
# spectrum


def plot_spectrum(sp, path, dpi=90):
    """Log-log plot of mu_k (even k filled, odd k open; values under 100 x floor omitted) with k^-p and
    k^-(p+2) guides; written to ``path`` (PNG)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for i, kd in enumerate(sp.kernels):
        mu, fl = sp.mu[kd.label], sp.floor[kd.label]
        for par, ls in ((0, "-"), (1, "--")):
            sel = (sp.k >= 1) & (sp.k % 2 == par) & (mu > 100 * fl)
            if sel.any():
                ax.loglog(sp.k[sel], mu[sel], ls, lw=1.2, color=f"C{i}", marker="." if sel.sum() < 3 else None,
                          label=f"{kd.label}, {'even' if par == 0 else 'odd'} k")
    p = sp.p
    kk = np.array([10.0, float(sp.k[-1])])
    for name, a, ls in (("ntk", p, (0, (1, 3))), ("kappa1", p + 2, (0, (4, 2, 1, 2)))):
        ref = next((kd for kd in sp.kernels if kd.name == name and kd.depth == 1), None)
        if ref is not None and len(sp.k) > 10:
            ax.loglog(kk, 4 * sp.mu[ref.label][10] * (kk / 10) ** (-a), color="k", ls=ls, lw=0.8,
                      label=f"k^-{a} (x4)")
    ax.set_xlabel("degree k")
    ax.set_ylabel("mu_k")
    ax.set_title(f"Mercer eigenvalues on S^{p - 1} (p = {p}); vanishing degrees not drawn", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_activation_spectrum(sp, path, dpi=90, klin=80):
    """Two panels of the eigenvalues of an :func:`activation_spectrum` (non-vanishing parity, values under
    100 x floor omitted): log-log (power laws are lines; k^-p guide) and log-linear up to k = ``klin``
    (geometric decay is a line); PNG at ``path``."""
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, 4.4))
    for i, kd in enumerate(sp.kernels):
        mu, fl = sp.mu[kd.label], sp.floor[kd.label]
        _, _, live = S.vanishing_degrees(sp.k, mu, fl)
        sel = (sp.k >= 1) & (mu > 100 * fl)
        if live != "all":
            sel &= sp.k % 2 == (0 if live == "even" else 1)
        lab = f"{kd.label} ({live} k)" if live != "all" else kd.label
        a1.loglog(sp.k[sel], mu[sel], "-", lw=1.3, color=f"C{i}", marker="." if sel.sum() < 3 else None, label=lab)
        s2 = sel & (sp.k <= klin)
        a2.semilogy(sp.k[s2], mu[s2], ".-", lw=1.0, ms=4, color=f"C{i}", label=lab)
    p = sp.p
    if len(sp.k) > 10:
        relu = next((kd for kd in sp.kernels if kd.label == "relu"), None)
        base = sp.mu[relu.label][10] if relu is not None else 1e-3
        kk = np.array([10.0, float(sp.k[-1])])
        a1.loglog(kk, 10 * base * (kk / 10) ** (-p), color="k", ls=(0, (1, 3)), lw=0.8, label=f"k^-{p} (x10)")
    what = "NTK" if getattr(sp, "kind", "ntk") == "ntk" else "NNGP"
    for ax, xl in ((a1, "degree k (log)"), (a2, "degree k")):
        ax.set_xlabel(xl)
        ax.set_ylabel("mu_k")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7.5)
    a1.set_title(f"two-layer {what} on S^{p - 1} (p = {p}): log-log", fontsize=10)
    a2.set_title("same, log-linear (geometric decay = straight line)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------
# smoothness


def plot_smoothness(curves, path, dmin=1e-5, dmax=1e-3, dpi=90):
    """Log-log plot of the ratio ||dPhi|| / ||dx|| (relative) against ||dx|| with fitted slopes; PNG. Curves of
    several activations (:func:`smoothness_experiment` with a list) get one panel per architecture."""
    plt = _pyplot()
    if len({c.activation for c in curves if c.activation}) > 1:
        return _plot_by_arch(curves, path, dmin, dmax, dpi, plt)
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    slopes = []
    for i, c in enumerate(curves):
        for kind, mk, ls in (("nngp", "s", "--"), ("ntk", "o", "-")):
            m = getattr(c.dist, kind).mean(axis=1)
            s = c.slope(kind, dmin, dmax)
            name = "NNGP" if c.label.startswith("fc") and kind == "nngp" else ("CKN" if kind == "nngp" else "NTK")
            slopes.append(f"{c.label} {name} {s:.3f}")
            ax.loglog(c.deltas, m / c.deltas, mk + ls, ms=3.5, color=f"C{i}",
                      label=f"{c.label} {name}: slope {s:.3f}, ratio ~ dx^{s - 1:+.3f}")
    ax.axvspan(dmin, dmax, color="0.9", zorder=0, label=f"fit range {dmin:g} .. {dmax:g}")
    ax.set_xlabel("relative input distance ||x - y|| / ||x||")
    ax.set_ylabel("||Phi(x) - Phi(y)|| / ||Phi(x)||  over  ||x - y|| / ||x||")
    half = (len(slopes) + 1) // 2
    ax.set_title("measured log-log slopes of ||dPhi|| against ||dx||:\n" + ", ".join(slopes[:half]) + "\n"
                 + ", ".join(slopes[half:]), fontsize=9)
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _plot_by_arch(curves, path, dmin, dmax, dpi, plt):
    groups = list(dict.fromkeys(c.arch_name or c.label for c in curves))
    acts = list(dict.fromkeys(c.activation for c in curves))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.6 * len(groups), 5.2), squeeze=False)
    for ax, g in zip(axes[0], groups):
        for c in (c for c in curves if (c.arch_name or c.label) == g):
            i = acts.index(c.activation)
            for kind, mk, ls in (("nngp", "s", "--"), ("ntk", "o", "-")):
                m = getattr(c.dist, kind).mean(axis=1)
                s = c.slope(kind, dmin, dmax)
                name = "NNGP" if g.startswith("fc") and kind == "nngp" else ("CKN" if kind == "nngp" else "NTK")
                ax.loglog(c.deltas, m / c.deltas, mk + ls, ms=3, color=f"C{i}", lw=1.1,
                          label=f"{c.activation} {name}: slope {s:.3f}")
        ax.axvspan(dmin, dmax, color="0.9", zorder=0)
        ax.set_xlabel("relative input distance ||x - y|| / ||x||")
        ax.set_ylabel("||Phi(x) - Phi(y)|| / ||Phi(x)||  over  ||x - y|| / ||x||")
        ax.set_title(f"{g}: measured log-log slopes of ||dPhi|| vs ||dx||\n(fit range {dmin:g} .. {dmax:g}, "
                     f"shaded)", fontsize=9)
        ax.legend(fontsize=7, ncol=2, loc="upper right")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------
# training dynamics


def plot_dynamics_study(sphere, mnist, path, dpi=90):
    """Write the study's figure to ``path`` (PNG): the degree-k error over time for each kernel, the
    halving times against 1/mu_k, and (when ``mnist`` is given) MNIST test accuracy against time."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(14, 8.2))
    times = sphere["times"]
    labels = list(sphere["kernels"])
    for ax, label in zip(axes[0], labels):
        r = sphere["kernels"][label]
        for k, e in r["errors"].items():
            ls = "-" if r["mu"][k] > 0 else "--"
            ax.semilogx(times, e, ls, color=f"C{k - 1}", label=f"k = {k}" + ("" if r["mu"][k] > 0 else " (mu_k = 0)"))
            if np.isfinite(r["predicted"][k]):
                ax.axvline(r["predicted"][k], color=f"C{k - 1}", lw=0.6, ls=":")
        ax.axhline(0.5, color="k", lw=0.6)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("training time t (learning rate 1)")
        ax.set_ylabel("||P_k (f_t - f*)||  (||f_k|| = 1)")
        ax.set_title(f"{label}: degree-k error (dotted: ln2/mu_k)", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    ax = axes[1, 0]
    allx = []
    for i, label in enumerate(labels):
        r = sphere["kernels"][label]
        ks = [k for k in r["t_half"] if np.isfinite(r["t_half"][k]) and r["mu"][k] > 0]
        x = np.array([1.0 / r["mu"][k] for k in ks])
        allx += list(x)
        ax.loglog(x, [r["t_half"][k] for k in ks], "o", color=f"C{i}", label=f"{label} (slope {r['slope']:.3f})")
        for k, xx in zip(ks, x):
            ax.annotate(str(k), (xx, r["t_half"][k]), fontsize=7, xytext=(3, -8), textcoords="offset points")
    xx = np.geomspace(min(allx) / 1.5, max(allx) * 1.5, 10)
    ax.loglog(xx, D.LN2 * xx, "k:", lw=0.8, label="t = ln2 / mu_k")
    slope, icpt, npts = D.pooled_halving_fit(sphere)
    ax.loglog(xx, np.exp(icpt) * xx ** slope, color="0.6", lw=0.8, label=f"fit, all {npts} points: slope {slope:.3f}")
    ax.set_xlabel("1 / mu_k")
    ax.set_ylabel("measured halving time of degree k")
    ax.set_title(f"halving time vs 1/mu_k (n = {sphere['config']['n']}, S^{sphere['config']['p'] - 1})", fontsize=9)
    ax.legend(fontsize=7)
    if mnist is not None:
        mt = mnist["times"]
        for kind, name, c in (("ntk", "NTK", "C3"), ("nngp", "CKN/NNGP", "C0")):
            r = mnist[kind]
            axes[1, 1].semilogx(mt, 100 * r["accuracy"][:-1], color=c,
                                label=f"{name} (t = inf: {100 * r['accuracy'][-1]:.1f} %)")
            axes[1, 2].loglog(mt, r["test_loss"][:-1], color=c, label=f"{name} test")
            axes[1, 2].loglog(mt, np.maximum(r["train_loss"][:-1], 1e-12), color=c, ls="--", label=f"{name} train")
        cfg = mnist["config"]
        axes[1, 1].set_title(f"MNIST, bietti_mairal(): test accuracy (train {cfg['n_train']}, test {cfg['n_test']})",
                             fontsize=9)
        axes[1, 1].set_xlabel("training time t (learning rate 1, loss / (2 n 10))")
        axes[1, 1].set_ylabel("test accuracy (%)")
        axes[1, 1].legend(fontsize=7)
        axes[1, 2].set_ylim(1e-6, None)
        axes[1, 2].set_title("MNIST: loss of the mean prediction", fontsize=9)
        axes[1, 2].set_xlabel("training time t")
        axes[1, 2].legend(fontsize=7)
    else:
        axes[1, 1].axis("off")
        axes[1, 2].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------
# quadratic Taylor models


def plot_taylor_study(study, path, threshold=0.1, dpi=100):
    """PNG of test error vs n: one panel per (target, model) (rows: targets, columns: models; panels of
    models not run on a target are left out), one line per d; one legend for the figure (the dimensions and
    the threshold that defines n*), shared axes."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    targets = [tuple(t) for t in study.config["targets"]]
    models = study.config["models"]
    dims = study.config["dims"]
    nr, nc = len(targets), len(models)
    fig, axes = plt.subplots(nr, nc, figsize=(3.1 * nc, 2.5 * nr + 0.9), squeeze=False, sharey=True, sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (p, r) in enumerate(targets):
        for j, mdl in enumerate(models):
            ax = axes[i][j]
            if not any((x["p"], x["r"], x["model"]) == (p, r, mdl) for x in study.records):
                ax.set_visible(False)          # this model was not run on this target
                continue
            for k, d in enumerate(dims):
                cur = sorted((x["n"], x["error"]) for x in study.records
                             if (x["p"], x["r"], x["model"], x["d"]) == (p, r, mdl, d))
                if cur:
                    ax.loglog([c[0] for c in cur], [max(c[1], 1e-4) for c in cur], "o-", ms=3.5, lw=1.5,
                              color=colors[k % len(colors)])
            ax.axhline(threshold, color="0.35", lw=1.0, ls="--")
            ax.set_title(f"{mdl}   (p={p}, r={r})", fontsize=10)
            ax.tick_params(labelsize=8.5, labelbottom=True, labelleft=True)
            ax.grid(alpha=0.25, which="major")
            ax.set_xlabel("training samples n", fontsize=9)
            if j == 0 or not axes[i][j - 1].get_visible():
                ax.set_ylabel("test MSE (target var. 1)", fontsize=9)
    handles = [Line2D([], [], color=colors[k % len(colors)], marker="o", ms=4, lw=1.5, label=f"d = {d}")
               for k, d in enumerate(dims)]
    handles.append(Line2D([], [], color="0.35", lw=1.0, ls="--", label=f"test MSE = {threshold:g} (defines n*)"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=10, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.55 / fig.get_figheight()))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
