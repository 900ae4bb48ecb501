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
//   copy   : a register's planes copied into another's (FanOut);
//   add    : d = d + s entrywise, S then T (FanInSum), the source freed;
//   pool   : per register and linear segment of the plane, rows combined along y tap by tap, then the x taps
//            added in tap order straight into the register's block of the next stage's store, planes
//            visited in the CPU's order (d = 0 first, then row-major) so every store entry receives its
//            terms in the same sequence.
// Readout sums are float64: per lane a partial sum over each plane, then added to the lane's total, then
// the team's totals are summed; with one lane that is the CPU's order exactly, with 32 lanes another order
// of float64 additions (float32 results then agree unless a sum lies within 1e-16 of a rounding boundary).
//
// Per pair, stage by stage: each carried plane lives in the team's shared memory through all its layers, one
// S, T pair of planes per register (a stream of a branching net; convs work in place through one temp);
// pooling adds into the next stage's planes in the team's own global scratch (one owner per item, one block
// per register entering the next stage, no atomics). The pooled d = 0 plane of a pair (x, x) is thus bitwise
// the self recursion's: rho = 1 exactly on the Gram diagonal (DESIGN section 3). The scalar head runs on lane
// 0 with its registers in the then free shared memory.
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
  T* smem;          // the team's shared memory: registers' S and T planes, the temp (device_program.hpp)
  T *in, *out;      // global scratch: this stage's input planes, the next stage's planes (S; T at + t_off)
  int64_t t_off;
  bool self;
};

// Registers of a plane as a bit mask (at most 64): bit r set while register r holds the plane's positions.
NTKFAST_KD uint64_t reg_bit(int r) { return uint64_t(1) << r; }

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

