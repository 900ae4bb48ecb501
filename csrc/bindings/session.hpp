// Binding of dispatch's TileSession (one Gram computation's tiles against inputs the backend holds for the
// whole call), the device strings with an index ('cuda:1'), and the CUDA backend's exceptions.
#pragma once
#include <pybind11/pybind11.h>

#include <string>
#include <utility>

#include "dispatch/dispatch.hpp"

namespace ntkfast {
namespace bindings {

// 'cpu', 'cuda' or 'cuda:N' (N >= 0): the backend and the CUDA device index (0 unless given).
std::pair<Device, int> parse_device(const std::string& s);

// Registers _core.GramSession, and KernelFault (RuntimeError) and DeviceOutOfMemory (MemoryError).
void register_session(pybind11::module_& m);

}  // namespace bindings
}  // namespace ntkfast
