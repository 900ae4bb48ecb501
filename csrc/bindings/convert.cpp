#include "bindings/convert.hpp"

#include <stdexcept>
#include <string>

namespace ntkfast {
namespace bindings {

namespace {

Range range_from(const py::handle& h) {
  auto t = h.cast<py::sequence>();
  if (py::len(t) != 4) throw std::invalid_argument("offset range must have 4 entries");
  return Range{t[0].cast<int>(), t[1].cast<int>(), t[2].cast<int>(), t[3].cast<int>()};
}

PoolAxis axis_from(const py::dict& p, const char* ax, int n_out) {
  PoolAxis a;
  a.stride = p[py::str(std::string("stride_") + ax)].cast<int>();
  a.origin = p[py::str(std::string("origin_") + ax)].cast<int>();
  a.taps = p[py::str(std::string("taps_") + ax)].cast<std::vector<double>>();
  a.n_out = n_out;
  return a;
}

template <class T>
void check_array(const py::array& a, const char* name, int64_t row) {
  if (!py::isinstance<py::array_t<T>>(a) || !(a.flags() & py::array::c_style))
    throw std::invalid_argument(std::string(name) + " must be a C-contiguous array of the tile dtype");
  if (a.ndim() < 1 || (row >= 0 && a.size() != a.shape(0) * row))
    throw std::invalid_argument(std::string(name) + " has the wrong size for this program");
}

template <class T>
py::array self_data_t(const Program& P, const py::array& X, Device dev, int threads) {
  check_array<T>(X, "X", P.input_size());
  const int64_t n = X.shape(0);
  py::array_t<T> out({n, static_cast<int64_t>(P.self_size)});
  const T* x = static_cast<const T*>(X.data());
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    ntkfast::self_data<T>(dev, P, x, n, o, threads);
  }
  return std::move(out);
}

template <class T>
py::tuple gram_tile_t(const Program& P, const py::array& X, const py::array& Y, const py::array& sx,
                      const py::array& sy, bool symmetric, bool want_s, bool want_t, Device dev, int threads) {
  check_array<T>(X, "X", P.input_size());
  check_array<T>(Y, "Y", P.input_size());
  check_array<T>(sx, "self_x", P.self_size);
  check_array<T>(sy, "self_y", P.self_size);
  const int64_t nx = X.shape(0), ny = Y.shape(0);
  if (sx.shape(0) != nx || sy.shape(0) != ny) throw std::invalid_argument("self data rows do not match inputs");
  py::object rs = py::none(), rt = py::none();
  T *ps = nullptr, *pt = nullptr;
  if (want_s) { auto a = py::array_t<T>({nx, ny}); ps = a.mutable_data(); rs = a; }
  if (want_t) { auto a = py::array_t<T>({nx, ny}); pt = a.mutable_data(); rt = a; }
  const T *x = static_cast<const T*>(X.data()), *y = static_cast<const T*>(Y.data());
  const T *px = static_cast<const T*>(sx.data()), *py_ = static_cast<const T*>(sy.data());
  {
    py::gil_scoped_release release;
    ntkfast::gram_tile<T>(dev, P, x, nx, y, ny, px, py_, symmetric, ps, pt, threads);
  }
  return py::make_tuple(rs, rt);
}

}  // namespace

Program program_from_dict(const py::dict& d) {
  Program P;
  P.H = d["H"].cast<int>();
  P.W = d["W"].cast<int>();
  P.C = d["C"].cast<int>();
  P.spatial = d["spatial"].cast<bool>();
  P.circular = d["circular"].cast<bool>();
  const std::string ro = d["readout"].cast<std::string>();
  P.readout = ro == "gap" ? Readout::Gap : ro == "flatten" ? Readout::Flatten : Readout::None;
  for (auto sh : d["stages"].cast<py::list>()) {
    auto s = sh.cast<py::dict>();
    Stage st;
    st.h_in = s["h_in"].cast<int>();
    st.w_in = s["w_in"].cast<int>();
    st.h_out = s["h_out"].cast<int>();
    st.w_out = s["w_out"].cast<int>();
    for (auto oh : s["ops"].cast<py::list>()) {
      auto o = oh.cast<py::dict>();
      LayerOp op;
      const std::string kind = o["kind"].cast<std::string>();
      op.kind = kind == "conv" ? LayerOp::Conv : LayerOp::Relu;
      op.h_in = o["h_in"].cast<int>(); op.w_in = o["w_in"].cast<int>();
      op.h_out = o["h_out"].cast<int>(); op.w_out = o["w_out"].cast<int>();
      if (op.kind == LayerOp::Conv) {
        op.ky = o["ky"].cast<int>(); op.kx = o["kx"].cast<int>();
        op.pad_y = o["pad_y"].cast<int>(); op.pad_x = o["pad_x"].cast<int>();
        op.scale = o["scale"].cast<double>(); op.bias2 = o["bias2"].cast<double>();
      }
      st.ops.push_back(op);
    }
    if (!s["pool"].is_none()) {
      auto p = s["pool"].cast<py::dict>();
      st.has_pool = true;
      st.pool_y = axis_from(p, "y", p["h_out"].cast<int>());
      st.pool_x = axis_from(p, "x", p["w_out"].cast<int>());
    }
    st.need_pair = range_from(s["need_pair"]);
    st.need_self = range_from(s["need_self"]);
    st.self_active = s["self_active"].cast<bool>();
    P.stages.push_back(std::move(st));
  }
  for (auto oh : d["scalar"].cast<py::list>()) {
    auto o = oh.cast<py::dict>();
    ScalarOp op;
    if (o["kind"].cast<std::string>() == "dense") {
      op.kind = ScalarOp::Dense;
      op.w2 = o["w2"].cast<double>();
      op.b2 = o["b2"].cast<double>();
    } else {
      op.kind = ScalarOp::Relu;
    }
    P.scalar.push_back(op);
  }
  P.finalize();
  return P;
}

Device device_from_string(const std::string& s) {
  if (s == "cpu") return Device::Cpu;
  if (s == "cuda") return Device::Cuda;
  throw std::invalid_argument("device must be 'cpu' or 'cuda'; got '" + s + "'");
}

py::array self_data(const Program& P, const py::array& X, const std::string& device, int threads) {
  const Device dev = device_from_string(device);
  if (py::isinstance<py::array_t<float>>(X)) return self_data_t<float>(P, X, dev, threads);
  if (py::isinstance<py::array_t<double>>(X)) return self_data_t<double>(P, X, dev, threads);
  throw std::invalid_argument("X must be float32 or float64");
}

py::tuple gram_tile(const Program& P, const py::array& X, const py::array& Y, const py::array& sx,
                    const py::array& sy, bool symmetric, bool want_s, bool want_t, const std::string& device,
                    int threads) {
  const Device dev = device_from_string(device);
  if (py::isinstance<py::array_t<float>>(X)) return gram_tile_t<float>(P, X, Y, sx, sy, symmetric, want_s, want_t, dev, threads);
  if (py::isinstance<py::array_t<double>>(X)) return gram_tile_t<double>(P, X, Y, sx, sy, symmetric, want_s, want_t, dev, threads);
  throw std::invalid_argument("X must be float32 or float64");
}

}  // namespace bindings
}  // namespace ntkfast
