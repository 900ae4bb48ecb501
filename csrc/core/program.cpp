#include "core/program.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace ntkfast {

namespace {

// The op table, in enum order (checked below).
constexpr OpInfo kOps[kNumOpKinds] = {
    {OpKind::Conv, "conv", "Conv", 5},
    {OpKind::Relu, "relu", "ReLU", 0},
    {OpKind::AvgPool, "avgpool", "AvgPool", 5},
    {OpKind::GaussianPool, "gaussianpool", "GaussianPool", 2},
    {OpKind::GlobalAvgPool, "globalavgpool", "GlobalAvgPool", 0},
    {OpKind::Flatten, "flatten", "Flatten", 0},
    {OpKind::Dense, "dense", "Dense", 2},
};

constexpr bool table_in_order() {
  for (int i = 0; i < kNumOpKinds; ++i)
    if (static_cast<int>(kOps[i].kind) != i) return false;
  return true;
}
static_assert(table_in_order(), "kOps must list every OpKind in enum order");

[[noreturn]] void malformed(const std::string& what) { throw ProgramError("invalid layer program: " + what); }

std::string layer_name(int i, OpKind k) {
  return "layer " + std::to_string(i) + " (" + op_info(k).display + ")";
}

std::string hw(int h, int w) { return std::to_string(h) + "x" + std::to_string(w); }

// Parameters every layer of its kind must have (the Python layers check them for users first).
void check_params(int i, const LayerSpec& L) {
  const std::string name = layer_name(i, L.kind);
  auto finite_pos = [&](double v, const char* what, bool strict) {
    if (!std::isfinite(v) || (strict ? v <= 0.0 : v < 0.0))
      malformed(name + ": " + what + " must be a finite number " + (strict ? "> 0" : ">= 0"));
  };
  switch (L.kind) {
    case OpKind::Conv:
      if (L.ky < 1 || L.kx < 1) malformed(name + ": the window must be at least 1x1");
      finite_pos(L.w_std, "W_std", true);
      finite_pos(L.b_std, "b_std", false);
      break;
    case OpKind::AvgPool:
      if (L.ky < 1 || L.kx < 1 || L.sy < 1 || L.sx < 1) malformed(name + ": window and stride must be >= 1");
      if (L.padding == Padding::Circular) malformed(name + ": padding must be SAME or VALID");
      break;
    case OpKind::GaussianPool:
      if (L.sy < 1) malformed(name + ": the stride must be >= 1");
      finite_pos(L.sigma, "sigma (0 for the default)", false);
      break;
    case OpKind::Dense:
      finite_pos(L.w_std, "W_std", true);
      finite_pos(L.b_std, "b_std", false);
      break;
    case OpKind::Relu:
    case OpKind::GlobalAvgPool:
    case OpKind::Flatten:
      break;
  }
}

// The pooling of one axis of an n-position state (AvgPool or GaussianPool).
PoolAxis pool_axis(const LayerSpec& L, int axis, int n) {
  PoolAxis a;
  switch (L.kind) {
    case OpKind::GaussianPool: {
      // Taps v in [-s, s] at positions s (j + 1) + v, j = 0 .. n/s - 2 (Bietti & Mairal).
      const int s = L.sy;
      const double sigma = L.sigma > 0.0 ? L.sigma : s / std::sqrt(2.0);
      double tot = 0.0;
      for (int v = -s; v <= s; ++v) {
        a.taps.push_back(std::exp(-static_cast<double>(v) * v / (2.0 * sigma * sigma)));
        tot += a.taps.back();
      }
      for (double& t : a.taps) t /= tot;
      a.stride = s;
      a.origin = 0;
      a.n_out = n / s - 1;
      return a;
    }
    case OpKind::AvgPool: {
      const int p = axis == 0 ? L.ky : L.kx, s = axis == 0 ? L.sy : L.sx;
      a.taps.assign(p, 1.0 / p);
      a.stride = s;
      if (L.padding == Padding::Valid) {
        a.n_out = floordiv(n - p, s) + 1;
        a.origin = 0;
      } else {  // SAME: ceil(n / s) outputs, zero padding split as JAX does (the smaller half before)
        a.n_out = (n + s - 1) / s;
        const int pad = std::max((a.n_out - 1) * s + p - n, 0);
        a.origin = -(pad / 2);
      }
      return a;
    }
    case OpKind::Conv:
    case OpKind::Relu:
    case OpKind::GlobalAvgPool:
    case OpKind::Flatten:
    case OpKind::Dense:
      break;
  }
  malformed("pool_axis of a layer that does not pool");
}

PoolAxis identity_axis(int n) {
  PoolAxis a;
  a.stride = 1;
  a.origin = 0;
  a.n_out = n;
  a.taps = {1.0};
  return a;
}

// A box of linear offsets (or none).
struct Band {
  bool any = false;
  int y0 = 0, y1 = 0, x0 = 0, x1 = 0;
};
Band unite(const Band& a, const Band& b) {
  if (!a.any) return b;
  if (!b.any) return a;
  return Band{true, std::min(a.y0, b.y0), std::max(a.y1, b.y1), std::min(a.x0, b.x0), std::max(a.x1, b.x1)};
}
Band full_band(int h, int w) { return Band{true, -(h - 1), h - 1, -(w - 1), w - 1}; }
const Band kZero{true, 0, 0, 0, 0};

// The planes of a stage (its representation) that carry a band of linear offsets: circular stages carry d = 0
// alone or every plane, per axis.
Range carried(const Band& b, int h, int w, bool circular) {
  if (!circular) return Range{b.y0, b.y1, b.x0, b.x1};
  const bool zy = b.y0 == 0 && b.y1 == 0, zx = b.x0 == 0 && b.x1 == 0;
  return Range{0, zy ? 0 : h - 1, 0, zx ? 0 : w - 1};
}
// The linear offsets that a stage's carried planes hold.
Band linear(const Range& r, int h, int w, bool circular) {
  if (!circular) return Band{true, r.y0, r.y1, r.x0, r.x1};
  const bool zy = r.y1 == 0, zx = r.x1 == 0;
  return Band{true, zy ? 0 : -(h - 1), zy ? 0 : h - 1, zx ? 0 : -(w - 1), zx ? 0 : w - 1};
}

// The linear offsets of stage st that pooling into a band of next-stage linear offsets draws on: a pooling of
// stride s with w taps maps old offsets s*d' + [-(w-1), w-1] to new offset d'.
Band back(const Stage& st, const Band& need) {
  if (!need.any) return need;
  const int wy = static_cast<int>(st.pool_y.taps.size()) - 1, wx = static_cast<int>(st.pool_x.taps.size()) - 1;
  const int hy = st.h_out - 1, hx = st.w_out - 1;
  Band b{true, std::max(st.pool_y.stride * need.y0 - wy, -hy), std::min(st.pool_y.stride * need.y1 + wy, hy),
         std::max(st.pool_x.stride * need.x0 - wx, -hx), std::min(st.pool_x.stride * need.x1 + wx, hx)};
  if (b.y0 > b.y1 || b.x0 > b.x1) b.any = false;
  return b;
}

PoolTable make_table(const PoolAxis& p, int n, int n_next, bool next_circular, int lo, int hi) {
  PoolTable t;
  t.n = n;
  t.w = static_cast<int>(p.taps.size());
  for (int d = -(n - 1); d <= n - 1; ++d) {
    t.first.push_back(static_cast<int>(t.entries.size()));
    for (int delta = -(t.w - 1); delta <= t.w - 1; ++delta) {
      if (posmod(d - delta, p.stride) != 0) continue;
      const int dn = floordiv(d - delta, p.stride);
      if (dn <= -n_next || dn >= n_next) continue;  // no output pair has that offset
      const int plane = next_circular ? posmod(dn, n_next) : dn;
      if (plane < lo || plane > hi) continue;        // the next stage does not carry it
      std::vector<double> g(t.w, 0.0);
      bool any = false;
      for (int k = 0; k < t.w; ++k)
        if (k + delta >= 0 && k + delta < t.w) {
          g[k] = p.taps[k] * p.taps[k + delta];
          any = any || g[k] != 0.0;
        }
      if (!any) continue;
      t.entries.push_back(PoolEntry{dn, plane, static_cast<int>(t.g.size())});
      t.g.insert(t.g.end(), g.begin(), g.end());
    }
  }
  t.first.push_back(static_cast<int>(t.entries.size()));
  return t;
}

bool has_relu(const Stage& st) {
  return std::any_of(st.ops.begin(), st.ops.end(), [](const StageOp& o) { return o.kind == StageOp::Relu; });
}

// Stages as the layers give them (split at poolings and the readout), then split further where a CIRCULAR
// and a VALID convolution share a stage: the two need different representations, so an identity change of
// representation goes between them.
std::vector<Stage> split_representations(std::vector<Stage> in) {
  std::vector<Stage> out;
  for (Stage& st : in) {
    Stage cur = st;
    cur.ops.clear();
    cur.has_pool = false;
    bool circ = false, valid = false;
    for (const StageOp& op : st.ops) {
      const bool is_circ = op.kind == StageOp::Conv && op.wrap;
      const bool is_valid = op.kind == StageOp::Conv && (op.h_out != op.h_in || op.w_out != op.w_in);
      if ((is_circ && valid) || (is_valid && circ)) {
        cur.h_out = op.h_in;
        cur.w_out = op.w_in;
        cur.has_pool = true;
        cur.pool_layer = -1;
        cur.pool_y = identity_axis(op.h_in);
        cur.pool_x = identity_axis(op.w_in);
        out.push_back(cur);
        cur = Stage{};
        cur.h_in = op.h_in;
        cur.w_in = op.w_in;
        circ = valid = false;
      }
      circ = circ || is_circ;
      valid = valid || is_valid;
      cur.ops.push_back(op);
    }
    cur.h_out = st.h_out;
    cur.w_out = st.w_out;
    cur.has_pool = st.has_pool;
    cur.pool_layer = st.pool_layer;
    cur.pool_y = st.pool_y;
    cur.pool_x = st.pool_x;
    cur.circular = circ;
    out.push_back(cur);
  }
  for (Stage& st : out)
    st.circular = std::any_of(st.ops.begin(), st.ops.end(),
                              [](const StageOp& o) { return o.kind == StageOp::Conv && o.wrap; });
  return out;
}

void compile_scalar(Program& P, int i, const LayerSpec& L) {
  ScalarOp op;
  op.layer = i;
  switch (L.kind) {
    case OpKind::Dense:
      op.kind = ScalarOp::Dense;
      op.w2 = L.w_std * L.w_std;
      op.b2 = L.b_std * L.b_std;
      break;
    case OpKind::Relu:
      op.kind = ScalarOp::Relu;
      break;
    case OpKind::Conv:
    case OpKind::AvgPool:
    case OpKind::GaussianPool:
      malformed(layer_name(i, L.kind) + " is spatial but comes after the readout (or in a vector net)");
    case OpKind::GlobalAvgPool:
    case OpKind::Flatten:
      malformed(layer_name(i, L.kind) + ": a second readout, or a readout in a vector net");
  }
  P.scalar.push_back(op);
}

// The spatial part of a net: stages, resolutions, readout. Throws ProgramError when a layer does not fit.
void compile_spatial(Program& P, const ProgramSpec& spec, std::vector<Stage>& stages) {
  int h = spec.H, w = spec.W;
  Stage cur;
  cur.h_in = h;
  cur.w_in = w;
  bool read = false;
  for (int i = 0; i < static_cast<int>(spec.layers.size()); ++i) {
    const LayerSpec& L = spec.layers[i];
    if (read) {
      compile_scalar(P, i, L);
      continue;
    }
    LayerShape& ls = P.layer_shapes[i];
    ls.h_in = h;
    ls.w_in = w;
    const std::string name = layer_name(i, L.kind);
    switch (L.kind) {
      case OpKind::Conv: {
        StageOp op;
        op.kind = StageOp::Conv;
        op.layer = i;
        op.wrap = L.padding == Padding::Circular;
        op.ky = L.ky;
        op.kx = L.kx;
        const bool valid = L.padding == Padding::Valid;
        op.pad_y = valid ? 0 : (L.ky - 1) / 2;
        op.pad_x = valid ? 0 : (L.kx - 1) / 2;
        op.scale = L.w_std * L.w_std / (static_cast<double>(L.ky) * L.kx);
        op.bias2 = L.b_std * L.b_std;
        op.h_in = h;
        op.w_in = w;
        op.h_out = valid ? h - L.ky + 1 : h;
        op.w_out = valid ? w - L.kx + 1 : w;
        if (op.h_out < 1 || op.w_out < 1)
          throw ProgramError(name + ": a " + hw(L.ky, L.kx) + " VALID convolution does not fit the " + hw(h, w) +
                             " state there; the net is too deep for the image");
        cur.ops.push_back(op);
        h = op.h_out;
        w = op.w_out;
        break;
      }
      case OpKind::Relu: {
        StageOp op;
        op.kind = StageOp::Relu;
        op.layer = i;
        op.h_in = op.h_out = h;
        op.w_in = op.w_out = w;
        cur.ops.push_back(op);
        break;
      }
      case OpKind::AvgPool:
      case OpKind::GaussianPool: {
        const PoolAxis ay = pool_axis(L, 0, h), ax = pool_axis(L, 1, w);
        if (ay.n_out < 1 || ax.n_out < 1)
          throw ProgramError(name + ": pooling the " + hw(h, w) + " state there leaves " +
                             hw(std::max(ay.n_out, 0), std::max(ax.n_out, 0)) +
                             " positions; the image is pooled too much (or too small: (" + std::to_string(spec.H) +
                             ", " + std::to_string(spec.W) + "))");
        cur.h_out = h;
        cur.w_out = w;
        cur.has_pool = true;
        cur.pool_layer = i;
        cur.pool_y = ay;
        cur.pool_x = ax;
        stages.push_back(cur);
        h = ay.n_out;
        w = ax.n_out;
        cur = Stage{};
        cur.h_in = h;
        cur.w_in = w;
        break;
      }
      case OpKind::GlobalAvgPool:
      case OpKind::Flatten:
        cur.h_out = h;
        cur.w_out = w;
        stages.push_back(cur);
        P.readout = L.kind == OpKind::GlobalAvgPool ? Readout::Gap : Readout::Flatten;
        read = true;
        break;
      case OpKind::Dense:
        throw ProgramError(name + ": Dense acts on vectors; in a convolutional net it must come after the readout "
                           "(GlobalAvgPool or Flatten); use Conv(1) for a 1x1 convolution");
    }
    if (!read) {
      ls.h_out = h;
      ls.w_out = w;
    }
  }
  if (!read) malformed("a convolutional net needs a readout (GlobalAvgPool or Flatten) after its spatial layers");
}

// Which planes each stage carries, per mode, working back from the readout: Flatten needs d = 0, GlobalAvgPool
// every plane; a pooling needs the old offsets its windows reach. The self recursion needs d = 0 in every
// stage with a ReLU (its diagonal feeds the ReLU of every pair) and the readout itself when a scalar ReLU
// follows it.
void plan_planes(Program& P) {
  std::vector<Stage>& S = P.stages;
  const bool scalar_relu = P.n_scalar_relu > 0;
  const Stage& last = S.back();
  Band need[2];
  need[kPair] = P.readout == Readout::Gap ? full_band(last.h_out, last.w_out) : kZero;
  if (P.readout == Readout::Flatten || has_relu(last)) need[kSelf] = kZero;
  if (P.readout == Readout::Gap && scalar_relu) need[kSelf] = full_band(last.h_out, last.w_out);
  for (int s = static_cast<int>(S.size()) - 1; s >= 0; --s) {
    Stage& st = S[s];
    for (int m = 0; m < 2; ++m) {
      if (s + 1 < static_cast<int>(S.size())) {
        const Stage& nx = S[s + 1];
        need[m] = nx.active[m] ? back(st, linear(nx.need[m], nx.h_in, nx.w_in, nx.circular)) : Band{};
      }
      if (m == kSelf && has_relu(st)) need[m] = unite(need[m], kZero);
      st.active[m] = need[m].any;
      st.need[m] = need[m].any ? carried(need[m], st.h_out, st.w_out, st.circular) : Range{};
    }
  }
  if (!S[0].active[kPair]) malformed("no plane is read out");
}

}  // namespace

