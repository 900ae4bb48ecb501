// The compiled layer program (core/program.hpp) flattened into plain arrays for the CUDA kernels: one byte
// blob uploaded once per call, and a view of raw pointers into it that the kernels take by value. Pure C++
// (no CUDA headers), so that the host emulation (tests/cuda_emulation) builds the very same blob with g++.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/geometry.hpp"
#include "core/program.hpp"

namespace ntkfast {
namespace cuda {

// A pooling table of one stage, mode and axis (core PoolTable): I[first + d + n - 1] .. I[first + d + n] are the
// entries of linear source offset d; entry k is I[entries + 3k ..] = (dn, plane, index in G of its w taps).
struct DTable {
  int n, w;
  int first, entries;
};

// Conv or pointwise op of a stage (core StageOp).
template <class T>
struct DOp {
  StageOp::Kind kind;
  int wrap;                   // Conv: CIRCULAR
  int ky, kx, pad_y, pad_x;
  int h_in, w_in, h_out, w_out;
  int diag;                   // Act: offset of its diagonal in the per-image self data
  T scale, bias2;
  int standard;               // Conv: standard parameterization, T' = scale box(T) + t_s box(S) + t_b
  T t_s, t_b;
  ActParams act;              // Act
};

struct DStage {
  int h_in, w_in, h_out, w_out;
  int circular;               // representation of its planes (core/geometry.hpp)
  int op0, op1;               // its ops: [op0, op1) of ProgView::ops
  int has_pool;
  int active[2];              // per mode: whether the mode runs this stage
  Range need[2];              // per mode: planes carried
  int store[2];               // per mode, stage > 0 and active: index in L of its plane offsets (count + 1)
  int origin_y, stride_y, origin_x, stride_x;  // has_pool: the pooling into the next stage
  DTable ty[2], tx[2];        // has_pool and next stage active: per mode
};

template <class T>
struct DScalar {
  ScalarOp::Kind kind;
  int slot;                   // Act: index after scalar_offset in the self data
  T w2, b2;
  int standard;               // Dense: standard parameterization, T' = w2 T + t_s S + t_b
  T t_s, t_b;
  ActParams act;              // Act
};

// What the kernels read: pointers into one blob (device memory on the GPU, host memory in the emulation).
template <class T>
struct ProgView {
  const DStage* stages;
  const DOp<T>* ops;
  const DScalar<T>* scalar;
  const int* I;               // pooling tables
  const int64_t* L;           // plane offsets of the pooled stores
  const double* G;            // tap products, kept in double: the CPU tests them against 0 before rounding to T
  int n_stages, n_scalar;
  int H, W, C, spatial;
  Readout readout;
  int self_size, scalar_offset;
  int PL, PA;                 // per-team shared buffers (entries): S and T get PL each, the temp PA
  double den;                 // readout divisor
  int64_t store[2];           // per mode: largest pooled store (entries), 0 without pooling
};

// Shared-memory entries one team needs for a program: 2 PL + PA.
template <class T>
NTKFAST_HD int64_t team_entries(const ProgView<T>& v) {
  return 2 * static_cast<int64_t>(v.PL) + v.PA;
}

template <class T>
class ProgBlob {
 public:
  explicit ProgBlob(const Program& P) {
    if (P.max_plane <= 0) throw std::invalid_argument("CUDA backend: program without planes");
    std::vector<DStage> st(P.stages.size());
    std::vector<DOp<T>> ops;
    std::vector<DScalar<T>> sc;
    std::vector<int> I;
    std::vector<int64_t> L;
    std::vector<double> G;
    int64_t PA = P.max_plane;
    for (size_t s = 0; s < P.stages.size(); ++s) {
      const Stage& S = P.stages[s];
      DStage& d = st[s];
      d = DStage{};
      d.h_in = S.h_in;
      d.w_in = S.w_in;
      d.h_out = S.h_out;
      d.w_out = S.w_out;
      d.circular = S.circular ? 1 : 0;
      d.op0 = static_cast<int>(ops.size());
      for (const StageOp& o : S.ops) ops.push_back(op_of(P, o));
      d.op1 = static_cast<int>(ops.size());
      d.has_pool = S.has_pool ? 1 : 0;
      for (int m = 0; m < 2; ++m) {
        d.active[m] = S.active[m] ? 1 : 0;
        d.need[m] = S.need[m];
        d.store[m] = -1;
        d.ty[m] = d.tx[m] = DTable{0, 0, -1, -1};
        if (s > 0 && S.active[m]) {
          d.store[m] = static_cast<int>(L.size());
          if (S.store[m].size() != static_cast<size_t>(S.need[m].count()) + 1)
            throw std::invalid_argument("CUDA backend: store layout does not match the carried planes");
          L.insert(L.end(), S.store[m].begin(), S.store[m].end());
        }
      }
      if (!S.has_pool) continue;
      if (s + 1 >= P.stages.size()) throw std::invalid_argument("CUDA backend: pooling after the last stage");
      const Stage& N = P.stages[s + 1];
      d.origin_y = S.pool_y.origin;
      d.stride_y = S.pool_y.stride;
      d.origin_x = S.pool_x.origin;
      d.stride_x = S.pool_x.stride;
      // The pooling temp holds the row-combined S and T of one segment: next-stage rows x this stage's width.
      PA = std::max<int64_t>(PA, 2 * static_cast<int64_t>(N.h_in) * S.w_out);
      for (int m = 0; m < 2; ++m) {
        if (!N.active[m]) continue;
        d.ty[m] = table(I, G, S.table_y[m]);
        d.tx[m] = table(I, G, S.table_x[m]);
      }
    }
    for (const ScalarOp& o : P.scalar) {
      DScalar<T> q;
      std::memset(&q, 0, sizeof(q));
      q.kind = scalar_kind(o.kind);
      q.slot = o.relu_slot;
      q.w2 = static_cast<T>(o.w2);
      q.b2 = static_cast<T>(o.b2);
      q.standard = o.standard ? 1 : 0;
      q.t_s = static_cast<T>(o.t_s);
      q.t_b = static_cast<T>(o.t_b);
      q.act = o.act;
      sc.push_back(q);
    }
    if (I.size() > static_cast<size_t>(INT32_MAX) || PA > INT32_MAX)
      throw std::invalid_argument("CUDA backend: pooling tables too large");
    off_stages_ = append(st);
    off_ops_ = append(ops);
    off_scalar_ = append(sc);
    off_I_ = append(I);
    off_L_ = append(L);
    off_G_ = append(G);
    base_ = ProgView<T>{};
    base_.n_stages = static_cast<int>(st.size());
    base_.n_scalar = static_cast<int>(sc.size());
    base_.H = P.H;
    base_.W = P.W;
    base_.C = P.C;
    base_.spatial = P.spatial ? 1 : 0;
    base_.readout = readout_of(P.readout);
    base_.self_size = P.self_size;
    base_.scalar_offset = P.scalar_offset;
    base_.PL = P.max_plane;
    base_.PA = static_cast<int>(PA);
    base_.den = P.readout_den;
    base_.store[0] = P.max_store[0];
    base_.store[1] = P.max_store[1];
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
    v.G = reinterpret_cast<const double*>(base + off_G_);
    return v;
  }
  // Sizes and scalars only (null pointers).
  const ProgView<T>& meta() const { return base_; }

