// A minimal stand-in for the CUDA runtime API, enough to compile csrc/cuda/gram_cuda.cu with g++ and run
// its host code (tiling, bands, streams and events, out-of-memory retries, cancellation, device selection,
// fault reporting) on a machine without a GPU. Only what gram_cuda.cu calls, with the semantics it relies
// on, made strict where that catches bugs:
//   - work on a stream runs lazily, when something waits for it (an event or stream synchronization, a
//     stream waiting on an event, cudaFree), so a result read before its copy was waited for is missing;
//   - host-to-device copies snapshot the source at the call (pageable copies may return before the DMA);
//     device-to-host copies write the host array when they run;
//   - every device range a copy touches must lie inside one live allocation of the current device;
//   - a launch must use a stream of the current device and no more dynamic shared memory than the kernel's
//     attribute allows there (48 KiB until cudaFuncSetAttribute raises it);
//   - an injected fault makes a launch "succeed" and the error appear at the next wait, sticky afterwards.
// The kernels themselves run on the host (ntkfast_host_launch.hpp): each block gets a freshly allocated
// shared-memory buffer of exactly the launch's size, so AddressSanitizer sees any overrun.
// Error codes keep the real runtime's numeric values.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInsufficientDriver = 35,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorNoKernelImageForDevice = 209,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchTimeout = 702,
  cudaErrorAssert = 710,
  cudaErrorHardwareStackError = 714,
  cudaErrorIllegalInstruction = 715,
  cudaErrorMisalignedAddress = 716,
  cudaErrorInvalidAddressSpace = 717,
  cudaErrorInvalidPc = 718,
  cudaErrorLaunchFailure = 719,
};

struct StandInStream;
struct StandInEvent;
typedef StandInStream* cudaStream_t;
typedef StandInEvent* cudaEvent_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
#define cudaStreamNonBlocking 0x01
#define cudaEventDisableTiming 0x02

struct cudaDeviceProp {
  char name[256];
  int major, minor;
  int multiProcessorCount;
  size_t totalGlobalMem;
};

struct cudaFuncAttributes {
  size_t sharedSizeBytes, constSizeBytes, localSizeBytes;
  int maxThreadsPerBlock, numRegs, ptxVersion, binaryVersion;
  int maxDynamicSharedSizeBytes;
};

const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDevice(int* d);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d);
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d);
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, const void* func);
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute a, int value);
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, const void* func, int block, size_t smem);
cudaError_t cudaMalloc(void** p, size_t n);
cudaError_t cudaFree(void* p);
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind k, cudaStream_t s);
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind k, cudaStream_t s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);

// Configuration, fault injection and counters of the stand-in (tests only).
namespace standin {

struct DeviceConfig {
  std::string name = "stand-in GPU";
  int major = 9, minor = 0;
  int sms = 3;
  int optin_smem = 227 * 1024;    // cudaDevAttrMaxSharedMemoryPerBlockOptin
  int smem_per_sm = 228 * 1024;   // for the occupancy calculator
  int64_t memory = int64_t(1) << 30;
  bool kernel_image = true;       // false: no image of this build's kernels for the device's architecture
};

struct Config {
  std::vector<DeviceConfig> devices = std::vector<DeviceConfig>(1);
  bool no_driver = false;          // cudaGetDeviceCount fails as without a driver
  int64_t report_free = -1;        // >= 0: what cudaMemGetInfo reports free (a lie, to force allocation failures)
  int64_t fault_on_launch = 0;     // > 0: the n-th launch (1-based, process-wide) faults when it runs
  std::function<void(int64_t)> after_launch;  // called after launch n has run (e.g. to cancel)
};
Config& config();

struct LaunchRecord {
  const void* func;
  int device, blocks, threads;
  size_t smem;
};

struct Counters {
  int64_t launches = 0, mallocs = 0, failed_mallocs = 0, h2d_bytes = 0, d2h_bytes = 0;
  std::map<int, int64_t> live_bytes, peak_bytes;           // per device
  int64_t live_streams = 0, live_events = 0, pending_ops = 0;
  std::map<std::pair<const void*, int>, int> set_attribute; // cudaFuncSetAttribute calls per (kernel, device)
  std::vector<LaunchRecord> launch_log;
};
Counters counters();  // a snapshot

// Enqueues a kernel launch on s: body(block, shared memory) runs for every block when the stream gets there.
cudaError_t launch(const void* func, int blocks, int threads, size_t smem, cudaStream_t s,
                   std::function<void(int, unsigned char*)> body);

}  // namespace standin
