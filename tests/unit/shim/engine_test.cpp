// The deferral engine against a scripted mock driver: order, holding, deep copies, the legacy
// stream, events, sync points, deferred errors, forced release, capture and copy chunking.
#include "sluice/shim/engine.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "mock_driver.h"
#include "sluice/common/hash.h"

namespace sluice::shim::test {
namespace {

using namespace std::chrono_literals;

const CUstream kBlocking = handle<CUstream>(0x51);
const CUstream kNonBlocking = handle<CUstream>(0x52);
const CUstream kOther = handle<CUstream>(0x53);
const CUevent kEvent = handle<CUevent>(0xE1);
const CUfunction kOneParam = handle<CUfunction>(1);

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { make_engine(EngineOptions{}); }
  void TearDown() override {
    gate->set_open(true);
    engine.reset();
    gate.reset();
  }

  void make_engine(EngineOptions options) {
    if (engine) engine->set_gate(nullptr);
    engine = std::make_unique<Engine>(mock.api, options);
    gate = std::make_unique<ManualGate>(*engine, /*open=*/true);
    engine->set_gate(gate.get());
    engine->stream_created(kBlocking, 0);
    engine->stream_created(kNonBlocking, CU_STREAM_NON_BLOCKING);
    engine->stream_created(kOther, 0);
  }

  CUresult launch(CUstream stream, std::uint32_t value, StreamAbi abi = StreamAbi::legacy,
                  CUfunction f = kOneParam) {
    std::uint32_t v = value;
    void* params[] = {&v};
    return engine->launch_kernel(
        abi, abi == StreamAbi::legacy ? mock.api.cuLaunchKernel : mock.api.cuLaunchKernel_ptsz, f,
        1, 1, 1, 32, 1, 1, 0, stream, params, nullptr);
  }
  CUresult memset(CUstream stream, unsigned value) {
    OpDesc desc;
    desc.kind = OpKind::memset;
    desc.bytes = 4;
    return engine->enqueue(StreamAbi::legacy, desc, mock.api.cuMemsetD32Async, CUdeviceptr{0x1000},
                           value, std::size_t{1}, stream);
  }
  // The entries of the log, as "what:value" strings.
  std::vector<std::string> trace() const {
    std::vector<std::string> out;
    for (const Entry& e : mock.log()) {
      if (e.what != "capture_mode") out.push_back(e.what + ":" + std::to_string(e.value));
    }
    return out;
  }

  MockDriver mock;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<ManualGate> gate;
};

TEST_F(EngineTest, OpenGateSubmitsInlineOnTheCallersThread) {
  ASSERT_EQ(launch(kBlocking, 5), CUDA_SUCCESS);
  const auto log = mock.log();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].value, 5u);
  EXPECT_EQ(log[0].thread, std::this_thread::get_id());
  EXPECT_EQ(engine->held_now(), 0u);
  const StatsSnapshot s = engine->stats().snapshot();
  EXPECT_EQ(s.inline_ops[static_cast<std::size_t>(OpKind::kernel)], 1u);
  EXPECT_EQ(s.total(s.held_ops), 0u);
}

