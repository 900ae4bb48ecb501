// The offset-plane recursion of one pair (or one image's self recursion) run by a team of threads: a warp
// on the GPU, a single host thread in the emulation test (tests/cuda_emulation). Every pass is a loop
// `for (e = lane; e < n; e += size)` over the entries of one plane, separated by team.sync(), so the host
// team (lane 0, size 1) executes exactly the same arithmetic in the same order per entry.
//
// Per pair, stage by stage: each carried offset plane d lives in the team's shared-memory buffers through
// all its Conv/ReLU layers; pooling adds its contributions into the next stage's planes in the team's own
// global scratch (one owner per pair, so no atomics), and the planes are visited in one fixed order (d = 0
// first, then row-major), which makes the pooled d = 0 plane of a pair (x, x) bitwise equal to the one of
// the self recursion: rho = 1 exactly on the Gram diagonal (DESIGN section 3).
#pragma once
#include <cmath>
#include <cstdint>

#include "core/math.hpp"
#include "cuda/device_program.hpp"

#if defined(__CUDACC__)
#define NTKFAST_KD __device__
#else
#define NTKFAST_KD inline
#endif

namespace ntkfast {
namespace cuda {

// Pointers of one work item (a pair, or one image in self mode) and its team's buffers.
template <class T>
struct Item {
  const T* x;       // image x (H*W*C, NHWC)
  const T* y;       // image y (x itself in self mode)
  const T* self_x;  // self data of x (self mode: the output being written, read back after d = 0)
  const T* self_y;
  T* self_out;      // self mode: the self data of x; else null
  T *bS, *bT, *bA;  // shared memory: S and T planes (PL entries each), temp (PA entries)
  T *in_s, *in_t, *out_s, *out_t;  // global scratch: this stage's input planes, next stage's planes
  bool self;
};

// Row-major walk of a team over the entries of a plane of width w: entry e = lane + k * size sits at row
// i, column j. Stepping by carries instead of dividing e by w on every entry (an integer division is about
// twenty instructions on the GPU, as much as the rest of a box-sum entry).
struct Walk {
  int e, i, j, di, dj, w;
  NTKFAST_KD Walk(int lane, int size, int width)
      : e(lane), i(lane / width), j(lane - (lane / width) * width), di(size / width),
        dj(size - (size / width) * width), w(width) {}
  NTKFAST_KD void next(int size) {
    e += size;
    i += di;
    j += dj;
    if (j >= w) {
      j -= w;
      ++i;
    }
  }
};

template <class T, class Team>
NTKFAST_KD void conv_pass(const Team& tm, const DOp<T>& op, bool circ, int ly, int lx, int loy, int lox, T* S,
                          T* Tt, T* A) {
  const int n_h = ly * lox, n_v = loy * lox;
  const T scale = op.scale, bias2 = op.bias2;
  // Separable box sum, S first then T through the one temp: horizontal into A, vertical back in place.
  for (int pass = 0; pass < 2; ++pass) {
    const T* src = pass == 0 ? S : Tt;
    for (Walk p(tm.lane, tm.size, lox); p.e < n_h; p.next(tm.size)) {
      const int e = p.e, i = p.i, j = p.j;
      T acc = T(0);
      for (int b = 0; b < op.kx; ++b) {
        int c = j + b - op.pad_x;
        if (circ) c = c < 0 ? c + lx : (c >= lx ? c - lx : c);
        else if (c < 0 || c >= lx) continue;
        acc += src[i * lx + c];
      }
      A[e] = acc;
    }
    tm.sync();
    for (Walk p(tm.lane, tm.size, lox); p.e < n_v; p.next(tm.size)) {
      const int e = p.e, i = p.i, j = p.j;
      T acc = T(0);
      for (int a = 0; a < op.ky; ++a) {
        int r = i + a - op.pad_y;
        if (circ) r = r < 0 ? r + ly : (r >= ly ? r - ly : r);
        else if (r < 0 || r >= ly) continue;
        acc += A[r * lox + j];
      }
      if (pass == 0) S[e] = scale * acc + bias2;   // S' = W^2/k^2 box(S) + b^2
      else Tt[e] = scale * acc + S[e];             // T' = W^2/k^2 box(T) + S'
    }
    tm.sync();
  }
}

template <class T, class Team>
NTKFAST_KD void relu_pass(const Team& tm, const Item<T>& it, const DOp<T>& op, bool circ, int dy, int dx, Span sy,
                          Span sx, T* S, T* Tt) {
  const int n = sy.len * sx.len, H = op.h_in, W = op.w_in;
  const bool record = it.self && dy == 0 && dx == 0;
  const T* dxp = it.self_x + op.diag_off;
  const T* dyp = it.self_y + op.diag_off;
  for (Walk p(tm.lane, tm.size, sx.len); p.e < n; p.next(tm.size)) {
    const int e = p.e, i = p.i, j = p.j;
    T px, py;
    if (record) {  // the self recursion's d = 0 plane: its pre-activation diagonal is what it records
      px = py = S[e];
      it.self_out[op.diag_off + i * W + j] = px;
    } else {
      const int u = sy.start + i, v = sx.start + j;
      int u2 = u + dy, v2 = v + dx;
      if (circ) {
        u2 = u2 >= H ? u2 - H : u2;
        v2 = v2 >= W ? v2 - W : v2;
      }
      px = dxp[u * W + v];
      py = dyp[u2 * W + v2];
    }
    relu_step(S[e], Tt[e], px, py);
  }
  tm.sync();
}

// Adds plane (dy, dx) of stage s (S, Tt over spans sy, sx) into every next-stage plane its pooling reaches.
template <class T, class Team>
NTKFAST_KD void pool_pass(const Team& tm, const ProgView<T>& P, const Item<T>& it, int s, int m, int dy, int dx,
                          Span sy, Span sx, const T* S, const T* Tt, T* A) {
  const DStage& st = P.stages[s];
  const bool circ = P.circular != 0;
  const DRange src = st.need[m], nxt = st.next[m];
  const int* ty = P.I + st.cand_y[m];
  const int* tx = P.I + st.cand_x[m];
  const int ay0 = ty[dy - src.y0], ay1 = ty[dy - src.y0 + 1];
  const int ax0 = tx[dx - src.x0], ax1 = tx[dx - src.x0 + 1];
  if (ay0 == ay1 || ax0 == ax1) return;
  const int64_t* offs = P.L + st.store_out[m];
  const int nxw = nxt.x1 - nxt.x0 + 1;
  const int lx = sx.len, ly = sy.len;
  for (int a = ay0; a < ay1; a += 2) {
    const int dny = P.I[a];
    const T* gy = P.G + P.I[a + 1];
    const Span jy = span_of(st.nout_y, dny, circ);
    if (jy.len <= 0) continue;
    // Row combination along y: R[jl][c] = sum_t gy[t] S[origin + stride j + t - start][c] (S, then T).
    T* RS = A;
    T* RT = A + jy.len * lx;
    const int nr = jy.len * lx;
    for (Walk p(tm.lane, tm.size, lx); p.e < nr; p.next(tm.size)) {
      const int e = p.e, jl = p.i, c = p.j;
      const int j = jy.start + jl;
      T rs = T(0), rt = T(0);
      for (int t = 0; t < st.wy; ++t) {
        const T g = gy[t];
        if (g == T(0)) continue;
        const int i = st.origin_y + st.stride_y * j + t - sy.start;
        if (i < 0 || i >= ly) continue;
        rs += g * S[i * lx + c];
        rt += g * Tt[i * lx + c];
      }
      RS[e] = rs;
      RT[e] = rt;
    }
    tm.sync();
    for (int b = ax0; b < ax1; b += 2) {
      const int dnx = P.I[b];
      const T* gx = P.G + P.I[b + 1];
      const Span jx = span_of(st.nout_x, dnx, circ);
      if (jx.len <= 0) continue;
      const int64_t o = offs[(dny - nxt.y0) * nxw + (dnx - nxt.x0)];
      T* qs = it.out_s + o;
      T* qt = it.out_t + o;
      const int nq = jy.len * jx.len;
      for (Walk p(tm.lane, tm.size, jx.len); p.e < nq; p.next(tm.size)) {
        const int e = p.e, jl = p.i, kl = p.j;
        const int k = jx.start + kl;
        T vs = qs[e], vt = qt[e];
        for (int t = 0; t < st.wx; ++t) {
          const T g = gx[t];
          if (g == T(0)) continue;
          const int c = st.origin_x + st.stride_x * k + t - sx.start;
          if (c < 0 || c >= lx) continue;
          vs += g * RS[jl * lx + c];
          vt += g * RT[jl * lx + c];
        }
        qs[e] = vs;
        qt[e] = vt;
      }
    }
    tm.sync();  // the next candidate row overwrites A; the next plane may touch the same store entries
  }
}

// Runs offset plane (dy, dx) of stage s through its layers, then pools it or adds it to the readout sums.
template <class T, class Team>
NTKFAST_KD void plane_pass(const Team& tm, const ProgView<T>& P, const Item<T>& it, int s, int dy, int dx,
                           double& acc_s, double& acc_t) {
  const DStage& st = P.stages[s];
  const bool circ = P.circular != 0;
  const int m = it.self ? kSelf : kPair;
  Span sy = span_of(st.h_in, dy, circ), sx = span_of(st.w_in, dx, circ);
  if (sy.len <= 0 || sx.len <= 0) return;
  T* S = it.bS;
  T* Tt = it.bT;
  int n = sy.len * sx.len;
  if (s == 0) {
    // First layer: S[u, u + d] = <x[u], y[u + d]> / C (channel order as the CPU backend), T = 0.
    const int C = P.C, H = P.H, W = P.W;
    const T invC = T(1) / static_cast<T>(C);
    for (Walk p(tm.lane, tm.size, sx.len); p.e < n; p.next(tm.size)) {
      const int e = p.e, i = p.i, j = p.j;
      const int u = sy.start + i, v = sx.start + j;
      int u2 = u + dy, v2 = v + dx;
      if (circ) {
        u2 = u2 >= H ? u2 - H : u2;
        v2 = v2 >= W ? v2 - W : v2;
      }
      const T* a = it.x + (static_cast<int64_t>(u) * W + v) * C;
      const T* b = it.y + (static_cast<int64_t>(u2) * W + v2) * C;
      T acc = T(0);
      for (int c = 0; c < C; ++c) acc += a[c] * b[c];
      if (C > 1) acc *= invC;
      S[e] = acc;
      Tt[e] = T(0);
    }
  } else {
    const DRange r = st.need[m];
    const int64_t o = P.L[st.store_in[m] + (dy - r.y0) * (r.x1 - r.x0 + 1) + (dx - r.x0)];
    for (int e = tm.lane; e < n; e += tm.size) {
      S[e] = it.in_s[o + e];
      Tt[e] = it.in_t[o + e];
    }
  }
  tm.sync();
  for (int k = st.op0; k < st.op1; ++k) {
    const DOp<T>& op = P.ops[k];
    if (op.kind == 0) {
      const Span oy = span_of(op.h_out, dy, circ), ox = span_of(op.w_out, dx, circ);
      if (oy.len <= 0 || ox.len <= 0) return;  // the plane leaves the state: it contributes nothing
      conv_pass(tm, op, circ, sy.len, sx.len, oy.len, ox.len, S, Tt, it.bA);
      sy = oy;
      sx = ox;
      n = sy.len * sx.len;
    } else {
      relu_pass(tm, it, op, circ, dy, dx, sy, sx, S, Tt);
    }
  }
  if (st.has_pool) {
    if (it.self && !P.stages[s + 1].self_active) return;
    pool_pass(tm, P, it, s, m, dy, dx, sy, sx, S, Tt, it.bA);
  } else if (P.readout == 1 || (dy == 0 && dx == 0)) {
    for (int e = tm.lane; e < n; e += tm.size) {
      acc_s += static_cast<double>(S[e]);
      acc_t += static_cast<double>(Tt[e]);
    }
    tm.sync();
  }
}

// The scalar head after the readout (Dense / ReLU on one value). Every lane computes it (same values).
template <class T>
NTKFAST_KD void scalar_head(const ProgView<T>& P, const Item<T>& it, bool writer, T& s, T& t) {
  for (int k = 0; k < P.n_scalar; ++k) {
    const DScalar<T>& op = P.scalar[k];
    if (op.kind == 0) {
      s = op.w2 * s + op.b2;
      t = op.w2 * t + s;
    } else {
      const int idx = P.scalar_offset + op.slot;
      T px, py;
      if (it.self) {
        if (writer) it.self_out[idx] = s;
        px = py = s;
      } else {
        px = it.self_x[idx];
        py = it.self_y[idx];
      }
      relu_step(s, t, px, py);
    }
  }
}

// The whole recursion of one item; results (NNGP, NTK) in s_out / t_out on every lane.
template <class T, class Team>
NTKFAST_KD void run_item(const Team& tm, const ProgView<T>& P, Item<T> it, T& s_out, T& t_out) {
  double acc_s = 0.0, acc_t = 0.0;
  double den = P.den;
  if (!P.spatial) {
    const int D = P.C;
    for (int k = tm.lane; k < D; k += tm.size) acc_s += static_cast<double>(it.x[k]) * static_cast<double>(it.y[k]);
    den = static_cast<double>(D);
  } else {
    const int m = it.self ? kSelf : kPair;
    for (int s = 0; s < P.n_stages; ++s) {
      const DStage& st = P.stages[s];
      if (it.self && !st.self_active) break;
      const DRange nd = st.need[m];
      if (st.has_pool) {
        const int64_t total = P.L[st.store_out[m] + (st.next[m].y1 - st.next[m].y0 + 1) *
                                                         (st.next[m].x1 - st.next[m].x0 + 1)];
        for (int64_t e = tm.lane; e < total; e += tm.size) {
          it.out_s[e] = T(0);
          it.out_t[e] = T(0);
        }
        tm.sync();
      }
      // d = 0 first: in self mode it records the diagonals that the other planes' ReLUs read.
      if (nd.y0 <= 0 && 0 <= nd.y1 && nd.x0 <= 0 && 0 <= nd.x1) plane_pass(tm, P, it, s, 0, 0, acc_s, acc_t);
      for (int dy = nd.y0; dy <= nd.y1; ++dy)
        for (int dx = nd.x0; dx <= nd.x1; ++dx)
          if (dy != 0 || dx != 0) plane_pass(tm, P, it, s, dy, dx, acc_s, acc_t);
      if (st.has_pool) {
        T* a = it.in_s; it.in_s = it.out_s; it.out_s = a;
        T* b = it.in_t; it.in_t = it.out_t; it.out_t = b;
        tm.sync();
      }
    }
  }
  acc_s = tm.sum(acc_s);
  acc_t = tm.sum(acc_t);
  T s = static_cast<T>(acc_s / den), t = P.spatial ? static_cast<T>(acc_t / den) : T(0);
  scalar_head(P, it, tm.lane == 0, s, t);
  s_out = s;
  t_out = t;
}

// Linear index of the first entry of row i in the row-major upper triangle (j >= i) of an n x n tile.
NTKFAST_SPAN_HD int64_t tri_start(int64_t i, int64_t n) { return i * n - i * (i - 1) / 2; }

// Row i and column j of the q-th entry of that triangle: the root of i^2 - (2n+1) i + 2q = 0, then an
// exact integer fix-up against the rounding of the square root.
NTKFAST_SPAN_HD void tri_decode(int64_t q, int64_t n, int64_t& i, int64_t& j) {
  const double b = 2.0 * static_cast<double>(n) + 1.0;
  const double disc = b * b - 8.0 * static_cast<double>(q);
  int64_t r = static_cast<int64_t>((b - sqrt(disc > 0.0 ? disc : 0.0)) * 0.5);
  r = r < 0 ? 0 : (r > n - 1 ? n - 1 : r);
  while (r > 0 && tri_start(r, n) > q) --r;
  while (r + 1 < n && tri_start(r + 1, n) <= q) ++r;
  i = r;
  j = r + (q - tri_start(r, n));
}

}  // namespace cuda
}  // namespace ntkfast
