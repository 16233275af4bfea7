// An ordinary CUDA driver-API program, built against the toolkit's cuda.h and linked to
// libcuda.so.1 (the fake driver's file; with LD_PRELOAD=libsluice.so the shim answers instead).
// shim_integration_test runs it in several ways and compares what it prints.
//
//   shim_client workload     a mixed workload on three streams; checks its own results against a
//                            host computation and prints "digest <hex>"
//   shim_client dlopen       the same workload through dlopen("libcuda.so.1") + dlsym
//   shim_client procaddress  the same workload through cuGetProcAddress pointers, plus checks of
//                            which variant each (name, version, flags) query returns
//   shim_client proctable    only those checks of cuGetProcAddress's answers (they need no device)
//   shim_client fork         the workload, then again in a forked child and in the parent
//   shim_client unmanaged    three calls of an entry point sluice does not queue
//
// Built twice: as is, and with CUDA_API_PER_THREAD_DEFAULT_STREAM (the _ptsz/_ptds entry points).
// Exit status 0 means every check passed.
#include <cuda.h>
#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr std::uint32_t kWords = 256;
constexpr const char* kModule =
    "# sluice fake module v1\n"
    "kernel affine params=8,4,4,4 op=affine_u32\n"
    "kernel append params=8,4 op=append_u32\n";

int g_failures = 0;

#define CHECK(cond)                                                                              \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      std::fprintf(stderr, "shim_client: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                                              \
    }                                                                                            \
  } while (0)
#define CU(call) CHECK((call) == CUDA_SUCCESS)

// The entry points the workload uses, however they were obtained. The member names are the
// macros of cuda.h, so that each one holds the variant this build's cuda.h selects.
struct Api {
#define SLUICE_API(name) decltype(&::name) name##_ = nullptr;
#define SLUICE_API_LIST(X)                                                                       \
  X(cuInit)                                                                                      \
  X(cuDeviceGet)                                                                                 \
  X(cuDevicePrimaryCtxRetain) X(cuCtxSetCurrent) X(cuModuleLoadData) X(cuModuleGetFunction)      \
      X(cuStreamCreate) X(cuStreamDestroy) X(cuMemAlloc) X(cuMemFree) X(cuMemAllocHost)          \
          X(cuMemFreeHost) X(cuMemsetD32Async) X(cuMemsetD8Async) X(cuLaunchKernel)              \
              X(cuLaunchKernelEx) X(cuEventCreate) X(cuEventRecord) X(cuStreamWaitEvent)         \
                  X(cuEventDestroy) X(cuEventSynchronize) X(cuEventQuery) X(cuMemcpyDtoDAsync)   \
                      X(cuMemcpyHtoDAsync) X(cuMemcpyDtoHAsync) X(cuMemcpyAsync) X(cuMemcpyDtoH) \
                          X(cuLaunchHostFunc) X(cuStreamSynchronize) X(cuStreamQuery)            \
                              X(cuCtxSynchronize) X(cuStreamBeginCapture) X(cuStreamEndCapture)  \
                                  X(cuGraphInstantiate) X(cuGraphLaunch) X(cuGraphExecDestroy)   \
                                      X(cuGraphDestroy) X(cuModuleUnload)
  SLUICE_API_LIST(SLUICE_API)
#undef SLUICE_API
};

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

// Linked directly: the names as the program's own calls resolve them.
Api linked_api() {
  Api api;
#define SLUICE_API(name) api.name##_ = &::name;
  SLUICE_API_LIST(SLUICE_API)
#undef SLUICE_API
  return api;
}

// dlopen + dlsym, the way Triton, XLA and the PyTorch jiterator reach the driver.
Api dlopen_api() {
  Api api;
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  CHECK(lib != nullptr);
  if (lib == nullptr) return api;
#define SLUICE_API(name) \
  api.name##_ = reinterpret_cast<decltype(&::name)>(dlsym(lib, STRINGIFY(name)));
  SLUICE_API_LIST(SLUICE_API)
#undef SLUICE_API
  return api;
}

#ifdef CUDA_API_PER_THREAD_DEFAULT_STREAM
constexpr cuuint64_t kProcFlags = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
#else
constexpr cuuint64_t kProcFlags = CU_GET_PROC_ADDRESS_DEFAULT;
#endif