TEST_F(EngineTest, ShutGateHoldsThenReleasesInOrderOnTheReleaseThread) {
  gate->set_open(false);
  for (std::uint32_t i = 1; i <= 5; ++i) ASSERT_EQ(launch(kBlocking, i), CUDA_SUCCESS);
  EXPECT_EQ(mock.count("kernel"), 0u);
  EXPECT_EQ(engine->held_now(), 5u);
  EXPECT_EQ(gate->holds(), 5);
  gate->set_open(true);
  engine->drain_all();
  EXPECT_EQ(mock.values("kernel"), (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  for (const Entry& e : mock.log()) {
    if (e.what == "kernel") {
      EXPECT_NE(e.thread, std::this_thread::get_id());
    }
  }
  // The release thread switched to relaxed capture mode before its first driver call.
  ASSERT_FALSE(mock.log().empty());
  EXPECT_EQ(mock.log().front().what, "capture_mode");
  EXPECT_EQ(mock.log().front().value, static_cast<std::uint64_t>(CU_STREAM_CAPTURE_MODE_RELAXED));
  EXPECT_EQ(engine->stats().snapshot().held_ops[0], 5u);
}

TEST_F(EngineTest, CallsBehindHeldWorkAreHeldEvenWithTheGateOpen) {
  gate->refuse_only(kBlocking);
  ASSERT_EQ(launch(kBlocking, 1), CUDA_SUCCESS);
  gate->refuse_only(nullptr);  // open for everything, but the release thread may not have run yet
  ASSERT_EQ(launch(kBlocking, 2), CUDA_SUCCESS);
  engine->drain_all();
  EXPECT_EQ(mock.values("kernel"), (std::vector<std::uint64_t>{1, 2}));
}

TEST_F(EngineTest, HeldLaunchOwnsACopyOfItsParameters) {
  gate->set_open(false);
  auto* value = new std::uint32_t(7);
  void* params[] = {value};
  ASSERT_EQ(engine->launch_kernel(StreamAbi::legacy, mock.api.cuLaunchKernel, kOneParam, 1, 1, 1, 1,
                                  1, 1, 0, kBlocking, params, nullptr),
            CUDA_SUCCESS);
  *value = 9;
  delete value;  // the application frees its parameter memory right after the call
  gate->set_open(true);
  engine->drain_all();
  EXPECT_EQ(mock.values("kernel"), (std::vector<std::uint64_t>{7}));
}

TEST_F(EngineTest, HeldLaunchOwnsACopyOfItsExtraBuffer) {
  gate->set_open(false);
  std::vector<std::uint32_t> buffer = {11, 12};
  std::size_t size = buffer.size() * sizeof(std::uint32_t);
  void* extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, buffer.data(), CU_LAUNCH_PARAM_BUFFER_SIZE,
                   &size, CU_LAUNCH_PARAM_END};
  ASSERT_EQ(engine->launch_kernel(StreamAbi::legacy, mock.api.cuLaunchKernel, handle<CUfunction>(2),
                                  1, 1, 1, 1, 1, 1, 0, kBlocking, nullptr, extra),
            CUDA_SUCCESS);
  buffer[0] = 99;
  size = 0;
  extra[1] = nullptr;
  gate->set_open(true);
  engine->drain_all();
  EXPECT_EQ(mock.values("kernel"), (std::vector<std::uint64_t>{11}));
}

TEST_F(EngineTest, HeldLaunchExOwnsItsConfigAndAttributes) {
  gate->set_open(false);
  std::uint32_t v = 3;
  void* params[] = {&v};
  std::vector<CUlaunchAttribute> attrs(2);
  attrs[0].id = CU_LAUNCH_ATTRIBUTE_PRIORITY;
  attrs[1].id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
  CUlaunchConfig config{};
  config.gridDimX = 4;
  config.blockDimX = 32;
  config.hStream = kBlocking;
  config.attrs = attrs.data();
  config.numAttrs = 2;
  ASSERT_EQ(engine->launch_kernel_ex(StreamAbi::legacy, mock.api.cuLaunchKernelEx, &config,
                                     kOneParam, params, nullptr),
            CUDA_SUCCESS);
  attrs[0].id = CU_LAUNCH_ATTRIBUTE_IGNORE;
  attrs.clear();
  attrs.shrink_to_fit();
  v = 4;
  config.numAttrs = 0;
  gate->set_open(true);
  engine->drain_all();
  const auto log = mock.log();
  ASSERT_EQ(mock.count("kernel_ex"), 1u);
  for (const Entry& e : log) {
    if (e.what != "kernel_ex") continue;
    EXPECT_EQ(e.value, 3u);
    EXPECT_EQ(e.extra, 100u * CU_LAUNCH_ATTRIBUTE_PRIORITY + CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION);
    EXPECT_EQ(e.stream, kBlocking);
  }
}

TEST_F(EngineTest, LaunchesThatCannotBeSizedWaitOnTheirThread) {
  gate->set_open(false);
  auto done = std::async(std::launch::async, [&] {
    return launch(kBlocking, 1, StreamAbi::legacy, handle<CUfunction>(MockDriver::kNoLayout));
  });
  EXPECT_EQ(done.wait_for(50ms), std::future_status::timeout);
  EXPECT_EQ(mock.count("kernel"), 0u);
  gate->set_open(true);
  EXPECT_EQ(done.get(), CUDA_SUCCESS);
  ASSERT_EQ(mock.count("kernel"), 1u);
  EXPECT_EQ(engine->held_now(), 0u);
  EXPECT_EQ(engine->stats().snapshot().waited_ops, 1u);
}

TEST_F(EngineTest, PerThreadStreamWorkWaitsOnItsThreadBehindHeldLegacyWork) {
  gate->refuse_only(CU_STREAM_LEGACY);
  ASSERT_EQ(launch(nullptr, 1), CUDA_SUCCESS);  // legacy: held
  std::thread::id caller;
  auto done = std::async(std::launch::async, [&] {
    caller = std::this_thread::get_id();
    return launch(nullptr, 2, StreamAbi::per_thread);  // per-thread stream: blocking, so behind it
  });
  EXPECT_EQ(done.wait_for(50ms), std::future_status::timeout);
  gate->refuse_only(nullptr);
  ASSERT_EQ(done.get(), CUDA_SUCCESS);
  const auto log = mock.log();
  std::vector<std::uint64_t> order = mock.values("kernel");
  EXPECT_EQ(order, (std::vector<std::uint64_t>{1, 2}));
  for (const Entry& e : log) {
    if (e.what == "kernel" && e.value == 2) {
      EXPECT_EQ(e.thread, caller);
      EXPECT_EQ(e.stream, nullptr);  // submitted with the handle the caller used
    }
  }
}

TEST_F(EngineTest, LegacyWorkFollowsHeldWorkOfBlockingStreamsOnly) {
  gate->refuse_only(kBlocking);
  ASSERT_EQ(launch(kBlocking, 1), CUDA_SUCCESS);     // held by the gate
  ASSERT_EQ(launch(nullptr, 2), CUDA_SUCCESS);       // legacy: held behind it
  ASSERT_EQ(launch(kNonBlocking, 3), CUDA_SUCCESS);  // non-blocking: not ordered with either
  EXPECT_EQ(mock.values("kernel"), (std::vector<std::uint64_t>{3}));
  gate->refuse_only(nullptr);
  engine->drain_all();
  EXPECT_EQ(mock.values("kernel"), (std::vector<std::uint64_t>{3, 1, 2}));
}

TEST_F(EngineTest, BlockingStreamsFollowHeldLegacyWork) {
  gate->refuse_only(CU_STREAM_LEGACY);
  ASSERT_EQ(launch(nullptr, 1), CUDA_SUCCESS);       // held by the gate
  ASSERT_EQ(launch(kBlocking, 2), CUDA_SUCCESS);     // held behind the legacy call
  ASSERT_EQ(launch(kNonBlocking, 3), CUDA_SUCCESS);  // inline
  ASSERT_EQ(launch(nullptr, 4, StreamAbi::legacy),
            CUDA_SUCCESS);  // stream 0 is the legacy stream too
  EXPECT_EQ(mock.values("kernel"), (std::vector<std::uint64_t>{3}));
  gate->refuse_only(nullptr);
  engine->drain_all();
  const auto order = mock.values("kernel");
  ASSERT_EQ(order.size(), 4u);
  EXPECT_EQ(order[0], 3u);
  EXPECT_EQ(order[1], 1u);  // 2 and 4 both follow 1; they are not ordered with each other
}

TEST_F(EngineTest, StreamsUnknownToTheEngineAreAskedForTheirFlags) {
  const CUstream foreign = handle<CUstream>(0x77);
  mock.set_stream_flags(foreign, CU_STREAM_NON_BLOCKING);
  gate->refuse_only(CU_STREAM_LEGACY);
  ASSERT_EQ(launch(nullptr, 1), CUDA_SUCCESS);
  ASSERT_EQ(launch(foreign, 2), CUDA_SUCCESS);  // non-blocking: not behind the legacy call
  EXPECT_EQ(mock.values("kernel"), (std::vector<std::uint64_t>{2}));
  // A handle the driver does not know passes straight through: the driver rejects it.
  ASSERT_EQ(launch(handle<CUstream>(0x78), 3), CUDA_SUCCESS);
  EXPECT_EQ(mock.values("kernel"), (std::vector<std::uint64_t>{2, 3}));
}

TEST_F(EngineTest, EventQueryOfAHeldRecordIsNotReady) {
  gate->refuse_only(kBlocking);
  ASSERT_EQ(engine->record_event(StreamAbi::legacy, mock.api.cuEventRecord, kEvent, kBlocking),
            CUDA_SUCCESS);
  EXPECT_EQ(engine->query_event(mock.api.cuEventQuery, kEvent), CUDA_ERROR_NOT_READY);
  EXPECT_EQ(mock.event_queries.load(), 0);
  gate->refuse_only(nullptr);
  engine->drain_all();
  EXPECT_EQ(engine->query_event(mock.api.cuEventQuery, kEvent), CUDA_SUCCESS);
  EXPECT_EQ(mock.event_queries.load(), 1);
}

TEST_F(EngineTest, WaitOnAHeldRecordIsHeldBehindIt) {
  gate->refuse_only(kBlocking);
  ASSERT_EQ(engine->record_event(StreamAbi::legacy, mock.api.cuEventRecord, kEvent, kBlocking),
            CUDA_SUCCESS);
  ASSERT_EQ(
      engine->wait_event(StreamAbi::legacy, mock.api.cuStreamWaitEvent, kNonBlocking, kEvent, 0),
      CUDA_SUCCESS);
  ASSERT_EQ(launch(kNonBlocking, 5), CUDA_SUCCESS);  // behind the held wait
  // A later record of the same event must not overtake the wait either.
  ASSERT_EQ(engine->record_event(StreamAbi::legacy, mock.api.cuEventRecord, kEvent, kOther),
            CUDA_SUCCESS);
  EXPECT_TRUE(trace().empty());
  gate->refuse_only(nullptr);
  engine->drain_all();
  const auto order = trace();
  const std::string event = std::to_string(reinterpret_cast<std::uintptr_t>(kEvent));
  auto pos = [&](const std::string& s) {
    return std::find(order.begin(), order.end(), s) - order.begin();
  };
  ASSERT_EQ(order.size(), 4u);
  EXPECT_EQ(order[0], "record:" + event);
  EXPECT_EQ(order[1], "wait:" + event);
  EXPECT_LT(pos("wait:" + event), pos("kernel:5"));
  EXPECT_EQ(mock.count("record"), 2u);
}

TEST_F(EngineTest, EventSynchronizeAndElapsedTimeWaitForHeldRecords) {
  gate->set_open(false);
  ASSERT_EQ(engine->record_event(StreamAbi::legacy, mock.api.cuEventRecord, kEvent, kBlocking),
            CUDA_SUCCESS);
  auto sync = std::async(std::launch::async, [&] {
    return engine->synchronize_event(mock.api.cuEventSynchronize, kEvent);
  });
  EXPECT_EQ(sync.wait_for(50ms), std::future_status::timeout);
  gate->set_open(true);
  EXPECT_EQ(sync.get(), CUDA_SUCCESS);
  EXPECT_EQ(trace().front().rfind("record:", 0), 0u);
  EXPECT_EQ(trace().back().rfind("event_sync:", 0), 0u);

  gate->set_open(false);
  ASSERT_EQ(engine->record_event(StreamAbi::legacy, mock.api.cuEventRecord, kEvent, kBlocking),
            CUDA_SUCCESS);
  auto elapsed = std::async(std::launch::async, [&] {
    float ms = 0;
    const CUresult r = engine->elapsed_time(mock.api.cuEventElapsedTime_v2, &ms, kEvent, kEvent);
    return r == CUDA_SUCCESS ? ms : -1.0f;
  });
  EXPECT_EQ(elapsed.wait_for(50ms), std::future_status::timeout);
  gate->set_open(true);
  EXPECT_EQ(elapsed.get(), 1.5f);
  EXPECT_EQ(trace().back(), "elapsed:0");
}

TEST_F(EngineTest, StreamSynchronizeDrainsAndReportsErrorsOfHeldWorkOnce) {
  gate->set_open(false);
  ASSERT_EQ(launch(kBlocking, 1, StreamAbi::legacy, handle<CUfunction>(MockDriver::kFailing)),
            CUDA_SUCCESS);
  ASSERT_EQ(launch(kBlocking, 2), CUDA_SUCCESS);
  auto sync = std::async(std::launch::async, [&] {
    return engine->synchronize_stream(StreamAbi::legacy, mock.api.cuStreamSynchronize, kBlocking);
  });
  EXPECT_EQ(sync.wait_for(50ms), std::future_status::timeout);
  gate->set_open(true);
  EXPECT_EQ(sync.get(), CUDA_ERROR_LAUNCH_FAILED);
  EXPECT_EQ(trace(), (std::vector<std::string>{"kernel:1", "kernel:2", "sync:0"}));
  EXPECT_EQ(engine->synchronize_stream(StreamAbi::legacy, mock.api.cuStreamSynchronize, kBlocking),
            CUDA_SUCCESS);
  EXPECT_EQ(engine->stats().snapshot().deferred_errors, 1u);
}

TEST_F(EngineTest, ContextSynchronizeReportsErrorsOfHeldWorkOnAnyStream) {
  gate->set_open(false);
  ASSERT_EQ(launch(kNonBlocking, 1, StreamAbi::legacy, handle<CUfunction>(MockDriver::kFailing)),
            CUDA_SUCCESS);
  gate->set_open(true);
  int calls = 0;
  EXPECT_EQ(engine->synchronize_context([&] {
    ++calls;
    return CUDA_SUCCESS;
  }),
            CUDA_ERROR_LAUNCH_FAILED);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(engine->synchronize_context([] { return CUDA_SUCCESS; }), CUDA_SUCCESS);
}

TEST_F(EngineTest, StreamQueryIsNotReadyWhileWorkIsHeld) {
  gate->set_open(false);
  ASSERT_EQ(launch(kBlocking, 1), CUDA_SUCCESS);
  EXPECT_EQ(engine->query_stream(StreamAbi::legacy, mock.api.cuStreamQuery, kBlocking),
            CUDA_ERROR_NOT_READY);
  EXPECT_EQ(mock.count("query"), 0u);
  EXPECT_EQ(engine->query_stream(StreamAbi::legacy, mock.api.cuStreamQuery, kNonBlocking),
            CUDA_SUCCESS);
  gate->set_open(true);
  engine->drain_all();
  EXPECT_EQ(engine->query_stream(StreamAbi::legacy, mock.api.cuStreamQuery, kBlocking),
            CUDA_SUCCESS);
}

TEST_F(EngineTest, DestroysWaitForHeldWork) {
  gate->set_open(false);
  ASSERT_EQ(launch(kBlocking, 1), CUDA_SUCCESS);
  ASSERT_EQ(engine->record_event(StreamAbi::legacy, mock.api.cuEventRecord, kEvent, kBlocking),
            CUDA_SUCCESS);
  auto destroy_event = std::async(std::launch::async, [&] {
    return engine->destroy_event(mock.api.cuEventDestroy_v2, kEvent);
  });
  auto destroy_stream = std::async(std::launch::async, [&] {
    return engine->destroy_stream(mock.api.cuStreamDestroy_v2, kBlocking);
  });
  EXPECT_EQ(destroy_stream.wait_for(50ms), std::future_status::timeout);
  gate->set_open(true);
  EXPECT_EQ(destroy_event.get(), CUDA_SUCCESS);
  EXPECT_EQ(destroy_stream.get(), CUDA_SUCCESS);
  const auto order = trace();
  ASSERT_EQ(order.size(), 4u);
  EXPECT_EQ(order[0], "kernel:1");
  EXPECT_EQ(order[1].rfind("record:", 0), 0u);
}

TEST_F(EngineTest, HeldWorkIsReleasedPastTheHoldLimit) {
  EngineOptions options;
  options.max_hold_ns = 30'000'000;
  options.poll_ns = 1'000'000;
  make_engine(options);
  gate->set_open(false);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(launch(kBlocking, 1), CUDA_SUCCESS);
  ASSERT_EQ(engine->synchronize_stream(StreamAbi::legacy, mock.api.cuStreamSynchronize, kBlocking),
            CUDA_SUCCESS);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
  EXPECT_EQ(mock.values("kernel"), (std::vector<std::uint64_t>{1}));
  EXPECT_EQ(engine->stats().snapshot().forced_releases, 1u);
  // A call that waits on its own thread is released the same way.
  ASSERT_EQ(launch(nullptr, 2, StreamAbi::per_thread), CUDA_SUCCESS);
  EXPECT_EQ(engine->stats().snapshot().forced_releases, 2u);
}

TEST_F(EngineTest, CapturePassesWorkStraightThrough) {
  gate->set_open(false);
  ASSERT_EQ(launch(kBlocking, 1), CUDA_SUCCESS);  // held before the capture
  auto begin = std::async(std::launch::async, [&] {
    return engine->begin_capture(StreamAbi::legacy, kNonBlocking, [&] {
      mock.capturing = true;
      mock.append({"begin_capture", kNonBlocking, 0, 0, std::this_thread::get_id()});
      return CUDA_SUCCESS;
    });
  });
  EXPECT_EQ(begin.wait_for(50ms), std::future_status::timeout);  // drains first
  gate->set_open(true);
  ASSERT_EQ(begin.get(), CUDA_SUCCESS);
  EXPECT_EQ(trace(), (std::vector<std::string>{"kernel:1", "begin_capture:0"}));
  EXPECT_TRUE(engine->capture_active());
  gate->set_open(false);
  ASSERT_EQ(launch(kNonBlocking, 2), CUDA_SUCCESS);  // captured: not gated
  EXPECT_EQ(mock.values("kernel"), (std::vector<std::uint64_t>{1, 2}));
  ASSERT_EQ(engine->end_capture(StreamAbi::legacy, kNonBlocking,
                                [&] {
                                  mock.capturing = false;
                                  return CUDA_SUCCESS;
                                }),
            CUDA_SUCCESS);
  EXPECT_FALSE(engine->capture_active());
  ASSERT_EQ(launch(kNonBlocking, 3), CUDA_SUCCESS);  // gated again
  EXPECT_EQ(mock.values("kernel"), (std::vector<std::uint64_t>{1, 2}));
}

TEST_F(EngineTest, FailedCaptureBeginLeavesCaptureInactive) {
  EXPECT_EQ(
      engine->begin_capture(StreamAbi::legacy, kBlocking, [] { return CUDA_ERROR_ILLEGAL_STATE; }),
      CUDA_ERROR_ILLEGAL_STATE);
  EXPECT_FALSE(engine->capture_active());
}

TEST_F(EngineTest, LargeCopiesAreSplitIntoGatedChunksInOrder) {
  gate->set_chunk(1024);
  gate->set_open(false);
  std::vector<std::uint32_t> host(1000);  // 4000 bytes
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = static_cast<std::uint32_t>(i);
  for (std::size_t offset = 0; offset < 4000; offset += 1024)
    mock.pin(reinterpret_cast<char*>(host.data()) + offset);
  ASSERT_EQ(engine->copy_1d(StreamAbi::legacy, mock.api.cuMemcpyHtoDAsync_v2, CUdeviceptr{0x1000},
                            static_cast<const void*>(host.data()), std::size_t{4000}, kBlocking),
            CUDA_SUCCESS);
  ASSERT_EQ(engine->record_event(StreamAbi::legacy, mock.api.cuEventRecord, kEvent, kBlocking),
            CUDA_SUCCESS);
  EXPECT_EQ(engine->held_now(), 5u);
  gate->set_open(true);
  engine->drain_all();
  const auto log = mock.log();
  std::vector<std::uint64_t> dst;
  std::vector<std::uint64_t> detail;
  for (const Entry& e : log) {
    if (e.what == "copy") {
      dst.push_back(e.value);
      detail.push_back(e.extra);
    }
  }
  EXPECT_EQ(dst, (std::vector<std::uint64_t>{0x1000, 0x1400, 0x1800, 0x1C00}));
  // bytes * 1e6 + the first u32 the chunk carried
  EXPECT_EQ(detail, (std::vector<std::uint64_t>{1024000000, 1024000256, 1024000512, 928000768}));
  EXPECT_EQ(trace().back().rfind("record:", 0), 0u);
  EXPECT_EQ(engine->stats().snapshot().chunked_copies, 1u);
}

TEST_F(EngineTest, PageableCopiesWaitOnTheirThread) {
  gate->set_open(false);
  std::vector<std::uint32_t> host = {42};
  auto done = std::async(std::launch::async, [&] {
    return engine->copy_1d(StreamAbi::legacy, mock.api.cuMemcpyHtoDAsync_v2, CUdeviceptr{0x1000},
                           static_cast<const void*>(host.data()), std::size_t{4}, kBlocking);
  });
  EXPECT_EQ(done.wait_for(50ms), std::future_status::timeout);
  gate->set_open(true);
  EXPECT_EQ(done.get(), CUDA_SUCCESS);
  EXPECT_EQ(mock.count("copy"), 1u);
  EXPECT_EQ(engine->held_now(), 0u);
}

TEST_F(EngineTest, StructuredCopiesAndBatchesAreCopiedWhenHeld) {
  gate->set_open(false);
  auto copy = std::make_unique<CUDA_MEMCPY2D>();
  copy->srcMemoryType = CU_MEMORYTYPE_DEVICE;
  copy->dstMemoryType = CU_MEMORYTYPE_DEVICE;
  copy->WidthInBytes = 64;
  copy->Height = 3;
  ASSERT_EQ(engine->copy_2d(StreamAbi::legacy, mock.api.cuMemcpy2DAsync_v2, copy.get(), kBlocking),
            CUDA_SUCCESS);
  copy.reset();
  std::vector<CUstreamBatchMemOpParams> ops(2);
  ops[0].operation = CU_STREAM_MEM_OP_WRITE_VALUE_32;
  ops[0].writeValue.value = 77;
  ASSERT_EQ(engine->batch_mem_op(StreamAbi::legacy, mock.api.cuStreamBatchMemOp_v2, kBlocking, 2,
                                 ops.data(), 0),
            CUDA_SUCCESS);
  ops.clear();
  ops.shrink_to_fit();
  gate->set_open(true);
  engine->drain_all();
  EXPECT_EQ(trace(), (std::vector<std::string>{"copy2d:64", "batch:2"}));
  EXPECT_EQ(mock.log().back().extra, 77u);
}

TEST_F(EngineTest, ValueCallsKeepTheirArgumentsAndStream) {
  gate->set_open(false);
  ASSERT_EQ(memset(kBlocking, 123), CUDA_SUCCESS);
  ASSERT_EQ(memset(nullptr, 456), CUDA_SUCCESS);
  gate->set_open(true);
  engine->drain_all();
  const auto log = mock.log();
  std::vector<std::pair<CUstream, std::uint64_t>> seen;
  for (const Entry& e : log) {
    if (e.what == "memset") seen.emplace_back(e.stream, e.value);
  }
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], std::make_pair(kBlocking, std::uint64_t{123}));
  EXPECT_EQ(seen[1], std::make_pair(static_cast<CUstream>(nullptr), std::uint64_t{456}));
  EXPECT_EQ(engine->stats().snapshot().of(OpKind::memset), 2u);
}

