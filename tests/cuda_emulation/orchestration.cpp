// The host code of the CUDA backend (csrc/cuda/gram_cuda.cu, compiled by g++) against the stand-in runtime
// of stand_in/: each scenario drives the real orchestration (sessions, tiles, bands, streams and events,
// device selection, out-of-memory retries, cancellation, fault reporting) and checks its results bitwise
// against the CPU backend (the stand-in runs the kernel body on one-lane teams: the CPU's arithmetic and
// order), its progress counts, and that no device memory, stream, event or pending work is left behind.
//
//   orchestration SCENARIO      prints "ok SCENARIO: ..." and exits 0, or prints the failure and exits 1
//   orchestration list          prints the scenario names
// One scenario per process: the stand-in's configuration and the backend's per-device probe are per process.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/program.hpp"
#include "core/serialize.hpp"
#include "cpu/gram_cpu.hpp"
#include "cuda/device_program.hpp"
#include "cuda/gram_cuda.hpp"
#include "cuda_runtime.h"

using namespace ntkfast;

namespace {

// A circular stage (CIRCULAR then SAME in circular planes), average pooling out of it, global pooling; a
// Gaussian pooling, a VALID conv, Flatten and a scalar ReLU head; a fully-connected net; a residual block with a
// strided main branch and a strided 1x1 shortcut (two registers pooled), then a 3-branch scalar head.
const char* kNets[] = {
    "ntkfast-program 2\ninput image 8 7 2\nconv 3 3 1 1 CIRCULAR 1.4142135623730951 0.1 ntk 0\nrelu\n"
    "conv 3 3 1 1 SAME 1.4142135623730951 0.0 ntk 0\nrelu\navgpool 2 2 2 2 VALID\nconv 3 3 1 1 SAME 1.4142135623730951 0.0 ntk 0\n"
    "relu\nglobalavgpool\ndense 1.0 0.0 ntk 0\n",
    "ntkfast-program 2\ninput image 9 9 1\nconv 3 3 1 1 SAME 1.4142135623730951 0.0 ntk 0\nrelu\ngaussianpool 2 0\n"
    "conv 2 2 1 1 VALID 1.3 0.2 ntk 0\nrelu\nflatten\ndense 1.5 0.2 ntk 0\nrelu\ndense 1.0 0.0 ntk 0\n",
    "ntkfast-program 2\ninput vector 11\ndense 1.2 0.4 ntk 0\nrelu\ndense 1.4142135623730951 0.1 ntk 0\nrelu\ndense 1.0 0.0 ntk 0\n",
    "ntkfast-program 2\ninput image 8 7 2\nconv 3 3 1 1 SAME 1.4142135623730951 0.1 ntk 0\nfanout 2\nparallel 2\nbranch\n"
    "relu\nconv 3 3 2 2 SAME 1.4142135623730951 0.0 ntk 0\nrelu\nconv 3 3 1 1 SAME 1.4142135623730951 0.0 ntk 0\n"
    "branch\nconv 1 1 2 2 SAME 1.4142135623730951 0.0 ntk 0\nend\nfaninsum\nrelu\nglobalavgpool\ndense 1.0 0.0 ntk 0\n"
    "fanout 3\nparallel 3\nbranch\nrelu\ndense 1.0 0.0 ntk 0\nbranch\nidentity\nbranch\nerf 1.0 1.0 0.0\n"
    "dense 0.8 0.2 ntk 0\nend\nfaninsum\n",
};
constexpr int kNumNets = sizeof(kNets) / sizeof(kNets[0]);

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }
void expect(bool ok, const std::string& what) {
  if (!ok) fail("expected: " + what);
}

Program prog(const std::string& text) { return compile(parse_program(text)); }

template <class T>
std::vector<T> randn(int64_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<double> d;
  std::vector<T> v(static_cast<size_t>(n));
  for (T& x : v) x = static_cast<T>(d(g));
  return v;
}

template <class T>
void same(const std::vector<T>& a, const std::vector<T>& b, const std::string& what) {
  expect(a.size() == b.size(), what + ": sizes " + std::to_string(a.size()) + " vs " + std::to_string(b.size()));
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0)
      fail(what + ": not bitwise equal at " + std::to_string(i) + ": " + std::to_string(double(a[i])) + " vs " +
           std::to_string(double(b[i])));
}

