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

// A pooling table of one register pooling, mode and axis (core PoolTable): I[first + d + n - 1] ..
// I[first + d + n] are the entries of linear source offset d; entry k is I[entries + 3k ..] = (dn, plane, index
// in G of its w taps).
struct DTable {
  int n, w;
  int first, entries;
};

// Conv, pointwise or stream op of a stage (core StageOp), acting on register reg. h_in x w_in is the
// register's resolution entering the op (the CUDA kernels derive every span from it), h_out x w_out leaving.
template <class T>
struct DOp {
  StageOp::Kind kind;
  int reg, src;               // the register it acts on; Copy, Add: the register copied / added (-1 otherwise)
  int wrap;                   // Conv: CIRCULAR
  int ky, kx, pad_y, pad_x;
  int h_in, w_in, h_out, w_out;
  int diag;                   // Act: offset of its diagonal in the per-image self data
  T scale, bias2;
  int standard;               // Conv: standard parameterization, T' = scale box(T) + t_s box(S) + t_b
  T t_s, t_b;
  ActParams act;              // Act
};

// How one register leaves a stage into the next (core RegPool).
struct DPool {
  int reg;
  int block;                  // its block in the next stage's store: its index in that stage's registers in
  int h_src, w_src;           // the register's resolution entering the pooling
  int origin_y, stride_y, origin_x, stride_x;
  DTable ty[2], tx[2];        // per mode, where the next stage runs
};

struct DStage {
  int h_in, w_in;             // resolution of every register entering it
  int circular;               // representation of its planes (core/geometry.hpp)
  int op0, op1;               // its ops: [op0, op1) of ProgView::ops
  int reg0, reg1;             // registers entering it: ProgView::R[reg0 .. reg1), block k of its store for R[reg0 + k]
  int pool0, pool1;           // registers leaving it: [pool0, pool1) of ProgView::pools (none in the last stage)
  int readout_reg, readout_h, readout_w;  // last stage: the register read out and its resolution there
  int active[2];              // per mode: whether the mode runs this stage
  Range need[2];              // per mode: planes carried
  int store[2];               // per mode, stage > 0 and active: index in L of one block's plane offsets (count + 1)
  int64_t block[2];           // per mode, stage > 0 and active: entries of one register's block (0 otherwise)
};

template <class T>
struct DScalar {
  ScalarOp::Kind kind;
  int reg, src;               // registers as in DOp
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
  const DPool* pools;
  const int* R;               // registers entering each stage
  const DScalar<T>* scalar;
  const int* I;               // pooling tables
  const int64_t* L;           // plane offsets of the pooled stores
  const double* G;            // tap products, kept in double: the CPU tests them against 0 before rounding to T
  int n_stages, n_scalar;
  int H, W, C, spatial;
  Readout readout;
  int self_size, scalar_offset;
  int NR;                     // registers of the spatial part: register r has its S and T planes in shared memory
  int n_regs;                 // registers of the whole program (the scalar part's live in shared memory too)
  int readout_reg, final_reg; // the scalar part's input and result registers
  int PL, PA;                 // per-team shared buffers (entries): each register's S and T get PL each, the temp PA
  double den;                 // readout divisor
  int64_t store[2];           // per mode: largest pooled store (entries, every register block), 0 without pooling
};

// Shared-memory entries one team needs for a program: 2 PL per spatial register and the temp PA, then (reused
// after the readout) the scalar part's registers, 2 entries each.
template <class T>
NTKFAST_HD int64_t team_entries(const ProgView<T>& v) {
  const int64_t planes = 2 * static_cast<int64_t>(v.NR) * v.PL + v.PA, scalars = 2 * static_cast<int64_t>(v.n_regs);
  return planes > scalars ? planes : scalars;
}

// Register r's S and T planes and the temp in a team's shared memory.
template <class T>
NTKFAST_HD T* reg_s(const ProgView<T>& v, T* smem, int r) {
  return smem + 2 * static_cast<int64_t>(r) * v.PL;
}
template <class T>
NTKFAST_HD T* reg_t(const ProgView<T>& v, T* smem, int r) {
  return smem + (2 * static_cast<int64_t>(r) + 1) * v.PL;
}
template <class T>
NTKFAST_HD T* temp_of(const ProgView<T>& v, T* smem) {
  return smem + 2 * static_cast<int64_t>(v.NR) * v.PL;
}

