// pybind11 registration only: the logic lives in csrc/core, csrc/cpu, csrc/cuda; conversions in convert.cpp.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/convert.hpp"

namespace py = pybind11;
using namespace ntkfast;

PYBIND11_MODULE(_core, m) {
  m.doc() = "ntkfast compiled backends (CPU, and CUDA when compiled in)";
  py::register_exception<std::invalid_argument>(m, "ProgramError", PyExc_ValueError);

  py::class_<Program>(m, "Program")
      .def_readonly("self_size", &Program::self_size)
      .def_readonly("max_plane", &Program::max_plane)
      .def("__repr__", &Program::describe);
  m.def("make_program", &bindings::program_from_dict, py::arg("program"),
        "Validate and compile the dict of Arch.program() for the backends.");
  m.def("self_data", &bindings::self_data, py::arg("program"), py::arg("X"), py::arg("device") = "cpu",
        py::arg("threads") = 0, "Per-image self data (n, self_size) of X (n, ...), float32 or float64.");
  m.def("gram_tile", &bindings::gram_tile, py::arg("program"), py::arg("X"), py::arg("Y"), py::arg("self_x"),
        py::arg("self_y"), py::arg("symmetric"), py::arg("nngp") = true, py::arg("ntk") = true,
        py::arg("device") = "cpu", py::arg("threads") = 0,
        "Kernels (nngp, ntk) of one tile of pairs; symmetric computes j >= i and mirrors.");
  m.def("build_info", []() {
    BuildInfo b = build_info();
    py::dict d;
    d["cuda_compiled"] = b.cuda_compiled;
    d["cuda_architectures"] = b.cuda_architectures;
    d["cuda_version"] = b.cuda_version;
    d["cpu_arch"] = b.cpu_arch;
    d["compiler"] = b.compiler;
    d["openmp"] = b.openmp;
    d["cpu_threads"] = b.cpu_threads;
    return d;
  });
  m.def("cuda_status", []() {
    CudaStatus s = cuda_status();
    py::dict d;
    d["usable"] = s.usable;
    d["device_count"] = s.device_count;
    d["reason"] = s.reason;
    d["names"] = s.names;
    d["compute_capability"] = s.compute_capability;
    return d;
  });
}