// Nothing left on the device: memory, streams, events, queued work.
void expect_clean(const std::string& when) {
  const standin::Counters c = standin::counters();
  for (const auto& kv : c.live_bytes)
    expect(kv.second == 0, when + ": device " + std::to_string(kv.first) + " still holds " + std::to_string(kv.second) +
                               " bytes");
  expect(c.live_streams == 0 && c.live_events == 0 && c.pending_ops == 0,
         when + ": streams/events/work left: " + std::to_string(c.live_streams) + "/" + std::to_string(c.live_events) +
             "/" + std::to_string(c.pending_ops));
}

template <class T>
struct Inputs {
  Program P;
  int64_t nx, ny, isz, ssz;
  std::vector<T> X, Y, SX, SY;
  Inputs(const std::string& text, int64_t nx_, int64_t ny_, unsigned seed)
      : P(prog(text)), nx(nx_), ny(ny_), isz(P.input_size()), ssz(P.self_size) {
    X = randn<T>(nx * isz, seed);
    Y = randn<T>(ny * isz, seed + 1);
    SX.assign(static_cast<size_t>(nx * ssz), T(0));
    SY.assign(static_cast<size_t>(ny * ssz), T(0));
    RunOptions o;
    o.threads = 1;
    cpu::self_data(P, X.data(), nx, SX.data(), o);
    cpu::self_data(P, Y.data(), ny, SY.data(), o);
  }
  // (nngp, ntk) of X against Y, or of X against itself, by the CPU backend.
  std::pair<std::vector<T>, std::vector<T>> cpu(bool sym) const {
    const int64_t m = sym ? nx : ny;
    std::vector<T> s(static_cast<size_t>(nx * m)), t(static_cast<size_t>(nx * m));
    TileArgs<T> a;
    a.X = X.data();
    a.nx = nx;
    a.Y = sym ? X.data() : Y.data();
    a.ny = m;
    a.self_x = SX.data();
    a.self_y = sym ? SX.data() : SY.data();
    a.symmetric = sym;
    a.nngp = s.data();
    a.ntk = t.data();
    RunOptions o;
    o.threads = 1;
    cpu::gram_tile(P, a, o);
    return {s, t};
  }
  std::pair<std::vector<T>, std::vector<T>> gpu(bool sym, const RunOptions& o, bool want_s = true,
                                                bool want_t = true) const {
    const int64_t m = sym ? nx : ny;
    std::vector<T> s(static_cast<size_t>(nx * m), T(-7)), t(static_cast<size_t>(nx * m), T(-7));
    TileArgs<T> a;
    a.X = X.data();
    a.nx = nx;
    a.Y = sym ? X.data() : Y.data();
    a.ny = m;
    a.self_x = SX.data();
    a.self_y = sym ? SX.data() : SY.data();
    a.symmetric = sym;
    a.nngp = want_s ? s.data() : nullptr;
    a.ntk = want_t ? t.data() : nullptr;
    cuda::gram_tile(P, a, o);
    return {s, t};
  }
};

int64_t pairs(int64_t nx, int64_t ny, bool sym) { return sym ? nx * (nx + 1) / 2 : nx * ny; }

// ---- scenarios -------------------------------------------------------------------------------------------

template <class T>
void basic_one(const std::string& text, const std::string& name) {
  Inputs<T> in(text, 7, 5, 11);
  std::atomic<int64_t> prog_count{0};
  RunOptions o;
  o.progress = &prog_count;
  std::vector<T> sx(static_cast<size_t>(in.nx * in.ssz), T(-7));
  cuda::self_data(in.P, in.X.data(), in.nx, sx.data(), o);
  same(sx, in.SX, name + " self data");
  expect(in.ssz == 0 || prog_count == in.nx, name + ": self-data progress counts images");
  expect_clean(name + " self data");
  for (bool sym : {true, false}) {
    prog_count = 0;
    const auto want = in.cpu(sym);
    const auto got = in.gpu(sym, o);
    same(got.first, want.first, name + (sym ? " sym" : " rect") + " nngp");
    same(got.second, want.second, name + (sym ? " sym" : " rect") + " ntk");
    expect(prog_count == pairs(in.nx, in.ny, sym), name + ": tile progress counts pairs");
    const auto only_s = in.gpu(sym, o, true, false);
    const auto only_t = in.gpu(sym, o, false, true);
    same(only_s.first, want.first, name + " nngp alone");
    same(only_t.second, want.second, name + " ntk alone");
    expect_clean(name + " tile");
  }
}

