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

#include "core/activations.hpp"

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

// Tiling factor of a stored image or diagonal: 2 where its stage is circular, so that partners (u + d) mod n
// read a contiguous row of a 2x2 tiled copy and never wrap.
inline int tiling(bool circular) { return circular ? 2 : 1; }

// Lane-interleaved layout of a group of L inputs and their self data: value v of lane l sits at
// [v * L + l]. Images are [c][tiled position], then each ReLU diagonal [slot][tiled position], then the
// scalar ReLU self values.
struct PackLayout {
  int tf = 1;                              // tiling of the images (the first stage's representation)
  int64_t tp = 1;                          // tiled positions of the input
  std::vector<int64_t> diag_off, diag_tp;  // per spatial ReLU slot
  int64_t scal_off = 0, size = 0;          // values per lane

  explicit PackLayout(const Program& P) : tf(tiling(P.spatial && P.stages[0].circular)) {
    tp = static_cast<int64_t>(P.H) * P.W * tf * tf;
    int64_t off = tp * P.C;
    for (const DiagSlot& d : P.diags) {
      const int t = tiling(d.circular);
      diag_off.push_back(off);
      diag_tp.push_back(static_cast<int64_t>(d.h) * d.w * t * t);
      off += diag_tp.back();
    }
    scal_off = off;
    size = off + P.n_scalar_relu;
  }
};

// Calls f(dst, src, is_self) for every value of one input: dst indexes the packed layout (per lane), src the
// NHWC input (image values) or its self-data vector.
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
  for (size_t k = 0; k < P.diags.size(); ++k) {
    const DiagSlot& d = P.diags[k];
    const int h = d.h, w = d.w, t = tiling(d.circular);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int a = 0; a < t; ++a)
          for (int b = 0; b < t; ++b)
            f(lay.diag_off[k] + static_cast<int64_t>(y + a * h) * t * w + x + b * w,
              d.offset + static_cast<int64_t>(y) * w + x, true);
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

// Boundary of a convolution along one axis of a plane: wrap (CIRCULAR in a circular plane), or zero
// padding around each of the segments [0, brk) and [brk, n) (geometry.hpp: segment_break).
struct Bound {
  bool wrap;
  int brk;
};

template <class T, int L>
class Engine {
 public:
  Engine(const Program& P, const PackLayout& lay) : P_(P), lay_(lay) {
    const size_t plane = static_cast<size_t>(P.max_plane) * L;
    for (auto* b : {&hs_, &ht_}) b->assign(plane, T(0));
    // One (S, T) buffer per register and one spare (a convolution writes into a free buffer).
    bufs_.assign(2 * (P.n_regs + 1), std::vector<T>(plane, T(0)));
    reg_buf_.assign(P.n_regs, -1);
    sy_.assign(P.n_regs, Span{0, 0});
    sx_.assign(P.n_regs, Span{0, 0});
    int kmax = 1;
    for (const Stage& st : P.stages)
      for (const StageOp& op : st.ops) kmax = std::max(kmax, op.kx);
    pad_.assign(static_cast<size_t>(P.W + kmax) * L, T(0));
    zero_.assign(static_cast<size_t>(P.W) * L, T(0));
    row_.assign(static_cast<size_t>(P.W) * 2 * L, T(0));
    xbuf_.assign(static_cast<size_t>(lay.size) * L, T(0));
    for (size_t k = 0; k < P.diags.size(); ++k) diag_self_.emplace_back(lay.diag_tp[k] * L, T(0));
    dgx_.resize(P.diags.size());
    dgy_.resize(P.diags.size());
    const int64_t most = std::max(P.max_store[kPair], P.max_store[kSelf]);
    for (auto* b : {&in_s_, &in_t_, &out_s_, &out_t_}) b->assign(static_cast<size_t>(most) * L, T(0));
  }

