// Launch-bound loop of tiny kernels through the CUDA driver API, for measuring what libsluice.so
// adds per launch on a real GPU. Run it twice in one job, with and without
// LD_PRELOAD=libsluice.so (scripts/gpu/launch_overhead.sh does), and compare.
//
//   launch_overhead [--launches N] [--warmup N] [--stream legacy|blocking|nonblocking]
//                   [--breakdown]
//
// Prints one JSON object: launches, wall time, launches per second (including the final
// synchronize), and the per-call host time of cuLaunchKernel (p50, p99, mean, in microseconds) on
// the chosen stream (default: the legacy stream, stream 0). With --breakdown it also times, per
// call, what a shim's launch path might add on this machine: cuCtxGetCurrent, cuCtxGetDevice,
// clock_gettime(CLOCK_MONOTONIC), and cuLaunchKernel on each kind of stream ("breakdown_p50_us").
// Exits 77 when there is no GPU (or no driver at all).
//
// The driver is opened with dlopen("libcuda.so.1") rather than linked, so that the program starts
// on machines without one; with LD_PRELOAD=libsluice.so that name is the shim.
#include <cuda.h>
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

namespace {

// An empty kernel in PTX, JIT-compiled by the driver for whatever GPU is present.
const char kPtx[] =
    ".version 7.0\n"
    ".target sm_50\n"
    ".address_size 64\n"
    ".visible .entry tiny(.param .u32 tiny_param_0)\n"
    "{\n"
    "  ret;\n"
    "}\n";

struct Driver {
  decltype(&::cuInit) init;
  decltype(&::cuDeviceGetCount) device_count;
  decltype(&::cuDeviceGet) device_get;
  decltype(&::cuDeviceGetName) device_name;
  decltype(&::cuDevicePrimaryCtxRetain) primary_ctx_retain;
  decltype(&::cuCtxSetCurrent) ctx_set_current;
  decltype(&::cuStreamCreate) stream_create;
  decltype(&::cuModuleLoadData) module_load_data;
  decltype(&::cuModuleGetFunction) module_get_function;
  decltype(&::cuLaunchKernel) launch_kernel;
  decltype(&::cuStreamSynchronize) stream_synchronize;
  decltype(&::cuGetErrorName) error_name;
  decltype(&::cuCtxGetCurrent) ctx_get_current;
  decltype(&::cuCtxGetDevice) ctx_get_device;
} cu;

template <typename T>
bool resolve(void* library, const char* name, T& out) {
  out = reinterpret_cast<T>(dlsym(library, name));
  return out != nullptr;
}

bool open_driver() {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  return lib != nullptr && resolve(lib, "cuInit", cu.init) &&
         resolve(lib, "cuDeviceGetCount", cu.device_count) &&
         resolve(lib, "cuDeviceGet", cu.device_get) &&
         resolve(lib, "cuDeviceGetName", cu.device_name) &&
         resolve(lib, "cuDevicePrimaryCtxRetain", cu.primary_ctx_retain) &&
         resolve(lib, "cuCtxSetCurrent", cu.ctx_set_current) &&
         resolve(lib, "cuStreamCreate", cu.stream_create) &&
         resolve(lib, "cuModuleLoadData", cu.module_load_data) &&
         resolve(lib, "cuModuleGetFunction", cu.module_get_function) &&
         resolve(lib, "cuLaunchKernel", cu.launch_kernel) &&
         resolve(lib, "cuStreamSynchronize", cu.stream_synchronize) &&
         resolve(lib, "cuGetErrorName", cu.error_name) &&
         resolve(lib, "cuCtxGetCurrent", cu.ctx_get_current) &&
         resolve(lib, "cuCtxGetDevice", cu.ctx_get_device);
}

bool check(CUresult result, const char* what) {
  if (result == CUDA_SUCCESS) return true;
  const char* name = nullptr;
  cu.error_name(result, &name);
  std::fprintf(stderr, "launch_overhead: %s failed: %s\n", what, name != nullptr ? name : "?");
  return false;
}

double percentile(std::vector<double>& values, double q) {
  const auto index = static_cast<std::size_t>(q * static_cast<double>(values.size() - 1));
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(index),
                   values.end());
  return values[index];
}

using Clock = std::chrono::steady_clock;

// p50 in microseconds of `calls` calls of f(), each timed on its own.
template <typename F>
double p50_per_call(long calls, F&& f) {
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(calls));
  for (long i = 0; i < calls; ++i) {
    const auto t0 = Clock::now();
    f();
    const auto t1 = Clock::now();
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  return percentile(us, 0.5);
}

}  // namespace

