// CUDA backend: device query, per-image self data and Gram tiles (DESIGN section 2).
//
// One warp owns one work item (a pair, or one image in self mode) at a time and runs the offset-plane
// recursion of kernels.cuh on it: each plane in shared memory through its layers (one S, T pair of planes per
// register, i.e. per stream of a branching net, and a temp), pooled planes in the warp's own global scratch.
// Warps are persistent (a grid of what fits resident) and stride over the items of a band of tile rows; a band
// goes back to the host on a second stream while the next computes.
//
// The host code also builds with g++ against the stand-in runtime of tests/cuda_emulation (no GPU), which
// then supplies the kernel symbol and its launch; that is how tiling, bands, mirroring, out-of-memory
// retries, cancellation and fault reporting are tested on machines without a GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cuda/device_program.hpp"
#include "cuda/gram_cuda.hpp"
#include "cuda/kernels.cuh"

#if !defined(__CUDACC__)
// g++ build against tests/cuda_emulation's stand-in runtime: ntkfast::cuda::gram_kernel<T> (a host symbol
// the runtime identifies the kernel by) and launch_kernel<T> (runs team_items on host teams).
#include "ntkfast_host_launch.hpp"
#endif

namespace ntkfast {
namespace cuda {

constexpr int kMaxWarps = 4;  // warps per block (one item each); fewer when a warp's planes need more smem

#if defined(__CUDACC__)
struct WarpTeam {
  int lane;
  static constexpr int size = 32;
  __device__ void sync() const { __syncwarp(); }
  // Butterfly: both lanes of a step add the same two numbers, so every lane ends with the same value.
  __device__ double sum(double v) const {
    for (int m = 16; m >= 1; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    return v;
  }
};

template <class T>
__global__ void __launch_bounds__(kMaxWarps * 32) gram_kernel(ProgView<T> P, LaunchArgs<T> a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int warp = threadIdx.x >> 5;
  const int nwarps = blockDim.x >> 5;
  const WarpTeam tm{static_cast<int>(threadIdx.x & 31)};
  T* sm = reinterpret_cast<T*>(smem_raw) + warp * team_entries(P);
  team_items(tm, P, a, static_cast<int64_t>(blockIdx.x) * nwarps + warp, static_cast<int64_t>(gridDim.x) * nwarps, sm);
}

template <class T>
cudaError_t launch_kernel(int blocks, int threads, size_t smem, cudaStream_t stream, const ProgView<T>& v,
                          const LaunchArgs<T>& a) {
  gram_kernel<T><<<blocks, threads, smem, stream>>>(v, a);
  return cudaGetLastError();
}
#endif

namespace {

template <class T>
const void* kernel_symbol() {
  return reinterpret_cast<const void*>(&gram_kernel<T>);
}
template <class T>
const char* type_name() {
  return sizeof(T) == 4 ? "float" : "double";
}

// ---- errors ----------------------------------------------------------------------------------------------

// A failed CUDA call, with its code so that an out-of-memory can be told apart and retried smaller.
class CudaError : public std::runtime_error {
 public:
  CudaError(cudaError_t code, const std::string& what) : std::runtime_error(what), code_(code) {}
  cudaError_t code() const { return code_; }