  // Bytes of every buffer this engine owns.
  int64_t bytes() const {
    size_t n = 0;
    for (const auto* b : {&hs_, &ht_, &pad_, &zero_, &row_, &xbuf_, &in_s_, &in_t_, &out_s_, &out_t_}) n += b->size();
    for (const auto& b : bufs_) n += b.size();
    for (const auto& d : diag_self_) n += d.size();
    return static_cast<int64_t>(n * sizeof(T));
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
    mode_ = self_mode ? kSelf : kPair;
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
      if (!st.active[mode_]) break;
      const Range& need = st.need[mode_];
      if (st.has_pool() && P_.stages[s + 1].active[mode_]) {
        const Stage& nx = P_.stages[s + 1];
        const int64_t n = nx.store[mode_].back() * static_cast<int64_t>(nx.regs_in.size()) * L;
        std::fill(out_s_.begin(), out_s_.begin() + n, T(0));
        std::fill(out_t_.begin(), out_t_.begin() + n, T(0));
      }
      // d = 0 first: in self mode it records the diagonals that the other planes' ReLUs read.
      if (need.contains(0, 0)) plane(s, 0, 0);
      for (int dy = need.y0; dy <= need.y1; ++dy)
        for (int dx = need.x0; dx <= need.x1; ++dx)
          if (dy != 0 || dx != 0) plane(s, dy, dx);
      if (st.has_pool()) {
        std::swap(in_s_, out_s_);
        std::swap(in_t_, out_t_);
      }
    }
    const double den = P_.readout_den;
    for (int l = 0; l < lanes; ++l) {
      T s = static_cast<T>(acc_s_[l] / den), t = static_cast<T>(acc_t_[l] / den);
      scalar_part(l, s, t, self_out);
      out_s[l] = s;
      out_t[l] = t;
    }
    if (self_)
      for (int l = 0; l < lanes; ++l)
        for (size_t k = 0; k < diag_self_.size(); ++k) {
          const DiagSlot& d = P_.diags[k];
          const int tf = tiling(d.circular);
          T* dst = self_out[l] + d.offset;
          for (int y = 0; y < d.h; ++y)
            for (int x = 0; x < d.w; ++x)
              dst[y * d.w + x] = diag_self_[k][(static_cast<size_t>(y) * tf * d.w + x) * L + l];
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

  // The ops after the readout (or of a vector net) on one lane's values; registers as in the stages.
  void scalar_part(int l, T& s, T& t, T* const* self_out) {
    T sr[64], tr[64];
    sr[P_.readout_reg] = s;
    tr[P_.readout_reg] = t;
    for (const ScalarOp& op : P_.scalar) {
      T &so = sr[op.reg], &to = tr[op.reg];
      switch (op.kind) {
        case ScalarOp::Dense:
          if (op.standard) {
            to = static_cast<T>(op.w2) * to + static_cast<T>(op.t_s) * so + static_cast<T>(op.t_b);
            so = static_cast<T>(op.w2) * so + static_cast<T>(op.b2);
          } else {
            so = static_cast<T>(op.w2) * so + static_cast<T>(op.b2);
            to = static_cast<T>(op.w2) * to + so;
          }
          break;
        case ScalarOp::Act: {
          T px, py;
          if (self_) {
            self_out[l][P_.scalar_offset + op.relu_slot] = so;
            px = py = so;
          } else {
            px = scal_x_[op.relu_slot * L + l];
            py = scal_y_[op.relu_slot * L + l];
          }
          act_step(op.act, so, to, px, py);
          break;
        }
        case ScalarOp::Copy:
          so = sr[op.src];
          to = tr[op.src];
          break;
        case ScalarOp::Add:
          so = so + sr[op.src];
          to = to + tr[op.src];
          break;
      }
    }
    s = sr[P_.final_reg];
    t = tr[P_.final_reg];
  }

  // Buffers of the registers of the current plane: register r's S and T in bufs_[2 b], bufs_[2 b + 1] with
  // b = reg_buf_[r] (-1: the register holds no positions of this plane).
  int take_buf() {
    for (int b = 0;; ++b)
      if (!used_[b]) {
        used_[b] = true;
        return b;
      }
  }
  void release(int r) {
    if (reg_buf_[r] >= 0) used_[reg_buf_[r]] = false;
    reg_buf_[r] = -1;
  }
  T* S_of(int r) { return bufs_[2 * reg_buf_[r]].data(); }
  T* T_of(int r) { return bufs_[2 * reg_buf_[r] + 1].data(); }

  // Runs plane (dy, dx) of stage s through its ops (on each register), then pools each leaving register into
  // the next stage or reads the last one out.
  void plane(int s, int dy, int dx) {
    const Stage& st = P_.stages[s];
    const bool circ = st.circular;
    const Span sy0 = plane_span(st.h_in, dy, circ), sx0 = plane_span(st.w_in, dx, circ);
    if (sy0.len <= 0 || sx0.len <= 0) return;
    std::fill(used_, used_ + P_.n_regs + 1, false);
    std::fill(reg_buf_.begin(), reg_buf_.end(), -1);
    const size_t n0 = static_cast<size_t>(sy0.len) * sx0.len * L;
    for (size_t k = 0; k < st.regs_in.size(); ++k) {
      const int r = st.regs_in[k];
      reg_buf_[r] = take_buf();
      sy_[r] = sy0;
      sx_[r] = sx0;
      if (s == 0) {
        cross_correlation(dy, dx, sy0, sx0, S_of(r), T_of(r));
      } else {
        const int64_t block = st.store[mode_].back() * static_cast<int64_t>(k);
        const size_t o = static_cast<size_t>(block + st.store[mode_][st.need[mode_].index(dy, dx)]) * L;
        std::memcpy(S_of(r), in_s_.data() + o, n0 * sizeof(T));
        std::memcpy(T_of(r), in_t_.data() + o, n0 * sizeof(T));
      }
    }
    for (size_t k = 0; k < st.ops.size(); ++k) {
      const StageOp& op = st.ops[k];
      const int r = op.reg;
      switch (op.kind) {
        case StageOp::Conv: {
          // A pointwise op right after the conv on the same register runs on each output row in L1.
          const bool fuse = k + 1 < st.ops.size() && st.ops[k + 1].kind == StageOp::Act && st.ops[k + 1].reg == r;
          if (reg_buf_[r] < 0) {
            k += fuse;
            break;
          }
          const Span oy = plane_span(op.h_out, dy, circ), ox = plane_span(op.w_out, dx, circ);
          if (oy.len <= 0 || ox.len <= 0) {  // the plane leaves the register's state: it holds nothing more
            release(r);
            k += fuse;
            break;
          }
          const Span sy = sy_[r], sx = sx_[r];
          const int q = take_buf();
          const Bound by{op.wrap, segment_break(sy.len, dy, circ)}, bx{op.wrap, segment_break(sx.len, dx, circ)};
          conv(op, fuse ? &st.ops[k + 1] : nullptr, dy, dx, sy, sx, oy, ox, by, bx, S_of(r), T_of(r),
               bufs_[2 * q].data(), bufs_[2 * q + 1].data());
          release(r);
          reg_buf_[r] = q;
          sy_[r] = oy;
          sx_[r] = ox;
          k += fuse;
          break;
        }
        case StageOp::Act:
          if (reg_buf_[r] < 0) break;
          for (int i = 0; i < sy_[r].len; ++i)
            act_row(op, dy, dx, sy_[r], sx_[r], i, S_of(r) + static_cast<size_t>(i) * sx_[r].len * L,
                    T_of(r) + static_cast<size_t>(i) * sx_[r].len * L);
          break;
        case StageOp::Copy: {
          release(r);
          if (reg_buf_[op.src] < 0) break;
          reg_buf_[r] = take_buf();
          sy_[r] = sy_[op.src];
          sx_[r] = sx_[op.src];
          const size_t n = static_cast<size_t>(sy_[r].len) * sx_[r].len * L;
          std::memcpy(S_of(r), S_of(op.src), n * sizeof(T));
          std::memcpy(T_of(r), T_of(op.src), n * sizeof(T));
          break;
        }
        case StageOp::Add: {
          // Same resolution, so both hold this plane's positions or neither does.
          if (reg_buf_[op.src] >= 0 && reg_buf_[r] >= 0) {
            const size_t n = static_cast<size_t>(sy_[r].len) * sx_[r].len * L;
            T *ds = S_of(r), *dt = T_of(r);
            const T *ss = S_of(op.src), *st2 = T_of(op.src);
            for (size_t e = 0; e < n; ++e) ds[e] = ds[e] + ss[e];
            for (size_t e = 0; e < n; ++e) dt[e] = dt[e] + st2[e];
          }
          release(op.src);
          break;
        }
      }
    }
    if (st.has_pool()) {
      const Stage& nx = P_.stages[s + 1];
      if (!nx.active[mode_]) return;
      for (const RegPool& p : st.pools) {
        const int r = p.reg;
        if (reg_buf_[r] < 0) continue;
        const int block = static_cast<int>(std::find(nx.regs_in.begin(), nx.regs_in.end(), r) - nx.regs_in.begin());
        Segment gy[2], gx[2];
        const int ny = plane_segments(p.h_src, dy, circ, gy), nxs = plane_segments(p.w_src, dx, circ, gx);
        for (int a = 0; a < ny; ++a)
          for (int b = 0; b < nxs; ++b) pool(s, p, block, gy[a], gx[b], sy_[r], sx_[r], S_of(r), T_of(r));
      }
    } else if (P_.readout == Readout::Gap || (dy == 0 && dx == 0)) {
      const int r = st.readout_reg;
      if (reg_buf_[r] < 0) return;
      const size_t n = static_cast<size_t>(sy_[r].len) * sx_[r].len;
      accumulate(S_of(r), n, acc_s_);
      accumulate(T_of(r), n, acc_t_);
    }
  }

  // acc[l] += sum of the n entries of lane l, in float64 (each plane summed on its own, then added).
  static void accumulate(const T* __restrict v, size_t n, double* __restrict acc) {
    double a[L] = {};
    for (size_t e = 0; e < n; ++e)
      for (int l = 0; l < L; ++l) a[l] += static_cast<double>(v[e * L + l]);
    for (int l = 0; l < L; ++l) acc[l] += a[l];
  }

  // First layer: S[u, u+d] = <x[u], y[u+d]> / C over channels; T = 0.
  void cross_correlation(int dy, int dx, Span sy, Span sx, T* S, T* Tt) {
    const int C = P_.C, tf = lay_.tf, SW = tf * P_.W;
    const size_t plane = static_cast<size_t>(P_.H) * P_.W * tf * tf;
    const T invC = T(1) / static_cast<T>(C);
    const size_t n = static_cast<size_t>(sy.len) * sx.len * L;
    std::fill(S, S + n, T(0));
    std::fill(Tt, Tt + n, T(0));
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < sy.len; ++i) {
        const T* a = img_x_ + (c * plane + static_cast<size_t>(sy.start + i) * SW + sx.start) * L;
        const T* b = img_y_ + (c * plane + static_cast<size_t>(sy.start + i + dy) * SW + sx.start + dx) * L;
        T* o = S + static_cast<size_t>(i) * sx.len * L;
        for (int j = 0; j < sx.len * L; ++j) o[j] += a[j] * b[j];
      }
    if (C > 1)
      for (size_t e = 0; e < n; ++e) S[e] *= invC;
  }

