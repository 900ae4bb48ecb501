// The layer program: the op table (every layer kind, once), a net as the user wrote it (ProgramSpec, read
// from the one text serialization in serialize.hpp), and its compiled form (Program) that every backend
// executes: stages of Conv/ReLU between mixing points, their offset planes, pooling tables, the readout and
// the scalar head. compile() is the only place where the geometry of a net is derived.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/activations.hpp"
#include "core/geometry.hpp"

namespace ntkfast {

// A net that the program cannot compute as written (it does not fit the input, or is malformed). The
// bindings raise it as ntkfast's ProgramError, a ValueError.
class ProgramError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// ---- The op table ----------------------------------------------------------------------------------------
enum class OpKind : int {
  Conv, Dense,                                                       // affine
  Relu, ABRelu, RectMono, Erf, Gelu, Sin, Monomial, Hermite, Polynomial, Sign,  // activations
  LayerNorm,                                                         // normalization over channels
  AvgPool, SumPool, GaussianPool,                                    // poolings
  GlobalAvgPool, GlobalSumPool, Flatten,                             // readouts
  Identity, FanOut, Parallel, Branch, End, FanInSum                  // structure: streams and branches
};
constexpr int kNumOpKinds = 25;

struct OpInfo {
  OpKind kind;
  const char* token;    // name in the serialization
  const char* display;  // name in error messages (the Python class)
  int n_args;           // arguments after the token; -1: a count, then that many numbers
};
// Every kind, in enum order. op_info() throws ProgramError on a value outside the enum.
const OpInfo& op_info(OpKind k);
const OpInfo* op_by_token(const std::string& token);  // nullptr if unknown

enum class Padding : int { Same, Valid, Circular };
const char* padding_name(Padding p);

// One layer as written (see serialize.hpp for the text form).
struct LayerSpec {
  OpKind kind = OpKind::Relu;
  int ky = 1, kx = 1;                // Conv and AvgPool/SumPool window
  int sy = 1, sx = 1;                // Conv, AvgPool, SumPool stride; GaussianPool: its subsampling
  Padding padding = Padding::Same;   // Conv: SAME/VALID/CIRCULAR; AvgPool/SumPool: SAME/VALID
  double w_std = 1.0, b_std = 0.0;   // Conv, Dense
  bool bias = true;                  // Conv, Dense: a bias parameter exists (b_std "none": no bias)
  bool standard = false;             // Conv, Dense: standard parameterization (else NTK)
  int width = 0;                     // Conv, Dense: output channels (0: unknown); standard needs its input's
  double sigma = 0.0;                // GaussianPool (0: the default s / sqrt 2)
  double a = 0, b = 0, c = 0;        // ABRelu (a, b), Erf/Sin (a, b, c), LayerNorm (eps in a)
  int degree = 0;                    // RectMono, Monomial, Hermite
  std::vector<double> coef;          // Polynomial: coef[m] multiplies x^m
  int count = 0;                     // FanOut: streams; Parallel: branches
};

struct ProgramSpec {
  bool spatial = true;    // images (H, W, C); else vectors (D,) held in C with H = W = 1
  int H = 1, W = 1, C = 1;
  std::vector<LayerSpec> layers;
};

// ---- The compiled program --------------------------------------------------------------------------------
enum Mode : int { kPair = 0, kSelf = 1 };  // a pair (x, y), or the per-image self recursion (x, x)

// A convolution, a pointwise op (activation, LayerNorm) or a stream op inside a stage, acting on one
// register (a stream of a branching net: FanOut copies a register, FanInSum adds registers). Resolutions are
// those of its register entering / leaving the op.
struct StageOp {
  enum Kind : int { Conv = 0, Act = 1, Copy = 2, Add = 3 } kind = Conv;
  int reg = 0;                       // the register it acts on (Copy: the new copy; Add: the sum)
  int src = -1;                      // Copy, Add: the register copied / added (Add frees it)
  int layer = -1;                    // index in ProgramSpec::layers
  bool wrap = false;                 // Conv: CIRCULAR (wraps within a circular plane); else zero padding
  int ky = 1, kx = 1, pad_y = 0, pad_x = 0;  // Conv: window and padding before (SAME: (k-1)/2, VALID: 0)
  double scale = 1.0, bias2 = 0.0;   // Conv: S' = scale box(S) + bias2, scale = W_std^2 / (ky kx)
  // Conv, T: NTK parameterization T' = scale box(T) + S'; standard T' = scale box(T) + t_s box(S) + t_b
  // with t_s = fan_in / (ky kx) and t_b = 1 for a bias (neural-tangents' definition).
  bool standard = false;
  double t_s = 0.0, t_b = 0.0;
  int h_in = 0, w_in = 0, h_out = 0, w_out = 0;
  ActParams act;                     // Act
  int relu_slot = -1;                // Act: index of its diagonal in Program::diags
};

// Separable pooling along one axis: output j reads positions origin + stride*j + t with weight taps[t].
struct PoolAxis {
  int stride = 1, origin = 0, n_out = 0;
  std::vector<double> taps;
};

// Where a linear source offset d goes when pooled along one axis: next linear offset dn, its plane index in
// the next stage's representation, and the tap products g[t] = taps[t] taps[t + dn_delta] at PoolTable::g.
struct PoolEntry {
  int dn, plane, g;
};
struct PoolTable {
  int n = 0;                  // source positions along the axis; source offsets d in [-(n-1), n-1]
  int w = 0;                  // taps
  std::vector<int> first;     // entries of d: [first[d + n - 1], first[d + n])
  std::vector<PoolEntry> entries;
  std::vector<double> g;      // w values per entry
};

// How one register leaves a stage into the next: its pooling (or a strided conv's subsampling, or an identity
// change of representation) and the tables of it.
struct RegPool {
  int reg = 0;
  int layer = -1;             // the pooling layer; -1 for an identity change of representation
  int h_src = 0, w_src = 0;   // the register's resolution entering the pooling
  PoolAxis y, x;
  PoolTable table_y[2], table_x[2];  // per mode, filtered by the next stage's need
};

struct Stage {
  int h_in = 0, w_in = 0;     // resolution of every register entering the stage
  bool circular = false;      // its planes' representation (geometry.hpp): circular iff a CIRCULAR conv is in it
  std::vector<StageOp> ops;
  std::vector<int> regs_in;   // registers entering it (stage 0: {0}); their stores are blocks in this order
  std::vector<RegPool> pools; // registers leaving into the next stage; none in the last stage
  int readout_reg = 0;        // last stage: the register read out
  int readout_h = 0, readout_w = 0;  // last stage: its resolution there
  Range need[2];              // planes carried, per mode (plane indices of this stage's representation)
  bool active[2] = {true, true};  // whether the mode runs this stage at all
  // stage > 0: plane_offsets of one register's planes entering it, per mode; register k of regs_in at
  // k * store[m].back().
  std::vector<int64_t> store[2];
  bool has_pool() const { return !pools.empty(); }
};

enum class Readout { None, Gap, Flatten };

struct ScalarOp {
  enum Kind : int { Dense = 0, Act = 1, Copy = 2, Add = 3 } kind = Dense;
  int reg = 0, src = -1;       // registers as in StageOp
  int layer = -1;
  double w2 = 1.0, b2 = 0.0;   // Dense: S' = w2 S + b2
  bool standard = false;       // Dense, T: NTK T' = w2 T + S'; standard T' = w2 T + t_s S + t_b
  double t_s = 0.0, t_b = 0.0;
  ActParams act;               // Act
  int relu_slot = -1;          // Act: index into the scalar part of the self data
};

// Where each layer's state lives: resolutions in and out (-1 after the readout or for vector nets).
struct LayerShape {
  int h_in = -1, w_in = -1, h_out = -1, w_out = -1;
};

// Per-image self data (self_size values per image): each spatial ReLU's pre-activation diagonal
// S(x,x)[u,u] (h*w values at offset), then each scalar ReLU's S.
struct DiagSlot {
  int offset = 0, h = 0, w = 0;
  bool circular = false;  // its stage's representation (partners wrap)
};

struct Program {
  int H = 1, W = 1, C = 1;
  bool spatial = false;
  std::vector<Stage> stages;
  Readout readout = Readout::None;
  std::vector<ScalarOp> scalar;
  std::vector<LayerShape> layer_shapes;
  std::vector<DiagSlot> diags;
  int scalar_offset = 0, n_scalar_relu = 0, self_size = 0;
  int max_plane = 1;           // largest h*w of any stage resolution
  int n_regs = 1;              // registers (streams); ids 0 .. n_regs - 1, in the spatial and the scalar part
  int readout_reg = 0;         // the register that holds the readout (vector nets: the input) for the scalar ops
  int final_reg = 0;           // the register that holds the result after them
  int64_t max_store[2] = {0, 0};  // largest pooled store (entries, every register) per mode, 0 without pooling
  double readout_den = 1.0;    // Gap: (h w)^2, Flatten: h w of the last stage

  int input_size() const { return H * W * C; }
  std::string describe() const;
};

// Compiles a net for its input shape. Throws ProgramError naming the layer when it does not fit the input,
// or saying what is malformed.
Program compile(const ProgramSpec& spec);

}  // namespace ntkfast