template <class T>
class ProgBlob {
 public:
  explicit ProgBlob(const Program& P) {
    if (P.max_plane <= 0) throw std::invalid_argument("CUDA backend: program without planes");
    if (P.n_regs < 1 || P.n_regs > kMaxRegs)
      throw std::invalid_argument("CUDA backend: " + std::to_string(P.n_regs) + " registers; expected 1 to " +
                                  std::to_string(kMaxRegs));
    std::vector<DStage> st(P.stages.size());
    std::vector<DOp<T>> ops;
    std::vector<DPool> pools;
    std::vector<DScalar<T>> sc;
    std::vector<int> R, I;
    std::vector<int64_t> L;
    std::vector<double> G;
    int64_t PA = P.max_plane;
    int NR = 0;
    for (size_t s = 0; s < P.stages.size(); ++s) {
      const Stage& S = P.stages[s];
      const bool last = s + 1 == P.stages.size();
      const std::string where = "CUDA backend: stage " + std::to_string(s) + ": ";
      DStage& d = st[s];
      d = DStage{};
      d.h_in = S.h_in;
      d.w_in = S.w_in;
      d.circular = S.circular ? 1 : 0;
      // Each register's resolution through the stage (-1: not alive). The kernels derive a register's
      // positions in a plane from the resolution each op records, so these must chain.
      std::vector<Res> res(static_cast<size_t>(P.n_regs), Res{-1, -1});
      // The first stage starts from the input's cross-correlation in one register (the kernels fill only it).
      if (S.regs_in.empty() || (s == 0 && S.regs_in.size() != 1))
        throw std::invalid_argument(where + std::to_string(S.regs_in.size()) + " registers enter it");
      d.reg0 = static_cast<int>(R.size());
      for (int r : S.regs_in) {
        check_reg(P, r, where + "register entering it");
        if (res[r].h >= 0) throw std::invalid_argument(where + "register " + std::to_string(r) + " enters twice");
        res[r] = Res{S.h_in, S.w_in};
        R.push_back(r);
        NR = std::max(NR, r + 1);
      }
      d.reg1 = static_cast<int>(R.size());
      d.op0 = static_cast<int>(ops.size());
      for (const StageOp& o : S.ops) {
        ops.push_back(op_of(P, o, res, where));
        NR = std::max(NR, std::max(o.reg, o.src) + 1);
      }
      d.op1 = static_cast<int>(ops.size());
      for (int m = 0; m < 2; ++m) {
        d.active[m] = S.active[m] ? 1 : 0;
        d.need[m] = S.need[m];
        d.store[m] = -1;
        d.block[m] = 0;
        if (s > 0 && S.active[m]) {
          d.store[m] = static_cast<int>(L.size());
          if (S.store[m].size() != static_cast<size_t>(S.need[m].count()) + 1)
            throw std::invalid_argument(where + "store layout does not match the carried planes");
          L.insert(L.end(), S.store[m].begin(), S.store[m].end());
          d.block[m] = S.store[m].back();
          if (d.block[m] * static_cast<int64_t>(S.regs_in.size()) > P.max_store[m])
            throw std::invalid_argument(where + "its store exceeds the program's largest");
        }
      }
      d.pool0 = static_cast<int>(pools.size());
      if (last) {
        if (S.has_pool()) throw std::invalid_argument(where + "pooling after the last stage");
        check_reg(P, S.readout_reg, where + "readout register");
        expect_res(res, S.readout_reg, S.readout_h, S.readout_w, where + "the readout");
        d.readout_reg = S.readout_reg;
        d.readout_h = S.readout_h;
        d.readout_w = S.readout_w;
      } else {
        if (!S.has_pool()) throw std::invalid_argument(where + "a stage before the last without poolings");
        const Stage& N = P.stages[s + 1];
        for (const RegPool& p : S.pools) {
          check_reg(P, p.reg, where + "pooled register");
          expect_res(res, p.reg, p.h_src, p.w_src, where + "the pooling of register " + std::to_string(p.reg));
          DPool q;
          std::memset(static_cast<void*>(&q), 0, sizeof(q));
          q.reg = p.reg;
          const auto at = std::find(N.regs_in.begin(), N.regs_in.end(), p.reg);
          if (at == N.regs_in.end())
            throw std::invalid_argument(where + "register " + std::to_string(p.reg) +
                                        " pools into a stage it does not enter");
          q.block = static_cast<int>(at - N.regs_in.begin());
          q.h_src = p.h_src;
          q.w_src = p.w_src;
          q.origin_y = p.y.origin;
          q.stride_y = p.y.stride;
          q.origin_x = p.x.origin;
          q.stride_x = p.x.stride;
          // The pooling temp holds the row-combined S and T of one segment: next-stage rows x the source width.
          PA = std::max<int64_t>(PA, 2 * static_cast<int64_t>(N.h_in) * p.w_src);
          for (int m = 0; m < 2; ++m) {
            q.ty[m] = q.tx[m] = DTable{0, 0, -1, -1};
            if (!N.active[m]) continue;
            q.ty[m] = table(I, G, p.table_y[m]);
            q.tx[m] = table(I, G, p.table_x[m]);
          }
          pools.push_back(q);
        }
        if (N.regs_in.size() != S.pools.size())
          throw std::invalid_argument(where + "the registers pooled are not those entering the next stage");
      }
      d.pool1 = static_cast<int>(pools.size());
    }
    // The scalar part: registers alive from the readout (vector nets: the input) on.
    check_reg(P, P.readout_reg, "CUDA backend: readout register");
    check_reg(P, P.final_reg, "CUDA backend: final register");
    std::vector<bool> alive(static_cast<size_t>(P.n_regs), false);
    alive[P.readout_reg] = true;
    for (size_t k = 0; k < P.scalar.size(); ++k) sc.push_back(scalar_of(P, P.scalar[k], alive, k));
    if (!alive[P.final_reg]) throw std::invalid_argument("CUDA backend: the final register holds nothing");
    if (I.size() > static_cast<size_t>(INT32_MAX) || PA > INT32_MAX)
      throw std::invalid_argument("CUDA backend: pooling tables too large");
    off_stages_ = append(st);
    off_ops_ = append(ops);
    off_pools_ = append(pools);
    off_R_ = append(R);
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
    base_.NR = P.spatial ? NR : 0;
    base_.n_regs = P.n_regs;
    base_.readout_reg = P.readout_reg;
    base_.final_reg = P.final_reg;
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
    v.pools = reinterpret_cast<const DPool*>(base + off_pools_);
    v.R = reinterpret_cast<const int*>(base + off_R_);
    v.scalar = reinterpret_cast<const DScalar<T>*>(base + off_scalar_);
    v.I = reinterpret_cast<const int*>(base + off_I_);
    v.L = reinterpret_cast<const int64_t*>(base + off_L_);
    v.G = reinterpret_cast<const double*>(base + off_G_);
    return v;
  }
  // Sizes and scalars only (null pointers).
  const ProgView<T>& meta() const { return base_; }