void basic() {
  for (int k = 0; k < kNumNets; ++k) {
    basic_one<float>(kNets[k], "net" + std::to_string(k) + "<float>");
    basic_one<double>(kNets[k], "net" + std::to_string(k) + "<double>");
  }
  std::cout << "ok basic: " << kNumNets << " nets (one residual) x {float, double}: self data, symmetric and "
               "rectangular tiles, single kernels, bitwise equal to the CPU backend; progress; nothing left on the "
               "device\n";
}

void bands() {
  Inputs<float> in(kNets[0], 9, 6, 21);
  const auto want_sym = in.cpu(true), want_rect = in.cpu(false);
  std::vector<float> want_self = in.SX;
  for (int64_t bp : {1, 2, 5, 13, 1000}) {
    cuda::Tuning t;
    t.band_pairs = bp;
    cuda::set_tuning(t);
    std::atomic<int64_t> n{0};
    RunOptions o;
    o.progress = &n;
    const int64_t l0 = standin::counters().launches;
    const auto s = in.gpu(true, o);
    const int64_t launches = standin::counters().launches - l0;
    same(s.first, want_sym.first, "bands=" + std::to_string(bp) + " sym nngp");
    same(s.second, want_sym.second, "bands=" + std::to_string(bp) + " sym ntk");
    expect(n == pairs(9, 9, true), "progress over bands");
    // Rows of 9, 8, ..., 1 pairs: a band holds as many whole rows as fit in bp pairs (at least one).
    int64_t expect_launches = 0;
    for (int64_t r = 0; r < 9;) {
      int64_t c = 0;
      while (r < 9 && (c == 0 || c + (9 - r) <= bp)) c += 9 - r++;
      ++expect_launches;
    }
    expect(launches == expect_launches, "bands=" + std::to_string(bp) + ": " + std::to_string(launches) +
                                            " launches, expected " + std::to_string(expect_launches));
    const auto r = in.gpu(false, o);
    same(r.first, want_rect.first, "bands rect nngp");
    same(r.second, want_rect.second, "bands rect ntk");
    std::vector<float> sx(want_self.size());
    cuda::self_data(in.P, in.X.data(), in.nx, sx.data(), o);
    same(sx, want_self, "self data in chunks");
    expect_clean("bands");
  }
  std::cout << "ok bands: 1 to 1000 pairs per band: launches = bands, results bitwise equal, progress complete\n";
}

void session() {
  Inputs<float> in(kNets[1], 10, 6, 31);
  const auto want = in.cpu(true);
  RunOptions o;
  {
    cuda::Session<float> s(in.P, in.X.data(), in.nx, nullptr, 0, in.SX.data(), nullptr, o);
    const int64_t h2d0 = standin::counters().h2d_bytes;
    std::vector<float> S(100), Tt(100);
    const int64_t t = 4;
    for (int64_t i0 = 0; i0 < 10; i0 += t)
      for (int64_t j0 = i0; j0 < 10; j0 += t) {
        const int64_t i1 = std::min<int64_t>(i0 + t, 10), j1 = std::min<int64_t>(j0 + t, 10);
        std::vector<float> a(static_cast<size_t>((i1 - i0) * (j1 - j0))), b(a.size());
        s.tile(i0, i1, j0, j1, a.data(), b.data(), o);
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t j = j0; j < j1; ++j) {
            const size_t k = static_cast<size_t>((i - i0) * (j1 - j0) + (j - j0));
            S[i * 10 + j] = S[j * 10 + i] = a[k];
            Tt[i * 10 + j] = Tt[j * 10 + i] = b[k];
          }
      }
    same(S, want.first, "session tiles nngp");
    same(Tt, want.second, "session tiles ntk");
    expect(standin::counters().h2d_bytes == h2d0, "tiles of a session upload nothing (inputs are resident)");
    expect(!s.streaming_inputs(), "inputs resident");
    bool threw = false;
    try {
      s.tile(0, 11, 0, 3, S.data(), nullptr, o);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    expect(threw, "a tile outside the Gram is refused");
  }
  {
    const auto want_r = in.cpu(false);
    cuda::Session<float> s(in.P, in.X.data(), in.nx, in.Y.data(), in.ny, in.SX.data(), in.SY.data(), o);
    std::vector<float> a(60), b(60), lo(30), lo2(30);
    s.tile(0, 10, 0, 6, a.data(), b.data(), o);
    same(a, want_r.first, "session rect nngp");
    same(b, want_r.second, "session rect ntk");
  }
  expect_clean("session");
  std::cout << "ok session: program, inputs and self data uploaded once; tiles of a symmetric and a rectangular "
               "Gram bitwise equal to the CPU backend\n";
}

