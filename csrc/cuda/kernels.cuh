// The offset-plane recursion of one pair (or one image's self recursion) run by a team of threads: a warp
// on the GPU; on the host (tests/cuda_emulation) one thread, or 32 threads with a barrier for the warp
// sync. Every pass is a loop `for (e = lane; e < n; e += size)` over the entries of one plane, separated by
// team.sync(), and each entry is computed by one lane with the CPU backend's arithmetic in the CPU
// backend's order (cpu/gram_cpu.cpp), so a float32 entry is bitwise the CPU's whatever the team size:
//   conv   : taps summed from tap 0 in order, out-of-segment taps skipped (the CPU adds zeros there, which
//            only flips the sign of a zero that S' = scale * acc + b^2 makes +0 again); S' = scale * acc +
//            b^2, T' = scale * acc + S'; CIRCULAR wraps with posmod (windows may be wider than the row);
//            SAME in a circular plane pads each linear segment separately (geometry.hpp: segment_break);
//   ReLU   : relu_step on the pre-activation diagonals at u and at the partner (u + d), mod n when circular;
//   pool   : per linear segment of the plane, rows combined along y tap by tap, then the x taps added in
//            tap order straight into the next stage's store, planes visited in the CPU's order (d = 0
//            first, then row-major) so every store entry receives its terms in the same sequence.
// Readout sums are float64: per lane a partial sum over each plane, then added to the lane's total, then
// the team's totals are summed; with one lane that is the CPU's order exactly, with 32 lanes another order
// of float64 additions (float32 results then agree unless a sum lies within 1e-16 of a rounding boundary).
//
// Per pair, stage by stage: each carried plane lives in the team's shared memory through all its Conv/ReLU
// layers; pooling adds into the next stage's planes in the team's own global scratch (one owner per item,
// no atomics). The pooled d = 0 plane of a pair (x, x) is thus bitwise the self recursion's: rho = 1
// exactly on the Gram diagonal (DESIGN section 3).
#pragma once
#include <cmath>
#include <cstdint>

#include "core/geometry.hpp"
#include "core/activations.hpp"
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
  T *in_s, *in_t, *out_s, *out_t;  // global scratch: this stage's input planes, the next stage's planes
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

// Boundary of a conv along one axis of a plane: wrap, or zero padding around [0, brk) and [brk, len).
struct DBound {
  int wrap, brk;
};

// acc over taps b of src[(c + b - pad) (wrapped or within c's segment)] * stride, from tap 0 in order.
template <class T>
NTKFAST_KD T box_taps(const T* src, int stride, int c, int len, int pad, int k, DBound bd) {
  T acc = T(0);
  if (bd.wrap) {
    for (int b = 0; b < k; ++b) acc += src[posmod(c + b - pad, len) * stride];
    return acc;
  }
  const int lo = (bd.brk < len && c >= bd.brk) ? bd.brk : 0;
  const int hi = (bd.brk < len && c < bd.brk) ? bd.brk : len;
  for (int b = 0; b < k; ++b) {
    const int q = c + b - pad;
    if (q < lo || q >= hi) continue;
    acc += src[q * stride];
  }
  return acc;
}

