#include "core/serialize.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <vector>

namespace ntkfast {

namespace {

[[noreturn]] void bad(int line, const std::string& what) {
  throw ProgramError("invalid layer program text, line " + std::to_string(line) + ": " + what);
}

std::vector<std::string> split(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string t; in >> t;) out.push_back(t);
  return out;
}

int to_int(const std::string& t, int line) {
  errno = 0;
  char* end = nullptr;
  const long v = std::strtol(t.c_str(), &end, 10);
  if (errno || end == t.c_str() || *end || v < -1000000000L || v > 1000000000L) bad(line, "not an integer: " + t);
  return static_cast<int>(v);
}

double to_double(const std::string& t, int line) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  if (errno || end == t.c_str() || *end || !std::isfinite(v)) bad(line, "not a finite number: " + t);
  return v;
}

Padding to_padding(const std::string& t, int line) {
  for (Padding p : {Padding::Same, Padding::Valid, Padding::Circular})
    if (t == padding_name(p)) return p;
  bad(line, "unknown padding " + t);
}

// W_STD B_STD|none ntk|standard WIDTH of Conv and Dense, from token k on.
void affine_args(LayerSpec& L, const std::vector<std::string>& t, size_t k, int line) {
  L.w_std = to_double(t[k], line);
  L.bias = t[k + 1] != "none";
  L.b_std = L.bias ? to_double(t[k + 1], line) : 0.0;
  if (t[k + 2] != "ntk" && t[k + 2] != "standard") bad(line, "parameterization must be ntk or standard");
  L.standard = t[k + 2] == "standard";
  L.width = to_int(t[k + 3], line);
}

std::string num(double v) {
  std::ostringstream o;
  o.precision(17);
  o << v;
  return o.str();
}

}  // namespace

ProgramSpec parse_program(const std::string& text) {
  ProgramSpec spec;
  std::istringstream in(text);
  std::string raw;
  int line = 0;
  bool header = false, input = false;
  while (std::getline(in, raw)) {
    ++line;
    const std::vector<std::string> t = split(raw);
    if (t.empty() || t[0][0] == '#') continue;
    if (!header) {
      if (t.size() != 2 || t[0] != "ntkfast-program" || t[1] != "2") bad(line, "expected 'ntkfast-program 2'");
      header = true;
      continue;
    }
    if (!input) {
      if (t.size() == 5 && t[0] == "input" && t[1] == "image") {
        spec.spatial = true;
        spec.H = to_int(t[2], line);
        spec.W = to_int(t[3], line);
        spec.C = to_int(t[4], line);
      } else if (t.size() == 3 && t[0] == "input" && t[1] == "vector") {
        spec.spatial = false;
        spec.C = to_int(t[2], line);
      } else {
        bad(line, "expected 'input image H W C' or 'input vector D'");
      }
      if (spec.H < 1 || spec.W < 1 || spec.C < 1) bad(line, "input sizes must be positive");
      input = true;
      continue;
    }
    const OpInfo* info = op_by_token(t[0]);
    if (!info) bad(line, "unknown layer kind '" + t[0] + "'");
    int n_args = info->n_args;
    if (n_args < 0) {  // a count, then that many numbers
      if (t.size() < 2) bad(line, std::string(info->token) + " takes a count and that many numbers");
      n_args = 1 + to_int(t[1], line);
    }
    if (static_cast<int>(t.size()) != 1 + n_args)
      bad(line, std::string(info->token) + " takes " + std::to_string(n_args) + " arguments");
    LayerSpec L;
    L.kind = info->kind;
    switch (info->kind) {
      case OpKind::Conv:
        L.ky = to_int(t[1], line);
        L.kx = to_int(t[2], line);
        L.sy = to_int(t[3], line);
        L.sx = to_int(t[4], line);
        L.padding = to_padding(t[5], line);
        affine_args(L, t, 6, line);
        break;
      case OpKind::Dense:
        affine_args(L, t, 1, line);
        break;
      case OpKind::AvgPool:
      case OpKind::SumPool:
        L.ky = to_int(t[1], line);
        L.kx = to_int(t[2], line);
        L.sy = to_int(t[3], line);
        L.sx = to_int(t[4], line);
        L.padding = to_padding(t[5], line);
        break;
      case OpKind::GaussianPool:
        L.sy = L.sx = to_int(t[1], line);
        L.sigma = to_double(t[2], line);
        break;
      case OpKind::ABRelu:
        L.a = to_double(t[1], line);
        L.b = to_double(t[2], line);
        break;
      case OpKind::Erf:
      case OpKind::Sin:
        L.a = to_double(t[1], line);
        L.b = to_double(t[2], line);
        L.c = to_double(t[3], line);
        break;
      case OpKind::LayerNorm:
        L.a = to_double(t[1], line);
        break;
      case OpKind::RectMono:
      case OpKind::Monomial:
      case OpKind::Hermite:
        L.degree = to_int(t[1], line);
        break;
      case OpKind::Polynomial:
        for (size_t k = 2; k < t.size(); ++k) L.coef.push_back(to_double(t[k], line));
        break;
      case OpKind::FanOut:
      case OpKind::Parallel:
        L.count = to_int(t[1], line);
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
    spec.layers.push_back(L);
  }
  if (!header || !input) bad(line, "missing the header or the input line");
  return spec;
}

std::string format_program(const ProgramSpec& spec) {
  std::ostringstream o;
  o << "ntkfast-program 2\n";
  if (spec.spatial) o << "input image " << spec.H << " " << spec.W << " " << spec.C << "\n";
  else o << "input vector " << spec.C << "\n";
  for (const LayerSpec& L : spec.layers) {
    o << op_info(L.kind).token;
    const std::string affine = " " + num(L.w_std) + " " + (L.bias ? num(L.b_std) : std::string("none")) + " " +
                               (L.standard ? "standard" : "ntk") + " " + std::to_string(L.width);
    switch (L.kind) {
      case OpKind::Conv:
        o << " " << L.ky << " " << L.kx << " " << L.sy << " " << L.sx << " " << padding_name(L.padding) << affine;
        break;
      case OpKind::Dense:
        o << affine;
        break;
      case OpKind::AvgPool:
      case OpKind::SumPool:
        o << " " << L.ky << " " << L.kx << " " << L.sy << " " << L.sx << " " << padding_name(L.padding);
        break;
      case OpKind::GaussianPool:
        o << " " << L.sy << " " << num(L.sigma);
        break;
      case OpKind::ABRelu:
        o << " " << num(L.a) << " " << num(L.b);
        break;
      case OpKind::Erf:
      case OpKind::Sin:
        o << " " << num(L.a) << " " << num(L.b) << " " << num(L.c);
        break;
      case OpKind::LayerNorm:
        o << " " << num(L.a);
        break;
      case OpKind::RectMono:
      case OpKind::Monomial:
      case OpKind::Hermite:
        o << " " << L.degree;
        break;
      case OpKind::Polynomial:
        o << " " << L.coef.size();
        for (double c : L.coef) o << " " << num(c);
        break;
      case OpKind::FanOut:
      case OpKind::Parallel:
        o << " " << L.count;
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
    o << "\n";
  }
  return o.str();
}

}  // namespace ntkfast