// Per-team scratch of a net's pair recursion (bytes).
template <class T>
int64_t team_scratch(const Program& P) {
  return 4 * cuda::ProgBlob<T>(P).meta().store[kPair] * static_cast<int64_t>(sizeof(T));
}

void oom_scratch() {
  Inputs<float> in(kNets[0], 24, 1, 41);
  const auto want = in.cpu(true);
  standin::config().report_free = int64_t(1) << 40;  // the free-memory query lies: allocations must fail
  RunOptions o;
  int64_t full_teams = 0, peak = 0;
  {
    cuda::Session<float> s(in.P, in.X.data(), in.nx, nullptr, 0, in.SX.data(), nullptr, o);
    std::vector<float> a(576), b(576);
    s.tile(0, 24, 0, 24, a.data(), b.data(), o);
    full_teams = s.resident_teams();
    peak = standin::counters().peak_bytes[0];
  }
  const int64_t per_team = team_scratch<float>(in.P);
  expect(full_teams > 8 && per_team > 0, "a pooled net with many resident teams");
  standin::config().devices[0].memory = peak - (full_teams - 2) * per_team - per_team / 2;
  const int64_t failed0 = standin::counters().failed_mallocs;
  {
    cuda::Session<float> s(in.P, in.X.data(), in.nx, nullptr, 0, in.SX.data(), nullptr, o);
    std::vector<float> a(576), b(576);
    s.tile(0, 24, 0, 24, a.data(), b.data(), o);
    same(a, want.first, "after the out-of-memory retries: nngp");
    same(b, want.second, "after the out-of-memory retries: ntk");
    expect(s.resident_teams() < full_teams / 4, "the retry lowered the resident teams (" +
                                                    std::to_string(s.resident_teams()) + " of " +
                                                    std::to_string(full_teams) + ")");
    expect(!s.streaming_inputs(), "inputs still resident");
  }
  expect(standin::counters().failed_mallocs > failed0, "allocations failed on the way");
  expect_clean("oom_scratch");
  std::cout << "ok oom_scratch: scratch for " << full_teams << " teams did not fit; retried down to fewer teams, "
            << "results bitwise equal\n";
}

void oom_inputs() {
  Inputs<float> in(kNets[0], 16, 1, 51);
  const auto want = in.cpu(true);
  standin::config().report_free = int64_t(1) << 40;
  RunOptions o;
  int64_t peak = 0;
  {
    cuda::Session<float> s(in.P, in.X.data(), in.nx, nullptr, 0, in.SX.data(), nullptr, o);
    std::vector<float> a(256), b(256);
    s.tile(0, 16, 0, 16, a.data(), b.data(), o);
    peak = standin::counters().peak_bytes[0];
  }
  (void)peak;
  const int64_t inputs = in.nx * (in.isz + in.ssz) * 4;
  const int64_t blob = static_cast<int64_t>(cuda::ProgBlob<float>(in.P).bytes().size());
  standin::config().devices[0].memory = blob + inputs * 3 / 4;  // the program fits, the inputs do not
  {
    cuda::Session<float> s(in.P, in.X.data(), in.nx, nullptr, 0, in.SX.data(), nullptr, o);
    expect(s.streaming_inputs(), "inputs that do not fit stream per tile");
    std::vector<float> a(256), b(256);
    const int64_t h2d0 = standin::counters().h2d_bytes;
    s.tile(0, 16, 0, 16, a.data(), b.data(), o);
    expect(standin::counters().h2d_bytes > h2d0, "the tile uploaded its rows");
    same(a, want.first, "streamed inputs: nngp");
    same(b, want.second, "streamed inputs: ntk");
  }
  expect_clean("oom_inputs");
  std::cout << "ok oom_inputs: inputs larger than the device stream per tile (split in halves as needed), "
               "results bitwise equal\n";
}