// Conv on a plane of ly x lx entries (in place in S, Tt) to loy x lox: separable box sums, S first then T
// through the one temp A (horizontal into A, vertical back).
template <class T, class Team>
NTKFAST_KD void conv_pass(const Team& tm, const DOp<T>& op, DBound by, DBound bx, int ly, int lx, int loy, int lox,
                          T* S, T* Tt, T* A) {
  const int n_h = ly * lox, n_v = loy * lox;
  const T scale = op.scale, bias2 = op.bias2;
  // NTK parameterization: S first, then T' = scale box(T) + S'. Standard: T first (scale box(T) into Tt,
  // which its vertical pass no longer reads), then S, adding t_s box(S) + t_b to T in the CPU's order.
  for (int k = 0; k < 2; ++k) {
    const int pass = op.standard ? 1 - k : k;  // 0: S, 1: T
    const T* src = pass == 0 ? S : Tt;
    for (Walk p(tm.lane, tm.size, lox); p.e < n_h; p.next(tm.size))
      A[p.e] = box_taps(src + p.i * lx, 1, p.j, lx, op.pad_x, op.kx, bx);
    tm.sync();
    for (Walk p(tm.lane, tm.size, lox); p.e < n_v; p.next(tm.size)) {
      const T acc = box_taps(A + p.j, lox, p.i, ly, op.pad_y, op.ky, by);
      if (op.standard) {
        if (pass == 1) {
          Tt[p.e] = scale * acc;
        } else {
          Tt[p.e] = Tt[p.e] + op.t_s * acc + op.t_b;
          S[p.e] = scale * acc + bias2;
        }
      } else if (pass == 0) {
        S[p.e] = scale * acc + bias2;   // S' = W^2/k^2 box(S) + b^2
      } else {
        Tt[p.e] = scale * acc + S[p.e];  // T' = W^2/k^2 box(T) + S'
      }
    }
    tm.sync();
  }
}

template <class T, class Team>
NTKFAST_KD void act_pass(const Team& tm, const Item<T>& it, const DOp<T>& op, bool circ, int dy, int dx, Span sy,
                          Span sx, T* S, T* Tt) {
  const int n = sy.len * sx.len, H = op.h_in, W = op.w_in;
  const bool record = it.self && dy == 0 && dx == 0;
  const T* dxp = it.self_x + op.diag;
  const T* dyp = it.self_y + op.diag;
  for (Walk p(tm.lane, tm.size, sx.len); p.e < n; p.next(tm.size)) {
    const int e = p.e;
    T px, py;
    if (record) {  // the self recursion's d = 0 plane: its input diagonal is what it records
      px = py = S[e];
      it.self_out[op.diag + p.i * W + p.j] = px;
    } else {
      const int u = sy.start + p.i, v = sx.start + p.j;
      int u2 = u + dy, v2 = v + dx;
      if (circ) {  // circular planes: 0 <= d < n, so one subtraction wraps the partner
        u2 = u2 >= H ? u2 - H : u2;
        v2 = v2 >= W ? v2 - W : v2;
      }
      px = dxp[u * W + v];
      py = dyp[u2 * W + v2];
    }
    act_step(op.act, S[e], Tt[e], px, py);
  }
  tm.sync();
}

