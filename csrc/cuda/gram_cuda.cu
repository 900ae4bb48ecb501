// CUDA backend: device query, per-image self data and tiles of pair kernels (DESIGN section 2).
//
// One warp owns one work item (a pair, or one image in self mode) at a time and runs the offset-plane
// recursion of kernels.cuh on it: each plane in shared memory through its Conv/ReLU layers, pooled planes
// in the warp's own global scratch. Warps are persistent (a grid of what fits resident) and stride over the
// items of a band of tile rows; bands go back to the host on a second stream while the next band computes.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cuda/device_program.hpp"
#include "cuda/gram_cuda.hpp"
#include "cuda/kernels.cuh"

namespace ntkfast {
namespace cuda {

namespace {

// A failed CUDA call, with its code so that an out-of-memory can be told apart and retried smaller.
class CudaError : public std::runtime_error {
 public:
  CudaError(cudaError_t code, const std::string& what) : std::runtime_error(what), code_(code) {}
  cudaError_t code() const { return code_; }

 private:
  cudaError_t code_;
};

[[noreturn]] void fail(cudaError_t e, const char* expr, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error (e.g. a failed cudaMalloc) so later checks do not see it
  throw CudaError(e, std::string("CUDA error at ") + file + ":" + std::to_string(line) + " in " + expr + ": " +
                         cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

// Every CUDA API call and every kernel launch (cudaGetLastError after <<<>>>) goes through this.
#define NTKFAST_CUDA_CHECK(expr)                                       \
  do {                                                                 \
    const cudaError_t ntkfast_e_ = (expr);                             \
    if (ntkfast_e_ != cudaSuccess) fail(ntkfast_e_, #expr, __FILE__, __LINE__); \
  } while (0)

// Owning device buffer; freed on every path out, exceptions included.
template <class T>
class DevBuf {
 public:
  DevBuf() = default;
  explicit DevBuf(size_t n) {
    if (n) NTKFAST_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)));
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~DevBuf() {
    if (p_) cudaFree(p_);
  }
  T* get() const { return p_; }

 private:
  T* p_ = nullptr;
};

class Stream {
 public:
  Stream() { NTKFAST_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() { cudaStreamDestroy(s_); }
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class Event {
 public:
  Event() { NTKFAST_CUDA_CHECK(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming)); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Event(Event&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// Copies on the stream that then runs the kernels: a pageable host-to-device cudaMemcpy may return before
// its DMA lands, and a non-blocking stream would not wait for it.
template <class T>
DevBuf<T> upload(const T* src, size_t n, cudaStream_t stream) {
  DevBuf<T> b(n);
  if (n) NTKFAST_CUDA_CHECK(cudaMemcpyAsync(b.get(), src, n * sizeof(T), cudaMemcpyHostToDevice, stream));
  return b;
}

constexpr int kMaxWarps = 4;  // warps per block (one item each); fewer when a warp's planes need more smem

struct WarpTeam {
  int lane;
  static constexpr int size = 32;
  __device__ void sync() const { __syncwarp(); }
  // Butterfly: every lane ends with the same value (each step adds the same two numbers on both lanes).
  __device__ double sum(double v) const {
    for (int m = 16; m >= 1; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    return v;
  }
};

template <class T>
struct LaunchArgs {
  const T *X, *Y, *SX, *SY;  // inputs and self data (device)
  T* self_out;               // self mode: n x self_size
  T *out_s, *out_t;          // pair mode: nx x ny (either may be null); symmetric tiles fill j >= i only
  int64_t nx, ny, q0, q1;    // items [q0, q1): images (self mode) or linear pair indices
  int64_t isz, ssz;          // input size and self-data size per image
  T* scratch;                // pooled stores, scratch_per_warp entries per resident warp
  int64_t scratch_per_warp, store;
  int symmetric, self;
};

template <class T>
__global__ void __launch_bounds__(kMaxWarps * 32) gram_kernel(ProgView<T> P, LaunchArgs<T> a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int warp = threadIdx.x >> 5;
  const int nwarps = blockDim.x >> 5;
  const WarpTeam tm{static_cast<int>(threadIdx.x & 31)};
  const int64_t per = 2 * static_cast<int64_t>(P.PL) + P.PA;
  T* sm = reinterpret_cast<T*>(smem_raw) + warp * per;
  const int64_t gw = static_cast<int64_t>(blockIdx.x) * nwarps + warp;
  const int64_t nw = static_cast<int64_t>(gridDim.x) * nwarps;
  T* scr = a.scratch ? a.scratch + gw * a.scratch_per_warp : nullptr;
  Item<T> it;
  it.bS = sm;
  it.bT = sm + P.PL;
  it.bA = sm + 2 * P.PL;
  it.self = a.self != 0;
  for (int64_t q = a.q0 + gw; q < a.q1; q += nw) {  // the same q on all lanes: warp-uniform control flow
    int64_t i, j;
    if (a.self) {
      i = j = q;
      it.x = it.y = a.X + i * a.isz;
      it.self_out = a.self_out + i * a.ssz;
      it.self_x = it.self_y = it.self_out;
    } else {
      if (a.symmetric) {
        tri_decode(q, a.nx, i, j);
      } else {
        i = q / a.ny;
        j = q - i * a.ny;
      }
      it.x = a.X + i * a.isz;
      it.y = a.Y + j * a.isz;
      it.self_x = a.SX + i * a.ssz;
      it.self_y = a.SY + j * a.ssz;
      it.self_out = nullptr;
    }
    it.in_s = scr;
    it.in_t = scr ? scr + a.store : nullptr;
    it.out_s = scr ? scr + 2 * a.store : nullptr;
    it.out_t = scr ? scr + 3 * a.store : nullptr;
    T s, t;
    run_item(tm, P, it, s, t);
    if (!a.self && tm.lane == 0) {
      const int64_t o = i * a.ny + j;
      if (a.out_s) a.out_s[o] = s;
      if (a.out_t) a.out_t[o] = t;
    }
    tm.sync();  // the next item reuses this warp's shared memory and scratch
  }
}

// Launch geometry of one call: warps per block, shared memory, resident blocks, scratch per warp.
struct Geometry {
  int warps = 1, blocks = 1;
  size_t smem = 0;
  int64_t scratch_per_warp = 0, store = 0;
};

template <class T>
Geometry plan_launch(const ProgView<T>& meta, int mode, int64_t n_items) {
  int dev = 0;
  NTKFAST_CUDA_CHECK(cudaGetDevice(&dev));
  int sms = 0, optin = 0;
  NTKFAST_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  NTKFAST_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  Geometry g;
  const size_t per_warp = (2 * static_cast<size_t>(meta.PL) + meta.PA) * sizeof(T);
  if (per_warp > static_cast<size_t>(optin))
    throw std::runtime_error("CUDA backend: one offset plane of this program needs " + std::to_string(per_warp) +
                             " bytes of shared memory, the device allows " + std::to_string(optin) +
                             " per block; use device='cpu' (or float32) for inputs this large");
  g.warps = static_cast<int>(std::min<size_t>(kMaxWarps, static_cast<size_t>(optin) / per_warp));
  g.smem = per_warp * g.warps;
  auto kern = gram_kernel<T>;
  NTKFAST_CUDA_CHECK(
      cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(g.smem)));
  int per_sm = 0;
  NTKFAST_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, g.warps * 32, g.smem));
  if (per_sm < 1) throw std::runtime_error("CUDA backend: the Gram kernel cannot be resident on this device");
  int64_t blocks = static_cast<int64_t>(per_sm) * sms;
  g.store = meta.store[mode];
  g.scratch_per_warp = 4 * g.store;  // this stage's planes and the next stage's, S and T
  if (g.scratch_per_warp > 0) {
    // Pooled stores live in global memory, one per resident warp: keep them within a quarter of what is free.
    size_t free_b = 0, total_b = 0;
    NTKFAST_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const int64_t per_block = g.scratch_per_warp * static_cast<int64_t>(sizeof(T)) * g.warps;
    blocks = std::min<int64_t>(blocks, std::max<int64_t>(1, static_cast<int64_t>(free_b / 4) / per_block));
  }
  const int64_t needed = (n_items + g.warps - 1) / g.warps;
  g.blocks = static_cast<int>(std::max<int64_t>(1, std::min(blocks, needed)));
  return g;
}

template <class T>
void launch(const ProgView<T>& view, const Geometry& g, const LaunchArgs<T>& a, cudaStream_t stream) {
  if (a.q1 <= a.q0) return;
  gram_kernel<T><<<g.blocks, g.warps * 32, g.smem, stream>>>(view, a);
  NTKFAST_CUDA_CHECK(cudaGetLastError());
}

bool is_oom(const CudaError& e) { return e.code() == cudaErrorMemoryAllocation; }

// --- self data ---

template <class T>
void self_data_run(const ProgBlob<T>& blob, const Program& P, const T* X, int64_t n, T* out) {
  const int64_t isz = P.input_size(), ssz = P.self_size;
  Stream stream;
  DevBuf<unsigned char> prog = upload(blob.bytes().data(), blob.bytes().size(), stream.get());
  const ProgView<T> view = blob.view(prog.get());
  DevBuf<T> dx = upload(X, static_cast<size_t>(n * isz), stream.get());
  DevBuf<T> dout(static_cast<size_t>(n * ssz));
  const Geometry g = plan_launch(blob.meta(), kSelf, n);
  DevBuf<T> scratch(static_cast<size_t>(g.scratch_per_warp * g.warps * g.blocks));
  LaunchArgs<T> a{};
  a.X = dx.get();
  a.self_out = dout.get();
  a.nx = a.ny = n;
  a.q0 = 0;
  a.q1 = n;
  a.isz = isz;
  a.ssz = ssz;
  a.scratch = scratch.get();
  a.scratch_per_warp = g.scratch_per_warp;
  a.store = g.store;
  a.self = 1;
  launch(view, g, a, stream.get());
  NTKFAST_CUDA_CHECK(cudaMemcpyAsync(out, dout.get(), static_cast<size_t>(n * ssz) * sizeof(T),
                                     cudaMemcpyDeviceToHost, stream.get()));
  NTKFAST_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
}

template <class T>
void self_data_split(const ProgBlob<T>& blob, const Program& P, const T* X, int64_t n, T* out) {
  try {
    self_data_run(blob, P, X, n, out);
  } catch (const CudaError& e) {
    if (!is_oom(e) || n <= 1) throw;
    const int64_t h = n / 2;  // out of device memory: half the images per launch
    self_data_split(blob, P, X, h, out);
    self_data_split(blob, P, X + h * P.input_size(), n - h, out + h * P.self_size);
  }
}

// --- pair tiles ---

template <class T>
struct TileOut {
  T *s, *t;    // host outputs (either may be null)
  int64_t ld;  // their row stride
};

template <class T>
void mirror_host(TileOut<T> o, int64_t n) {
  T* const outs[2] = {o.s, o.t};
  for (T* p : outs) {
    if (!p) continue;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) p[j * o.ld + i] = p[i * o.ld + j];
  }
}

template <class T>
void tile_run(const ProgBlob<T>& blob, const Program& P, const T* X, int64_t nx, const T* Y, int64_t ny, const T* sx,
              const T* sy, bool sym, TileOut<T> o) {
  const int64_t isz = P.input_size(), ssz = P.self_size;
  Stream compute, copy;
  const cudaStream_t cs = compute.get();
  DevBuf<unsigned char> prog = upload(blob.bytes().data(), blob.bytes().size(), cs);
  const ProgView<T> view = blob.view(prog.get());
  DevBuf<T> dX = upload(X, static_cast<size_t>(nx * isz), cs);
  DevBuf<T> dY = sym ? DevBuf<T>() : upload(Y, static_cast<size_t>(ny * isz), cs);
  DevBuf<T> dSX = upload(sx, static_cast<size_t>(nx * ssz), cs);
  DevBuf<T> dSY = sym ? DevBuf<T>() : upload(sy, static_cast<size_t>(ny * ssz), cs);
  DevBuf<T> ds(o.s ? static_cast<size_t>(nx * ny) : 0);
  DevBuf<T> dt(o.t ? static_cast<size_t>(nx * ny) : 0);
  const int64_t n_pairs = sym ? nx * (nx + 1) / 2 : nx * ny;
  const Geometry g = plan_launch(blob.meta(), kPair, n_pairs);
  DevBuf<T> scratch(static_cast<size_t>(g.scratch_per_warp * g.warps * g.blocks));

  LaunchArgs<T> a{};
  a.X = dX.get();
  a.Y = sym ? dX.get() : dY.get();
  a.SX = dSX.get();
  a.SY = sym ? dSX.get() : dSY.get();
  a.out_s = ds.get();
  a.out_t = dt.get();
  a.nx = nx;
  a.ny = ny;
  a.isz = isz;
  a.ssz = ssz;
  a.scratch = scratch.get();
  a.scratch_per_warp = g.scratch_per_warp;
  a.store = g.store;
  a.symmetric = sym ? 1 : 0;

  // Bands of rows, each with enough pairs to fill every resident warp many times over; band k goes back
  // to the host on the copy stream while band k + 1 computes.
  const int64_t resident = static_cast<int64_t>(g.blocks) * g.warps;
  const int64_t target = std::max<int64_t>(resident * 16, int64_t(1) << 16);
  std::vector<std::pair<int64_t, int64_t>> bands;
  for (int64_t r0 = 0; r0 < nx;) {
    int64_t r1 = r0, cnt = 0;
    for (; r1 < nx && cnt < target; ++r1) cnt += sym ? nx - r1 : ny;
    bands.emplace_back(r0, r1);
    r0 = r1;
  }
  std::vector<Event> done(bands.size());
  auto copy_band = [&](size_t k) {
    const int64_t r0 = bands[k].first, rows = bands[k].second - r0;
    NTKFAST_CUDA_CHECK(cudaStreamWaitEvent(copy.get(), done[k].get(), 0));
    const std::pair<T*, T*> host_dev[2] = {{o.s, ds.get()}, {o.t, dt.get()}};
    for (const std::pair<T*, T*>& hd : host_dev) {
      if (!hd.first) continue;
      NTKFAST_CUDA_CHECK(cudaMemcpy2DAsync(hd.first + r0 * o.ld, o.ld * sizeof(T), hd.second + r0 * ny,
                                           ny * sizeof(T), ny * sizeof(T), rows, cudaMemcpyDeviceToHost,
                                           copy.get()));
    }
  };
  for (size_t k = 0; k < bands.size(); ++k) {
    a.q0 = sym ? tri_start(bands[k].first, nx) : bands[k].first * ny;
    a.q1 = sym ? tri_start(bands[k].second, nx) : bands[k].second * ny;
    launch(view, g, a, compute.get());
    NTKFAST_CUDA_CHECK(cudaEventRecord(done[k].get(), compute.get()));
    if (k > 0) copy_band(k - 1);  // enqueued after band k's launch, so a blocking pageable copy overlaps it
  }
  copy_band(bands.size() - 1);
  NTKFAST_CUDA_CHECK(cudaStreamSynchronize(compute.get()));
  NTKFAST_CUDA_CHECK(cudaStreamSynchronize(copy.get()));
  if (sym) mirror_host(o, nx);
}

template <class T>
void tile_split(const ProgBlob<T>& blob, const Program& P, const T* X, int64_t nx, const T* Y, int64_t ny,
                const T* sx, const T* sy, bool sym, TileOut<T> o) {
  try {
    tile_run(blob, P, X, nx, Y, ny, sx, sy, sym, o);
    return;
  } catch (const CudaError& e) {
    if (!is_oom(e) || (nx <= 1 && ny <= 1)) throw;
  }
  // Out of device memory: the same tile as sub-tiles of about half the pairs each.
  const int64_t isz = P.input_size(), ssz = P.self_size;
  auto shift = [](TileOut<T> t, int64_t di, int64_t dj) {
    if (t.s) t.s += di * t.ld + dj;
    if (t.t) t.t += di * t.ld + dj;
    return t;
  };
  if (sym) {
    const int64_t h = nx / 2;
    tile_split(blob, P, X, h, X, h, sx, sx, true, o);
    tile_split(blob, P, X, h, X + h * isz, nx - h, sx, sx + h * ssz, false, shift(o, 0, h));
    T* const outs[2] = {o.s, o.t};
    for (T* p : outs) {
      if (!p) continue;
      for (int64_t i = 0; i < h; ++i)
        for (int64_t j = h; j < nx; ++j) p[j * o.ld + i] = p[i * o.ld + j];
    }
    tile_split(blob, P, X + h * isz, nx - h, X + h * isz, nx - h, sx + h * ssz, sx + h * ssz, true, shift(o, h, h));
  } else if (nx >= ny) {
    const int64_t h = nx / 2;
    tile_split(blob, P, X, h, Y, ny, sx, sy, false, o);
    tile_split(blob, P, X + h * isz, nx - h, Y, ny, sx + h * ssz, sy, false, shift(o, h, 0));
  } else {
    const int64_t h = ny / 2;
    tile_split(blob, P, X, nx, Y, h, sx, sy, false, o);
    tile_split(blob, P, X, nx, Y + h * isz, ny - h, sx, sy + h * ssz, false, shift(o, 0, h));
  }
}

}  // namespace

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
void self_data(const Program& P, const T* X, int64_t n, T* out) {
  if (n <= 0 || P.self_size == 0) return;  // nothing recorded: no ReLU in this program
  const ProgBlob<T> blob(P);
  self_data_split(blob, P, X, n, out);
}

template <class T>
void gram_tile(const Program& P, const T* X, int64_t nx, const T* Y, int64_t ny, const T* self_x, const T* self_y,
               bool symmetric, T* nngp, T* ntk) {
  if (symmetric && nx != ny) throw std::invalid_argument("symmetric tile must be square");
  if (nx <= 0 || ny <= 0 || (!nngp && !ntk)) return;
  const ProgBlob<T> blob(P);
  tile_split(blob, P, X, nx, symmetric ? X : Y, ny, self_x, symmetric ? self_x : self_y, symmetric,
             TileOut<T>{nngp, ntk, ny});
}

template void self_data<float>(const Program&, const float*, int64_t, float*);
template void self_data<double>(const Program&, const double*, int64_t, double*);
template void gram_tile<float>(const Program&, const float*, int64_t, const float*, int64_t, const float*,
                               const float*, bool, float*, float*);
template void gram_tile<double>(const Program&, const double*, int64_t, const double*, int64_t, const double*,
                                const double*, bool, double*, double*);

}  // namespace cuda
}  // namespace ntkfast
