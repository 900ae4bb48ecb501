// Conversions between Python objects and the core's types, beside the module that registers functions.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "core/dispatch.hpp"
#include "core/program.hpp"

namespace ntkfast {
namespace bindings {

namespace py = pybind11;

// Builds and validates a Program from the dict of ntkfast.arch.Arch.program().
Program program_from_dict(const py::dict& d);

Device device_from_string(const std::string& s);

// Self data of X (n, ...) as a new (n, self_size) array of X's dtype (float32 or float64).
py::array self_data(const Program& P, const py::array& X, const std::string& device, int threads);

// (nngp, ntk) of a tile; each None unless requested.
py::tuple gram_tile(const Program& P, const py::array& X, const py::array& Y, const py::array& self_x,
                    const py::array& self_y, bool symmetric, bool want_nngp, bool want_ntk,
                    const std::string& device, int threads);

}  // namespace bindings
}  // namespace ntkfast