// Adds one linear segment (gy x gx) of register p.reg's plane of stage s, held over spans sy x sx in S / Tt,
// to every plane of the next stage that its pooling reaches (the program's pooling tables), in the register's
// block of the next stage's store.
template <class T, class Team>
NTKFAST_KD void pool_segment(const Team& tm, const ProgView<T>& P, const Item<T>& it, int s, const DPool& pl, int m,
                             Segment gy, Segment gx, Span sy, Span sx, const T* S, const T* Tt, T* A) {
  const DStage& nx = P.stages[s + 1];
  const DTable ty = pl.ty[m], tx = pl.tx[m];
  const int ay0 = P.I[ty.first + gy.d + ty.n - 1], ay1 = P.I[ty.first + gy.d + ty.n];
  const int ax0 = P.I[tx.first + gx.d + tx.n - 1], ax1 = P.I[tx.first + gx.d + tx.n];
  if (ay0 == ay1 || ax0 == ax1) return;
  const Range need = nx.need[m];
  const int64_t* offs = P.L + nx.store[m];
  const int64_t base = nx.block[m] * pl.block;
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
        const int pos = pl.origin_y + pl.stride_y * j + t;
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
      const int64_t o = base + offs[need.index(a[1], b[1])] + static_cast<int64_t>(jy.start - ybase) * rowlen +
                        (jx.start - xbase);
      T* qs = it.out + o;
      T* qt = it.out + it.t_off + o;
      const int nq = jy.len * jx.len;
      // Distinct entries b reach distinct (plane, position) pairs, so the lanes of one b and of the next
      // never write the same store entry: no sync between them.
      for (Walk p(tm.lane, tm.size, jx.len); p.e < nq; p.next(tm.size)) {
        const int k = jx.start + p.j;
        const int q = p.i * rowlen + p.j;
        T vs = qs[q], vt = qt[q];
        for (int t = 0; t < tx.w; ++t) {
          if (gxb[t] == 0.0) continue;
          const int c = pl.origin_x + pl.stride_x * k + t - gx.start;
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

// Runs plane (dy, dx) of stage s through its ops, each on its register's planes in shared memory, then pools
// every register leaving the stage or adds the readout register to the readout sums. A register holds the
// plane's positions for its resolution there (plane_span of the resolution each op records: the program
// blob checks that they chain), or none once a VALID conv leaves the plane out of its state.
template <class T, class Team>
NTKFAST_KD void plane_pass(const Team& tm, const ProgView<T>& P, const Item<T>& it, int s, int dy, int dx,
                           double& acc_s, double& acc_t) {
  const DStage& st = P.stages[s];
  const bool circ = st.circular != 0;
  const int m = it.self ? kSelf : kPair;
  const Span sy0 = plane_span(st.h_in, dy, circ), sx0 = plane_span(st.w_in, dx, circ);
  if (sy0.len <= 0 || sx0.len <= 0) return;
  T* const A = temp_of(P, it.smem);
  const int n0 = sy0.len * sx0.len;
  uint64_t held = 0;
  if (s == 0) {
    // First layer (one register enters: the program blob checks it): S[u, u + d] = <x[u], y[u + d]> / C over
    // channels in order, T = 0.
    const int r = P.R[st.reg0];
    T* S = reg_s(P, it.smem, r);
    T* Tt = reg_t(P, it.smem, r);
    held = reg_bit(r);
    const int C = P.C, H = P.H, W = P.W;
    const T invC = T(1) / static_cast<T>(C);
    for (Walk p(tm.lane, tm.size, sx0.len); p.e < n0; p.next(tm.size)) {
      const int u = sy0.start + p.i, v = sx0.start + p.j;
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
    // Each register entering from its block of the pooled store.
    const int64_t plane = P.L[st.store[m] + st.need[m].index(dy, dx)];
    for (int k = st.reg0; k < st.reg1; ++k) {
      const int r = P.R[k];
      T* S = reg_s(P, it.smem, r);
      T* Tt = reg_t(P, it.smem, r);
      held |= reg_bit(r);
      const int64_t o = st.block[m] * (k - st.reg0) + plane;
      for (int e = tm.lane; e < n0; e += tm.size) {
        S[e] = it.in[o + e];
        Tt[e] = it.in[it.t_off + o + e];
      }
    }
  }
  tm.sync();
  for (int k = st.op0; k < st.op1; ++k) {
    const DOp<T>& op = P.ops[k];
    const int r = op.reg;
    const Span sy = plane_span(op.h_in, dy, circ), sx = plane_span(op.w_in, dx, circ);
    switch (op.kind) {
      case StageOp::Conv: {
        if (!(held & reg_bit(r))) break;
        const Span oy = plane_span(op.h_out, dy, circ), ox = plane_span(op.w_out, dx, circ);
        if (oy.len <= 0 || ox.len <= 0) {  // the plane leaves the register's state: it holds nothing more
          held &= ~reg_bit(r);
          break;
        }
        const DBound by{op.wrap, segment_break(sy.len, dy, circ)}, bx{op.wrap, segment_break(sx.len, dx, circ)};
        conv_pass(tm, op, by, bx, sy.len, sx.len, oy.len, ox.len, reg_s(P, it.smem, r), reg_t(P, it.smem, r), A);
        break;
      }
      case StageOp::Act:
        if (held & reg_bit(r)) act_pass(tm, it, op, circ, dy, dx, sy, sx, reg_s(P, it.smem, r), reg_t(P, it.smem, r));
        break;
      case StageOp::Copy: {
        held &= ~reg_bit(r);
        if (!(held & reg_bit(op.src))) break;
        held |= reg_bit(r);
        const int n = sy.len * sx.len;
        const T* ss = reg_s(P, it.smem, op.src);
        const T* st2 = reg_t(P, it.smem, op.src);
        T* ds = reg_s(P, it.smem, r);
        T* dt = reg_t(P, it.smem, r);
        for (int e = tm.lane; e < n; e += tm.size) {
          ds[e] = ss[e];
          dt[e] = st2[e];
        }
        tm.sync();
        break;
      }
      case StageOp::Add: {
        // Same resolution, so both hold this plane's positions or neither does.
        if ((held & reg_bit(r)) && (held & reg_bit(op.src))) {
          const int n = sy.len * sx.len;
          const T* ss = reg_s(P, it.smem, op.src);
          const T* st2 = reg_t(P, it.smem, op.src);
          T* ds = reg_s(P, it.smem, r);
          T* dt = reg_t(P, it.smem, r);
          for (int e = tm.lane; e < n; e += tm.size) {
            ds[e] = ds[e] + ss[e];
            dt[e] = dt[e] + st2[e];
          }
          tm.sync();
        }
        held &= ~reg_bit(op.src);
        break;
      }
    }
  }
  if (st.pool1 > st.pool0) {
    if (!P.stages[s + 1].active[m]) return;
    for (int k = st.pool0; k < st.pool1; ++k) {
      const DPool& pl = P.pools[k];
      if (!(held & reg_bit(pl.reg))) continue;
      const Span sy = plane_span(pl.h_src, dy, circ), sx = plane_span(pl.w_src, dx, circ);
      Segment gy[2], gx[2];
      const int ny = plane_segments(pl.h_src, dy, circ, gy), nx = plane_segments(pl.w_src, dx, circ, gx);
      for (int a = 0; a < ny; ++a)
        for (int b = 0; b < nx; ++b)
          pool_segment(tm, P, it, s, pl, m, gy[a], gx[b], sy, sx, reg_s(P, it.smem, pl.reg), reg_t(P, it.smem, pl.reg),
                       A);
    }
  } else if (P.readout == Readout::Gap || (dy == 0 && dx == 0)) {
    const int r = st.readout_reg;
    if (!(held & reg_bit(r))) return;
    const int n = plane_span(st.readout_h, dy, circ).len * plane_span(st.readout_w, dx, circ).len;
    const T* S = reg_s(P, it.smem, r);
    const T* Tt = reg_t(P, it.smem, r);
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

// The scalar head after the readout (Dense, pointwise and stream ops on one value per register), run by lane 0
// alone: its registers live in the team's shared memory (register r's S at sr[2 r], T at sr[2 r + 1]), free
// once the spatial part is done. s and t: the readout on entry, the final register's values on return.
template <class T>
NTKFAST_KD void scalar_head(const ProgView<T>& P, const Item<T>& it, T* sr, T& s, T& t) {
  sr[2 * P.readout_reg] = s;
  sr[2 * P.readout_reg + 1] = t;
  for (int k = 0; k < P.n_scalar; ++k) {
    const DScalar<T>& op = P.scalar[k];
    T& so = sr[2 * op.reg];
    T& to = sr[2 * op.reg + 1];
    switch (op.kind) {
      case ScalarOp::Dense:
        if (op.standard) {
          to = op.w2 * to + op.t_s * so + op.t_b;
          so = op.w2 * so + op.b2;
        } else {
          so = op.w2 * so + op.b2;
          to = op.w2 * to + so;
        }
        break;
      case ScalarOp::Act: {
        const int idx = P.scalar_offset + op.slot;
        T px, py;
        if (it.self) {
          it.self_out[idx] = so;
          px = py = so;
        } else {
          px = it.self_x[idx];
          py = it.self_y[idx];
        }
        act_step(op.act, so, to, px, py);
        break;
      }
      case ScalarOp::Copy:
        so = sr[2 * op.src];
        to = sr[2 * op.src + 1];
        break;
      case ScalarOp::Add:
        so = so + sr[2 * op.src];
        to = to + sr[2 * op.src + 1];
        break;
    }
  }
  s = sr[2 * P.final_reg];
  t = sr[2 * P.final_reg + 1];
}

// The whole recursion of one item; results (NNGP, NTK) in s_out / t_out on lane 0 (the scalar head runs there).
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
      const bool pools = st.pool1 > st.pool0;
      if (pools && P.stages[s + 1].active[m]) {
        const DStage& nx = P.stages[s + 1];
        const int64_t total = nx.block[m] * (nx.reg1 - nx.reg0);
        for (int64_t e = tm.lane; e < total; e += tm.size) {
          it.out[e] = T(0);
          it.out[it.t_off + e] = T(0);
        }
        tm.sync();
      }
      // d = 0 first: in self mode it records the diagonals that the other planes' ReLUs read.
      if (nd.contains(0, 0)) plane_pass(tm, P, it, s, 0, 0, acc_s, acc_t);
      for (int dy = nd.y0; dy <= nd.y1; ++dy)
        for (int dx = nd.x0; dx <= nd.x1; ++dx)
          if (dy != 0 || dx != 0) plane_pass(tm, P, it, s, dy, dx, acc_s, acc_t);
      if (pools) {
        T* a = it.in;
        it.in = it.out;
        it.out = a;
      }
    }
  }
  acc_s = tm.sum(acc_s);
  acc_t = tm.sum(acc_t);
  T s = static_cast<T>(acc_s / den), t = P.spatial ? static_cast<T>(acc_t / den) : T(0);
  if (tm.lane == 0) scalar_head(P, it, it.smem, s, t);
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
  int paired;                // pair mode: item q is (X[q], Y[q]), its results at out_s[q], out_t[q]
};

// The work of team gw of nw (a persistent warp): items q0 + gw, q0 + gw + nw, ... with smem its
// team_entries(P) entries of shared memory. The kernel of gram_cuda.cu is this, and the host emulation runs it.
template <class T, class Team>
NTKFAST_KD void team_items(const Team& tm, const ProgView<T>& P, const LaunchArgs<T>& a, int64_t gw, int64_t nw,
                           T* smem) {
  T* scr = a.scratch ? a.scratch + gw * a.scratch_per_warp : nullptr;
  Item<T> it;
  it.smem = smem;
  it.self = a.self != 0;
  for (int64_t q = a.q0 + gw; q < a.q1; q += nw) {  // the same q on all lanes: team-uniform control flow
    int64_t i, j;
    if (a.self) {
      i = j = q;
      it.x = it.y = a.X + i * a.isz;
      it.self_out = a.self_out + i * a.ssz;
      it.self_x = it.self_y = it.self_out;
    } else {
      if (a.paired) {
        i = j = q;
      } else if (a.symmetric) {
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
    it.in = scr;
    it.out = scr ? scr + 2 * a.store : nullptr;
    it.t_off = a.store;
    T s, t;
    run_item(tm, P, it, s, t);
    if (!a.self && tm.lane == 0) {
      const int64_t o = a.paired ? q : (i - a.row0) * a.ny + j;
      if (a.out_s) a.out_s[o] = s;
      if (a.out_t) a.out_t[o] = t;
    }
    tm.sync();  // the next item reuses this team's shared memory and scratch
  }
}

}  // namespace cuda
}  // namespace ntkfast
