// sluice-loadgen: a CUDA driver-API client for the demo and the scenario tests. It loads one PTX
// module (spin_ptx.h) and runs one role:
//
//   rt    periodic small launches; measures launch -> completion latency with the host clock
//         (latency_us, wait_us = latency - kernel time) and with events around the kernel
//         (event_us, device_wait_us: the same without the host's wake-up after completion)
//   be    keeps a deep queue of longer spin kernels and counts how many complete
//   copy  a large host-to-device copy, a memset over part of it, a copy back, and a check of every
//         word (large copies are split by the shim under sluiced: order must survive)
//
// It reaches the driver through dlopen("libcuda.so.1") (or --driver PATH), so under
// LD_PRELOAD=libsluice.so it talks to the shim, and with the fake driver on LD_LIBRARY_PATH (or
// --driver) it runs without a GPU. It prints one JSON object with its measurements.
#include <dlfcn.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sluice/common/clock.h"
#if __has_include("sluice/fake/fake_driver.h")
#include "sluice/fake/fake_driver.h"
#define SLUICE_LOADGEN_FAKE_TRACE 1
#endif
#include "sluice/shim/cuda.h"
#include "sluice/shim/driver_api.h"
#include "spin_ptx.h"

namespace {

using nlohmann::json;
using sluice::now_ns;

// A failed driver call. Thrown inside this executable only and caught in main().
struct DriverError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string driver_path;
  int device = 0;
  std::string out;
  // rt and be
  double kernel_us = 50;
  unsigned grid = 1;
  unsigned block = 32;
  double duration_s = 2;
  unsigned count = 0;  // rt: launches (0: until duration_s)
  unsigned warmup = 5;
  bool raw = false;  // rt: also print every sample
  std::string fake_trace;  // write the fake driver's execution trace here
  // rt
  double period_us = 2000;
  // be
  unsigned depth = 16;
  // copy
  unsigned mib = 64;
  unsigned repeat = 1;
};

class Gpu {
 public:
  explicit Gpu(const Options& options) {
    const char* path = options.driver_path.empty() ? "libcuda.so.1" : options.driver_path.c_str();
    handle_ = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (handle_ == nullptr) throw DriverError(std::string("cannot load the CUDA driver: ") + dlerror());
    api_.resolve(handle_);
    if (api_.cuInit == nullptr || api_.cuLaunchKernel == nullptr) throw DriverError(std::string(path) + " is not a CUDA driver");
    check(api_.cuInit(0), "cuInit");
    CUdevice device = 0;
    check(api_.cuDeviceGet(&device, options.device), "cuDeviceGet");
    check(api_.cuDevicePrimaryCtxRetain(&ctx_, device), "cuDevicePrimaryCtxRetain");
    check(api_.cuCtxSetCurrent(ctx_), "cuCtxSetCurrent");
    check(api_.cuDeviceGetAttribute(&sms_, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, device), "cuDeviceGetAttribute");
    check(api_.cuModuleLoadData(&module_, sluice::loadgen::kSpinPtx), "cuModuleLoadData");
    check(api_.cuModuleGetFunction(&spin_, module_, sluice::loadgen::kSpinKernel), "cuModuleGetFunction");
    check(api_.cuStreamCreate(&stream_, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  }

  void check(CUresult result, const char* what) const {
    if (result == CUDA_SUCCESS) return;
    const char* name = nullptr;
    if (api_.cuGetErrorName != nullptr) api_.cuGetErrorName(result, &name);
    throw DriverError(std::string(what) + " failed: " + (name != nullptr ? name : std::to_string(result)));
  }

  void launch_spin(std::uint64_t ns_per_block, unsigned grid, unsigned block) {
    void* params[] = {&ns_per_block};
    check(api_.cuLaunchKernel(spin_, grid, 1, 1, block, 1, 1, 0, stream_, params, nullptr), "cuLaunchKernel");
  }

  CUevent event(bool timing = true) {
    CUevent e = nullptr;
    check(api_.cuEventCreate(&e, timing ? CU_EVENT_DEFAULT : CU_EVENT_DISABLE_TIMING), "cuEventCreate");
    return e;
  }

  double elapsed_ms(CUevent start, CUevent end) {
    float ms = 0;
    auto fn = api_.cuEventElapsedTime_v2 != nullptr ? api_.cuEventElapsedTime_v2 : api_.cuEventElapsedTime;
    check(fn(&ms, start, end), "cuEventElapsedTime");
    return ms;
  }

  const sluice::shim::DriverApi& api() const { return api_; }
  CUstream stream() const { return stream_; }
  int sms() const { return sms_; }

 private:
  void* handle_ = nullptr;
  sluice::shim::DriverApi api_;
  CUcontext ctx_ = nullptr;
  CUmodule module_ = nullptr;
  CUfunction spin_ = nullptr;
  CUstream stream_ = nullptr;
  int sms_ = 1;
};

json percentiles(std::vector<double> values) {
  if (values.empty()) return json{{"count", 0}};
  std::sort(values.begin(), values.end());
  auto at = [&](double q) {
    std::size_t index = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size()))) - 1;
    return values[std::min(index, values.size() - 1)];
  };
  double sum = 0;
  for (double v : values) sum += v;
  return {{"count", values.size()}, {"p50", at(0.50)}, {"p90", at(0.90)}, {"p99", at(0.99)},
          {"max", values.back()}, {"mean", sum / static_cast<double>(values.size())}};
}

