// Kill in the client against the fake driver (which runs twins as a GPU would: tests/fake_driver
// README, "Kill-instrumented twins"): with kill enabled, a best-effort launch of a kernel whose
// module has PTX becomes memset(record) + twin + wait(kill word == 0) + twin on its stream; twins
// are cached on disk and reused; a corrupt cache entry is rebuilt; failures, real-time clients,
// cooperative launches, captures and kill switched off keep the original launch.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "fake_program.h"
#include "sluice/shim/kill.h"

namespace sluice::shim::test {
namespace {

namespace fs = std::filesystem;

// A gate that admits everything, with a settable class and prediction, and that remembers the
// kill words it was told about.
class KillTestGate final : public Gate {
 public:
  bool admit(const OpDesc&) noexcept override { return open.load(); }
  const char* name() const noexcept override { return "kill-test"; }
  StreamClass stream_class() const noexcept override { return cls; }
  std::uint64_t predicted_ns(const OpDesc&) const noexcept override { return prediction; }
  void register_kill_word(std::int32_t device, const CUipcMemHandle&,
                          std::uint64_t offset) noexcept override {
    registered_device = device;
    registered_offset = offset;
    ++registrations;
  }
  std::atomic<bool> open{true};
  StreamClass cls = StreamClass::be;
  std::uint64_t prediction = 0;
  int registered_device = -1;
  std::uint64_t registered_offset = ~std::uint64_t{0};
  int registrations = 0;
};

struct Trace {
  decltype(&sluice_fake_trace_enable) enable = nullptr;
  decltype(&sluice_fake_trace_clear) clear = nullptr;
  decltype(&sluice_fake_trace_count) count = nullptr;
  decltype(&sluice_fake_trace_read) read = nullptr;
  explicit Trace(void* handle) {
    enable = reinterpret_cast<decltype(enable)>(dlsym(handle, "sluice_fake_trace_enable"));
    clear = reinterpret_cast<decltype(clear)>(dlsym(handle, "sluice_fake_trace_clear"));
    count = reinterpret_cast<decltype(count)>(dlsym(handle, "sluice_fake_trace_count"));
    read = reinterpret_cast<decltype(read)>(dlsym(handle, "sluice_fake_trace_read"));
  }
  // "kernel:<name>", "memset", "wait", ... of the operations that ran on `stream`, in order.
  std::vector<std::string> of(CUstream stream) const {
    std::vector<sluice_fake_trace_record> records(count());
    records.resize(read(records.data(), 0, records.size()));
    std::vector<std::string> out;
    for (const auto& r : records) {
      if (r.stream != reinterpret_cast<std::uintptr_t>(stream)) continue;
      switch (r.kind) {
        case SLUICE_FAKE_OP_KERNEL: out.push_back(std::string("kernel:") + r.name); break;
        case SLUICE_FAKE_OP_MEMSET: out.push_back("memset"); break;
        case SLUICE_FAKE_OP_MEM_WAIT: out.push_back("wait"); break;
        case SLUICE_FAKE_OP_EVENT_RECORD: out.push_back("record"); break;
        default: out.push_back("other"); break;
      }
    }
    return out;
  }
};

const std::vector<std::string> kTwinForm = {"memset", "kernel:add_kernel", "wait",
                                            "kernel:add_kernel", "record"};
const std::vector<std::string> kOriginalForm = {"kernel:add_kernel"};

class KillTest : public ::testing::Test {
 public:
  void SetUp() override {
    Fake& fake = Fake::get();
    ASSERT_NE(fake.handle, nullptr) << "cannot load " << SLUICE_TEST_FAKE_DRIVER;
    cu = &fake.api;
    trace = std::make_unique<Trace>(fake.handle);
    ASSERT_NE(trace->read, nullptr);
    ASSERT_CU_OK(cu->cuInit(0));
    ASSERT_CU_OK(cu->cuDevicePrimaryCtxRetain(&ctx, 0));
    ASSERT_CU_OK(cu->cuCtxSetCurrent(ctx));
    char dir_template[] = "/tmp/sluice-kill-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    root = dir_template;
    cache_dir = (root / "cache" / "sluice" / "twins").string();
    ptx = read_text(fs::path(SLUICE_TEST_PTX_DIR) / "add_kernel.ptx");
    ASSERT_FALSE(ptx.empty());
    ASSERT_CU_OK(cu->cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
    trace->enable(1);
  }

  void TearDown() override {
    stop_engine();
    if (stream != nullptr) cu->cuStreamDestroy_v2(stream);
    trace->enable(0);
    trace->clear();
    std::error_code ignored;
    fs::remove_all(root, ignored);
  }

  KillOptions kill_options() const {
    KillOptions options;
    options.enabled = true;
    options.min_ns = 0;
    options.cache_dir = cache_dir;
    return options;
  }

  // An engine (as a new process would have), the PTX module loaded and `kernel` found.
  void start_engine(KillOptions kill, const std::string& image, const char* kernel = "add_kernel") {
    EngineOptions options;
    options.kill = std::move(kill);
    engine = std::make_unique<Engine>(*cu, options);
    engine->set_gate(&gate);
    ASSERT_CU_OK(cu->cuModuleLoadData(&module, image.c_str()));
    engine->module_loaded(module, image.c_str(), image.size());
    ASSERT_CU_OK(cu->cuModuleGetFunction(&func, module, kernel));
    engine->stream_created(stream, CU_STREAM_NON_BLOCKING);
  }
  void start_engine(KillOptions kill) { start_engine(std::move(kill), ptx); }

  void stop_engine() {
    if (!engine) return;
    engine->set_gate(nullptr);
    EXPECT_CU_OK(engine->synchronize_context([&] { return cu->cuCtxSynchronize(); }));
    engine.reset();
    if (module != nullptr) cu->cuModuleUnload(module);
    module = nullptr;
  }

  // One launch of add_kernel (a no-op on the fake) with zeroed arguments; returns what ran on the
  // stream for it.
  std::vector<std::string> launch(bool cooperative = false) {
    trace->clear();
    std::uint64_t pointers[5] = {};
    std::uint32_t n = 1024;
    void* params[] = {&pointers[0], &pointers[1], &pointers[2], &n, &pointers[3], &pointers[4]};
    CUresult result =
        cooperative
            ? engine->launch_cooperative_kernel(StreamAbi::legacy, cu->cuLaunchCooperativeKernel,
                                                func, 8, 1, 1, 128, 1, 1, 0, stream, params)
            : engine->launch_kernel(StreamAbi::legacy, cu->cuLaunchKernel, func, 8, 1, 1, 128, 1,
                                    1, 0, stream, params, nullptr);
    EXPECT_CU_OK(result);
    EXPECT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, stream));
    return trace->of(stream);
  }