  // out[c] = sum_{b < kx} src[c + b - pad] for c in [0, olen), over a row of len positions: zero outside,
  // or wrapped around with `wrap`. Rows are padded once, so every sum is a branch-free flat loop over
  // (position, lane).
  void hsum(const T* src, int len, int olen, int pad, int kx, bool wrap, T* dst) {
    const int nrow = olen * L;
    // SAME 3-tap rows need no padded copy: the edge sums just drop the missing (zero) term.
    if (!wrap && kx == 3 && pad == 1 && olen == len && len >= 2) return hsum3_same(src, len, dst);
    T* pr = pad_.data();
    const int plen = olen + kx - 1;
    for (int c = 0; c < plen; ++c) {
      int q = c - pad;
      if (wrap) q = posmod(q, len);  // windows wider than the row wrap more than once
      T* o = pr + static_cast<size_t>(c) * L;
      if (q >= 0 && q < len) {
        for (int l = 0; l < L; ++l) o[l] = src[q * L + l];
      } else {
        for (int l = 0; l < L; ++l) o[l] = T(0);
      }
    }
    if (kx == 3) {  // the common case in one pass: same sums, same order as the loop below
      const T* __restrict p = pr;
      T* __restrict q = dst;
      for (int e = 0; e < nrow; ++e) q[e] = (p[e] + p[e + L]) + p[e + 2 * L];
    } else {
      for (int e = 0; e < nrow; ++e) dst[e] = pr[e];
      for (int b = 1; b < kx; ++b)
        for (int e = 0; e < nrow; ++e) dst[e] += pr[e + b * L];
    }
  }

