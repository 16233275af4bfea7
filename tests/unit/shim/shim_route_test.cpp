// Routing of application streams to SM partitions (green contexts) and stream priorities, on the
// fake driver: where routed kernels run, per-stream order and the legacy barrier across route
// changes (random programs against the reference model), synchronization and queries that cover
// mirror streams, the fallback when green contexts cannot be made, and class priorities.
#include <cstdio>

#include "fake_program.h"

namespace sluice::shim::test {
namespace {

constexpr std::uint32_t kPartitionSms = 16;
constexpr const char* kSlowModule =
    "# sluice fake module v1\n"
    "kernel affine params=8,4,4,4 op=affine_u32 duration_us=40\n"
    "kernel append params=8,4 op=append_u32 duration_us=40\n";

// A gate that routes (Gate::route_sms) every named stream, or those of a mask, to a partition,
// optionally holding the work of some streams; tests and its own thread change both.
class RouteGate final : public Gate {
 public:
  explicit RouteGate(GateListener& listener) : listener_(listener) {}
  ~RouteGate() override { stop(); }

  bool admit(const OpDesc& op) noexcept override {
    const std::uint32_t refused = refused_.load();
    for (std::size_t i = 0; i < streams_.size(); ++i) {
      if (streams_[i] == op.stream) return (refused & (1u << i)) == 0;
    }
    return true;
  }
  std::uint32_t route_sms(const OpDesc& op) const noexcept override {
    const std::uint32_t routed = routed_.load();
    for (std::size_t i = 0; i < streams_.size(); ++i) {
      if (streams_[i] == op.stream) return (routed & (1u << i)) != 0 ? sms_.load() : 0;
    }
    return only_listed_ ? 0 : sms_.load();
  }
  StreamClass stream_class() const noexcept override { return cls_.load(); }
  void on_submit(const OpDesc& op, CUresult) noexcept override {
    if (op.kind != OpKind::kernel) return;
    submitted_to_.store(op.submit_stream);
    submitted_ctx_.store(op.submit_ctx);
  }
  // Where the newest kernel went, as on_submit() saw it.
  CUstream submitted_to() const { return submitted_to_.load(); }
  CUcontext submitted_ctx() const { return submitted_ctx_.load(); }
  const char* name() const noexcept override { return "route"; }

  void set_sms(std::uint32_t sms) {
    sms_.store(sms);
    listener_.gate_changed();
  }
  void set_class(StreamClass cls) { cls_.store(cls); }
  // Which named streams are routed (bit i: the i-th stream given to route_only); all by default.
  void set_routed(std::uint32_t mask) {
    routed_.store(mask);
    listener_.gate_changed();
  }
  // Routes only `streams` (before any work; not with randomize()).
  void route_only(std::vector<CUstream> streams) {
    streams_ = std::move(streams);
    only_listed_ = true;
  }

  // From now on a thread of the gate routes a random subset of `streams` (and holds another) and
  // changes both every 20 to 500 microseconds.
  void randomize(std::vector<CUstream> streams, std::uint32_t seed) {
    streams_ = std::move(streams);
    routed_.store(0);
    thread_ = std::thread([this, seed] {
      std::mt19937 rng(seed);
      const std::uint32_t all = (1u << streams_.size()) - 1;
      while (!stop_.load()) {
        routed_.store(rng() & all);
        refused_.store(rng() & rng() & all);
        sms_.store(rng() % 4 == 0 ? 2 * kPartitionSms : kPartitionSms);
        listener_.gate_changed();
        std::this_thread::sleep_for(std::chrono::microseconds(20 + rng() % 480));
      }
      refused_.store(0);
      listener_.gate_changed();
    });
  }
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }

