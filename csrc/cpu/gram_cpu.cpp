// CPU backend. A batch of L pairs runs in lockstep: every state entry is a vector of L lanes (one pair
// each), so the inner loops are fixed-length lane loops that the compiler vectorizes, whatever the plane
// geometry. Between poolings each offset plane runs through all its layers in small buffers; pooling is
// the only place where planes are gathered into the next stage's (smaller) state.
#include "cpu/gram_cpu.hpp"

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

#include "core/math.hpp"

#ifdef NTKFAST_HAVE_OPENMP
#include <omp.h>
#endif

namespace ntkfast {
namespace cpu {

int max_threads() {
#ifdef NTKFAST_HAVE_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

namespace {

// Geometry of offset d along one axis of an n-position state: the positions u whose partner u + d exists.
struct Span {
  int start, len;
};
inline Span span(int n, int d, bool circular) {
  if (circular) return {0, n};
  return {d < 0 ? -d : 0, n - (d < 0 ? -d : d)};
}

// Floor division and modulo for possibly negative numerators.
inline int floordiv(int a, int b) { return (a >= 0) ? a / b : -((-a + b - 1) / b); }
inline int posmod(int a, int b) { int r = a % b; return r < 0 ? r + b : r; }

// Planes of one stage stored by offset box (rect of each plane only).
struct PlaneStore {
  Range r;
  int h = 0, w = 0;
  std::vector<int64_t> off;  // entry offset of each plane, in units of lanes
  int64_t total = 0;
  int id(int dy, int dx) const { return (dy - r.y0) * (r.x1 - r.x0 + 1) + (dx - r.x0); }
};

PlaneStore make_store(const Range& r, int h, int w, bool circular) {
  PlaneStore s;
  s.r = r; s.h = h; s.w = w;
  for (int dy = r.y0; dy <= r.y1; ++dy)
    for (int dx = r.x0; dx <= r.x1; ++dx) {
      s.off.push_back(s.total);
      const int ly = span(h, dy, circular).len, lx = span(w, dx, circular).len;
      s.total += static_cast<int64_t>(std::max(ly, 0)) * std::max(lx, 0);
    }
  return s;
}

// One pooling contribution along an axis: from offset d into next offset dn with tap products g[t].
struct PoolCand {
  int dn;
  std::vector<double> g;  // g[t] = taps[t] * taps[t + delta]
};

std::vector<PoolCand> pool_candidates(const PoolAxis& p, int d, int lo, int hi, int n_next, bool circular) {
  std::vector<PoolCand> out;
  const int w = static_cast<int>(p.taps.size());
  for (int delta = -(w - 1); delta <= w - 1; ++delta) {
    if (posmod(d - delta, p.stride) != 0) continue;
    int dn = floordiv(d - delta, p.stride);
    if (circular) dn = posmod(dn, n_next);
    if (dn < lo || dn > hi) continue;
    PoolCand c{dn, std::vector<double>(w, 0.0)};
    bool any = false;
    for (int t = 0; t < w; ++t)
      if (t + delta >= 0 && t + delta < w) { c.g[t] = p.taps[t] * p.taps[t + delta]; any = true; }
    if (any) out.push_back(std::move(c));
  }
  return out;
}

// Lane-interleaved layout of a group of L inputs and their self data: value v of lane l sits at
// [v * L + l]. Images are [c][tiled position] (tiled 2x2 when circular, so partners never wrap), then each
// ReLU diagonal [slot][tiled position], then the scalar ReLU self values.
struct PackLayout {
  int tf = 1;
  int64_t tp = 1;                          // tiled positions of the input
  std::vector<int64_t> diag_off, diag_tp;  // per spatial ReLU slot
  int64_t scal_off = 0, size = 0;          // values per lane

  explicit PackLayout(const Program& P) : tf(P.circular ? 2 : 1) {
    tp = static_cast<int64_t>(P.H) * P.W * tf * tf;
    int64_t off = tp * P.C;
    for (size_t k = 0; k < P.diag_offset.size(); ++k) {
      diag_off.push_back(off);
      diag_tp.push_back(static_cast<int64_t>(P.diag_h[k]) * P.diag_w[k] * tf * tf);
      off += diag_tp.back();
    }
    scal_off = off;
    size = off + P.n_scalar_relu;
  }
};

// Calls f(dst, src) for every value of one input: dst indexes the packed layout (per lane), src the NHWC
// input (image values) or, offset by `image size`, its self-data vector.
template <class F>
void for_each_value(const Program& P, const PackLayout& lay, bool with_self, F&& f) {
  const int H = P.H, W = P.W, C = P.C, tf = lay.tf;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < C; ++c)
        for (int a = 0; a < tf; ++a)
          for (int b = 0; b < tf; ++b)
            f(c * lay.tp + static_cast<int64_t>(y + a * H) * tf * W + x + b * W,
              (static_cast<int64_t>(y) * W + x) * C + c, false);
  if (!with_self) return;
  for (size_t k = 0; k < lay.diag_off.size(); ++k) {
    const int h = P.diag_h[k], w = P.diag_w[k];
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int a = 0; a < tf; ++a)
          for (int b = 0; b < tf; ++b)
            f(lay.diag_off[k] + static_cast<int64_t>(y + a * h) * tf * w + x + b * w,
              P.diag_offset[k] + static_cast<int64_t>(y) * w + x, true);
  }
  for (int k = 0; k < P.n_scalar_relu; ++k) f(lay.scal_off + k, P.scalar_offset + k, true);
}

// Interleaves L inputs (and their self data when `selfs` is given) into dst (lay.size * L values).
template <class T, int L>
void pack(const Program& P, const PackLayout& lay, const T* const* imgs, const T* const* selfs, T* dst) {
  for_each_value(P, lay, selfs != nullptr, [&](int64_t d, int64_t s, bool self) {
    for (int l = 0; l < L; ++l) dst[d * L + l] = self ? selfs[l][s] : imgs[l][s];
  });
}

// One input (and its self data) repeated in every lane.
template <class T, int L>
void broadcast(const Program& P, const PackLayout& lay, const T* img, const T* self, T* dst) {
  for_each_value(P, lay, true, [&](int64_t d, int64_t s, bool is_self) {
    const T v = is_self ? self[s] : img[s];
    for (int l = 0; l < L; ++l) dst[d * L + l] = v;
  });
}

// Packs consecutive groups of L rows of X (n rows), the last group padded by repeating its last row.
template <class T, int L>
std::vector<T> pack_groups(const Program& P, const PackLayout& lay, const T* X, const T* self, int64_t n) {
  const int64_t groups = (n + L - 1) / L, isz = P.input_size(), ssz = P.self_size;
  std::vector<T> out(static_cast<size_t>(groups * lay.size * L));
  for (int64_t g = 0; g < groups; ++g) {
    const T *imgs[L], *selfs[L];
    for (int l = 0; l < L; ++l) {
      const int64_t r = std::min<int64_t>(g * L + l, n - 1);
      imgs[l] = X + r * isz;
      selfs[l] = self ? self + r * ssz : nullptr;
    }
    pack<T, L>(P, lay, imgs, self ? selfs : nullptr, out.data() + g * lay.size * L);
  }
  return out;
}

template <class T, int L>
class Engine {
 public:
  Engine(const Program& P, const PackLayout& lay) : P_(P), lay_(lay), tf_(lay.tf) {
    const size_t plane = static_cast<size_t>(P.max_plane) * L;
    for (auto* b : {&s0_, &t0_, &s1_, &t1_, &hs_, &ht_}) b->assign(plane, T(0));
    int kmax = 1;
    for (const Stage& st : P.stages)
      for (const LayerOp& op : st.ops) kmax = std::max(kmax, op.kx);
    pad_.assign(static_cast<size_t>(P.W + kmax) * L, T(0));
    zero_.assign(static_cast<size_t>(P.W) * L, T(0));
    row_.assign(static_cast<size_t>(std::max(P.W, 1)) * 2 * L, T(0));
    xbuf_.assign(static_cast<size_t>(lay.size) * L, T(0));
    for (size_t k = 0; k < P.diag_offset.size(); ++k) diag_self_.emplace_back(lay.diag_tp[k] * L, T(0));
    dgx_.resize(P.diag_offset.size());
    dgy_.resize(P.diag_offset.size());
    int64_t most = 0;
    for (size_t s = 1; s < P.stages.size(); ++s) {
      const Stage& st = P.stages[s];
      stores_pair_.push_back(make_store(st.need_pair, st.h_in, st.w_in, P.circular));
      stores_self_.push_back(make_store(st.need_self, st.h_in, st.w_in, P.circular));
      most = std::max({most, stores_pair_.back().total, stores_self_.back().total});
    }
    for (auto* b : {&in_s_, &in_t_, &out_s_, &out_t_}) b->assign(static_cast<size_t>(most) * L, T(0));
  }