// The name cuGetProcAddress knows a symbol by: without its ABI and per-thread suffixes.
std::string base_name(std::string symbol) {
  for (const char* suffix : {"_ptsz", "_ptds"}) {
    if (symbol.size() > 5 && symbol.compare(symbol.size() - 5, 5, suffix) == 0)
      symbol.resize(symbol.size() - 5);
  }
  const auto v = symbol.rfind("_v");
  if (v != std::string::npos && v + 2 < symbol.size() &&
      symbol.find_first_not_of("0123456789", v + 2) == std::string::npos) {
    symbol.resize(v);
  }
  return symbol;
}

// cuGetProcAddress, the way libcudart reaches the driver: the base name of the variant this header
// selects, and an ABI version that picks that variant (12080: before 13.0 changed cuCtxSynchronize,
// which this header still declares with its old prototype).
Api proc_address_api() {
  Api api;
#define SLUICE_API(name)                                                 \
  {                                                                      \
    void* fn = nullptr;                                                  \
    CUdriverProcAddressQueryResult status{};                             \
    const std::string base = base_name(STRINGIFY(name));                 \
    CU(cuGetProcAddress(base.c_str(), &fn, 12080, kProcFlags, &status)); \
    api.name##_ = reinterpret_cast<decltype(&::name)>(fn);               \
  }
  SLUICE_API_LIST(SLUICE_API)
#undef SLUICE_API
  return api;
}

std::uint32_t fnv(const void* data, std::size_t size, std::uint32_t h = 2166136261u) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 16777619u;
  return h;
}

struct HostCounter {
  int calls = 0;
};
void CUDA_CB count_call(void* data) {
  ++static_cast<HostCounter*>(data)->calls;
}

// Three streams (the default stream, a blocking one and a non-blocking one), events between them,
// kernels whose results depend on their order, copies both ways, memsets, a host function and a
// captured graph. Returns the digest of everything it read back.
std::uint32_t workload(const Api& cu) {
  CUdevice device = 0;
  CUcontext ctx = nullptr;
  CUmodule module = nullptr;
  CUfunction affine = nullptr;
  CUfunction append = nullptr;
  CU(cu.cuInit_(0));
  if (g_failures > 0) return 0;  // no driver: nothing else can work
  CU(cu.cuDeviceGet_(&device, 0));
  CU(cu.cuDevicePrimaryCtxRetain_(&ctx, device));
  CU(cu.cuCtxSetCurrent_(ctx));
  CU(cu.cuModuleLoadData_(&module, kModule));
  CU(cu.cuModuleGetFunction_(&affine, module, "affine"));
  CU(cu.cuModuleGetFunction_(&append, module, "append"));
  CUstream blocking = nullptr;
  CUstream other = nullptr;
  CU(cu.cuStreamCreate_(&blocking, CU_STREAM_DEFAULT));
  CU(cu.cuStreamCreate_(&other, CU_STREAM_NON_BLOCKING));
  CUdeviceptr a = 0, b = 0, log = 0;
  CU(cu.cuMemAlloc_(&a, kWords * 4));
  CU(cu.cuMemAlloc_(&b, kWords * 4));
  CU(cu.cuMemAlloc_(&log, 4 * 4096));
  void* pinned = nullptr;
  CU(cu.cuMemAllocHost_(&pinned, kWords * 4));
  auto* host = static_cast<std::uint32_t*>(pinned);
  CUevent done_a = nullptr, done_b = nullptr;
  CU(cu.cuEventCreate_(&done_a, CU_EVENT_DEFAULT));
  CU(cu.cuEventCreate_(&done_b, CU_EVENT_DISABLE_TIMING));

  auto run_affine = [&](CUstream s, CUdeviceptr p, std::uint32_t mul, std::uint32_t add) {
    std::uint32_t count = kWords;
    void* params[] = {&p, &mul, &add, &count};
    CU(cu.cuLaunchKernel_(affine, 2, 1, 1, 64, 1, 1, 0, s, params, nullptr));
  };
  auto run_append = [&](CUstream s, std::uint32_t tag) {
    // Through cuLaunchKernelEx with the parameters in an `extra` buffer.
    struct {
      CUdeviceptr log;
      std::uint32_t tag;
      std::uint32_t pad;
    } args{log, tag, 0};
    std::size_t size = 12;
    void* extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &args, CU_LAUNCH_PARAM_BUFFER_SIZE, &size,
                     CU_LAUNCH_PARAM_END};
    CUlaunchAttribute attr{};
    attr.id = CU_LAUNCH_ATTRIBUTE_PRIORITY;
    attr.value.priority = 0;
    CUlaunchConfig config{};
    config.gridDimX = config.gridDimY = config.gridDimZ = 1;
    config.blockDimX = 32;
    config.blockDimY = config.blockDimZ = 1;
    config.hStream = s;
    config.attrs = &attr;
    config.numAttrs = 1;
    CU(cu.cuLaunchKernelEx_(&config, append, nullptr, extra));
  };

  // Host model of the same computation.
  std::vector<std::uint32_t> ma(kWords, 1), mb(kWords, 0), mlog;
  CU(cu.cuMemsetD32Async_(a, 1, kWords, blocking));
  CU(cu.cuMemsetD8Async_(log, 0, 16, blocking));
  for (std::uint32_t i = 0; i < 120; ++i) {
    run_affine(blocking, a, 3, i);
    for (auto& x : ma) x = x * 3 + i;
    run_append(blocking, i);
    mlog.push_back(i);
  }