  // Box sum of a ky x kx window (separable) with the boundary of each axis, then S' = scale * box(S) + b^2,
  // T' = scale * box(T) + S' (standard parameterization: + t_s box(S) + t_b instead of S'). With `act` (the
  // pointwise op that follows) each output row goes through it while it is still in L1.
  void conv(const StageOp& op, const StageOp* act, int dy, int dx, Span sy, Span sx, Span oy, Span ox, Bound by,
            Bound bx, const T* S, const T* Tt, T* S2, T* T2) {
    const int ly = sy.len, lx = sx.len, loy = oy.len, lox = ox.len, nrow = lox * L;
    T* hs = hs_.data();
    T* ht = ht_.data();
    for (int i = 0; i < ly; ++i)
      for (int which = 0; which < 2; ++which) {
        const T* src = (which ? Tt : S) + static_cast<size_t>(i) * lx * L;
        T* dst = (which ? ht : hs) + static_cast<size_t>(i) * nrow;
        if (bx.wrap || bx.brk >= lx) {
          hsum(src, lx, lox, op.pad_x, op.kx, bx.wrap, dst);
        } else {  // two zero-padded segments (a SAME conv in a circular plane keeps the size)
          hsum(src, bx.brk, bx.brk, op.pad_x, op.kx, false, dst);
          hsum(src + static_cast<size_t>(bx.brk) * L, lx - bx.brk, lx - bx.brk, op.pad_x, op.kx, false,
               dst + static_cast<size_t>(bx.brk) * L);
        }
      }
    const T scale = static_cast<T>(op.scale), bias2 = static_cast<T>(op.bias2);
    const T* zero = zero_.data();
    for (int i = 0; i < loy; ++i) {
      T* os = S2 + static_cast<size_t>(i) * nrow;
      T* ot = T2 + static_cast<size_t>(i) * nrow;
      // Rows that feed output row i: its segment [r_lo, r_hi) (all rows, wrapped, for a CIRCULAR conv).
      const int r_lo = i < by.brk ? 0 : by.brk, r_hi = i < by.brk ? std::min(by.brk, ly) : ly;
      auto source = [&](int a, const T*& ps, const T*& pt) {
        int r = i + a - op.pad_y;
        if (by.wrap) r = posmod(r, ly);
        const bool in = by.wrap || (r >= r_lo && r < r_hi);
        ps = in ? hs + static_cast<size_t>(r) * nrow : zero;
        pt = in ? ht + static_cast<size_t>(r) * nrow : zero;
      };
      if (op.ky == 3 && !op.standard) {  // the common case in one pass: same sums, same order as the general loop
        const T* rs[3];
        const T* rt[3];
        for (int a = 0; a < 3; ++a) source(a, rs[a], rt[a]);
        vsum3(rs, rt, scale, bias2, nrow, os, ot);
      } else {
        for (int a = 0; a < op.ky; ++a) {
          const T *ps, *pt;
          source(a, ps, pt);
          if (a == 0) {
            for (int e = 0; e < nrow; ++e) {
              os[e] = ps[e];
              ot[e] = pt[e];
            }
          } else {
            for (int e = 0; e < nrow; ++e) {
              os[e] += ps[e];
              ot[e] += pt[e];
            }
          }
        }
        if (op.standard) {
          const T ts = static_cast<T>(op.t_s), tb = static_cast<T>(op.t_b);
          for (int e = 0; e < nrow; ++e) {
            ot[e] = scale * ot[e] + ts * os[e] + tb;
            os[e] = scale * os[e] + bias2;
          }
        } else {
          for (int e = 0; e < nrow; ++e) {
            os[e] = scale * os[e] + bias2;
            ot[e] = scale * ot[e] + os[e];
          }
        }
      }
      if (act) act_row(*act, dy, dx, oy, ox, i, os, ot);
    }
  }

