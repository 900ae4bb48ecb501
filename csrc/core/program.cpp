#include "core/program.hpp"

#include <algorithm>
#include <sstream>
#include <stdexcept>

namespace ntkfast {

namespace {
void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("invalid layer program: " + what);
}
}  // namespace

void Program::finalize() {
  require(H >= 1 && W >= 1 && C >= 1, "input size must be positive");
  require(spatial == !stages.empty(), "a spatial program needs stages, a vector program none");
  require(!spatial || readout != Readout::None, "a spatial program needs a readout");
  diag_offset.clear(); diag_h.clear(); diag_w.clear();
  int off = 0;
  max_plane = 1;
  int h = H, w = W;
  for (size_t s = 0; s < stages.size(); ++s) {
    Stage& st = stages[s];
    require(st.h_in == h && st.w_in == w, "stage " + std::to_string(s) + " input size mismatch");
    max_plane = std::max(max_plane, h * w);
    for (LayerOp& op : st.ops) {
      require(op.h_in == h && op.w_in == w, "op input size mismatch in stage " + std::to_string(s));
      if (op.kind == LayerOp::Conv) {
        require(op.ky >= 1 && op.kx >= 1 && op.pad_y >= 0 && op.pad_x >= 0, "bad conv window");
        require(op.h_out >= 1 && op.w_out >= 1, "conv output is empty");
        require(!circular || (op.h_out == h && op.w_out == w), "circular programs keep the size");
      } else {
        require(op.h_out == h && op.w_out == w, "relu changes no size");
        op.relu_slot = static_cast<int>(diag_offset.size());
        diag_offset.push_back(off);
        diag_h.push_back(h);
        diag_w.push_back(w);
        off += h * w;
      }
      h = op.h_out;
      w = op.w_out;
      max_plane = std::max(max_plane, h * w);
    }
    require(st.h_out == h && st.w_out == w, "stage " + std::to_string(s) + " output size mismatch");
    if (st.has_pool) {
      require(s + 1 < stages.size(), "a pooling must be followed by a stage");
      for (const PoolAxis* p : {&st.pool_y, &st.pool_x})
        require(p->stride >= 1 && !p->taps.empty() && p->n_out >= 1, "bad pooling");
      h = st.pool_y.n_out;
      w = st.pool_x.n_out;
      require(!circular || (h * st.pool_y.stride == st.h_out && w * st.pool_x.stride == st.w_out),
              "circular programs need poolings whose stride tiles the state");
    } else {
      require(s + 1 == stages.size(), "only the last stage may end without pooling");
    }
    const int lo_y = circular ? 0 : -(st.h_out - 1), hi_y = st.h_out - 1;
    const int lo_x = circular ? 0 : -(st.w_out - 1), hi_x = st.w_out - 1;
    for (const Range* r : {&st.need_pair, &st.need_self})
      require(r->y0 <= r->y1 && r->x0 <= r->x1 && r->y0 >= lo_y && r->y1 <= hi_y && r->x0 >= lo_x &&
                  r->x1 <= hi_x,
              "offset range out of bounds in stage " + std::to_string(s));
  }
  scalar_offset = off;
  n_scalar_relu = 0;
  for (ScalarOp& op : scalar) {
    if (op.kind == ScalarOp::Relu) op.relu_slot = n_scalar_relu++;
  }
  self_size = off + n_scalar_relu;
}

std::string Program::describe() const {
  std::ostringstream o;
  o << "Program(" << H << "x" << W << "x" << C << (circular ? ", circular" : "") << ", " << stages.size()
    << " stages, readout=" << (readout == Readout::Gap ? "gap" : readout == Readout::Flatten ? "flatten" : "none")
    << ", " << scalar.size() << " scalar ops, self_size=" << self_size << ")";
  return o.str();
}

}  // namespace ntkfast