// Adds one linear segment (gy x gx) of a plane of stage s, held over spans sy x sx in S / Tt, to every plane
// of the next stage that its pooling reaches (the program's pooling tables).
template <class T, class Team>
NTKFAST_KD void pool_segment(const Team& tm, const ProgView<T>& P, const Item<T>& it, int s, int m, Segment gy,
                             Segment gx, Span sy, Span sx, const T* S, const T* Tt, T* A) {
  const DStage& st = P.stages[s];
  const DStage& nx = P.stages[s + 1];
  const DTable ty = st.ty[m], tx = st.tx[m];
  const int ay0 = P.I[ty.first + gy.d + ty.n - 1], ay1 = P.I[ty.first + gy.d + ty.n];
  const int ax0 = P.I[tx.first + gx.d + tx.n - 1], ax1 = P.I[tx.first + gx.d + tx.n];
  if (ay0 == ay1 || ax0 == ax1) return;
  const Range need = nx.need[m];
  const int64_t* offs = P.L + nx.store[m];
  const int lx = sx.len, gw = gx.len;
  for (int ea = ay0; ea < ay1; ++ea) {
    const int* a = P.I + ty.entries + 3 * ea;  // (dn, plane, g)
    const double* gya = P.G + a[2];
    const Span jy = plane_span(nx.h_in, a[0], false);
    if (jy.len <= 0) continue;
    const int ybase = nx.circular ? 0 : jy.start;  // first stored row of the next plane
    // Row combination along y over the segment's columns: R[jl][c] = sum_t g[t] S[origin + stride j + t][c].
    T* RS = A;
    T* RT = A + jy.len * gw;
    const int nr = jy.len * gw;
    for (Walk p(tm.lane, tm.size, gw); p.e < nr; p.next(tm.size)) {
      const int j = jy.start + p.i;
      T rs = T(0), rt = T(0);
      for (int t = 0; t < ty.w; ++t) {
        if (gya[t] == 0.0) continue;
        const int pos = st.origin_y + st.stride_y * j + t;
        if (pos < gy.start || pos >= gy.start + gy.len) continue;
        const T g = static_cast<T>(gya[t]);
        const int o = (pos - sy.start) * lx + (gx.start - sx.start) + p.j;
        rs += g * S[o];
        rt += g * Tt[o];
      }
      RS[p.e] = rs;
      RT[p.e] = rt;
    }
    tm.sync();
    for (int eb = ax0; eb < ax1; ++eb) {
      const int* b = P.I + tx.entries + 3 * eb;
      const double* gxb = P.G + b[2];
      const Span jx = plane_span(nx.w_in, b[0], false);
      if (jx.len <= 0) continue;
      const int xbase = nx.circular ? 0 : jx.start;
      const int rowlen = plane_span(nx.w_in, b[1], nx.circular != 0).len;
      const int64_t o = offs[need.index(a[1], b[1])] + static_cast<int64_t>(jy.start - ybase) * rowlen +
                        (jx.start - xbase);
      T* qs = it.out_s + o;
      T* qt = it.out_t + o;
      const int nq = jy.len * jx.len;
      // Distinct entries b reach distinct (plane, position) pairs, so the lanes of one b and of the next
      // never write the same store entry: no sync between them.
      for (Walk p(tm.lane, tm.size, jx.len); p.e < nq; p.next(tm.size)) {
        const int k = jx.start + p.j;
        const int q = p.i * rowlen + p.j;
        T vs = qs[q], vt = qt[q];
        for (int t = 0; t < tx.w; ++t) {
          if (gxb[t] == 0.0) continue;
          const int c = st.origin_x + st.stride_x * k + t - gx.start;
          if (c < 0 || c >= gw) continue;
          const T g = static_cast<T>(gxb[t]);
          vs += g * RS[p.i * gw + c];
          vt += g * RT[p.i * gw + c];
        }
        qs[q] = vs;
        qt[q] = vt;
      }
    }
    tm.sync();  // the next entry overwrites A
  }
}