TEST_F(EngineTest, RunOrderedWaitsForEarlierHeldWorkOfItsStream) {
  gate->set_open(false);
  ASSERT_EQ(launch(kBlocking, 1), CUDA_SUCCESS);
  // Other streams' work does not hold it up.
  EXPECT_EQ(engine->run_ordered(StreamAbi::legacy, kNonBlocking, [] { return CUDA_SUCCESS; }),
            CUDA_SUCCESS);
  auto done = std::async(std::launch::async, [&] {
    return engine->run_ordered(StreamAbi::legacy, kBlocking, [&] {
      mock.append({"ordered", kBlocking, 0, 0, std::this_thread::get_id()});
      return CUDA_SUCCESS;
    });
  });
  EXPECT_EQ(done.wait_for(50ms), std::future_status::timeout);
  gate->set_open(true);
  EXPECT_EQ(done.get(), CUDA_SUCCESS);
  EXPECT_EQ(trace(), (std::vector<std::string>{"kernel:1", "ordered:0"}));
}

TEST_F(EngineTest, DestructionSubmitsWhatIsStillHeld) {
  gate->set_open(false);
  ASSERT_EQ(launch(kBlocking, 1), CUDA_SUCCESS);
  ASSERT_EQ(launch(kNonBlocking, 2), CUDA_SUCCESS);
  engine->flush();
  EXPECT_EQ(engine->held_now(), 0u);
  EXPECT_EQ(mock.count("kernel"), 2u);
}

