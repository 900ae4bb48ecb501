#include "core/program.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace ntkfast {

namespace {

// The op table, in enum order (checked below).
constexpr OpInfo kOps[kNumOpKinds] = {
    {OpKind::Conv, "conv", "Conv", 9},
    {OpKind::Dense, "dense", "Dense", 4},
    {OpKind::Relu, "relu", "ReLU", 0},
    {OpKind::ABRelu, "abrelu", "ABRelu", 2},
    {OpKind::RectMono, "rectmono", "RectifiedMonomial", 1},
    {OpKind::Erf, "erf", "Erf", 3},
    {OpKind::Gelu, "gelu", "Gelu", 0},
    {OpKind::Sin, "sin", "Sin", 3},
    {OpKind::Monomial, "monomial", "Monomial", 1},
    {OpKind::Hermite, "hermite", "Hermite", 1},
    {OpKind::Polynomial, "polynomial", "Polynomial", -1},
    {OpKind::Sign, "sign", "Sign", 0},
    {OpKind::LayerNorm, "layernorm", "LayerNorm", 1},
    {OpKind::AvgPool, "avgpool", "AvgPool", 5},
    {OpKind::SumPool, "sumpool", "SumPool", 5},
    {OpKind::GaussianPool, "gaussianpool", "GaussianPool", 2},
    {OpKind::GlobalAvgPool, "globalavgpool", "GlobalAvgPool", 0},
    {OpKind::GlobalSumPool, "globalsumpool", "GlobalSumPool", 0},
    {OpKind::Flatten, "flatten", "Flatten", 0},
    {OpKind::Identity, "identity", "Identity", 0},
    {OpKind::FanOut, "fanout", "FanOut", 1},
    {OpKind::Parallel, "parallel", "parallel", 1},
    {OpKind::Branch, "branch", "branch", 0},
    {OpKind::End, "end", "end", 0},
    {OpKind::FanInSum, "faninsum", "FanInSum", 0},
};

// What a layer kind does to the state, for the compiler's switches.
enum class Role { Affine, Pointwise, Pool, Readout, Structure };
Role role(OpKind k) {
  switch (k) {
    case OpKind::Conv:
    case OpKind::Dense:
      return Role::Affine;
    case OpKind::Relu:
    case OpKind::ABRelu:
    case OpKind::RectMono:
    case OpKind::Erf:
    case OpKind::Gelu:
    case OpKind::Sin:
    case OpKind::Monomial:
    case OpKind::Hermite:
    case OpKind::Polynomial:
    case OpKind::Sign:
    case OpKind::LayerNorm:
      return Role::Pointwise;
    case OpKind::AvgPool:
    case OpKind::SumPool:
    case OpKind::GaussianPool:
      return Role::Pool;
    case OpKind::GlobalAvgPool:
    case OpKind::GlobalSumPool:
    case OpKind::Flatten:
      return Role::Readout;
    case OpKind::Identity:
    case OpKind::FanOut:
    case OpKind::Parallel:
    case OpKind::Branch:
    case OpKind::End:
    case OpKind::FanInSum:
      return Role::Structure;
  }
  throw ProgramError("invalid layer program: unknown op kind " + std::to_string(static_cast<int>(k)));
}

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
  auto finite = [&](double v, const char* what, int sign) {  // sign: 1 (> 0), 0 (>= 0), -1 (any)
    if (!std::isfinite(v) || (sign == 1 && v <= 0.0) || (sign == 0 && v < 0.0))
      malformed(name + ": " + what + " must be a finite number" + (sign == 1 ? " > 0" : sign == 0 ? " >= 0" : ""));
  };
  switch (L.kind) {
    case OpKind::Conv:
    case OpKind::Dense:
      if (L.kind == OpKind::Conv && (L.ky < 1 || L.kx < 1 || L.sy < 1 || L.sx < 1))
        malformed(name + ": the window and the stride must be at least 1");
      finite(L.w_std, "W_std", 1);
      finite(L.b_std, "b_std", 0);
      if (L.width < 0) malformed(name + ": width must be >= 0 (0: unknown)");
      break;
    case OpKind::AvgPool:
    case OpKind::SumPool:
      if (L.ky < 1 || L.kx < 1 || L.sy < 1 || L.sx < 1) malformed(name + ": window and stride must be >= 1");
      if (L.padding == Padding::Circular) malformed(name + ": padding must be SAME or VALID");
      break;
    case OpKind::GaussianPool:
      if (L.sy < 1) malformed(name + ": the stride must be >= 1");
      finite(L.sigma, "sigma (0 for the default)", 0);
      break;
    case OpKind::ABRelu:
      finite(L.a, "a", -1);
      finite(L.b, "b", -1);
      if (L.a == 0.0 && L.b == 0.0) malformed(name + ": a = b = 0 is the zero function");
      break;
    case OpKind::Erf:
    case OpKind::Sin:
      finite(L.a, "a", -1);
      finite(L.b, "b", -1);
      finite(L.c, "c", -1);
      break;
    case OpKind::LayerNorm:
      finite(L.a, "eps", 0);
      break;
    case OpKind::RectMono:
      if (L.degree < 0 || L.degree > kMaxRectDegree)
        malformed(name + ": degree must be in 0.." + std::to_string(kMaxRectDegree));
      break;
    case OpKind::Monomial:
    case OpKind::Hermite:
      if (L.degree < 0 || L.degree > kMaxPolyDegree)
        malformed(name + ": degree must be in 0.." + std::to_string(kMaxPolyDegree));
      break;
    case OpKind::Polynomial:
      if (L.coef.empty() || static_cast<int>(L.coef.size()) > kMaxPolyDegree + 1)
        malformed(name + ": 1 to " + std::to_string(kMaxPolyDegree + 1) + " coefficients");
      for (double c : L.coef) finite(c, "every coefficient", -1);
      break;
    case OpKind::FanOut:
    case OpKind::Parallel:
      if (L.count < 1 || L.count > 64) malformed(name + ": 1 to 64 streams");
      break;
    case OpKind::Relu:
    case OpKind::Gelu:
    case OpKind::Sign:
    case OpKind::GlobalAvgPool:
    case OpKind::GlobalSumPool:
    case OpKind::Flatten:
    case OpKind::Identity:
    case OpKind::Branch:
    case OpKind::End:
    case OpKind::FanInSum:
      break;
  }
}