  // The x side of a pair batch: one input and its self data in every lane (engine-owned pack).
  const T* broadcast_x(const T* img, const T* self) {
    broadcast<T, L>(P_, lay_, img, self, xbuf_.data());
    return xbuf_.data();
  }

  // Runs one batch of L lane pairs given packed inputs (PackLayout). Self mode: ypack == xpack holds
  // images only; the ReLU norms come from the pairs' own d = 0 planes, which are also written to self_out
  // (self-data vectors of the first `lanes` lanes). Pair mode: packs carry the self data. Results: out_s /
  // out_t for the first `lanes` lanes.
  void run(int lanes, const T* xpack, const T* ypack, bool self_mode, T* out_s, T* out_t, T* const* self_out) {
    self_ = self_mode;
    img_x_ = xpack;
    img_y_ = ypack;
    for (size_t k = 0; k < dgx_.size(); ++k) {
      dgx_[k] = self_ ? diag_self_[k].data() : xpack + lay_.diag_off[k] * L;
      dgy_[k] = self_ ? diag_self_[k].data() : ypack + lay_.diag_off[k] * L;
    }
    scal_x_ = xpack + lay_.scal_off * L;
    scal_y_ = ypack + lay_.scal_off * L;
    if (!P_.spatial) return run_vector(lanes, out_s, out_t, self_out);
    for (int l = 0; l < L; ++l) acc_s_[l] = acc_t_[l] = 0.0;
    const int ns = static_cast<int>(P_.stages.size());
    for (int s = 0; s < ns; ++s) {
      const Stage& st = P_.stages[s];
      if (self_ && !st.self_active) break;
      const Range& need = self_ ? st.need_self : st.need_pair;
      if (st.has_pool) {
        const PlaneStore& nxt = (self_ ? stores_self_ : stores_pair_)[s];
        std::fill(out_s_.begin(), out_s_.begin() + nxt.total * L, T(0));
        std::fill(out_t_.begin(), out_t_.begin() + nxt.total * L, T(0));
      }
      // d = 0 first: in self mode it records the diagonals that the other planes' ReLUs read.
      if (need.y0 <= 0 && 0 <= need.y1 && need.x0 <= 0 && 0 <= need.x1) plane(s, 0, 0);
      for (int dy = need.y0; dy <= need.y1; ++dy)
        for (int dx = need.x0; dx <= need.x1; ++dx)
          if (dy != 0 || dx != 0) plane(s, dy, dx);
      if (st.has_pool) {
        std::swap(in_s_, out_s_);
        std::swap(in_t_, out_t_);
      }
    }
    const Stage& last = P_.stages.back();
    const double den = P_.readout == Readout::Gap
                           ? static_cast<double>(last.h_out) * last.w_out * last.h_out * last.w_out
                           : static_cast<double>(last.h_out) * last.w_out;
    for (int l = 0; l < lanes; ++l) {
      T s = static_cast<T>(acc_s_[l] / den), t = static_cast<T>(acc_t_[l] / den);
      scalar_part(l, s, t, self_out);
      out_s[l] = s;
      out_t[l] = t;
    }
    if (self_)
      for (int l = 0; l < lanes; ++l)
        for (size_t k = 0; k < diag_self_.size(); ++k) {
          const int h = P_.diag_h[k], w = P_.diag_w[k];
          T* dst = self_out[l] + P_.diag_offset[k];
          for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x)
              dst[y * w + x] = diag_self_[k][(static_cast<size_t>(y) * tf_ * w + x) * L + l];
        }
  }