void oom_fail() {
  Inputs<float> in(kNets[0], 4, 1, 61);
  standin::config().devices[0].memory = 64;
  RunOptions o;
  std::vector<float> a(16), b(16);
  bool threw = false;
  try {
    in.gpu(true, o);
  } catch (const DeviceOutOfMemory& e) {
    threw = std::string(e.what()).find("out of memory") != std::string::npos;
  }
  expect(threw, "DeviceOutOfMemory when not even the program fits");
  expect_clean("oom_fail (program)");
  // The program and inputs fit, one team's scratch does not.
  standin::config().devices[0].memory = 1 << 20;
  standin::config().report_free = int64_t(1) << 40;
  cuda::Session<float> s(in.P, in.X.data(), in.nx, nullptr, 0, in.SX.data(), nullptr, o);
  const int64_t live = standin::counters().live_bytes[0];
  standin::config().devices[0].memory = live + team_scratch<float>(in.P) / 2;
  threw = false;
  try {
    s.tile(0, 4, 0, 4, a.data(), b.data(), o);
  } catch (const DeviceOutOfMemory& e) {
    threw = std::string(e.what()).find("one resident warp") != std::string::npos;
  }
  expect(threw, "DeviceOutOfMemory naming the minimum when one team does not fit");
  std::cout << "ok oom_fail: DeviceOutOfMemory (no abort) when the program, or one team's scratch, does not fit\n";
}

void cancel() {
  Inputs<float> in(kNets[0], 12, 1, 71);
  cuda::Tuning t;
  t.band_pairs = 3;
  cuda::set_tuning(t);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> done{0};
  standin::config().after_launch = [&](int64_t no) {
    if (no == 2) stop = true;
  };
  RunOptions o;
  o.cancel = &stop;
  o.progress = &done;
  {
    cuda::Session<float> s(in.P, in.X.data(), in.nx, nullptr, 0, in.SX.data(), nullptr, o);
    std::vector<float> a(144), b(144);
    const int64_t l0 = standin::counters().launches;
    bool threw = false;
    try {
      s.tile(0, 12, 0, 12, a.data(), b.data(), o);
    } catch (const Cancelled&) {
      threw = true;
    }
    expect(threw, "Cancelled");
    const int64_t launched = standin::counters().launches - l0;
    expect(launched == 3, "cancel is seen before the next band: " + std::to_string(launched) + " launches");
    expect(done > 0 && done < pairs(12, 12, true), "progress counts the finished bands: " + std::to_string(done));
    const standin::Counters c = standin::counters();
    expect(c.live_streams == 0 && c.pending_ops == 0, "no stream or work left after a cancel");
  }
  expect_clean("cancel (tile)");
  // Self data: chunks of 3 images, cancelled after the first launch.
  stop = false;
  done = 0;
  standin::config().after_launch = [&](int64_t) { stop = true; };
  std::vector<float> sx(static_cast<size_t>(in.nx * in.ssz));
  bool threw = false;
  try {
    cuda::self_data(in.P, in.X.data(), in.nx, sx.data(), o);
  } catch (const Cancelled&) {
    threw = true;
  }
  expect(threw && done == 3, "self data cancelled after its first chunk");
  expect_clean("cancel (self data)");
  std::cout << "ok cancel: a tile and the self data stop at the next band / chunk, throw Cancelled, leave nothing "
               "behind\n";
}

void devices() {
  standin::config().devices.resize(2);
  standin::config().devices[1].name = "old GPU";
  standin::config().devices[1].major = 7;
  standin::config().devices[1].minor = 0;
  standin::config().devices[1].kernel_image = false;
  const CudaStatus st = cuda::status();
  expect(st.device_count == 2 && st.usable, "two devices, one usable");
  expect(st.device_usable.size() == 2 && st.device_usable[0] && !st.device_usable[1], "per-device usability");
  expect(st.device_reason[1].find("sm_70") != std::string::npos &&
             st.device_reason[1].find("cudaErrorNoKernelImageForDevice") != std::string::npos,
         "the reason names the architecture and the error: " + st.device_reason[1]);
  Inputs<float> in(kNets[1], 3, 2, 81);
  RunOptions o;
  o.device = 1;
  bool threw = false;
  try {
    in.gpu(true, o);
  } catch (const std::runtime_error& e) {
    threw = std::string(e.what()).find("sm_70") != std::string::npos;
  }
  expect(threw, "device 1 refused with its reason");
  o.device = 2;
  threw = false;
  try {
    in.gpu(true, o);
  } catch (const std::invalid_argument& e) {
    threw = std::string(e.what()).find("out of range") != std::string::npos;
  }
  expect(threw, "a device index out of range is an invalid_argument");
  // Only device 1 without an image: nothing usable, the status says why.
  standin::config().devices[0].kernel_image = true;
  expect_clean("devices");
  std::cout << "ok devices: per-device usability from the kernel probe (sm_70 without an image refused with its "
               "reason), index checked\n";
}