 private:
  GateListener& listener_;
  std::vector<CUstream> streams_;  // fixed while the thread runs
  bool only_listed_ = false;
  std::atomic<std::uint32_t> sms_{0};
  std::atomic<std::uint32_t> routed_{~0u};
  std::atomic<std::uint32_t> refused_{0};
  std::atomic<StreamClass> cls_{StreamClass::unknown};
  std::atomic<CUstream> submitted_to_{nullptr};
  std::atomic<CUcontext> submitted_ctx_{nullptr};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

template <typename T>
T fake_symbol(const char* name) {
  return reinterpret_cast<T>(dlsym(Fake::get().handle, name));
}

std::vector<sluice_fake_trace_record> kernels_in_trace() {
  auto count = fake_symbol<decltype(&sluice_fake_trace_count)>("sluice_fake_trace_count");
  auto read = fake_symbol<decltype(&sluice_fake_trace_read)>("sluice_fake_trace_read");
  std::vector<sluice_fake_trace_record> records(count());
  records.resize(read(records.data(), 0, records.size()));
  std::erase_if(records, [](const auto& r) { return r.kind != SLUICE_FAKE_OP_KERNEL; });
  return records;
}

// The newest `count` operations the fake device ran, in the order they finished: where a failed
// program's work went (stream, context, SMs) and when it ran.
void print_trace_tail(std::size_t count) {
  auto total = fake_symbol<decltype(&sluice_fake_trace_count)>("sluice_fake_trace_count");
  auto read = fake_symbol<decltype(&sluice_fake_trace_read)>("sluice_fake_trace_read");
  const std::size_t n = total();
  const std::size_t first = n > count ? n - count : 0;
  std::vector<sluice_fake_trace_record> records(n - first);
  records.resize(read(records.data(), first, records.size()));
  const std::uint64_t base = records.empty() ? 0 : records.front().submit_ns;
  for (const auto& r : records) {
    std::printf("trace %5llu %-14s stream %#14llx ctx %3llu sms %3u tag %#10llx submit %8lld start %8lld end %8lld\n",
                static_cast<unsigned long long>(r.seq), r.name,
                static_cast<unsigned long long>(r.stream),
                static_cast<unsigned long long>(r.ctx_id), r.sm_count,
                static_cast<unsigned long long>(r.tag),
                static_cast<long long>(r.submit_ns - base) / 1000,
                static_cast<long long>(r.start_ns - base) / 1000,
                static_cast<long long>(r.end_ns - base) / 1000);
  }
}

class RouteTest : public FakeEngineTest {
 public:
  void SetUp() override {
    FakeEngineTest::SetUp();
    if (HasFatalFailure()) return;
    // Kernels that take device time, so that work reaching the device out of order shows.
    ASSERT_CU_OK(cu->cuModuleLoadData(&slow_module, kSlowModule));
    ASSERT_CU_OK(cu->cuModuleGetFunction(&affine, slow_module, "affine"));
    ASSERT_CU_OK(cu->cuModuleGetFunction(&append, slow_module, "append"));
    route = std::make_unique<RouteGate>(*engine);
    engine->set_gate(route.get());
    fake_symbol<decltype(&sluice_fake_trace_enable)>("sluice_fake_trace_enable")(1);
    fake_symbol<decltype(&sluice_fake_trace_clear)>("sluice_fake_trace_clear")();
  }
  void TearDown() override {
    if (engine) engine->set_gate(nullptr);
    if (route) route->stop();
    fake_symbol<decltype(&sluice_fake_trace_enable)>("sluice_fake_trace_enable")(0);
    FakeEngineTest::TearDown();
    if (slow_module != nullptr) cu->cuModuleUnload(slow_module);
  }

  std::uint64_t primary_id() {
    unsigned long long id = 0;
    EXPECT_CU_OK(cu->cuCtxGetId(ctx, &id));
    return id;
  }

  // A pinned word that a cuStreamWaitValue32 on a stream waits for: only the test releases it.
  std::uint32_t* flag() {
    std::uint32_t* word = new_pinned(1);
    *word = 0;
    return word;
  }
  CUresult wait_for(CUstream s, std::uint32_t* word) {
    OpDesc desc;
    desc.kind = OpKind::mem_op;
    return engine->enqueue(StreamAbi::legacy, desc, cu->cuStreamWaitValue32_v2, s,
                           reinterpret_cast<CUdeviceptr>(word), 1u,
                           static_cast<unsigned>(CU_STREAM_WAIT_VALUE_EQ));
  }
  static void release(std::uint32_t* word) { __atomic_store_n(word, 1u, __ATOMIC_SEQ_CST); }

  // A stream routed to the partition, a log for append kernels and an event.
  struct Routed {
    CUstream stream;
    CUdeviceptr log;
    CUevent event;
  };
  Routed routed_stream(unsigned flags) {
    Routed r{new_stream(flags), new_buffer(4 * 64), nullptr};
    EXPECT_CU_OK(cu->cuEventCreate(&r.event, CU_EVENT_DISABLE_TIMING));
    route->set_sms(kPartitionSms);
    return r;
  }

