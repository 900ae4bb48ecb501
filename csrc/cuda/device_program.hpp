// The layer program flattened into plain arrays for the CUDA kernels: one byte blob that is uploaded once
// per call, and a view of raw pointers into it that is passed to the kernels by value. Pure C++ (no CUDA
// headers), so that the host emulation test (tests/cuda_emulation) builds the very same blob with g++.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/program.hpp"

namespace ntkfast {
namespace cuda {

// Mode index of per-mode tables: pairs (x, y) or the per-image self recursion (x, x).
enum : int { kPair = 0, kSelf = 1 };

struct DRange {
  int y0, y1, x0, x1;
};

template <class T>
struct DOp {
  int kind;  // 0 conv, 1 relu
  int ky, kx, pad_y, pad_x;
  int h_in, w_in, h_out, w_out;
  int diag_off;  // relu: offset of its diagonal in the per-image self data
  T scale, bias2;
};

struct DStage {
  int h_in, w_in;
  int op0, op1;  // ops [op0, op1) of the view's op array
  int has_pool, self_active;
  DRange need[2];  // offsets carried, per mode
  // Pooling into the next stage (has_pool only).
  int stride_y, stride_x, origin_y, origin_x, nout_y, nout_x, wy, wx;
  DRange next[2];      // the next stage's carried offsets, per mode (the layout of the store written here)
  int cand_y[2], cand_x[2];  // per mode: index in I of a start table over source offsets (see build_cands)
  int store_out[2];    // per mode: index in L of the next-stage plane offsets (n planes + 1, last = total)
  int store_in[2];     // per mode: index in L of this stage's own input plane offsets (stage > 0), else -1
};

template <class T>
struct DScalar {
  int kind;  // 0 dense, 1 relu
  int slot;  // relu: index after scalar_offset in the self data
  T w2, b2;
};

// What the kernels read. Pointers into one blob (device memory on the GPU, host memory in the emulation).
template <class T>
struct ProgView {
  const DStage* stages;
  const DOp<T>* ops;
  const DScalar<T>* scalar;
  const int* I;        // pooling candidate tables
  const int64_t* L;    // plane offsets of the pooled stores
  const T* G;          // tap products of the pooling candidates
  int n_stages, n_scalar;
  int H, W, C, spatial, circular, readout;  // readout: 0 none, 1 gap, 2 flatten
  int self_size, scalar_offset;
  int PL, PA;          // shared-memory plane buffer sizes (entries): S and T get PL each, the temp PA
  double den;          // readout divisor
  int64_t store[2];    // per mode: largest pooled store (entries), 0 without pooling
};

// Inclusive-exclusive span of an n-position axis at offset d: positions u whose partner u + d exists
// (all of them when circular, the partner wrapping).
struct Span {
  int start, len;
};

#if defined(__CUDACC__)
#define NTKFAST_SPAN_HD __host__ __device__ __forceinline__
#else
#define NTKFAST_SPAN_HD inline
#endif

NTKFAST_SPAN_HD Span span_of(int n, int d, bool circular) {
  if (circular) return Span{0, n};
  return Span{d < 0 ? -d : 0, n - (d < 0 ? -d : d)};
}

template <class T>
class ProgBlob {
 public:
  explicit ProgBlob(const Program& P) {
    if (P.stages.size() > 1000000 || P.max_plane <= 0) throw std::invalid_argument("CUDA backend: bad program");
    const bool circ = P.circular;
    std::vector<DStage> st(P.stages.size());
    std::vector<DOp<T>> ops;
    std::vector<DScalar<T>> sc;
    std::vector<int> I;
    std::vector<int64_t> L;
    std::vector<T> G;
    int64_t store[2] = {0, 0};
    int PA = P.max_plane;
    for (size_t s = 0; s < P.stages.size(); ++s) {
      const Stage& S = P.stages[s];
      DStage& d = st[s];
      std::memset(&d, 0, sizeof(d));
      d.h_in = S.h_in;
      d.w_in = S.w_in;
      d.op0 = static_cast<int>(ops.size());
      for (const LayerOp& o : S.ops) {
        DOp<T> q;
        std::memset(&q, 0, sizeof(q));
        q.kind = o.kind == LayerOp::Conv ? 0 : 1;
        q.ky = o.ky; q.kx = o.kx; q.pad_y = o.pad_y; q.pad_x = o.pad_x;
        q.h_in = o.h_in; q.w_in = o.w_in; q.h_out = o.h_out; q.w_out = o.w_out;
        q.diag_off = o.kind == LayerOp::Relu ? P.diag_offset[o.relu_slot] : -1;
        q.scale = static_cast<T>(o.scale);
        q.bias2 = static_cast<T>(o.bias2);
        if (o.kind == LayerOp::Conv) PA = std::max(PA, o.h_in * o.w_out);  // the horizontal box-sum temp
        ops.push_back(q);
      }
      d.op1 = static_cast<int>(ops.size());
      d.has_pool = S.has_pool ? 1 : 0;
      d.self_active = S.self_active ? 1 : 0;
      d.need[kPair] = DRange{S.need_pair.y0, S.need_pair.y1, S.need_pair.x0, S.need_pair.x1};
      d.need[kSelf] = DRange{S.need_self.y0, S.need_self.y1, S.need_self.x0, S.need_self.x1};
      for (int m = 0; m < 2; ++m) d.cand_y[m] = d.cand_x[m] = d.store_out[m] = d.store_in[m] = -1;
    }
    for (size_t s = 0; s + 1 < P.stages.size(); ++s) {
      const Stage& S = P.stages[s];
      DStage& d = st[s];
      const Stage& N = P.stages[s + 1];
      d.stride_y = S.pool_y.stride; d.stride_x = S.pool_x.stride;
      d.origin_y = S.pool_y.origin; d.origin_x = S.pool_x.origin;
      d.nout_y = S.pool_y.n_out; d.nout_x = S.pool_x.n_out;
      d.wy = static_cast<int>(S.pool_y.taps.size());
      d.wx = static_cast<int>(S.pool_x.taps.size());
      // The pooling temp holds one row-combined band (S and T) of at most nout_y rows of the state's width.
      PA = std::max(PA, 2 * d.nout_y * S.w_out);
      for (int m = 0; m < 2; ++m) {
        const DRange r = st[s + 1].need[m];
        d.next[m] = r;
        const DRange src = d.need[m];
        d.cand_y[m] = build_cands(I, G, S.pool_y, src.y0, src.y1, r.y0, r.y1, N.h_in, circ);
        d.cand_x[m] = build_cands(I, G, S.pool_x, src.x0, src.x1, r.x0, r.x1, N.w_in, circ);
        d.store_out[m] = static_cast<int>(L.size());
        int64_t total = 0;
        for (int dy = r.y0; dy <= r.y1; ++dy)
          for (int dx = r.x0; dx <= r.x1; ++dx) {
            L.push_back(total);
            const Span a = span_of(N.h_in, dy, circ), b = span_of(N.w_in, dx, circ);
            total += static_cast<int64_t>(std::max(a.len, 0)) * std::max(b.len, 0);
          }
        L.push_back(total);
        store[m] = std::max(store[m], total);
        st[s + 1].store_in[m] = d.store_out[m];
      }
    }
    for (const ScalarOp& o : P.scalar) {
      DScalar<T> q;
      std::memset(&q, 0, sizeof(q));
      q.kind = o.kind == ScalarOp::Dense ? 0 : 1;
      q.slot = o.relu_slot;
      q.w2 = static_cast<T>(o.w2);
      q.b2 = static_cast<T>(o.b2);
      sc.push_back(q);
    }
    if (I.size() > static_cast<size_t>(INT32_MAX)) throw std::invalid_argument("CUDA backend: pooling tables too large");
    // Pack the arrays, each 16-byte aligned.
    off_stages_ = append(st);
    off_ops_ = append(ops);
    off_scalar_ = append(sc);
    off_I_ = append(I);
    off_L_ = append(L);
    off_G_ = append(G);
    base_.n_stages = static_cast<int>(st.size());
    base_.n_scalar = static_cast<int>(sc.size());
    base_.H = P.H; base_.W = P.W; base_.C = P.C;
    base_.spatial = P.spatial ? 1 : 0;
    base_.circular = circ ? 1 : 0;
    base_.readout = P.readout == Readout::Gap ? 1 : P.readout == Readout::Flatten ? 2 : 0;
    base_.self_size = P.self_size;
    base_.scalar_offset = P.scalar_offset;
    base_.PL = P.max_plane;
    base_.PA = PA;
    base_.den = 1.0;
    if (P.spatial) {
      const Stage& last = P.stages.back();
      const double hw = static_cast<double>(last.h_out) * last.w_out;
      base_.den = P.readout == Readout::Gap ? hw * hw : hw;
    }
    base_.store[0] = store[0];
    base_.store[1] = store[1];
  }

