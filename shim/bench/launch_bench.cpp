// What sluice adds to each cuLaunchKernel on the fast path (gate open, nothing held).
//
//   BM_EngineLaunch        sluice_core in-process over a driver whose cuLaunchKernel returns at
//                          once, against calling that function directly: the engine's own cost.
//   BM_EngineLaunchLegacy  the same on the legacy stream, under a gate that reads every field
//                          (as sluiced's does) and a driver whose cuCtxGetCurrent costs ~100 ns:
//                          /reported:0 asks the driver for the context on every launch,
//                          /reported:1 caches it per thread as the preloaded shim does.
//   BM_EngineLaunchColdCaches  BM_EngineLaunch over a driver that walks 2 MiB per launch, as a
//                          real driver's ~3 us launch evicts the engine's lines from L1 and L2:
//                          what the engine's memory footprint costs on a real driver.
//   BM_ShimLaunch          libsluice.so (dlopen'd, SLUICE_REAL_LIBCUDA = the fake driver) against
//                          the fake driver's own cuLaunchKernel, on the same context, module,
//                          function and stream (SLUICE_FAKE_LAUNCH_NS gives the fake's launch a
//                          host cost).
//
// Both interleave batches of direct and sluice launches, so that the shared machine's noise hits
// both sides alike, and report per-launch p50s and their difference (counter p50_added_ns).
#include <benchmark/benchmark.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "sluice/common/clock.h"
#include "sluice/shim/cuda.h"
#include "sluice/shim/engine.h"

namespace {

using sluice::shim::DriverApi;
using sluice::shim::Engine;
using sluice::shim::StreamAbi;
using LaunchFn = decltype(DriverApi::cuLaunchKernel);

constexpr int kBatch = 32;
constexpr int kRounds = 4000;

double median(std::vector<double> values) {
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2),
                   values.end());
  return values[values.size() / 2];
}

// Per-launch nanoseconds of `direct` and `through`, batch by batch, alternating.
template <typename Direct, typename Through, typename Between>
void compare(benchmark::State& state, Direct&& direct, Through&& through, Between&& between,
             int rounds = kRounds) {
  std::vector<double> direct_ns;
  std::vector<double> through_ns;
  for (auto _ : state) {
    direct_ns.clear();
    through_ns.clear();
    for (int round = 0; round < rounds; ++round) {
      const std::uint64_t t0 = sluice::now_ns();
      for (int i = 0; i < kBatch; ++i) benchmark::DoNotOptimize(direct());
      const std::uint64_t t1 = sluice::now_ns();
      for (int i = 0; i < kBatch; ++i) benchmark::DoNotOptimize(through());
      const std::uint64_t t2 = sluice::now_ns();
      direct_ns.push_back(static_cast<double>(t1 - t0) / kBatch);
      through_ns.push_back(static_cast<double>(t2 - t1) / kBatch);
      between();
    }
  }
  const double d = median(direct_ns);
  const double t = median(through_ns);
  state.counters["p50_direct_ns"] = d;
  state.counters["p50_sluice_ns"] = t;
  state.counters["p50_added_ns"] = t - d;
  state.counters["launches"] = static_cast<double>(2 * kBatch * rounds);
}

// ---- the engine alone
// ----------------------------------------------------------------------------

CUresult noop_launch(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                     unsigned, CUstream, void**, void**) {
  return CUDA_SUCCESS;
}
CUresult current_context(CUcontext* ctx) {
  *ctx = reinterpret_cast<CUcontext>(std::uintptr_t{0xC0});
  return CUDA_SUCCESS;
}
CUresult context_device(CUdevice* device) {
  *device = 0;
  return CUDA_SUCCESS;
}

// A driver call that costs about `ns` of host time.
void spin_for(std::uint64_t ns) {
  const std::uint64_t until = sluice::now_ns() + ns;
  while (sluice::now_ns() < until) {
  }
}
CUresult slow_current_context(CUcontext* ctx) {
  spin_for(100);
  return current_context(ctx);
}

// Walks a buffer larger than L2, as the driver's own launch path evicts what the engine touched.
std::vector<std::uint64_t>& cache_sweeper() {
  static std::vector<std::uint64_t> lines((256u << 10) / sizeof(std::uint64_t), 1);
  return lines;
}
CUresult cache_sweeping_launch(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                               unsigned, unsigned, CUstream, void**, void**) {
  std::vector<std::uint64_t>& lines = cache_sweeper();
  for (std::size_t i = 0; i < lines.size(); i += 8) lines[i] += 1;
  return CUDA_SUCCESS;
}

// A gate that admits everything but reads every field, as sluiced's does.
class EveryFieldGate final : public sluice::shim::Gate {
 public:
  bool admit(const sluice::shim::OpDesc& op) noexcept override {
    seen_ += op.seq + static_cast<std::uint64_t>(op.device);
    return true;
  }
  const char* name() const noexcept override { return "every-field"; }

 private:
  std::uint64_t seen_ = 0;
};

