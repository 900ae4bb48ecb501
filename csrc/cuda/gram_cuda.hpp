// CUDA backend interface: plain C++ on host pointers (no CUDA or Python types), so that only the .cu file
// is compiled by nvcc and the bindings never see CUDA headers. Same entry signatures as the CPU backend;
// RunOptions::device selects the GPU (the caller's current device is restored on return).
//
// Errors: std::invalid_argument (bad device index, malformed program), std::runtime_error (a CUDA error with
// file, line and the CUDA error string; a plane too large for shared memory; a device whose compute
// capability has no kernel image in this build), DeviceOutOfMemory (not even one resident warp and one row
// per band fit), KernelFault (a kernel faulted: this and every later call refuse), Cancelled.
#pragma once
#include <cstdint>
#include <memory>

#include "core/program.hpp"
#include "core/run.hpp"
#include "cuda/status.hpp"

namespace ntkfast {
namespace cuda {

// Devices, and per device whether this build's kernels can run there. Probes each device once per process
// (cudaFuncGetAttributes on the kernels, which creates the device's primary context).
CudaStatus status();

template <class T>
void self_data(const Program& P, const T* X, int64_t n, T* out, const RunOptions& opt);

// One tile, uploaded and computed on its own (a Session of one tile).
template <class T>
void gram_tile(const Program& P, const TileArgs<T>& args, const RunOptions& opt);

// The pairs (X[i], Y[i]) (see PairArgs), as the CPU backend's gram_pairs.
template <class T>
void gram_pairs(const Program& P, const PairArgs<T>& args, const RunOptions& opt);

// The device side of one Gram computation: the program, the inputs X (nx rows) and Y (ny rows; null for the
// Gram of X with itself) and their self data are uploaded once to device opt.device, and tiles are then
// computed against them, each streamed back in bands. When the inputs do not fit in device memory, each
// tile uploads its own rows and columns instead. The host arrays must outlive the session.
template <class T>
class Session {
 public:
  Session(const Program& P, const T* X, int64_t nx, const T* Y, int64_t ny, const T* self_x, const T* self_y,
          const RunOptions& opt);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Rows [i0, i1) of X against rows [j0, j1) of Y (of X when the session has no Y). nngp / ntk (either may be
  // null): (i1 - i0) x (j1 - j0) host arrays, row-major. A square tile on the diagonal of the Gram of X
  // (no Y, i0 == j0, i1 == j1) computes j >= i and mirrors. opt: cancellation and progress (its device must
  // be the session's). Calls from several threads run one after the other.
  void tile(int64_t i0, int64_t i1, int64_t j0, int64_t j1, T* nngp, T* ntk, const RunOptions& opt);

  // Resident teams (warps) per launch and whether the inputs stream per tile (for tests and diagnostics).
  int64_t resident_teams() const;
  bool streaming_inputs() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Tuning knobs for tests and benchmarks (process-wide; 0 restores the default).
struct Tuning {
  int64_t band_pairs = 0;   // pairs per streamed band (default: 16 per resident team, at least 65536)
  int64_t max_teams = 0;    // cap on resident teams per launch (default: what fits)
};
void set_tuning(const Tuning& t);

}  // namespace cuda
}  // namespace ntkfast
