// The engine against the fake driver (dlopen'd, its entry points filled into a DriverApi):
// randomized programs over several streams, events, copies, memsets, host functions and
// order-sensitive kernels, with the gate flipping underneath, checked against a sequential
// reference model of CUDA semantics; and directed checks of deferred errors, deep copies,
// capture and event virtualization on a driver that executes the work.
#include "fake_program.h"

namespace sluice::shim::test {
namespace {

TEST_F(FakeEngineTest, RandomProgramsMatchTheReferenceModelWhileTheGateFlips) {
  for (std::uint32_t seed = 1; seed <= 12; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    RandomProgram program(*this, seed);
    program.run(250, [&](const std::vector<CUstream>& canonical) {
      return std::make_unique<RandomStreamGate>(*engine, canonical, seed);
    });
    if (HasFatalFailure() || HasNonfatalFailure()) return;
  }
  const StatsSnapshot s = engine->stats().snapshot();
  EXPECT_GT(s.total(s.held_ops), 0u);    // the gate did hold work
  EXPECT_GT(s.total(s.inline_ops), 0u);  // and let work through inline
  EXPECT_GT(s.waited_ops, 0u);           // pageable copies and per-thread work waited
}

// The same programs with a gate flipping on its own timer, so that releases race the caller.
TEST_F(FakeEngineTest, RandomProgramsMatchTheReferenceModelUnderATimerGate) {
  ToggleGate timer(*engine, 300'000);
  for (std::uint32_t seed = 101; seed <= 106; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    engine->set_gate(&timer);
    RandomProgram program(*this, seed);
    program.run(250, nullptr);
    if (HasFatalFailure() || HasNonfatalFailure()) break;
  }
  engine->set_gate(nullptr);
}

// Programs on three threads at once, sharing the engine, the legacy stream and a timer gate: each
// still gets its own results (the legacy barrier only adds order between them).
TEST_F(FakeEngineTest, ConcurrentProgramsOnSeveralThreadsKeepTheirResults) {
  ToggleGate timer(*engine, 200'000);
  engine->set_gate(&timer);
  std::vector<std::thread> threads;
  for (std::uint32_t t = 0; t < 3; ++t) {
    threads.emplace_back([this, t] {
      ASSERT_CU_OK(cu->cuCtxSetCurrent(ctx));
      RandomProgram program(*this, 500 + t);
      program.run(150, nullptr);
    });
  }
  for (auto& thread : threads) thread.join();
  engine->set_gate(nullptr);
}

TEST_F(FakeEngineTest, ErrorsOfHeldLaunchesSurfaceAtTheNextSync) {
  CUstream s = new_stream(CU_STREAM_NON_BLOCKING);
  CUdeviceptr buffer = new_buffer(64);
  gate->set_open(false);
  ASSERT_CU_OK(
      launch_affine(StreamAbi::legacy, s, buffer, 1, 1, 16, /*grid=*/0));  // invalid, but held
  gate->set_open(true);
  EXPECT_EQ(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, s),
            CUDA_ERROR_INVALID_VALUE);
  EXPECT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, s));
  // Inline, the driver's answer comes back at once.
  EXPECT_EQ(launch_affine(StreamAbi::legacy, s, buffer, 1, 1, 16, 0), CUDA_ERROR_INVALID_VALUE);
}

TEST_F(FakeEngineTest, HeldLaunchesUseTheParametersOfTheirCall) {
  CUstream s = new_stream(0);
  CUdeviceptr buffer = new_buffer(64);
  gate->set_open(false);
  for (std::uint32_t add = 1; add <= 3; ++add)
    ASSERT_CU_OK(launch_affine(StreamAbi::legacy, s, buffer, 2, add, 16));
  gate->set_open(true);
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, s));
  // ((0*2+1)*2+2)*2+3 = 11
  EXPECT_EQ(read(buffer, 16), std::vector<std::uint32_t>(16, 11u));
}

TEST_F(FakeEngineTest, QueriesOfHeldRecordsAreNotReadyUntilReleased) {
  CUstream s = new_stream(0);
  CUevent event = nullptr;
  ASSERT_CU_OK(cu->cuEventCreate(&event, 0));
  gate->set_open(false);
  ASSERT_CU_OK(engine->record_event(StreamAbi::legacy, cu->cuEventRecord, event, s));
  EXPECT_EQ(engine->query_event(cu->cuEventQuery, event), CUDA_ERROR_NOT_READY);
  EXPECT_EQ(engine->query_stream(StreamAbi::legacy, cu->cuStreamQuery, s), CUDA_ERROR_NOT_READY);
  gate->set_open(true);
  ASSERT_CU_OK(engine->synchronize_event(cu->cuEventSynchronize, event));
  EXPECT_CU_OK(engine->query_event(cu->cuEventQuery, event));
  EXPECT_CU_OK(engine->destroy_event(cu->cuEventDestroy_v2, event));
}