  std::unique_ptr<RouteGate> route;
  CUmodule slow_module = nullptr;
};

TEST_F(RouteTest, RoutedKernelsRunInTheirPartitionAndComeBackToTheFullGpu) {
  CUstream s = new_stream(CU_STREAM_NON_BLOCKING);
  CUdeviceptr log = new_buffer(4 * 64);
  route->set_sms(kPartitionSms);
  for (std::uint32_t tag = 1; tag <= 3; ++tag)
    ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, tag));
  // The gate is told where routed work went (its own events belong there).
  const CUstream mirror = route->submitted_to();
  ASSERT_NE(mirror, nullptr);
  EXPECT_NE(mirror, s);
  CUcontext mirror_ctx = nullptr;
  ASSERT_CU_OK(cu->cuStreamGetCtx(mirror, &mirror_ctx));
  EXPECT_EQ(route->submitted_ctx(), mirror_ctx);
  EXPECT_NE(mirror_ctx, ctx);
  route->set_sms(0);
  for (std::uint32_t tag = 4; tag <= 5; ++tag)
    ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, tag));
  EXPECT_EQ(route->submitted_to(), nullptr);
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, s));

  EXPECT_EQ(read(log, 6), (std::vector<std::uint32_t>{5, 1, 2, 3, 4, 5}));
  const std::vector<sluice_fake_trace_record> kernels = kernels_in_trace();
  ASSERT_EQ(kernels.size(), 5u);
  for (const auto& k : kernels) {
    SCOPED_TRACE("kernel tag " + std::to_string(k.tag));
    if (k.tag <= 3) {
      EXPECT_EQ(k.sm_count, kPartitionSms);
      EXPECT_NE(k.ctx_id, primary_id());  // the green context
      EXPECT_NE(k.stream, reinterpret_cast<std::uint64_t>(s));
    } else {
      EXPECT_EQ(k.sm_count, 132u);
      EXPECT_EQ(k.ctx_id, primary_id());
      EXPECT_EQ(k.stream, reinterpret_cast<std::uint64_t>(s));
    }
  }
  const StatsSnapshot stats = engine->stats().snapshot();
  EXPECT_EQ(stats.routed_launches, 3u);
  EXPECT_EQ(stats.route_switches, 2u);
  EXPECT_EQ(stats.partitions, 1u);
  EXPECT_EQ(stats.mirror_streams, 1u);
  const std::string json = engine->stats().to_json("route");
  EXPECT_NE(json.find("\"routed_launches\": 3"), std::string::npos) << json;
}

// Work that the previous target has not run yet keeps its place when the route changes, in both
// directions, and so do copies, memsets and event records.
TEST_F(RouteTest, EveryRouteChangeKeepsTheStreamsOrder) {
  for (unsigned flags : {0u, static_cast<unsigned>(CU_STREAM_NON_BLOCKING)}) {
    SCOPED_TRACE("stream flags " + std::to_string(flags));
    CUstream s = new_stream(flags);
    CUdeviceptr log = new_buffer(4 * 64);
    CUdeviceptr buffer = new_buffer(4 * 16);
    CUdeviceptr copy = new_buffer(4 * 16);
    CUevent recorded = nullptr;
    ASSERT_CU_OK(cu->cuEventCreate(&recorded, CU_EVENT_DISABLE_TIMING));
    std::vector<std::uint32_t> expected = {0};
    for (std::uint32_t round = 0; round < 4; ++round) {
      route->set_sms(round % 2 == 0 ? kPartitionSms : 0);
      std::uint32_t* word = flag();
      ASSERT_CU_OK(wait_for(s, word));  // nothing of the stream after this may run before it
      ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, 10 * round + 1));
      OpDesc memset;
      memset.kind = OpKind::memset;
      ASSERT_CU_OK(engine->enqueue(StreamAbi::legacy, memset, cu->cuMemsetD32Async, buffer,
                                   round + 5, std::size_t{16}, s));
      route->set_sms(round % 2 == 0 ? 0 : 2 * kPartitionSms);
      ASSERT_CU_OK(launch_affine(StreamAbi::legacy, s, buffer, 2, 1, 16));
      ASSERT_CU_OK(engine->copy_1d(StreamAbi::legacy, cu->cuMemcpyDtoDAsync_v2, copy, buffer,
                                   std::size_t{4 * 16}, s));
      ASSERT_CU_OK(engine->record_event(StreamAbi::legacy, cu->cuEventRecord, recorded, s));
      ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, 10 * round + 2));
      EXPECT_EQ(engine->query_event(cu->cuEventQuery, recorded), CUDA_ERROR_NOT_READY);
      release(word);
      ASSERT_CU_OK(engine->synchronize_event(cu->cuEventSynchronize, recorded));
      EXPECT_EQ(read(copy, 16), std::vector<std::uint32_t>(16, (round + 5) * 2 + 1));
      expected.push_back(10 * round + 1);
      expected.push_back(10 * round + 2);
    }
    ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, s));
    expected[0] = static_cast<std::uint32_t>(expected.size() - 1);
    EXPECT_EQ(read(log, expected.size()), expected);
    ASSERT_CU_OK(engine->destroy_event(cu->cuEventDestroy_v2, recorded));
  }
  // Per stream: on, off, on (32 SMs), on (16 SMs), off, on (32 SMs).
  EXPECT_EQ(engine->stats().snapshot().route_switches, 12u);
}