  // q[j] = (p[j-1] + p[j]) + p[j+1] over a row of n >= 2 positions, zero outside: the padded sums of
  // hsum() with the zero term dropped (0 + x == x exactly).
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

  // A pointwise op on row i of a plane (in place). In self mode the d = 0 plane first records its input
  // values: the diagonal S(x,x)[u,u] that every pair's op at this layer reads.
  void act_row(const StageOp& op, int dy, int dx, Span sy, Span sx, int i, T* ps, T* pt) {
    const DiagSlot& slot = P_.diags[op.relu_slot];
    const int tf = tiling(slot.circular), H = op.h_in, W = op.w_in, SW = tf * W;
    if (self_ && dy == 0 && dx == 0) {
      for (int a = 0; a < tf; ++a)
        for (int b = 0; b < tf; ++b) {
          T* dst = diag_self_[op.relu_slot].data() + (static_cast<size_t>(i + a * H) * SW + b * W) * L;
          for (int e = 0; e < W * L; ++e) dst[e] = ps[e];
        }
    }
    const T* px = dgx_[op.relu_slot] + (static_cast<size_t>(sy.start + i) * SW + sx.start) * L;
    const T* py = dgy_[op.relu_slot] + (static_cast<size_t>(sy.start + i + dy) * SW + sx.start + dx) * L;
    const int n = sx.len * L;
    const ActParams& A = op.act;
    // One lane loop per kind (the switch is outside the loop, so each loop vectorizes).
    visit_act(A.kind, [&](auto act) {
      for (int j = 0; j < n; ++j) decltype(act)::step(A, ps[j], pt[j], px[j], py[j]);
    });
  }

