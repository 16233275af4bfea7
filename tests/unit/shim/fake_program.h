// The fixture and the randomized program of the fake-driver engine tests (fake_engine_test.cpp,
// shim_route_test.cpp): the fake driver loaded with dlopen, and random programs over several
// streams checked against a sequential reference model of CUDA semantics.
#pragma once
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mock_driver.h"
#include "sluice/fake/fake_driver.h"
#include "sluice/shim/engine.h"
#include "sluice/shim/toggle_gate.h"

namespace sluice::shim::test {
namespace {  // each test program includes this once

#define ASSERT_CU_OK(expr) ASSERT_EQ(CUDA_SUCCESS, (expr)) << #expr
#define EXPECT_CU_OK(expr) EXPECT_EQ(CUDA_SUCCESS, (expr)) << #expr

// The whole of a file, bytes as they are (empty when it cannot be read).
[[maybe_unused]] std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

constexpr const char* kModule =
    "# sluice fake module v1\n"
    "kernel affine params=8,4,4,4 op=affine_u32\n"
    "kernel append params=8,4 op=append_u32\n";

// The fake driver, loaded once per process like a real driver.
struct Fake {
  void* handle = nullptr;
  DriverApi api;
  decltype(&sluice_fake_wait_idle) wait_idle = nullptr;
  decltype(&sluice_fake_counters_get) counters = nullptr;

  static Fake& get() {
    static Fake fake = [] {
      Fake f;
      f.handle = dlopen(SLUICE_TEST_FAKE_DRIVER, RTLD_NOW | RTLD_LOCAL);
      if (f.handle == nullptr) return f;
      f.api.resolve(f.handle);
      f.wait_idle =
          reinterpret_cast<decltype(f.wait_idle)>(dlsym(f.handle, "sluice_fake_wait_idle"));
      f.counters =
          reinterpret_cast<decltype(f.counters)>(dlsym(f.handle, "sluice_fake_counters_get"));
      return f;
    }();
    return fake;
  }
};

class FakeEngineTest : public ::testing::Test {
 public:
  void SetUp() override {
    Fake& fake = Fake::get();
    ASSERT_NE(fake.handle, nullptr) << "cannot load " << SLUICE_TEST_FAKE_DRIVER;
    cu = &fake.api;
    ASSERT_CU_OK(cu->cuInit(0));
    ASSERT_CU_OK(cu->cuDevicePrimaryCtxRetain(&ctx, 0));
    ASSERT_CU_OK(cu->cuCtxSetCurrent(ctx));
    ASSERT_CU_OK(cu->cuModuleLoadData(&module, kModule));
    ASSERT_CU_OK(cu->cuModuleGetFunction(&affine, module, "affine"));
    ASSERT_CU_OK(cu->cuModuleGetFunction(&append, module, "append"));
    engine = std::make_unique<Engine>(*cu);
    gate = std::make_unique<ManualGate>(*engine, /*open=*/true);
    engine->set_gate(gate.get());
  }

  void TearDown() override {
    if (engine) {
      engine->set_gate(nullptr);
      EXPECT_CU_OK(engine->synchronize_context([&] { return cu->cuCtxSynchronize(); }));
      engine.reset();
    }
    gate.reset();
    for (CUstream s : streams) cu->cuStreamDestroy_v2(s);
    for (CUdeviceptr p : buffers) cu->cuMemFree_v2(p);
    for (void* p : pinned) cu->cuMemFreeHost(p);
    if (module != nullptr) cu->cuModuleUnload(module);
  }

