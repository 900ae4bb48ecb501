#include "bindings/convert.hpp"

#include <stdexcept>
#include <string>

#include "core/serialize.hpp"

namespace ntkfast {
namespace bindings {

namespace {

template <class T>
void check_array(const py::array& a, const char* name, int64_t row) {
  if (!py::isinstance<py::array_t<T>>(a) || !(a.flags() & py::array::c_style))
    throw std::invalid_argument(std::string(name) + " must be a C-contiguous array of the tile dtype");
  if (a.ndim() < 1 || (row >= 0 && a.size() != a.shape(0) * row))
    throw std::invalid_argument(std::string(name) + " has the wrong size for this program");
}

RunOptions options(int threads, RunControl* control) {
  RunOptions o;
  o.threads = threads;
  if (control) {
    o.cancel = &control->cancel;
    o.progress = &control->progress;
  }
  return o;
}

template <class T>
py::array self_data_t(const Program& P, const py::array& X, Device dev, const RunOptions& opt) {
  check_array<T>(X, "X", P.input_size());
  const int64_t n = X.shape(0);
  py::array_t<T> out({n, static_cast<int64_t>(P.self_size)});
  const T* x = static_cast<const T*>(X.data());
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    ntkfast::self_data<T>(dev, P, x, n, o, opt);
  }
  return std::move(out);
}

template <class T>
py::tuple gram_tile_t(const Program& P, const py::array& X, const py::array& Y, const py::array& sx,
                      const py::array& sy, bool symmetric, bool want_s, bool want_t, Device dev,
                      const RunOptions& opt) {
  check_array<T>(X, "X", P.input_size());
  check_array<T>(Y, "Y", P.input_size());
  check_array<T>(sx, "self_x", P.self_size);
  check_array<T>(sy, "self_y", P.self_size);
  TileArgs<T> a;
  a.nx = X.shape(0);
  a.ny = Y.shape(0);
  if (sx.shape(0) != a.nx || sy.shape(0) != a.ny) throw std::invalid_argument("self data rows do not match inputs");
  py::object rs = py::none(), rt = py::none();
  if (want_s) {
    auto r = py::array_t<T>({a.nx, a.ny});
    a.nngp = r.mutable_data();
    rs = r;
  }
  if (want_t) {
    auto r = py::array_t<T>({a.nx, a.ny});
    a.ntk = r.mutable_data();
    rt = r;
  }
  a.X = static_cast<const T*>(X.data());
  a.Y = static_cast<const T*>(Y.data());
  a.self_x = static_cast<const T*>(sx.data());
  a.self_y = static_cast<const T*>(sy.data());
  a.symmetric = symmetric;
  {
    py::gil_scoped_release release;
    ntkfast::gram_tile<T>(dev, P, a, opt);
  }
  return py::make_tuple(rs, rt);
}

template <class T>
py::tuple gram_pairs_t(const Program& P, const py::array& X, const py::object& Y, const py::array& sx,
                       const py::object& sy, bool want_s, bool want_t, Device dev, const RunOptions& opt) {
  check_array<T>(X, "X", P.input_size());
  check_array<T>(sx, "self_x", P.self_size);
  PairArgs<T> a;
  a.n = X.shape(0);
  a.X = static_cast<const T*>(X.data());
  a.self_x = static_cast<const T*>(sx.data());
  if (sx.shape(0) != a.n) throw std::invalid_argument("self data rows do not match inputs");
  py::array Ya, sya;
  if (Y.is_none()) {
    a.Y = a.X;
    a.self_y = a.self_x;
  } else {
    Ya = Y.cast<py::array>();
    sya = sy.cast<py::array>();
    check_array<T>(Ya, "Y", P.input_size());
    check_array<T>(sya, "self_y", P.self_size);
    if (Ya.shape(0) != a.n || sya.shape(0) != a.n) throw std::invalid_argument("X and Y must have as many rows");
    a.Y = static_cast<const T*>(Ya.data());
    a.self_y = static_cast<const T*>(sya.data());
  }
  py::object rs = py::none(), rt = py::none();
  if (want_s) {
    auto r = py::array_t<T>(a.n);
    a.nngp = r.mutable_data();
    rs = r;
  }
  if (want_t) {
    auto r = py::array_t<T>(a.n);
    a.ntk = r.mutable_data();
    rt = r;
  }
  {
    py::gil_scoped_release release;
    ntkfast::gram_pairs<T>(dev, P, a, opt);
  }
  return py::make_tuple(rs, rt);
}

}  // namespace

py::tuple gram_pairs(const CompiledProgram& C, const py::array& X, const py::object& Y, const py::array& sx,
                     const py::object& sy, bool want_s, bool want_t, const std::string& device, int threads,
                     RunControl* control) {
  const Device dev = device_from_string(device);
  const RunOptions opt = options(threads, control);
  if (py::isinstance<py::array_t<float>>(X)) return gram_pairs_t<float>(C.program, X, Y, sx, sy, want_s, want_t, dev, opt);
  if (py::isinstance<py::array_t<double>>(X)) return gram_pairs_t<double>(C.program, X, Y, sx, sy, want_s, want_t, dev, opt);
  throw std::invalid_argument("X must be float32 or float64");
}

CompiledProgram compile_text(const std::string& text) { return CompiledProgram{compile(parse_program(text)), text}; }

Device device_from_string(const std::string& s) {
  if (s == "cpu") return Device::Cpu;
  if (s == "cuda") return Device::Cuda;
  throw std::invalid_argument("device must be 'cpu' or 'cuda'; got '" + s + "'");
}

py::array self_data(const CompiledProgram& C, const py::array& X, const std::string& device, int threads,
                    RunControl* control) {
  const Device dev = device_from_string(device);
  const RunOptions opt = options(threads, control);
  if (py::isinstance<py::array_t<float>>(X)) return self_data_t<float>(C.program, X, dev, opt);
  if (py::isinstance<py::array_t<double>>(X)) return self_data_t<double>(C.program, X, dev, opt);
  throw std::invalid_argument("X must be float32 or float64");
}

py::tuple gram_tile(const CompiledProgram& C, const py::array& X, const py::array& Y, const py::array& sx,
                    const py::array& sy, bool symmetric, bool want_s, bool want_t, const std::string& device,
                    int threads, RunControl* control) {
  const Device dev = device_from_string(device);
  const RunOptions opt = options(threads, control);
  if (py::isinstance<py::array_t<float>>(X))
    return gram_tile_t<float>(C.program, X, Y, sx, sy, symmetric, want_s, want_t, dev, opt);
  if (py::isinstance<py::array_t<double>>(X))
    return gram_tile_t<double>(C.program, X, Y, sx, sy, symmetric, want_s, want_t, dev, opt);
  throw std::invalid_argument("X must be float32 or float64");
}

py::list layer_shapes(const CompiledProgram& C) {
  py::list out;
  for (const LayerShape& s : C.program.layer_shapes) out.append(py::make_tuple(s.h_in, s.w_in, s.h_out, s.w_out));
  return out;
}

}  // namespace bindings
}  // namespace ntkfast