TEST_F(FakeEngineTest, CapturedWorkPassesThroughAndItsGraphIsGated) {
  CUstream s = new_stream(CU_STREAM_NON_BLOCKING);
  CUdeviceptr buffer = new_buffer(64);
  ASSERT_CU_OK(engine->begin_capture(StreamAbi::legacy, s, [&] {
    return cu->cuStreamBeginCapture_v2(s, CU_STREAM_CAPTURE_MODE_GLOBAL);
  }));
  gate->set_open(false);
  ASSERT_CU_OK(launch_affine(StreamAbi::legacy, s, buffer, 3, 1, 16));  // recorded, not held
  EXPECT_EQ(engine->held_now(), 0u);
  CUgraph graph = nullptr;
  ASSERT_CU_OK(
      engine->end_capture(StreamAbi::legacy, s, [&] { return cu->cuStreamEndCapture(s, &graph); }));
  EXPECT_FALSE(engine->capture_active());
  CUgraphExec exec = nullptr;
  ASSERT_CU_OK(cu->cuGraphInstantiateWithFlags(&exec, graph, 0));
  OpDesc desc;
  desc.kind = OpKind::graph;
  ASSERT_CU_OK(engine->enqueue(StreamAbi::legacy, desc, cu->cuGraphLaunch, exec, s));
  ASSERT_CU_OK(engine->enqueue(StreamAbi::legacy, desc, cu->cuGraphLaunch, exec, s));
  EXPECT_EQ(engine->held_now(), 2u);
  EXPECT_EQ(read(buffer, 16), std::vector<std::uint32_t>(16, 0u));
  gate->set_open(true);
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, s));
  EXPECT_EQ(read(buffer, 16), std::vector<std::uint32_t>(16, 4u));  // (0*3+1)*3+1
  cu->cuGraphExecDestroy(exec);
  cu->cuGraphDestroy(graph);
}

// The real driver (the H200 run, bench/results/fake_driver_conformance_h200.txt) refuses to end a
// capture on a stream that only joined it, with CUDA_ERROR_ILLEGAL_STATE, and invalidates the
// capture: for the engine the capture goes on until its origin ends it.
TEST_F(FakeEngineTest, AFailedEndOnAJoinedStreamLeavesTheCaptureToItsOrigin) {
  CUstream origin = new_stream(CU_STREAM_NON_BLOCKING);
  CUstream joined = new_stream(CU_STREAM_NON_BLOCKING);
  CUdeviceptr buffer = new_buffer(64);
  CUevent fork = nullptr;
  ASSERT_CU_OK(cu->cuEventCreate(&fork, 0));
  ASSERT_CU_OK(engine->begin_capture(StreamAbi::legacy, origin, [&] {
    return cu->cuStreamBeginCapture_v2(origin, CU_STREAM_CAPTURE_MODE_GLOBAL);
  }));
  ASSERT_CU_OK(engine->record_event(StreamAbi::legacy, cu->cuEventRecord, fork, origin));
  ASSERT_CU_OK(engine->wait_event(StreamAbi::legacy, cu->cuStreamWaitEvent, joined, fork, 0));
  ASSERT_CU_OK(launch_affine(StreamAbi::legacy, joined, buffer, 3, 1, 16));  // recorded
  CUgraph graph = nullptr;
  EXPECT_EQ(engine->end_capture(StreamAbi::legacy, joined,
                                [&] { return cu->cuStreamEndCapture(joined, &graph); }),
            CUDA_ERROR_ILLEGAL_STATE);
  EXPECT_TRUE(engine->capture_active());
  EXPECT_EQ(engine->end_capture(StreamAbi::legacy, origin,
                                [&] { return cu->cuStreamEndCapture(origin, &graph); }),
            CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
  EXPECT_EQ(graph, nullptr);
  EXPECT_FALSE(engine->capture_active());
  // With the capture over, the gate holds work again.
  gate->set_open(false);
  ASSERT_CU_OK(launch_affine(StreamAbi::legacy, joined, buffer, 1, 2, 16));
  EXPECT_EQ(engine->held_now(), 1u);
  gate->set_open(true);
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, joined));
  EXPECT_EQ(read(buffer, 16), std::vector<std::uint32_t>(16, 2u));  // 0*1+2: nothing captured ran
  ASSERT_CU_OK(engine->destroy_event(cu->cuEventDestroy_v2, fork));
}

TEST_F(FakeEngineTest, ChunkedCopiesGiveTheSameBytes) {
  CUstream s = new_stream(CU_STREAM_NON_BLOCKING);
  constexpr std::size_t kWordsTotal = 10000;
  CUdeviceptr device = new_buffer(kWordsTotal * 4);
  std::uint32_t* host = new_pinned(kWordsTotal);
  for (std::size_t i = 0; i < kWordsTotal; ++i) host[i] = static_cast<std::uint32_t>(i * 7 + 1);
  gate->set_chunk(4096);
  gate->set_open(false);
  ASSERT_CU_OK(engine->copy_1d(StreamAbi::legacy, cu->cuMemcpyHtoDAsync_v2, device,
                               static_cast<const void*>(host), kWordsTotal * 4, s));
  ASSERT_CU_OK(launch_affine(StreamAbi::legacy, s, device, 1, 5, kWordsTotal));
  EXPECT_EQ(engine->held_now(), 11u);  // ten chunks and the kernel behind them
  gate->set_open(true);
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, s));
  const auto result = read(device, kWordsTotal);
  for (std::size_t i = 0; i < kWordsTotal; ++i) ASSERT_EQ(result[i], i * 7 + 1 + 5) << i;
  EXPECT_EQ(engine->stats().snapshot().chunked_copies, 1u);
}

}  // namespace
}  // namespace sluice::shim::test
