// Dual maps of the pointwise layers that read the self-covariances (host and device): for a Gaussian pair
// (u, v) with Var u = px, Var v = py, Cov = s, the NNGP map s' = E[phi(u) phi(v)] and the NTK factor
// E[phi'(u) phi'(v)] that multiplies T. LayerNorm (a deterministic rescaling in the wide limit) uses the
// same interface. Definitions and names follow neural-tangents' stax (docs/layers.md); the angle-based forms
// take theta from atan2 (never arccos of a clamped ratio), so rho = 1 is safe and exact on the diagonal.
#pragma once
#include <cmath>

#include "core/math.hpp"

namespace ntkfast {

enum class ActKind : int { Relu, ABRelu, RectMono, Erf, Gelu, Sin, Poly, Sign, LayerNorm };
constexpr int kNumActKinds = 9;

constexpr int kMaxPolyDegree = 8;     // Monomial, Hermite, Polynomial
constexpr int kMaxRectDegree = 4;     // RectifiedMonomial
constexpr int kPolyCols = kMaxPolyDegree / 2 + 1;

// Parameters of one pointwise op (plain data: copied into the CUDA program blob as is).
struct ActParams {
  ActKind kind = ActKind::Relu;
  int degree = 0;          // RectMono: n; Poly: degree of the polynomial
  double a = 0, b = 0, c = 0;  // ABRelu: slopes (a for x < 0, b for x > 0); Erf, Sin: a f(b x + .) + c; LayerNorm: eps
  // Poly: E[p(u) p(v)] = sum_l q_l(px) q_l(py) s^l with q_l(p) = sum_i q[l][i] p^i; dq: the same for p'.
  double q[kMaxPolyDegree + 1][kPolyCols] = {};
  double dq[kMaxPolyDegree + 1][kPolyCols] = {};
};

// atan2(y, x) for any signs, in (-pi, pi], from the branch-free upper-half version.
template <class T>
NTKFAST_HD T atan2_full(T y, T x) {
  const T a = atan2_upper(y < T(0) ? -y : y, x);
  return y < T(0) ? -a : a;
}

// 2 pi E[relu(u)^n relu(v)^n] = (px py)^(n/2) J_n(theta) (Cho & Saul's arc-cosine kernel of degree n), as a
// polynomial in s, r = n sin(theta) and phi = pi - theta, with P = px py (coefficients of J_n written out).
template <class T>
NTKFAST_HD T arccos_j(int n, T s, T P, T r, T phi) {
  const T s2 = s * s;
  switch (n) {
    case 0:
      return phi;
    case 1:
      return r + phi * s;
    case 2:
      return T(3) * r * s + phi * (P + T(2) * s2);
    case 3:
      return r * (T(4) * P + T(11) * s2) + phi * s * (T(9) * P + T(6) * s2);
    default:  // 4
      return r * s * (T(55) * P + T(50) * s2) + phi * (T(9) * P * P + T(72) * P * s2 + T(24) * s2 * s2);
  }
}

// q_l(p) of a polynomial activation's table row.
template <class T>
NTKFAST_HD T poly_row(const double* row, int n, T p) {
  T acc = T(0);
  for (int i = n - 1; i >= 0; --i) acc = acc * p + static_cast<T>(row[i]);
  return acc;
}

// One step of each kind on an entry: (s, t) -> (s', t') given px = S(x,x)[u,u], py = S(y,y)[u',u'].
template <ActKind K>
struct Act;

template <>
struct Act<ActKind::Relu> {
  template <class T>
  NTKFAST_HD static void step(const ActParams&, T& s, T& t, T px, T py) {
    relu_step(s, t, px, py);
  }
};

// a min(x, 0) + b max(x, 0): s' = f r + (h - f theta) s, t' = t (h - f theta), f = (a - b)^2 / 2 pi,
// h = (a^2 + b^2) / 2.
template <>
struct Act<ActKind::ABRelu> {
  template <class T>
  NTKFAST_HD static void step(const ActParams& A, T& s, T& t, T px, T py) {
    using std::sqrt;
    T r2 = px * py - s * s;
    r2 = r2 > T(0) ? r2 : T(0);
    const T r = sqrt(r2);
    const T theta = atan2_upper(r, s);
    const T f = static_cast<T>((A.a - A.b) * (A.a - A.b) / (2.0 * 3.14159265358979323846));
    const T h = static_cast<T>((A.a * A.a + A.b * A.b) / 2.0);
    const T dot = h - f * theta;
    s = f * r + dot * s;
    t = t * dot;
  }
};

// (x >= 0) x^n: the arc-cosine kernel of degree n; its derivative n (x >= 0) x^(n-1) gives n^2 times degree n-1.
template <>
struct Act<ActKind::RectMono> {
  template <class T>
  NTKFAST_HD static void step(const ActParams& A, T& s, T& t, T px, T py) {
    using std::sqrt;
    const T P = px * py;
    T r2 = P - s * s;
    r2 = r2 > T(0) ? r2 : T(0);
    const T r = sqrt(r2);
    const T phi = Consts<T>::pi - atan2_upper(r, s);
    const int n = A.degree;
    const T deriv = n == 0 ? T(0) : static_cast<T>(n * n) * arccos_j(n - 1, s, P, r, phi) * Consts<T>::inv_2pi;
    // The step (x >= 0) of two all-zero inputs is 1 on both: E = 1, where the angle formula has no angle.
    s = (n == 0 && px == T(0) && py == T(0)) ? T(1) : arccos_j(n, s, P, r, phi) * Consts<T>::inv_2pi;
    t = t * deriv;
  }
};

// a erf(b x) + c: s' = a^2 (2/pi) asin(2 b^2 s / sqrt((1 + 2 b^2 px)(1 + 2 b^2 py))) + c^2, by atan2 (the
// root, the square root of that product minus (2 b^2 s)^2, is >= 1), t' = t a^2 b^2 (4/pi) / root.
template <>
struct Act<ActKind::Erf> {
  template <class T>
  NTKFAST_HD static void step(const ActParams& A, T& s, T& t, T px, T py) {
    using std::sqrt;
    const T b2 = static_cast<T>(A.b * A.b), a2 = static_cast<T>(A.a * A.a);
    const T sb = b2 * s;
    // (1 + 2 b^2 px)(1 + 2 b^2 py) - 4 b^4 s^2 without the cancellation: 1 + 2 b^2 (px + py) + 4 b^4 (px py - s^2)
    T g = px * py - s * s;
    g = g > T(0) ? g : T(0);
    const T q = T(1) + T(2) * b2 * (px + py) + T(4) * b2 * b2 * g;
    const T root = sqrt(q);
    const T two_over_pi = static_cast<T>(2.0 / 3.14159265358979323846);
    s = a2 * two_over_pi * atan2_full(T(2) * sb, root) + static_cast<T>(A.c * A.c);
    t = t * a2 * b2 * T(2) * two_over_pi / root;
  }
};

// x Phi(x): the closed form of neural-tangents' Gelu (Tsuchida et al. 2020); delta > 0 always.
template <>
struct Act<ActKind::Gelu> {
  template <class T>
  NTKFAST_HD static void step(const ActParams&, T& s, T& t, T px, T py) {
    using std::sqrt;
    const T P = px * py, P1 = (px + T(1)) * (py + T(1));
    // P1 - s^2 without the cancellation at large variances: (px py - s^2) + px + py + 1
    T g = P - s * s;
    g = g > T(0) ? g : T(0);
    const T d2 = g + (px + py + T(1));
    const T delta = sqrt(d2);
    const T angle = atan2_full(s, delta);
    const T sn = ((s * s + P * d2) / (P1 * delta) + s * angle) * Consts<T>::inv_2pi + T(0.25) * s;
    const T first = (T(1) / d2 + (T(1) - P) / P1 + T(1)) * s / delta * Consts<T>::inv_2pi;
    t = t * (first + T(0.25) + angle * Consts<T>::inv_2pi);
    s = sn;
  }
};

// a sin(b x + c): s' = a^2/2 (e^{b^2 (s - (px+py)/2)} - e^{-b^2 (s + (px+py)/2)} cos 2c), t' likewise with +.
template <>
struct Act<ActKind::Sin> {
  template <class T>
  NTKFAST_HD static void step(const ActParams& A, T& s, T& t, T px, T py) {
    using std::exp;
    const T b2 = static_cast<T>(A.b * A.b), half_a2 = static_cast<T>(A.a * A.a / 2.0);
    const T m = T(0.5) * (px + py);
    const T e1 = exp(b2 * (s - m));
    const T e2 = exp(-b2 * (s + m)) * static_cast<T>(std::cos(2.0 * A.c));
    s = half_a2 * (e1 - e2);
    t = t * half_a2 * b2 * (e1 + e2);
  }
};

// Polynomials of Gaussians (Monomial, Hermite, Polynomial): sum_l q_l(px) q_l(py) s^l, no square roots.
template <>
struct Act<ActKind::Poly> {
  template <class T>
  NTKFAST_HD static void step(const ActParams& A, T& s, T& t, T px, T py) {
    T sn = T(0), dn = T(0), sl = T(1);
    for (int l = 0; l <= A.degree; ++l) {
      sn += poly_row(A.q[l], kPolyCols, px) * poly_row(A.q[l], kPolyCols, py) * sl;
      dn += poly_row(A.dq[l], kPolyCols, px) * poly_row(A.dq[l], kPolyCols, py) * sl;
      sl *= s;
    }
    s = sn;
    t = t * dn;
  }
};

// sign(x): s' = 1 - 2 theta / pi (0 where an input is all zero). The derivative of sign is 0 almost
// everywhere, so t' = 0: layers before a Sign do not train (neural-tangents' definition).
template <>
struct Act<ActKind::Sign> {
  template <class T>
  NTKFAST_HD static void step(const ActParams&, T& s, T& t, T px, T py) {
    using std::sqrt;
    const T P = px * py;
    T r2 = P - s * s;
    r2 = r2 > T(0) ? r2 : T(0);
    const T theta = P > T(0) ? atan2_upper(sqrt(r2), s) : Consts<T>::half_pi;
    s = T(1) - theta * T(2) / Consts<T>::pi;
    t = T(0);
  }
};

// LayerNorm over channels, per position: divide by the self-covariances (eps as in neural-tangents).
template <>
struct Act<ActKind::LayerNorm> {
  template <class T>
  NTKFAST_HD static void step(const ActParams& A, T& s, T& t, T px, T py) {
    using std::sqrt;
    const T e = static_cast<T>(A.a);
    const T inv = T(1) / sqrt((e + px) * (e + py));
    s = s * inv;
    t = t * inv;
  }
};

// Calls f(Act<K>{}) for the kind of A: the one switch over ActKind, shared by every backend.
template <class F>
NTKFAST_HD void visit_act(ActKind k, F&& f) {
  switch (k) {
    case ActKind::Relu:
      return f(Act<ActKind::Relu>{});
    case ActKind::ABRelu:
      return f(Act<ActKind::ABRelu>{});
    case ActKind::RectMono:
      return f(Act<ActKind::RectMono>{});
    case ActKind::Erf:
      return f(Act<ActKind::Erf>{});
    case ActKind::Gelu:
      return f(Act<ActKind::Gelu>{});
    case ActKind::Sin:
      return f(Act<ActKind::Sin>{});
    case ActKind::Poly:
      return f(Act<ActKind::Poly>{});
    case ActKind::Sign:
      return f(Act<ActKind::Sign>{});
    case ActKind::LayerNorm:
      return f(Act<ActKind::LayerNorm>{});
  }
}

// One pointwise step of any kind on an entry.
template <class T>
NTKFAST_HD void act_step(const ActParams& A, T& s, T& t, T px, T py) {
  visit_act(A.kind, [&](auto act) { decltype(act)::step(A, s, t, px, py); });
}

}  // namespace ntkfast
