// The stand-in CUDA runtime (see cuda_runtime.h for the semantics it models).
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <set>
#include <stdexcept>

#include "cuda_runtime.h"

struct StandInStream {
  int device;
  std::deque<std::function<void()>> ops;
  int64_t enqueued = 0, done = 0;
};

struct StandInEvent {
  StandInStream* stream = nullptr;
  int64_t pos = 0;
};

namespace {

struct Alloc {
  size_t size;
  int device;
};

// One lock for the whole runtime; recursive because running a stream's work may wait on another stream.
std::recursive_mutex mu;
standin::Config cfg;
standin::Counters cnt;
std::map<const char*, Alloc, std::greater<const char*>> allocs;  // by base, descending: lower_bound finds the owner
std::set<StandInStream*> streams;
std::map<std::pair<const void*, int>, int> smem_attr;  // MaxDynamicSharedMemorySize per (kernel, device)
cudaError_t sticky = cudaSuccess;
int64_t launch_no = 0;
thread_local int current = 0;
thread_local cudaError_t last = cudaSuccess;

using Lock = std::lock_guard<std::recursive_mutex>;

cudaError_t fail(cudaError_t e) {
  last = e;
  return e;
}

int ndev() { return static_cast<int>(cfg.devices.size()); }

// Whether [p, p + n) lies inside one live allocation on `device`.
bool inside(const void* p, size_t n, int device) {
  const char* c = static_cast<const char*>(p);
  auto it = allocs.lower_bound(c);
  if (it == allocs.end()) return false;
  return it->second.device == device && c + n <= it->first + it->second.size;
}

// Runs s's work up to position `upto` (its count of enqueued operations).
void drain(StandInStream* s, int64_t upto) {
  while (s->done < upto && !s->ops.empty()) {
    std::function<void()> op = std::move(s->ops.front());
    s->ops.pop_front();
    ++s->done;
    --cnt.pending_ops;
    if (sticky == cudaSuccess) op();  // after a fault the context runs nothing
  }
}

void drain_all(int device) {
  for (StandInStream* s : streams)
    if (s->device == device) drain(s, s->enqueued);
}

void enqueue(StandInStream* s, std::function<void()> op) {
  s->ops.push_back(std::move(op));
  ++s->enqueued;
  ++cnt.pending_ops;
}

bool valid_stream(cudaStream_t s) { return s && streams.count(s); }

}  // namespace

namespace standin {
Config& config() { return cfg; }
Counters counters() {
  Lock lk(mu);
  return cnt;
}

cudaError_t launch(const void* func, int blocks, int threads, size_t smem, cudaStream_t s,
                   std::function<void(int, unsigned char*)> body) {
  Lock lk(mu);
  if (sticky) return fail(sticky);
  if (!valid_stream(s) || s->device != current) return fail(cudaErrorInvalidResourceHandle);
  if (!cfg.devices[current].kernel_image) return fail(cudaErrorNoKernelImageForDevice);
  if (blocks < 1 || threads < 1 || threads > 1024 || threads % 32) return fail(cudaErrorInvalidConfiguration);
  auto it = smem_attr.find({func, current});
  const size_t allowed = it == smem_attr.end() ? 48 * 1024 : static_cast<size_t>(it->second);
  if (smem > allowed) return fail(cudaErrorInvalidValue);
  const int64_t no = ++launch_no;
  ++cnt.launches;
  cnt.launch_log.push_back(LaunchRecord{func, current, blocks, threads, smem});
  enqueue(s, [no, blocks, smem, body = std::move(body)]() {
    if (cfg.fault_on_launch == no) {
      sticky = cudaErrorIllegalAddress;
      return;
    }
    for (int b = 0; b < blocks; ++b) {
      unsigned char* sm = static_cast<unsigned char*>(std::malloc(smem ? smem : 1));
      body(b, sm);
      std::free(sm);
    }
    if (cfg.after_launch) cfg.after_launch(no);
  });
  return cudaSuccess;
}
}  // namespace standin

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoKernelImageForDevice: return "cudaErrorNoKernelImageForDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchTimeout: return "cudaErrorLaunchTimeout";
    case cudaErrorAssert: return "cudaErrorAssert";
    case cudaErrorHardwareStackError: return "cudaErrorHardwareStackError";
    case cudaErrorIllegalInstruction: return "cudaErrorIllegalInstruction";
    case cudaErrorMisalignedAddress: return "cudaErrorMisalignedAddress";
    case cudaErrorInvalidAddressSpace: return "cudaErrorInvalidAddressSpace";
    case cudaErrorInvalidPc: return "cudaErrorInvalidPc";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorNoKernelImageForDevice: return "no kernel image is available for execution on the device";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    default: return "stand-in error";
  }
}