void device_index() {
  standin::config().devices.resize(2);
  standin::config().devices[1].name = "second GPU";
  Inputs<double> in(kNets[0], 5, 4, 91);
  const auto want = in.cpu(false);
  expect(cudaSetDevice(0) == cudaSuccess, "set device 0");
  RunOptions o;
  o.device = 1;
  std::vector<double> sx(static_cast<size_t>(in.nx * in.ssz));
  cuda::self_data(in.P, in.X.data(), in.nx, sx.data(), o);
  same(sx, in.SX, "self data on device 1");
  const auto got = in.gpu(false, o);
  same(got.first, want.first, "device 1 nngp");
  same(got.second, want.second, "device 1 ntk");
  const standin::Counters c = standin::counters();
  for (const standin::LaunchRecord& r : c.launch_log) expect(r.device == 1, "every launch on device 1");
  expect(c.peak_bytes.count(0) == 0 || c.peak_bytes.at(0) == 0, "no memory on device 0");
  int cur = -1;
  expect(cudaGetDevice(&cur) == cudaSuccess && cur == 0, "the caller's current device is restored");
  expect_clean("device_index");
  std::cout << "ok device_index: RunOptions::device = 1 runs there (memory and launches), current device restored\n";
}

void attributes_once() {
  standin::config().devices.resize(2);
  Inputs<float> inf(kNets[0], 4, 3, 101);
  Inputs<double> ind(kNets[0], 4, 3, 102);
  const auto wf = inf.cpu(false);
  const auto wd = ind.cpu(false);
  std::vector<std::thread> th;
  std::atomic<int> bad{0};
  for (int k = 0; k < 8; ++k)
    th.emplace_back([&, k]() {
      try {
        RunOptions o;
        o.device = k % 2;
        for (int r = 0; r < 2; ++r) {
          if (k % 4 < 2) {
            if (inf.gpu(false, o) != wf) ++bad;
          } else {
            if (ind.gpu(false, o) != wd) ++bad;
          }
          (void)cuda::status();
        }
      } catch (const std::exception& e) {
        std::cerr << "thread " << k << ": " << e.what() << "\n";
        ++bad;
      }
    });
  for (auto& t : th) t.join();
  expect(bad == 0, "concurrent calls on two devices all correct");
  const standin::Counters c = standin::counters();
  expect(c.set_attribute.size() == 4, "the shared-memory attribute set for 2 kernels x 2 devices");
  for (const auto& kv : c.set_attribute) expect(kv.second == 1, "set exactly once per kernel and device");
  expect_clean("attributes_once");
  std::cout << "ok attributes_once: 8 host threads on 2 devices; MaxDynamicSharedMemorySize set once per kernel and "
               "device\n";
}