 private:
  // The registers a program may have (core::compile allows 64; the kernels keep one bit of a mask each).
  static constexpr int kMaxRegs = 64;

  struct Res {
    int h, w;
  };

  static void check_reg(const Program& P, int r, const std::string& what) {
    if (r < 0 || r >= P.n_regs)
      throw std::invalid_argument(what + ": register " + std::to_string(r) + " outside [0, " +
                                  std::to_string(P.n_regs) + ")");
  }

  static void expect_res(const std::vector<Res>& res, int r, int h, int w, const std::string& what) {
    const Res& q = res[r];
    if (q.h != h || q.w != w)
      throw std::invalid_argument(what + " reads register " + std::to_string(r) + " at " + std::to_string(h) + "x" +
                                  std::to_string(w) + ", where it holds " +
                                  (q.h < 0 ? std::string("nothing") : std::to_string(q.h) + "x" + std::to_string(q.w)));
  }

  // One stage op, its registers checked against their resolutions (res: updated through it).
  static DOp<T> op_of(const Program& P, const StageOp& o, std::vector<Res>& res, const std::string& where) {
    DOp<T> q;
    std::memset(static_cast<void*>(&q), 0, sizeof(q));
    q.kind = o.kind;
    q.reg = o.reg;
    q.src = -1;
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
    const std::string what = where + "op of layer " + std::to_string(o.layer);
    check_reg(P, o.reg, what);
    // Exhaustive switches without default (-Werror=switch flags a new kind); a value outside the enum throws.
    switch (o.kind) {
      case StageOp::Conv:
        expect_res(res, o.reg, o.h_in, o.w_in, what);
        res[o.reg] = Res{o.h_out, o.w_out};
        return q;
      case StageOp::Act:
        if (o.relu_slot < 0 || o.relu_slot >= static_cast<int>(P.diags.size()))
          throw std::invalid_argument(what + ": a pointwise op without a diagonal slot");
        if (o.h_out != o.h_in || o.w_out != o.w_in)
          throw std::invalid_argument(what + ": a pointwise op that changes the resolution");
        expect_res(res, o.reg, o.h_in, o.w_in, what);
        q.diag = P.diags[o.relu_slot].offset;
        return q;
      case StageOp::Copy:
        check_reg(P, o.src, what);
        expect_res(res, o.src, o.h_in, o.w_in, what);
        q.src = o.src;
        res[o.reg] = res[o.src];
        return q;
      case StageOp::Add:
        check_reg(P, o.src, what);
        if (o.src == o.reg) throw std::invalid_argument(what + ": adds a register to itself");
        expect_res(res, o.reg, o.h_in, o.w_in, what);
        expect_res(res, o.src, o.h_in, o.w_in, what);
        q.src = o.src;
        res[o.src] = Res{-1, -1};
        return q;
    }
    throw std::invalid_argument(what + ": unknown stage op kind " + std::to_string(static_cast<int>(o.kind)));
  }