  // Adds one linear segment (gy x gx) of a register's plane of stage s, whose buffer holds positions sy x sx,
  // to every plane of the next stage that its pooling p reaches (the pooling tables of the program), in the
  // register's store block.
  void pool(int s, const RegPool& p, int block, Segment gy, Segment gx, Span sy, Span sx, const T* S, const T* Tt) {
    const Stage& nx = P_.stages[s + 1];
    const PoolTable &ty = p.table_y[mode_], &tx = p.table_x[mode_];
    const int ay0 = ty.first[gy.d + ty.n - 1], ay1 = ty.first[gy.d + ty.n];
    const int ax0 = tx.first[gx.d + tx.n - 1], ax1 = tx.first[gx.d + tx.n];
    if (ay0 == ay1 || ax0 == ax1) return;
    const PoolAxis &pyx = p.y, &pxx = p.x;
    const Range& need = nx.need[mode_];
    const std::vector<int64_t>& offs = nx.store[mode_];
    const int64_t base = offs.back() * block;
    const int wy = ty.w, wx = tx.w, lx = sx.len;
    T* rs = row_.data();
    T* rt = row_.data() + static_cast<size_t>(P_.W) * L;
    for (int ea = ay0; ea < ay1; ++ea) {
      const PoolEntry& a = ty.entries[ea];
      const double* gya = ty.g.data() + a.g;
      const Span jy = plane_span(nx.h_in, a.dn, false);
      const int ybase = nx.circular ? 0 : jy.start;  // first stored row of the next plane
      for (int jl = 0; jl < jy.len; ++jl) {
        const int j = jy.start + jl;
        // Row combination along y over the segment's columns: rs[c] = sum_t g[t] S[origin + stride j + t][c].
        for (int e = 0; e < gx.len * L; ++e) {
          rs[e] = T(0);
          rt[e] = T(0);
        }
        bool any = false;
        for (int t = 0; t < wy; ++t) {
          if (gya[t] == 0.0) continue;
          const int pos = pyx.origin + pyx.stride * j + t;
          if (pos < gy.start || pos >= gy.start + gy.len) continue;
          any = true;
          const T g = static_cast<T>(gya[t]);
          const size_t o = (static_cast<size_t>(pos - sy.start) * lx + (gx.start - sx.start)) * L;
          const T* ps = S + o;
          const T* pt = Tt + o;
          for (int e = 0; e < gx.len * L; ++e) {
            rs[e] += g * ps[e];
            rt[e] += g * pt[e];
          }
        }
        if (!any) continue;
        for (int eb = ax0; eb < ax1; ++eb) {
          const PoolEntry& b = tx.entries[eb];
          const double* gxb = tx.g.data() + b.g;
          const Span jx = plane_span(nx.w_in, b.dn, false);
          const int xbase = nx.circular ? 0 : jx.start;
          const int rowlen = plane_span(nx.w_in, b.plane, nx.circular).len;
          const size_t o = (static_cast<size_t>(base + offs[need.index(a.plane, b.plane)]) +
                            static_cast<size_t>(j - ybase) * rowlen + (jx.start - xbase)) * L;
          T* qs = out_s_.data() + o;
          T* qt = out_t_.data() + o;
          for (int kl = 0; kl < jx.len; ++kl) {
            const int k = jx.start + kl;
            for (int t = 0; t < wx; ++t) {
              if (gxb[t] == 0.0) continue;
              const int c = pxx.origin + pxx.stride * k + t - gx.start;
              if (c < 0 || c >= gx.len) continue;
              const T g = static_cast<T>(gxb[t]);
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
  bool self_ = false;
  int mode_ = kPair;
  const T *img_x_ = nullptr, *img_y_ = nullptr, *scal_x_ = nullptr, *scal_y_ = nullptr;
  std::vector<const T*> dgx_, dgy_;       // this batch's ReLU diagonals of x and y
  std::vector<std::vector<T>> diag_self_;  // self mode: the diagonals being recorded
  std::vector<T> xbuf_;                    // pair mode: x broadcast to all lanes
  std::vector<std::vector<T>> bufs_;       // (S, T) per register, and a spare
  std::vector<int> reg_buf_;               // the buffer of each register in the current plane, -1: none
  bool used_[65] = {};
  std::vector<Span> sy_, sx_;              // each register's positions in the current plane
  std::vector<T> hs_, ht_, row_, pad_, zero_;
  std::vector<T> in_s_, in_t_, out_s_, out_t_;  // this stage's input planes, the next stage's
  double acc_s_[L], acc_t_[L];
};

template <class T>
constexpr int lanes_for() { return 64 / static_cast<int>(sizeof(T)); }  // one 512-bit vector

// Runs body(b) for b in [0, n_batches) on the threads, each with its own state from body_factory(). Stops
// early (throwing Cancelled) once opt.cancel is set; the first exception of any thread is rethrown.
template <class Body>
void parallel_batches(int64_t n_batches, const RunOptions& opt, Body&& body_factory) {
  std::exception_ptr err = nullptr;
  std::atomic<bool> stop{false};
  const int nt = opt.threads > 0 ? opt.threads : max_threads();
  (void)nt;
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
        if (stop.load(std::memory_order_relaxed)) continue;
        if (cancelled(opt)) {
          stop = true;
          continue;
        }
        try {
          body(b);
        } catch (...) {
#ifdef NTKFAST_HAVE_OPENMP
#pragma omp critical(ntkfast_err)
#endif
          if (!err) err = std::current_exception();
          stop = true;
        }
      }
    } catch (...) {
#ifdef NTKFAST_HAVE_OPENMP
#pragma omp critical(ntkfast_err)
#endif
      if (!err) err = std::current_exception();
      stop = true;
    }
  }
  if (err) std::rethrow_exception(err);
  if (cancelled(opt)) throw Cancelled();
}

}  // namespace

template <class T>
void self_data(const Program& P, const T* X, int64_t n, T* out, const RunOptions& opt) {
  constexpr int L = lanes_for<T>();
  const PackLayout lay(P);
  const std::vector<T> packed = pack_groups<T, L>(P, lay, X, nullptr, n);
  const int64_t ssz = P.self_size;
  parallel_batches((n + L - 1) / L, opt, [&]() {
    return [&, eng = std::make_shared<Engine<T, L>>(P, lay),
            scratch = std::vector<T>(static_cast<size_t>(ssz + 1) * L)](int64_t g) mutable {
      const int lanes = static_cast<int>(std::min<int64_t>(L, n - g * L));
      T* so[L];
      T os[L], ot[L];
      for (int l = 0; l < L; ++l)
        so[l] = l < lanes ? out + (g * L + l) * ssz : scratch.data() + static_cast<size_t>(l) * (ssz + 1);
      const T* xp = packed.data() + g * lay.size * L;
      eng->run(lanes, xp, xp, true, os, ot, so);
      add_progress(opt, lanes);
    };
  });
}

// A batch is one x (row i, broadcast to every lane) against a group of L consecutive y (columns): the y
// side is packed once per tile, so a batch copies nothing but the broadcast x.
template <class T>
void gram_tile(const Program& P, const TileArgs<T>& a, const RunOptions& opt) {
  constexpr int L = lanes_for<T>();
  const bool sym = a.symmetric;
  const int64_t nx = a.nx, ny = a.ny;
  if (sym && nx != ny) throw std::invalid_argument("symmetric tile must be square");
  const PackLayout lay(P);
  const std::vector<T> ypacked = pack_groups<T, L>(P, lay, a.Y, a.self_y, ny);
  const int64_t groups = (ny + L - 1) / L, isz = P.input_size(), ssz = P.self_size;
  std::vector<std::pair<int32_t, int32_t>> batches;  // (row, column group)
  for (int64_t i = 0; i < nx; ++i)
    for (int64_t g = sym ? i / L : 0; g < groups; ++g)
      batches.emplace_back(static_cast<int32_t>(i), static_cast<int32_t>(g));
  T *nngp = a.nngp, *ntk = a.ntk;
  parallel_batches(static_cast<int64_t>(batches.size()), opt, [&]() {
    return [&, eng = std::make_shared<Engine<T, L>>(P, lay)](int64_t b) {
      const int64_t i = batches[b].first, g = batches[b].second;
      const int lanes = static_cast<int>(std::min<int64_t>(L, ny - g * L));
      T os[L], ot[L];
      const T* xp = eng->broadcast_x(a.X + i * isz, a.self_x + i * ssz);
      eng->run(lanes, xp, ypacked.data() + g * lay.size * L, false, os, ot, nullptr);
      int done = 0;
      for (int l = 0; l < lanes; ++l) {
        const int64_t j = g * L + l;
        if (sym && j < i) continue;
        ++done;
        const int64_t p = i * ny + j, m = j * ny + i;
        if (nngp) {
          nngp[p] = os[l];
          if (sym) nngp[m] = os[l];
        }
        if (ntk) {
          ntk[p] = ot[l];
          if (sym) ntk[m] = ot[l];
        }
      }
      add_progress(opt, done);
    };
  });
}

// Lane l of a batch is the pair (X[g L + l], Y[g L + l]): both sides packed in groups, as the y side of a
// tile; each lane's arithmetic is the one of that pair in a tile, so the results equal the tile's bitwise.
template <class T>
void gram_pairs(const Program& P, const PairArgs<T>& a, const RunOptions& opt) {
  constexpr int L = lanes_for<T>();
  const int64_t n = a.n;
  if (n <= 0) return;
  const PackLayout lay(P);
  const std::vector<T> xpacked = pack_groups<T, L>(P, lay, a.X, a.self_x, n);
  const std::vector<T> ypacked = a.Y == a.X ? std::vector<T>() : pack_groups<T, L>(P, lay, a.Y, a.self_y, n);
  const T* yp = a.Y == a.X ? xpacked.data() : ypacked.data();
  parallel_batches((n + L - 1) / L, opt, [&]() {
    return [&, eng = std::make_shared<Engine<T, L>>(P, lay)](int64_t g) {
      const int lanes = static_cast<int>(std::min<int64_t>(L, n - g * L));
      T os[L], ot[L];
      eng->run(lanes, xpacked.data() + g * lay.size * L, yp + g * lay.size * L, false, os, ot, nullptr);
      for (int l = 0; l < lanes; ++l) {
        if (a.nngp) a.nngp[g * L + l] = os[l];
        if (a.ntk) a.ntk[g * L + l] = ot[l];
      }
      add_progress(opt, lanes);
    };
  });
}

template <class T>
int64_t thread_bytes(const Program& P) {
  constexpr int L = lanes_for<T>();
  const PackLayout lay(P);
  const Engine<T, L> eng(P, lay);
  return eng.bytes() + static_cast<int64_t>(P.self_size + 1) * L * static_cast<int64_t>(sizeof(T));
}

template <class T>
int64_t tile_bytes(const Program& P, int64_t nx, int64_t ny) {
  constexpr int L = lanes_for<T>();
  const PackLayout lay(P);
  const int64_t groups = (ny + L - 1) / L;
  return groups * lay.size * L * static_cast<int64_t>(sizeof(T)) +
         nx * groups * static_cast<int64_t>(sizeof(std::pair<int32_t, int32_t>));
}

template void self_data<float>(const Program&, const float*, int64_t, float*, const RunOptions&);
template void self_data<double>(const Program&, const double*, int64_t, double*, const RunOptions&);
template void gram_tile<float>(const Program&, const TileArgs<float>&, const RunOptions&);
template void gram_tile<double>(const Program&, const TileArgs<double>&, const RunOptions&);
template void gram_pairs<float>(const Program&, const PairArgs<float>&, const RunOptions&);
template void gram_pairs<double>(const Program&, const PairArgs<double>&, const RunOptions&);
template int64_t thread_bytes<float>(const Program&);
template int64_t thread_bytes<double>(const Program&);
template int64_t tile_bytes<float>(const Program&, int64_t, int64_t);
template int64_t tile_bytes<double>(const Program&, int64_t, int64_t);

}  // namespace cpu
}  // namespace ntkfast
