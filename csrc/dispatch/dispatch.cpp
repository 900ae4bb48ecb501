#include "dispatch/dispatch.hpp"

#include <stdexcept>

#include "cpu/gram_cpu.hpp"
#ifdef NTKFAST_WITH_CUDA
#include "cuda/gram_cuda.hpp"
#endif

namespace ntkfast {

namespace {
[[noreturn, maybe_unused]] void no_cuda() {
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

namespace {

template <class T>
class CpuSession : public TileSession<T> {
 public:
  CpuSession(const Program& P, const T* X, int64_t nx, const T* Y, int64_t ny, const T* sx, const T* sy)
      : P_(P), X_(X), Y_(Y ? Y : X), sx_(sx), sy_(Y ? sy : sx), nx_(nx), ny_(Y ? ny : nx), has_y_(Y != nullptr) {}
  void tile(int64_t i0, int64_t i1, int64_t j0, int64_t j1, T* nngp, T* ntk, const RunOptions& opt) override {
    if (i0 < 0 || i1 < i0 || i1 > nx_ || j0 < 0 || j1 < j0 || j1 > ny_)
      throw std::invalid_argument("tile outside the Gram");
    TileArgs<T> a;
    const int64_t isz = P_.input_size(), ssz = P_.self_size;
    a.X = X_ + i0 * isz;
    a.nx = i1 - i0;
    a.Y = Y_ + j0 * isz;
    a.ny = j1 - j0;
    a.self_x = sx_ + i0 * ssz;
    a.self_y = sy_ + j0 * ssz;
    a.symmetric = !has_y_ && i0 == j0 && i1 == j1;
    a.nngp = nngp;
    a.ntk = ntk;
    if (a.nx > 0 && a.ny > 0 && (nngp || ntk)) cpu::gram_tile(P_, a, opt);
  }

 private:
  const Program& P_;
  const T *X_, *Y_, *sx_, *sy_;
  int64_t nx_, ny_;
  bool has_y_;
};

#ifdef NTKFAST_WITH_CUDA
template <class T>
class CudaSession : public TileSession<T> {
 public:
  CudaSession(const Program& P, const T* X, int64_t nx, const T* Y, int64_t ny, const T* sx, const T* sy,
              const RunOptions& opt)
      : s_(P, X, nx, Y, ny, sx, sy, opt) {}
  void tile(int64_t i0, int64_t i1, int64_t j0, int64_t j1, T* nngp, T* ntk, const RunOptions& opt) override {
    s_.tile(i0, i1, j0, j1, nngp, ntk, opt);
  }

 private:
  cuda::Session<T> s_;
};
#endif

}  // namespace

template <class T>
std::unique_ptr<TileSession<T>> open_session(Device dev, const Program& P, const T* X, int64_t nx, const T* Y,
                                             int64_t ny, const T* self_x, const T* self_y, const RunOptions& opt) {
  switch (dev) {
    case Device::Cpu:
      return std::make_unique<CpuSession<T>>(P, X, nx, Y, ny, self_x, self_y);
    case Device::Cuda:
#ifdef NTKFAST_WITH_CUDA
      return std::make_unique<CudaSession<T>>(P, X, nx, Y, ny, self_x, self_y, opt);
#else
      (void)opt;
      no_cuda();
#endif
  }
  throw std::invalid_argument("unknown device");
}

template std::unique_ptr<TileSession<float>> open_session<float>(Device, const Program&, const float*, int64_t,
                                                                 const float*, int64_t, const float*, const float*,
                                                                 const RunOptions&);
template std::unique_ptr<TileSession<double>> open_session<double>(Device, const Program&, const double*, int64_t,
                                                                   const double*, int64_t, const double*,
                                                                   const double*, const RunOptions&);

template <class T>
void gram_pairs(Device dev, const Program& P, const PairArgs<T>& args, const RunOptions& opt) {
  switch (dev) {
    case Device::Cpu:
      return cpu::gram_pairs(P, args, opt);
    case Device::Cuda:
#ifdef NTKFAST_WITH_CUDA
      return cuda::gram_pairs(P, args, opt);
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
template void gram_pairs<float>(Device, const Program&, const PairArgs<float>&, const RunOptions&);
template void gram_pairs<double>(Device, const Program&, const PairArgs<double>&, const RunOptions&);

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