 private:
  void run_vector(int lanes, T* out_s, T* out_t, T* const* self_out) {
    const int D = P_.C;
    double acc[L] = {};
    for (int k = 0; k < D; ++k)
      for (int l = 0; l < L; ++l)
        acc[l] += static_cast<double>(img_x_[k * L + l]) * static_cast<double>(img_y_[k * L + l]);
    for (int l = 0; l < lanes; ++l) {
      T s = static_cast<T>(acc[l] / D), t = T(0);
      scalar_part(l, s, t, self_out);
      out_s[l] = s;
      out_t[l] = t;
    }
  }

  void scalar_part(int l, T& s, T& t, T* const* self_out) {
    for (const ScalarOp& op : P_.scalar) {
      if (op.kind == ScalarOp::Dense) {
        s = static_cast<T>(op.w2) * s + static_cast<T>(op.b2);
        t = static_cast<T>(op.w2) * t + s;
      } else {
        T px, py;
        if (self_) {
          self_out[l][P_.scalar_offset + op.relu_slot] = s;
          px = py = s;
        } else {
          px = scal_x_[op.relu_slot * L + l];
          py = scal_y_[op.relu_slot * L + l];
        }
        relu_step(s, t, px, py);
      }
    }
  }

  // Runs plane (dy, dx) of stage s through its layers, then pools it into the next stage or reads it out.
  void plane(int s, int dy, int dx) {
    const Stage& st = P_.stages[s];
    const bool circ = P_.circular;
    int h = st.h_in, w = st.w_in;
    Span sy = span(h, dy, circ), sx = span(w, dx, circ);
    if (sy.len <= 0 || sx.len <= 0) return;
    T* S = s0_.data();
    T* Tt = t0_.data();
    if (s == 0) {
      cross_correlation(dy, dx, sy, sx, S, Tt);
    } else {
      const PlaneStore& in = (self_ ? stores_self_ : stores_pair_)[s - 1];
      const size_t n = static_cast<size_t>(sy.len) * sx.len * L;
      const size_t o = static_cast<size_t>(in.off[in.id(dy, dx)]) * L;
      std::memcpy(S, in_s_.data() + o, n * sizeof(T));
      std::memcpy(Tt, in_t_.data() + o, n * sizeof(T));
    }
    for (size_t k = 0; k < st.ops.size(); ++k) {
      const LayerOp& op = st.ops[k];
      if (op.kind == LayerOp::Conv) {
        const Span oy = span(op.h_out, dy, circ), ox = span(op.w_out, dx, circ);
        if (oy.len <= 0 || ox.len <= 0) return;  // the plane leaves the state: it contributes nothing
        T* S2 = (S == s0_.data()) ? s1_.data() : s0_.data();
        T* T2 = (Tt == t0_.data()) ? t1_.data() : t0_.data();
        // A ReLU right after the conv runs on each output row while it is still in L1.
        const bool fuse = k + 1 < st.ops.size() && st.ops[k + 1].kind == LayerOp::Relu;
        conv(op, fuse ? &st.ops[k + 1] : nullptr, dy, dx, sy, sx, oy, ox, S, Tt, S2, T2);
        if (fuse) ++k;
        S = S2; Tt = T2; sy = oy; sx = ox; h = op.h_out; w = op.w_out;
      } else {
        for (int i = 0; i < sy.len; ++i)
          relu_row(op, dy, dx, sy, sx, i, S + static_cast<size_t>(i) * sx.len * L,
                   Tt + static_cast<size_t>(i) * sx.len * L);
      }
    }
    if (st.has_pool) {
      pool(s, dy, dx, sy, sx, S, Tt);
    } else if (P_.readout == Readout::Gap || (dy == 0 && dx == 0)) {
      const size_t n = static_cast<size_t>(sy.len) * sx.len;
      double as[L] = {}, at[L] = {};
      for (size_t e = 0; e < n; ++e)
        for (int l = 0; l < L; ++l) {
          as[l] += static_cast<double>(S[e * L + l]);
          at[l] += static_cast<double>(Tt[e * L + l]);
        }
      for (int l = 0; l < L; ++l) { acc_s_[l] += as[l]; acc_t_[l] += at[l]; }
    }
  }

