// Kill instrumentation: every twin compiles with ptxas wherever its original does, golden files
// fix the emitted text, and the emitted check itself is run (prologue_interpreter) to show the
// contract's exactly-once resume.
#include "sluice/ptx/instrument.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <regex>

#include "prologue_interpreter.h"
#include "sluice/ptx/kill_abi.h"
#include "sluice/ptx/report_json.h"
#include "test_support.h"

namespace sluice::ptx {

// Readable parameter names in test output.
void PrintTo(Broadcast broadcast, std::ostream* os) {
  *os << to_string(broadcast);
}

namespace {

using testing::read_text;

Instrumented instrument_ok(std::string_view ptx, const InstrumentOptions& options = {}) {
  auto twin = instrument(ptx, options);
  EXPECT_TRUE(twin) << twin.error().message;
  return twin ? std::move(twin).value() : Instrumented{};
}

const InstrumentOptions kSharedWord{Broadcast::shared_word, {}};

// ---- golden files ----
// SLUICE_UPDATE_GOLDEN=1 rewrites them from the current output (then review the diff).
void expect_golden(const std::filesystem::path& path, const std::string& actual) {
  if (std::getenv("SLUICE_UPDATE_GOLDEN") != nullptr) {
    std::ofstream(path, std::ios::binary) << actual;
    return;
  }
  ASSERT_TRUE(std::filesystem::exists(path)) << path << " is missing (SLUICE_UPDATE_GOLDEN=1)";
  EXPECT_EQ(read_text(path), actual) << "differs from " << path;
}

TEST(Golden, TwinsAndReports) {
  const auto dir = testing::source_dir() / "golden";
  struct Case {
    std::string input;
    std::string suffix;
    InstrumentOptions options;
  };
  const Case cases[] = {
      {"vector_add", "", {}}, {"vector_add", ".shared", kSharedWord}, {"mixed_module", "", {}}};
  for (const Case& c : cases) {
    const std::string input = read_text(dir / (c.input + ".ptx"));
    const Instrumented twin = instrument_ok(input, c.options);
    expect_golden(dir / (c.input + c.suffix + ".twin.ptx"), twin.ptx);
    expect_golden(dir / (c.input + c.suffix + ".report.json"),
                  to_json(twin, c.options).dump(2) + "\n");
  }
}

// ---- ptxas validation ----
// The module retargeted to `arch`, so one input can be checked on several architectures. sm_90
// needs PTX ISA 7.8 and sm_90a 8.0: older versions are raised.
std::string retarget(std::string_view ptx, std::string_view arch) {
  auto module = parse_module(ptx);
  EXPECT_TRUE(module) << module.error().message;
  if (!module) return {};
  module->target.front() = std::string(arch);
  const int minor_needed = arch == "sm_90a" ? 0 : arch == "sm_90" ? 8 : -1;
  const int major_needed = arch == "sm_90a" ? 8 : 7;
  if (minor_needed >= 0 && std::pair(module->version_major, module->version_minor) <
                               std::pair(major_needed, minor_needed)) {
    module->version_major = major_needed;
    module->version_minor = minor_needed;
  }
  return print_module(*module);
}

// For each of sm_80, sm_90 and sm_90a where the original compiles, the twin must compile too. The
// "original" given to ptxas is itself parsed and printed (retarget), so this also shows that the
// printer's round trip of every input is valid PTX. Returns the architectures that were checked.
std::vector<std::string> expect_twin_compiles(const std::string& original, const std::string& twin,
                                              const std::string& name, std::string_view flags) {
  std::vector<std::string> checked;
  for (const char* arch : {"sm_80", "sm_90", "sm_90a"}) {
    if (testing::run_ptxas(retarget(original, arch), arch, flags).status != 0) continue;
    const testing::CommandResult result = testing::run_ptxas(retarget(twin, arch), arch, flags);
    EXPECT_EQ(result.status, 0) << name << " twin fails ptxas for " << arch << ":\n"
                                << result.output;
    checked.push_back(arch);
  }
  return checked;
}

void expect_valid_twins(const std::string& original, const std::string& name,
                        const std::vector<std::string>& required_archs,
                        std::string_view ptxas_flags = "") {
  if (!testing::have_ptxas()) GTEST_SKIP() << "no ptxas";
  for (const InstrumentOptions& options : {InstrumentOptions{}, kSharedWord}) {
    const Instrumented twin = instrument_ok(original, options);
    EXPECT_GT(twin.instrumented_count(), 0u) << name;
    const std::vector<std::string> checked =
        expect_twin_compiles(original, twin.ptx, name, ptxas_flags);
    for (const std::string& arch : required_archs) {
      EXPECT_NE(std::find(checked.begin(), checked.end(), arch), checked.end())
          << name << " was not validated for " << arch;
    }
  }
}

class TritonCorpus : public ::testing::TestWithParam<std::filesystem::path> {};

TEST_P(TritonCorpus, TwinCompilesWithPtxas) {
  const std::string original = read_text(GetParam());
  // All of them are .target sm_90a; only matmul's wgmma needs the arch-specific target.
  std::vector<std::string> required = {"sm_90a"};
  if (GetParam().filename() != "matmul_kernel.ptx") required = {"sm_80", "sm_90", "sm_90a"};
  expect_valid_twins(original, GetParam().filename(), required);
}

INSTANTIATE_TEST_SUITE_P(Files, TritonCorpus, ::testing::ValuesIn(testing::triton_corpus()),
                         [](const auto& param_info) { return param_info.param.stem().string(); });

class GeneratedModule : public ::testing::TestWithParam<std::string> {};

TEST_P(GeneratedModule, TwinCompilesWithPtxas) {
  SLUICE_REQUIRE_GENERATED();
  const std::string original = read_text(testing::generated_dir() / (GetParam() + ".ptx"));
  const bool sm90 = GetParam() == "cluster";
  // Relocatable code calls a function of another unit: compile it with -c, as nvcc -rdc would.
  expect_valid_twins(
      original, GetParam(),
      sm90 ? std::vector<std::string>{"sm_90"} : std::vector<std::string>{"sm_80", "sm_90"},
      GetParam() == "relocatable" ? "-c" : "");
}

// (cooperative.cu and communicating.cu have no killable kernel, so their twins are their
// originals.)
INSTANTIATE_TEST_SUITE_P(Cuda, GeneratedModule,
                         ::testing::Values("kernels", "cluster", "relocatable"));

TEST(Validation, GoldenInputsCompile) {
  const auto dir = testing::source_dir() / "golden";
  expect_valid_twins(read_text(dir / "vector_add.ptx"), "vector_add", {"sm_80", "sm_90"});
  expect_valid_twins(read_text(dir / "mixed_module.ptx"), "mixed_module", {"sm_90"});
}

// ---- structure of the twin ----
TEST(Twin, AppendsTheLaunchParameterAndReportsItsOffset) {
  SLUICE_REQUIRE_GENERATED();
  const std::string original = read_text(testing::generated_dir() / "kernels.ptx");
  const Instrumented twin = instrument_ok(original);
  auto before = parse_module(original);
  auto after = parse_module(twin.ptx);
  ASSERT_TRUE(before && after) << (after ? "" : after.error().message);
  const Variable* flag = after->find_variable(std::string(kill_abi::kKillFlagSymbol));
  ASSERT_NE(flag, nullptr);
  EXPECT_EQ(flag->space, ".global");
  EXPECT_EQ(flag->type, ".u64");
  EXPECT_EQ(
      std::find(flag->linkage.begin(), flag->linkage.end(), ".visible") - flag->linkage.begin(), 0);
  for (const InstrumentedKernel& kernel : twin.kernels) {
    const Function* old_entry = before->find_function(kernel.name);
    const Function* new_entry = after->find_function(kernel.name);
    ASSERT_TRUE(old_entry && new_entry) << kernel.name;
    EXPECT_EQ(kernel.instrumented, kernel.analysis.killable());
    if (!kernel.instrumented) {
      EXPECT_EQ(new_entry->params.size(), old_entry->params.size());
      EXPECT_EQ(new_entry->body.size(), old_entry->body.size());
      continue;
    }
    ASSERT_EQ(new_entry->params.size(), old_entry->params.size() + 1) << kernel.name;
    EXPECT_EQ(new_entry->params.back().name, kill_abi::kLaunchParamName);
    EXPECT_EQ(new_entry->params.back().type, ".u64");
    auto layout = layout_params(new_entry->params);
    ASSERT_TRUE(layout);
    EXPECT_EQ(layout->slots.back().offset, kernel.launch_param_offset) << kernel.name;
    EXPECT_EQ(layout->size, kernel.twin_param_bytes);
    EXPECT_EQ(kernel.original_params.size, layout_params(old_entry->params)->size);
    EXPECT_EQ(kernel.launch_param_offset % 8, 0u);
    EXPECT_GE(kernel.launch_param_offset, kernel.original_params.size);
    EXPECT_EQ(new_entry->body.front().kind, Statement::Kind::open_block);
  }
  // struct_param's parameters end at 32: the record pointer goes there.
  for (const InstrumentedKernel& kernel : twin.kernels) {
    if (kernel.name == "struct_param") {
      EXPECT_EQ(kernel.launch_param_offset, 32u);
    }
  }
}

TEST(Twin, NothingKillableLeavesTheModuleAsItWas) {
  const std::string ptx =
      ".version 8.0\n.target sm_90\n.address_size 64\n.entry c()\n.reqnctapercluster 2, 1, "
      "1\n{\nret;\n}\n";
  const Instrumented twin = instrument_ok(ptx);
  EXPECT_EQ(twin.instrumented_count(), 0u);
  EXPECT_EQ(twin.ptx, print_module(*parse_module(ptx)));
  EXPECT_EQ(twin.ptx.find(kill_abi::kKillFlagSymbol), std::string::npos);
}

TEST(Twin, ATwinIsNotInstrumentedAgain) {
  const std::string original = read_text(testing::source_dir() / "golden/vector_add.ptx");
  const Instrumented once = instrument_ok(original);
  ASSERT_EQ(once.instrumented_count(), 1u);
  const Instrumented twice = instrument_ok(once.ptx);
  EXPECT_EQ(twice.instrumented_count(), 0u);
  ASSERT_EQ(twice.kernels.size(), 1u);
  EXPECT_EQ(twice.kernels[0].analysis.reasons.at(0).code, "reserved-name");
}

TEST(Twin, MalformedPtxIsAnErrorNamingTheLine) {
  auto twin = instrument(".version 8.0\n.target sm_80\n.address_size 64\n.entry k(\n{\n");
  ASSERT_FALSE(twin);
  EXPECT_NE(twin.error().message.find("line "), std::string::npos) << twin.error().message;
}

// Shared memory and registers as ptxas reports them for one kernel.
struct Resources {
  int registers = -1;
  int smem = 0;
};

Resources resources(const std::string& ptx, const std::string& arch, const std::string& kernel) {
  const auto dir = testing::scratch_dir("resources");
  const auto input = dir / "in.ptx";
  std::ofstream(input) << ptx;
  const auto result =
      testing::run_command(std::string(SLUICE_PTX_PTXAS) + " -v -arch=" + arch + " -o " +
                           (dir / "out.cubin").string() + " " + input.string());
  EXPECT_EQ(result.status, 0) << result.output;
  Resources out;
  const std::size_t at = result.output.find("Function properties for " + kernel);
  if (at == std::string::npos) return out;
  std::smatch match;
  const std::string tail = result.output.substr(at);
  if (std::regex_search(tail, match, std::regex(R"(Used (\d+) registers)"))) {
    out.registers = std::stoi(match[1]);
  }
  const std::string used_line = tail.substr(0, tail.find('\n', tail.find("Used ")));
  if (std::regex_search(used_line, match, std::regex(R"((\d+) bytes smem)")))
    out.smem = std::stoi(match[1]);
  return out;
}

// The barrier reduction broadcasts without shared memory; the shared word costs a few bytes.
TEST(Twin, BarrierBroadcastAddsNoSharedMemory) {
  if (!testing::have_ptxas()) GTEST_SKIP() << "no ptxas";
  const auto softmax = testing::source_dir() / "corpus/triton/softmax_kernel.ptx";
  const std::string original = read_text(softmax);
  const Resources base = resources(original, "sm_90a", "softmax_kernel");
  const Resources barrier = resources(instrument_ok(original).ptx, "sm_90a", "softmax_kernel");
  const Resources shared =
      resources(instrument_ok(original, kSharedWord).ptx, "sm_90a", "softmax_kernel");
  ASSERT_GT(base.registers, 0);
  EXPECT_EQ(barrier.smem, base.smem);
  EXPECT_GT(shared.smem, base.smem);
  EXPECT_LE(shared.smem, base.smem + 16);
  // The check's registers are dead by the time the kernel's own code runs.
  EXPECT_LE(barrier.registers, base.registers + 8);
  RecordProperty("registers_original", base.registers);
  RecordProperty("registers_twin", barrier.registers);
}

// ---- cache key ----
TEST(CacheKey, DependsOnContentVersionAndOptions) {
  const std::string ptx = read_text(testing::source_dir() / "golden/vector_add.ptx");
  const std::string key = cache_key(ptx);
  EXPECT_EQ(key, cache_key(ptx));
  EXPECT_TRUE(key.starts_with(kRewriterVersion)) << key;
  EXPECT_NE(key, cache_key(ptx, kSharedWord));
  EXPECT_NE(key, cache_key(ptx, InstrumentOptions{Broadcast::barrier_reduction, {true}}));
  std::string changed = ptx;
  changed[changed.size() / 2] ^= 1;
  EXPECT_NE(key, cache_key(changed));
  EXPECT_NE(key, cache_key(ptx + " "));
  EXPECT_EQ(instrument_ok(ptx).cache_key, key);
}

// ---- the emitted check, executed ----
// One grid's worth of launches of an instrumented entry against a simulated device.
class LaunchSimulator {
 public:
  static constexpr std::uint64_t kFlagSymbol = 0x1000;
  static constexpr std::uint64_t kKillWord = 0x2000;
  static constexpr std::uint64_t kRecord = 0x10000;