void smem_attribute() {
  // 64x64 float64 planes: about 96 KiB of shared memory per warp, above the 48 KiB default of a launch.
  Inputs<double> in("ntkfast-program 2\ninput image 64 64 1\nconv 3 3 1 1 SAME 1.4142135623730951 0.0 ntk 0\nrelu\n"
                    "conv 3 3 1 1 SAME 1.4142135623730951 0.0 ntk 0\nrelu\nflatten\n",
                    2, 1, 111);
  const auto want = in.cpu(true);
  RunOptions o;
  const auto got = in.gpu(true, o);
  same(got.first, want.first, "large planes nngp");
  same(got.second, want.second, "large planes ntk");
  bool big = false;
  for (const standin::LaunchRecord& r : standin::counters().launch_log) big = big || r.smem > 48 * 1024;
  expect(big, "a launch used more than 48 KiB of dynamic shared memory");
  // Planes beyond what a block may have: a clear error.
  Inputs<double> huge("ntkfast-program 2\ninput image 200 200 1\nconv 3 3 1 1 SAME 1.4142135623730951 0.0 ntk 0\nrelu\n"
                      "flatten\n",
                      1, 1, 112);
  bool threw = false;
  try {
    huge.gpu(true, o);
  } catch (const std::runtime_error& e) {
    threw = std::string(e.what()).find("shared memory") != std::string::npos;
  }
  expect(threw, "planes too large for shared memory are an error naming it");
  // A residual block keeps two registers' planes per warp: 2 x (S, T) of 32x32 float64 and the temp, about
  // 40 KiB; each launch asks for whole warps of that.
  Inputs<double> res("ntkfast-program 2\ninput image 32 32 1\nconv 3 3 1 1 SAME 1.4142135623730951 0.0 ntk 0\n"
                     "fanout 2\nparallel 2\nbranch\nrelu\nconv 3 3 1 1 SAME 1.4142135623730951 0.0 ntk 0\nbranch\n"
                     "identity\nend\nfaninsum\nrelu\nflatten\n",
                     2, 1, 113);
  const cuda::ProgBlob<double> blob(res.P);
  const int64_t per_warp = cuda::team_entries(blob.meta()) * static_cast<int64_t>(sizeof(double));
  expect(blob.meta().NR == 2 && per_warp >= (4 * 32 * 32 + 32 * 32) * 8, "two registers' planes per warp: " +
                                                                             std::to_string(per_warp) + " bytes");
  const size_t before = standin::counters().launch_log.size();
  const auto want_res = res.cpu(true);
  const auto got_res = res.gpu(true, o);
  same(got_res.first, want_res.first, "residual nngp");
  same(got_res.second, want_res.second, "residual ntk");
  const auto log = standin::counters().launch_log;
  expect(log.size() > before, "the residual net launched");
  for (size_t k = before; k < log.size(); ++k)
    expect(log[k].smem > 0 && log[k].smem % per_warp == 0, "launch shared memory in whole warps of two registers");
  expect_clean("smem_attribute");
  std::cout << "ok smem_attribute: launches above 48 KiB of shared memory run (the attribute is set), planes too "
               "large are refused, a residual net's warps hold two registers' planes\n";
}

void fault_common(bool synced) {
  Inputs<float> in(kNets[0], 9, 1, 121);
  cuda::Tuning t;
  t.band_pairs = 4;
  cuda::set_tuning(t);
  standin::config().fault_on_launch = 2;
  RunOptions o;
  std::string msg;
  {
    cuda::Session<float> s(in.P, in.X.data(), in.nx, nullptr, 0, in.SX.data(), nullptr, o);
    std::vector<float> a(81), b(81);
    try {
      s.tile(0, 9, 0, 9, a.data(), b.data(), o);
    } catch (const KernelFault& e) {
      msg = e.what();
    }
  }
  expect(!msg.empty(), "a KernelFault");
  for (const char* part : {"kernel fault", "cudaErrorIllegalAddress", "caused by launch #2", "band 2/", "refused"})
    expect(msg.find(part) != std::string::npos, "the fault message names '" + std::string(part) + "': " + msg);
  expect(synced == (msg.find("or one of") == std::string::npos),
         synced ? "NTKFAST_CUDA_SYNC=1 pins the launch" : "launches in flight are listed");
  auto refused = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const KernelFault& e) {
      return std::string(e.what()).find("refused") != std::string::npos;
    }
    return false;
  };
  expect(refused([&] { in.gpu(false, o); }), "later tiles are refused");
  std::vector<float> sx(static_cast<size_t>(in.nx * in.ssz));
  expect(refused([&] { cuda::self_data(in.P, in.X.data(), in.nx, sx.data(), o); }), "later self data is refused");
  const CudaStatus st = cuda::status();
  expect(!st.usable && st.reason.find("kernel fault") != std::string::npos, "status reports the fault");
  std::cout << "ok " << (synced ? "fault_sync" : "fault") << ": " << msg.substr(0, 160) << "...\n";
}

void fault() { fault_common(false); }

void fault_sync() {
  setenv("NTKFAST_CUDA_SYNC", "1", 1);
  fault_common(true);
}

