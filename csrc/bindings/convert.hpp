// Conversions between Python objects and the core's types, beside the module that registers functions.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <string>

#include "core/program.hpp"
#include "core/run.hpp"
#include "dispatch/dispatch.hpp"

namespace ntkfast {
namespace bindings {

namespace py = pybind11;

// A compiled program and the text it came from.
struct CompiledProgram {
  Program program;
  std::string text;
};

// Parses and compiles the text form (core/serialize.hpp); throws ProgramError.
CompiledProgram compile_text(const std::string& text);

// Cancel flag and progress counter shared with a running call (another Python thread reads and sets them).
struct RunControl {
  std::atomic<bool> cancel{false};
  std::atomic<int64_t> progress{0};
};

Device device_from_string(const std::string& s);

// Self data of X (n, ...) as a new (n, self_size) array of X's dtype (float32 or float64).
py::array self_data(const CompiledProgram& P, const py::array& X, const std::string& device, int threads,
                    RunControl* control);

// (nngp, ntk) of a tile; each None unless requested.
py::tuple gram_tile(const CompiledProgram& P, const py::array& X, const py::array& Y, const py::array& self_x,
                    const py::array& self_y, bool symmetric, bool want_nngp, bool want_ntk,
                    const std::string& device, int threads, RunControl* control);

// (nngp, ntk) of the pairs (X[i], Y[i]) as (n,) arrays; Y None: the pairs (X[i], X[i]) (the Gram diagonal).
py::tuple gram_pairs(const CompiledProgram& P, const py::array& X, const py::object& Y, const py::array& self_x,
                     const py::object& self_y, bool want_nngp, bool want_ntk, const std::string& device, int threads,
                     RunControl* control);

// Per layer (h_in, w_in, h_out, w_out), -1 where the state is a scalar.
py::list layer_shapes(const CompiledProgram& P);

}  // namespace bindings
}  // namespace ntkfast