TEST_F(EngineTest, KernelIdentityComesFromTheModuleImageAndTheName) {
  const char image[] = "# sluice fake module v1\nkernel one_param params=4\n";
  engine->module_loaded(handle<CUmodule>(0x30), image, sizeof image - 1);
  const KernelInfo* info = engine->find(kOneParam);
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->name, "one_param");
  EXPECT_EQ(info->module_hash, fnv1a(image, sizeof image - 1));
  EXPECT_EQ(info->id, fnv1a(std::string_view("one_param"), info->module_hash));
  EXPECT_EQ(engine->find(kOneParam), info);  // cached
  EXPECT_EQ(engine->stats().snapshot().uncaptured_kernels, 0u);
  engine->module_unloaded(handle<CUmodule>(0x30));
  const KernelInfo* again = engine->find(kOneParam);
  ASSERT_NE(again, nullptr);
  EXPECT_NE(again, info);
  EXPECT_EQ(again->module_hash, 0u);  // its image is gone: counted as a kernel without one
  EXPECT_EQ(engine->stats().snapshot().uncaptured_kernels, 1u);
  EXPECT_EQ(engine->find(handle<CUfunction>(MockDriver::kNoLayout)), nullptr);
  EXPECT_EQ(engine->stats().snapshot().module_loads, 1u);
}