  // One scalar op, its registers checked alive (alive: updated through it).
  static DScalar<T> scalar_of(const Program& P, const ScalarOp& o, std::vector<bool>& alive, size_t k) {
    DScalar<T> q;
    std::memset(static_cast<void*>(&q), 0, sizeof(q));
    q.kind = o.kind;
    q.reg = o.reg;
    q.src = -1;
    q.slot = o.relu_slot;
    q.w2 = static_cast<T>(o.w2);
    q.b2 = static_cast<T>(o.b2);
    q.standard = o.standard ? 1 : 0;
    q.t_s = static_cast<T>(o.t_s);
    q.t_b = static_cast<T>(o.t_b);
    q.act = o.act;
    const std::string what =
        "CUDA backend: scalar op " + std::to_string(k) + " (layer " + std::to_string(o.layer) + ")";
    check_reg(P, o.reg, what);
    auto need = [&](int r) {
      if (!alive[r])
        throw std::invalid_argument(what + " reads register " + std::to_string(r) + ", which holds nothing");
    };
    switch (o.kind) {
      case ScalarOp::Dense:
        need(o.reg);
        return q;
      case ScalarOp::Act:
        if (o.relu_slot < 0 || o.relu_slot >= P.n_scalar_relu)
          throw std::invalid_argument(what + ": a pointwise op without a self-data slot");
        need(o.reg);
        return q;
      case ScalarOp::Copy:
        check_reg(P, o.src, what);
        need(o.src);
        q.src = o.src;
        alive[o.reg] = true;
        return q;
      case ScalarOp::Add:
        check_reg(P, o.src, what);
        if (o.src == o.reg) throw std::invalid_argument(what + ": adds a register to itself");
        need(o.reg);
        need(o.src);
        q.src = o.src;
        alive[o.src] = false;
        return q;
    }
    throw std::invalid_argument(what + ": unknown scalar op kind " + std::to_string(static_cast<int>(o.kind)));
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
  size_t off_stages_ = 0, off_ops_ = 0, off_pools_ = 0, off_R_ = 0, off_scalar_ = 0, off_I_ = 0, off_L_ = 0,
         off_G_ = 0;
  ProgView<T> base_{};
};

}  // namespace cuda
}  // namespace ntkfast
