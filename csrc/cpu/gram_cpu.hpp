// CPU backend: the offset-plane recursion of DESIGN section 2, vectorized across pairs, OpenMP across batches.
#pragma once
#include <cstdint>

#include "core/program.hpp"

namespace ntkfast {
namespace cpu {

// Per-image self data (P.self_size values per image, see Program) of n inputs X (n x P.input_size(), the
// inputs laid out NHWC). out: n x P.self_size. threads <= 0: OpenMP's default.
template <class T>
void self_data(const Program& P, const T* X, int64_t n, T* out, int threads);

// Kernels of every pair (X[i], Y[j]) of a tile: nngp / ntk (either may be null) are nx x ny, row-major.
// symmetric: Y is X; only j >= i is computed and mirrored. self_x / self_y: the self data of X / Y.
template <class T>
void gram_tile(const Program& P, const T* X, int64_t nx, const T* Y, int64_t ny, const T* self_x,
               const T* self_y, bool symmetric, T* nngp, T* ntk, int threads);

int max_threads();

}  // namespace cpu
}  // namespace ntkfast