TEST_F(EngineTest, DescriptorsCarryStreamKernelAndIncreasingSequence) {
  struct Recorder final : Gate {
    std::vector<OpDesc> seen;
    bool admit(const OpDesc& op) noexcept override {
      seen.push_back(op);
      return true;
    }
    const char* name() const noexcept override { return "recorder"; }
  } recorder;
  engine->set_gate(&recorder);
  ASSERT_EQ(launch(kBlocking, 1), CUDA_SUCCESS);
  ASSERT_EQ(launch(nullptr, 2), CUDA_SUCCESS);
  ASSERT_EQ(launch(nullptr, 3, StreamAbi::per_thread), CUDA_SUCCESS);
  ASSERT_EQ(memset(kNonBlocking, 1), CUDA_SUCCESS);
  engine->set_gate(gate.get());
  ASSERT_EQ(recorder.seen.size(), 4u);
  EXPECT_EQ(recorder.seen[0].stream, kBlocking);
  EXPECT_EQ(recorder.seen[0].func, kOneParam);
  EXPECT_EQ(recorder.seen[0].block[0], 32u);
  EXPECT_EQ(recorder.seen[0].device, 0);
  EXPECT_EQ(recorder.seen[1].stream, CU_STREAM_LEGACY);
  EXPECT_EQ(recorder.seen[2].stream, CU_STREAM_PER_THREAD);
  EXPECT_EQ(recorder.seen[3].kind, OpKind::memset);
  EXPECT_EQ(recorder.seen[3].bytes, 4u);
  for (std::size_t i = 1; i < recorder.seen.size(); ++i)
    EXPECT_GT(recorder.seen[i].seq, recorder.seen[i - 1].seq);
}

