// A driver-API program for sluice-trace's test: loads the driver library named on the command
// line (dlopen; under LD_PRELOAD=libsluice.so, "libcuda.so.1" is the shim), makes exactly N kernel
// launches (cuLaunchKernel) and M copies (cuMemcpyHtoD), prints "done <pid>", and with --wait
// stays alive until its stdin closes, so a test can look at it while it runs.
//
//   trace_client --driver PATH --launches N --copies M [--wait]
//
// Exit status: 0 success, 1 a driver call failed, 2 bad arguments.
#include <cuda.h>
#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

constexpr const char* kModule = "# sluice fake module v1\nkernel traced params=4\n";

template <typename F>
F symbol(void* library, const char* name) {
  void* address = dlsym(library, name);
  if (address == nullptr) {
    std::fprintf(stderr, "trace_client: %s not found: %s\n", name, dlerror());
    std::exit(1);
  }
  return reinterpret_cast<F>(address);
}

void check(CUresult result, const char* what) {
  if (result != CUDA_SUCCESS) {
    std::fprintf(stderr, "trace_client: %s failed: %d\n", what, static_cast<int>(result));
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string driver;
  long launches = -1, copies = -1;
  bool wait = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--wait") {
      wait = true;
    } else if (i + 1 < argc && arg == "--driver") {
      driver = argv[++i];
    } else if (i + 1 < argc && arg == "--launches") {
      launches = std::strtol(argv[++i], nullptr, 10);
    } else if (i + 1 < argc && arg == "--copies") {
      copies = std::strtol(argv[++i], nullptr, 10);
    } else {
      std::fprintf(stderr, "trace_client: unexpected argument '%s'\n", arg.c_str());
      return 2;
    }
  }
  if (driver.empty() || launches < 0 || copies < 0) {
    std::fprintf(stderr, "usage: trace_client --driver PATH --launches N --copies M [--wait]\n");
    return 2;
  }
  void* library = dlopen(driver.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    std::fprintf(stderr, "trace_client: %s: %s\n", driver.c_str(), dlerror());
    return 1;
  }
  auto init = symbol<CUresult (*)(unsigned)>(library, "cuInit");
  auto device_get = symbol<CUresult (*)(CUdevice*, int)>(library, "cuDeviceGet");
  auto retain = symbol<CUresult (*)(CUcontext*, CUdevice)>(library, "cuDevicePrimaryCtxRetain");
  auto set_current = symbol<CUresult (*)(CUcontext)>(library, "cuCtxSetCurrent");
  auto load = symbol<CUresult (*)(CUmodule*, const void*)>(library, "cuModuleLoadData");
  auto get_function = symbol<CUresult (*)(CUfunction*, CUmodule, const char*)>(library, "cuModuleGetFunction");
  auto alloc = symbol<CUresult (*)(CUdeviceptr*, size_t)>(library, "cuMemAlloc_v2");
  auto launch = symbol<CUresult (*)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                    CUstream, void**, void**)>(library, "cuLaunchKernel");
  auto copy = symbol<CUresult (*)(CUdeviceptr, const void*, size_t)>(library, "cuMemcpyHtoD_v2");
  auto synchronize = symbol<CUresult (*)()>(library, "cuCtxSynchronize");

  CUdevice device = 0;
  CUcontext context = nullptr;
  CUmodule module = nullptr;
  CUfunction function = nullptr;
  CUdeviceptr buffer = 0;
  check(init(0), "cuInit");
  check(device_get(&device, 0), "cuDeviceGet");
  check(retain(&context, device), "cuDevicePrimaryCtxRetain");
  check(set_current(context), "cuCtxSetCurrent");
  check(load(&module, kModule), "cuModuleLoadData");
  check(get_function(&function, module, "traced"), "cuModuleGetFunction");
  check(alloc(&buffer, 4096), "cuMemAlloc");
  int value = 7;
  void* params[] = {&value};
  for (long i = 0; i < launches; ++i) check(launch(function, 1, 1, 1, 32, 1, 1, 0, nullptr, params, nullptr), "cuLaunchKernel");
  char host[256] = {};
  for (long i = 0; i < copies; ++i) check(copy(buffer, host, sizeof(host)), "cuMemcpyHtoD");
  check(synchronize(), "cuCtxSynchronize");
  std::printf("done %d\n", static_cast<int>(getpid()));
  std::fflush(stdout);
  if (wait) {
    char sink[64];
    while (read(STDIN_FILENO, sink, sizeof(sink)) > 0) {
    }
  }
  return 0;
}
