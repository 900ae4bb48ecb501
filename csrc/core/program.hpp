// The compiled layer program: what every backend executes (built from Python's Arch.program()).
#pragma once
#include <string>
#include <vector>

namespace ntkfast {

// Inclusive box of offsets (dy, dx) that a stage carries.
struct Range {
  int y0 = 0, y1 = 0, x0 = 0, x1 = 0;
};

// Conv or ReLU inside a stage (between poolings). Resolutions are those entering / leaving the op.
struct LayerOp {
  enum Kind { Conv, Relu } kind = Conv;
  int ky = 1, kx = 1, pad_y = 0, pad_x = 0;  // Conv: window and zero padding before (SAME: (k-1)/2, VALID: 0)
  double scale = 1.0, bias2 = 0.0;           // Conv: W_std^2 / (ky kx) and b_std^2
  int h_in = 0, w_in = 0, h_out = 0, w_out = 0;
  int relu_slot = -1;                        // Relu: index of its diagonal in the per-image self data
};

// Separable pooling along one axis: output j reads positions origin + stride*j + t with weight taps[t].
struct PoolAxis {
  int stride = 1, origin = 0, n_out = 0;
  std::vector<double> taps;
};

struct Stage {
  int h_in = 0, w_in = 0, h_out = 0, w_out = 0;
  std::vector<LayerOp> ops;
  bool has_pool = false;  // ends with a pooling into the next stage; else the readout follows
  PoolAxis pool_y, pool_x;
  Range need_pair, need_self;  // offsets carried for pairs / for the per-image self recursion
  bool self_active = true;     // whether the self recursion needs this stage at all
};

enum class Readout { None, Gap, Flatten };

struct ScalarOp {
  enum Kind { Dense, Relu } kind = Dense;
  double w2 = 1.0, b2 = 0.0;
  int relu_slot = -1;  // index into the scalar part of the self data
};

struct Program {
  int H = 1, W = 1, C = 1;  // input image size (or 1, 1, D for vectors)
  bool spatial = false, circular = false;
  std::vector<Stage> stages;
  Readout readout = Readout::None;
  std::vector<ScalarOp> scalar;

  // Derived by finalize(): layout of the per-image self data (one vector of self_size values per image):
  // for each spatial ReLU its pre-activation diagonal S(x,x)[u,u] (h*w values), then each scalar ReLU's S.
  std::vector<int> diag_offset, diag_h, diag_w;
  int scalar_offset = 0, n_scalar_relu = 0, self_size = 0;
  int max_plane = 1;  // largest h*w of any stage resolution

  // Checks consistency (throws std::invalid_argument with the reason) and fills the derived fields.
  void finalize();
  int input_size() const { return H * W * C; }
  std::string describe() const;
};

}  // namespace ntkfast
