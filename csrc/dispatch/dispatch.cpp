#include "dispatch/dispatch.hpp"

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
void self_data(Device dev, const Program& P, const T* X, int64_t n, T* out, const RunOptions& opt) {
  switch (dev) {
    case Device::Cpu:
      return cpu::self_data(P, X, n, out, opt);
    case Device::Cuda:
#ifdef NTKFAST_WITH_CUDA
      return cuda::self_data(P, X, n, out, opt);
#else
      no_cuda();
#endif
  }
  throw std::invalid_argument("unknown device");
}

template <class T>
void gram_tile(Device dev, const Program& P, const TileArgs<T>& args, const RunOptions& opt) {
  switch (dev) {
    case Device::Cpu:
      return cpu::gram_tile(P, args, opt);
    case Device::Cuda:
#ifdef NTKFAST_WITH_CUDA
      return cuda::gram_tile(P, args, opt);
#else
      no_cuda();
#endif
  }
  throw std::invalid_argument("unknown device");
}

template void self_data<float>(Device, const Program&, const float*, int64_t, float*, const RunOptions&);
template void self_data<double>(Device, const Program&, const double*, int64_t, double*, const RunOptions&);
template void gram_tile<float>(Device, const Program&, const TileArgs<float>&, const RunOptions&);
template void gram_tile<double>(Device, const Program&, const TileArgs<double>&, const RunOptions&);

int64_t cpu_thread_bytes(const Program& P, int itemsize) {
  return itemsize == 4 ? cpu::thread_bytes<float>(P) : cpu::thread_bytes<double>(P);
}

int64_t cpu_tile_bytes(const Program& P, int itemsize, int64_t nx, int64_t ny) {
  return itemsize == 4 ? cpu::tile_bytes<float>(P, nx, ny) : cpu::tile_bytes<double>(P, nx, ny);
}

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