  // First layer: S[u, u+d] = <x[u], y[u+d]> / C over channels; T = 0.
  void cross_correlation(int dy, int dx, Span sy, Span sx, T* S, T* Tt) {
    const int C = P_.C, SW = tf_ * P_.W;
    const size_t plane = static_cast<size_t>(P_.H) * P_.W * tf_ * tf_;
    const T* yimg = img_y_;
    const T invC = T(1) / static_cast<T>(C);
    const size_t n = static_cast<size_t>(sy.len) * sx.len * L;
    std::fill(S, S + n, T(0));
    std::fill(Tt, Tt + n, T(0));
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < sy.len; ++i) {
        const T* a = img_x_ + (c * plane + static_cast<size_t>(sy.start + i) * SW + sx.start) * L;
        const T* b = yimg + (c * plane + static_cast<size_t>(sy.start + i + dy) * SW + sx.start + dx) * L;
        T* o = S + static_cast<size_t>(i) * sx.len * L;
        for (int j = 0; j < sx.len * L; ++j) o[j] += a[j] * b[j];
      }
    if (C > 1)
      for (size_t e = 0; e < n; ++e) S[e] *= invC;
  }

  // Box sum of a ky x kx window (separable), zero outside the plane's span (wrapping when circular), then
  // S' = scale * box(S) + b^2, T' = scale * box(T) + S'. Rows are padded once, so every sum is a
  // branch-free flat loop over (position, lane); with `relu` (the op that follows) each output row goes
  // through the ReLU while it is still in L1.
  void conv(const LayerOp& op, const LayerOp* relu, int dy, int dx, Span sy, Span sx, Span oy, Span ox,
            const T* S, const T* Tt, T* S2, T* T2) {
    const bool circ = P_.circular;
    const int ly = sy.len, lx = sx.len, loy = oy.len, lox = ox.len, nrow = lox * L;
    T* hs = hs_.data();
    T* ht = ht_.data();
    T* pr = pad_.data();
    const int plen = lox + op.kx - 1;  // padded row: pr[c] = row[c - pad_x], zero (or wrapped) outside
    // SAME 3-tap rows need no padded copy: the edge sums just drop the missing (zero) term.
    const bool same3 = !circ && op.kx == 3 && op.pad_x == 1 && lox == lx && lx >= 2;
    for (int i = 0; i < ly; ++i)
      for (int which = 0; which < 2; ++which) {
        const T* src = (which ? Tt : S) + static_cast<size_t>(i) * lx * L;
        T* dst = (which ? ht : hs) + static_cast<size_t>(i) * nrow;
        if (same3) {
          hsum3_same(src, lx, dst);
          continue;
        }
        for (int c = 0; c < plen; ++c) {
          int q = c - op.pad_x;
          if (circ) q = q < 0 ? q + lx : (q >= lx ? q - lx : q);
          T* o = pr + static_cast<size_t>(c) * L;
          if (q >= 0 && q < lx) {
            for (int l = 0; l < L; ++l) o[l] = src[q * L + l];
          } else {
            for (int l = 0; l < L; ++l) o[l] = T(0);
          }
        }
        if (op.kx == 3) {  // the common case in one pass: same sums, same order as the loop below
          const T* __restrict p = pr;
          T* __restrict q = dst;
          for (int e = 0; e < nrow; ++e) q[e] = (p[e] + p[e + L]) + p[e + 2 * L];
        } else {
          for (int e = 0; e < nrow; ++e) dst[e] = pr[e];
          for (int b = 1; b < op.kx; ++b)
            for (int e = 0; e < nrow; ++e) dst[e] += pr[e + b * L];
        }
      }
    const T scale = static_cast<T>(op.scale), bias2 = static_cast<T>(op.bias2);
    const T* zero = zero_.data();
    for (int i = 0; i < loy; ++i) {
      T* os = S2 + static_cast<size_t>(i) * nrow;
      T* ot = T2 + static_cast<size_t>(i) * nrow;
      if (op.ky == 3) {  // the common case in one pass: same sums, same order as the general loop
        const T* rs[3];
        const T* rt[3];
        for (int a = 0; a < 3; ++a) {
          int r = i + a - op.pad_y;
          if (circ) r = r < 0 ? r + ly : (r >= ly ? r - ly : r);
          const bool in = r >= 0 && r < ly;
          rs[a] = in ? hs + static_cast<size_t>(r) * nrow : zero;
          rt[a] = in ? ht + static_cast<size_t>(r) * nrow : zero;
        }
        vsum3(rs, rt, scale, bias2, nrow, os, ot);
      } else {
        for (int a = 0; a < op.ky; ++a) {
          int r = i + a - op.pad_y;
          if (circ) r = r < 0 ? r + ly : (r >= ly ? r - ly : r);
          const bool in = r >= 0 && r < ly;
          const T* ps = in ? hs + static_cast<size_t>(r) * nrow : zero;
          const T* pt = in ? ht + static_cast<size_t>(r) * nrow : zero;
          if (a == 0) {
            for (int e = 0; e < nrow; ++e) { os[e] = ps[e]; ot[e] = pt[e]; }
          } else {
            for (int e = 0; e < nrow; ++e) { os[e] += ps[e]; ot[e] += pt[e]; }
          }
        }
        for (int e = 0; e < nrow; ++e) {
          os[e] = scale * os[e] + bias2;
          ot[e] = scale * ot[e] + os[e];
        }
      }
      if (relu) relu_row(*relu, dy, dx, oy, ox, i, os, ot);
    }
  }