#ifndef CUDA_API_PER_THREAD_DEFAULT_STREAM
  // A synchronous copy is a sync point: whatever is held on `blocking` goes first, and the legacy
  // stream it runs on waits for it. (A per-thread default stream does not wait for `blocking`.)
  {
    std::vector<std::uint32_t> early(1 + mlog.size());
    CU(cu.cuMemcpyDtoH_(early.data(), log, early.size() * 4));
    CHECK(early[0] == mlog.size());
    CHECK(std::vector<std::uint32_t>(early.begin() + 1, early.end()) == mlog);
  }
#endif
  // a moves to `other` through an event, is copied to b and transformed there.
  CU(cu.cuEventRecord_(done_a, blocking));
  CU(cu.cuStreamWaitEvent_(other, done_a, 0));
  CU(cu.cuMemcpyDtoDAsync_(b, a, kWords * 4, other));
  mb = ma;
  run_affine(other, b, 5, 7);
  for (auto& x : mb) x = x * 5 + 7;
  HostCounter counter;
  CU(cu.cuLaunchHostFunc_(other, &count_call, &counter));
  CU(cu.cuEventRecord_(done_b, other));
  // The default stream follows `blocking` by itself (legacy) or through the event (per-thread).
  CU(cu.cuStreamWaitEvent_(nullptr, done_b, 0));
  for (std::uint32_t i = 0; i < kWords; ++i) host[i] = i * 11;
  CU(cu.cuMemcpyHtoDAsync_(a, host, kWords * 4, nullptr));
  for (std::uint32_t i = 0; i < kWords; ++i) ma[i] = i * 11;
  run_affine(nullptr, a, 7, 1);
  for (auto& x : ma) x = x * 7 + 1;

  // A captured graph of two launches on `other`, replayed twice.
  CU(cu.cuStreamSynchronize_(nullptr));
  CU(cu.cuStreamBeginCapture_(other, CU_STREAM_CAPTURE_MODE_GLOBAL));
  run_affine(other, b, 1, 2);
  run_affine(other, b, 2, 0);
  CUgraph graph = nullptr;
  CUgraphExec exec = nullptr;
  CU(cu.cuStreamEndCapture_(other, &graph));
  CU(cu.cuGraphInstantiate_(&exec, graph, 0));
  CU(cu.cuGraphLaunch_(exec, other));
  CU(cu.cuGraphLaunch_(exec, other));
  for (int r = 0; r < 2; ++r) {
    for (auto& x : mb) x = (x + 2) * 2;
  }

  // Read back: a through pinned memory asynchronously, b and the log synchronously.
  CU(cu.cuMemcpyDtoHAsync_(host, a, kWords * 4, nullptr));
  CU(cu.cuEventSynchronize_(done_b));
  CU(cu.cuStreamSynchronize_(other));
  CU(cu.cuCtxSynchronize_());
  CHECK(cu.cuEventQuery_(done_a) == CUDA_SUCCESS);
  CHECK(cu.cuStreamQuery_(blocking) == CUDA_SUCCESS);
  std::vector<std::uint32_t> ra(host, host + kWords), rb(kWords), rlog(1 + mlog.size());
  CU(cu.cuMemcpyDtoH_(rb.data(), b, kWords * 4));
  CU(cu.cuMemcpyDtoH_(rlog.data(), log, rlog.size() * 4));
  CHECK(ra == ma);
  CHECK(rb == mb);
  CHECK(rlog[0] == mlog.size());
  CHECK(std::vector<std::uint32_t>(rlog.begin() + 1, rlog.end()) == mlog);
  CHECK(counter.calls == 1);

  std::uint32_t digest = fnv(ra.data(), ra.size() * 4);
  digest = fnv(rb.data(), rb.size() * 4, digest);
  digest = fnv(rlog.data(), rlog.size() * 4, digest);

  CU(cu.cuGraphExecDestroy_(exec));
  CU(cu.cuGraphDestroy_(graph));
  CU(cu.cuEventDestroy_(done_a));
  CU(cu.cuEventDestroy_(done_b));
  CU(cu.cuMemFreeHost_(pinned));
  CU(cu.cuMemFree_(a));
  CU(cu.cuMemFree_(b));
  CU(cu.cuMemFree_(log));
  CU(cu.cuStreamDestroy_(blocking));
  CU(cu.cuStreamDestroy_(other));
  CU(cu.cuModuleUnload_(module));
  return digest;
}

