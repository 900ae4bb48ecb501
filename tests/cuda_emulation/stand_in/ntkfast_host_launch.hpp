// The kernel of csrc/cuda/gram_cuda.cu when that file is built by g++ against the stand-in runtime: a host
// symbol that identifies the kernel to the runtime (attributes, occupancy), and a launch that runs the
// kernel body, team_items, for every warp of every block on a one-lane host team (the same per-entry
// arithmetic and order as a warp; tests/cuda_emulation/emulate.cpp runs 32-thread teams).
#pragma once
#include <cstdint>

#include "cuda/kernels.cuh"
#include "cuda_runtime.h"

namespace ntkfast {
namespace cuda {

struct StandInTeam {
  int lane = 0;
  static constexpr int size = 1;
  void sync() const {}
  double sum(double v) const { return v; }
};

template <class T>
void gram_kernel(ProgView<T>, LaunchArgs<T>) {}

template <class T>
cudaError_t launch_kernel(int blocks, int threads, size_t smem, cudaStream_t stream, const ProgView<T>& v,
                          const LaunchArgs<T>& a) {
  const int warps = threads / 32;
  return standin::launch(reinterpret_cast<const void*>(&gram_kernel<T>), blocks, threads, smem, stream,
                         [v, a, blocks, warps](int block, unsigned char* sm) {
                           for (int w = 0; w < warps; ++w)
                             team_items(StandInTeam{}, v, a, static_cast<int64_t>(block) * warps + w,
                                        static_cast<int64_t>(blocks) * warps,
                                        reinterpret_cast<T*>(sm) + w * team_entries(v));
                         });
}

}  // namespace cuda
}  // namespace ntkfast