// Runs plane (dy, dx) of stage s through its layers, then pools it or adds it to the readout sums.
template <class T, class Team>
NTKFAST_KD void plane_pass(const Team& tm, const ProgView<T>& P, const Item<T>& it, int s, int dy, int dx,
                           double& acc_s, double& acc_t) {
  const DStage& st = P.stages[s];
  const bool circ = st.circular != 0;
  const int m = it.self ? kSelf : kPair;
  Span sy = plane_span(st.h_in, dy, circ), sx = plane_span(st.w_in, dx, circ);
  if (sy.len <= 0 || sx.len <= 0) return;
  T* S = it.bS;
  T* Tt = it.bT;
  int n = sy.len * sx.len;
  if (s == 0) {
    // First layer: S[u, u + d] = <x[u], y[u + d]> / C over channels in order, T = 0.
    const int C = P.C, H = P.H, W = P.W;
    const T invC = T(1) / static_cast<T>(C);
    for (Walk p(tm.lane, tm.size, sx.len); p.e < n; p.next(tm.size)) {
      const int u = sy.start + p.i, v = sx.start + p.j;
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
      S[p.e] = acc;
      Tt[p.e] = T(0);
    }
  } else {
    const int64_t o = P.L[st.store[m] + st.need[m].index(dy, dx)];
    for (int e = tm.lane; e < n; e += tm.size) {
      S[e] = it.in_s[o + e];
      Tt[e] = it.in_t[o + e];
    }
  }
  tm.sync();
  for (int k = st.op0; k < st.op1; ++k) {
    const DOp<T>& op = P.ops[k];
    switch (op.kind) {
      case StageOp::Conv: {
        const Span oy = plane_span(op.h_out, dy, circ), ox = plane_span(op.w_out, dx, circ);
        if (oy.len <= 0 || ox.len <= 0) return;  // the plane leaves the state: it contributes nothing
        const DBound by{op.wrap, segment_break(sy.len, dy, circ)}, bx{op.wrap, segment_break(sx.len, dx, circ)};
        conv_pass(tm, op, by, bx, sy.len, sx.len, oy.len, ox.len, S, Tt, it.bA);
        sy = oy;
        sx = ox;
        n = sy.len * sx.len;
        break;
      }
      case StageOp::Act:
        act_pass(tm, it, op, circ, dy, dx, sy, sx, S, Tt);
        break;
    }
  }
  if (st.has_pool) {
    if (!P.stages[s + 1].active[m]) return;
    Segment gy[2], gx[2];
    const int ny = plane_segments(st.h_out, dy, circ, gy), nx = plane_segments(st.w_out, dx, circ, gx);
    for (int a = 0; a < ny; ++a)
      for (int b = 0; b < nx; ++b) pool_segment(tm, P, it, s, m, gy[a], gx[b], sy, sx, S, Tt, it.bA);
  } else if (P.readout == Readout::Gap || (dy == 0 && dx == 0)) {
    double ps = 0.0, pt = 0.0;  // this plane's partial sums, then the totals (the CPU's order on one lane)
    for (int e = tm.lane; e < n; e += tm.size) {
      ps += static_cast<double>(S[e]);
      pt += static_cast<double>(Tt[e]);
    }
    acc_s += ps;
    acc_t += pt;
    tm.sync();
  }
}