  CUstream new_stream(unsigned flags) {
    CUstream s = nullptr;
    EXPECT_CU_OK(cu->cuStreamCreate(&s, flags));
    engine->stream_created(s, flags);
    std::lock_guard lock(resources_mu);
    streams.push_back(s);
    return s;
  }
  CUdeviceptr new_buffer(std::size_t bytes) {
    CUdeviceptr p = 0;
    EXPECT_CU_OK(cu->cuMemAlloc_v2(&p, bytes));
    EXPECT_CU_OK(cu->cuMemsetD8_v2(p, 0, bytes));
    EXPECT_CU_OK(cu->cuCtxSynchronize());
    std::lock_guard lock(resources_mu);
    buffers.push_back(p);
    return p;
  }
  std::uint32_t* new_pinned(std::size_t count) {
    void* p = nullptr;
    EXPECT_CU_OK(cu->cuMemAllocHost_v2(&p, count * sizeof(std::uint32_t)));
    std::lock_guard lock(resources_mu);
    pinned.push_back(p);
    return static_cast<std::uint32_t*>(p);
  }
  std::vector<std::uint32_t> read(CUdeviceptr p, std::size_t count) {
    std::vector<std::uint32_t> out(count);
    EXPECT_CU_OK(cu->cuMemcpyDtoH_v2(out.data(), p, count * sizeof(std::uint32_t)));
    return out;
  }
  CUresult launch_affine(StreamAbi abi, CUstream s, CUdeviceptr p, std::uint32_t mul,
                         std::uint32_t add, std::uint32_t count, unsigned grid = 1) {
    void* params[] = {&p, &mul, &add, &count};
    return engine->launch_kernel(
        abi, abi == StreamAbi::legacy ? cu->cuLaunchKernel : cu->cuLaunchKernel_ptsz, affine, grid,
        1, 1, 32, 1, 1, 0, s, params, nullptr);
  }
  CUresult launch_append(StreamAbi abi, CUstream s, CUdeviceptr log, std::uint32_t tag) {
    void* params[] = {&log, &tag};
    return engine->launch_kernel(
        abi, abi == StreamAbi::legacy ? cu->cuLaunchKernel : cu->cuLaunchKernel_ptsz, append, 1, 1,
        1, 32, 1, 1, 0, s, params, nullptr);
  }

  const DriverApi* cu = nullptr;
  CUcontext ctx = nullptr;
  CUmodule module = nullptr;
  CUfunction affine = nullptr;
  CUfunction append = nullptr;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<ManualGate> gate;
  std::mutex resources_mu;  // guards the three lists below (programs may run on several threads)
  std::vector<CUstream> streams;
  std::vector<CUdeviceptr> buffers;
  std::vector<void*> pinned;
};

// ---- the randomized program and its reference model
// ------------------------------------------------

struct Lane {
  CUstream handle;
  StreamAbi abi;
  bool legacy;
  bool blocking;  // synchronizes with the legacy stream
};

struct HostLog {
  std::mutex mu;
  std::vector<std::vector<std::uint32_t>> tags;
};

struct HostCall {
  HostLog* log;
  std::size_t lane;
  std::uint32_t tag;
};

void CUDA_CB record_host_call(void* data) {
  auto* call = static_cast<HostCall*>(data);
  std::lock_guard lock(call->log->mu);
  call->log->tags[call->lane].push_back(call->tag);
}

class RandomProgram {
 public:
  static constexpr std::uint32_t kWords = 64;

  RandomProgram(FakeEngineTest& t, std::uint32_t seed) : t_(t), rng_(seed) {}

  using MakeGate =
      std::function<std::unique_ptr<Gate>(const std::vector<CUstream>& canonical_streams)>;