void fault_self() {
  Inputs<float> in(kNets[1], 5, 1, 131);
  standin::config().fault_on_launch = 1;
  RunOptions o;
  std::vector<float> sx(static_cast<size_t>(in.nx * in.ssz));
  std::string msg;
  try {
    cuda::self_data(in.P, in.X.data(), in.nx, sx.data(), o);
  } catch (const KernelFault& e) {
    msg = e.what();
  }
  expect(msg.find("self data of images [0, 5)") != std::string::npos, "the fault names the self-data launch: " + msg);
  std::cout << "ok fault_self: a fault in the self data names its launch\n";
}

void no_driver() {
  standin::config().no_driver = true;
  const CudaStatus st = cuda::status();
  expect(!st.usable && st.reason.find("cudaErrorInsufficientDriver") != std::string::npos,
         "no driver: not usable, with the reason: " + st.reason);
  Inputs<float> in(kNets[2], 3, 1, 141);
  RunOptions o;
  bool threw = false;
  try {
    in.gpu(true, o);
  } catch (const std::runtime_error& e) {
    threw = std::string(e.what()).find("cudaErrorInsufficientDriver") != std::string::npos;
  }
  expect(threw, "a call without a driver throws with the CUDA error");
  std::cout << "ok no_driver: status says why, calls throw\n";
}

// The program blob refuses, host-side and naming what, a program it cannot run as written: an op or scalar kind
// outside the enums, a register outside the program's, resolutions of a register that do not chain through its
// ops (the kernels derive every span from them), a pooled register that does not enter the next stage.
void malformed() {
  const Program good = prog(kNets[3]);
  (void)cuda::ProgBlob<float>(good);
  int refused = 0;
  auto refuses = [&](const std::string& what, const std::string& says, const std::function<void(Program&)>& spoil) {
    Program P = good;
    spoil(P);
    std::string msg;
    try {
      cuda::ProgBlob<float> b(P);
    } catch (const std::invalid_argument& e) {
      msg = e.what();
    }
    expect(msg.find(says) != std::string::npos, what + ": refused saying '" + says + "'; got '" + msg + "'");
    ++refused;
  };
  auto first_of = [](Program& P, StageOp::Kind k) -> StageOp& {
    for (Stage& st : P.stages)
      for (StageOp& o : st.ops)
        if (o.kind == k) return o;
    throw std::runtime_error("no such op in the test net");
  };
  refuses("unknown stage op kind", "unknown stage op kind 7",
          [&](Program& P) { first_of(P, StageOp::Act).kind = static_cast<StageOp::Kind>(7); });
  refuses("unknown scalar op kind", "unknown scalar op kind 9",
          [](Program& P) { P.scalar.back().kind = static_cast<ScalarOp::Kind>(9); });
  refuses("register out of range", "outside [0, 3)", [&](Program& P) { first_of(P, StageOp::Conv).reg = 3; });
  refuses("copy of a dead register", "holds nothing", [&](Program& P) { first_of(P, StageOp::Copy).src = 2; });
  refuses("resolutions that do not chain", "reads register", [](Program& P) { P.stages[0].pools[0].h_src += 1; });
  refuses("pooled register not entering", "does not enter",
          [](Program& P) { P.stages[1].regs_in[0] = 2; });
  refuses("scalar read of a dead register", "holds nothing", [](Program& P) { P.scalar[0].reg = 2; });
  std::cout << "ok malformed: the program blob refuses " << refused << " malformed programs with the reason\n";
}

const std::map<std::string, std::function<void()>> kScenarios = {
    {"basic", basic},
    {"bands", bands},
    {"session", session},
    {"oom_scratch", oom_scratch},
    {"oom_inputs", oom_inputs},
    {"oom_fail", oom_fail},
    {"cancel", cancel},
    {"devices", devices},
    {"device_index", device_index},
    {"attributes_once", attributes_once},
    {"smem_attribute", smem_attribute},
    {"fault", fault},
    {"fault_sync", fault_sync},
    {"fault_self", fault_self},
    {"no_driver", no_driver},
    {"malformed", malformed},
};

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "list") {
    for (const auto& kv : kScenarios) std::cout << kv.first << "\n";
    return 0;
  }
  if (argc != 2 || !kScenarios.count(argv[1])) {
    std::cerr << "usage: orchestration SCENARIO|list\n";
    return 2;
  }
  try {
    kScenarios.at(argv[1])();
    return 0;
  } catch (const std::exception& e) {
    std::cout << "FAIL " << argv[1] << ": " << e.what() << "\n";
    return 1;
  }
}
