// CUDA backend (device query; the Gram kernels are being written in this file).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda/gram_cuda.hpp"

namespace ntkfast {
namespace cuda {

CudaStatus status() {
  CudaStatus s;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    s.reason = std::string("no usable CUDA device: ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky error state of the runtime
    return s;
  }
  s.device_count = n;
  if (n == 0) {
    s.reason = "no CUDA device found";
    return s;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) == cudaSuccess) {
      s.names.push_back(p.name);
      s.compute_capability.push_back(p.major * 10 + p.minor);
    }
  }
  s.usable = true;
  return s;
}

template <class T>
void self_data(const Program&, const T*, int64_t, T*) {
  throw std::runtime_error("the CUDA Gram kernel is not available in this build yet");
}

template <class T>
void gram_tile(const Program&, const T*, int64_t, const T*, int64_t, const T*, const T*, bool, T*, T*) {
  throw std::runtime_error("the CUDA Gram kernel is not available in this build yet");
}

template void self_data<float>(const Program&, const float*, int64_t, float*);
template void self_data<double>(const Program&, const double*, int64_t, double*);
template void gram_tile<float>(const Program&, const float*, int64_t, const float*, int64_t, const float*,
                               const float*, bool, float*, float*);
template void gram_tile<double>(const Program&, const double*, int64_t, const double*, int64_t, const double*,
                                const double*, bool, double*, double*);

}  // namespace cuda
}  // namespace ntkfast
