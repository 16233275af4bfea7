// Stream capture into graphs, graph launch, and the errors of calls that conflict with a capture.
#include <thread>

#include "support.h"

namespace sluice::fake::testing {
namespace {

class CaptureTest : public FakeDriverTest {
 protected:
  void SetUp() override {
    FakeDriverTest::SetUp();
    ASSERT_CU_OK(cuStreamCreate(&origin_, CU_STREAM_NON_BLOCKING));
    ASSERT_CU_OK(cuStreamCreate(&side_, CU_STREAM_NON_BLOCKING));
    log_ = zeroed_buffer(256);
  }
  void TearDown() override {
    if (fork_ != nullptr) cuEventDestroy_v2(fork_);
    cuStreamDestroy_v2(origin_);
    cuStreamDestroy_v2(side_);
    FakeDriverTest::TearDown();
  }

  // Begins a capture on origin_ and forks side_ into it (through fork_), with one kernel on side_
  // that is never joined back to the origin.
  void fork_without_join() {
    ASSERT_CU_OK(cuEventCreate(&fork_, CU_EVENT_DEFAULT));
    ASSERT_CU_OK(cuStreamBeginCapture_v2(origin_, CU_STREAM_CAPTURE_MODE_GLOBAL));
    ASSERT_CU_OK(cuEventRecord(fork_, origin_));
    ASSERT_CU_OK(cuStreamWaitEvent(side_, fork_, 0));
    ASSERT_CU_OK(append(side_, log_, 1));
  }

  // Instantiates `graph`, launches it once on `stream` and waits for it.
  void run_once(CUgraph graph, CUstream stream) {
    CUgraphExec exec = nullptr;
    ASSERT_CU_OK(cuGraphInstantiateWithFlags(&exec, graph, 0));
    ASSERT_CU_OK(cuGraphLaunch(exec, stream));
    ASSERT_CU_OK(cuStreamSynchronize(stream));
    ASSERT_CU_OK(cuGraphExecDestroy(exec));
  }

  std::size_t node_count(CUgraph graph) {
    std::size_t count = 0;
    EXPECT_CU_OK(cuGraphGetNodes(graph, nullptr, &count));
    return count;
  }