  StatsSnapshot stats() const { return engine->stats().snapshot(); }

  DriverApi* cu = nullptr;
  std::unique_ptr<Trace> trace;
  CUcontext ctx = nullptr;
  CUstream stream = nullptr;
  CUmodule module = nullptr;
  CUfunction func = nullptr;
  KillTestGate gate;
  std::unique_ptr<Engine> engine;
  fs::path root;
  std::string cache_dir;
  std::string ptx;
};

TEST(KillCache, EntriesRoundTripAndDamagedOnesAreRefused) {
  TwinModule twin{"sluice-ptx/1-b-abc", {{"k1", 24, 32}, {"k2", 0, 8}}, ".version 8.7\n.entry k1()"};
  const std::string text = serialize_twin(twin);
  auto back = parse_twin(text, twin.key);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->ptx, twin.ptx);
  ASSERT_EQ(back->kernels.size(), 2u);
  EXPECT_EQ(back->kernels[0].name, "k1");
  EXPECT_EQ(back->kernels[0].launch_param_offset, 24u);
  EXPECT_EQ(back->kernels[0].twin_param_bytes, 32u);
  EXPECT_FALSE(parse_twin(text, "sluice-ptx/1-b-other").has_value());         // another key
  EXPECT_FALSE(parse_twin(text.substr(0, text.size() - 3), twin.key).has_value());  // truncated
  EXPECT_FALSE(parse_twin(text + "x", twin.key).has_value());                 // longer
  EXPECT_FALSE(parse_twin("garbage", twin.key).has_value());
  std::string bad_offset = text;
  bad_offset.replace(bad_offset.find("k1 24 32"), 8, "k1 30 32");  // record pointer past the end
  EXPECT_FALSE(parse_twin(bad_offset, twin.key).has_value());
  EXPECT_EQ(twin_cache_path("/c", "a/b c"), "/c/a_b_c.twin");
}