 private:
  static DOp<T> op_of(const Program& P, const StageOp& o) {
    DOp<T> q;
    std::memset(&q, 0, sizeof(q));
    q.kind = o.kind;
    q.wrap = o.wrap ? 1 : 0;
    q.ky = o.ky;
    q.kx = o.kx;
    q.pad_y = o.pad_y;
    q.pad_x = o.pad_x;
    q.h_in = o.h_in;
    q.w_in = o.w_in;
    q.h_out = o.h_out;
    q.w_out = o.w_out;
    q.diag = -1;
    q.scale = static_cast<T>(o.scale);
    q.bias2 = static_cast<T>(o.bias2);
    q.standard = o.standard ? 1 : 0;
    q.t_s = static_cast<T>(o.t_s);
    q.t_b = static_cast<T>(o.t_b);
    q.act = o.act;
    // Exhaustive switches without default (-Werror=switch flags a new kind); a value outside the enum throws.
    switch (o.kind) {
      case StageOp::Conv:
        return q;
      case StageOp::Act:
        if (o.relu_slot < 0 || o.relu_slot >= static_cast<int>(P.diags.size()))
          throw std::invalid_argument("CUDA backend: a pointwise op without a diagonal slot");
        q.diag = P.diags[o.relu_slot].offset;
        return q;
    }
    throw std::invalid_argument("CUDA backend: unknown stage op kind " + std::to_string(static_cast<int>(o.kind)));
  }

  static ScalarOp::Kind scalar_kind(ScalarOp::Kind k) {
    switch (k) {
      case ScalarOp::Dense:
      case ScalarOp::Act:
        return k;
    }
    throw std::invalid_argument("CUDA backend: unknown scalar op kind " + std::to_string(static_cast<int>(k)));
  }

  static Readout readout_of(Readout r) {
    switch (r) {
      case Readout::None:
      case Readout::Gap:
      case Readout::Flatten:
        return r;
    }
    throw std::invalid_argument("CUDA backend: unknown readout " + std::to_string(static_cast<int>(r)));
  }

  static DTable table(std::vector<int>& I, std::vector<double>& G, const PoolTable& t) {
    if (t.first.size() != 2 * static_cast<size_t>(t.n) || t.g.size() != t.entries.size() * t.w)
      throw std::invalid_argument("CUDA backend: malformed pooling table");
    DTable d{t.n, t.w, static_cast<int>(I.size()), 0};
    I.insert(I.end(), t.first.begin(), t.first.end());
    d.entries = static_cast<int>(I.size());
    const int g0 = static_cast<int>(G.size());
    for (const PoolEntry& e : t.entries) {
      I.push_back(e.dn);
      I.push_back(e.plane);
      I.push_back(g0 + e.g);
    }
    G.insert(G.end(), t.g.begin(), t.g.end());
    return d;
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