std::uint64_t waves(unsigned grid, int sms) {
  return (grid + static_cast<unsigned>(std::max(sms, 1)) - 1) / static_cast<unsigned>(std::max(sms, 1));
}

json run_rt(Gpu& gpu, const Options& o) {
  const auto& api = gpu.api();
  CUevent start = gpu.event(), end = gpu.event();
  const auto ns = static_cast<std::uint64_t>(o.kernel_us * 1000);
  const double kernel_us = o.kernel_us * static_cast<double>(waves(o.grid, gpu.sms()));
  const auto period = static_cast<std::uint64_t>(o.period_us * 1000);
  std::vector<double> latency, wait, gpu_time, device_wait, call;
  const std::uint64_t begin = now_ns();
  const std::uint64_t stop = begin + static_cast<std::uint64_t>(o.duration_s * 1e9);
  for (unsigned i = 0;; ++i) {
    bool measured = i >= o.warmup;
    if (o.count != 0 ? i >= o.warmup + o.count : now_ns() >= stop) break;
    std::uint64_t target = begin + i * period;
    while (now_ns() < target) std::this_thread::sleep_for(std::chrono::microseconds(std::min<std::uint64_t>((target - now_ns()) / 1000, 500)));
    std::uint64_t t0 = now_ns();
    gpu.check(api.cuEventRecord(start, gpu.stream()), "cuEventRecord");
    std::uint64_t c0 = now_ns();
    gpu.launch_spin(ns, o.grid, o.block);
    std::uint64_t c1 = now_ns();
    gpu.check(api.cuEventRecord(end, gpu.stream()), "cuEventRecord");
    gpu.check(api.cuEventSynchronize(end), "cuEventSynchronize");
    std::uint64_t t1 = now_ns();
    if (!measured) continue;
    double us = static_cast<double>(t1 - t0) / 1000.0;
    latency.push_back(us);
    wait.push_back(std::max(0.0, us - kernel_us));
    call.push_back(static_cast<double>(c1 - c0) / 1000.0);
    double event_us = gpu.elapsed_ms(start, end) * 1000.0;
    gpu_time.push_back(event_us);
    device_wait.push_back(std::max(0.0, event_us - kernel_us));
  }
  return {{"role", "rt"},
          {"kernel_us", kernel_us},
          {"period_us", o.period_us},
          {"grid", o.grid},
          {"latency_us", percentiles(latency)},
          {"wait_us", percentiles(wait)},
          {"event_us", percentiles(gpu_time)},
          {"device_wait_us", percentiles(device_wait)},
          {"launch_call_us", percentiles(call)},
          {"raw_device_wait_us", o.raw ? json(device_wait) : json(nullptr)}};
}

