// The per-entry arithmetic shared by the CPU and CUDA backends (host and device).
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define NTKFAST_HD __host__ __device__ __forceinline__
#else
#define NTKFAST_HD inline
#endif

namespace ntkfast {

template <class T> struct Consts;
template <> struct Consts<float> {
  static constexpr float pi = 3.14159265358979323846f, half_pi = 1.57079632679489661923f;
  static constexpr float inv_2pi = 0.159154943091895335769f;
};
template <> struct Consts<double> {
  static constexpr double pi = 3.14159265358979323846, half_pi = 1.57079632679489661923;
  static constexpr double inv_2pi = 0.159154943091895335769;
};

// atan(a) for a in [0, 1]. float: odd polynomial, 8e-8 relative error (fitted here, Lawson-weighted
// least squares); double: reduction to [0, tan(pi/8)] then a polynomial of 2e-16 relative error.
NTKFAST_HD float atan_unit(float a) {
  const float t = a * a;
  float p = 0.0029205087259453577f;
  p = p * t - 0.016367196762578688f;
  p = p * t + 0.043210678714642195f;
  p = p * t - 0.07552115014467452f;
  p = p * t + 0.1066595865506558f;
  p = p * t - 0.14211043842627574f;
  p = p * t + 0.1999377146416305f;
  p = p * t - 0.3333315267928233f;
  return a + a * t * p;
}

NTKFAST_HD double atan_unit(double a) {
  const bool big = a > 0.41421356237309503;  // tan(pi/8): atan(a) = pi/4 + atan((a-1)/(a+1))
  const double b = big ? (a - 1.0) / (a + 1.0) : a;
  const double t = b * b;
  double p = 0.021259748605951784;
  p = p * t - 0.0435908706714565;
  p = p * t + 0.05692536010362825;
  p = p * t - 0.066411205881461;
  p = p * t + 0.0769006822629149;
  p = p * t - 0.09090782406771446;
  p = p * t + 0.11111106653319903;
  p = p * t - 0.1428571419525408;
  p = p * t + 0.19999999999088858;
  p = p * t - 0.3333333333333015;
  return (big ? 0.78539816339744831 : 0.0) + (b + b * t * p);
}

// atan2(y, x) for y >= 0, in [0, pi]. Branch-free selects so that lane loops vectorize.
template <class T>
NTKFAST_HD T atan2_upper(T y, T x) {
  const T ax = x < T(0) ? -x : x;
  const T mx = y > ax ? y : ax;
  const T mn = y > ax ? ax : y;
  const T a = mx > T(0) ? mn / mx : T(0);
  T r = atan_unit(a);
  r = y > ax ? Consts<T>::half_pi - r : r;
  r = x < T(0) ? Consts<T>::pi - r : r;
  return r;
}

// One ReLU step on an entry (s = S, t = T) given the self-covariances px = S(x,x)[u,u], py = S(y,y)[u',u'].
// theta = atan2(sqrt(max(px py - s^2, 0)), s); S' = (r + (pi - theta) s)/(2 pi), T' = t (pi - theta)/(2 pi),
// where r = n sin(theta) = sqrt(n^2 - s^2). px*py and s*s are rounded alike, so a pair of an image with
// itself has r = 0 exactly on its d = 0 plane (rho = 1; DESIGN section 3). Callers compile without FMA
// contraction to keep that true.
template <class T>
NTKFAST_HD void relu_step(T& s, T& t, T px, T py) {
  using std::sqrt;
  const T p = px * py;
  const T q = s * s;
  T r2 = p - q;
  r2 = r2 > T(0) ? r2 : T(0);
  const T r = sqrt(r2);
  const T a = Consts<T>::pi - atan2_upper(r, s);
  s = (r + a * s) * Consts<T>::inv_2pi;
  t = t * a * Consts<T>::inv_2pi;
}

}  // namespace ntkfast