  LaunchSimulator(const Function& entry, testing::Dim3 grid, testing::Dim3 threads)
      : entry_(entry), grid_(grid), threads_(threads) {
    device_.symbols[std::string(kill_abi::kKillFlagSymbol)] = kFlagSymbol;
  }

  void point_flag_at_kill_word() {
    device_.store32(kFlagSymbol, static_cast<std::uint32_t>(kKillWord));
  }
  void set_kill(std::uint32_t value) { device_.store32(kKillWord, value); }
  std::uint32_t killed() const { return device_.load32(kRecord + kill_abi::kKilledOffset); }
  void reset_killed() { device_.store32(kRecord + kill_abi::kKilledOffset, 0); }
  std::uint64_t blocks() const { return std::uint64_t{grid_.x} * grid_.y * grid_.z; }

  bool done_bit(std::uint64_t block) const {
    return (device_.load32(kRecord + kill_abi::kDoneOffset + 4 * (block / 32)) >> (block % 32)) & 1;
  }

  // Launches the grid; `kill_after` blocks start before the kill word turns non-zero (-1: never);
  // `resume` sets kill_abi::kResumeBit in the record parameter. Returns the linear numbers of the
  // blocks that ran, in launch order.
  std::vector<std::uint64_t> launch(bool tracked, long kill_after = -1, bool resume = false) {
    std::vector<std::uint64_t> ran;
    long started = 0;
    for (std::uint32_t z = 0; z < grid_.z; ++z) {
      for (std::uint32_t y = 0; y < grid_.y; ++y) {
        for (std::uint32_t x = 0; x < grid_.x; ++x) {
          if (kill_after >= 0 && started++ == kill_after) set_kill(1);
          std::map<std::string, std::uint64_t> params;
          for (const Param& param : entry_.params) params[param.name] = 0xdead0000;
          params[std::string(kill_abi::kLaunchParamName)] =
              tracked ? kRecord | (resume ? kill_abi::kResumeBit : 0) : 0;
          const testing::BlockOutcome outcome = testing::run_block_check(
              entry_, device_, grid_, testing::Dim3{x, y, z}, threads_, params);
          EXPECT_EQ(outcome.error, "");
          if (outcome.ran) ran.push_back(kill_abi::linear_block(x, y, z, grid_.x, grid_.y));
        }
      }
    }
    return ran;
  }