// (name, version, flags) -> the exported symbol cuGetProcAddress must hand out: the shim's own when
// it is preloaded, the fake's when not. dlsym(RTLD_DEFAULT) finds whichever answers the program.
void check_proc_address_rows() {
  struct Row {
    const char* name;
    int version;
    cuuint64_t flags;
    const char* symbol;
  };
  const cuuint64_t pt = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
  const cuuint64_t legacy = CU_GET_PROC_ADDRESS_LEGACY_STREAM;
#ifdef CUDA_API_PER_THREAD_DEFAULT_STREAM
  // cuda.h turns the default flags of this build into the per-thread ones.
  const char* default_launch = "cuLaunchKernel_ptsz";
#else
  const char* default_launch = "cuLaunchKernel";
#endif
  const Row rows[] = {
      {"cuLaunchKernel", 12000, 0, default_launch},
      {"cuLaunchKernel", 12000, legacy, "cuLaunchKernel"},
      {"cuLaunchKernel", 12000, pt, "cuLaunchKernel_ptsz"},
      {"cuMemAlloc", 3020, 0, "cuMemAlloc_v2"},
      {"cuMemcpyHtoD", 12000, pt, "cuMemcpyHtoD_v2_ptds"},
      {"cuMemcpyHtoDAsync", 12000, pt, "cuMemcpyHtoDAsync_v2_ptsz"},
      {"cuMemcpyHtoDAsync", 12000, legacy, "cuMemcpyHtoDAsync_v2"},
      {"cuStreamSynchronize", 12000, pt, "cuStreamSynchronize_ptsz"},
      {"cuEventRecord", 12000, pt, "cuEventRecord_ptsz"},
      {"cuCtxSynchronize", 12080, 0, "cuCtxSynchronize"},
      {"cuCtxSynchronize", 13000, 0, "cuCtxSynchronize_v2"},
      {"cuEventElapsedTime", 12000, 0, "cuEventElapsedTime"},
      {"cuEventElapsedTime", 12080, 0, "cuEventElapsedTime_v2"},
      {"cuGraphInstantiate", 12000, 0, "cuGraphInstantiate_v2"},
      {"cuGraphInstantiateWithFlags", 12000, 0, "cuGraphInstantiateWithFlags"},
      {"cuGetProcAddress", 12000, 0, "cuGetProcAddress_v2"},
      {"cuGetProcAddress", 11030, 0, "cuGetProcAddress"},
  };
  for (const Row& row : rows) {
    void* fn = nullptr;
    CUdriverProcAddressQueryResult status{};
    const CUresult result = cuGetProcAddress(row.name, &fn, row.version, row.flags, &status);
    void* expected = dlsym(RTLD_DEFAULT, row.symbol);
    if (result != CUDA_SUCCESS || status != CU_GET_PROC_ADDRESS_SUCCESS || fn == nullptr ||
        fn != expected) {
      Dl_info info{};
      std::fprintf(
          stderr,
          "shim_client: cuGetProcAddress(%s, %d, %llu): %p (%s) status %d, expected %s %p\n",
          row.name, row.version, static_cast<unsigned long long>(row.flags), fn,
          fn != nullptr && dladdr(fn, &info) && info.dli_sname ? info.dli_sname : "?",
          static_cast<int>(status), row.symbol, expected);
      ++g_failures;
    }
  }
  void* fn = reinterpret_cast<void*>(1);
  CUdriverProcAddressQueryResult status{};
  cuGetProcAddress("cuNoSuchFunction", &fn, 13000, 0, &status);
  CHECK(fn == nullptr && status == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
  // Too old a version: CUDA_SUCCESS and a null pointer, as cuda.h documents and the real driver
  // answered on the H200 (bench/results/fake_driver_conformance_h200.txt).
  fn = reinterpret_cast<void*>(1);
  const CUresult too_old = cuGetProcAddress("cuLaunchKernelEx", &fn, 11000, 0, &status);
  CHECK(too_old == CUDA_SUCCESS && fn == nullptr &&
        status == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
}

// Initializes the driver and makes device 0's primary context current.
void make_primary_current() {
  CUdevice device = 0;
  CUcontext ctx = nullptr;
  CU(cuInit(0));
  CU(cuDeviceGet(&device, 0));
  CU(cuDevicePrimaryCtxRetain(&ctx, device));
  CU(cuCtxSetCurrent(ctx));
}

void unmanaged_calls() {
  make_primary_current();
  CUdeviceptr managed = 0;
  CU(cuMemAllocManaged(&managed, 4096, CU_MEM_ATTACH_GLOBAL));
  CUstream s = nullptr;
  CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
  for (int i = 0; i < 3; ++i) CU(cuStreamAttachMemAsync(s, managed, 0, CU_MEM_ATTACH_SINGLE));
  CU(cuStreamSynchronize(s));
  CU(cuStreamDestroy(s));
  CU(cuMemFree(managed));
}

// Loads the PTX module in `path` and launches its kernel `name` `launches` times on one stream,
// `grid` blocks each, with arguments of the sizes the driver reports: the first is `first`, the
// others 0 (the fake runs PTX kernels as no-ops, `sluice_spin*` ones as `first` ns per wave).
void ptx_launches(const char* path, const char* name, std::uint64_t first = 0, int launches = 10,
                  unsigned grid = 8) {
  std::FILE* file = std::fopen(path, "rb");
  CHECK(file != nullptr);
  if (file == nullptr) return;
  std::string text;
  char chunk[4096];
  for (std::size_t n; (n = std::fread(chunk, 1, sizeof chunk, file)) > 0;) text.append(chunk, n);
  std::fclose(file);
  make_primary_current();
  CUmodule module = nullptr;
  CU(cuModuleLoadData(&module, text.c_str()));
  CUfunction func = nullptr;
  CU(cuModuleGetFunction(&func, module, name));
  std::vector<std::uint64_t> storage;
  std::vector<void*> params;
  for (std::size_t index = 0;; ++index) {
    std::size_t offset = 0;
    std::size_t size = 0;
    if (cuFuncGetParamInfo(func, index, &offset, &size) != CUDA_SUCCESS) break;
    storage.push_back(0);
  }
  if (!storage.empty()) storage[0] = first;
  for (std::uint64_t& slot : storage) params.push_back(&slot);
  CUstream s = nullptr;
  CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
  for (int i = 0; i < launches; ++i)
    CU(cuLaunchKernel(func, grid, 1, 1, 128, 1, 1, 0, s, params.data(), nullptr));
  CU(cuStreamSynchronize(s));
  CU(cuStreamDestroy(s));
  CU(cuModuleUnload(module));
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "workload";
  std::uint32_t digest = 0;
  if (mode == "workload") {
    digest = workload(linked_api());
  } else if (mode == "dlopen") {
    digest = workload(dlopen_api());
  } else if (mode == "procaddress") {
    check_proc_address_rows();
    digest = workload(proc_address_api());
  } else if (mode == "proctable") {
    check_proc_address_rows();
  } else if (mode == "fork") {
    digest = workload(linked_api());
    const pid_t child = fork();
    if (child == 0) {
      const std::uint32_t again = workload(linked_api());
      std::exit(g_failures == 0 && again == digest ? 0 : 3);  // exit handlers run, as in any child
    }
    CHECK(workload(linked_api()) == digest);
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  } else if (mode == "unmanaged") {
    unmanaged_calls();
  } else if (mode == "ptx" && argc > 6) {
    ptx_launches(argv[2], argv[3], std::strtoull(argv[4], nullptr, 10), std::atoi(argv[5]),
                 static_cast<unsigned>(std::atoi(argv[6])));
  } else if (mode == "ptx" && argc > 3) {
    ptx_launches(argv[2], argv[3]);
  } else {
    std::fprintf(stderr, "shim_client: unknown mode '%s'\n", mode.c_str());
    return 2;
  }
  std::printf("digest %08x\n", digest);
  return g_failures == 0 ? 0 : 1;
}
