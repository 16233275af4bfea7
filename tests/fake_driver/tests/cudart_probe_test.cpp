// How far the toolkit's real libcudart.so.13 gets on the fake driver (README.md, "The real
// libcudart"). The test pins the documented stopping point: if it moves, the README must too.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "sluice/fake/fake_driver.h"

namespace {

TEST(RealCudart, StopsAtThePrivateCudartInterfaceTable) {
  int runtime = 0;
  ASSERT_EQ(cudaSuccess, cudaRuntimeGetVersion(&runtime));
  EXPECT_EQ(13000, runtime / 1000 * 1000);
  int driver = 0;
  ASSERT_EQ(cudaSuccess, cudaDriverGetVersion(&driver));  // answered by the fake's cuDriverGetVersion
  EXPECT_EQ(13000, driver);

  // cudart's initialization: one dlsym for cuGetProcAddress_v2, every entry point through it,
  // cuInit, then cuGetExportTable for its private tables, which the fake does not have.
  int count = -1;
  EXPECT_EQ(cudaErrorSymbolNotFound, cudaGetDeviceCount(&count));
  sluice_fake_counters counters{};
  sluice_fake_counters_get(&counters, sizeof(counters));
  EXPECT_GT(counters.proc_address_queries, 300u);
  EXPECT_EQ(2u, counters.export_table_queries);  // the init-bypass probe, then the cudart interface
  EXPECT_EQ(0, sluice_fake_device_is_shared(0));  // cudart did call cuInit

  void* memory = nullptr;
  EXPECT_NE(cudaSuccess, cudaMalloc(&memory, 64));  // every later call reports the failed init
  EXPECT_EQ(0u, counters.allocations);
}

}  // namespace