// A polynomial activation sum_m c[m] x^m as its ActParams table: for u = sqrt(p) z, x^m expands in
// probabilists' Hermite polynomials (x^m = sum_i m! / (2^i i! (m-2i)!) He_{m-2i}), so that
// E[f(u) f(v)] = sum_l q_l(px) q_l(py) s^l with q_l(p) = sum_i c[l+2i] (l+2i)! / (2^i i! sqrt(l!)) p^i.
void poly_table(const std::vector<double>& c, double (*q)[kPolyCols]) {
  auto fact = [](int n) {
    double f = 1.0;
    for (int k = 2; k <= n; ++k) f *= k;
    return f;
  };
  const int deg = static_cast<int>(c.size()) - 1;
  for (int l = 0; l <= kMaxPolyDegree; ++l)
    for (int i = 0; i < kPolyCols; ++i) {
      const int m = l + 2 * i;
      q[l][i] = m <= deg ? c[m] * fact(m) / (std::ldexp(1.0, i) * fact(i) * std::sqrt(fact(l))) : 0.0;
    }
}

// The pointwise map of an activation or LayerNorm layer.
ActParams make_act(const LayerSpec& L) {
  ActParams A;
  std::vector<double> coef;
  switch (L.kind) {
    case OpKind::Relu:
      A.kind = ActKind::Relu;
      return A;
    case OpKind::ABRelu:
      A.kind = ActKind::ABRelu;
      A.a = L.a;
      A.b = L.b;
      return A;
    case OpKind::RectMono:
      A.kind = ActKind::RectMono;
      A.degree = L.degree;
      return A;
    case OpKind::Erf:
    case OpKind::Sin:
      A.kind = L.kind == OpKind::Erf ? ActKind::Erf : ActKind::Sin;
      A.a = L.a;
      A.b = L.b;
      A.c = L.c;
      return A;
    case OpKind::Gelu:
      A.kind = ActKind::Gelu;
      return A;
    case OpKind::Sign:
      A.kind = ActKind::Sign;
      return A;
    case OpKind::LayerNorm:
      A.kind = ActKind::LayerNorm;
      A.a = L.a;
      return A;
    case OpKind::Monomial:
      coef.assign(L.degree + 1, 0.0);
      coef[L.degree] = 1.0;
      break;
    case OpKind::Hermite: {  // He_n / sqrt(n!): He_n(x) = n! sum_k (-1)^k x^(n-2k) / (k! (n-2k)! 2^k)
      const int n = L.degree;
      coef.assign(n + 1, 0.0);
      double fn = 1.0;
      for (int k = 2; k <= n; ++k) fn *= k;
      for (int k = 0; 2 * k <= n; ++k) {
        double d = 1.0;
        for (int j = 2; j <= k; ++j) d *= j;
        for (int j = 2; j <= n - 2 * k; ++j) d *= j;
        coef[n - 2 * k] = ((k % 2) ? -1.0 : 1.0) * fn / (d * std::ldexp(1.0, k)) / std::sqrt(fn);
      }
      break;
    }
    case OpKind::Polynomial:
      coef = L.coef;
      break;
    case OpKind::Conv:
    case OpKind::Dense:
    case OpKind::AvgPool:
    case OpKind::SumPool:
    case OpKind::GaussianPool:
    case OpKind::GlobalAvgPool:
    case OpKind::GlobalSumPool:
    case OpKind::Flatten:
    case OpKind::Identity:
    case OpKind::FanOut:
    case OpKind::Parallel:
    case OpKind::Branch:
    case OpKind::End:
    case OpKind::FanInSum:
      malformed("make_act of a layer that is not pointwise");
  }
  while (coef.size() > 1 && coef.back() == 0.0) coef.pop_back();
  A.kind = ActKind::Poly;
  A.degree = static_cast<int>(coef.size()) - 1;
  poly_table(coef, A.q);
  std::vector<double> dcoef(std::max<size_t>(coef.size() - 1, 1), 0.0);
  for (size_t m = 1; m < coef.size(); ++m) dcoef[m - 1] = m * coef[m];
  poly_table(dcoef, A.dq);
  return A;
}

