#include "support.h"

namespace sluice::fake::testing {

void FakeDriverTest::SetUp() {
  ASSERT_CU_OK(cuInit(0));
  ASSERT_CU_OK(cuDevicePrimaryCtxRetain(&ctx_, 0));
  ASSERT_CU_OK(cuCtxSetCurrent(ctx_));
  ASSERT_CU_OK(cuModuleLoadData(&module_, kTestModule));
  sluice_fake_reset();
  sluice_fake_trace_enable(1);
}

void FakeDriverTest::TearDown() {
  EXPECT_EQ(0, sluice_fake_wait_idle(10'000'000'000ull));
  sluice_fake_trace_enable(0);
  cuModuleUnload(module_);
  cuDevicePrimaryCtxRelease_v2(0);
}

CUfunction FakeDriverTest::function(const char* name) {
  CUfunction f = nullptr;
  EXPECT_CU_OK(cuModuleGetFunction(&f, module_, name));
  return f;
}

CUresult FakeDriverTest::launch(const char* name, CUstream stream, std::vector<void*> params, unsigned blocks) {
  return cuLaunchKernel(function(name), blocks, 1, 1, 32, 1, 1, 0, stream, params.empty() ? nullptr : params.data(), nullptr);
}

CUresult FakeDriverTest::append(CUstream stream, CUdeviceptr log, std::uint32_t tag) {
  return launch("append", stream, {&log, &tag});
}

CUresult FakeDriverTest::spin(CUstream stream, std::uint64_t ns_per_block, std::uint32_t tag, unsigned blocks) {
  return launch("spin", stream, {&ns_per_block, &tag}, blocks);
}

std::vector<std::uint32_t> FakeDriverTest::read_log(CUdeviceptr log) {
  // A non-blocking stream: reading must not wait for streams a test holds back.
  CUstream reader = nullptr;
  EXPECT_CU_OK(cuStreamCreate(&reader, CU_STREAM_NON_BLOCKING));
  std::uint32_t count = 0;
  EXPECT_CU_OK(cuMemcpyDtoHAsync_v2(&count, log, sizeof(count), reader));
  std::vector<std::uint32_t> entries(count);
  if (count > 0) {
    EXPECT_CU_OK(cuMemcpyDtoHAsync_v2(entries.data(), log + 4, count * sizeof(std::uint32_t), reader));
  }
  EXPECT_CU_OK(cuStreamSynchronize(reader));
  EXPECT_CU_OK(cuStreamDestroy_v2(reader));
  return entries;
}

std::vector<sluice_fake_trace_record> FakeDriverTest::trace() {
  std::vector<sluice_fake_trace_record> records(sluice_fake_trace_count());
  records.resize(sluice_fake_trace_read(records.data(), 0, records.size()));
  return records;
}

CUdeviceptr zeroed_buffer(std::size_t bytes) {
  CUdeviceptr buffer = 0;
  EXPECT_CU_OK(cuMemAlloc_v2(&buffer, bytes));
  EXPECT_CU_OK(cuMemsetD8_v2(buffer, 0, bytes));
  EXPECT_CU_OK(cuCtxSynchronize());
  return buffer;
}

}  // namespace sluice::fake::testing