  // q[j] = (p[j-1] + p[j]) + p[j+1] over a row of n >= 2 positions, zero outside: the padded sums of
  // conv() with the zero term dropped (0 + x == x exactly).
  static void hsum3_same(const T* __restrict p, int n, T* __restrict q) {
    for (int l = 0; l < L; ++l) q[l] = p[l] + p[L + l];
    for (int e = L; e < (n - 1) * L; ++e) q[e] = (p[e - L] + p[e]) + p[e + L];
    for (int e = (n - 1) * L; e < n * L; ++e) q[e] = p[e - L] + p[e];
  }

  // S row = scale * ((s0 + s1) + s2) + b^2, T row = scale * ((t0 + t1) + t2) + S row.
  static void vsum3(const T* const* rs, const T* const* rt, T scale, T bias2, int n, T* __restrict os,
                    T* __restrict ot) {
    const T *__restrict s0 = rs[0], *__restrict s1 = rs[1], *__restrict s2 = rs[2];
    const T *__restrict t0 = rt[0], *__restrict t1 = rt[1], *__restrict t2 = rt[2];
    for (int e = 0; e < n; ++e) os[e] = scale * ((s0[e] + s1[e]) + s2[e]) + bias2;
    for (int e = 0; e < n; ++e) ot[e] = scale * ((t0[e] + t1[e]) + t2[e]) + os[e];
  }

