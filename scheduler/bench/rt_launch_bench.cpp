// What an RT launch pays for being managed by sluiced. Run under LD_PRELOAD=libsluice.so over the
// fake driver twice, with SLUICE_GATE=open (passthrough) and with the daemon gate connected as an
// RT client; run_benchmarks.py compares the p50 call times. Each benchmark iteration is one
// cuLaunchKernel call, timed alone; the stream is drained every 256 launches, outside the timing.
//
//   SLUICE_BENCH_DRIVER  the library to dlopen (default libcuda.so.1: the shim when preloaded)
#include <benchmark/benchmark.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "sluice/common/clock.h"
#include "sluice/shim/cuda.h"
#include "sluice/shim/driver_api.h"
#include "spin_ptx.h"

namespace {

using sluice::now_ns;

struct Driver {
  sluice::shim::DriverApi api;
  CUstream stream = nullptr;
  CUfunction spin = nullptr;
  std::string error;

  Driver() {
    const char* path = std::getenv("SLUICE_BENCH_DRIVER");
    void* handle = dlopen(path != nullptr ? path : "libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (handle == nullptr) {
      error = dlerror();
      return;
    }
    api.resolve(handle);
    CUdevice device = 0;
    CUcontext ctx = nullptr;
    CUmodule module = nullptr;
    if (api.cuInit(0) != CUDA_SUCCESS || api.cuDeviceGet(&device, 0) != CUDA_SUCCESS ||
        api.cuDevicePrimaryCtxRetain(&ctx, device) != CUDA_SUCCESS || api.cuCtxSetCurrent(ctx) != CUDA_SUCCESS ||
        api.cuModuleLoadData(&module, sluice::loadgen::kSpinPtx) != CUDA_SUCCESS ||
        api.cuModuleGetFunction(&spin, module, sluice::loadgen::kSpinKernel) != CUDA_SUCCESS ||
        api.cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS) {
      error = "driver setup failed";
    }
  }
};

void BM_RtLaunch(benchmark::State& state) {
  static Driver driver;
  if (!driver.error.empty()) {
    state.SkipWithError(driver.error.c_str());
    return;
  }
  std::uint64_t ns_per_block = 0;
  void* params[] = {&ns_per_block};
  std::vector<double> calls;
  calls.reserve(static_cast<std::size_t>(state.max_iterations));
  std::uint64_t launches = 0;
  for (auto _ : state) {
    std::uint64_t t0 = now_ns();
    CUresult result = driver.api.cuLaunchKernel(driver.spin, 1, 1, 1, 32, 1, 1, 0, driver.stream, params, nullptr);
    std::uint64_t t1 = now_ns();
    if (result != CUDA_SUCCESS) {
      state.SkipWithError("cuLaunchKernel failed");
      break;
    }
    state.SetIterationTime(static_cast<double>(t1 - t0) / 1e9);
    calls.push_back(static_cast<double>(t1 - t0));
    if (++launches % 256 == 0) driver.api.cuStreamSynchronize(driver.stream);
  }
  driver.api.cuStreamSynchronize(driver.stream);
  if (calls.empty()) return;
  std::sort(calls.begin(), calls.end());
  auto at = [&](double q) { return calls[std::min(calls.size() - 1, static_cast<std::size_t>(q * static_cast<double>(calls.size())))]; };
  state.counters["p50_ns"] = at(0.50);
  state.counters["p90_ns"] = at(0.90);
  state.counters["p99_ns"] = at(0.99);
}

BENCHMARK(BM_RtLaunch)->Iterations(50'000)->UseManualTime()->Unit(benchmark::kNanosecond);

}  // namespace

BENCHMARK_MAIN();