  CUstream origin_ = nullptr;
  CUstream side_ = nullptr;
  CUevent fork_ = nullptr;
  CUdeviceptr log_ = 0;
};

TEST_F(CaptureTest, CapturedWorkRunsOnlyWhenTheGraphIsLaunched) {
  ASSERT_CU_OK(cuStreamBeginCapture_v2(origin_, CU_STREAM_CAPTURE_MODE_GLOBAL));
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  cuuint64_t id = 0;
  ASSERT_CU_OK(cuStreamGetCaptureInfo(origin_, &status, &id));
  EXPECT_EQ(CU_STREAM_CAPTURE_STATUS_ACTIVE, status);
  EXPECT_NE(0u, id);
  ASSERT_CU_OK(append(origin_, log_, 1));
  ASSERT_CU_OK(append(origin_, log_, 2));
  std::uint32_t value = 5;
  std::uint32_t count = 1;
  CUdeviceptr word = log_ + 200;
  ASSERT_CU_OK(cuMemsetD32Async(word, 3, 1, origin_));
  ASSERT_CU_OK(launch("fill", origin_, {&word, &value, &count}));
  CUgraph graph = nullptr;
  ASSERT_CU_OK(cuStreamEndCapture(origin_, &graph));
  ASSERT_NE(nullptr, graph);
  EXPECT_EQ(4u, node_count(graph));
  EXPECT_TRUE(read_log(log_).empty());  // nothing ran during capture

  CUgraphNode nodes[4] = {};
  std::size_t n = 4;
  ASSERT_CU_OK(cuGraphGetNodes(graph, nodes, &n));
  CUgraphNodeType type = CU_GRAPH_NODE_TYPE_EMPTY;
  ASSERT_CU_OK(cuGraphNodeGetType(nodes[2], &type));
  EXPECT_EQ(CU_GRAPH_NODE_TYPE_MEMSET, type);
  ASSERT_CU_OK(cuGraphNodeGetType(nodes[3], &type));
  EXPECT_EQ(CU_GRAPH_NODE_TYPE_KERNEL, type);

  CUgraphExec exec = nullptr;
  ASSERT_CU_OK(cuGraphInstantiateWithFlags(&exec, graph, 0));
  ASSERT_CU_OK(cuGraphUpload(exec, side_));
  ASSERT_CU_OK(cuGraphLaunch(exec, side_));
  ASSERT_CU_OK(cuGraphLaunch(exec, side_));
  ASSERT_CU_OK(cuStreamSynchronize(side_));
  EXPECT_EQ((std::vector<std::uint32_t>{1, 2, 1, 2}), read_log(log_));
  sluice_fake_counters counters{};
  sluice_fake_counters_get(&counters, sizeof(counters));
  EXPECT_EQ(2u, counters.graph_launches);
  EXPECT_EQ(4u, counters.captured_ops);
  EXPECT_EQ(6u, counters.launches_executed);
  for (const auto& record : trace()) {
    if (record.kind == SLUICE_FAKE_OP_KERNEL) {
      EXPECT_EQ(1u, record.from_graph);
    }
  }
  ASSERT_CU_OK(cuGraphExecDestroy(exec));
  ASSERT_CU_OK(cuGraphDestroy(graph));
}

TEST_F(CaptureTest, ForkAndJoinThroughEventsBecomeGraphDependencies) {
  CUevent fork = nullptr;
  CUevent join = nullptr;
  ASSERT_CU_OK(cuEventCreate(&fork, CU_EVENT_DISABLE_TIMING));
  ASSERT_CU_OK(cuEventCreate(&join, CU_EVENT_DISABLE_TIMING));
  ASSERT_CU_OK(cuStreamBeginCapture_v2(origin_, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
  ASSERT_CU_OK(append(origin_, log_, 1));
  ASSERT_CU_OK(cuEventRecord(fork, origin_));
  EXPECT_CU(CUDA_ERROR_CAPTURED_EVENT, cuEventQuery(fork));
  ASSERT_CU_OK(cuStreamWaitEvent(side_, fork, 0));  // side_ joins the capture
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  ASSERT_CU_OK(cuStreamIsCapturing(side_, &status));
  EXPECT_EQ(CU_STREAM_CAPTURE_STATUS_ACTIVE, status);
  ASSERT_CU_OK(append(side_, log_, 2));
  ASSERT_CU_OK(append(origin_, log_, 3));
  ASSERT_CU_OK(cuEventRecord(join, side_));
  ASSERT_CU_OK(cuStreamWaitEvent(origin_, join, 0));

  const CUgraphNode* deps = nullptr;
  std::size_t dep_count = 0;
  CUgraph capturing = nullptr;
  ASSERT_CU_OK(cuStreamGetCaptureInfo_v2(origin_, &status, nullptr, &capturing, &deps, &dep_count));
  EXPECT_EQ(2u, dep_count);  // the origin's own node and the side branch

  ASSERT_CU_OK(append(origin_, log_, 4));
  CUgraph graph = nullptr;
  ASSERT_CU_OK(cuStreamEndCapture(origin_, &graph));
  EXPECT_EQ(capturing, graph);
  ASSERT_CU_OK(cuStreamIsCapturing(side_, &status));
  EXPECT_EQ(CU_STREAM_CAPTURE_STATUS_NONE, status);
  std::size_t roots = 0;
  ASSERT_CU_OK(cuGraphGetRootNodes(graph, nullptr, &roots));
  EXPECT_EQ(1u, roots);

  run_once(graph, origin_);
  std::vector<std::uint32_t> order = read_log(log_);
  ASSERT_EQ(4u, order.size());
  EXPECT_EQ(1u, order.front());
  EXPECT_EQ(4u, order.back());
  ASSERT_CU_OK(cuGraphDestroy(graph));
  ASSERT_CU_OK(cuEventDestroy_v2(fork));
  ASSERT_CU_OK(cuEventDestroy_v2(join));
}

TEST_F(CaptureTest, AForkThatIsNotJoinedFailsTheCapture) {
  ASSERT_NO_FATAL_FAILURE(fork_without_join());
  CUgraph graph = reinterpret_cast<CUgraph>(1);
  EXPECT_CU(CUDA_ERROR_STREAM_CAPTURE_UNJOINED, cuStreamEndCapture(origin_, &graph));
  EXPECT_EQ(nullptr, graph);
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_ACTIVE;
  ASSERT_CU_OK(cuStreamIsCapturing(side_, &status));
  EXPECT_EQ(CU_STREAM_CAPTURE_STATUS_NONE, status);
}

// As the real driver answered on the H200 (bench/results/fake_driver_conformance_h200.txt): ending
// on a stream that joined the capture is an illegal state, not STREAM_CAPTURE_UNMATCHED, and it
// invalidates the capture, which the origin then ends.
TEST_F(CaptureTest, EndingOnAJoinedStreamFailsAndInvalidatesTheCapture) {
  ASSERT_NO_FATAL_FAILURE(fork_without_join());
  CUgraph graph = nullptr;
  EXPECT_CU(CUDA_ERROR_ILLEGAL_STATE, cuStreamEndCapture(side_, &graph));
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  ASSERT_CU_OK(cuStreamIsCapturing(origin_, &status));
  EXPECT_EQ(CU_STREAM_CAPTURE_STATUS_INVALIDATED, status);
  ASSERT_CU_OK(cuStreamIsCapturing(side_, &status));
  EXPECT_EQ(CU_STREAM_CAPTURE_STATUS_INVALIDATED, status);
  EXPECT_CU(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, cuStreamEndCapture(origin_, &graph));
  EXPECT_EQ(nullptr, graph);
  ASSERT_CU_OK(cuStreamIsCapturing(side_, &status));
  EXPECT_EQ(CU_STREAM_CAPTURE_STATUS_NONE, status);
}

TEST_F(CaptureTest, SynchronizingACapturingStreamInvalidatesTheCapture) {
  ASSERT_CU_OK(cuStreamBeginCapture_v2(origin_, CU_STREAM_CAPTURE_MODE_RELAXED));
  ASSERT_CU_OK(append(origin_, log_, 1));
  EXPECT_CU(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, cuStreamSynchronize(origin_));
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  ASSERT_CU_OK(cuStreamIsCapturing(origin_, &status));
  EXPECT_EQ(CU_STREAM_CAPTURE_STATUS_INVALIDATED, status);
  EXPECT_CU(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, append(origin_, log_, 2));
  CUgraph graph = nullptr;
  EXPECT_CU(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, cuStreamEndCapture(origin_, &graph));
  EXPECT_EQ(nullptr, graph);
  ASSERT_CU_OK(append(origin_, log_, 3));  // the stream works normally again
  ASSERT_CU_OK(cuStreamSynchronize(origin_));
  EXPECT_EQ((std::vector<std::uint32_t>{3}), read_log(log_));
}

TEST_F(CaptureTest, LegacyStreamWorkDuringABlockingCaptureIsAnImplicitDependency) {
  CUstream blocking = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&blocking, CU_STREAM_DEFAULT));
  ASSERT_CU_OK(cuStreamBeginCapture_v2(blocking, CU_STREAM_CAPTURE_MODE_RELAXED));
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  EXPECT_CU(CUDA_ERROR_STREAM_CAPTURE_IMPLICIT, cuStreamIsCapturing(CU_STREAM_LEGACY, &status));
  ASSERT_CU_OK(cuStreamIsCapturing(blocking, &status));
  EXPECT_EQ(CU_STREAM_CAPTURE_STATUS_ACTIVE, status);  // a query does not invalidate
  EXPECT_CU(CUDA_ERROR_STREAM_CAPTURE_IMPLICIT, append(nullptr, log_, 1));
  ASSERT_CU_OK(cuStreamIsCapturing(blocking, &status));
  EXPECT_EQ(CU_STREAM_CAPTURE_STATUS_INVALIDATED, status);
  CUgraph graph = nullptr;
  EXPECT_CU(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, cuStreamEndCapture(blocking, &graph));
  // A non-blocking capture leaves the legacy stream usable.
  ASSERT_CU_OK(cuStreamBeginCapture_v2(origin_, CU_STREAM_CAPTURE_MODE_RELAXED));
  ASSERT_CU_OK(append(nullptr, log_, 2));
  ASSERT_CU_OK(cuStreamEndCapture(origin_, &graph));
  ASSERT_CU_OK(cuGraphDestroy(graph));
  ASSERT_CU_OK(cuStreamDestroy_v2(blocking));
}

// A potentially unsafe call (cuMemAlloc) under each combination of capture mode and thread mode.
struct ModeCase {
  CUstreamCaptureMode capture;
  CUstreamCaptureMode caller;  // the calling thread's mode
  bool same_thread;
  bool allowed;
};

TEST_F(CaptureTest, CaptureModesDecideWhichThreadsMayMakeUnsafeCalls) {
  const ModeCase cases[] = {
      {CU_STREAM_CAPTURE_MODE_GLOBAL, CU_STREAM_CAPTURE_MODE_GLOBAL, true, false},
      {CU_STREAM_CAPTURE_MODE_GLOBAL, CU_STREAM_CAPTURE_MODE_GLOBAL, false, false},
      {CU_STREAM_CAPTURE_MODE_GLOBAL, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL, false, true},
      {CU_STREAM_CAPTURE_MODE_GLOBAL, CU_STREAM_CAPTURE_MODE_RELAXED, true, true},
      {CU_STREAM_CAPTURE_MODE_THREAD_LOCAL, CU_STREAM_CAPTURE_MODE_GLOBAL, true, false},
      {CU_STREAM_CAPTURE_MODE_THREAD_LOCAL, CU_STREAM_CAPTURE_MODE_GLOBAL, false, true},
      {CU_STREAM_CAPTURE_MODE_RELAXED, CU_STREAM_CAPTURE_MODE_GLOBAL, true, true},
      {CU_STREAM_CAPTURE_MODE_RELAXED, CU_STREAM_CAPTURE_MODE_GLOBAL, false, true},
  };
  for (const ModeCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << "capture " << c.capture << " caller " << c.caller << " same thread " << c.same_thread);
    ASSERT_CU_OK(cuStreamBeginCapture_v2(origin_, c.capture));
    ASSERT_CU_OK(append(origin_, log_, 1));
    CUresult result = CUDA_ERROR_UNKNOWN;
    CUdeviceptr memory = 0;
    auto unsafe_call = [&] {
      CUstreamCaptureMode mode = c.caller;
      EXPECT_CU_OK(cuThreadExchangeStreamCaptureMode(&mode));
      result = cuMemAlloc_v2(&memory, 64);
      EXPECT_CU_OK(cuThreadExchangeStreamCaptureMode(&mode));
      EXPECT_EQ(c.caller, mode);
    };
    if (c.same_thread) {
      unsafe_call();
    } else {
      std::thread other([&] {
        EXPECT_CU_OK(cuCtxSetCurrent(ctx_));
        unsafe_call();
      });
      other.join();
    }
    CUgraph graph = nullptr;
    CUresult ended = cuStreamEndCapture(origin_, &graph);
    if (c.allowed) {
      EXPECT_CU_OK(result);
      EXPECT_CU_OK(ended);
      EXPECT_CU_OK(cuMemFree_v2(memory));
      EXPECT_CU_OK(cuGraphDestroy(graph));
    } else {
      EXPECT_CU(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, result);
      EXPECT_CU(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, ended);
    }
  }
}

TEST_F(CaptureTest, EndCaptureMustComeFromTheCapturingThreadUnlessRelaxed) {
  ASSERT_CU_OK(cuStreamBeginCapture_v2(origin_, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
  CUresult from_other = CUDA_SUCCESS;
  std::thread other([&] {
    EXPECT_CU_OK(cuCtxSetCurrent(ctx_));
    CUgraph graph = nullptr;
    from_other = cuStreamEndCapture(origin_, &graph);
  });
  other.join();
  EXPECT_CU(CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD, from_other);
  CUgraph graph = nullptr;
  ASSERT_CU_OK(cuStreamEndCapture(origin_, &graph));
  ASSERT_CU_OK(cuGraphDestroy(graph));
  EXPECT_CU(CUDA_ERROR_ILLEGAL_STATE, cuStreamEndCapture(origin_, &graph));
  EXPECT_CU(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, cuStreamBeginCapture_v2(CU_STREAM_LEGACY, CU_STREAM_CAPTURE_MODE_GLOBAL));
}

TEST_F(CaptureTest, WaitingOnAnOrdinaryEventCrossesTheCaptureBoundary) {
  CUevent outside = nullptr;
  ASSERT_CU_OK(cuEventCreate(&outside, CU_EVENT_DEFAULT));
  ASSERT_CU_OK(cuEventRecord(outside, side_));
  ASSERT_CU_OK(cuStreamBeginCapture_v2(origin_, CU_STREAM_CAPTURE_MODE_GLOBAL));
  EXPECT_CU(CUDA_ERROR_STREAM_CAPTURE_ISOLATION, cuStreamWaitEvent(origin_, outside, 0));
  CUgraph graph = nullptr;
  EXPECT_CU(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, cuStreamEndCapture(origin_, &graph));
  // With CU_EVENT_WAIT_EXTERNAL the wait becomes a node of the graph instead.
  ASSERT_CU_OK(cuStreamBeginCapture_v2(origin_, CU_STREAM_CAPTURE_MODE_GLOBAL));
  ASSERT_CU_OK(cuStreamWaitEvent(origin_, outside, CU_EVENT_WAIT_EXTERNAL));
  ASSERT_CU_OK(cuEventRecordWithFlags(outside, origin_, CU_EVENT_RECORD_EXTERNAL));
  ASSERT_CU_OK(cuStreamEndCapture(origin_, &graph));
  EXPECT_EQ(2u, node_count(graph));
  CUgraphExec exec = nullptr;
  ASSERT_CU_OK(cuGraphInstantiateWithFlags(&exec, graph, 0));
  ASSERT_CU_OK(cuGraphLaunch(exec, origin_));
  ASSERT_CU_OK(cuEventSynchronize(outside));  // recorded by the graph's record node
  ASSERT_CU_OK(cuStreamSynchronize(origin_));
  ASSERT_CU_OK(cuGraphExecDestroy(exec));
  ASSERT_CU_OK(cuGraphDestroy(graph));
  ASSERT_CU_OK(cuEventDestroy_v2(outside));
}

TEST_F(CaptureTest, GraphAllocationsLiveFromTheirAllocNodeToTheirFreeNode) {
  ASSERT_CU_OK(cuStreamBeginCapture_v2(origin_, CU_STREAM_CAPTURE_MODE_GLOBAL));
  CUdeviceptr scratch = 0;
  ASSERT_CU_OK(cuMemAllocAsync(&scratch, 64, origin_));
  std::uint32_t value = 9;
  std::uint32_t count = 16;
  ASSERT_CU_OK(launch("fill", origin_, {&scratch, &value, &count}));
  std::uint64_t bytes = 64;
  CUdeviceptr out = log_;
  ASSERT_CU_OK(launch("copy", origin_, {&out, &scratch, &bytes}));
  ASSERT_CU_OK(cuMemFreeAsync(scratch, origin_));
  CUgraph graph = nullptr;
  ASSERT_CU_OK(cuStreamEndCapture(origin_, &graph));
  CUgraphNode nodes[4] = {};
  std::size_t n = 4;
  ASSERT_CU_OK(cuGraphGetNodes(graph, nodes, &n));
  CUgraphNodeType first = CU_GRAPH_NODE_TYPE_EMPTY;
  CUgraphNodeType last = CU_GRAPH_NODE_TYPE_EMPTY;
  ASSERT_CU_OK(cuGraphNodeGetType(nodes[0], &first));
  ASSERT_CU_OK(cuGraphNodeGetType(nodes[3], &last));
  EXPECT_EQ(CU_GRAPH_NODE_TYPE_MEM_ALLOC, first);
  EXPECT_EQ(CU_GRAPH_NODE_TYPE_MEM_FREE, last);
  CUgraphExec exec = nullptr;
  ASSERT_CU_OK(cuGraphInstantiateWithFlags(&exec, graph, 0));
  for (int launch_index = 0; launch_index < 2; ++launch_index) {
    ASSERT_CU_OK(cuGraphLaunch(exec, origin_));
    ASSERT_CU_OK(cuStreamSynchronize(origin_));  // both launches run without a fault
  }
  std::uint32_t copied[16] = {};
  ASSERT_CU_OK(cuMemcpyDtoH_v2(copied, log_, sizeof(copied)));
  EXPECT_EQ(9u, copied[15]);
  ASSERT_CU_OK(cuGraphExecDestroy(exec));
  ASSERT_CU_OK(cuGraphDestroy(graph));
}

TEST_F(CaptureTest, CaptureIntoAnExistingGraphFollowsItsLeaves) {
  CUgraph graph = nullptr;
  ASSERT_CU_OK(cuGraphCreate(&graph, 0));
  ASSERT_CU_OK(cuStreamBeginCaptureToGraph(origin_, graph, nullptr, nullptr, 0, CU_STREAM_CAPTURE_MODE_GLOBAL));
  ASSERT_CU_OK(append(origin_, log_, 1));
  CUgraph returned = nullptr;
  ASSERT_CU_OK(cuStreamEndCapture(origin_, &returned));
  EXPECT_EQ(graph, returned);
  ASSERT_CU_OK(cuStreamBeginCaptureToGraph(origin_, graph, nullptr, nullptr, 0, CU_STREAM_CAPTURE_MODE_GLOBAL));
  ASSERT_CU_OK(append(origin_, log_, 2));
  ASSERT_CU_OK(cuStreamEndCapture(origin_, &returned));
  EXPECT_EQ(2u, node_count(graph));
  std::size_t roots = 0;
  ASSERT_CU_OK(cuGraphGetRootNodes(graph, nullptr, &roots));
  EXPECT_EQ(1u, roots);
  run_once(graph, origin_);
  EXPECT_EQ((std::vector<std::uint32_t>{1, 2}), read_log(log_));
  ASSERT_CU_OK(cuGraphDestroy(graph));
}

}  // namespace
}  // namespace sluice::fake::testing
