// pybind11 registration only: the logic lives in csrc/core, csrc/cpu, csrc/cuda, csrc/dispatch; conversions
// in convert.cpp.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/convert.hpp"
#include "bindings/session.hpp"
#include "core/serialize.hpp"

namespace py = pybind11;
using namespace ntkfast;
using bindings::CompiledProgram;
using bindings::RunControl;

PYBIND11_MODULE(_core, m) {
  m.doc() = "ntkfast compiled backends (CPU, and CUDA when compiled in)";
  py::register_exception<std::invalid_argument>(m, "ProgramError", PyExc_ValueError);
  py::register_exception<Cancelled>(m, "Cancelled", PyExc_KeyboardInterrupt);

  py::class_<CompiledProgram>(m, "Program")
      .def_property_readonly("self_size", [](const CompiledProgram& c) { return c.program.self_size; })
      .def_property_readonly("max_plane", [](const CompiledProgram& c) { return c.program.max_plane; })
      .def_property_readonly("n_stages", [](const CompiledProgram& c) { return c.program.stages.size(); })
      .def_property_readonly("text", [](const CompiledProgram& c) { return c.text; })
      .def_property_readonly("canonical_text", [](const CompiledProgram& c) {
        return format_program(parse_program(c.text));
      })
      .def("layer_shapes", &bindings::layer_shapes, "Per layer (h_in, w_in, h_out, w_out); -1 after the readout.")
      .def("cpu_thread_bytes", [](const CompiledProgram& c, int itemsize) {
        return cpu_thread_bytes(c.program, itemsize);
      }, py::arg("itemsize"), "Bytes of one CPU thread's workspace.")
      .def("cpu_tile_bytes", [](const CompiledProgram& c, int itemsize, int64_t nx, int64_t ny) {
        return cpu_tile_bytes(c.program, itemsize, nx, ny);
      }, py::arg("itemsize"), py::arg("nx"), py::arg("ny"), "Bytes of one nx x ny tile's packed inputs.")
      .def(py::pickle([](const CompiledProgram& c) { return c.text; },
                      [](const std::string& t) { return bindings::compile_text(t); }))
      .def("__repr__", [](const CompiledProgram& c) { return c.program.describe(); });
  m.def("compile_program", &bindings::compile_text, py::arg("text"),
        "Parse and compile the text form of Arch.program_text(); raises ProgramError (a ValueError).");

  py::class_<RunControl>(m, "RunControl", "Cancel flag and pairs-done counter of a running call.")
      .def(py::init<>())
      .def("cancel", [](RunControl& c) { c.cancel = true; })
      .def_property_readonly("cancelled", [](const RunControl& c) { return c.cancel.load(); })
      .def_property_readonly("progress", [](const RunControl& c) { return c.progress.load(); });

  m.def("self_data", &bindings::self_data, py::arg("program"), py::arg("X"), py::arg("device") = "cpu",
        py::arg("threads") = 0, py::arg("control") = nullptr,
        "Per-image self data (n, self_size) of X (n, ...), float32 or float64.");
  m.def("gram_tile", &bindings::gram_tile, py::arg("program"), py::arg("X"), py::arg("Y"), py::arg("self_x"),
        py::arg("self_y"), py::arg("symmetric"), py::arg("nngp") = true, py::arg("ntk") = true,
        py::arg("device") = "cpu", py::arg("threads") = 0, py::arg("control") = nullptr,
        "Kernels (nngp, ntk) of one tile of pairs; symmetric computes j >= i and mirrors.");
  bindings::register_session(m);
  m.def("gram_pairs", &bindings::gram_pairs, py::arg("program"), py::arg("X"), py::arg("Y"), py::arg("self_x"),
        py::arg("self_y"), py::arg("nngp") = true, py::arg("ntk") = true, py::arg("device") = "cpu",
        py::arg("threads") = 0, py::arg("control") = nullptr,
        "Kernels (nngp, ntk) of the pairs (X[i], Y[i]) as (n,) arrays; Y None: (X[i], X[i]), the Gram diagonal.");
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
    d["device_usable"] = s.device_usable;
    d["device_reason"] = s.device_reason;
    return d;
  });
}