// The driver records an event only on a stream of the event's context: the application's events
// are recorded on its stream, which first waits for the mirror, so they still cover all earlier
// work of the stream.
TEST_F(RouteTest, ApplicationEventsAreRecordedOnTheApplicationsStreamAfterTheMirror) {
  const auto [s, log, done] = routed_stream(CU_STREAM_NON_BLOCKING);
  std::uint32_t* word = flag();
  ASSERT_CU_OK(wait_for(s, word));
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, 1));
  ASSERT_CU_OK(engine->record_event(StreamAbi::legacy, cu->cuEventRecord, done, s));
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, 2));
  EXPECT_EQ(engine->query_event(cu->cuEventQuery, done), CUDA_ERROR_NOT_READY);
  release(word);
  ASSERT_CU_OK(engine->synchronize_event(cu->cuEventSynchronize, done));
  std::vector<std::uint32_t> seen = read(log, 2);
  EXPECT_GE(seen[0], 1u);
  EXPECT_EQ(seen[1], 1u);
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, s));

  auto count = fake_symbol<decltype(&sluice_fake_trace_count)>("sluice_fake_trace_count");
  auto trace = fake_symbol<decltype(&sluice_fake_trace_read)>("sluice_fake_trace_read");
  std::vector<sluice_fake_trace_record> records(count());
  records.resize(trace(records.data(), 0, records.size()));
  int recorded = 0;
  for (const auto& r : records) {
    if (r.kind != SLUICE_FAKE_OP_EVENT_RECORD || r.tag != reinterpret_cast<std::uint64_t>(done))
      continue;
    ++recorded;
    EXPECT_EQ(r.stream, reinterpret_cast<std::uint64_t>(s));
  }
  EXPECT_EQ(recorded, 1);
  EXPECT_EQ(engine->stats().snapshot().routed_launches, 2u);
  ASSERT_CU_OK(engine->destroy_event(cu->cuEventDestroy_v2, done));
}

// Random programs over the legacy stream, the per-thread stream, blocking and non-blocking
// streams, with a gate that routes a random subset of the named streams (to partitions of two
// sizes) and holds another, both changing underneath: results must match the reference model,
// which knows nothing of routing. On a failure the newest operations of the fake device are
// printed (stream, context, SMs, times).
void run_random_program(RouteTest& test, std::uint32_t seed) {
  RandomProgram program(test, 7000 + seed);
  program.run(250, [&](const std::vector<CUstream>& canonical) {
    auto routing = std::make_unique<RouteGate>(*test.engine);
    routing->randomize(canonical, seed);
    return routing;
  });
  if (::testing::Test::HasFailure()) print_trace_tail(60);
}

// Seed 4 runs alone below.
constexpr std::uint32_t kBlockingComebackSeed = 4;

TEST_F(RouteTest, RandomProgramsMatchTheReferenceModelWhileTheRouteChanges) {
  for (std::uint32_t seed = 1; seed <= 10; ++seed) {
    if (seed == kBlockingComebackSeed) continue;
    SCOPED_TRACE("seed " + std::to_string(seed));
    run_random_program(*this, seed);
    if (HasFatalFailure() || HasNonfatalFailure()) return;
  }
  const StatsSnapshot stats = engine->stats().snapshot();
  EXPECT_GT(stats.routed_ops, 0u);
  EXPECT_GT(stats.route_switches, 0u);
  EXPECT_GT(stats.total(stats.held_ops), 0u);
}

// This seed brings a routed blocking stream back to the stream itself (its gate bit cleared)
// right after legacy-stream work on the legacy mirror, now and then, depending on timing: the
// engine used to skip the legacy mirror's edge there, and a pageable device-to-host copy read a
// buffer before a legacy kernel wrote it (about 1 run in 60 on a loaded 2-core machine).
// ABlockingStreamComingBackFromItsMirrorFollowsTheLegacyMirror is the deterministic form. Run it
// many times with --gtest_filter='*ComebackSeed*' --gtest_repeat=1000.
TEST_F(RouteTest, RandomProgramOfTheBlockingComebackSeed) {
  run_random_program(*this, kBlockingComebackSeed);
}