  // Runs `ops` random steps. `make_gate`, when given, builds the gate in force during the program
  // from the streams as the gate sees them.
  void run(int ops, const MakeGate& make_gate) {
    const DriverApi& cu = *t_.cu;
    lanes_ = {
        {nullptr, StreamAbi::legacy, true, true},
        {CU_STREAM_LEGACY, StreamAbi::legacy, true, true},  // the same queue, named explicitly
        {nullptr, StreamAbi::per_thread, false, true},
        {t_.new_stream(0), StreamAbi::legacy, false, true},
        {t_.new_stream(0), StreamAbi::per_thread, false,
         true},  // a named stream through a _ptsz entry
        {t_.new_stream(CU_STREAM_NON_BLOCKING), StreamAbi::legacy, false, false},
        {t_.new_stream(CU_STREAM_NON_BLOCKING), StreamAbi::legacy, false, false},
    };
    host_log_.tags.resize(lanes_.size());
    model_host_.resize(lanes_.size());
    for (int i = 0; i < 4; ++i) {
      buffers_.push_back(t_.new_buffer(kWords * 4));
      model_.emplace_back(kWords, 0u);
      owner_.push_back(3);
    }
    for (std::size_t i = 0; i < lanes_.size(); ++i) {
      logs_.push_back(t_.new_buffer(4 * 1024));
      model_logs_.emplace_back();
    }
    for (int i = 0; i < 3; ++i) {
      CUevent e = nullptr;
      ASSERT_CU_OK(cu.cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
      events_.push_back(e);
    }
    host_calls_.reserve(static_cast<std::size_t>(ops));
    std::unique_ptr<Gate> gate;
    if (make_gate) {
      std::vector<CUstream> canonical;
      for (const Lane& l : lanes_) {
        canonical.push_back(l.handle != nullptr          ? l.handle
                            : l.abi == StreamAbi::legacy ? CU_STREAM_LEGACY
                                                         : CU_STREAM_PER_THREAD);
      }
      gate = make_gate(canonical);
      t_.engine->set_gate(gate.get());
    }
    for (int i = 0; i < ops; ++i) {
      step(static_cast<std::uint32_t>(i));
      if (::testing::Test::HasFatalFailure()) break;
    }
    if (gate) {
      t_.engine->set_gate(nullptr);
      gate.reset();
    }
    if (::testing::Test::HasFatalFailure()) return;
    ASSERT_CU_OK(t_.engine->synchronize_context([&] { return cu.cuCtxSynchronize(); }));
    check();
    for (CUevent e : events_) t_.engine->destroy_event(cu.cuEventDestroy_v2, e);
  }

 private:
  std::uint32_t pick(std::uint32_t n) {
    return std::uniform_int_distribution<std::uint32_t>(0, n - 1)(rng_);
  }
  std::size_t pick_lane() { return pick(static_cast<std::uint32_t>(lanes_.size())); }
  CUevent next_event() { return events_[next_event_++ % events_.size()]; }

  // Orders everything done so far on the owner of `b` before what `lane` does next, the way the
  // application would: an event, the legacy barrier where it applies, or a host-side sync.
  void take(std::size_t b, std::size_t lane) {
    const std::size_t from = owner_[b];
    owner_[b] = lane;
    if (same_queue(from, lane)) return;
    const Lane& f = lanes_[from];
    const Lane& l = lanes_[lane];
    const bool barrier =
        (f.legacy && l.blocking && !l.legacy) || (l.legacy && f.blocking && !f.legacy);
    const std::uint32_t how = pick(barrier ? 3 : 2);
    Engine& e = *t_.engine;
    const DriverApi& cu = *t_.cu;
    if (how == 2) return;  // the legacy stream's implicit barrier orders them
    if (how == 1) {
      ASSERT_CU_OK(e.synchronize_stream(
          f.abi, f.abi == StreamAbi::legacy ? cu.cuStreamSynchronize : cu.cuStreamSynchronize_ptsz,
          f.handle));
      return;
    }
    CUevent ev = next_event();
    ASSERT_CU_OK(
        e.record_event(f.abi, f.abi == StreamAbi::legacy ? cu.cuEventRecord : cu.cuEventRecord_ptsz,
                       ev, f.handle));
    ASSERT_CU_OK(e.wait_event(
        l.abi, l.abi == StreamAbi::legacy ? cu.cuStreamWaitEvent : cu.cuStreamWaitEvent_ptsz,
        l.handle, ev, 0));
  }
  bool same_queue(std::size_t a, std::size_t b) const {
    return a == b || (lanes_[a].legacy && lanes_[b].legacy);
  }

  void step(std::uint32_t tag) {
    Engine& e = *t_.engine;
    const DriverApi& cu = *t_.cu;
    const std::size_t lane = pick_lane();
    const Lane& l = lanes_[lane];
    const bool pt = l.abi == StreamAbi::per_thread;
    const std::size_t b = pick(static_cast<std::uint32_t>(buffers_.size()));
    switch (pick(10)) {
      case 0:
      case 1: {
        take(b, lane);
        const std::uint32_t mul = 1 + 2 * pick(7);
        const std::uint32_t add = pick(1000);
        ASSERT_CU_OK(t_.launch_affine(l.abi, l.handle, buffers_[b], mul, add, kWords, 1 + pick(3)));
        for (auto& x : model_[b]) x = x * mul + add;
        break;
      }
      case 2: {
        take(b, lane);
        const std::uint32_t value = pick(1u << 30);
        OpDesc desc;
        desc.kind = OpKind::memset;
        ASSERT_CU_OK(e.enqueue(l.abi, desc, pt ? cu.cuMemsetD32Async_ptsz : cu.cuMemsetD32Async,
                               buffers_[b], value, std::size_t{kWords}, l.handle));
        model_[b].assign(kWords, value);
        break;
      }
      case 3: {
        const std::size_t to =
            (b + 1 + pick(static_cast<std::uint32_t>(buffers_.size() - 1))) % buffers_.size();
        take(b, lane);
        take(to, lane);
        ASSERT_CU_OK(e.copy_1d(l.abi, pt ? cu.cuMemcpyDtoDAsync_v2_ptsz : cu.cuMemcpyDtoDAsync_v2,
                               buffers_[to], buffers_[b], std::size_t{kWords * 4}, l.handle));
        model_[to] = model_[b];
        break;
      }
      case 4: {  // host to device, from pinned memory (held) or pageable memory (waits)
        take(b, lane);
        const bool pageable = pick(2) == 0;
        std::vector<std::uint32_t> values(kWords);
        for (auto& v : values) v = pick(1u << 31);
        std::vector<std::uint32_t> staging = values;
        const void* source = staging.data();
        if (!pageable) {
          std::uint32_t* host = t_.new_pinned(kWords);
          std::memcpy(host, values.data(), kWords * 4);
          source = host;
        }
        ASSERT_CU_OK(e.copy_1d(l.abi, pt ? cu.cuMemcpyHtoDAsync_v2_ptsz : cu.cuMemcpyHtoDAsync_v2,
                               buffers_[b], source, std::size_t{kWords * 4}, l.handle));
        std::fill(staging.begin(), staging.end(), 0xDEAD);  // pageable memory is free to reuse now
        model_[b] = values;
        break;
      }
      case 5: {  // device to host into pageable memory: complete when the call returns
        take(b, lane);
        std::vector<std::uint32_t> host(kWords, 0);
        ASSERT_CU_OK(e.copy_1d(l.abi, pt ? cu.cuMemcpyDtoHAsync_v2_ptsz : cu.cuMemcpyDtoHAsync_v2,
                               static_cast<void*>(host.data()), buffers_[b],
                               std::size_t{kWords * 4}, l.handle));
        ASSERT_EQ(host, model_[b]) << "pageable device-to-host copy, op " << tag;
        break;
      }
      case 6:
        ASSERT_CU_OK(t_.launch_append(l.abi, l.handle, logs_[canonical(lane)], tag));
        model_logs_[canonical(lane)].push_back(tag);
        break;
      case 7: {
        host_calls_.push_back({&host_log_, canonical(lane), tag});
        OpDesc desc;
        desc.kind = OpKind::host_fn;
        ASSERT_CU_OK(e.enqueue(l.abi, desc, pt ? cu.cuLaunchHostFunc_ptsz : cu.cuLaunchHostFunc,
                               l.handle, &record_host_call,
                               static_cast<void*>(&host_calls_.back())));
        model_host_[canonical(lane)].push_back(tag);
        break;
      }
      case 8: {  // a dependency between two lanes, without moving ownership
        const std::size_t other = pick_lane();
        const Lane& o = lanes_[other];
        CUevent ev = next_event();
        ASSERT_CU_OK(
            e.record_event(l.abi, pt ? cu.cuEventRecord_ptsz : cu.cuEventRecord, ev, l.handle));
        ASSERT_CU_OK(e.wait_event(
            o.abi,
            o.abi == StreamAbi::per_thread ? cu.cuStreamWaitEvent_ptsz : cu.cuStreamWaitEvent,
            o.handle, ev, 0));
        if (pick(3) == 0) {
          ASSERT_CU_OK(e.synchronize_event(cu.cuEventSynchronize, ev));
        }
        break;
      }
      default:
        if (pick(2) == 0) {
          ASSERT_CU_OK(e.synchronize_stream(
              l.abi, pt ? cu.cuStreamSynchronize_ptsz : cu.cuStreamSynchronize, l.handle));
        } else {
          ASSERT_CU_OK(e.synchronize_context([&] { return cu.cuCtxSynchronize(); }));
        }
        break;
    }
  }

  std::size_t canonical(std::size_t lane) const { return lanes_[lane].legacy ? 0 : lane; }

  void check() {
    for (std::size_t b = 0; b < buffers_.size(); ++b) {
      EXPECT_EQ(t_.read(buffers_[b], kWords), model_[b]) << "buffer " << b;
    }
    for (std::size_t lane = 0; lane < logs_.size(); ++lane) {
      const auto expected = model_logs_[lane];
      std::vector<std::uint32_t> log = t_.read(logs_[lane], 1 + expected.size());
      EXPECT_EQ(log[0], expected.size()) << "lane " << lane;
      EXPECT_EQ(std::vector<std::uint32_t>(log.begin() + 1, log.end()), expected)
          << "lane " << lane;
    }
    std::lock_guard lock(host_log_.mu);
    EXPECT_EQ(host_log_.tags, model_host_);
  }

  FakeEngineTest& t_;
  std::mt19937 rng_;
  std::vector<Lane> lanes_;
  std::vector<CUdeviceptr> buffers_;
  std::vector<std::vector<std::uint32_t>> model_;
  std::vector<std::size_t> owner_;
  std::vector<CUdeviceptr> logs_;
  std::vector<std::vector<std::uint32_t>> model_logs_;
  std::vector<CUevent> events_;
  std::size_t next_event_ = 0;
  HostLog host_log_;
  std::vector<HostCall> host_calls_;
  std::vector<std::vector<std::uint32_t>> model_host_;
};

// A gate that refuses the streams of a random subset, changed at random intervals of 20 to 500
// microseconds by its own thread: some streams hold work while others run, which is when the
// engine's cross-stream ordering (events, the legacy barrier) matters.
class RandomStreamGate final : public Gate {
 public:
  RandomStreamGate(Engine& engine, std::vector<CUstream> streams, std::uint32_t seed)
      : streams_(std::move(streams)), thread_([this, &engine, seed] {
          std::mt19937 rng(seed);
          while (!stop_.load()) {
            refused_.store(rng() & ((1u << streams_.size()) - 1));
            engine.gate_changed();
            std::this_thread::sleep_for(std::chrono::microseconds(20 + rng() % 480));
          }
          refused_.store(0);
          engine.gate_changed();
        }) {}
  ~RandomStreamGate() override {
    stop_ = true;
    thread_.join();
  }
  bool admit(const OpDesc& op) noexcept override {
    const std::uint32_t refused = refused_.load();
    for (std::size_t i = 0; i < streams_.size(); ++i) {
      if (streams_[i] == op.stream) return (refused & (1u << i)) == 0;
    }
    return true;
  }
  const char* name() const noexcept override { return "random"; }

 private:
  const std::vector<CUstream> streams_;
  std::atomic<std::uint32_t> refused_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace
}  // namespace sluice::shim::test
