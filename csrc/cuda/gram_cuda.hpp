// CUDA backend interface: plain C++ on host pointers (no CUDA or Python types), so that only the .cu file
// is compiled by nvcc and the bindings never see CUDA headers.
#pragma once
#include <cstdint>

#include "core/dispatch.hpp"
#include "core/program.hpp"

namespace ntkfast {
namespace cuda {

CudaStatus status();

// Same contracts as the CPU backend (cpu/gram_cpu.hpp); host arrays in, host arrays out.
template <class T>
void self_data(const Program& P, const T* X, int64_t n, T* out);

template <class T>
void gram_tile(const Program& P, const T* X, int64_t nx, const T* Y, int64_t ny, const T* self_x,
               const T* self_y, bool symmetric, T* nngp, T* ntk);

}  // namespace cuda
}  // namespace ntkfast