 private:
  const Function& entry_;
  testing::Dim3 grid_;
  testing::Dim3 threads_;
  testing::Device device_;
};

const Function& twin_entry(const Module& module, const std::string& name) {
  const Function* entry = module.find_function(name);
  EXPECT_NE(entry, nullptr) << name;
  return *entry;
}

// The blocks two launches ran, sorted: every block once when they are every_block(sim).
std::vector<std::uint64_t> together(std::vector<std::uint64_t> first,
                                    const std::vector<std::uint64_t>& second) {
  first.insert(first.end(), second.begin(), second.end());
  std::sort(first.begin(), first.end());
  return first;
}

std::vector<std::uint64_t> every_block(const LaunchSimulator& sim) {
  std::vector<std::uint64_t> blocks(sim.blocks());
  std::iota(blocks.begin(), blocks.end(), 0);
  return blocks;
}

class ExecutedCheck : public ::testing::TestWithParam<Broadcast> {
 protected:
  Module twin_module(const std::string& source) {
    const Instrumented twin = instrument_ok(source, InstrumentOptions{GetParam(), {}});
    auto module = parse_module(twin.ptx);
    EXPECT_TRUE(module) << module.error().message;
    return std::move(module).value();
  }
};

TEST_P(ExecutedCheck, KilledBlocksResumeExactlyOnce) {
  const Module module = twin_module(read_text(testing::source_dir() / "golden/mixed_module.ptx"));
  // A 3D grid with a block count that is not a multiple of 32, and 3D blocks of threads.
  LaunchSimulator sim(twin_entry(module, "blocks_3d"), {5, 3, 3}, {2, 2, 2});
  sim.point_flag_at_kill_word();
  const std::vector<std::uint64_t> first = sim.launch(true, 17);
  EXPECT_EQ(first.size(), 17u);
  EXPECT_EQ(sim.killed(), 1u);
  for (std::uint64_t block = 0; block < sim.blocks(); ++block)
    EXPECT_EQ(sim.done_bit(block), block < 17);

  // Still killed: nothing more runs.
  sim.reset_killed();
  EXPECT_TRUE(sim.launch(true).empty());
  EXPECT_EQ(sim.killed(), 1u);

  // Cleared: the relaunch runs exactly the blocks that never started.
  sim.set_kill(0);
  sim.reset_killed();
  const std::vector<std::uint64_t> second = sim.launch(true);
  EXPECT_EQ(sim.killed(), 0u);
  EXPECT_EQ(together(first, second), every_block(sim));

  // A third launch with the same record runs nothing: every block already ran.
  EXPECT_TRUE(sim.launch(true).empty());
  EXPECT_EQ(sim.killed(), 0u);
}

// The shim's second launch is a resume: a kill raised while it runs must not leave blocks behind.
TEST_P(ExecutedCheck, AResumeLaunchRunsTheRestWhateverTheKillWord) {
  const Module module = twin_module(read_text(testing::source_dir() / "golden/mixed_module.ptx"));
  LaunchSimulator sim(twin_entry(module, "blocks_3d"), {5, 3, 3}, {2, 2, 2});
  sim.point_flag_at_kill_word();
  const std::vector<std::uint64_t> first = sim.launch(true, 9);
  ASSERT_EQ(first.size(), 9u);
  sim.reset_killed();
  // The word is still raised, and is raised again at the resume's first block: it runs the rest.
  const std::vector<std::uint64_t> second = sim.launch(true, 0, /*resume=*/true);
  EXPECT_EQ(sim.killed(), 0u);
  EXPECT_EQ(together(first, second), every_block(sim));
  for (std::uint64_t block = 0; block < sim.blocks(); ++block) EXPECT_TRUE(sim.done_bit(block));
  // Every block ran: another resume runs nothing.
  EXPECT_TRUE(sim.launch(true, -1, true).empty());
}

TEST_P(ExecutedCheck, KillBeforeAnyBlockAndUntrackedLaunches) {
  const Module module = twin_module(read_text(testing::source_dir() / "golden/vector_add.ptx"));
  LaunchSimulator sim(twin_entry(module, "vector_add"), {70, 1, 1}, {4, 1, 1});
  // The flag pointer is 0 until the shim sets it: never killed, even with the kill word set.
  sim.set_kill(1);
  EXPECT_EQ(sim.launch(true).size(), 70u);
  EXPECT_EQ(sim.killed(), 0u);

  LaunchSimulator fresh(twin_entry(module, "vector_add"), {70, 1, 1}, {4, 1, 1});
  fresh.point_flag_at_kill_word();
  fresh.set_kill(1);
  EXPECT_TRUE(fresh.launch(true).empty());
  EXPECT_EQ(fresh.killed(), 1u);
  for (std::uint64_t block = 0; block < fresh.blocks(); ++block)
    EXPECT_FALSE(fresh.done_bit(block));
  // An untracked launch (record pointer 0) always runs and writes nothing.
  EXPECT_EQ(fresh.launch(false).size(), 70u);
  for (std::uint64_t block = 0; block < fresh.blocks(); ++block)
    EXPECT_FALSE(fresh.done_bit(block));
  fresh.set_kill(0);
  fresh.reset_killed();
  EXPECT_EQ(fresh.launch(true).size(), 70u);
  EXPECT_EQ(fresh.killed(), 0u);
}

TEST_P(ExecutedCheck, TritonKernelFromTheCorpus) {
  const Module module =
      twin_module(read_text(testing::source_dir() / "corpus/triton/add_kernel.ptx"));
  LaunchSimulator sim(twin_entry(module, "add_kernel"), {40, 1, 1}, {128, 1, 1});
  sim.point_flag_at_kill_word();
  EXPECT_EQ(sim.launch(true, 33).size(), 33u);
  sim.set_kill(0);
  sim.reset_killed();
  EXPECT_EQ(sim.launch(true).size(), 7u);
}

INSTANTIATE_TEST_SUITE_P(Broadcasts, ExecutedCheck,
                         ::testing::Values(Broadcast::barrier_reduction, Broadcast::shared_word),
                         [](const auto& param_info) {
                           return param_info.param == Broadcast::shared_word
                                      ? std::string("SharedWord")
                                      : std::string("BarrierReduction");
                         });

}  // namespace
}  // namespace sluice::ptx