TEST_F(RouteTest, SynchronizationAndQueriesCoverTheMirror) {
  const auto [s, log, done] = routed_stream(0);

  // Stream synchronization and query.
  std::uint32_t* first = flag();
  ASSERT_CU_OK(wait_for(s, first));
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, 1));
  EXPECT_EQ(engine->query_stream(StreamAbi::legacy, cu->cuStreamQuery, s), CUDA_ERROR_NOT_READY);
  release(first);
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, s));
  EXPECT_CU_OK(engine->query_stream(StreamAbi::legacy, cu->cuStreamQuery, s));
  EXPECT_EQ(read(log, 2), (std::vector<std::uint32_t>{1, 1}));

  // An event recorded on the routed stream means all earlier work of the stream.
  std::uint32_t* second = flag();
  ASSERT_CU_OK(wait_for(s, second));
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, 2));
  ASSERT_CU_OK(engine->record_event(StreamAbi::legacy, cu->cuEventRecord, done, s));
  EXPECT_EQ(engine->query_event(cu->cuEventQuery, done), CUDA_ERROR_NOT_READY);
  release(second);
  ASSERT_CU_OK(engine->synchronize_event(cu->cuEventSynchronize, done));
  EXPECT_EQ(read(log, 3), (std::vector<std::uint32_t>{2, 1, 2}));

  // Context synchronization, and a synchronous copy on the legacy stream (the legacy barrier
  // covers the mirror of a blocking stream).
  std::uint32_t* third = flag();
  ASSERT_CU_OK(wait_for(s, third));
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, 3));
  release(third);
  ASSERT_CU_OK(engine->synchronize_context([&] { return cu->cuCtxSynchronize(); }));
  EXPECT_EQ(read(log, 4), (std::vector<std::uint32_t>{3, 1, 2, 3}));
  std::uint32_t* fourth = flag();
  ASSERT_CU_OK(wait_for(s, fourth));
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, 4));
  release(fourth);
  engine->drain_all();  // what every synchronous entry point does first
  EXPECT_EQ(read(log, 5), (std::vector<std::uint32_t>{4, 1, 2, 3, 4}));

  ASSERT_CU_OK(engine->destroy_event(cu->cuEventDestroy_v2, done));
}

// A kernel on the legacy stream after work of a routed blocking stream waits for it, and later work
// of the routed stream waits for the legacy kernel, as the driver's barrier orders the stream.
TEST_F(RouteTest, TheLegacyBarrierReachesTheMirrorOfABlockingStream) {
  CUstream s = new_stream(0);
  CUdeviceptr log = new_buffer(4 * 64);
  route->set_sms(kPartitionSms);
  std::uint32_t* gate_word = flag();
  ASSERT_CU_OK(wait_for(s, gate_word));
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, 1));
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, nullptr, log, 2));  // the legacy stream
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, 3));
  release(gate_word);
  ASSERT_CU_OK(engine->synchronize_context([&] { return cu->cuCtxSynchronize(); }));
  EXPECT_EQ(read(log, 4), (std::vector<std::uint32_t>{3, 1, 2, 3}));
}

// The legacy stream routed, a blocking stream not: each still follows the other's earlier work.
TEST_F(RouteTest, ARoutedLegacyStreamKeepsItsBarrier) {
  CUstream s = new_stream(0);
  CUdeviceptr log = new_buffer(4 * 64);
  route->route_only({CU_STREAM_LEGACY});
  route->set_sms(kPartitionSms);
  std::uint32_t* word = flag();
  ASSERT_CU_OK(wait_for(CU_STREAM_LEGACY, word));
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, nullptr, log, 1));  // on the legacy mirror
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, 2));        // after it (the barrier)
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, nullptr, log, 3));  // after the blocking stream
  release(word);
  ASSERT_CU_OK(engine->synchronize_context([&] { return cu->cuCtxSynchronize(); }));
  EXPECT_EQ(read(log, 4), (std::vector<std::uint32_t>{3, 1, 2, 3}));
  const auto kernels = kernels_in_trace();
  ASSERT_EQ(kernels.size(), 3u);
  for (const auto& k : kernels)
    EXPECT_EQ(k.sm_count, k.tag == 2 ? 132u : kPartitionSms) << "kernel " << k.tag;
}

