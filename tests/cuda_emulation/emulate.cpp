// Host emulation of the CUDA backend's kernel body (csrc/cuda/kernels.cuh), built with g++ and no CUDA.
// It runs the very per-team loop the GPU kernel runs (team_items), with teams standing in for warps:
//   lanes 1 : one host thread per team executes every pass (lane 0, team size 1);
//   lanes 32: 32 std::threads per team, a barrier for __syncwarp and the same xor butterfly as the warp
//             shuffles for the sums, so the cross-lane data flow and the sync points are exercised (and
//             checked by ThreadSanitizer in the TSan build).
// Several teams run at once, each with its own "shared memory" and global scratch, striding over the items
// as the persistent warps of a launch do.
//
// The program is read through core's own parser and compiler (the text of Arch.program_text).
//   emulate LANES TEAMS CASE...   each CASE is a path prefix: CASE.prog (program text), CASE.bin (inputs),
//                                 writes CASE.out (self data of X, then NNGP and NTK, float64)
//   emulate tri                   checks tri_decode
#include <algorithm>
#include <barrier>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/program.hpp"
#include "core/serialize.hpp"
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
  // The warp's butterfly (v += shfl_xor(v, m)): both lanes of a step add the same two numbers, and IEEE
  // addition commutes, so every lane ends with one value.
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

