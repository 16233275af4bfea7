// fake_gpu_client: a process that uses the fake driver as told on stdin, for the cross-process
// tests (two of them with one SLUICE_FAKE_GPU_DIR share a device). One command a line, one
// answer a line: "ok ..." or "error <CUresult>".
//
//   init                          cuInit, the primary context, a stream and a spin kernel
//   spin <ns_per_block> <blocks>  launch the spin kernel on the stream (does not wait)
//   sync                          synchronize the stream
//   last                          the last finished kernel: "ok <ticket> <start_ns> <end_ns>"
//   export <value>                4 KiB of device memory filled with <value>: "ok <handle as hex>"
//   peek                          the first 32-bit word of the exported memory
//   import <hex>                  open the handle, answer its first word, write word + 1, close
//   time <n>                      n cuStreamQuery calls: "ok <average ns per call>"
//   burst <n>                     n zero-time launches, then synchronize
//   wakeups                       how often this process's executor woke up
//   quit
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>

#include "sluice/fake/fake_driver.h"
#include "sluice/shim/cuda.h"

namespace {

constexpr const char* kModule = "# sluice fake module v1\nkernel spin params=8 op=spin\n";

struct Client {
  CUcontext ctx = nullptr;
  CUstream stream = nullptr;
  CUfunction spin = nullptr;
  CUdeviceptr exported = 0;
};

std::string hex(const void* data, std::size_t bytes) {
  std::string out;
  char digits[3];
  for (std::size_t i = 0; i < bytes; ++i) {
    std::snprintf(digits, sizeof(digits), "%02x", static_cast<const unsigned char*>(data)[i]);
    out += digits;
  }
  return out;
}

bool unhex(const std::string& text, void* data, std::size_t bytes) {
  if (text.size() != bytes * 2) return false;
  for (std::size_t i = 0; i < bytes; ++i) {
    unsigned value = 0;
    if (std::sscanf(text.c_str() + 2 * i, "%2x", &value) != 1) return false;
    static_cast<unsigned char*>(data)[i] = static_cast<unsigned char>(value);
  }
  return true;
}

#define TRY(expr)                                      \
  do {                                                 \
    CUresult status_ = (expr);                         \
    if (status_ != CUDA_SUCCESS) return fail(status_); \
  } while (0)

std::string fail(CUresult status) { return "error " + std::to_string(status); }

std::string run(Client& client, const std::string& line) {
  std::istringstream words(line);
  std::string command;
  words >> command;
  if (command == "init") {
    TRY(cuInit(0));
    TRY(cuDevicePrimaryCtxRetain(&client.ctx, 0));
    TRY(cuCtxSetCurrent(client.ctx));
    TRY(cuStreamCreate(&client.stream, CU_STREAM_NON_BLOCKING));
    CUmodule module = nullptr;
    TRY(cuModuleLoadData(&module, kModule));
    TRY(cuModuleGetFunction(&client.spin, module, "spin"));
    sluice_fake_trace_enable(1);
    return "ok " + std::to_string(sluice_fake_device_is_shared(0));
  }
  if (command == "spin") {
    std::uint64_t ns = 0;
    unsigned blocks = 1;
    words >> ns >> blocks;
    void* params[] = {&ns};
    TRY(cuLaunchKernel(client.spin, blocks, 1, 1, 32, 1, 1, 0, client.stream, params, nullptr));
    return "ok";
  }
  if (command == "sync") {
    TRY(cuStreamSynchronize(client.stream));
    return "ok";
  }
  if (command == "last") {
    const std::size_t count = sluice_fake_trace_count();
    sluice_fake_trace_record record{};
    for (std::size_t i = count; i-- > 0;) {
      if (sluice_fake_trace_read(&record, i, 1) == 1 && record.kind == SLUICE_FAKE_OP_KERNEL) {
        char text[128];
        std::snprintf(text, sizeof(text), "ok %" PRIu64 " %" PRIu64 " %" PRIu64, record.ticket, record.start_ns, record.end_ns);
        return text;
      }
    }
    return "error none";
  }
  if (command == "export") {
    unsigned value = 0;
    words >> value;
    TRY(cuMemAlloc_v2(&client.exported, 4096));
    TRY(cuMemsetD32_v2(client.exported, value, 1024));
    TRY(cuCtxSynchronize());
    CUipcMemHandle handle{};
    TRY(cuIpcGetMemHandle(&handle, client.exported));
    return "ok " + hex(&handle, sizeof(handle));
  }
  if (command == "peek") {
    std::uint32_t value = 0;
    TRY(cuMemcpyDtoH_v2(&value, client.exported, sizeof(value)));
    return "ok " + std::to_string(value);
  }
  if (command == "import") {
    std::string text;
    words >> text;
    CUipcMemHandle handle{};
    if (!unhex(text, &handle, sizeof(handle))) return "error hex";
    CUdeviceptr mapped = 0;
    TRY(cuIpcOpenMemHandle_v2(&mapped, handle, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
    std::uint32_t value = 0;
    TRY(cuMemcpyDtoH_v2(&value, mapped, sizeof(value)));
    TRY(cuMemsetD32_v2(mapped, value + 1, 1));
    TRY(cuCtxSynchronize());
    TRY(cuIpcCloseMemHandle(mapped));
    return "ok " + std::to_string(value);
  }
  if (command == "burst") {
    int launches = 0;
    words >> launches;
    std::uint64_t ns = 0;
    void* params[] = {&ns};
    for (int i = 0; i < launches; ++i) TRY(cuLaunchKernel(client.spin, 1, 1, 1, 32, 1, 1, 0, client.stream, params, nullptr));
    TRY(cuStreamSynchronize(client.stream));
    return "ok";
  }
  if (command == "wakeups") {
    sluice_fake_counters counters{};
    sluice_fake_counters_get(&counters, sizeof(counters));
    return "ok " + std::to_string(counters.executor_wakeups);
  }
  if (command == "time") {
    int calls = 0;
    words >> calls;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) cuStreamQuery(client.stream);
    const auto elapsed = std::chrono::steady_clock::now() - start;
    return "ok " + std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count() / std::max(calls, 1));
  }
  return "error unknown command '" + command + "'";
}

}  // namespace

int main() {
  Client client;
  std::string line;
  while (std::getline(std::cin, line) && line != "quit") {
    std::cout << run(client, line) << std::endl;
  }
  return 0;
}