// The legacy stream moving from one partition to another still follows the earlier work of the
// blocking streams: the new mirror waits for the old one and for the legacy stream (whose driver
// barrier covers the blocking streams), not for the old mirror alone.
TEST_F(RouteTest, ALegacyStreamMovingBetweenPartitionsKeepsItsBarrier) {
  CUstream s = new_stream(0);
  CUdeviceptr buffer = new_buffer(4 * 16);
  CUdeviceptr copy = new_buffer(4 * 16);
  CUdeviceptr log = new_buffer(4 * 64);
  route->route_only({CU_STREAM_LEGACY});
  route->set_sms(kPartitionSms);
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, nullptr, log, 1));  // the legacy mirror of 16 SMs
  std::uint32_t* word = flag();
  ASSERT_CU_OK(wait_for(s, word));  // the blocking stream's work waits for the test
  ASSERT_CU_OK(launch_affine(StreamAbi::legacy, s, buffer, 1, 7, 16));
  route->set_sms(2 * kPartitionSms);
  // On the legacy mirror of 32 SMs: after the blocking stream's kernel (the legacy barrier).
  ASSERT_CU_OK(engine->copy_1d(StreamAbi::legacy, cu->cuMemcpyDtoDAsync_v2, copy, buffer,
                               std::size_t{4 * 16}, CU_STREAM_LEGACY));
  release(word);
  ASSERT_CU_OK(engine->synchronize_context([&] { return cu->cuCtxSynchronize(); }));
  EXPECT_EQ(read(copy, 16), std::vector<std::uint32_t>(16, 7));
  std::vector<std::uint32_t> sms;
  for (const auto& k : kernels_in_trace()) sms.push_back(k.sm_count);
  EXPECT_EQ(sms, (std::vector<std::uint32_t>{kPartitionSms, 132}));
}

// A routed blocking stream whose work comes back to the stream itself follows the legacy stream's
// earlier work on the legacy mirror (the driver's barrier only sees the legacy stream).
TEST_F(RouteTest, ABlockingStreamComingBackFromItsMirrorFollowsTheLegacyMirror) {
  CUstream s = new_stream(0);
  CUdeviceptr buffer = new_buffer(4 * 16);
  CUdeviceptr copy = new_buffer(4 * 16);
  CUdeviceptr log = new_buffer(4 * 64);
  route->route_only({CU_STREAM_LEGACY, s});
  route->set_sms(kPartitionSms);
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, 1));  // the stream's mirror
  std::uint32_t* word = flag();
  ASSERT_CU_OK(wait_for(CU_STREAM_LEGACY, word));
  ASSERT_CU_OK(launch_affine(StreamAbi::legacy, nullptr, buffer, 1, 7, 16));  // the legacy mirror
  route->set_routed(1u);  // the legacy stream only: the blocking stream's work comes back
  ASSERT_CU_OK(engine->copy_1d(StreamAbi::legacy, cu->cuMemcpyDtoDAsync_v2, copy, buffer,
                               std::size_t{4 * 16}, s));
  release(word);
  ASSERT_CU_OK(engine->synchronize_context([&] { return cu->cuCtxSynchronize(); }));
  EXPECT_EQ(read(copy, 16), std::vector<std::uint32_t>(16, 7));
  EXPECT_EQ(read(log, 2), (std::vector<std::uint32_t>{1, 1}));
}

// An event recorded on a routed blocking stream follows the legacy stream's earlier work on its
// mirror, as the driver's barrier orders a record on a blocking stream after the legacy stream.
TEST_F(RouteTest, AnEventOfARoutedBlockingStreamFollowsTheLegacyMirror) {
  CUstream s = new_stream(0);
  CUstream other = new_stream(CU_STREAM_NON_BLOCKING);
  CUdeviceptr buffer = new_buffer(4 * 16);
  CUdeviceptr copy = new_buffer(4 * 16);
  CUevent recorded = nullptr;
  ASSERT_CU_OK(cu->cuEventCreate(&recorded, CU_EVENT_DISABLE_TIMING));
  route->route_only({CU_STREAM_LEGACY, s});
  route->set_sms(kPartitionSms);
  std::uint32_t* word = flag();
  ASSERT_CU_OK(wait_for(CU_STREAM_LEGACY, word));
  ASSERT_CU_OK(launch_affine(StreamAbi::legacy, nullptr, buffer, 1, 7, 16));  // the legacy mirror
  ASSERT_CU_OK(engine->record_event(StreamAbi::legacy, cu->cuEventRecord, recorded, s));
  EXPECT_EQ(engine->query_event(cu->cuEventQuery, recorded), CUDA_ERROR_NOT_READY);
  ASSERT_CU_OK(engine->wait_event(StreamAbi::legacy, cu->cuStreamWaitEvent, other, recorded, 0));
  ASSERT_CU_OK(engine->copy_1d(StreamAbi::legacy, cu->cuMemcpyDtoDAsync_v2, copy, buffer,
                               std::size_t{4 * 16}, other));
  release(word);
  ASSERT_CU_OK(engine->synchronize_context([&] { return cu->cuCtxSynchronize(); }));
  EXPECT_EQ(read(copy, 16), std::vector<std::uint32_t>(16, 7));
  ASSERT_CU_OK(engine->destroy_event(cu->cuEventDestroy_v2, recorded));
}

