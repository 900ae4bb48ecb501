// The one dispatch point between backends: CPU always, CUDA when compiled in (the only #ifdef on it).
#pragma once
#include <cstdint>
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
