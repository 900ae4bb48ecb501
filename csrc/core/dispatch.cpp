#include "core/dispatch.hpp"

#include <stdexcept>

#include "cpu/gram_cpu.hpp"
#ifdef NTKFAST_WITH_CUDA
#include "cuda/gram_cuda.hpp"
#endif

namespace ntkfast {

namespace {
[[noreturn]] void no_cuda() {
  throw std::runtime_error("device='cuda': this ntkfast build has no CUDA backend (built with NTKFAST_CUDA=OFF or "
                           "without nvcc); reinstall with the CUDA toolkit present");
}
}  // namespace

template <class T>
void self_data(Device dev, const Program& P, const T* X, int64_t n, T* out, int threads) {
  if (dev == Device::Cpu) return cpu::self_data(P, X, n, out, threads);
#ifdef NTKFAST_WITH_CUDA
  return cuda::self_data(P, X, n, out);
#else
  no_cuda();
#endif
}

template <class T>
void gram_tile(Device dev, const Program& P, const T* X, int64_t nx, const T* Y, int64_t ny, const T* self_x,
               const T* self_y, bool symmetric, T* nngp, T* ntk, int threads) {
  if (dev == Device::Cpu) return cpu::gram_tile(P, X, nx, Y, ny, self_x, self_y, symmetric, nngp, ntk, threads);
#ifdef NTKFAST_WITH_CUDA
  return cuda::gram_tile(P, X, nx, Y, ny, self_x, self_y, symmetric, nngp, ntk);
#else
  no_cuda();
#endif
}

template void self_data<float>(Device, const Program&, const float*, int64_t, float*, int);
template void self_data<double>(Device, const Program&, const double*, int64_t, double*, int);
template void gram_tile<float>(Device, const Program&, const float*, int64_t, const float*, int64_t,
                               const float*, const float*, bool, float*, float*, int);
template void gram_tile<double>(Device, const Program&, const double*, int64_t, const double*, int64_t,
                                const double*, const double*, bool, double*, double*, int);

BuildInfo build_info() {
  BuildInfo b;
#ifdef NTKFAST_WITH_CUDA
  b.cuda_compiled = true;
  b.cuda_architectures = NTKFAST_CUDA_ARCHS;
  b.cuda_version = NTKFAST_CUDA_VERSION;
#endif
  b.cpu_arch = NTKFAST_CPU_ARCH;
#if defined(__clang__)
  b.compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  b.compiler = "gcc " __VERSION__;
#endif
#ifdef NTKFAST_HAVE_OPENMP
  b.openmp = true;
#endif
  b.cpu_threads = cpu::max_threads();
  return b;
}

CudaStatus cuda_status() {
#ifdef NTKFAST_WITH_CUDA
  return cuda::status();
#else
  CudaStatus s;
  s.reason = "not compiled in (built with NTKFAST_CUDA=OFF or without nvcc)";
  return s;
#endif
}

}  // namespace ntkfast
