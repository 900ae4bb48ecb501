"""ntkfast.predict against a direct numerical integration of the gradient-flow ODE (scipy solve_ivp,
DOP853, rtol 1e-13, atol 1e-14): the mean (train and test outputs) and the covariance (through the
propagator of the initial outputs) of the trained ensemble, for the NTK and NNGP of presets.fc(2) on
N = 10 train and M = 4 test points with K = 2 outputs. tests/test_predict.py asserts the same to 1e-8.

    python bench/predict_ode.py
"""
import numpy as np
from scipy.integrate import solve_ivp

import ntkfast as nf
from ntkfast.predict import GradientFlow


def main():
    rng = np.random.default_rng(3)
    n, m, k = 10, 4, 2
    X, Xt = rng.standard_normal((n, 5)), rng.standard_normal((m, 5))
    arch = nf.presets.fc(2)
    g = lambda a, b=None: nf.gram(a, b, arch=arch, dtype="float64", device="cpu")  # noqa: E731
    Y = rng.standard_normal((n, k))
    kx, kt, ktt = g(X), g(Xt, X), g(Xt)
    K0 = np.block([[kx.nngp, kt.nngp.T], [kt.nngp, ktt.nngp]])
    times = np.array([0.0, 0.7, 5.0, 40.0, 300.0])
    worst = 0.0
    for kind, lr, reg in (("ntk", 1.0, 0.0), ("ntk", 0.3, 1e-2), ("nngp", 2.0, 0.0)):
        flow = GradientFlow(kx, Y, kind=kind, learning_rate=lr, diag_reg=reg, device="cpu")
        A = getattr(kx, kind) + flow.diag_reg_absolute * np.eye(n)
        B = getattr(kt, kind)
        rate = lr / Y.size

        def rhs(_, z):
            f = z[:(n + m) * k].reshape(n + m, k)
            U = z[(n + m) * k:].reshape(n + m, n + m)
            r = f[:n] - Y
            return np.concatenate([(-rate * np.concatenate([A @ r, B @ r])).ravel(),
                                   (-rate * np.concatenate([A @ U[:n], B @ U[:n]])).ravel()])

        z0 = np.concatenate([np.zeros((n + m) * k), np.eye(n + m).ravel()])
        sol = solve_ivp(rhs, (0, times[-1]), z0, method="DOP853", t_eval=times, rtol=1e-13, atol=1e-14)
        f = sol.y[:(n + m) * k].T.reshape(len(times), n + m, k)
        U = sol.y[(n + m) * k:].T.reshape(len(times), n + m, n + m)
        C = U @ K0 @ np.swapaxes(U, 1, 2)
        got = flow.predict(times, kt, ktt, compute_cov=True)
        errs = {"train mean": np.abs(flow.mean(times) - f[:, :n]).max(),
                "test mean": np.abs(got.mean - f[:, n:]).max(),
                "test covariance": np.abs(got.covariance - C[:, n:, n:]).max()}
        if reg == 0 or kind == "ntk":
            errs["train covariance"] = np.abs(flow.covariance(times) - C[:, :n, :n]).max()
        worst = max(worst, max(errs.values()))
        print(f"kind={kind} learning_rate={lr} diag_reg={reg}: " + ", ".join(f"{a} {b:.1e}" for a, b in errs.items()))
    print(f"worst absolute error vs solve_ivp: {worst:.1e} (max |Y| = {np.abs(Y).max():.2f}, t in {times.tolist()})")


if __name__ == "__main__":
    main()
