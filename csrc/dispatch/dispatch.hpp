// The one dispatch point between backends: CPU always, CUDA when compiled in (the only #ifdef on it).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/program.hpp"
#include "core/run.hpp"
#include "cuda/status.hpp"

namespace ntkfast {

enum class Device { Cpu, Cuda };

template <class T>
void self_data(Device dev, const Program& P, const T* X, int64_t n, T* out, const RunOptions& opt);

template <class T>
void gram_tile(Device dev, const Program& P, const TileArgs<T>& args, const RunOptions& opt);

template <class T>
void gram_pairs(Device dev, const Program& P, const PairArgs<T>& args, const RunOptions& opt);

// The tiles of one Gram computation against inputs the backend holds for the whole call: the CUDA backend
// uploads program, inputs and self data once (cuda::Session), the CPU backend reads the host arrays. X (nx
// rows), Y (ny rows; null for the Gram of X with itself), their self data and P must outlive the session.
template <class T>
class TileSession {
 public:
  virtual ~TileSession() = default;
  // Rows [i0, i1) of X against rows [j0, j1) of Y (of X without Y) into (i1 - i0) x (j1 - j0) row-major
  // outputs (either may be null); a square tile on the diagonal of the Gram of X computes j >= i and mirrors.
  virtual void tile(int64_t i0, int64_t i1, int64_t j0, int64_t j1, T* nngp, T* ntk, const RunOptions& opt) = 0;
};

template <class T>
std::unique_ptr<TileSession<T>> open_session(Device dev, const Program& P, const T* X, int64_t nx, const T* Y,
                                             int64_t ny, const T* self_x, const T* self_y, const RunOptions& opt);

// Host memory of the CPU backend (see cpu/gram_cpu.hpp), for the memory model.
int64_t cpu_thread_bytes(const Program& P, int itemsize);
int64_t cpu_tile_bytes(const Program& P, int itemsize, int64_t nx, int64_t ny);

struct BuildInfo {
  bool cuda_compiled = false;
  std::string cuda_architectures, cuda_version, cpu_arch, compiler;
  bool openmp = false;
  int cpu_threads = 1;
};
BuildInfo build_info();

// What is usable now (cuda/status.hpp); "not compiled in" without the CUDA backend.
CudaStatus cuda_status();

}  // namespace ntkfast
