// The one dispatch point between backends: CPU always, CUDA when compiled in (the only #ifdef on it).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/program.hpp"

namespace ntkfast {

enum class Device { Cpu, Cuda };

template <class T>
void self_data(Device dev, const Program& P, const T* X, int64_t n, T* out, int threads);

template <class T>
void gram_tile(Device dev, const Program& P, const T* X, int64_t nx, const T* Y, int64_t ny, const T* self_x,
               const T* self_y, bool symmetric, T* nngp, T* ntk, int threads);

struct BuildInfo {
  bool cuda_compiled = false;
  std::string cuda_architectures, cuda_version, cpu_arch, compiler;
  bool openmp = false;
  int cpu_threads = 1;
};
BuildInfo build_info();

// What is usable now: device count and names, or the reason there is none.
struct CudaStatus {
  bool usable = false;
  int device_count = 0;
  std::string reason;
  std::vector<std::string> names;
  std::vector<int> compute_capability;  // major*10 + minor per device
};
CudaStatus cuda_status();

}  // namespace ntkfast