// A capture starts with every routed stream's work back on the stream itself, captures nothing of
// a mirror, and graph launches run on the application's stream after the mirror's work.
TEST_F(RouteTest, CapturesAndGraphLaunchesStayOnTheApplicationsStream) {
  CUstream s = new_stream(CU_STREAM_NON_BLOCKING);
  CUdeviceptr buffer = new_buffer(4 * 16);
  route->set_sms(kPartitionSms);
  std::uint32_t* word = flag();
  ASSERT_CU_OK(wait_for(s, word));
  ASSERT_CU_OK(launch_affine(StreamAbi::legacy, s, buffer, 1, 5, 16));  // on the mirror: x = 5
  ASSERT_CU_OK(engine->begin_capture(StreamAbi::legacy, s, [&] {
    return cu->cuStreamBeginCapture_v2(s, CU_STREAM_CAPTURE_MODE_GLOBAL);
  }));
  ASSERT_CU_OK(launch_affine(StreamAbi::legacy, s, buffer, 3, 1, 16));  // recorded
  CUgraph graph = nullptr;
  ASSERT_CU_OK(
      engine->end_capture(StreamAbi::legacy, s, [&] { return cu->cuStreamEndCapture(s, &graph); }));
  CUgraphExec exec = nullptr;
  ASSERT_CU_OK(cu->cuGraphInstantiateWithFlags(&exec, graph, 0));
  OpDesc desc;
  desc.kind = OpKind::graph;
  ASSERT_CU_OK(engine->enqueue(StreamAbi::legacy, desc, cu->cuGraphLaunch, exec, s));
  ASSERT_CU_OK(launch_affine(StreamAbi::legacy, s, buffer, 2, 0, 16));  // on the mirror again
  release(word);
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, s));
  EXPECT_EQ(read(buffer, 16), std::vector<std::uint32_t>(16, (5 * 3 + 1) * 2));
  std::vector<std::uint32_t> sms;
  for (const auto& k : kernels_in_trace()) sms.push_back(k.sm_count);
  EXPECT_EQ(sms, (std::vector<std::uint32_t>{kPartitionSms, 132, kPartitionSms}));
  cu->cuGraphExecDestroy(exec);
  cu->cuGraphDestroy(graph);
}

TEST_F(RouteTest, LaunchesThatRecordAnEventStayOnTheApplicationsStream) {
  const auto [s, log, done] = routed_stream(CU_STREAM_NON_BLOCKING);
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, 1));  // on the mirror
  CUlaunchAttribute attribute{};
  attribute.id = CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT;
  attribute.value.launchCompletionEvent.event = done;
  // grid 1x1x1, block 32x1x1, no shared memory, on s, with the attribute
  CUlaunchConfig config{1, 1, 1, 32, 1, 1, 0, s, &attribute, 1};
  CUdeviceptr log_arg = log;
  std::uint32_t tag = 2;
  void* params[] = {&log_arg, &tag};
  ASSERT_CU_OK(engine->launch_kernel_ex(StreamAbi::legacy, cu->cuLaunchKernelEx, &config, append,
                                        params, nullptr));
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, s));
  EXPECT_EQ(read(log, 3), (std::vector<std::uint32_t>{2, 1, 2}));
  std::vector<std::uint32_t> sms;
  for (const auto& k : kernels_in_trace()) sms.push_back(k.sm_count);
  EXPECT_EQ(sms, (std::vector<std::uint32_t>{kPartitionSms, 132}));
  ASSERT_CU_OK(engine->destroy_event(cu->cuEventDestroy_v2, done));
}