TEST(KillCache, StoresAtomicallyInAPrivateDirectory) {
  char dir_template[] = "/tmp/sluice-kill-cache-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = std::string(dir_template) + "/sluice/twins";
  TwinModule twin{"key-1", {{"k", 8, 16}}, "ptx text"};
  ASSERT_TRUE(store_cached_twin(dir, twin));
  struct stat st {};
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  auto loaded = load_cached_twin(dir, "key-1");
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->ptx, "ptx text");
  std::size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    (void)entry;
    ++files;  // no temporary file left behind
  }
  EXPECT_EQ(files, 1u);
  EXPECT_FALSE(load_cached_twin(dir, "key-2").has_value());
  fs::remove_all(dir_template);
}

TEST_F(KillTest, ABestEffortLaunchBecomesTwinWaitTwinInStreamOrder) {
  start_engine(kill_options());
  EXPECT_EQ(launch(), kTwinForm);
  EXPECT_EQ(launch(), kTwinForm);  // the twin and a recycled record serve the next launch
  const StatsSnapshot s = stats();
  EXPECT_EQ(s.twins_built, 1u);
  EXPECT_EQ(s.twins_cached, 0u);
  EXPECT_EQ(s.twin_launches, 2u);
  EXPECT_EQ(s.twin_failures, 0u);
  EXPECT_EQ(s.kill_word_registered, 1u);
  EXPECT_EQ(gate.registrations, 1);
  EXPECT_EQ(gate.registered_device, 0);
  EXPECT_EQ(gate.registered_offset, 0u);
  EXPECT_NE(engine->stats().to_json("kill-test").find("\"twin_launches\": 2"), std::string::npos);
}

TEST_F(KillTest, HeldLaunchesGoOutInTheTwinFormToo) {
  start_engine(kill_options());
  trace->clear();
  gate.open = false;
  std::uint64_t pointers[5] = {};
  std::uint32_t n = 1;
  void* params[] = {&pointers[0], &pointers[1], &pointers[2], &n, &pointers[3], &pointers[4]};
  ASSERT_CU_OK(engine->launch_kernel(StreamAbi::legacy, cu->cuLaunchKernel, func, 4, 1, 1, 32, 1, 1,
                                     0, stream, params, nullptr));
  EXPECT_EQ(engine->held_now(), 1u);
  gate.open = true;
  engine->gate_changed();
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, stream));
  EXPECT_EQ(trace->of(stream), kTwinForm);
}

TEST_F(KillTest, TheCacheServesANewProcessAndACorruptEntryIsRebuilt) {
  start_engine(kill_options());
  EXPECT_EQ(launch(), kTwinForm);
  stop_engine();
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(cache_dir)) entries.push_back(entry.path());
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].extension(), ".twin");

  start_engine(kill_options());  // another process: the same module, the cached twin
  EXPECT_EQ(launch(), kTwinForm);
  EXPECT_EQ(stats().twins_cached, 1u);
  EXPECT_EQ(stats().twins_built, 0u);
  stop_engine();

  std::ofstream(entries[0], std::ios::binary | std::ios::trunc) << "sluice-twin v1 garbage\n";
  start_engine(kill_options());
  EXPECT_EQ(launch(), kTwinForm);
  EXPECT_EQ(stats().twins_cached, 0u);
  EXPECT_EQ(stats().twins_built, 1u);
  EXPECT_TRUE(read_text(entries[0]).starts_with("sluice-twin v1 sluice-ptx/"));
  stop_engine();
  start_engine(kill_options());  // the rebuilt entry is intact
  EXPECT_EQ(launch(), kTwinForm);
  EXPECT_EQ(stats().twins_cached, 1u);
}

TEST_F(KillTest, KillSwitchedOffChangesNothing) {
  KillOptions off = kill_options();
  off.enabled = false;
  start_engine(off);
  EXPECT_EQ(launch(), kOriginalForm);
  EXPECT_EQ(stats().twin_launches, 0u);
  EXPECT_FALSE(fs::exists(cache_dir));
  EXPECT_EQ(gate.registrations, 0);
}

TEST_F(KillTest, RealTimeClientsAndCooperativeLaunchesKeepTheOriginal) {
  start_engine(kill_options());
  gate.cls = StreamClass::rt;
  EXPECT_EQ(launch(), kOriginalForm);
  gate.cls = StreamClass::be;
  EXPECT_EQ(launch(/*cooperative=*/true), kOriginalForm);
  EXPECT_EQ(stats().twin_launches, 0u);
  EXPECT_EQ(launch(), kTwinForm);
}