// A gate learns of a hold before the held call can be submitted, so that its bookkeeping of held
// work never sees the submission first.
TEST_F(EngineTest, GatesHearOfAHoldBeforeItsSubmission) {
  struct Recorder final : Gate {
    std::atomic<bool> open{false};
    std::mutex mu;
    std::vector<std::pair<std::uint64_t, char>> events;
    bool admit(const OpDesc&) noexcept override { return open.load(); }
    void on_hold(const OpDesc& op) noexcept override {
      std::this_thread::sleep_for(50us);  // widens the window in which a release could overtake it
      std::lock_guard lock(mu);
      events.emplace_back(op.seq, 'H');
    }
    void on_submit(const OpDesc& op, CUresult) noexcept override {
      std::lock_guard lock(mu);
      events.emplace_back(op.seq, 'S');
    }
    const char* name() const noexcept override { return "recorder"; }
  } recorder;
  engine->set_gate(&recorder);
  std::atomic<bool> stop{false};
  std::thread flipper([&] {
    while (!stop.load()) {
      recorder.open = !recorder.open.load();
      engine->gate_changed();
      std::this_thread::sleep_for(50us);
    }
  });
  for (std::uint32_t i = 0; i < 2000; ++i) ASSERT_EQ(launch(kBlocking, i), CUDA_SUCCESS);
  stop = true;
  flipper.join();
  recorder.open = true;
  engine->drain_all();
  engine->set_gate(gate.get());
  std::map<std::uint64_t, std::string> order;
  for (const auto& [seq, what] : recorder.events) order[seq] += what;
  std::size_t held = 0;
  for (const auto& [seq, what] : order) {
    EXPECT_TRUE(what == "S" || what == "HS") << "call " << seq << ": " << what;
    held += what == "HS" ? 1 : 0;
  }
  EXPECT_EQ(order.size(), 2000u);
  EXPECT_GT(held, 0u);
}

