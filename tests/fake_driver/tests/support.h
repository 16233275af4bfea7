// Shared helpers of the fake driver's tests: a fixture with the primary context current and a
// module of builtin kernels loaded, and small launch helpers.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sluice/fake/fake_driver.h"
#include "sluice/shim/cuda.h"

#define EXPECT_CU(expected, expr) EXPECT_EQ((expected), (expr)) << #expr
#define ASSERT_CU_OK(expr) ASSERT_EQ(CUDA_SUCCESS, (expr)) << #expr
#define EXPECT_CU_OK(expr) EXPECT_EQ(CUDA_SUCCESS, (expr)) << #expr

namespace sluice::fake::testing {

// Kernels every test can launch (see README.md for the ops).
inline constexpr const char* kTestModule =
    "# sluice fake module v1\n"
    "kernel noop params=\n"
    "kernel tagged params=8\n"
    "kernel fill params=8,4,4 op=fill_u32\n"
    "kernel affine params=8,4,4,4 op=affine_u32\n"
    "kernel append params=8,4 op=append_u32\n"
    "kernel copy params=8,8,8 op=copy\n"
    "kernel spin params=8,4 op=spin tag=1\n"
    "kernel busy params=4 duration_us=200\n"
    "global counter 64\n";

class FakeDriverTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  CUfunction function(const char* name);

  // Launches on `stream` with one block per grid unless told otherwise.
  CUresult launch(const char* name, CUstream stream, std::vector<void*> params, unsigned blocks = 1);
  CUresult append(CUstream stream, CUdeviceptr log, std::uint32_t tag);
  CUresult spin(CUstream stream, std::uint64_t ns_per_block, std::uint32_t tag, unsigned blocks = 1);

  // The append log (count, then entries) at `log`, copied to the host.
  std::vector<std::uint32_t> read_log(CUdeviceptr log);

  std::vector<sluice_fake_trace_record> trace();

  CUcontext ctx_ = nullptr;
  CUmodule module_ = nullptr;
};

// A device buffer of `bytes` bytes, zeroed.
CUdeviceptr zeroed_buffer(std::size_t bytes);

}  // namespace sluice::fake::testing