  // ReLU on row i of a plane (in place). In self mode the d = 0 plane first records its pre-activation
  // values: the diagonal S(x,x)[u,u] that every pair's ReLU at this layer reads.
  void relu_row(const LayerOp& op, int dy, int dx, Span sy, Span sx, int i, T* ps, T* pt) {
    const int SW = tf_ * op.w_in, H = op.h_in, W = op.w_in;
    if (self_ && dy == 0 && dx == 0) {
      for (int a = 0; a < tf_; ++a)
        for (int b = 0; b < tf_; ++b) {
          T* dst = diag_self_[op.relu_slot].data() + (static_cast<size_t>(i + a * H) * SW + b * W) * L;
          for (int e = 0; e < W * L; ++e) dst[e] = ps[e];
        }
    }
    const T* px = dgx_[op.relu_slot] + (static_cast<size_t>(sy.start + i) * SW + sx.start) * L;
    const T* py = dgy_[op.relu_slot] + (static_cast<size_t>(sy.start + i + dy) * SW + sx.start + dx) * L;
    for (int j = 0; j < sx.len * L; ++j) relu_step(ps[j], pt[j], px[j], py[j]);
  }

  // Adds plane d's contributions to every plane of the next stage that its pooling reaches.
  void pool(int s, int dy, int dx, Span sy, Span sx, const T* S, const T* Tt) {
    const Stage& st = P_.stages[s];
    if (self_ && !P_.stages[s + 1].self_active) return;
    const PlaneStore& nxt = (self_ ? stores_self_ : stores_pair_)[s];
    const bool circ = P_.circular;
    const PoolAxis &pyx = st.pool_y, &pxx = st.pool_x;
    const auto cy = pool_candidates(pyx, dy, nxt.r.y0, nxt.r.y1, pyx.n_out, circ);
    const auto cx = pool_candidates(pxx, dx, nxt.r.x0, nxt.r.x1, pxx.n_out, circ);
    if (cy.empty() || cx.empty()) return;
    const int wy = static_cast<int>(pyx.taps.size()), wx = static_cast<int>(pxx.taps.size());
    T* rs = row_.data();
    T* rt = row_.data() + static_cast<size_t>(P_.W) * L;
    for (const PoolCand& a : cy) {
      const Span jy = span(pyx.n_out, a.dn, circ);
      for (int jl = 0; jl < jy.len; ++jl) {
        const int j = jy.start + jl;
        // Row combination along y: rs[x] = sum_t g[t] S[origin + stride j + t - start][x].
        for (int e = 0; e < sx.len * L; ++e) { rs[e] = T(0); rt[e] = T(0); }
        bool any = false;
        for (int t = 0; t < wy; ++t) {
          if (a.g[t] == 0.0) continue;
          const int i = pyx.origin + pyx.stride * j + t - sy.start;
          if (i < 0 || i >= sy.len) continue;
          any = true;
          const T g = static_cast<T>(a.g[t]);
          const T* ps = S + static_cast<size_t>(i) * sx.len * L;
          const T* pt = Tt + static_cast<size_t>(i) * sx.len * L;
          for (int e = 0; e < sx.len * L; ++e) { rs[e] += g * ps[e]; rt[e] += g * pt[e]; }
        }
        if (!any) continue;
        for (const PoolCand& b : cx) {
          const Span jx = span(pxx.n_out, b.dn, circ);
          const size_t o = static_cast<size_t>(nxt.off[nxt.id(a.dn, b.dn)]) * L;
          T* qs = out_s_.data() + o + static_cast<size_t>(jl) * jx.len * L;
          T* qt = out_t_.data() + o + static_cast<size_t>(jl) * jx.len * L;
          for (int kl = 0; kl < jx.len; ++kl) {
            const int k = jx.start + kl;
            for (int t = 0; t < wx; ++t) {
              if (b.g[t] == 0.0) continue;
              const int c = pxx.origin + pxx.stride * k + t - sx.start;
              if (c < 0 || c >= sx.len) continue;
              const T g = static_cast<T>(b.g[t]);
              for (int l = 0; l < L; ++l) {
                qs[kl * L + l] += g * rs[c * L + l];
                qt[kl * L + l] += g * rt[c * L + l];
              }
            }
          }
        }
      }
    }
  }