cudaError_t cudaGetLastError() {
  Lock lk(mu);
  if (sticky) return sticky;
  const cudaError_t e = last;
  last = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() {
  Lock lk(mu);
  return sticky ? sticky : last;
}

cudaError_t cudaGetDeviceCount(int* n) {
  Lock lk(mu);
  if (cfg.no_driver) return fail(cudaErrorInsufficientDriver);
  *n = ndev();
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* d) {
  Lock lk(mu);
  if (sticky) return fail(sticky);
  *d = current;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int d) {
  Lock lk(mu);
  if (sticky) return fail(sticky);
  if (d < 0 || d >= ndev()) return fail(cudaErrorInvalidDevice);
  current = d;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  Lock lk(mu);
  if (d < 0 || d >= ndev()) return fail(cudaErrorInvalidDevice);
  const standin::DeviceConfig& c = cfg.devices[d];
  std::memset(p, 0, sizeof(*p));
  std::strncpy(p->name, c.name.c_str(), sizeof(p->name) - 1);
  p->major = c.major;
  p->minor = c.minor;
  p->multiProcessorCount = c.sms;
  p->totalGlobalMem = static_cast<size_t>(c.memory);
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d) {
  Lock lk(mu);
  if (sticky) return fail(sticky);
  if (d < 0 || d >= ndev()) return fail(cudaErrorInvalidDevice);
  switch (a) {
    case cudaDevAttrMultiProcessorCount:
      *v = cfg.devices[d].sms;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *v = cfg.devices[d].optin_smem;
      return cudaSuccess;
  }
  return fail(cudaErrorInvalidValue);
}

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, const void* func) {
  Lock lk(mu);
  if (sticky) return fail(sticky);
  const standin::DeviceConfig& c = cfg.devices[current];
  if (!c.kernel_image) return fail(cudaErrorNoKernelImageForDevice);
  std::memset(a, 0, sizeof(*a));
  a->maxThreadsPerBlock = 1024;
  a->binaryVersion = a->ptxVersion = c.major * 10 + c.minor;
  auto it = smem_attr.find({func, current});
  a->maxDynamicSharedSizeBytes = it == smem_attr.end() ? 48 * 1024 : it->second;
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute a, int value) {
  Lock lk(mu);
  if (sticky) return fail(sticky);
  if (a != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > cfg.devices[current].optin_smem)
    return fail(cudaErrorInvalidValue);
  ++cnt.set_attribute[{func, current}];
  smem_attr[{func, current}] = value;
  return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, const void* func, int block, size_t smem) {
  Lock lk(mu);
  if (sticky) return fail(sticky);
  (void)func;
  if (block < 1 || block > 1024) return fail(cudaErrorInvalidValue);
  int by_threads = 2048 / block;
  int by_smem = smem ? static_cast<int>(cfg.devices[current].smem_per_sm / smem) : 32;
  *n = std::min(std::min(by_threads, by_smem), 32);
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t n) {
  Lock lk(mu);
  if (sticky) return fail(sticky);
  ++cnt.mallocs;
  int64_t& live = cnt.live_bytes[current];
  if (n == 0 || live + static_cast<int64_t>(n) > cfg.devices[current].memory) {
    ++cnt.failed_mallocs;
    return fail(n == 0 ? cudaErrorInvalidValue : cudaErrorMemoryAllocation);
  }
  char* c = static_cast<char*>(std::malloc(n));
  if (!c) return fail(cudaErrorMemoryAllocation);
  allocs[c] = Alloc{n, current};
  live += static_cast<int64_t>(n);
  cnt.peak_bytes[current] = std::max(cnt.peak_bytes[current], live);
  *p = c;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  Lock lk(mu);
  if (!p) return cudaSuccess;
  auto it = allocs.find(static_cast<char*>(p));
  if (it == allocs.end()) return fail(cudaErrorInvalidValue);
  drain_all(it->second.device);  // cudaFree waits for the device's work
  cnt.live_bytes[it->second.device] -= static_cast<int64_t>(it->second.size);
  std::free(const_cast<char*>(it->first));
  allocs.erase(it);
  return sticky ? fail(sticky) : cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  Lock lk(mu);
  if (sticky) return fail(sticky);
  const int64_t total = cfg.devices[current].memory;
  *total_b = static_cast<size_t>(total);
  *free_b = static_cast<size_t>(cfg.report_free >= 0 ? cfg.report_free : total - cnt.live_bytes[current]);
  return cudaSuccess;
}

cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind k, cudaStream_t s) {
  Lock lk(mu);
  if (sticky) return fail(sticky);
  if (!valid_stream(s) || s->device != current) return fail(cudaErrorInvalidResourceHandle);
  if (height == 0 || width == 0) return cudaSuccess;
  const size_t dspan = dpitch * (height - 1) + width, sspan = spitch * (height - 1) + width;
  if (width > dpitch || width > spitch) return fail(cudaErrorInvalidValue);
  switch (k) {
    case cudaMemcpyHostToDevice: {
      if (!inside(dst, dspan, current)) return fail(cudaErrorInvalidValue);
      std::vector<char> snap(height * width);  // pageable source: copied out at the call
      for (size_t r = 0; r < height; ++r) std::memcpy(snap.data() + r * width, static_cast<const char*>(src) + r * spitch, width);
      cnt.h2d_bytes += static_cast<int64_t>(height * width);
      enqueue(s, [dst, dpitch, width, height, snap = std::move(snap)]() {
        for (size_t r = 0; r < height; ++r) std::memcpy(static_cast<char*>(dst) + r * dpitch, snap.data() + r * width, width);
      });
      return cudaSuccess;
    }
    case cudaMemcpyDeviceToHost: {
      if (!inside(src, sspan, current)) return fail(cudaErrorInvalidValue);
      cnt.d2h_bytes += static_cast<int64_t>(height * width);
      enqueue(s, [dst, dpitch, src, spitch, width, height]() {
        for (size_t r = 0; r < height; ++r)
          std::memcpy(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
      });
      return cudaSuccess;
    }
    case cudaMemcpyHostToHost:
    case cudaMemcpyDeviceToDevice:
    case cudaMemcpyDefault:
      break;
  }
  return fail(cudaErrorInvalidValue);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind k, cudaStream_t s) {
  return cudaMemcpy2DAsync(dst, n, src, n, n, 1, k, s);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags) {
  Lock lk(mu);
  if (sticky) return fail(sticky);
  (void)flags;
  *s = new StandInStream{current, {}, 0, 0};
  streams.insert(*s);
  ++cnt.live_streams;
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
  Lock lk(mu);
  if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  drain(s, s->enqueued);  // pending work completes before the stream goes away
  streams.erase(s);
  delete s;
  --cnt.live_streams;
  return sticky ? fail(sticky) : cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  Lock lk(mu);
  if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  drain(s, s->enqueued);
  return sticky ? fail(sticky) : cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
  Lock lk(mu);
  if (sticky) return fail(sticky);
  (void)flags;
  if (!valid_stream(s) || !e) return fail(cudaErrorInvalidResourceHandle);
  StandInStream* other = e->stream;
  const int64_t pos = e->pos;
  if (!other) return cudaSuccess;  // never recorded: nothing to wait for
  enqueue(s, [other, pos]() {
    if (streams.count(other)) drain(other, pos);
  });
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags) {
  Lock lk(mu);
  if (sticky) return fail(sticky);
  (void)flags;
  *e = new StandInEvent;
  ++cnt.live_events;
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
  Lock lk(mu);
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  delete e;
  --cnt.live_events;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  Lock lk(mu);
  if (sticky) return fail(sticky);
  if (!e || !valid_stream(s) || s->device != current) return fail(cudaErrorInvalidResourceHandle);
  e->stream = s;
  e->pos = s->enqueued;
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  Lock lk(mu);
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  if (e->stream && streams.count(e->stream)) drain(e->stream, e->pos);
  return sticky ? fail(sticky) : cudaSuccess;
}
