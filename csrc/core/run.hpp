// What every backend entry takes besides the program: the arrays of one call and the options of running it.
// Both backends have the same entry signatures (cpu/gram_cpu.hpp, cuda/gram_cuda.hpp).
#pragma once
#include <atomic>
#include <cstdint>
#include <stdexcept>

namespace ntkfast {

// Options of one backend call; the same struct for every backend.
struct RunOptions {
  int threads = 0;  // CPU threads (0: OpenMP's default)
  int device = 0;   // CUDA device index
  // Set (from any thread) to stop the call early: it then throws Cancelled. Checked between batches of pairs.
  const std::atomic<bool>* cancel = nullptr;
  // Incremented by the number of pairs (self data: images) finished, as they finish.
  std::atomic<int64_t>* progress = nullptr;
};

class Cancelled : public std::runtime_error {
 public:
  Cancelled() : std::runtime_error("cancelled") {}
};

inline bool cancelled(const RunOptions& o) { return o.cancel && o.cancel->load(std::memory_order_relaxed); }
inline void add_progress(const RunOptions& o, int64_t n) {
  if (o.progress) o.progress->fetch_add(n, std::memory_order_relaxed);
}

// One tile of pairs (X[i], Y[j]): nngp / ntk (either may be null) are nx x ny, row-major. symmetric: Y is X,
// only j >= i is computed and then mirrored. self_x / self_y: the self data of X / Y (Program::self_size per
// row). Inputs are laid out NHWC (or D values for vector nets), Program::input_size() per row.
template <class T>
struct TileArgs {
  const T* X = nullptr;
  int64_t nx = 0;
  const T* Y = nullptr;
  int64_t ny = 0;
  const T* self_x = nullptr;
  const T* self_y = nullptr;
  bool symmetric = false;
  T* nngp = nullptr;
  T* ntk = nullptr;
};

// Pairs (X[i], Y[i]), i < n (paired mode; Y == X: the diagonal K(x_i, x_i)): nngp / ntk (either may be null)
// hold n values.
template <class T>
struct PairArgs {
  const T* X = nullptr;
  const T* Y = nullptr;
  int64_t n = 0;
  const T* self_x = nullptr;
  const T* self_y = nullptr;
  T* nngp = nullptr;
  T* ntk = nullptr;
};

}  // namespace ntkfast