json run_be(Gpu& gpu, const Options& o) {
  const auto& api = gpu.api();
  const auto ns = static_cast<std::uint64_t>(o.kernel_us * 1000);
  std::vector<CUevent> ring;
  for (unsigned i = 0; i < std::max(o.depth, 1u); ++i) ring.push_back(gpu.event(false));
  std::uint64_t launched = 0, completed = 0;
  const std::uint64_t begin = now_ns();
  const std::uint64_t stop = begin + static_cast<std::uint64_t>(o.duration_s * 1e9);
  std::vector<std::uint64_t> progress;  // completions per 100 ms
  while (now_ns() < stop) {
    if (launched - completed == ring.size()) {
      gpu.check(api.cuEventSynchronize(ring[completed % ring.size()]), "cuEventSynchronize");
      ++completed;
      std::size_t bucket = static_cast<std::size_t>((now_ns() - begin) / 100'000'000);
      if (progress.size() <= bucket) progress.resize(bucket + 1, 0);
      ++progress[bucket];
      continue;
    }
    gpu.launch_spin(ns, o.grid, o.block);
    gpu.check(api.cuEventRecord(ring[launched % ring.size()], gpu.stream()), "cuEventRecord");
    ++launched;
  }
  const double window_s = static_cast<double>(now_ns() - begin) / 1e9;
  gpu.check(api.cuStreamSynchronize(gpu.stream()), "cuStreamSynchronize");
  const double kernel_us = o.kernel_us * static_cast<double>(waves(o.grid, gpu.sms()));
  return {{"role", "be"},
          {"kernel_us", kernel_us},
          {"depth", ring.size()},
          {"completed", completed},
          {"kernels_per_s", static_cast<double>(completed) / window_s},
          {"gpu_ms_per_s", static_cast<double>(completed) * kernel_us / 1000.0 / window_s},
          {"per_100ms", progress}};
}

json run_copy(Gpu& gpu, const Options& o) {
  const auto& api = gpu.api();
  const std::size_t bytes = std::size_t{o.mib} << 20;
  const std::size_t words = bytes / 4;
  void* src = nullptr;
  void* dst = nullptr;
  CUdeviceptr device = 0;
  gpu.check(api.cuMemAllocHost_v2(&src, bytes), "cuMemAllocHost");
  gpu.check(api.cuMemAllocHost_v2(&dst, bytes), "cuMemAllocHost");
  gpu.check(api.cuMemAlloc_v2(&device, bytes), "cuMemAlloc");
  auto* in = static_cast<std::uint32_t*>(src);
  auto* out = static_cast<std::uint32_t*>(dst);
  const std::size_t first = words / 2, count = words / 4;  // the memset covers the third quarter
  const std::uint32_t marker = 0xdeadbeef;
  std::uint64_t mismatches = 0;
  std::vector<double> ms;
  for (unsigned round = 0; round < std::max(o.repeat, 1u); ++round) {
    for (std::size_t i = 0; i < words; ++i) in[i] = static_cast<std::uint32_t>(i * 2654435761u + round);
    std::fill(out, out + words, 0u);
    std::uint64_t t0 = now_ns();
    gpu.check(api.cuMemcpyHtoDAsync_v2(device, src, bytes, gpu.stream()), "cuMemcpyHtoDAsync");
    gpu.check(api.cuMemsetD32Async(device + first * 4, marker, count, gpu.stream()), "cuMemsetD32Async");
    gpu.check(api.cuMemcpyDtoHAsync_v2(dst, device, bytes, gpu.stream()), "cuMemcpyDtoHAsync");
    gpu.check(api.cuStreamSynchronize(gpu.stream()), "cuStreamSynchronize");
    ms.push_back(static_cast<double>(now_ns() - t0) / 1e6);
    for (std::size_t i = 0; i < words; ++i) {
      std::uint32_t expected = i >= first && i < first + count ? marker : static_cast<std::uint32_t>(i * 2654435761u + round);
      mismatches += out[i] != expected ? 1 : 0;
    }
  }
  api.cuMemFree_v2(device);
  api.cuMemFreeHost(src);
  api.cuMemFreeHost(dst);
  return {{"role", "copy"}, {"bytes", bytes}, {"rounds", std::max(o.repeat, 1u)}, {"mismatches", mismatches},
          {"ok", mismatches == 0}, {"round_ms", percentiles(ms)}};
}