TEST_F(RouteTest, WithoutGreenContextsWorkStaysOnTheFullGpu) {
  DriverApi broken = *cu;
  broken.cuGreenCtxCreate = [](CUgreenCtx*, CUdevResourceDesc, CUdevice, unsigned) {
    return CUDA_ERROR_NOT_SUPPORTED;
  };
  engine->set_gate(nullptr);
  engine = std::make_unique<Engine>(broken);
  route = std::make_unique<RouteGate>(*engine);
  engine->set_gate(route.get());
  route->set_sms(kPartitionSms);
  CUstream s = new_stream(CU_STREAM_NON_BLOCKING);
  CUdeviceptr buffer = new_buffer(4 * 16);
  for (std::uint32_t add = 1; add <= 4; ++add)
    ASSERT_CU_OK(launch_affine(StreamAbi::legacy, s, buffer, 3, add, 16));
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, s));
  std::uint32_t expected = 0;
  for (std::uint32_t add = 1; add <= 4; ++add) expected = expected * 3 + add;
  EXPECT_EQ(read(buffer, 16), std::vector<std::uint32_t>(16, expected));
  for (const auto& k : kernels_in_trace()) EXPECT_EQ(k.sm_count, 132u);
  const StatsSnapshot stats = engine->stats().snapshot();
  EXPECT_EQ(stats.route_failures, 1u);  // tried once, remembered
  EXPECT_EQ(stats.routed_ops, 0u);
}

TEST_F(RouteTest, StreamPrioritiesFollowTheClass) {
  int least = 0;
  int greatest = 0;
  ASSERT_CU_OK(cu->cuCtxGetStreamPriorityRange(&least, &greatest));
  ASSERT_LT(greatest, least);
  auto created_priority = [&](int requested) {
    CUstream s = nullptr;
    EXPECT_CU_OK(cu->cuStreamCreateWithPriority(&s, CU_STREAM_NON_BLOCKING,
                                                engine->stream_priority(requested)));
    int priority = 99;
    EXPECT_CU_OK(cu->cuStreamGetPriority(s, &priority));
    EXPECT_CU_OK(cu->cuStreamDestroy_v2(s));
    return priority;
  };
  // No class known: as asked.
  EXPECT_EQ(created_priority(0), 0);
  EXPECT_EQ(created_priority(greatest), greatest);
  route->set_class(StreamClass::rt);
  EXPECT_EQ(created_priority(0), greatest);
  EXPECT_EQ(created_priority(least), greatest);
  EXPECT_EQ(created_priority(greatest), greatest);  // not an override
  route->set_class(StreamClass::be);
  EXPECT_EQ(created_priority(0), least);  // not an override either
  EXPECT_EQ(created_priority(greatest), least);
  EXPECT_EQ(engine->stats().snapshot().priority_overrides, 3u);
  // The legacy stream keeps the default priority whatever the class.
  int legacy = 99;
  ASSERT_CU_OK(cu->cuStreamGetPriority(CU_STREAM_LEGACY, &legacy));
  EXPECT_EQ(legacy, 0);
}

TEST_F(RouteTest, StreamPrioritiesSwitchedOffKeepTheApplicationsOwn) {
  engine->set_gate(nullptr);
  EngineOptions options;
  options.stream_priority = false;  // SLUICE_STREAM_PRIORITY=off
  engine = std::make_unique<Engine>(*cu, options);
  route = std::make_unique<RouteGate>(*engine);
  engine->set_gate(route.get());
  int least = 0;
  int greatest = 0;
  ASSERT_CU_OK(cu->cuCtxGetStreamPriorityRange(&least, &greatest));
  route->set_class(StreamClass::rt);
  EXPECT_EQ(engine->stream_priority(least), least);
  route->set_class(StreamClass::be);
  EXPECT_EQ(engine->stream_priority(greatest), greatest);
  EXPECT_EQ(engine->stats().snapshot().priority_overrides, 0u);
}

TEST_F(RouteTest, AMirrorHasThePriorityOfItsStream) {
  int least = 0;
  int greatest = 0;
  ASSERT_CU_OK(cu->cuCtxGetStreamPriorityRange(&least, &greatest));
  CUstream s = nullptr;
  ASSERT_CU_OK(cu->cuStreamCreateWithPriority(&s, CU_STREAM_NON_BLOCKING, greatest));
  engine->stream_created(s, CU_STREAM_NON_BLOCKING);
  CUdeviceptr log = new_buffer(64);
  route->set_sms(kPartitionSms);
  ASSERT_CU_OK(launch_append(StreamAbi::legacy, s, log, 7));
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, s));
  const auto kernels = kernels_in_trace();
  ASSERT_EQ(kernels.size(), 1u);
  int priority = 99;
  ASSERT_CU_OK(cu->cuStreamGetPriority(reinterpret_cast<CUstream>(kernels[0].stream), &priority));
  EXPECT_EQ(priority, greatest);
  ASSERT_CU_OK(engine->destroy_stream(cu->cuStreamDestroy_v2, s));
}

}  // namespace
}  // namespace sluice::shim::test