  const Program& P_;
  const PackLayout& lay_;
  const int tf_;  // 2 when circular: images and diagonals are stored tiled 2x2 so partners never wrap
  bool self_ = false;
  const T *img_x_ = nullptr, *img_y_ = nullptr, *scal_x_ = nullptr, *scal_y_ = nullptr;
  std::vector<const T*> dgx_, dgy_;       // this batch's ReLU diagonals of x and y
  std::vector<std::vector<T>> diag_self_;  // self mode: the diagonals being recorded
  std::vector<T> xbuf_;                    // pair mode: x broadcast to all lanes
  std::vector<T> s0_, t0_, s1_, t1_, hs_, ht_, row_, pad_, zero_;
  std::vector<PlaneStore> stores_pair_, stores_self_;  // layout of stage s+1's input planes
  std::vector<T> in_s_, in_t_, out_s_, out_t_;
  double acc_s_[L], acc_t_[L];
};

template <class T>
constexpr int lanes_for() { return 64 / static_cast<int>(sizeof(T)); }  // one 512-bit vector

template <class Body>
void parallel_batches(int64_t n_batches, int threads, Body&& body_factory) {
  std::exception_ptr err = nullptr;
  const int nt = threads > 0 ? threads : max_threads();
#ifdef NTKFAST_HAVE_OPENMP
#pragma omp parallel num_threads(nt)
#endif
  {
    try {
      auto body = body_factory();
#ifdef NTKFAST_HAVE_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
      for (int64_t b = 0; b < n_batches; ++b) {
        try {
          body(b);
        } catch (...) {
#ifdef NTKFAST_HAVE_OPENMP
#pragma omp critical(ntkfast_err)
#endif
          if (!err) err = std::current_exception();
        }
      }
    } catch (...) {
#ifdef NTKFAST_HAVE_OPENMP
#pragma omp critical(ntkfast_err)
#endif
      if (!err) err = std::current_exception();
    }
  }
  (void)nt;
  if (err) std::rethrow_exception(err);
}

}  // namespace

