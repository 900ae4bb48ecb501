// Offset-plane geometry shared by every backend (host and device): which positions an offset plane holds,
// how a circular plane splits into linear segments, and how plane boxes are laid out in a store.
//
// A stage of the recursion holds its state S[u, u'] as offset planes, one per axis pair (dy, dx), in one of
// two representations:
//   linear   : plane d holds the positions u whose partner u + d lies inside the n-position axis
//              (d in [-(n-1), n-1], n - |d| positions);
//   circular : plane delta in [0, n) holds every position u with partner (u + delta) mod n. Along one axis it
//              is the union of two linear planes: offset delta at u < n - delta, offset delta - n at u >= n -
//              delta. CIRCULAR convolutions wrap within it; SAME convolutions act on each segment separately.
#pragma once
#include <cstdint>
#include <vector>

#include "core/math.hpp"

namespace ntkfast {

// Floor division and modulo for possibly negative numerators (b > 0).
NTKFAST_HD int floordiv(int a, int b) { return (a >= 0) ? a / b : -((-a + b - 1) / b); }
NTKFAST_HD int posmod(int a, int b) {
  const int r = a % b;
  return r < 0 ? r + b : r;
}

// Positions [start, start + len) of one axis of a plane.
struct Span {
  int start, len;
};

// The positions plane d of an n-position axis holds in the given representation (len <= 0: none).
NTKFAST_HD Span plane_span(int n, int d, bool circular) {
  if (circular) return Span{0, n};
  return Span{d < 0 ? -d : 0, n - (d < 0 ? -d : d)};
}

// Where a plane along one axis breaks into separately padded segments: SAME convolutions in a circular
// plane delta > 0 see two zero-padded segments [0, n - delta) and [n - delta, n); everywhere else one.
NTKFAST_HD int segment_break(int n, int d, bool circular) { return (circular && d > 0) ? n - d : n; }

// A linear piece of a plane along one axis: linear offset d at positions [start, start + len).
struct Segment {
  int d, start, len;
};

// The linear segments of plane d (one for a linear plane, one or two for a circular one); returns the count.
NTKFAST_HD int plane_segments(int n, int d, bool circular, Segment out[2]) {
  if (!circular) {
    const Span s = plane_span(n, d, false);
    out[0] = Segment{d, s.start, s.len};
    return s.len > 0 ? 1 : 0;
  }
  out[0] = Segment{d, 0, n - d};
  if (d == 0) return 1;
  out[1] = Segment{d - n, n - d, d};
  return 2;
}

// Inclusive box of plane indices (dy, dx) carried by a stage.
struct Range {
  int y0 = 0, y1 = 0, x0 = 0, x1 = 0;
  NTKFAST_HD bool contains(int dy, int dx) const { return y0 <= dy && dy <= y1 && x0 <= dx && dx <= x1; }
  NTKFAST_HD int width() const { return x1 - x0 + 1; }
  NTKFAST_HD int count() const { return (y1 - y0 + 1) * (x1 - x0 + 1); }
  NTKFAST_HD int index(int dy, int dx) const { return (dy - y0) * (x1 - x0 + 1) + (dx - x0); }
};

// Planes of a box stored one after another, each holding only its positions (row-major, rows of the plane's
// x-span length). offsets[k] is the first entry of plane k (Range::index order), offsets.back() the total.
inline std::vector<int64_t> plane_offsets(const Range& r, int h, int w, bool circular) {
  std::vector<int64_t> off;
  off.reserve(static_cast<size_t>(r.count()) + 1);
  int64_t total = 0;
  for (int dy = r.y0; dy <= r.y1; ++dy)
    for (int dx = r.x0; dx <= r.x1; ++dx) {
      off.push_back(total);
      const int ly = plane_span(h, dy, circular).len, lx = plane_span(w, dx, circular).len;
      total += static_cast<int64_t>(ly > 0 ? ly : 0) * (lx > 0 ? lx : 0);
    }
  off.push_back(total);
  return off;
}

}  // namespace ntkfast