 private:
  cudaError_t code_;
};

// Errors after which the context is unusable: a kernel faulted, and every later call returns the error.
bool is_fault(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorAssert:
      return true;
    default:
      return false;
  }
}

// The process-wide refusal after a kernel fault (the reason is written once, then only read).
std::atomic<bool> g_faulted{false};
std::mutex g_fault_mu;
std::string g_fault_reason;

void refuse_if_faulted() {
  if (!g_faulted.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lk(g_fault_mu);
  throw KernelFault("GPU work refused in this process: an earlier CUDA kernel fault left its CUDA context unusable "
                    "(restart the process; device='cpu' still works). The fault: " + g_fault_reason);
}

// The launches of the current call not yet known to have completed: the one that faulted is among them.
struct LaunchLog {
  struct Rec {
    int64_t id;
    std::string what;
  };
  std::deque<Rec> inflight;
  int64_t next = 1;
  int64_t launched(std::string what) {
    inflight.push_back(Rec{next, std::move(what)});
    return next++;
  }
  void completed_through(int64_t id) {
    while (!inflight.empty() && inflight.front().id <= id) inflight.pop_front();
  }
};
thread_local LaunchLog* t_log = nullptr;

// Installs a launch log for one backend call on this thread.
class LogScope {
 public:
  LogScope() : prev_(t_log) { t_log = &log_; }
  ~LogScope() { t_log = prev_; }

 private:
  LaunchLog log_;
  LaunchLog* prev_;
};

// Whether to synchronize after every launch (NTKFAST_CUDA_SYNC=1): pins a fault on its launch exactly.
bool sync_each_launch() {
  static const bool on = [] {
    const char* v = std::getenv("NTKFAST_CUDA_SYNC");
    return v && std::string(v) == "1";
  }();
  return on;
}

[[noreturn]] void fail(cudaError_t e, const char* expr, const char* file, int line) {
  const std::string where = std::string(expr) + " at " + file + ":" + std::to_string(line);
  const std::string err = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  if (is_fault(e)) {
    std::string msg = "CUDA kernel fault (" + err + "), surfaced at " + where + "; ";
    if (t_log && !t_log->inflight.empty()) {
      msg += "caused by " + t_log->inflight.front().what;
      if (t_log->inflight.size() > 1)
        msg += " (or one of the " + std::to_string(t_log->inflight.size() - 1) + " launches after it: the last is " +
               t_log->inflight.back().what + "; NTKFAST_CUDA_SYNC=1 synchronizes after every launch to pin it)";
    } else {
      msg += "no launch of this call was in flight: an earlier kernel of this process (ntkfast's or another "
             "library's) faulted";
    }
    {
      std::lock_guard<std::mutex> lk(g_fault_mu);
      if (!g_faulted.load(std::memory_order_relaxed)) g_fault_reason = msg;
      g_faulted.store(true, std::memory_order_release);
    }
    throw KernelFault(msg + ". The CUDA context of this process is unusable: further GPU work is refused.");
  }
  cudaGetLastError();  // clear a non-sticky error (e.g. a failed cudaMalloc) so later checks do not see it
  throw CudaError(e, "CUDA error in " + where + ": " + err);
}

// Every CUDA API call and every kernel launch (launch_kernel returns cudaGetLastError) goes through this.
#define NTKFAST_CUDA_CHECK(expr)                                                \
  do {                                                                          \
    const cudaError_t ntkfast_e_ = (expr);                                      \
    if (ntkfast_e_ != cudaSuccess) fail(ntkfast_e_, #expr, __FILE__, __LINE__); \
  } while (0)

bool is_oom(const CudaError& e) { return e.code() == cudaErrorMemoryAllocation; }

// An out-of-memory that no retry absorbed (e.g. the program itself does not fit) leaves as DeviceOutOfMemory.
template <class F>
void oom_as_memory_error(F&& f) {
  try {
    f();
  } catch (const CudaError& e) {
    if (!is_oom(e)) throw;
    throw DeviceOutOfMemory(std::string(e.what()) + " (device memory too small for this call; free some, or use "
                            "device='cpu')");
  }
}

// ---- RAII ------------------------------------------------------------------------------------------------

// Owning device buffer; freed on every path out, exceptions included.
template <class T>
class DevBuf {
 public:
  DevBuf() = default;
  explicit DevBuf(size_t n) : n_(n) {
    if (n) NTKFAST_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)));
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p_(o.p_), n_(o.n_) {
    o.p_ = nullptr;
    o.n_ = 0;
  }
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~DevBuf() {
    if (p_) cudaFree(p_);
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// A stream that drains before it is destroyed: copies into host arrays must land before the arrays (or the
// device buffers) can go away, exceptions included.
class Stream {
 public:
  Stream() { NTKFAST_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() {
    if (!s_) return;
    cudaStreamSynchronize(s_);
    cudaStreamDestroy(s_);
  }
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class Event {
 public:
  Event() { NTKFAST_CUDA_CHECK(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming)); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// Makes `dev` current for a scope and restores the caller's device (cupy and friends keep theirs).
class DeviceGuard {
 public:
  explicit DeviceGuard(int dev) : dev_(dev) {
    NTKFAST_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != dev_) NTKFAST_CUDA_CHECK(cudaSetDevice(dev_));
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  ~DeviceGuard() {
    if (prev_ != dev_) cudaSetDevice(prev_);
  }

 private:
  int dev_, prev_ = 0;
};

// Copies on the stream that then runs the kernels: a pageable host-to-device copy may return before its
// DMA lands, and a non-blocking stream would not wait for it.
template <class T>
DevBuf<T> upload(const T* src, size_t n, cudaStream_t stream) {
  DevBuf<T> b(n);
  if (n) NTKFAST_CUDA_CHECK(cudaMemcpyAsync(b.get(), src, n * sizeof(T), cudaMemcpyHostToDevice, stream));
  return b;
}

// ---- devices ---------------------------------------------------------------------------------------------

int device_count() {
  int n = 0;
  NTKFAST_CUDA_CHECK(cudaGetDeviceCount(&n));
  return n;
}

// What one device offers this build's kernels, probed once per process: whether the kernels have an image
// it can run (its compute capability against the build's SASS/PTX), and the dynamic shared memory they are
// allowed there, set once (cudaFuncSetAttribute is per device; setting it before every launch raced
// between host threads).
struct DeviceInfo {
  bool usable = false;
  std::string reason;  // why not
  std::string name;
  int cc = 0, sms = 0;
  size_t max_smem = 0;  // dynamic shared memory per block the kernels may use
};

std::mutex g_dev_mu;
std::map<int, DeviceInfo> g_devices;

template <class T>
bool probe_kernel(int dev, DeviceInfo& d, int optin) {
  cudaFuncAttributes attr;
  const cudaError_t e = cudaFuncGetAttributes(&attr, kernel_symbol<T>());
  if (e != cudaSuccess) {
    if (is_fault(e)) fail(e, "cudaFuncGetAttributes(gram_kernel)", __FILE__, __LINE__);
    cudaGetLastError();
    d.reason = "this build's CUDA kernels cannot run on device " + std::to_string(dev) + " (" + d.name + ", sm_" +
               std::to_string(d.cc) + "): " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) +
               "; rebuild for its architecture (NTKFAST_CUDA_ARCHITECTURES=" + std::to_string(d.cc) +
               "-real) or use device='cpu'";
    return false;
  }
  const size_t allowed = static_cast<size_t>(optin) > attr.sharedSizeBytes ? optin - attr.sharedSizeBytes : 0;
  NTKFAST_CUDA_CHECK(cudaFuncSetAttribute(kernel_symbol<T>(), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(allowed)));
  d.max_smem = d.max_smem ? std::min(d.max_smem, allowed) : allowed;
  return true;
}

// The probed device (once; later calls only read). Throws for an index out of range.
const DeviceInfo& device_info(int dev) {
  const int n = device_count();
  if (dev < 0 || dev >= n)
    throw std::invalid_argument("CUDA device index " + std::to_string(dev) + " out of range: " + std::to_string(n) +
                                " device(s) visible");
  std::lock_guard<std::mutex> lk(g_dev_mu);
  auto it = g_devices.find(dev);
  if (it != g_devices.end()) return it->second;
  DeviceInfo d;
  DeviceGuard guard(dev);
  cudaDeviceProp p;
  NTKFAST_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  d.name = p.name;
  d.cc = p.major * 10 + p.minor;
  int optin = 0;
  NTKFAST_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
  NTKFAST_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  d.usable = probe_kernel<float>(dev, d, optin) && probe_kernel<double>(dev, d, optin);
  return g_devices.emplace(dev, d).first->second;
}

// The device of a call, checked usable; throws with the reason otherwise.
const DeviceInfo& usable_device(int dev) {
  refuse_if_faulted();
  const DeviceInfo& d = device_info(dev);
  if (!d.usable) throw std::runtime_error("device='cuda': " + d.reason);
  return d;
}

// ---- launch geometry -------------------------------------------------------------------------------------

std::atomic<int64_t> g_band_pairs{0}, g_max_teams{0};

// Launch geometry of one call: warps per block, blocks, shared memory and scratch per warp.
struct Geometry {
  int warps = 1, blocks = 1;
  size_t smem = 0;
  int64_t scratch_per_warp = 0, store = 0;
  int64_t teams() const { return static_cast<int64_t>(warps) * blocks; }
};

// At most max_teams resident teams (the out-of-memory retries lower it), at most n_items.
template <class T>
Geometry plan_launch(const DeviceInfo& dev, const ProgView<T>& meta, int mode, int64_t n_items, int64_t max_teams) {
  Geometry g;
  // Per warp: the S and T planes of every register (stream) of the spatial part and one temp.
  const size_t per_warp = static_cast<size_t>(team_entries(meta)) * sizeof(T);
  if (per_warp > dev.max_smem)
    throw std::runtime_error("CUDA backend: one offset plane of this program (" + std::to_string(meta.NR) +
                             " stream(s) alive at once) needs " + std::to_string(per_warp) +
                             " bytes of shared memory per warp, device " + dev.name + " allows " +
                             std::to_string(dev.max_smem) + " per block; use device='cpu' (or float32) for inputs "
                             "this large");
  const int64_t cap = std::max<int64_t>(1, std::min(max_teams, std::max<int64_t>(n_items, 1)));
  g.warps = static_cast<int>(std::min<int64_t>({kMaxWarps, static_cast<int64_t>(dev.max_smem / per_warp), cap}));
  g.smem = per_warp * g.warps;
  int per_sm = 0;
  NTKFAST_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel_symbol<T>(), g.warps * 32, g.smem));
  if (per_sm < 1) throw std::runtime_error("CUDA backend: the Gram kernel cannot be resident on device " + dev.name);
  int64_t blocks = static_cast<int64_t>(per_sm) * dev.sms;
  g.store = meta.store[mode];
  g.scratch_per_warp = 4 * g.store;  // this stage's planes and the next stage's, S and T
  if (g.scratch_per_warp > 0) {
    // Pooled stores live in global memory, one per resident warp: keep them within a quarter of what is free.
    size_t free_b = 0, total_b = 0;
    NTKFAST_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const int64_t per_block = g.scratch_per_warp * static_cast<int64_t>(sizeof(T)) * g.warps;
    blocks = std::min<int64_t>(blocks, std::max<int64_t>(1, static_cast<int64_t>(free_b / 4) / per_block));
  }
  blocks = std::min<int64_t>(blocks, (cap + g.warps - 1) / g.warps);
  g.blocks = static_cast<int>(std::max<int64_t>(1, blocks));
  return g;
}

int64_t teams_cap() {
  const int64_t t = g_max_teams.load(std::memory_order_relaxed);
  return t > 0 ? t : INT64_MAX;
}

template <class T>
void launch(const Geometry& g, const ProgView<T>& view, const LaunchArgs<T>& a, cudaStream_t stream, int dev,
            const std::string& what) {
  if (a.q1 <= a.q0) return;
  const int64_t id = t_log ? t_log->launched("launch #" + std::to_string(t_log->next) + " of gram_kernel<" +
                                             type_name<T>() + "> on device " + std::to_string(dev) + " (" +
                                             std::to_string(g.blocks) + " blocks x " + std::to_string(g.warps * 32) +
                                             " threads, " + std::to_string(g.smem) + " B shared; " + what + ")")
                           : 0;
  NTKFAST_CUDA_CHECK(launch_kernel<T>(g.blocks, g.warps * 32, g.smem, stream, view, a));
  if (sync_each_launch()) {
    NTKFAST_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (t_log) t_log->completed_through(id);
  }
}

// What an out-of-memory retry may lower: resident teams (their pooled-store scratch), rows per band (the
// device output buffers), and, for inputs that stream per tile, the tile itself (split in halves by the
// caller). The largest consumer that can still shrink goes first.
struct Shrink {
  int64_t max_teams = INT64_MAX;
  int64_t band_pairs = INT64_MAX;
};

enum class Retry { Teams, Band, Split, None };

Retry choose_retry(Shrink& s, const Geometry& g, int64_t scratch_bytes, int64_t band_bytes, int64_t band_pairs,
                   int64_t input_bytes, bool can_split) {
  const bool teams = g.teams() > 1, band = band_pairs > 1;
  const int64_t sb = teams ? scratch_bytes : -1, bb = band ? band_bytes : -1, ib = can_split ? input_bytes : -1;
  if (ib >= 0 && ib >= sb && ib >= bb) return Retry::Split;
  if (sb >= 0 && sb >= bb) {
    s.max_teams = std::max<int64_t>(1, g.teams() / 2);
    return Retry::Teams;
  }
  if (bb >= 0) {
    s.band_pairs = std::max<int64_t>(1, band_pairs / 2);
    return Retry::Band;
  }
  return Retry::None;
}

// ---- runs over items (images, pairs) in chunks ----------------------------------------------------------

// The launch arguments every run shares: an nx x ny grid of items of this geometry, with its scratch.
template <class T>
LaunchArgs<T> grid_args(const Geometry& g, T* scratch, int64_t nx, int64_t ny, int64_t isz, int64_t ssz) {
  LaunchArgs<T> a{};
  a.nx = nx;
  a.ny = ny;
  a.isz = isz;
  a.ssz = ssz;
  a.scratch = scratch;
  a.scratch_per_warp = g.scratch_per_warp;
  a.store = g.store;
  return a;
}

// n independent items (a self-data image, a pair) in chunks sized for the device: the program uploaded once,
// a chunk shrunk (fewer warps, then fewer items) when the device runs out of memory, progress and
// cancellation between chunks. `body(g, grid, done, chunk, cs, go)` uploads `chunk` items from `done` on,
// allocates the scratch, sets the shared launch arguments with `grid(a, scratch)` and its own, launches with
// `go(a)` and copies the results back; `item_bytes` is the device memory one item needs; `label` names the
// items of a launch (in fault messages), `one` one item (in out-of-memory messages).
template <class T, class Body>
void run_chunks(const DeviceInfo& dev, int device, const ProgBlob<T>& blob, const Program& P, int kind, int64_t n,
                int64_t item_bytes, const char* label, const char* one, const RunOptions& opt, Body body) {
  Stream stream;
  const cudaStream_t cs = stream.get();
  DevBuf<unsigned char> prog = upload(blob.bytes().data(), blob.bytes().size(), cs);
  const ProgView<T> view = blob.view(prog.get());
  Shrink lim;
  lim.max_teams = teams_cap();
  int64_t done = 0;
  while (done < n) {
    const Geometry g = plan_launch(dev, blob.meta(), kind, n - done, lim.max_teams);
    const int64_t tuned = g_band_pairs.load(std::memory_order_relaxed);
    const int64_t chunk = std::min<int64_t>(
        {n - done, lim.band_pairs, tuned > 0 ? tuned : std::max<int64_t>(g.teams() * 16, 4096)});
    try {
      auto grid = [&](LaunchArgs<T>& a, DevBuf<T>& scratch) {
        a = grid_args(g, scratch.get(), chunk, chunk, P.input_size(), P.self_size);
        a.q0 = 0;
        a.q1 = chunk;
      };
      body(g, grid, done, chunk, cs, [&](const LaunchArgs<T>& a) {
        launch(g, view, a, cs, device,
               std::string(label) + " [" + std::to_string(done) + ", " + std::to_string(done + chunk) + ")");
      });
      NTKFAST_CUDA_CHECK(cudaStreamSynchronize(cs));
      if (t_log) t_log->completed_through(t_log->next - 1);
    } catch (const CudaError& e) {
      if (!is_oom(e)) throw;
      const int64_t scratch_b = g.scratch_per_warp * g.teams() * static_cast<int64_t>(sizeof(T));
      if (choose_retry(lim, g, scratch_b, chunk * item_bytes, chunk, 0, false) == Retry::None)
        throw DeviceOutOfMemory(std::string("CUDA backend: out of device memory for ") + one + " with one warp (" +
                                e.what() + ")");
      continue;
    }
    done += chunk;
    add_progress(opt, chunk);
    if (done < n && cancelled(opt)) throw Cancelled();
  }
}

template <class T>
void self_data_run(const DeviceInfo& dev, int device, const ProgBlob<T>& blob, const Program& P, const T* X, int64_t n,
                   T* out, const RunOptions& opt) {
  const int64_t isz = P.input_size(), ssz = P.self_size;
  const int64_t item_bytes = (isz + ssz) * static_cast<int64_t>(sizeof(T));
  run_chunks<T>(dev, device, blob, P, kSelf, n, item_bytes, "self data of images", "the self data of one image", opt,
                [&](const Geometry& g, auto& grid, int64_t done, int64_t chunk, cudaStream_t cs, auto go) {
                  DevBuf<T> dx = upload(X + done * isz, static_cast<size_t>(chunk * isz), cs);
                  DevBuf<T> dout(static_cast<size_t>(chunk * ssz));
                  DevBuf<T> scratch(static_cast<size_t>(g.scratch_per_warp * g.teams()));
                  LaunchArgs<T> a;
                  grid(a, scratch);
                  a.X = dx.get();
                  a.self_out = dout.get();
                  a.self = 1;
                  go(a);
                  NTKFAST_CUDA_CHECK(cudaMemcpyAsync(out + done * ssz, dout.get(),
                                                     static_cast<size_t>(chunk * ssz) * sizeof(T),
                                                     cudaMemcpyDeviceToHost, cs));
                  NTKFAST_CUDA_CHECK(cudaStreamSynchronize(cs));   // before the buffers go
                });
}

// ---- pairs (X[i], Y[i]) ----------------------------------------------------------------------------------

template <class T>
void pairs_run(const DeviceInfo& dev, int device, const ProgBlob<T>& blob, const Program& P, const PairArgs<T>& p,
               const RunOptions& opt) {
  const int64_t isz = P.input_size(), ssz = P.self_size;
  const bool same = p.Y == p.X;
  const int64_t item_bytes = 2 * (isz + ssz + 2) * static_cast<int64_t>(sizeof(T));
  run_chunks<T>(dev, device, blob, P, kPair, p.n, item_bytes, "pairs", "one pair", opt,
                [&](const Geometry& g, auto& grid, int64_t done, int64_t chunk, cudaStream_t cs, auto go) {
                  DevBuf<T> dx = upload(p.X + done * isz, static_cast<size_t>(chunk * isz), cs);
                  DevBuf<T> dsx = upload(p.self_x + done * ssz, static_cast<size_t>(chunk * ssz), cs);
                  DevBuf<T> dy = same ? DevBuf<T>() : upload(p.Y + done * isz, static_cast<size_t>(chunk * isz), cs);
                  DevBuf<T> dsy =
                      same ? DevBuf<T>() : upload(p.self_y + done * ssz, static_cast<size_t>(chunk * ssz), cs);
                  DevBuf<T> ds(p.nngp ? static_cast<size_t>(chunk) : 0), dt(p.ntk ? static_cast<size_t>(chunk) : 0);
                  DevBuf<T> scratch(static_cast<size_t>(g.scratch_per_warp * g.teams()));
                  LaunchArgs<T> a;
                  grid(a, scratch);
                  a.X = dx.get();
                  a.Y = same ? dx.get() : dy.get();
                  a.SX = dsx.get();
                  a.SY = same ? dsx.get() : dsy.get();
                  a.out_s = ds.get();
                  a.out_t = dt.get();
                  a.paired = 1;
                  go(a);
                  T* const host[2] = {p.nngp, p.ntk};
                  const DevBuf<T>* const dev_out[2] = {&ds, &dt};
                  for (int k = 0; k < 2; ++k)
                    if (host[k])
                      NTKFAST_CUDA_CHECK(cudaMemcpyAsync(host[k] + done, dev_out[k]->get(),
                                                         static_cast<size_t>(chunk) * sizeof(T),
                                                         cudaMemcpyDeviceToHost, cs));
                  NTKFAST_CUDA_CHECK(cudaStreamSynchronize(cs));   // before the buffers go
                });
}

// ---- tiles -----------------------------------------------------------------------------------------------

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
TileOut<T> shift(TileOut<T> t, int64_t di, int64_t dj) {
  if (t.s) t.s += di * t.ld + dj;
  if (t.t) t.t += di * t.ld + dj;
  return t;
}

}  // namespace

// ---- session ---------------------------------------------------------------------------------------------

template <class T>
struct Session<T>::Impl {
  ProgBlob<T> blob;
  int device;
  const DeviceInfo& dev;
  const T *X, *Y, *SX, *SY;  // host
  int64_t nx, ny;
  bool has_y;
  int64_t isz, ssz;
  DevBuf<unsigned char> prog;
  ProgView<T> view;
  DevBuf<T> dX, dY, dSX, dSY;  // resident inputs (empty when streaming)
  bool streaming = false;
  Shrink lim;
  int64_t last_teams = 0;
  std::mutex mu;  // one tile at a time (Python releases the GIL around tile())

  Impl(const Program& P_, const T* X_, int64_t nx_, const T* Y_, int64_t ny_, const T* sx, const T* sy, int device_)
      : blob(P_), device(device_), dev(usable_device(device_)), X(X_), Y(Y_), SX(sx), SY(sy), nx(nx_),
        ny(Y_ ? ny_ : nx_), has_y(Y_ != nullptr), isz(P_.input_size()), ssz(P_.self_size) {
    lim.max_teams = teams_cap();
    DeviceGuard guard(device);
    Stream up;
    prog = upload(blob.bytes().data(), blob.bytes().size(), up.get());
    view = blob.view(prog.get());
    try {
      dX = upload(X, static_cast<size_t>(nx * isz), up.get());
      dSX = upload(SX, static_cast<size_t>(nx * ssz), up.get());
      if (has_y) {
        dY = upload(Y, static_cast<size_t>(ny * isz), up.get());
        dSY = upload(SY, static_cast<size_t>(ny * ssz), up.get());
      }
      NTKFAST_CUDA_CHECK(cudaStreamSynchronize(up.get()));
    } catch (const CudaError& e) {
      if (!is_oom(e)) throw;
      NTKFAST_CUDA_CHECK(cudaStreamSynchronize(up.get()));
      dX = DevBuf<T>();
      dY = DevBuf<T>();
      dSX = DevBuf<T>();
      dSY = DevBuf<T>();
      streaming = true;  // the inputs do not fit: each tile uploads its own rows and columns
    }
  }

  // Tile rows [i0, i1) x columns [j0, j1); symmetric: the Gram of X on its diagonal (upper triangle).
  void tile(int64_t i0, int64_t i1, int64_t j0, int64_t j1, bool sym, TileOut<T> o, const RunOptions& opt) {
    for (;;) {
      Geometry g;
      int64_t band_bytes = 0, band_pairs = 0;
      try {
        run(i0, i1, j0, j1, sym, o, opt, g, band_bytes, band_pairs);
        return;
      } catch (const CudaError& e) {
        if (!is_oom(e)) throw;
        const int64_t scratch_b = g.scratch_per_warp * g.teams() * static_cast<int64_t>(sizeof(T));
        const int64_t rows = (i1 - i0) + (sym ? 0 : j1 - j0);
        const int64_t input_b = streaming ? rows * (isz + ssz) * static_cast<int64_t>(sizeof(T)) : 0;
        const bool can_split = streaming && (i1 - i0 > 1 || j1 - j0 > 1);
        switch (choose_retry(lim, g, scratch_b, band_bytes, band_pairs, input_b, can_split)) {
          case Retry::Teams:
          case Retry::Band:
            continue;
          case Retry::Split:
            return split(i0, i1, j0, j1, sym, o, opt);
          case Retry::None:
            break;
        }
        throw DeviceOutOfMemory("CUDA backend: out of device memory with one resident warp and one row per band (" +
                                std::string(e.what()) + "); free device memory or use device='cpu'");
      }
    }
  }

  // Streaming inputs: the same tile as sub-tiles of about half the pairs each (each uploads less).
  void split(int64_t i0, int64_t i1, int64_t j0, int64_t j1, bool sym, TileOut<T> o, const RunOptions& opt) {
    if (sym) {
      const int64_t h = i0 + (i1 - i0) / 2;
      tile(i0, h, i0, h, true, o, opt);
      tile(i0, h, h, i1, false, shift(o, 0, h - i0), opt);
      T* const outs[2] = {o.s, o.t};
      for (T* p : outs) {
        if (!p) continue;
        for (int64_t i = 0; i < h - i0; ++i)
          for (int64_t j = h - i0; j < i1 - i0; ++j) p[j * o.ld + i] = p[i * o.ld + j];
      }
      tile(h, i1, h, i1, true, shift(o, h - i0, h - i0), opt);
    } else if (i1 - i0 >= j1 - j0) {
      const int64_t h = i0 + (i1 - i0) / 2;
      tile(i0, h, j0, j1, false, o, opt);
      tile(h, i1, j0, j1, false, shift(o, h - i0, 0), opt);
    } else {
      const int64_t h = j0 + (j1 - j0) / 2;
      tile(i0, i1, j0, h, false, o, opt);
      tile(i0, i1, h, j1, false, shift(o, 0, h - j0), opt);
    }
  }

  // One attempt at a tile: bands of rows, band k computing while band k - 1 goes back to the host; output
  // buffers alternate between two band slots. g, band_bytes and band_pairs report what was tried.
  void run(int64_t i0, int64_t i1, int64_t j0, int64_t j1, bool sym, TileOut<T> o, const RunOptions& opt, Geometry& g,
           int64_t& band_bytes, int64_t& band_pairs) {
    const int64_t tx = i1 - i0, ty = j1 - j0;
    const int64_t n_pairs = sym ? tx * (tx + 1) / 2 : tx * ty;
    g = plan_launch(dev, blob.meta(), kPair, n_pairs, lim.max_teams);
    last_teams = g.teams();
    const int64_t tuned = g_band_pairs.load(std::memory_order_relaxed);
    band_pairs = std::min(lim.band_pairs, tuned > 0 ? tuned : std::max<int64_t>(g.teams() * 16, int64_t(1) << 16));
    std::vector<std::pair<int64_t, int64_t>> bands;  // tile rows [r0, r1)
    int64_t max_rows = 1;
    for (int64_t r0 = 0; r0 < tx;) {
      int64_t r1 = r0, cnt = 0;
      for (; r1 < tx && (cnt == 0 || cnt + (sym ? tx - r1 : ty) <= band_pairs); ++r1) cnt += sym ? tx - r1 : ty;
      bands.emplace_back(r0, r1);
      max_rows = std::max(max_rows, r1 - r0);
      r0 = r1;
    }
    const int kinds = (o.s ? 1 : 0) + (o.t ? 1 : 0);
    band_bytes = 2 * kinds * max_rows * ty * static_cast<int64_t>(sizeof(T));

    Stream compute, copy;
    const cudaStream_t cs = compute.get();
    // Inputs: resident for the session, or this tile's rows and columns.
    DevBuf<T> tX, tY, tSX, tSY;
    const T *dx, *dy, *dsx, *dsy;
    if (streaming) {
      tX = upload(X + i0 * isz, static_cast<size_t>(tx * isz), cs);
      tSX = upload(SX + i0 * ssz, static_cast<size_t>(tx * ssz), cs);
      if (sym) {
        dy = tX.get();
        dsy = tSX.get();
      } else {
        const T* yh = has_y ? Y : X;
        const T* syh = has_y ? SY : SX;
        tY = upload(yh + j0 * isz, static_cast<size_t>(ty * isz), cs);
        tSY = upload(syh + j0 * ssz, static_cast<size_t>(ty * ssz), cs);
        dy = tY.get();
        dsy = tSY.get();
      }
      dx = tX.get();
      dsx = tSX.get();
    } else {
      dx = dX.get() + i0 * isz;
      dsx = dSX.get() + i0 * ssz;
      dy = (has_y ? dY.get() : dX.get()) + j0 * isz;
      dsy = (has_y ? dSY.get() : dSX.get()) + j0 * ssz;
    }
    DevBuf<T> scratch(static_cast<size_t>(g.scratch_per_warp * g.teams()));
    DevBuf<T> slot_s[2], slot_t[2];
    for (int k = 0; k < 2 && k < static_cast<int>(bands.size()); ++k) {
      if (o.s) slot_s[k] = DevBuf<T>(static_cast<size_t>(max_rows * ty));
      if (o.t) slot_t[k] = DevBuf<T>(static_cast<size_t>(max_rows * ty));
    }

    LaunchArgs<T> a = grid_args(g, scratch.get(), tx, ty, isz, ssz);
    a.X = dx;
    a.Y = dy;
    a.SX = dsx;
    a.SY = dsy;
    a.symmetric = sym ? 1 : 0;

    std::vector<Event> computed(bands.size()), copied(bands.size());
    std::vector<int64_t> launch_id(bands.size(), 0);
    auto pairs_of = [&](size_t k) {
      const int64_t r0 = bands[k].first, r1 = bands[k].second;
      return sym ? tri_start(r1, tx) - tri_start(r0, tx) : (r1 - r0) * ty;
    };
    // Band k back to the host on the copy stream (after its kernel), then wait for it: band k + 1 is running.
    auto finish_band = [&](size_t k) {
      const int64_t r0 = bands[k].first, rows = bands[k].second - r0;
      NTKFAST_CUDA_CHECK(cudaStreamWaitEvent(copy.get(), computed[k].get(), 0));
      const std::pair<T*, T*> host_dev[2] = {{o.s, slot_s[k % 2].get()}, {o.t, slot_t[k % 2].get()}};
      for (const std::pair<T*, T*>& hd : host_dev) {
        if (!hd.first) continue;
        NTKFAST_CUDA_CHECK(cudaMemcpy2DAsync(hd.first + r0 * o.ld, o.ld * sizeof(T), hd.second, ty * sizeof(T),
                                             ty * sizeof(T), rows, cudaMemcpyDeviceToHost, copy.get()));
      }
      NTKFAST_CUDA_CHECK(cudaEventRecord(copied[k].get(), copy.get()));
      NTKFAST_CUDA_CHECK(cudaEventSynchronize(copied[k].get()));
      if (t_log) t_log->completed_through(launch_id[k]);
      add_progress(opt, pairs_of(k));
    };
    for (size_t k = 0; k < bands.size(); ++k) {
      if (cancelled(opt)) {
        NTKFAST_CUDA_CHECK(cudaStreamSynchronize(cs));  // nothing may still write into host arrays
        NTKFAST_CUDA_CHECK(cudaStreamSynchronize(copy.get()));
        throw Cancelled();
      }
      if (k >= 2) NTKFAST_CUDA_CHECK(cudaStreamWaitEvent(cs, copied[k - 2].get(), 0));  // its slot is free again
      const int64_t r0 = bands[k].first, r1 = bands[k].second;
      a.q0 = sym ? tri_start(r0, tx) : r0 * ty;
      a.q1 = sym ? tri_start(r1, tx) : r1 * ty;
      a.row0 = r0;
      a.out_s = slot_s[k % 2].get();
      a.out_t = slot_t[k % 2].get();
      launch(g, view, a, cs, device,
             "band " + std::to_string(k + 1) + "/" + std::to_string(bands.size()) + ": pairs [" + std::to_string(a.q0) +
                 ", " + std::to_string(a.q1) + ") of tile rows [" + std::to_string(i0) + ", " + std::to_string(i1) +
                 ") x columns [" + std::to_string(j0) + ", " + std::to_string(j1) + ")" + (sym ? ", symmetric" : ""));
      launch_id[k] = t_log ? t_log->next - 1 : 0;
      NTKFAST_CUDA_CHECK(cudaEventRecord(computed[k].get(), cs));
      if (k > 0) finish_band(k - 1);
    }
    finish_band(bands.size() - 1);
    if (sym) mirror_host(o, tx);
  }
};

template <class T>
Session<T>::Session(const Program& P, const T* X, int64_t nx, const T* Y, int64_t ny, const T* self_x,
                    const T* self_y, const RunOptions& opt) {
  if (nx < 0 || ny < 0) throw std::invalid_argument("CUDA session: negative row count");
  if ((nx > 0 && !X) || (Y && ny > 0 && !Y) || (P.self_size > 0 && (!self_x || (Y && !self_y))))
    throw std::invalid_argument("CUDA session: inputs and their self data are required");
  LogScope scope;
  oom_as_memory_error([&] { impl_ = std::make_unique<Impl>(P, X, nx, Y, ny, self_x, self_y, opt.device); });
}

template <class T>
Session<T>::~Session() {
  if (!impl_) return;
  try {
    DeviceGuard guard(impl_->device);
    impl_.reset();
  } catch (...) {  // the device is gone or faulted: freeing is all that is left to try
    impl_.reset();
  }
}

template <class T>
void Session<T>::tile(int64_t i0, int64_t i1, int64_t j0, int64_t j1, T* nngp, T* ntk, const RunOptions& opt) {
  Impl& s = *impl_;
  if (i0 < 0 || i1 < i0 || i1 > s.nx || j0 < 0 || j1 < j0 || j1 > s.ny)
    throw std::invalid_argument("CUDA session: tile [" + std::to_string(i0) + ", " + std::to_string(i1) + ") x [" +
                                std::to_string(j0) + ", " + std::to_string(j1) + ") outside the " +
                                std::to_string(s.nx) + " x " + std::to_string(s.ny) + " Gram");
  if (opt.device != s.device)
    throw std::invalid_argument("CUDA session: opened on device " + std::to_string(s.device) + ", tile asked on " +
                                std::to_string(opt.device));
  refuse_if_faulted();
  if (i1 == i0 || j1 == j0 || (!nngp && !ntk)) return;
  std::lock_guard<std::mutex> lk(s.mu);
  LogScope scope;
  DeviceGuard guard(s.device);
  const bool sym = !s.has_y && i0 == j0 && i1 == j1;
  oom_as_memory_error([&] { s.tile(i0, i1, j0, j1, sym, TileOut<T>{nngp, ntk, j1 - j0}, opt); });
}

template <class T>
int64_t Session<T>::resident_teams() const {
  return impl_->last_teams;
}

template <class T>
bool Session<T>::streaming_inputs() const {
  return impl_->streaming;
}

void set_tuning(const Tuning& t) {
  g_band_pairs.store(t.band_pairs, std::memory_order_relaxed);
  g_max_teams.store(t.max_teams, std::memory_order_relaxed);
}

CudaStatus status() {
  CudaStatus s;
  if (g_faulted.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lk(g_fault_mu);
    s.reason = "refused after a CUDA kernel fault in this process: " + g_fault_reason;
    return s;
  }
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    s.reason = std::string("no usable CUDA device: ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e);
    cudaGetLastError();  // clear the error state of the runtime
    return s;
  }
  s.device_count = n;
  if (n == 0) {
    s.reason = "no CUDA device found";
    return s;
  }
  for (int i = 0; i < n; ++i) {
    std::string name, why;
    int cc = 0;
    bool ok = false;
    try {
      const DeviceInfo& d = device_info(i);
      name = d.name;
      cc = d.cc;
      ok = d.usable;
      why = d.reason;
    } catch (const std::exception& ex) {
      why = std::string("device ") + std::to_string(i) + ": " + ex.what();
    }
    s.names.push_back(name);
    s.compute_capability.push_back(cc);
    s.device_usable.push_back(ok);
    s.device_reason.push_back(why);
    s.usable = s.usable || ok;
  }
  if (!s.usable) s.reason = s.device_reason.empty() ? "no usable CUDA device" : s.device_reason.front();
  return s;
}

template <class T>
void self_data(const Program& P, const T* X, int64_t n, T* out, const RunOptions& opt) {
  if (n <= 0 || P.self_size == 0) return;  // nothing recorded: no ReLU in this program
  const DeviceInfo& dev = usable_device(opt.device);
  const ProgBlob<T> blob(P);
  LogScope scope;
  DeviceGuard guard(opt.device);
  oom_as_memory_error([&] { self_data_run(dev, opt.device, blob, P, X, n, out, opt); });
}

template <class T>
void gram_tile(const Program& P, const TileArgs<T>& a, const RunOptions& opt) {
  if (a.symmetric && a.nx != a.ny) throw std::invalid_argument("symmetric tile must be square");
  if (a.nx <= 0 || a.ny <= 0 || (!a.nngp && !a.ntk)) return;
  Session<T> s(P, a.X, a.nx, a.symmetric ? nullptr : a.Y, a.ny, a.self_x, a.symmetric ? nullptr : a.self_y, opt);
  s.tile(0, a.nx, 0, a.ny, a.nngp, a.ntk, opt);
}

template <class T>
void gram_pairs(const Program& P, const PairArgs<T>& a, const RunOptions& opt) {
  if (a.n <= 0 || (!a.nngp && !a.ntk)) return;
  const DeviceInfo& dev = usable_device(opt.device);
  const ProgBlob<T> blob(P);
  LogScope scope;
  DeviceGuard guard(opt.device);
  oom_as_memory_error([&] { pairs_run(dev, opt.device, blob, P, a, opt); });
}

template class Session<float>;
template class Session<double>;
template void gram_pairs<float>(const Program&, const PairArgs<float>&, const RunOptions&);
template void gram_pairs<double>(const Program&, const PairArgs<double>&, const RunOptions&);
template void self_data<float>(const Program&, const float*, int64_t, float*, const RunOptions&);
template void self_data<double>(const Program&, const double*, int64_t, double*, const RunOptions&);
template void gram_tile<float>(const Program&, const TileArgs<float>&, const RunOptions&);
template void gram_tile<double>(const Program&, const TileArgs<double>&, const RunOptions&);

}  // namespace cuda
}  // namespace ntkfast
