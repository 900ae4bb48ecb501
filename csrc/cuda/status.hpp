// What the CUDA backend can use now: device count and names, per device whether the kernels can run there
// (or why not), and the process-wide refusal after a kernel fault. Plain C++, so that the dispatch point can
// report "not compiled in" without the backend and the bindings can map the fault to a Python exception.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace ntkfast {

struct CudaStatus {
  bool usable = false;                     // at least one device can run the kernels now
  int device_count = 0;
  std::string reason;                      // why none is usable (empty when usable)
  std::vector<std::string> names;          // per device
  std::vector<int> compute_capability;     // per device: major*10 + minor
  std::vector<bool> device_usable;         // per device: the kernels of this build can run there
  std::vector<std::string> device_reason;  // per device: why not ("" when usable)
};

// A CUDA kernel faulted (illegal address, ...). The CUDA context of the process is then unusable, so the
// backend refuses all further GPU work in this process with this error and the reason.
class KernelFault : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Device memory cannot hold even one resident warp, one row per band and one-image tiles (bindings: MemoryError).
class DeviceOutOfMemory : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace ntkfast
