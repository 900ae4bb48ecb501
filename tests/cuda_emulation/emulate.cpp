// Host emulation of the CUDA backend's kernel body (csrc/cuda/kernels.cuh), built with g++ and no CUDA.
// It runs the very code the GPU runs, item by item, with a "team" standing in for a warp:
//   --lanes 1 : one host thread executes every pass (lane 0, team size 1);
//   --lanes 32: 32 std::threads, one per lane, with a barrier for __syncwarp and the same xor butterfly
//               as the warp shuffles for the sums (cross-lane data flow and the sync points are exercised).
// Input: a program file and a data file written by run_emulation.py; output: self data and both kernels.
#include <barrier>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cuda/kernels.cuh"

using namespace ntkfast;
using namespace ntkfast::cuda;

struct HostTeam {
  int lane = 0;
  static constexpr int size = 1;
  void sync() const {}
  double sum(double v) const { return v; }
};

struct Shared32 {
  std::barrier<> bar{32};
  double buf[32];
};

struct ThreadTeam {
  int lane;
  static constexpr int size = 32;
  Shared32* sh;
  void sync() const { sh->bar.arrive_and_wait(); }
  double sum(double v) const {
    for (int m = 16; m >= 1; m >>= 1) {
      sh->buf[lane] = v;
      sync();
      v += sh->buf[lane ^ m];
      sync();
    }
    return v;
  }
};

static Program read_program(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path);
  Program P;
  int spatial, circular, readout, nst, nsc;
  std::string tag;
  f >> tag >> P.H >> P.W >> P.C >> spatial >> circular >> readout >> nst >> nsc;
  P.spatial = spatial; P.circular = circular;
  P.readout = readout == 1 ? Readout::Gap : readout == 2 ? Readout::Flatten : Readout::None;
  for (int s = 0; s < nst; ++s) {
    Stage st;
    int nops, has_pool, active;
    f >> tag >> st.h_in >> st.w_in >> st.h_out >> st.w_out >> nops >> has_pool >> active;
    f >> st.need_pair.y0 >> st.need_pair.y1 >> st.need_pair.x0 >> st.need_pair.x1;
    f >> st.need_self.y0 >> st.need_self.y1 >> st.need_self.x0 >> st.need_self.x1;
    st.has_pool = has_pool; st.self_active = active;
    for (int k = 0; k < nops; ++k) {
      LayerOp op; int kind;
      f >> tag >> kind >> op.ky >> op.kx >> op.pad_y >> op.pad_x >> op.scale >> op.bias2 >> op.h_in >> op.w_in >>
          op.h_out >> op.w_out;
      op.kind = kind == 0 ? LayerOp::Conv : LayerOp::Relu;
      st.ops.push_back(op);
    }
    if (has_pool) {
      for (PoolAxis* a : {&st.pool_y, &st.pool_x}) {
        int nt;
        f >> tag >> a->stride >> a->origin >> a->n_out >> nt;
        a->taps.resize(nt);
        for (double& t : a->taps) f >> t;
      }
    }
    P.stages.push_back(st);
  }
  for (int k = 0; k < nsc; ++k) {
    ScalarOp op; int kind;
    f >> tag >> kind >> op.w2 >> op.b2;
    op.kind = kind == 0 ? ScalarOp::Dense : ScalarOp::Relu;
    P.scalar.push_back(op);
  }
  if (!f) throw std::runtime_error("malformed program file " + path);
  P.finalize();
  return P;
}

template <class T, class RunOne>
static void run_items(int lanes, int64_t n, const RunOne& one) {
  // one(team, q): runs item q on the team; with 32 lanes all threads call it for the same q in lockstep.
  if (lanes == 1) {
    HostTeam tm;
    for (int64_t q = 0; q < n; ++q) one(tm, q);
    return;
  }
  Shared32 sh;
  std::vector<std::thread> th;
  for (int l = 0; l < 32; ++l)
    th.emplace_back([&, l]() {
      ThreadTeam tm{l, &sh};
      for (int64_t q = 0; q < n; ++q) one(tm, q);
    });
  for (auto& t : th) t.join();
}