const OpInfo& op_info(OpKind k) {
  const int i = static_cast<int>(k);
  if (i < 0 || i >= kNumOpKinds) malformed("unknown op kind " + std::to_string(i));
  return kOps[i];
}

const OpInfo* op_by_token(const std::string& token) {
  for (const OpInfo& o : kOps)
    if (token == o.token) return &o;
  return nullptr;
}

const char* padding_name(Padding p) {
  switch (p) {
    case Padding::Same:
      return "SAME";
    case Padding::Valid:
      return "VALID";
    case Padding::Circular:
      return "CIRCULAR";
  }
  malformed("unknown padding " + std::to_string(static_cast<int>(p)));
}

Program compile(const ProgramSpec& spec) {
  if (spec.H < 1 || spec.W < 1 || spec.C < 1) malformed("input sizes must be positive");
  if (!spec.spatial && (spec.H != 1 || spec.W != 1)) malformed("a vector input has H = W = 1");
  if (static_cast<int64_t>(spec.H) * spec.W * spec.C > (int64_t(1) << 30)) malformed("input too large");
  if (spec.layers.empty()) malformed("no layers");
  Program P;
  P.H = spec.H;
  P.W = spec.W;
  P.C = spec.C;
  P.spatial = spec.spatial;
  P.layer_shapes.assign(spec.layers.size(), LayerShape{});
  for (int i = 0; i < static_cast<int>(spec.layers.size()); ++i) check_params(i, spec.layers[i]);
  if (!spec.spatial) {
    for (int i = 0; i < static_cast<int>(spec.layers.size()); ++i) compile_scalar(P, i, spec.layers[i]);
  } else {
    std::vector<Stage> stages;
    compile_spatial(P, spec, stages);
    P.stages = split_representations(std::move(stages));
  }

  // Self-data layout and plane sizes.
  int off = 0;
  P.max_plane = 1;
  for (Stage& st : P.stages) {
    P.max_plane = std::max(P.max_plane, st.h_in * st.w_in);
    for (StageOp& op : st.ops) {
      P.max_plane = std::max(P.max_plane, op.h_out * op.w_out);
      if (op.kind != StageOp::Relu) continue;
      op.relu_slot = static_cast<int>(P.diags.size());
      P.diags.push_back(DiagSlot{off, op.h_in, op.w_in, st.circular});
      off += op.h_in * op.w_in;
    }
  }
  P.scalar_offset = off;
  P.n_scalar_relu = 0;
  for (ScalarOp& op : P.scalar)
    if (op.kind == ScalarOp::Relu) op.relu_slot = P.n_scalar_relu++;
  P.self_size = off + P.n_scalar_relu;

  if (P.spatial) {
    plan_planes(P);
    for (size_t s = 0; s < P.stages.size(); ++s) {
      Stage& st = P.stages[s];
      if (s > 0)
        for (int m = 0; m < 2; ++m)
          if (st.active[m]) {
            st.store[m] = plane_offsets(st.need[m], st.h_in, st.w_in, st.circular);
            P.max_store[m] = std::max(P.max_store[m], st.store[m].back());
          }
      if (!st.has_pool) continue;
      const Stage& nx = P.stages[s + 1];
      for (int m = 0; m < 2; ++m) {
        if (!nx.active[m]) continue;
        st.table_y[m] = make_table(st.pool_y, st.h_out, nx.h_in, nx.circular, nx.need[m].y0, nx.need[m].y1);
        st.table_x[m] = make_table(st.pool_x, st.w_out, nx.w_in, nx.circular, nx.need[m].x0, nx.need[m].x1);
      }
    }
    const Stage& last = P.stages.back();
    const double n = static_cast<double>(last.h_out) * last.w_out;
    P.readout_den = P.readout == Readout::Gap ? n * n : n;
  }
  return P;
}

std::string Program::describe() const {
  std::ostringstream o;
  o << "Program(" << H << "x" << W << "x" << C << ", " << stages.size() << " stages";
  for (const Stage& st : stages) o << (st.circular ? " C" : " L") << st.h_in << "x" << st.w_in;
  o << ", readout=" << (readout == Readout::Gap ? "gap" : readout == Readout::Flatten ? "flatten" : "none") << ", "
    << scalar.size() << " scalar ops, self_size=" << self_size << ")";
  return o.str();
}

}  // namespace ntkfast
