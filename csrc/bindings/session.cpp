#include "bindings/session.hpp"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cctype>
#include <memory>
#include <stdexcept>

#include "bindings/convert.hpp"
#include "cuda/status.hpp"

namespace ntkfast {
namespace bindings {

namespace py = pybind11;

std::pair<Device, int> parse_device(const std::string& s) {
  if (s == "cpu") return {Device::Cpu, 0};
  if (s == "cuda") return {Device::Cuda, 0};
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.size() <= 9) {
    int idx = 0;
    for (size_t k = 5; k < s.size(); ++k) {
      if (!std::isdigit(static_cast<unsigned char>(s[k]))) idx = -1;
      if (idx >= 0) idx = idx * 10 + (s[k] - '0');
    }
    if (idx >= 0) return {Device::Cuda, idx};
  }
  throw std::invalid_argument("device must be 'cpu', 'cuda' or 'cuda:N' (N a device index); got '" + s + "'");
}

namespace {

// A Gram computation's tiles on one backend (GramSession in Python). Keeps the arrays it reads alive.
class PySession {
 public:
  PySession(const CompiledProgram& prog, py::array X, py::object Y, py::array sx, py::object sy,
            const std::string& device, int threads)
      : prog_(prog), X_(std::move(X)), Y_(std::move(Y)), sx_(std::move(sx)), sy_(std::move(sy)) {
    const auto d = parse_device(device);
    dev_ = d.first;
    opt_.device = d.second;
    opt_.threads = threads;
    f32_ = py::isinstance<py::array_t<float>>(X_);
    if (!f32_ && !py::isinstance<py::array_t<double>>(X_)) throw std::invalid_argument("X must be float32 or float64");
    const Program& P = prog_.program;
    nx_ = check(X_, "X", P.input_size());
    check(sx_, "self_x", P.self_size, nx_);
    has_y_ = !Y_.is_none();
    ny_ = nx_;
    if (has_y_) {
      ny_ = check(Y_, "Y", P.input_size());
      check(sy_, "self_y", P.self_size, ny_);
    }
    const void* y = has_y_ ? py::array(Y_).data() : nullptr;
    const void* syp = has_y_ ? py::array(sy_).data() : nullptr;
    py::gil_scoped_release release;
    if (f32_)
      f_ = open_session<float>(dev_, P, static_cast<const float*>(X_.data()), nx_, static_cast<const float*>(y), ny_,
                               static_cast<const float*>(sx_.data()), static_cast<const float*>(syp), opt_);
    else
      d_ = open_session<double>(dev_, P, static_cast<const double*>(X_.data()), nx_, static_cast<const double*>(y),
                                ny_, static_cast<const double*>(sx_.data()), static_cast<const double*>(syp), opt_);
  }

  py::tuple tile(int64_t i0, int64_t i1, int64_t j0, int64_t j1, bool want_s, bool want_t, RunControl* control) {
    if (i0 < 0 || i1 < i0 || i1 > nx_ || j0 < 0 || j1 < j0 || j1 > ny_)
      throw std::invalid_argument("tile rows [" + std::to_string(i0) + ", " + std::to_string(i1) + ") x columns [" +
                                  std::to_string(j0) + ", " + std::to_string(j1) + ") outside the " +
                                  std::to_string(nx_) + " x " + std::to_string(ny_) + " Gram");
    RunOptions o = opt_;
    if (control) {
      o.cancel = &control->cancel;
      o.progress = &control->progress;
    }
    return f32_ ? run<float>(*f_, i0, i1, j0, j1, want_s, want_t, o) : run<double>(*d_, i0, i1, j0, j1, want_s, want_t, o);
  }

  int64_t nx() const { return nx_; }
  int64_t ny() const { return ny_; }

 private:
  // Rows of an array of `row` values each, C-contiguous, of the session's dtype (and `rows` of them when >= 0).
  int64_t check(const py::object& o, const char* name, int64_t row, int64_t rows = -1) const {
    const py::array a = py::array::ensure(o);
    const bool dtype_ok = f32_ ? py::isinstance<py::array_t<float>>(a) : py::isinstance<py::array_t<double>>(a);
    if (!a || !dtype_ok || !(a.flags() & py::array::c_style))
      throw std::invalid_argument(std::string(name) + " must be a C-contiguous array of X's dtype");
    if (a.ndim() < 1 || a.size() != a.shape(0) * row || (rows >= 0 && a.shape(0) != rows))
      throw std::invalid_argument(std::string(name) + " has the wrong size for this program");
    return a.shape(0);
  }

  template <class T>
  static py::tuple run(TileSession<T>& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1, bool want_s, bool want_t,
                       const RunOptions& o) {
    py::object rs = py::none(), rt = py::none();
    T *ps = nullptr, *pt = nullptr;
    if (want_s) {
      auto r = py::array_t<T>({i1 - i0, j1 - j0});
      ps = r.mutable_data();
      rs = r;
    }
    if (want_t) {
      auto r = py::array_t<T>({i1 - i0, j1 - j0});
      pt = r.mutable_data();
      rt = r;
    }
    {
      py::gil_scoped_release release;
      s.tile(i0, i1, j0, j1, ps, pt, o);
    }
    return py::make_tuple(rs, rt);
  }

  const CompiledProgram& prog_;
  py::array X_;
  py::object Y_;
  py::array sx_;
  py::object sy_;
  Device dev_ = Device::Cpu;
  RunOptions opt_;
  bool f32_ = true, has_y_ = false;
  int64_t nx_ = 0, ny_ = 0;
  std::unique_ptr<TileSession<float>> f_;
  std::unique_ptr<TileSession<double>> d_;
};

}  // namespace

void register_session(py::module_& m) {
  py::register_exception<KernelFault>(m, "KernelFault", PyExc_RuntimeError);
  py::register_exception<DeviceOutOfMemory>(m, "DeviceOutOfMemory", PyExc_MemoryError);
  py::class_<PySession>(m, "GramSession",
                        "The tiles of one Gram computation against inputs the backend holds for the whole call (the "
                        "CUDA backend uploads program, inputs and self data once).")
      // keep_alive: the session reads the program (argument 2) for its whole life.
      .def(py::init<const CompiledProgram&, py::array, py::object, py::array, py::object, const std::string&, int>(),
           py::arg("program"), py::arg("X"), py::arg("Y"), py::arg("self_x"), py::arg("self_y"),
           py::arg("device") = "cpu", py::arg("threads") = 0, py::keep_alive<1, 2>())
      .def("tile", &PySession::tile, py::arg("i0"), py::arg("i1"), py::arg("j0"), py::arg("j1"),
           py::arg("nngp") = true, py::arg("ntk") = true, py::arg("control") = nullptr,
           "(nngp, ntk) of rows [i0, i1) of X against rows [j0, j1) of Y (of X when Y is None), each None unless "
           "requested; a square tile on the diagonal of the Gram of X is symmetric (j >= i computed, mirrored).")
      .def_property_readonly("shape", [](const PySession& s) { return py::make_tuple(s.nx(), s.ny()); });
  m.def("parse_device", [](const std::string& s) {
    const auto d = parse_device(s);
    return py::make_tuple(d.first == Device::Cpu ? "cpu" : "cuda", d.second);
  }, py::arg("device"), "('cpu' | 'cuda', index) of 'cpu', 'cuda' or 'cuda:N'; ValueError otherwise.");
}

}  // namespace bindings
}  // namespace ntkfast