// The engine over `launch`, against `launch` called directly, on `stream` (0: the legacy one).
void engine_launches(benchmark::State& state, LaunchFn launch, DriverApi api, CUstream stream,
                     sluice::shim::EngineOptions options, sluice::shim::Gate* gate,
                     int rounds = kRounds) {
  api.cuLaunchKernel = launch;
  if (api.cuCtxGetCurrent == nullptr) api.cuCtxGetCurrent = current_context;
  api.cuCtxGetDevice = context_device;
  Engine engine(api, options);
  engine.set_gate(gate);
  if (stream != nullptr) engine.stream_created(stream, 0);
  const auto func = reinterpret_cast<CUfunction>(std::uintptr_t{0xF0});
  LaunchFn volatile direct_fn = launch;  // an indirect call, as an application makes
  std::uint32_t value = 1;
  void* params[] = {&value};
  compare(
      state, [&] { return direct_fn(func, 1, 1, 1, 32, 1, 1, 0, stream, params, nullptr); },
      [&] {
        return engine.launch_kernel(StreamAbi::legacy, direct_fn, func, 1, 1, 1, 32, 1, 1, 0,
                                    stream, params, nullptr);
      },
      [] {}, rounds);
  engine.set_gate(nullptr);
}

const auto kStream = reinterpret_cast<CUstream>(std::uintptr_t{0x51});

void BM_EngineLaunch(benchmark::State& state) {
  engine_launches(state, noop_launch, DriverApi{}, kStream, {}, nullptr);
}
BENCHMARK(BM_EngineLaunch)->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_EngineLaunchLegacy(benchmark::State& state) {
  DriverApi api;
  api.cuCtxGetCurrent = slow_current_context;
  sluice::shim::EngineOptions options;
  options.context_switches_reported = state.range(0) != 0;
  EveryFieldGate gate;
  engine_launches(state, noop_launch, api, nullptr, options, &gate);
}
BENCHMARK(BM_EngineLaunchLegacy)
    ->ArgName("reported")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

void BM_EngineLaunchColdCaches(benchmark::State& state) {
  engine_launches(state, cache_sweeping_launch, DriverApi{}, kStream, {}, nullptr, kRounds / 20);
}
BENCHMARK(BM_EngineLaunchColdCaches)->Iterations(1)->Unit(benchmark::kMillisecond);

// ---- libsluice.so over the fake driver
// -----------------------------------------------------------

template <typename T>
T symbol(void* library, const char* name) {
  return reinterpret_cast<T>(dlsym(library, name));
}

void BM_ShimLaunch(benchmark::State& state) {
  void* fake = dlopen(SLUICE_BENCH_FAKE_DRIVER, RTLD_NOW | RTLD_LOCAL);
  if (fake == nullptr) {
    state.SkipWithError("the fake driver is not built (target sluice_fake_cuda)");
    return;
  }
  setenv("SLUICE_REAL_LIBCUDA", SLUICE_BENCH_FAKE_DRIVER, 1);
  setenv("SLUICE_GATE", "open", 1);
  void* shim = dlopen(SLUICE_BENCH_SHIM, RTLD_NOW | RTLD_LOCAL);
  if (shim == nullptr) {
    state.SkipWithError(dlerror());
    return;
  }
  // Everything is set up through the shim, so that it knows the stream as an application's would.
  CUdevice device = 0;
  CUcontext ctx = nullptr;
  CUstream stream = nullptr;
  CUmodule module = nullptr;
  CUfunction func = nullptr;
  const char image[] = "# sluice fake module v1\nkernel tiny params=4 op=noop\n";
  bool ok = symbol<decltype(&cuInit)>(shim, "cuInit")(0) == CUDA_SUCCESS &&
            symbol<decltype(&cuDeviceGet)>(shim, "cuDeviceGet")(&device, 0) == CUDA_SUCCESS &&
            symbol<decltype(&cuDevicePrimaryCtxRetain)>(shim, "cuDevicePrimaryCtxRetain")(
                &ctx, device) == CUDA_SUCCESS &&
            symbol<decltype(&cuCtxSetCurrent)>(shim, "cuCtxSetCurrent")(ctx) == CUDA_SUCCESS &&
            symbol<decltype(&cuStreamCreate)>(shim, "cuStreamCreate")(
                &stream, CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS &&
            symbol<decltype(&cuModuleLoadData)>(shim, "cuModuleLoadData")(&module, image) ==
                CUDA_SUCCESS &&
            symbol<decltype(&cuModuleGetFunction)>(shim, "cuModuleGetFunction")(
                &func, module, "tiny") == CUDA_SUCCESS;
  if (!ok) {
    state.SkipWithError("setting up a context, stream and kernel on the fake driver failed");
    return;
  }
  const auto direct_fn = symbol<LaunchFn>(fake, "cuLaunchKernel");
  const auto shim_fn = symbol<LaunchFn>(shim, "cuLaunchKernel");
  const auto sync = symbol<decltype(&cuStreamSynchronize)>(shim, "cuStreamSynchronize");
  std::uint32_t value = 1;
  void* params[] = {&value};
  compare(
      state, [&] { return direct_fn(func, 1, 1, 1, 32, 1, 1, 0, stream, params, nullptr); },
      [&] { return shim_fn(func, 1, 1, 1, 32, 1, 1, 0, stream, params, nullptr); },
      [&] { sync(stream); });
}
BENCHMARK(BM_ShimLaunch)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