static std::string read_text(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs team_items on `teams` teams of `lanes` threads (one launch), each team with its own shared memory and
// scratch.
template <class T>
static void launch(const ProgView<T>& v, LaunchArgs<T> a, int lanes, int teams, int mode) {
  const int64_t per = team_entries(v);
  a.store = v.store[mode];
  a.scratch_per_warp = 4 * a.store;
  std::vector<T> smem(static_cast<size_t>(per * teams) + 1), scratch(static_cast<size_t>(a.scratch_per_warp * teams) + 1);
  a.scratch = a.scratch_per_warp ? scratch.data() : nullptr;
  std::vector<std::thread> th;
  std::vector<std::unique_ptr<Shared32>> sh;
  for (int w = 0; w < teams; ++w) {
    T* sm = smem.data() + w * per;
    if (lanes == 1) {
      auto body = [&v, a, w, teams, sm]() { team_items(HostTeam{}, v, a, w, teams, sm); };
      if (teams == 1) body();
      else th.emplace_back(body);
      continue;
    }
    sh.push_back(std::make_unique<Shared32>());
    Shared32* s = sh.back().get();
    for (int l = 0; l < 32; ++l)
      th.emplace_back([&v, a, w, teams, sm, s, l]() { team_items(ThreadTeam{l, s}, v, a, w, teams, sm); });
  }
  for (auto& t : th) t.join();
}

template <class T>
static void emulate(const Program& P, int lanes, int teams, const std::vector<double>& Xd, int64_t nx,
                    const std::vector<double>& Yd, int64_t ny, bool sym, std::vector<double>& self_out,
                    std::vector<double>& ks, std::vector<double>& kt) {
  const ProgBlob<T> blob(P);
  const std::vector<unsigned char> bytes = blob.bytes();  // the "device" copy
  const ProgView<T> v = blob.view(bytes.data());
  const int64_t isz = P.input_size(), ssz = P.self_size;
  const std::vector<T> X(Xd.begin(), Xd.end());
  const std::vector<T> Y = sym ? X : std::vector<T>(Yd.begin(), Yd.end());
  auto self_of = [&](const std::vector<T>& A, int64_t n) {
    std::vector<T> S(static_cast<size_t>(n * ssz) + 1, T(0));
    if (ssz == 0) return S;
    LaunchArgs<T> a{};
    a.X = A.data();
    a.self_out = S.data();
    a.nx = a.ny = n;
    a.q0 = 0;
    a.q1 = n;
    a.isz = isz;
    a.ssz = ssz;
    a.self = 1;
    launch(v, a, lanes, teams, kSelf);
    return S;
  };
  const std::vector<T> SX = self_of(X, nx);
  const std::vector<T> SY = sym ? SX : self_of(Y, ny);
  self_out.assign(SX.begin(), SX.begin() + nx * ssz);
  std::vector<T> os(static_cast<size_t>(nx * ny), T(0)), ot(static_cast<size_t>(nx * ny), T(0));
  LaunchArgs<T> a{};
  a.X = X.data();
  a.Y = Y.data();
  a.SX = SX.data();
  a.SY = SY.data();
  a.out_s = os.data();
  a.out_t = ot.data();
  a.row0 = 0;
  a.nx = nx;
  a.ny = ny;
  a.q0 = 0;
  a.q1 = sym ? nx * (nx + 1) / 2 : nx * ny;
  a.isz = isz;
  a.ssz = ssz;
  a.symmetric = sym ? 1 : 0;
  launch(v, a, lanes, teams, kPair);
  ks.assign(os.begin(), os.end());
  kt.assign(ot.begin(), ot.end());
  if (sym)  // the host side of the backend mirrors the upper triangle
    for (int64_t i = 0; i < nx; ++i)
      for (int64_t j = i + 1; j < nx; ++j) {
        ks[j * ny + i] = ks[i * ny + j];
        kt[j * ny + i] = kt[i * ny + j];
      }
  // Paired mode (gram_pairs): the pairs (X[i], Y[i]) must be the tile's entries (i, i), bitwise.
  const int64_t np = std::min(nx, ny);
  std::vector<T> ps(static_cast<size_t>(np) + 1, T(0)), pt(static_cast<size_t>(np) + 1, T(0));
  LaunchArgs<T> b = a;
  b.out_s = ps.data();
  b.out_t = pt.data();
  b.nx = b.ny = np;
  b.q1 = np;
  b.symmetric = 0;
  b.paired = 1;
  launch(v, b, lanes, teams, kPair);
  for (int64_t i = 0; i < np; ++i)
    if (ps[i] != os[i * ny + i] || pt[i] != ot[i * ny + i])
      throw std::runtime_error("paired mode differs from the tile at pair " + std::to_string(i));
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

static void run_case(const std::string& prefix, int lanes, int teams) {
  const Program P = compile(parse_program(read_text(prefix + ".prog")));
  std::ifstream f(prefix + ".bin", std::ios::binary);
  int64_t hdr[4];  // nx, ny (0: symmetric), input size, dtype bytes
  f.read(reinterpret_cast<char*>(hdr), sizeof(hdr));
  const int64_t nx = hdr[0], isz = hdr[2];
  const bool sym = hdr[1] == 0;
  const int64_t ny = sym ? nx : hdr[1];
  if (isz != P.input_size()) throw std::runtime_error(prefix + ": input size mismatch");
  std::vector<double> X(static_cast<size_t>(nx * isz)), Y(static_cast<size_t>(sym ? 0 : ny * isz));
  f.read(reinterpret_cast<char*>(X.data()), static_cast<std::streamsize>(X.size() * 8));
  f.read(reinterpret_cast<char*>(Y.data()), static_cast<std::streamsize>(Y.size() * 8));
  if (!f) throw std::runtime_error(prefix + ": short data file");
  std::vector<double> so, ks, kt;
  if (hdr[3] == 4) emulate<float>(P, lanes, teams, X, nx, Y, ny, sym, so, ks, kt);
  else emulate<double>(P, lanes, teams, X, nx, Y, ny, sym, so, ks, kt);
  std::ofstream o(prefix + ".out", std::ios::binary);
  for (auto* v : {&so, &ks, &kt}) o.write(reinterpret_cast<const char*>(v->data()), static_cast<std::streamsize>(v->size() * 8));
  if (!o) throw std::runtime_error(prefix + ": cannot write the output");
}

int main(int argc, char** argv) {
  try {
    if (argc == 2 && std::string(argv[1]) == "tri") {
      check_tri();
      std::cout << "tri_decode: ok\n";
      return 0;
    }
    if (argc < 4) throw std::runtime_error("usage: emulate LANES TEAMS CASE... | emulate tri");
    const int lanes = std::stoi(argv[1]), teams = std::stoi(argv[2]);
    if ((lanes != 1 && lanes != 32) || teams < 1) throw std::runtime_error("LANES must be 1 or 32, TEAMS >= 1");
    for (int k = 3; k < argc; ++k) run_case(argv[k], lanes, teams);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "emulate: " << e.what() << "\n";
    return 1;
  }
}