TEST_F(KillTest, ShortKernelsKeepTheOriginal) {
  KillOptions options = kill_options();
  options.min_ns = 500'000;
  start_engine(options);
  gate.prediction = 20'000;  // 20 us: not worth two more stream operations
  EXPECT_EQ(launch(), kOriginalForm);
  gate.prediction = 2'000'000;
  EXPECT_EQ(launch(), kTwinForm);
}

TEST_F(KillTest, WithoutPredictionsRepeatedKernelsCountAsLong) {
  KillOptions options = kill_options();
  options.min_ns = 500'000;
  start_engine(options);
  gate.prediction = 0;  // no daemon: no prediction
  for (std::uint64_t i = 1; i < kUnpredictedLaunches; ++i) EXPECT_EQ(launch(), kOriginalForm);
  EXPECT_EQ(launch(), kTwinForm);
}

TEST_F(KillTest, ModulesWithoutUsablePtxOrWithRefusedPtxKeepTheOriginal) {
  // A module the rewriter refuses (a name in its reserved namespace): logged, counted, original.
  std::string refused = ptx;
  refused.replace(refused.find(".visible .entry add_kernel("), 0,
                  ".visible .global .align 4 .u32 __sluice_taken;\n");
  start_engine(kill_options(), refused);
  EXPECT_EQ(launch(), kOriginalForm);
  EXPECT_EQ(launch(), kOriginalForm);
  EXPECT_EQ(stats().twin_failures, 1u);  // once per module
  EXPECT_EQ(stats().twin_launches, 0u);
}

// A killable spin kernel (the fake runs `sluice_spin*` entries as ns_per_block per wave of 132
// blocks, and their twins as a GPU would). Device times in the fake's trace are modelled, so they
// are exact whatever the machine's load.
constexpr const char* kSpinPtx = R"(.version 8.0
.target sm_90
.address_size 64

.visible .entry sluice_spin_k(
	.param .u64 sluice_spin_k_param_0
)
{
	ret;
}
)";

TEST_F(KillTest, KilledBlocksResumeAfterTheWaitAndEveryBlockRunsOnce) {
  start_engine(kill_options(), kSpinPtx, "sluice_spin_k");
  CUstream killer = nullptr;  // where the "daemon" writes the kill word
  ASSERT_CU_OK(cu->cuStreamCreate(&killer, CU_STREAM_NON_BLOCKING));

  std::uint64_t ns_per_wave = 1'000'000;
  void* params[] = {&ns_per_wave};
  constexpr unsigned kWaves = 6;
  auto spin = [&] {
    return engine->launch_kernel(StreamAbi::legacy, cu->cuLaunchKernel, func, 132 * kWaves, 1, 1,
                                 32, 1, 1, 0, stream, params, nullptr);
  };
  auto set_word = [&](std::uint32_t value) {
    const CUdeviceptr word = engine->kill_word(0);
    ASSERT_NE(word, 0u);
    ASSERT_CU_OK(cu->cuStreamWriteValue32_v2(killer, word, value, 0));
    ASSERT_CU_OK(cu->cuStreamSynchronize(killer));
  };
  // Device time of the twin launches that ran on `stream` since the trace was cleared.
  auto twin_times = [&] {
    std::vector<sluice_fake_trace_record> records(trace->count());
    records.resize(trace->read(records.data(), 0, records.size()));
    std::vector<std::uint64_t> times;
    for (const auto& r : records) {
      if (r.stream == reinterpret_cast<std::uintptr_t>(stream) && r.kind == SLUICE_FAKE_OP_KERNEL)
        times.push_back(r.end_ns - r.start_ns);
    }
    return times;
  };

  ASSERT_CU_OK(spin());  // builds the twin and the kill word
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, stream));

  // Killed before it starts: the first twin runs nothing, the stream waits on the GPU, and once the
  // word is lowered the second twin runs every block.
  set_word(1);
  trace->clear();
  ASSERT_CU_OK(spin());
  EXPECT_EQ(engine->query_stream(StreamAbi::legacy, cu->cuStreamQuery, stream),
            CUDA_ERROR_NOT_READY);  // held by the wait: the word is 1
  set_word(0);
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, stream));
  // The trace lists operations as they complete, and a twin that ran nothing may be listed after
  // the next one: compare the two device times without their order.
  std::vector<std::uint64_t> killed_first = twin_times();
  std::sort(killed_first.begin(), killed_first.end());
  EXPECT_EQ(killed_first, (std::vector<std::uint64_t>{0, kWaves * ns_per_wave}));

  // Killed while it runs (whenever that is) and lowered; with `again`, raised once more while the
  // second twin runs and lowered only after the stream drained.
  auto kill_while_running = [&](bool again) {
    trace->clear();
    ASSERT_CU_OK(spin());
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    set_word(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    set_word(0);
    if (again) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      set_word(1);
    }
    ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, stream));
    set_word(0);
  };
  auto expect_each_wave_once = [&] {
    const auto times = twin_times();
    ASSERT_EQ(times.size(), 2u);
    EXPECT_EQ(times[0] + times[1], kWaves * ns_per_wave);
  };
  // The two launches together run each wave once.
  kill_while_running(false);
  expect_each_wave_once();
  // Also when killed again while the second twin runs: that launch resumes and does not read the
  // word, so no block is left behind (sluiced raises the word whenever RT arrives, however often).
  kill_while_running(true);
  expect_each_wave_once();
  EXPECT_EQ(stats().twin_launches, 4u);
  cu->cuStreamDestroy_v2(killer);
}