// Several threads, each with its own stream, while the gate flips: every stream keeps its order
// and nothing is lost.
TEST_F(EngineTest, ConcurrentStreamsKeepTheirOrderWhileTheGateFlips) {
  constexpr int kThreads = 4;
  constexpr std::uint32_t kPerThread = 400;
  std::vector<CUstream> streams;
  for (int t = 0; t < kThreads; ++t) {
    streams.push_back(handle<CUstream>(0x100 + static_cast<std::uintptr_t>(t)));
    engine->stream_created(streams.back(), t % 2 == 0 ? 0u : unsigned{CU_STREAM_NON_BLOCKING});
  }
  std::atomic<bool> stop{false};
  std::thread flipper([&] {
    bool open = false;
    while (!stop.load()) {
      gate->set_open(open);
      open = !open;
      std::this_thread::sleep_for(200us);
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (std::uint32_t i = 0; i < kPerThread; ++i) {
        ASSERT_EQ(launch(streams[static_cast<std::size_t>(t)], i), CUDA_SUCCESS);
        if (i % 100 == 99) {
          ASSERT_EQ(engine->synchronize_stream(StreamAbi::legacy, mock.api.cuStreamSynchronize,
                                               streams[static_cast<std::size_t>(t)]),
                    CUDA_SUCCESS);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  stop = true;
  flipper.join();
  gate->set_open(true);
  engine->drain_all();
  std::vector<std::vector<std::uint64_t>> per_stream(kThreads);
  for (const Entry& e : mock.log()) {
    if (e.what != "kernel") continue;
    const auto index = reinterpret_cast<std::uintptr_t>(e.stream) - 0x100;
    per_stream[index].push_back(e.value);
  }
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(per_stream[static_cast<std::size_t>(t)].size(), kPerThread);
    for (std::uint32_t i = 0; i < kPerThread; ++i)
      EXPECT_EQ(per_stream[static_cast<std::size_t>(t)][i], i);
  }
  const StatsSnapshot s = engine->stats().snapshot();
  EXPECT_EQ(s.of(OpKind::kernel), kThreads * kPerThread);
}

// ---- function state as stream-ordered state ------------------------------------------------------

class FunctionStateTest : public EngineTest {
 protected:
  static constexpr int kMaxShared = CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;

  CUresult launch_shared(CUstream stream, std::uint32_t value, unsigned shared,
                         CUfunction f = kOneParam) {
    void* params[] = {&value};
    return engine->launch_kernel(StreamAbi::legacy, mock.api.cuLaunchKernel, f, 1, 1, 1, 512, 1, 1,
                                 shared, stream, params, nullptr);
  }
  CUresult set_attribute(CUfunction f, int attribute, int value) {
    return engine->change_function(
        f, {Engine::FunctionChange::Kind::attribute, attribute, value}, [&] {
          return mock.api.cuFuncSetAttribute(f, static_cast<CUfunction_attribute>(attribute), value);
        });
  }
  // Runs set_attribute on another thread; true when it returned before the gate opened.
  bool set_returns_while_shut(CUfunction f, int attribute, int value) {
    auto set = std::async(std::launch::async, [&] { return set_attribute(f, attribute, value); });
    const bool returned = set.wait_for(50ms) == std::future_status::ready;
    gate->set_open(true);
    EXPECT_EQ(set.get(), CUDA_SUCCESS);
    return returned;
  }
  CUresult sync(CUstream stream) {
    return engine->synchronize_stream(StreamAbi::legacy, mock.api.cuStreamSynchronize, stream);
  }
};

// The failure found on an H200 with cuDNN's batch-norm kernels: the limit of dynamic shared memory
// is set before each launch, and a held launch is checked against it when it is submitted.
TEST_F(FunctionStateTest, TheMockRejectsAHeldLaunchWhoseLimitWasLoweredBehindIt) {
  ASSERT_EQ(set_attribute(kOneParam, kMaxShared, 51200), CUDA_SUCCESS);
  gate->set_open(false);
  ASSERT_EQ(launch_shared(kBlocking, 1, 51200), CUDA_SUCCESS);  // held
  // The driver sees the lower limit before the held launch: what the shim did before the fix.
  ASSERT_EQ(mock.api.cuFuncSetAttribute(kOneParam, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                        14336),
            CUDA_SUCCESS);
  gate->set_open(true);
  EXPECT_EQ(sync(kBlocking), CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(mock.values("rejected"), (std::vector<std::uint64_t>{1}));
}

TEST_F(FunctionStateTest, LoweringTheLimitWaitsForHeldLaunchesThatNeedMore) {
  ASSERT_EQ(set_attribute(kOneParam, kMaxShared, 51200), CUDA_SUCCESS);
  gate->set_open(false);
  ASSERT_EQ(launch_shared(kBlocking, 1, 51200), CUDA_SUCCESS);  // held
  EXPECT_FALSE(set_returns_while_shut(kOneParam, kMaxShared, 14336));
  ASSERT_EQ(launch_shared(kBlocking, 2, 14336), CUDA_SUCCESS);
  EXPECT_EQ(sync(kBlocking), CUDA_SUCCESS);
  EXPECT_EQ(mock.values("kernel"), (std::vector<std::uint64_t>{1, 2}));
  EXPECT_EQ(mock.count("rejected"), 0u);
  const StatsSnapshot s = engine->stats().snapshot();
  EXPECT_EQ(s.function_changes, 2u);
  EXPECT_EQ(s.function_change_waits, 1u);
}

TEST_F(FunctionStateTest, ChangesThatNoHeldLaunchCanNoticeDoNotWait) {
  ASSERT_EQ(set_attribute(kOneParam, kMaxShared, 14336), CUDA_SUCCESS);
  gate->set_open(false);
  ASSERT_EQ(launch_shared(kBlocking, 1, 14336), CUDA_SUCCESS);  // held
  // Raising the limit cannot break a held launch.
  EXPECT_TRUE(set_returns_while_shut(kOneParam, kMaxShared, 51200));
  gate->set_open(false);
  ASSERT_EQ(launch_shared(kBlocking, 2, 51200), CUDA_SUCCESS);
  // The current value changes nothing.
  EXPECT_TRUE(set_returns_while_shut(kOneParam, kMaxShared, 51200));
  gate->set_open(false);
  ASSERT_EQ(launch_shared(kBlocking, 3, 1024), CUDA_SUCCESS);
  // A function with nothing held needs no wait, whatever the change.
  const CUfunction other = handle<CUfunction>(2);
  EXPECT_TRUE(set_returns_while_shut(other, kMaxShared, 0));
  gate->set_open(false);
  ASSERT_EQ(launch_shared(kBlocking, 4, 0), CUDA_SUCCESS);
  // Another attribute of a function whose launches are held does wait.
  EXPECT_FALSE(set_returns_while_shut(kOneParam, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                                      50));
  EXPECT_EQ(sync(kBlocking), CUDA_SUCCESS);
  EXPECT_EQ(mock.values("kernel"), (std::vector<std::uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(engine->stats().snapshot().function_change_waits, 1u);
}

TEST_F(FunctionStateTest, CacheConfigurationWaitsOnlyWhenItChanges) {
  auto set_cache = [&](CUfunc_cache config) {
    return engine->change_function(
        kOneParam,
        {Engine::FunctionChange::Kind::cache_config, 0, static_cast<int>(config)},
        [&] { return mock.api.cuFuncSetCacheConfig(kOneParam, config); });
  };
  ASSERT_EQ(set_cache(CU_FUNC_CACHE_PREFER_SHARED), CUDA_SUCCESS);
  gate->set_open(false);
  ASSERT_EQ(launch_shared(kBlocking, 1, 0), CUDA_SUCCESS);
  ASSERT_EQ(set_cache(CU_FUNC_CACHE_PREFER_SHARED), CUDA_SUCCESS);  // the same: at once
  EXPECT_EQ(mock.count("cache_config"), 2u);
  auto change = std::async(std::launch::async, [&] { return set_cache(CU_FUNC_CACHE_PREFER_L1); });
  EXPECT_EQ(change.wait_for(50ms), std::future_status::timeout);
  gate->set_open(true);
  ASSERT_EQ(change.get(), CUDA_SUCCESS);
  const auto order = trace();
  ASSERT_EQ(order.size(), 4u);
  EXPECT_EQ(order[2], "kernel:1");
  EXPECT_EQ(order[3], "cache_config:" + std::to_string(CU_FUNC_CACHE_PREFER_L1));
  // What went through is remembered, newest value per slot, for the kernel's twin.
  ASSERT_EQ(set_attribute(kOneParam, kMaxShared, 4096), CUDA_SUCCESS);
  const auto changes = engine->function_changes(kOneParam);
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].kind, Engine::FunctionChange::Kind::cache_config);
  EXPECT_EQ(changes[0].value, CU_FUNC_CACHE_PREFER_L1);
  EXPECT_EQ(changes[1].attribute, kMaxShared);
  EXPECT_EQ(changes[1].value, 4096);
}

// cuDNN's pattern under a toggling gate, on several streams: every launch succeeds.
TEST_F(FunctionStateTest, PerLaunchAttributeChangesKeepEveryLaunchValidWhileTheGateFlips) {
  std::atomic<bool> stop{false};
  std::thread flipper([&] {
    bool open = true;
    while (!stop) {
      gate->set_open(open = !open);
      std::this_thread::sleep_for(200us);
    }
  });
  const CUstream streams[] = {kBlocking, kNonBlocking, kOther};
  for (std::uint32_t i = 0; i < 300; ++i) {
    const int shared = i % 2 == 0 ? 14336 : 51200;
    ASSERT_EQ(set_attribute(kOneParam, kMaxShared, shared), CUDA_SUCCESS);
    ASSERT_EQ(launch_shared(streams[i % 3], i, static_cast<unsigned>(shared)), CUDA_SUCCESS);
  }
  stop = true;
  flipper.join();
  gate->set_open(true);
  engine->drain_all();
  for (CUstream s : streams) EXPECT_EQ(sync(s), CUDA_SUCCESS);
  EXPECT_EQ(mock.count("rejected"), 0u);
  EXPECT_EQ(mock.count("kernel"), 300u);
}

}  // namespace
}  // namespace sluice::shim::test