int main(int argc, char** argv) {
  long launches = 200000;
  long warmup = 5000;
  const char* stream_kind = "legacy";
  bool breakdown = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--breakdown") == 0) {
      breakdown = true;
    } else if (i + 1 < argc && std::strcmp(argv[i], "--launches") == 0) {
      launches = std::atol(argv[++i]);
    } else if (i + 1 < argc && std::strcmp(argv[i], "--warmup") == 0) {
      warmup = std::atol(argv[++i]);
    } else if (i + 1 < argc && std::strcmp(argv[i], "--stream") == 0) {
      stream_kind = argv[++i];
    }
  }
  const bool known_stream = std::strcmp(stream_kind, "legacy") == 0 ||
                            std::strcmp(stream_kind, "blocking") == 0 ||
                            std::strcmp(stream_kind, "nonblocking") == 0;
  if (launches <= 0 || warmup < 0 || !known_stream) {
    std::fprintf(stderr,
                 "usage: launch_overhead [--launches N] [--warmup N] "
                 "[--stream legacy|blocking|nonblocking] [--breakdown]\n");
    return 2;
  }
  int devices = 0;
  if (!open_driver() || cu.init(0) != CUDA_SUCCESS || cu.device_count(&devices) != CUDA_SUCCESS ||
      devices == 0) {
    std::fprintf(stderr, "launch_overhead: no GPU\n");
    return 77;
  }
  CUdevice device = 0;
  CUcontext ctx = nullptr;
  CUstream blocking = nullptr;
  CUstream nonblocking = nullptr;
  CUmodule module = nullptr;
  CUfunction tiny = nullptr;
  char name[256] = {};
  if (!check(cu.device_get(&device, 0), "cuDeviceGet") ||
      !check(cu.device_name(name, sizeof name, device), "cuDeviceGetName") ||
      !check(cu.primary_ctx_retain(&ctx, device), "cuDevicePrimaryCtxRetain") ||
      !check(cu.ctx_set_current(ctx), "cuCtxSetCurrent") ||
      !check(cu.stream_create(&blocking, CU_STREAM_DEFAULT), "cuStreamCreate") ||
      !check(cu.stream_create(&nonblocking, CU_STREAM_NON_BLOCKING), "cuStreamCreate") ||
      !check(cu.module_load_data(&module, kPtx), "cuModuleLoadData") ||
      !check(cu.module_get_function(&tiny, module, "tiny"), "cuModuleGetFunction")) {
    return 1;
  }
  const CUstream stream = std::strcmp(stream_kind, "legacy") == 0     ? nullptr
                          : std::strcmp(stream_kind, "blocking") == 0 ? blocking
                                                                      : nonblocking;
  unsigned value = 1;
  void* params[] = {&value};
  for (long i = 0; i < warmup; ++i) {
    if (!check(cu.launch_kernel(tiny, 1, 1, 1, 32, 1, 1, 0, stream, params, nullptr),
               "cuLaunchKernel"))
      return 1;
  }
  if (!check(cu.stream_synchronize(stream), "cuStreamSynchronize")) return 1;

  std::vector<double> call_us;
  call_us.reserve(static_cast<std::size_t>(launches));
  const auto start = Clock::now();
  for (long i = 0; i < launches; ++i) {
    const auto t0 = Clock::now();
    const CUresult result = cu.launch_kernel(tiny, 1, 1, 1, 32, 1, 1, 0, stream, params, nullptr);
    const auto t1 = Clock::now();
    if (!check(result, "cuLaunchKernel")) return 1;
    call_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  if (!check(cu.stream_synchronize(stream), "cuStreamSynchronize")) return 1;
  const double wall_s = std::chrono::duration<double>(Clock::now() - start).count();

  double sum = 0;
  for (double v : call_us) sum += v;
  const double mean = sum / static_cast<double>(call_us.size());
  const double p50 = percentile(call_us, 0.50);
  const double p99 = percentile(call_us, 0.99);
  const char* preload = std::getenv("LD_PRELOAD");
  const bool through_sluice = preload != nullptr && std::strstr(preload, "sluice") != nullptr;
  std::printf(
      "{\"device\": \"%s\", \"sluice\": %s, \"stream\": \"%s\", \"launches\": %ld, "
      "\"wall_s\": %.6f, \"launches_per_s\": %.1f, "
      "\"p50_us\": %.4f, \"p99_us\": %.4f, \"mean_us\": %.4f",
      name, through_sluice ? "true" : "false", stream_kind, launches, wall_s,
      static_cast<double>(launches) / wall_s, p50, p99, mean);
  if (breakdown) {
    const long calls = std::min(launches, 20000L);
    CUcontext current = nullptr;
    CUdevice current_device = 0;
    timespec ts{};
    auto launch_on = [&](CUstream s) {
      return p50_per_call(calls, [&] { cu.launch_kernel(tiny, 1, 1, 1, 32, 1, 1, 0, s, params, nullptr); });
    };
    const double get_current = p50_per_call(calls, [&] { cu.ctx_get_current(&current); });
    const double get_device = p50_per_call(calls, [&] { cu.ctx_get_device(&current_device); });
    const double clock = p50_per_call(calls, [&] { clock_gettime(CLOCK_MONOTONIC, &ts); });
    const double empty = p50_per_call(calls, [] {});
    const double on_legacy = launch_on(nullptr);
    const double on_blocking = launch_on(blocking);
    const double on_nonblocking = launch_on(nonblocking);
    if (!check(cu.stream_synchronize(nullptr), "cuStreamSynchronize") ||
        !check(cu.stream_synchronize(nonblocking), "cuStreamSynchronize")) {
      return 1;
    }
    std::printf(
        ", \"breakdown_p50_us\": {\"timer_only\": %.4f, \"cuCtxGetCurrent\": %.4f, "
        "\"cuCtxGetDevice\": %.4f, \"clock_gettime\": %.4f, \"launch_legacy\": %.4f, "
        "\"launch_blocking\": %.4f, \"launch_nonblocking\": %.4f}",
        empty, get_current, get_device, clock, on_legacy, on_blocking, on_nonblocking);
  }
  std::printf("}\n");
  return 0;
}
