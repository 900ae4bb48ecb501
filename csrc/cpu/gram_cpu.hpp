// CPU backend: the offset-plane recursion (docs/design.md), vectorized across pairs, OpenMP across batches.
#pragma once
#include <cstdint>

#include "core/program.hpp"
#include "core/run.hpp"

namespace ntkfast {
namespace cpu {

// Per-image self data (P.self_size values per image, see Program) of n inputs X (n x P.input_size()).
// out: n x P.self_size.
template <class T>
void self_data(const Program& P, const T* X, int64_t n, T* out, const RunOptions& opt);

// Kernels of every pair of a tile (see TileArgs).
template <class T>
void gram_tile(const Program& P, const TileArgs<T>& a, const RunOptions& opt);

// Kernels of the pairs (X[i], Y[i]) (see PairArgs): Y == X gives the Gram diagonal, bitwise as gram_tile.
template <class T>
void gram_pairs(const Program& P, const PairArgs<T>& a, const RunOptions& opt);

// Host memory of one thread's workspace, and of one nx x ny tile's packed inputs and batch list (bytes).
template <class T>
int64_t thread_bytes(const Program& P);
template <class T>
int64_t tile_bytes(const Program& P, int64_t nx, int64_t ny);

int max_threads();

}  // namespace cpu
}  // namespace ntkfast