template <class T>
void self_data(const Program& P, const T* X, int64_t n, T* out, int threads) {
  constexpr int L = lanes_for<T>();
  const PackLayout lay(P);
  const std::vector<T> packed = pack_groups<T, L>(P, lay, X, nullptr, n);
  const int64_t ssz = P.self_size;
  parallel_batches((n + L - 1) / L, threads, [&]() {
    return [&, eng = std::make_shared<Engine<T, L>>(P, lay),
            scratch = std::vector<T>(static_cast<size_t>(ssz + 1) * L)](int64_t g) mutable {
      const int lanes = static_cast<int>(std::min<int64_t>(L, n - g * L));
      T* so[L];
      T os[L], ot[L];
      for (int l = 0; l < L; ++l)
        so[l] = l < lanes ? out + (g * L + l) * ssz : scratch.data() + static_cast<size_t>(l) * (ssz + 1);
      const T* xp = packed.data() + g * lay.size * L;
      eng->run(lanes, xp, xp, true, os, ot, so);
    };
  });
}

// A batch is one x (row i, broadcast to every lane) against a group of L consecutive y (columns): the y
// side is packed once per tile, so a batch copies nothing but the broadcast x.
template <class T>
void gram_tile(const Program& P, const T* X, int64_t nx, const T* Y, int64_t ny, const T* self_x,
               const T* self_y, bool symmetric, T* nngp, T* ntk, int threads) {
  constexpr int L = lanes_for<T>();
  if (symmetric && (nx != ny)) throw std::invalid_argument("symmetric tile must be square");
  const PackLayout lay(P);
  const std::vector<T> ypacked = pack_groups<T, L>(P, lay, Y, self_y, ny);
  const int64_t groups = (ny + L - 1) / L, isz = P.input_size(), ssz = P.self_size;
  std::vector<std::pair<int32_t, int32_t>> batches;  // (row, column group)
  for (int64_t i = 0; i < nx; ++i)
    for (int64_t g = symmetric ? i / L : 0; g < groups; ++g)
      batches.emplace_back(static_cast<int32_t>(i), static_cast<int32_t>(g));
  parallel_batches(static_cast<int64_t>(batches.size()), threads, [&]() {
    return [&, eng = std::make_shared<Engine<T, L>>(P, lay)](int64_t b) {
      const int64_t i = batches[b].first, g = batches[b].second;
      const int lanes = static_cast<int>(std::min<int64_t>(L, ny - g * L));
      T os[L], ot[L];
      const T* xp = eng->broadcast_x(X + i * isz, self_x + i * ssz);
      eng->run(lanes, xp, ypacked.data() + g * lay.size * L, false, os, ot, nullptr);
      for (int l = 0; l < lanes; ++l) {
        const int64_t j = g * L + l;
        if (symmetric && j < i) continue;
        const int64_t a = i * ny + j, m = j * ny + i;
        if (nngp) { nngp[a] = os[l]; if (symmetric) nngp[m] = os[l]; }
        if (ntk) { ntk[a] = ot[l]; if (symmetric) ntk[m] = ot[l]; }
      }
    };
  });
}

template void self_data<float>(const Program&, const float*, int64_t, float*, int);
template void self_data<double>(const Program&, const double*, int64_t, double*, int);
template void gram_tile<float>(const Program&, const float*, int64_t, const float*, int64_t, const float*,
                               const float*, bool, float*, float*, int);
template void gram_tile<double>(const Program&, const double*, int64_t, const double*, int64_t,
                                const double*, const double*, bool, double*, double*, int);

}  // namespace cpu
}  // namespace ntkfast