// The pooling of one axis of an n-position state (AvgPool, SumPool or GaussianPool).
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
    case OpKind::AvgPool:
    case OpKind::SumPool: {
      const int p = axis == 0 ? L.ky : L.kx, s = axis == 0 ? L.sy : L.sx;
      a.taps.assign(p, L.kind == OpKind::AvgPool ? 1.0 / p : 1.0);
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
    case OpKind::Dense:
    case OpKind::Relu:
    case OpKind::ABRelu:
    case OpKind::RectMono:
    case OpKind::Erf:
    case OpKind::Gelu:
    case OpKind::Sin:
    case OpKind::Monomial:
    case OpKind::Hermite:
    case OpKind::Polynomial:
    case OpKind::Sign:
    case OpKind::LayerNorm:
    case OpKind::GlobalAvgPool:
    case OpKind::GlobalSumPool:
    case OpKind::Flatten:
    case OpKind::Identity:
    case OpKind::FanOut:
    case OpKind::Parallel:
    case OpKind::Branch:
    case OpKind::End:
    case OpKind::FanInSum:
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
Band back(const RegPool& p, const Band& need) {
  if (!need.any) return need;
  const int wy = static_cast<int>(p.y.taps.size()) - 1, wx = static_cast<int>(p.x.taps.size()) - 1;
  const int hy = p.h_src - 1, hx = p.w_src - 1;
  Band b{true, std::max(p.y.stride * need.y0 - wy, -hy), std::min(p.y.stride * need.y1 + wy, hy),
         std::max(p.x.stride * need.x0 - wx, -hx), std::min(p.x.stride * need.x1 + wx, hx)};
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

bool has_act(const Stage& st) {
  return std::any_of(st.ops.begin(), st.ops.end(), [](const StageOp& o) { return o.kind == StageOp::Act; });
}

// The channel count of the state, where known (0: unknown), for the fan-in of standard-parameterized layers.
struct Channels {
  int64_t n = 0;
  // Fan-in factor of an affine layer i (its input channels times its window) and the channels after it.
  double fan_in(int i, const LayerSpec& L) const {
    if (L.standard && n <= 0)
      throw ProgramError(layer_name(i, L.kind) + ": parameterization='standard' needs the number of channels of "
                         "its input; give width= (the output channels) to the Conv or Dense layer before it");
    return static_cast<double>(n) * (L.kind == OpKind::Conv ? L.ky * L.kx : 1);
  }
};

// T' of an affine layer: NTK parameterization T' = W^2 T + S'; standard T' = W^2 T + fan_in S + [bias].
template <class Op>
void affine_t(Op& op, int i, const LayerSpec& L, Channels& ch, double window) {
  op.standard = L.standard;
  if (L.standard) {
    op.t_s = ch.fan_in(i, L) / window;
    op.t_b = L.bias ? 1.0 : 0.0;
  }
  ch.n = L.width;
}

// A net as a straight list of steps on registers: a layer on one register, a copy (FanOut) or an add
// (FanInSum) of registers. Registers are reused once freed, so ids stay below the most streams alive.
struct Step {
  enum Kind { Layer, Copy, Add } kind = Layer;
  int layer = -1, reg = 0, src = -1;
};

std::vector<Step> linearize(const ProgramSpec& spec, int& n_regs, int& final_reg) {
  std::vector<Step> steps;
  std::vector<int> list{0}, free_regs;
  n_regs = 1;
  struct Frame {
    std::vector<int> regs, outs;
    int branch = -1, layer = -1;
  };
  std::vector<Frame> frames;
  auto fresh = [&]() {
    if (!free_regs.empty()) {
      const int r = free_regs.back();
      free_regs.pop_back();
      return r;
    }
    return n_regs++;
  };
  for (int i = 0; i < static_cast<int>(spec.layers.size()); ++i) {
    const LayerSpec& L = spec.layers[i];
    const std::string name = layer_name(i, L.kind);
    switch (L.kind) {
      case OpKind::FanOut: {
        if (list.size() != 1) malformed(name + " takes one stream");
        const int r = list[0];
        for (int k = 1; k < L.count; ++k) {
          const int d = fresh();
          steps.push_back(Step{Step::Copy, i, d, r});
          list.push_back(d);
        }
        break;
      }
      case OpKind::Parallel:
        if (static_cast<int>(list.size()) != L.count) malformed(name + ": as many branches as streams");
        frames.push_back(Frame{list, {}, -1, i});
        list.clear();
        break;
      case OpKind::Branch:
      case OpKind::End: {
        if (frames.empty()) malformed(name + " outside a parallel");
        Frame& f = frames.back();
        if (f.branch >= 0) {
          if (list.size() != 1) malformed("a branch of layer " + std::to_string(f.layer) + " ends with " +
                                          std::to_string(list.size()) + " streams");
          f.outs.push_back(list[0]);
        }
        if (L.kind == OpKind::Branch) {
          if (++f.branch >= static_cast<int>(f.regs.size())) malformed(name + ": more branches than streams");
          list = {f.regs[f.branch]};
        } else {
          if (f.branch + 1 != static_cast<int>(f.regs.size())) malformed(name + ": fewer branches than streams");
          list = f.outs;
          frames.pop_back();
        }
        break;
      }
      case OpKind::FanInSum:
        for (size_t k = 1; k < list.size(); ++k) {
          steps.push_back(Step{Step::Add, i, list[0], list[k]});
          free_regs.push_back(list[k]);
        }
        list.resize(1);
        break;
      case OpKind::Identity:
        break;
      default:
        if (list.size() != 1) malformed(name + " acts on one stream; got " + std::to_string(list.size()));
        steps.push_back(Step{Step::Layer, i, list[0], -1});
        break;
    }
  }
  if (!frames.empty() || list.size() != 1) malformed("the net does not end with one stream");
  final_reg = list[0];
  return steps;
}

void compile_scalar_step(Program& P, const ProgramSpec& spec, const Step& stp, std::vector<Channels>& ch) {
  ScalarOp op;
  op.layer = stp.layer;
  op.reg = stp.reg;
  op.src = stp.src;
  switch (stp.kind) {
    case Step::Copy:
      op.kind = ScalarOp::Copy;
      ch[stp.reg] = ch[stp.src];
      P.scalar.push_back(op);
      return;
    case Step::Add:
      op.kind = ScalarOp::Add;
      P.scalar.push_back(op);
      return;
    case Step::Layer:
      break;
  }
  const LayerSpec& L = spec.layers[stp.layer];
  const int i = stp.layer;
  switch (role(L.kind)) {
    case Role::Affine:
      if (L.kind != OpKind::Dense) break;
      op.kind = ScalarOp::Dense;
      op.w2 = L.w_std * L.w_std;
      op.b2 = L.bias ? L.b_std * L.b_std : 0.0;
      affine_t(op, i, L, ch[stp.reg], 1.0);
      P.scalar.push_back(op);
      return;
    case Role::Pointwise:
      op.kind = ScalarOp::Act;
      op.act = make_act(L);
      P.scalar.push_back(op);
      return;
    case Role::Pool:
    case Role::Structure:
      break;
    case Role::Readout:
      malformed(layer_name(i, L.kind) + ": a second readout, or a readout in a vector net");
  }
  malformed(layer_name(i, L.kind) + " is spatial but comes after the readout (or in a vector net)");
}

// The spatial part: ops on registers assigned to stages by how many poolings their register has crossed
// (every register must cross the same ones before it is added to another), then split further where a
// CIRCULAR and a VALID convolution would share a stage. Throws ProgramError when a layer does not fit.
struct RegState {
  int b = 0, h = 0, w = 0;
};

void compile_spatial(Program& P, const ProgramSpec& spec, const std::vector<Step>& steps, size_t& next,
                     std::vector<Channels>& ch) {
  std::vector<Stage> stages(1);
  stages[0].h_in = spec.H;
  stages[0].w_in = spec.W;
  stages[0].regs_in = {0};
  std::vector<RegState> reg(P.n_regs);
  reg[0] = RegState{0, spec.H, spec.W};
  auto stage_at = [&](int b) -> Stage& {
    while (static_cast<int>(stages.size()) <= b) stages.emplace_back();
    return stages[b];
  };
  // Register r leaves its stage through a pooling: the next stage's resolution must be the same for all.
  auto pool_into = [&](int r, int layer, const PoolAxis& ay, const PoolAxis& ax) {
    RegState& R = reg[r];
    Stage& st = stage_at(R.b);
    RegPool p;
    p.reg = r;
    p.layer = layer;
    p.h_src = R.h;
    p.w_src = R.w;
    p.y = ay;
    p.x = ax;
    st.pools.push_back(p);
    Stage& nx = stage_at(R.b + 1);
    if (nx.regs_in.empty()) {
      nx.h_in = ay.n_out;
      nx.w_in = ax.n_out;
    } else if (nx.h_in != ay.n_out || nx.w_in != ax.n_out) {
      throw ProgramError(layer_name(layer, spec.layers[layer].kind) + ": the branches change resolution "
                         "differently (" + hw(nx.h_in, nx.w_in) + " and " + hw(ay.n_out, ax.n_out) +
                         "); every branch must pool or stride alike before the FanInSum");
    }
    nx.regs_in.push_back(r);
    R.b += 1;
    R.h = ay.n_out;
    R.w = ax.n_out;
  };
  for (; next < steps.size(); ++next) {
    const Step& stp = steps[next];
    const int r = stp.reg;
    if (stp.kind != Step::Layer) {
      StageOp op;
      op.kind = stp.kind == Step::Copy ? StageOp::Copy : StageOp::Add;
      op.reg = r;
      op.src = stp.src;
      op.layer = stp.layer;
      const RegState& S = reg[stp.src];
      if (stp.kind == Step::Copy) {
        reg[r] = S;
        ch[r] = ch[stp.src];
      } else if (S.b != reg[r].b || S.h != reg[r].h || S.w != reg[r].w) {
        throw ProgramError(layer_name(stp.layer, OpKind::FanInSum) + ": the branches end at different resolutions (" +
                           hw(reg[r].h, reg[r].w) + " and " + hw(S.h, S.w) + ")");
      }
      op.h_in = op.h_out = S.h;
      op.w_in = op.w_out = S.w;
      stage_at(S.b).ops.push_back(op);
      continue;
    }
    const int i = stp.layer;
    const LayerSpec& L = spec.layers[i];
    RegState& R = reg[r];
    const int h = R.h, w = R.w;
    LayerShape& ls = P.layer_shapes[i];
    ls.h_in = h;
    ls.w_in = w;
    const std::string name = layer_name(i, L.kind);
    switch (role(L.kind)) {
      case Role::Affine: {
        if (L.kind == OpKind::Dense)
          throw ProgramError(name + ": Dense acts on vectors; in a convolutional net it must come after the "
                             "readout (GlobalAvgPool, GlobalSumPool or Flatten); use Conv(1) for a 1x1 convolution");
        // A strided convolution is the stride-1 convolution at the strided padding, subsampled: outputs
        // s j, j < ceil(n / s) for SAME/CIRCULAR (padding as JAX: the smaller half before), (n - k) / s + 1
        // for VALID.
        if (L.sy > h || L.sx > w)
          throw ProgramError(name + ": stride (" + std::to_string(L.sy) + ", " + std::to_string(L.sx) +
                             ") is larger than the " + hw(h, w) + " state there");
        StageOp op;
        op.kind = StageOp::Conv;
        op.reg = r;
        op.layer = i;
        op.wrap = L.padding == Padding::Circular;
        op.ky = L.ky;
        op.kx = L.kx;
        const bool valid = L.padding == Padding::Valid;
        const int n_y = valid ? floordiv(h - L.ky, L.sy) + 1 : (h + L.sy - 1) / L.sy;
        const int n_x = valid ? floordiv(w - L.kx, L.sx) + 1 : (w + L.sx - 1) / L.sx;
        op.pad_y = valid ? 0 : std::max((n_y - 1) * L.sy + L.ky - h, 0) / 2;
        op.pad_x = valid ? 0 : std::max((n_x - 1) * L.sx + L.kx - w, 0) / 2;
        op.scale = L.w_std * L.w_std / (static_cast<double>(L.ky) * L.kx);
        op.bias2 = L.bias ? L.b_std * L.b_std : 0.0;
        affine_t(op, i, L, ch[r], static_cast<double>(L.ky) * L.kx);
        op.h_in = h;
        op.w_in = w;
        op.h_out = valid ? h - L.ky + 1 : h;
        op.w_out = valid ? w - L.kx + 1 : w;
        if (op.h_out < 1 || op.w_out < 1)
          throw ProgramError(name + ": a " + hw(L.ky, L.kx) + " VALID convolution does not fit the " + hw(h, w) +
                             " state there; the net is too deep for the image");
        stage_at(R.b).ops.push_back(op);
        R.h = op.h_out;
        R.w = op.w_out;
        if (L.sy > 1 || L.sx > 1) {
          PoolAxis ay, ax;
          ay.stride = L.sy;
          ay.n_out = n_y;
          ay.taps = {1.0};
          ax.stride = L.sx;
          ax.n_out = n_x;
          ax.taps = {1.0};
          pool_into(r, i, ay, ax);
        }
        break;
      }
      case Role::Pointwise: {
        StageOp op;
        op.kind = StageOp::Act;
        op.reg = r;
        op.layer = i;
        op.act = make_act(L);
        op.h_in = op.h_out = h;
        op.w_in = op.w_out = w;
        stage_at(R.b).ops.push_back(op);
        break;
      }
      case Role::Pool: {
        const PoolAxis ay = pool_axis(L, 0, h), ax = pool_axis(L, 1, w);
        if (ay.n_out < 1 || ax.n_out < 1)
          throw ProgramError(name + ": pooling the " + hw(h, w) + " state there leaves " +
                             hw(std::max(ay.n_out, 0), std::max(ax.n_out, 0)) +
                             " positions; the image is pooled too much (or too small: (" + std::to_string(spec.H) +
                             ", " + std::to_string(spec.W) + "))");
        pool_into(r, i, ay, ax);
        break;
      }
      case Role::Readout: {
        Stage& st = stage_at(R.b);
        if (R.b + 1 != static_cast<int>(stages.size())) malformed(name + ": a branch was not summed before it");
        st.readout_reg = r;
        st.readout_h = h;
        st.readout_w = w;
        P.readout = L.kind == OpKind::Flatten ? Readout::Flatten : Readout::Gap;
        P.readout_den = L.kind == OpKind::GlobalSumPool ? 1.0
                        : L.kind == OpKind::Flatten    ? static_cast<double>(h) * w
                                                       : static_cast<double>(h) * w * h * w;
        if (L.kind == OpKind::Flatten && ch[r].n > 0) ch[r].n *= static_cast<int64_t>(h) * w;
        ls.h_out = ls.w_out = -1;
        ++next;
        P.stages = std::move(stages);
        return;
      }
      case Role::Structure:
        malformed(name + ": a structure token in a straight step");
    }
    ls.h_out = R.h;
    ls.w_out = R.w;
  }
  malformed("a convolutional net needs a readout (GlobalAvgPool, GlobalSumPool or Flatten) after its spatial "
            "layers");
}

// Splits a stage where a CIRCULAR and a VALID convolution would share it: the two need different plane
// representations, so every register alive there changes representation through an identity pooling.
std::vector<Stage> split_representations(std::vector<Stage> in) {
  std::vector<Stage> out;
  for (Stage& st : in) {
    Stage cur = st;
    cur.ops.clear();
    cur.pools.clear();
    bool circ = false, valid = false;
    for (size_t p = 0; p < st.ops.size(); ++p) {
      const StageOp& op = st.ops[p];
      const bool is_circ = op.kind == StageOp::Conv && op.wrap;
      const bool is_valid = op.kind == StageOp::Conv && (op.h_out != op.h_in || op.w_out != op.w_in);
      if ((is_circ && valid) || (is_valid && circ)) {
        // Registers alive across position p: entered or copied before it, used at or after it.
        std::vector<int> alive;
        std::vector<std::pair<int, int>> res(64, {-1, -1});
        for (int r : cur.regs_in) res[r] = {cur.h_in, cur.w_in};
        for (const StageOp& o : cur.ops) {
          res[o.reg] = {o.h_out, o.w_out};
          if (o.kind == StageOp::Add) res[o.src] = {-1, -1};
        }
        auto used_later = [&](int r) {
          for (size_t q = p; q < st.ops.size(); ++q)
            if (st.ops[q].reg == r || st.ops[q].src == r) return true;
          for (const RegPool& pl : st.pools)
            if (pl.reg == r) return true;
          return st.pools.empty() && st.readout_reg == r;
        };
        for (int r = 0; r < static_cast<int>(res.size()); ++r)
          if (res[r].first > 0 && used_later(r)) alive.push_back(r);
        for (int r : alive) {
          if (res[r] != res[alive[0]])
            throw ProgramError("a CIRCULAR and a VALID convolution meet where branches have different resolutions; "
                               "give the branches the same padding");
          RegPool pl;
          pl.reg = r;
          pl.layer = -1;
          pl.h_src = res[r].first;
          pl.w_src = res[r].second;
          pl.y = identity_axis(pl.h_src);
          pl.x = identity_axis(pl.w_src);
          cur.pools.push_back(pl);
        }
        out.push_back(cur);
        cur = Stage{};
        cur.h_in = res[alive[0]].first;
        cur.w_in = res[alive[0]].second;
        cur.regs_in = alive;
        cur.readout_reg = st.readout_reg;
        cur.readout_h = st.readout_h;
        cur.readout_w = st.readout_w;
        circ = valid = false;
      }
      circ = circ || is_circ;
      valid = valid || is_valid;
      cur.ops.push_back(op);
    }
    cur.pools = st.pools;
    out.push_back(cur);
  }
  for (Stage& st : out)
    st.circular = std::any_of(st.ops.begin(), st.ops.end(),
                              [](const StageOp& o) { return o.kind == StageOp::Conv && o.wrap; });
  return out;
}

// Which planes each stage carries, per mode, working back from the readout: Flatten needs d = 0, GlobalAvgPool
// every plane; a pooling needs the old offsets its windows reach (the union over the registers that pool).
// The self recursion needs d = 0 in every stage with a pointwise op (its diagonal feeds the op of every pair)
// and the readout itself when a scalar pointwise op follows it.
void plan_planes(Program& P) {
  std::vector<Stage>& S = P.stages;
  const bool scalar_act = P.n_scalar_relu > 0;
  const Stage& last = S.back();
  Band need[2];
  need[kPair] = P.readout == Readout::Gap ? full_band(last.readout_h, last.readout_w) : kZero;
  if (P.readout == Readout::Flatten || has_act(last)) need[kSelf] = kZero;
  if (P.readout == Readout::Gap && scalar_act) need[kSelf] = full_band(last.readout_h, last.readout_w);
  for (int s = static_cast<int>(S.size()) - 1; s >= 0; --s) {
    Stage& st = S[s];
    for (int m = 0; m < 2; ++m) {
      if (s + 1 < static_cast<int>(S.size())) {
        const Stage& nx = S[s + 1];
        need[m] = Band{};
        if (nx.active[m]) {
          const Band lin = linear(nx.need[m], nx.h_in, nx.w_in, nx.circular);
          for (const RegPool& p : st.pools) need[m] = unite(need[m], back(p, lin));
        }
      }
      if (m == kSelf && has_act(st)) need[m] = unite(need[m], kZero);
      st.active[m] = need[m].any;
      st.need[m] = need[m].any ? carried(need[m], st.h_in, st.w_in, st.circular) : Range{};
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
  const std::vector<Step> steps = linearize(spec, P.n_regs, P.final_reg);
  if (P.n_regs > 64) malformed("more than 64 streams alive at once");
  std::vector<Channels> ch(P.n_regs);
  ch[0].n = spec.C;
  size_t next = 0;
  if (spec.spatial) {
    compile_spatial(P, spec, steps, next, ch);
    P.stages = split_representations(std::move(P.stages));
  }
  P.readout_reg = spec.spatial ? P.stages.back().readout_reg : 0;
  for (; next < steps.size(); ++next) compile_scalar_step(P, spec, steps[next], ch);

  // Self-data layout and plane sizes.
  int off = 0;
  P.max_plane = 1;
  for (Stage& st : P.stages) {
    P.max_plane = std::max(P.max_plane, st.h_in * st.w_in);
    for (StageOp& op : st.ops) {
      P.max_plane = std::max(P.max_plane, op.h_out * op.w_out);
      if (op.kind != StageOp::Act) continue;
      op.relu_slot = static_cast<int>(P.diags.size());
      P.diags.push_back(DiagSlot{off, op.h_in, op.w_in, st.circular});
      off += op.h_in * op.w_in;
    }
  }
  P.scalar_offset = off;
  P.n_scalar_relu = 0;
  for (ScalarOp& op : P.scalar)
    if (op.kind == ScalarOp::Act) op.relu_slot = P.n_scalar_relu++;
  P.self_size = off + P.n_scalar_relu;

  if (P.spatial) {
    plan_planes(P);
    for (size_t s = 0; s < P.stages.size(); ++s) {
      Stage& st = P.stages[s];
      if (s > 0)
        for (int m = 0; m < 2; ++m)
          if (st.active[m]) {
            st.store[m] = plane_offsets(st.need[m], st.h_in, st.w_in, st.circular);
            P.max_store[m] = std::max<int64_t>(P.max_store[m], st.store[m].back() * st.regs_in.size());
          }
      if (!st.has_pool()) continue;
      const Stage& nx = P.stages[s + 1];
      for (RegPool& p : st.pools)
        for (int m = 0; m < 2; ++m) {
          if (!nx.active[m]) continue;
          p.table_y[m] = make_table(p.y, p.h_src, nx.h_in, nx.circular, nx.need[m].y0, nx.need[m].y1);
          p.table_x[m] = make_table(p.x, p.w_src, nx.w_in, nx.circular, nx.need[m].x0, nx.need[m].x1);
        }
    }
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