  const std::vector<unsigned char>& bytes() const { return bytes_; }
  // The view of a copy of bytes() that starts at base.
  ProgView<T> view(const unsigned char* base) const {
    ProgView<T> v = base_;
    v.stages = reinterpret_cast<const DStage*>(base + off_stages_);
    v.ops = reinterpret_cast<const DOp<T>*>(base + off_ops_);
    v.scalar = reinterpret_cast<const DScalar<T>*>(base + off_scalar_);
    v.I = reinterpret_cast<const int*>(base + off_I_);
    v.L = reinterpret_cast<const int64_t*>(base + off_L_);
    v.G = reinterpret_cast<const T*>(base + off_G_);
    return v;
  }
  const ProgView<T>& meta() const { return base_; }

 private:
  static int floordiv(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
  static int posmod(int a, int b) { const int r = a % b; return r < 0 ? r + b : r; }

  // Candidate table of one axis: for each source offset d in [d0, d1], the next-stage offsets dn in [lo, hi]
  // that pooling plane d reaches, each with its tap products g[t] = taps[t] * taps[t + delta] (0 where
  // t + delta falls outside the window). Layout in I, at the returned index b: I[b + k] (k = 0..n) are the
  // absolute starts in I of the entries of d = d0 + k (I[b + n] ends the last); entries are (dn, index in G).
  static int build_cands(std::vector<int>& I, std::vector<T>& G, const PoolAxis& p, int d0, int d1, int lo,
                         int hi, int n_next, bool circ) {
    const int w = static_cast<int>(p.taps.size());
    const int n = d1 - d0 + 1;
    const int b = static_cast<int>(I.size());
    I.resize(I.size() + n + 1);
    for (int k = 0; k < n; ++k) {
      I[b + k] = static_cast<int>(I.size());
      const int d = d0 + k;
      for (int delta = -(w - 1); delta <= w - 1; ++delta) {
        if (posmod(d - delta, p.stride) != 0) continue;
        int dn = floordiv(d - delta, p.stride);
        if (circ) dn = posmod(dn, n_next);
        if (dn < lo || dn > hi) continue;
        bool any = false;
        std::vector<T> g(w, T(0));
        for (int t = 0; t < w; ++t)
          if (t + delta >= 0 && t + delta < w) {
            g[t] = static_cast<T>(p.taps[t] * p.taps[t + delta]);
            any = true;
          }
        if (!any) continue;
        I.push_back(dn);
        I.push_back(static_cast<int>(G.size()));
        G.insert(G.end(), g.begin(), g.end());
      }
    }
    I[b + n] = static_cast<int>(I.size());
    return b;
  }

  template <class A>
  size_t append(const std::vector<A>& v) {
    const size_t off = (bytes_.size() + 15) / 16 * 16;
    bytes_.resize(off + v.size() * sizeof(A));
    if (!v.empty()) std::memcpy(bytes_.data() + off, v.data(), v.size() * sizeof(A));
    return off;
  }

  std::vector<unsigned char> bytes_;
  size_t off_stages_ = 0, off_ops_ = 0, off_scalar_ = 0, off_I_ = 0, off_L_ = 0, off_G_ = 0;
  ProgView<T> base_{};
};

}  // namespace cuda
}  // namespace ntkfast
