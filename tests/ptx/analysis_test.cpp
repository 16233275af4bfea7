// Skip rules: which kernels may be killed block by block, and the reason given for the others.
#include "sluice/ptx/analysis.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "test_support.h"

namespace sluice::ptx {
namespace {

std::map<std::string, KernelAnalysis> analyze_text(std::string_view text,
                                                   const AnalysisOptions& options = {}) {
  auto module = parse_module(text);
  EXPECT_TRUE(module) << module.error().message;
  std::map<std::string, KernelAnalysis> by_name;
  if (!module) return by_name;
  for (KernelAnalysis& analysis : analyze_module(*module, options)) {
    by_name.emplace(analysis.name, std::move(analysis));
  }
  return by_name;
}

std::map<std::string, KernelAnalysis> analyze_generated(const std::string& name,
                                                        const AnalysisOptions& options = {}) {
  return analyze_text(testing::read_text(testing::generated_dir() / (name + ".ptx")), options);
}

std::set<std::string> codes(const KernelAnalysis& analysis) {
  std::set<std::string> out;
  for (const SkipReason& reason : analysis.reasons) out.insert(reason.code);
  return out;
}

std::string describe(const KernelAnalysis& analysis) {
  std::string text;
  for (const SkipReason& reason : analysis.reasons) {
    text += reason.code + ": " + reason.message + " (line " + std::to_string(reason.line) + ")\n";
  }
  return text;
}

// Expected verdicts of the kernels nvcc compiled from tests/ptx/cuda/*.cu: the reason codes, or
// none for a killable kernel.
const std::map<std::string, std::map<std::string, std::set<std::string>>>& expected_verdicts() {
  static const std::map<std::string, std::map<std::string, std::set<std::string>>> verdicts = {
      {"kernels",
       {{"grid_1d", {}},
        {"grid_2d", {}},
        {"grid_3d", {}},
        {"dynamic_smem_reverse", {}},
        {"static_smem_sum", {}},
        {"atomic_reduce", {}},
        {"grid_stride", {}},
        {"with_printf_assert", {}},
        {"struct_param", {}},
        {"reads_initialized_data", {}},
        {"reads_constant_memory", {"module-data"}},
        {"writes_counter", {"module-data"}},
        {"bumps_initialized", {"module-data"}},
        {"reads_bumped", {"module-data"}},
        {"waits_in_callee", {"communicating"}}}},
      {"cooperative", {{"cooperative_grid_sum", {"cooperative", "communicating"}}}},
      {"communicating",
       {{"spin_on_volatile", {"communicating"}},
        {"spin_on_acquire", {"communicating"}},
        {"last_block_done", {"communicating"}},
        {"work_queue", {"communicating"}},
        {"spin_lock", {"communicating"}},
        {"sleepy_wait", {"communicating"}}}},
      {"cluster",
       {{"cluster_exchange", {"cluster"}},
        {"cluster_declared_only", {"cluster"}},
        {"reads_cluster_rank", {"cluster"}},
        {"plain_on_sm90", {}}}},
      {"relocatable", {{"calls_extern", {"extern-function"}}, {"self_contained", {}}}},
  };
  return verdicts;
}

TEST(SkipRules, GeneratedKernelsGetTheExpectedVerdicts) {
  SLUICE_REQUIRE_GENERATED();
  for (const auto& [module, kernels] : expected_verdicts()) {
    const auto analyses = analyze_generated(module);
    ASSERT_EQ(analyses.size(), kernels.size()) << module;
    for (const auto& [kernel, expected] : kernels) {
      ASSERT_TRUE(analyses.contains(kernel)) << module << ": no kernel " << kernel;
      const KernelAnalysis& analysis = analyses.at(kernel);
      EXPECT_EQ(codes(analysis), expected) << module << "." << kernel << ":\n"
                                           << describe(analysis);
      for (const SkipReason& reason : analysis.reasons) {
        EXPECT_FALSE(reason.message.empty());
        EXPECT_GT(reason.line, 0) << reason.message;
      }
    }
  }
}

TEST(SkipRules, ReasonsNameWhatTheyFound) {
  SLUICE_REQUIRE_GENERATED();
  const auto kernels = analyze_generated("kernels");
  EXPECT_NE(describe(kernels.at("waits_in_callee")).find("(in _Z8wait_forPVi)"), std::string::npos);
  EXPECT_NE(describe(kernels.at("reads_constant_memory")).find("coefficients has no initializer"),
            std::string::npos);
  EXPECT_NE(describe(kernels.at("reads_bumped")).find("written_after_init is written"),
            std::string::npos);
  const auto cluster = analyze_generated("cluster");
  const std::string exchange = describe(cluster.at("cluster_exchange"));
  for (const char* what : {".reqnctapercluster", "barrier.cluster", "mapa", "%cluster_ctarank"}) {
    EXPECT_NE(exchange.find(what), std::string::npos) << what << " in\n" << exchange;
  }
  const auto cooperative = analyze_generated("cooperative");
  EXPECT_NE(describe(cooperative.at("cooperative_grid_sum")).find("%envreg"), std::string::npos);
  const auto communicating = analyze_generated("communicating");
  EXPECT_NE(describe(communicating.at("spin_on_volatile")).find("ld.volatile.global"),
            std::string::npos);
  EXPECT_NE(describe(communicating.at("spin_on_acquire")).find("ld.acquire.gpu"),
            std::string::npos);
  EXPECT_NE(describe(communicating.at("work_queue")).find("result of an atom"), std::string::npos);
}

TEST(SkipRules, NotesAndModuleData) {
  SLUICE_REQUIRE_GENERATED();
  const auto kernels = analyze_generated("kernels");
  const KernelAnalysis& grid_stride = kernels.at("grid_stride");
  ASSERT_EQ(grid_stride.notes.size(), 1u);
  EXPECT_NE(grid_stride.notes[0].find("grid-stride"), std::string::npos);
  EXPECT_TRUE(kernels.at("grid_1d").notes.empty());
  const KernelAnalysis& reads = kernels.at("reads_initialized_data");
  EXPECT_EQ(std::set<std::string>(reads.module_data.begin(), reads.module_data.end()),
            (std::set<std::string>{"lookup_table", "scale_factor"}));
  EXPECT_TRUE(reads.mirror.empty());
}

TEST(SkipRules, UninitializedReadsCanBeMirrored) {
  SLUICE_REQUIRE_GENERATED();
  const auto kernels =
      analyze_generated("kernels", AnalysisOptions{.allow_uninitialized_reads = true});
  const KernelAnalysis& constants = kernels.at("reads_constant_memory");
  EXPECT_TRUE(constants.killable()) << describe(constants);
  EXPECT_EQ(constants.mirror, std::vector<std::string>{"coefficients"});
  // Data a kernel writes cannot be mirrored either way.
  EXPECT_FALSE(kernels.at("writes_counter").killable());
  EXPECT_FALSE(kernels.at("reads_bumped").killable());
}

TEST(SkipRules, TritonCorpusIsKillable) {
  // Every corpus kernel is an ordinary data-parallel kernel; atomic_kernel's atom result is unused.
  for (const auto& path : testing::triton_corpus()) {
    const auto kernels = analyze_text(testing::read_text(path));
    ASSERT_EQ(kernels.size(), 1u) << path;
    for (const auto& [name, analysis] : kernels) {
      EXPECT_TRUE(analysis.killable()) << path.filename() << ": " << describe(analysis);
    }
  }
}

constexpr std::string_view kHeader80 = ".version 8.0\n.target sm_80\n.address_size 64\n";

std::string module80(std::string_view body) {
  return std::string(kHeader80) + std::string(body);
}

TEST(SkipRules, AddressSize32) {
  const auto kernels =
      analyze_text(".version 8.0\n.target sm_80\n.address_size 32\n.entry k()\n{\nret;\n}\n");
  EXPECT_EQ(codes(kernels.at("k")), std::set<std::string>{"address-size"});
}

TEST(SkipRules, ParameterSpaceLimits) {
  auto verdict = [](std::string_view version, std::string_view target, int bytes) {
    const std::string text = fmt::format(
        ".version {}\n.target {}\n.address_size 64\n.entry k(.param .align 8 .b8 "
        "p[{}])\n{{\nret;\n}}\n",
        version, target, bytes);
    return analyze_text(text).at("k").killable();
  };
  EXPECT_TRUE(verdict("8.0", "sm_80", 4088));   // 4088 + 8 = 4096
  EXPECT_FALSE(verdict("8.0", "sm_80", 4090));  // padded to 4096, + 8
  EXPECT_TRUE(verdict("8.1", "sm_80", 4090));   // PTX 8.1 on sm_70+: 32764 bytes
  EXPECT_FALSE(verdict("8.1", "sm_60", 4090));
  EXPECT_TRUE(verdict("8.7", "sm_90a", 32752));
  EXPECT_FALSE(verdict("8.7", "sm_90a", 32760));
}

TEST(SkipRules, ReservedPrefixMeansAlreadyInstrumented) {
  const auto kernels = analyze_text(
      module80(".visible .global .align 8 .u64 __sluice_kill_flag = 0;\n.entry k()\n{\nret;\n}\n"));
  EXPECT_EQ(codes(kernels.at("k")), std::set<std::string>{"reserved-name"});
}

TEST(SkipRules, ModuleDataTheTwinCannotMirror) {
  const auto kernels = analyze_text(module80(R"(
.extern .global .align 4 .u32 defined_elsewhere;
.global .attribute(.managed) .align 4 .u32 managed_value = 1;
.global .texref tex;
.global .align 4 .u32 unused_uninitialized;
.shared .align 4 .u32 per_block;
.entry uses_extern(.param .u64 out)
{
  .reg .b32 %r<2>;
  ld.global.u32 %r1, [defined_elsewhere];
  ret;
}
.entry uses_managed()
{
  .reg .b32 %r<2>;
  ld.global.u32 %r1, [managed_value];
  ret;
}
.entry uses_texture()
{
  .reg .b64 %rd<2>;
  mov.u64 %rd1, tex;
  ret;
}
.entry uses_shared_only()
{
  .reg .b32 %r<2>;
  st.shared.u32 [per_block], %r1;
  ret;
}
)"));
  EXPECT_NE(describe(kernels.at("uses_extern")).find("is .extern"), std::string::npos);
  EXPECT_NE(describe(kernels.at("uses_managed")).find("managed"), std::string::npos);
  EXPECT_NE(describe(kernels.at("uses_texture")).find("bound by the host"), std::string::npos);
  EXPECT_TRUE(kernels.at("uses_shared_only").killable())
      << describe(kernels.at("uses_shared_only"));
}

TEST(SkipRules, AtomResultsThatOnlyFlowIntoData) {
  const auto kernels = analyze_text(module80(R"(
.entry fetch_add_store(.param .u64 counter, .param .u64 out)
{
  .reg .b32 %r<3>;
  .reg .b64 %rd<3>;
  ld.param.u64 %rd1, [counter];
  ld.param.u64 %rd2, [out];
  atom.global.add.u32 %r1, [%rd1], 1;
  add.s32 %r2, %r1, 5;
  st.global.u32 [%rd2], %r2;
  ret;
}
.entry fetch_add_branch(.param .u64 counter)
{
  .reg .pred %p<2>;
  .reg .b32 %r<3>;
  .reg .b64 %rd<2>;
  ld.param.u64 %rd1, [counter];
  atom.global.add.u32 %r1, [%rd1], 1;
  add.s32 %r2, %r1, 5;
  setp.eq.u32 %p1, %r2, 9;
  @%p1 st.global.u32 [%rd1], %r2;
  ret;
}
)"));
  EXPECT_TRUE(kernels.at("fetch_add_store").killable()) << describe(kernels.at("fetch_add_store"));
  EXPECT_EQ(codes(kernels.at("fetch_add_branch")), std::set<std::string>{"communicating"});
}

TEST(SkipRules, IndirectCallsReachEveryFunction) {
  const auto kernels = analyze_text(module80(R"(
.func spin(.param .b64 flag)
{
  .reg .pred %p<2>;
  .reg .b32 %r<2>;
  .reg .b64 %rd<2>;
  ld.param.u64 %rd1, [flag];
$L_wait:
  ld.volatile.global.u32 %r1, [%rd1];
  setp.eq.u32 %p1, %r1, 0;
  @%p1 bra $L_wait;
  ret;
}
.entry calls_through_pointer(.param .u64 fn)
{
  .reg .b64 %rd<2>;
  ld.param.u64 %rd1, [fn];
  {
    .param .b64 arg;
    st.param.b64 [arg], %rd1;
    prototype_0 : .callprototype ()_ (.param .b64 _);
    call %rd1, (arg), prototype_0;
  }
  ret;
}
.entry no_calls()
{
  ret;
}
)"));
  EXPECT_EQ(codes(kernels.at("calls_through_pointer")), std::set<std::string>{"communicating"});
  EXPECT_NE(describe(kernels.at("calls_through_pointer")).find("(in spin)"), std::string::npos);
  EXPECT_TRUE(kernels.at("no_calls").killable());
}

TEST(SkipRules, MultimemAndEntriesWithoutBodies) {
  const auto kernels = analyze_text(module80(R"(
.extern .entry declared_only(.param .u64 p);
.entry multicast(.param .u64 p)
{
  .reg .b32 %r<2>;
  .reg .b64 %rd<2>;
  ld.param.u64 %rd1, [p];
  multimem.ld_reduce.relaxed.sys.global.add.u32 %r1, [%rd1];
  ret;
}
)"));
  EXPECT_EQ(codes(kernels.at("declared_only")), std::set<std::string>{"no-body"});
  EXPECT_EQ(codes(kernels.at("multicast")), std::set<std::string>{"communicating"});
}

TEST(SkipRules, SharedMemoryPollingIsNotCommunication) {
  // A block waiting on its own shared memory (mbarrier-style) does not depend on other blocks.
  const auto kernels = analyze_text(module80(R"(
.entry polls_shared()
{
  .reg .pred %p<2>;
  .reg .b32 %r<2>;
  .shared .align 4 .u32 flag;
$L_wait:
  ld.volatile.shared.u32 %r1, [flag];
  setp.eq.u32 %p1, %r1, 0;
  @%p1 bra $L_wait;
  ret;
}
.entry volatile_outside_loop(.param .u64 p)
{
  .reg .b32 %r<2>;
  .reg .b64 %rd<2>;
  ld.param.u64 %rd1, [p];
  ld.volatile.global.u32 %r1, [%rd1];
  ret;
}
)"));
  EXPECT_TRUE(kernels.at("polls_shared").killable()) << describe(kernels.at("polls_shared"));
  EXPECT_TRUE(kernels.at("volatile_outside_loop").killable());
}

}  // namespace
}  // namespace sluice::ptx
