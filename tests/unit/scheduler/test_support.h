// Shared helpers of the scheduler's unit tests: an in-process sluiced, a control client, a mock
// driver with a one-switch "GPU", and the engine-side fakes a gate needs.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "sluice/protocol/layout.h"
#include "sluice/protocol/wire.h"
#include "sluice/scheduler/server.h"
#include "sluice/shim/driver_api.h"
#include "sluice/shim/gate.h"

namespace sluice::sched::testing_support {

// Waits up to `timeout` for `condition`; true when it held.
inline bool eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return condition();
}

inline std::string temp_dir() {
  std::string pattern = ::testing::TempDir() + "/sluice-test-XXXXXX";
  char* made = mkdtemp(pattern.data());
  return made != nullptr ? std::string(made) : ::testing::TempDir();
}

// sluiced on a thread of the test process.
class DaemonThread {
 public:
  explicit DaemonThread(const std::string& socket, const std::string& policy_json = "")
      : DaemonThread(options_for(socket, policy_json)) {}

  explicit DaemonThread(const ServerOptions& options) {
    auto started = Server::start(options);
    if (!started) {
      ADD_FAILURE() << started.error().message;
      return;
    }
    server_ = std::move(*started);
    thread_ = std::thread([this] { EXPECT_TRUE(server_->run()); });
  }
  ~DaemonThread() { stop(); }
  void stop() {
    if (server_) server_->stop();
    if (thread_.joinable()) thread_.join();
    server_.reset();
  }
  Server* server() { return server_.get(); }

  static ServerOptions options_for(const std::string& socket, const std::string& policy_json = "") {
    ServerOptions options;
    options.socket_path = socket;
    options.devices = {0};
    if (!policy_json.empty()) {
      std::string path = socket + ".policy.json";
      std::ofstream(path) << policy_json;
      options.policy_path = path;
    }
    return options;
  }

 private:
  std::unique_ptr<Server> server_;
  std::thread thread_;
};

// One request over a fresh control connection.
inline nlohmann::json control(const std::string& socket, const nlohmann::json& request) {
  auto fd = protocol::connect_unix(socket);
  if (!fd) return {{"ok", false}, {"error", fd.error().message}};
  protocol::set_io_timeout(*fd, 2000);
  protocol::Hello hello{};
  hello.magic = protocol::kMagic;
  hello.abi_major = protocol::kAbiMajor;
  hello.abi_minor = protocol::kAbiMinor;
  hello.role = protocol::Role::control;
  (void)protocol::send_frame(*fd, std::string_view(reinterpret_cast<const char*>(&hello), sizeof(hello)));
  (void)protocol::send_frame(*fd, request.dump());
  auto reply = protocol::recv_frame(*fd);
  close(*fd);
  if (!reply) return {{"ok", false}, {"error", reply.error().message}};
  return nlohmann::json::parse(reply->bytes, nullptr, false);
}

// A driver whose GPU is one switch: while `busy`, events and streams are not ready.
struct MockGpu {
  static inline std::atomic<bool> busy{false};
  static inline std::atomic<int> events_recorded{0};
  static inline std::atomic<int> relaxed_mode_calls{0};
  static inline std::atomic<std::uintptr_t> next_event{0x5000};
  static inline std::atomic<int> queries{0};  // event and stream queries

  static CUresult ctx_get_current(CUcontext* ctx) {
    *ctx = reinterpret_cast<CUcontext>(0x1000);
    return CUDA_SUCCESS;
  }
  static CUresult ctx_set_current(CUcontext) { return CUDA_SUCCESS; }
  static CUresult event_create(CUevent* event, unsigned) {
    *event = reinterpret_cast<CUevent>(next_event.fetch_add(8));
    return CUDA_SUCCESS;
  }
  static CUresult event_record(CUevent, CUstream) {
    events_recorded.fetch_add(1);
    return CUDA_SUCCESS;
  }
  static CUresult not_ready_while_busy() {
    queries.fetch_add(1);
    return busy.load() ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS;
  }
  static CUresult event_query(CUevent) { return not_ready_while_busy(); }
  static CUresult stream_query(CUstream) { return not_ready_while_busy(); }
  static CUresult stream_is_capturing(CUstream, CUstreamCaptureStatus* status) {
    *status = CU_STREAM_CAPTURE_STATUS_NONE;
    return CUDA_SUCCESS;
  }
  static CUresult elapsed(float* ms, CUevent, CUevent) {
    *ms = 0.5f;  // every timed operation took 500 us
    return CUDA_SUCCESS;
  }
  static CUresult capture_mode(CUstreamCaptureMode* mode) {
    if (*mode == CU_STREAM_CAPTURE_MODE_RELAXED) relaxed_mode_calls.fetch_add(1);
    *mode = CU_STREAM_CAPTURE_MODE_GLOBAL;
    return CUDA_SUCCESS;
  }

  static shim::DriverApi api() {
    shim::DriverApi driver;
    driver.cuCtxGetCurrent = ctx_get_current;
    driver.cuCtxSetCurrent = ctx_set_current;
    driver.cuEventCreate = event_create;
    driver.cuEventRecord = event_record;
    driver.cuEventQuery = event_query;
    driver.cuStreamQuery = stream_query;
    driver.cuStreamIsCapturing = stream_is_capturing;
    driver.cuEventElapsedTime_v2 = elapsed;
    driver.cuThreadExchangeStreamCaptureMode = capture_mode;
    return driver;
  }
};

class CountingListener final : public shim::GateListener {
 public:
  void gate_changed() noexcept override { changes.fetch_add(1); }
  void daemon_lost() noexcept override { losses.fetch_add(1); }
  std::atomic<int> changes{0};
  std::atomic<int> losses{0};
};

class OneKernelCatalog final : public shim::KernelCatalog {
 public:
  OneKernelCatalog() {
    info.id = 0xabcdef;
    info.module_hash = 0x1234;
    info.name = "sluice_spin_test_kernel";
  }
  const shim::KernelInfo* find(CUfunction) noexcept override { return &info; }
  shim::KernelInfo info;
};

inline shim::OpDesc kernel_op(std::uint64_t seq, std::uint32_t blocks = 132) {
  shim::OpDesc op;
  op.seq = seq;
  op.stream = reinterpret_cast<CUstream>(0x77);
  op.device = 0;
  op.kind = shim::OpKind::kernel;
  op.func = reinterpret_cast<CUfunction>(0x99);
  op.grid[0] = blocks;
  op.grid[1] = op.grid[2] = 1;
  op.block[0] = 128;
  op.block[1] = op.block[2] = 1;
  op.call_ns = 1;
  return op;
}

}  // namespace sluice::sched::testing_support