// The scalar head after the readout (Dense / pointwise ops on one value). Every lane computes it (same values).
template <class T>
NTKFAST_KD void scalar_head(const ProgView<T>& P, const Item<T>& it, bool writer, T& s, T& t) {
  for (int k = 0; k < P.n_scalar; ++k) {
    const DScalar<T>& op = P.scalar[k];
    switch (op.kind) {
      case ScalarOp::Dense:
        if (op.standard) {
          t = op.w2 * t + op.t_s * s + op.t_b;
          s = op.w2 * s + op.b2;
        } else {
          s = op.w2 * s + op.b2;
          t = op.w2 * t + s;
        }
        break;
      case ScalarOp::Act: {
        const int idx = P.scalar_offset + op.slot;
        T px, py;
        if (it.self) {
          if (writer) it.self_out[idx] = s;
          px = py = s;
        } else {
          px = it.self_x[idx];
          py = it.self_y[idx];
        }
        act_step(op.act, s, t, px, py);
        break;
      }
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
      if (!st.active[m]) break;
      const Range nd = st.need[m];
      if (st.has_pool && P.stages[s + 1].active[m]) {
        const DStage& nx = P.stages[s + 1];
        const int64_t total = P.L[nx.store[m] + nx.need[m].count()];
        for (int64_t e = tm.lane; e < total; e += tm.size) {
          it.out_s[e] = T(0);
          it.out_t[e] = T(0);
        }
        tm.sync();
      }
      // d = 0 first: in self mode it records the diagonals that the other planes' ReLUs read.
      if (nd.contains(0, 0)) plane_pass(tm, P, it, s, 0, 0, acc_s, acc_t);
      for (int dy = nd.y0; dy <= nd.y1; ++dy)
        for (int dx = nd.x0; dx <= nd.x1; ++dx)
          if (dy != 0 || dx != 0) plane_pass(tm, P, it, s, dy, dx, acc_s, acc_t);
      if (st.has_pool) {
        T* a = it.in_s;
        it.in_s = it.out_s;
        it.out_s = a;
        T* b = it.in_t;
        it.in_t = it.out_t;
        it.out_t = b;
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
NTKFAST_HD int64_t tri_start(int64_t i, int64_t n) { return i * n - i * (i - 1) / 2; }

// Row i and column j of the q-th entry of that triangle: the root of i^2 - (2n+1) i + 2q = 0, then an
// exact integer fix-up against the rounding of the square root.
NTKFAST_HD void tri_decode(int64_t q, int64_t n, int64_t& i, int64_t& j) {
  const double b = 2.0 * static_cast<double>(n) + 1.0;
  const double disc = b * b - 8.0 * static_cast<double>(q);
  int64_t r = static_cast<int64_t>((b - sqrt(disc > 0.0 ? disc : 0.0)) * 0.5);
  r = r < 0 ? 0 : (r > n - 1 ? n - 1 : r);
  while (r > 0 && tri_start(r, n) > q) --r;
  while (r + 1 < n && tri_start(r + 1, n) <= q) ++r;
  i = r;
  j = r + (q - tri_start(r, n));
}

// One launch: items [q0, q1) of a tile (linear pair indices: row-major, or the upper triangle when
// symmetric) or of a batch of images (self mode).
template <class T>
struct LaunchArgs {
  const T *X, *Y, *SX, *SY;  // inputs and self data of the tile's rows / columns (device)
  T* self_out;               // self mode: self data, ssz per image
  T *out_s, *out_t;          // pair mode: (i - row0) * ny + j (either may be null); symmetric: j >= i only
  int64_t row0;              // first tile row held by out_s / out_t
  int64_t nx, ny, q0, q1;
  int64_t isz, ssz;          // input size and self-data size per image
  T* scratch;                // pooled stores, scratch_per_warp entries per resident team
  int64_t scratch_per_warp, store;
  int symmetric, self;
};

// The work of team gw of nw (a persistent warp): items q0 + gw, q0 + gw + nw, ... with smem its
// 2 PL + PA entries of shared memory. The kernel of gram_cuda.cu is this, and the host emulation runs it.
template <class T, class Team>
NTKFAST_KD void team_items(const Team& tm, const ProgView<T>& P, const LaunchArgs<T>& a, int64_t gw, int64_t nw,
                           T* smem) {
  T* scr = a.scratch ? a.scratch + gw * a.scratch_per_warp : nullptr;
  Item<T> it;
  it.bS = smem;
  it.bT = smem + P.PL;
  it.bA = smem + 2 * static_cast<int64_t>(P.PL);
  it.self = a.self != 0;
  for (int64_t q = a.q0 + gw; q < a.q1; q += nw) {  // the same q on all lanes: team-uniform control flow
    int64_t i, j;
    if (a.self) {
      i = j = q;
      it.x = it.y = a.X + i * a.isz;
      it.self_out = a.self_out + i * a.ssz;
      it.self_x = it.self_y = it.self_out;
    } else {
      if (a.symmetric) {
        tri_decode(q, a.nx, i, j);
      } else {
        i = q / a.ny;
        j = q - i * a.ny;
      }
      it.x = a.X + i * a.isz;
      it.y = a.Y + j * a.isz;
      it.self_x = a.SX + i * a.ssz;
      it.self_y = a.SY + j * a.ssz;
      it.self_out = nullptr;
    }
    it.in_s = scr;
    it.in_t = scr ? scr + a.store : nullptr;
    it.out_s = scr ? scr + 2 * a.store : nullptr;
    it.out_t = scr ? scr + 3 * a.store : nullptr;
    T s, t;
    run_item(tm, P, it, s, t);
    if (!a.self && tm.lane == 0) {
      const int64_t o = (i - a.row0) * a.ny + j;
      if (a.out_s) a.out_s[o] = s;
      if (a.out_t) a.out_t[o] = t;
    }
    tm.sync();  // the next item reuses this team's shared memory and scratch
  }
}

}  // namespace cuda
}  // namespace ntkfast