template <class T>
static void emulate(const Program& P, int lanes, const std::vector<double>& Xd, int64_t nx, const std::vector<double>& Yd,
                    int64_t ny, bool sym, std::vector<double>& self_out, std::vector<double>& ks, std::vector<double>& kt) {
  const ProgBlob<T> blob(P);
  std::vector<unsigned char> bytes = blob.bytes();  // the "device" copy
  const ProgView<T> v = blob.view(bytes.data());
  const int64_t isz = P.input_size(), ssz = P.self_size;
  std::vector<T> X(Xd.begin(), Xd.end()), Y(Yd.begin(), Yd.end());
  if (sym) Y = X;
  auto self_of = [&](const std::vector<T>& A, int64_t n) {
    std::vector<T> S(static_cast<size_t>(n * ssz) + 1, T(0));
    std::vector<T> smem(2 * v.PL + v.PA), scr(4 * v.store[kSelf] + 1);
    run_items<T>(lanes, n, [&](const auto& tm, int64_t q) {
      Item<T> it{};
      it.x = it.y = A.data() + q * isz;
      it.self_out = S.data() + q * ssz;
      it.self_x = it.self_y = it.self_out;
      it.bS = smem.data(); it.bT = it.bS + v.PL; it.bA = it.bT + v.PL;
      const int64_t st = v.store[kSelf];
      it.in_s = scr.data(); it.in_t = scr.data() + st; it.out_s = scr.data() + 2 * st; it.out_t = scr.data() + 3 * st;
      it.self = true;
      T s, t;
      run_item(tm, v, it, s, t);
      tm.sync();
    });
    return S;
  };
  std::vector<T> SX = self_of(X, nx);
  std::vector<T> SY = sym ? SX : self_of(Y, ny);
  self_out.assign(SX.begin(), SX.begin() + nx * ssz);
  ks.assign(nx * ny, 0.0);
  kt.assign(nx * ny, 0.0);
  const int64_t npairs = sym ? nx * (nx + 1) / 2 : nx * ny;
  std::vector<T> smem(2 * v.PL + v.PA), scr(4 * v.store[kPair] + 1);
  std::vector<int> lane_mismatch(1, 0);
  run_items<T>(lanes, npairs, [&](const auto& tm, int64_t q) {
    int64_t i, j;
    if (sym) tri_decode(q, nx, i, j);
    else { i = q / ny; j = q % ny; }
    Item<T> it{};
    it.x = X.data() + i * isz; it.y = Y.data() + j * isz;
    it.self_x = SX.data() + i * ssz; it.self_y = SY.data() + j * ssz;
    it.bS = smem.data(); it.bT = it.bS + v.PL; it.bA = it.bT + v.PL;
    const int64_t st = v.store[kPair];
    it.in_s = scr.data(); it.in_t = scr.data() + st; it.out_s = scr.data() + 2 * st; it.out_t = scr.data() + 3 * st;
    it.self = false;
    T s, t;
    run_item(tm, v, it, s, t);
    if (tm.lane == 0) {
      ks[i * ny + j] = s; kt[i * ny + j] = t;
      if (sym) { ks[j * ny + i] = s; kt[j * ny + i] = t; }
    }
    tm.sync();
    if (tm.lane != 0 && (ks[i * ny + j] != double(s) || kt[i * ny + j] != double(t))) lane_mismatch[0] = 1;
    tm.sync();
  });
  if (lane_mismatch[0]) throw std::runtime_error("lanes disagree on a result");
}

// tri_decode (the kernel's map from a linear index to a pair (i, j >= i) of a symmetric tile) against
// direct enumeration, exhaustively for small n and on every row start and end for large n.
static void check_tri() {
  for (int64_t n = 1; n <= 400; ++n) {
    int64_t q = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i; j < n; ++j, ++q) {
        int64_t a, b;
        tri_decode(q, n, a, b);
        if (a != i || b != j) throw std::runtime_error("tri_decode wrong at n=" + std::to_string(n));
      }
  }
  for (int64_t n : {4096, 65536, 100003, 1000000}) {
    for (int64_t i = 0; i < n; i += (i < 64 || n - i < 64) ? 1 : 997) {
      for (int64_t j : {i, n - 1}) {
        int64_t a, b;
        tri_decode(tri_start(i, n) + (j - i), n, a, b);
        if (a != i || b != j) throw std::runtime_error("tri_decode wrong at n=" + std::to_string(n));
      }
    }
  }
}

int main(int argc, char** argv) {
  try {
    if (argc == 2 && std::string(argv[1]) == "tri") {
      check_tri();
      std::cout << "tri_decode: ok\n";
      return 0;
    }
    if (argc != 5) throw std::runtime_error("usage: emulate PROGRAM DATA OUT LANES");
    const Program P = read_program(argv[1]);
    const int lanes = std::stoi(argv[4]);
    std::ifstream f(argv[2], std::ios::binary);
    int64_t hdr[4];  // nx, ny (0: symmetric), input size, dtype bytes
    f.read(reinterpret_cast<char*>(hdr), sizeof(hdr));
    const int64_t nx = hdr[0], isz = hdr[2];
    const bool sym = hdr[1] == 0;
    const int64_t ny = sym ? nx : hdr[1];
    if (isz != P.input_size()) throw std::runtime_error("input size mismatch");
    std::vector<double> X(nx * isz), Y(sym ? 0 : ny * isz);
    f.read(reinterpret_cast<char*>(X.data()), X.size() * 8);
    f.read(reinterpret_cast<char*>(Y.data()), Y.size() * 8);
    if (!f) throw std::runtime_error("short data file");
    std::vector<double> so, ks, kt;
    if (hdr[3] == 4) emulate<float>(P, lanes, X, nx, Y, ny, sym, so, ks, kt);
    else emulate<double>(P, lanes, X, nx, Y, ny, sym, so, ks, kt);
    std::ofstream o(argv[3], std::ios::binary);
    for (auto* v : {&so, &ks, &kt}) o.write(reinterpret_cast<const char*>(v->data()), v->size() * 8);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "emulate: " << e.what() << "\n";
    return 1;
  }
}
