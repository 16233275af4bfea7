// Kill-instrumented twins (docs/architecture.md, "Contract: kill instrumentation") run on the
// fake as on the GPU: blocks check the kill word at entry, record what ran in the launch record,
// and a relaunch with the same record runs exactly the blocks that never started.
#include <bit>
#include <chrono>
#include <thread>

#include "support.h"

namespace sluice::fake::testing {
namespace {

constexpr const char* kTwin = R"(.version 8.0
.target sm_90
.address_size 64
.visible .global .align 8 .u64 __sluice_kill_flag;
.visible .entry sluice_spin_twin(
	.param .u64 sluice_spin_twin_param_0,
	.param .u64 __sluice_launch
)
{
	ret;
}
)";

class KillTest : public FakeDriverTest {
 protected:
  void SetUp() override {
    FakeDriverTest::SetUp();
    ASSERT_CU_OK(cuModuleLoadData(&twin_module_, kTwin));
    ASSERT_CU_OK(cuModuleGetFunction(&twin_, twin_module_, "sluice_spin_twin"));
    kill_word_ = zeroed_buffer(4);
    CUdeviceptr flag = 0;
    std::size_t bytes = 0;
    ASSERT_CU_OK(cuModuleGetGlobal_v2(&flag, &bytes, twin_module_, "__sluice_kill_flag"));
    ASSERT_EQ(8u, bytes);
    ASSERT_CU_OK(cuMemcpyHtoD_v2(flag, &kill_word_, sizeof(kill_word_)));  // the shim's one-time setup
    ASSERT_CU_OK(cuStreamCreate(&stream_, CU_STREAM_NON_BLOCKING));
    ASSERT_CU_OK(cuStreamCreate(&daemon_, CU_STREAM_NON_BLOCKING));
  }
  void TearDown() override {
    cuStreamDestroy_v2(stream_);
    cuStreamDestroy_v2(daemon_);
    cuModuleUnload(twin_module_);
    FakeDriverTest::TearDown();
  }

  CUresult launch_twin(std::uint64_t ns_per_block, unsigned blocks, CUdeviceptr record) {
    void* params[] = {&ns_per_block, &record};
    return cuLaunchKernel(twin_, blocks, 1, 1, 128, 1, 1, 0, stream_, params, nullptr);
  }

  // {killed, blocks whose done bit is set}
  std::pair<std::uint32_t, unsigned> read_record(CUdeviceptr record, unsigned blocks) {
    std::vector<std::uint32_t> words(2 + (blocks + 31) / 32);
    EXPECT_CU_OK(cuMemcpyDtoH_v2(words.data(), record, words.size() * 4));
    unsigned done = 0;
    for (std::size_t i = 2; i < words.size(); ++i) done += static_cast<unsigned>(std::popcount(words[i]));
    return {words[0], done};
  }

  std::uint64_t last_duration() {
    auto records = trace();
    for (auto it = records.rbegin(); it != records.rend(); ++it) {
      if (it->kind == SLUICE_FAKE_OP_KERNEL) return it->end_ns - it->start_ns;
    }
    return 0;
  }

  CUmodule twin_module_ = nullptr;
  CUfunction twin_ = nullptr;
  CUdeviceptr kill_word_ = 0;
  CUstream stream_ = nullptr;
  CUstream daemon_ = nullptr;
};

TEST_F(KillTest, AnUnkilledGridRunsEveryBlockOnceAndRecordsIt) {
  constexpr unsigned kBlocks = 300;  // three waves on 132 SMs
  CUdeviceptr record = zeroed_buffer(8 + 4 * 10);
  ASSERT_CU_OK(launch_twin(100'000, kBlocks, record));
  ASSERT_CU_OK(cuStreamSynchronize(stream_));
  EXPECT_EQ(std::make_pair(0u, kBlocks), read_record(record, kBlocks));
  EXPECT_EQ(300'000u, last_duration());
  // Relaunching a finished grid with its record runs nothing.
  ASSERT_CU_OK(launch_twin(100'000, kBlocks, record));
  ASSERT_CU_OK(cuStreamSynchronize(stream_));
  EXPECT_EQ(0u, last_duration());
  // An untracked launch (record 0) always runs.
  ASSERT_CU_OK(launch_twin(100'000, kBlocks, 0));
  ASSERT_CU_OK(cuStreamSynchronize(stream_));
  EXPECT_EQ(300'000u, last_duration());
}

TEST_F(KillTest, AKillStopsNewBlocksAndTheRelaunchRunsOnlyTheRest) {
  constexpr unsigned kBlocks = 132 * 20;  // 20 waves of 5 ms
  constexpr std::uint64_t kWaveNs = 5'000'000;
  CUdeviceptr record = zeroed_buffer(8 + 4 * (kBlocks / 32 + 1));
  ASSERT_CU_OK(launch_twin(kWaveNs, kBlocks, record));
  std::this_thread::sleep_for(std::chrono::milliseconds(12));
  // What sluiced does: write the kill word from its own stream.
  ASSERT_CU_OK(cuStreamWriteValue32(daemon_, kill_word_, 1, 0));
  ASSERT_CU_OK(cuStreamSynchronize(stream_));
  const auto [killed, ran] = read_record(record, kBlocks);
  EXPECT_EQ(1u, killed);
  EXPECT_GT(ran, 0u);
  EXPECT_LT(ran, kBlocks);
  EXPECT_EQ(0u, ran % 132);  // whole waves
  const std::uint64_t first = last_duration();
  EXPECT_EQ(ran / 132 * kWaveNs, first);

  ASSERT_CU_OK(cuStreamWriteValue32(daemon_, kill_word_, 0, 0));
  ASSERT_CU_OK(cuStreamSynchronize(daemon_));
  ASSERT_CU_OK(launch_twin(kWaveNs, kBlocks, record));
  ASSERT_CU_OK(cuStreamSynchronize(stream_));
  EXPECT_EQ(kBlocks, read_record(record, kBlocks).second);
  EXPECT_EQ(20 * kWaveNs, first + last_duration());  // each block ran exactly once in all
}

TEST_F(KillTest, AGridLaunchedWhileKilledRunsNothing) {
  ASSERT_CU_OK(cuMemsetD32_v2(kill_word_, 7, 1));
  ASSERT_CU_OK(cuCtxSynchronize());  // the memset runs on the legacy stream, unordered with stream_
  CUdeviceptr record = zeroed_buffer(16);
  ASSERT_CU_OK(launch_twin(1'000'000, 40, record));
  ASSERT_CU_OK(cuStreamSynchronize(stream_));
  EXPECT_EQ(std::make_pair(1u, 0u), read_record(record, 40));
  EXPECT_EQ(0u, last_duration());
}

}  // namespace
}  // namespace sluice::fake::testing