// sluiced is lost while it holds the word raised: the client lowers the word itself, so work that
// paused behind it finishes instead of waiting for a daemon that may never come back.
TEST_F(KillTest, AWordLeftRaisedByALostDaemonComesDown) {
  start_engine(kill_options(), kSpinPtx, "sluice_spin_k");
  std::uint64_t ns_per_wave = 100'000;
  void* params[] = {&ns_per_wave};
  auto spin = [&] {
    return engine->launch_kernel(StreamAbi::legacy, cu->cuLaunchKernel, func, 132 * 4, 1, 1, 32, 1,
                                 1, 0, stream, params, nullptr);
  };
  ASSERT_CU_OK(spin());  // builds the twin and the kill word
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, stream));
  const CUdeviceptr word = engine->kill_word(0);
  ASSERT_NE(word, 0u);
  CUstream killer = nullptr;
  ASSERT_CU_OK(cu->cuStreamCreate(&killer, CU_STREAM_NON_BLOCKING));
  ASSERT_CU_OK(cu->cuStreamWriteValue32_v2(killer, word, 7, 0));
  ASSERT_CU_OK(cu->cuStreamSynchronize(killer));

  ASSERT_CU_OK(spin());
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(engine->query_stream(StreamAbi::legacy, cu->cuStreamQuery, stream),
            CUDA_ERROR_NOT_READY);  // paused on the GPU behind the raised word

  engine->daemon_lost();
  ASSERT_CU_OK(engine->synchronize_stream(StreamAbi::legacy, cu->cuStreamSynchronize, stream));
  std::uint32_t value = 1;
  ASSERT_CU_OK(cu->cuMemcpyDtoH_v2(&value, word, sizeof value));
  EXPECT_EQ(value, 0u);
  EXPECT_EQ(stats().twin_launches, 2u);
  cu->cuStreamDestroy_v2(killer);
}

TEST_F(KillTest, CapturedLaunchesPassThroughUnchanged) {
  start_engine(kill_options());
  ASSERT_CU_OK(engine->begin_capture(StreamAbi::legacy, stream, [&] {
    return cu->cuStreamBeginCapture_v2(stream, CU_STREAM_CAPTURE_MODE_GLOBAL);
  }));
  std::uint64_t pointers[5] = {};
  std::uint32_t n = 1;
  void* params[] = {&pointers[0], &pointers[1], &pointers[2], &n, &pointers[3], &pointers[4]};
  ASSERT_CU_OK(engine->launch_kernel(StreamAbi::legacy, cu->cuLaunchKernel, func, 4, 1, 1, 32, 1, 1,
                                     0, stream, params, nullptr));
  CUgraph graph = nullptr;
  ASSERT_CU_OK(engine->end_capture(StreamAbi::legacy, stream,
                                   [&] { return cu->cuStreamEndCapture(stream, &graph); }));
  std::size_t nodes = 0;
  ASSERT_CU_OK(cu->cuGraphGetNodes(graph, nullptr, &nodes));
  EXPECT_EQ(nodes, 1u);  // the original kernel only
  EXPECT_EQ(stats().twin_launches, 0u);
  cu->cuGraphDestroy(graph);
}

}  // namespace
}  // namespace sluice::shim::test