// The fake driver's execution trace of this process (SLUICE_FAKE_TRACE=1), as JSON. The fake
// may sit under the shim, so it is found by path (SLUICE_REAL_LIBCUDA, --driver) or by its SONAME.
void write_fake_trace(const Options& o) {
#ifndef SLUICE_LOADGEN_FAKE_TRACE
  (void)o;
  throw DriverError("this sluice-loadgen was built without the fake driver's header: no trace");
#else
  const char* real = std::getenv("SLUICE_REAL_LIBCUDA");
  std::string path = real != nullptr ? real : o.driver_path.empty() ? "libcuda.so.1" : o.driver_path;
  void* fake = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  using Count = std::size_t (*)();
  using Read = std::size_t (*)(sluice_fake_trace_record*, std::size_t, std::size_t);
  auto count = fake != nullptr ? reinterpret_cast<Count>(dlsym(fake, "sluice_fake_trace_count")) : nullptr;
  auto read = fake != nullptr ? reinterpret_cast<Read>(dlsym(fake, "sluice_fake_trace_read")) : nullptr;
  if (count == nullptr || read == nullptr) throw DriverError(path + " is not the fake driver: no trace to write");
  std::vector<sluice_fake_trace_record> records(count());
  records.resize(read(records.data(), 0, records.size()));
  json out = json::array();
  for (const auto& r : records) {
    out.push_back({{"kind", r.kind}, {"engine", r.engine}, {"ticket", r.ticket}, {"stream", r.stream},
                   {"submit_ns", r.submit_ns}, {"start_ns", r.start_ns}, {"end_ns", r.end_ns},
                   {"name", std::string(r.name, strnlen(r.name, sizeof(r.name)))}});
  }
  std::ofstream(o.fake_trace) << out.dump() << "\n";
#endif
}

int run(int argc, char** argv) {
  CLI::App app{"sluice-loadgen: RT and BE load for the sluice demo and scenario tests"};
  app.require_subcommand(1);
  Options o;
  app.add_option("--driver", o.driver_path, "driver library to dlopen (default: libcuda.so.1 from the loader path)");
  app.add_option("--device", o.device, "device ordinal");
  app.add_option("--out", o.out, "write the JSON result here instead of stdout");
  app.add_option("--fake-trace", o.fake_trace, "fake driver only: write its execution trace (needs SLUICE_FAKE_TRACE=1)");
  auto add_kernel = [&](CLI::App* sub) {
    sub->add_option("--kernel-us", o.kernel_us, "spin time per block (us)");
    sub->add_option("--grid", o.grid, "blocks per launch");
    sub->add_option("--block", o.block, "threads per block");
    sub->add_option("--duration-s", o.duration_s, "how long to run");
  };
  CLI::App* rt = app.add_subcommand("rt", "periodic small kernels; latency from launch to completion");
  add_kernel(rt);
  rt->add_option("--period-us", o.period_us, "time between launches");
  rt->add_option("--count", o.count, "launches to measure (0: until --duration-s)");
  rt->add_option("--warmup", o.warmup, "launches not measured");
  rt->add_flag("--raw", o.raw, "also print every sample of device_wait_us");
  CLI::App* be = app.add_subcommand("be", "a deep queue of longer kernels; counts completions");
  add_kernel(be);
  be->add_option("--depth", o.depth, "kernels kept in flight");
  CLI::App* copy = app.add_subcommand("copy", "large copy, memset, copy back; verifies every word");
  copy->add_option("--mib", o.mib, "copy size in MiB");
  copy->add_option("--repeat", o.repeat, "rounds");
  CLI11_PARSE(app, argc, argv);

  Gpu gpu(o);
  json result = rt->parsed() ? run_rt(gpu, o) : be->parsed() ? run_be(gpu, o) : run_copy(gpu, o);
  result["pid"] = getpid();
  if (!o.fake_trace.empty()) write_fake_trace(o);
  if (const char* label = std::getenv("SLUICE_CLASS")) result["label"] = label;
  if (o.out.empty()) {
    std::cout << result.dump() << std::endl;
  } else {
    std::ofstream(o.out) << result.dump(2) << "\n";
  }
  return result.value("ok", true) ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const DriverError& error) {
    std::fprintf(stderr, "sluice-loadgen: %s\n", error.what());
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "sluice-loadgen: %s\n", error.what());
    return 1;
  }
}
