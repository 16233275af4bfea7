// A forked child starts with a fresh driver: the parent's threads do not exist in it, its handles
// are invalid there, and cuInit gives the child a working device of its own. (Not in the tsan
// tier: ThreadSanitizer refuses to let a child of a multi-threaded process start threads.)
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "support.h"

namespace sluice::fake::testing {
namespace {

class ForkTest : public FakeDriverTest {};

// Runs in the child; returns the number of failed checks (the exit status).
int child_checks(CUstream parent_stream, CUfunction parent_append) {
  int failures = 0;
  int line = 0;
  auto check = [&](bool ok) {
    ++line;
    if (!ok) std::fprintf(stderr, "child check %d failed\n", line);
    failures += ok ? 0 : 1;
  };
  check(cuStreamQuery(parent_stream) == CUDA_ERROR_NOT_INITIALIZED);
  check(cuInit(0) == CUDA_SUCCESS);
  check(cuStreamQuery(parent_stream) == CUDA_ERROR_INVALID_HANDLE);  // the parent's handles mean nothing here
  CUcontext ctx = nullptr;
  check(cuDevicePrimaryCtxRetain(&ctx, 0) == CUDA_SUCCESS);
  check(cuCtxSetCurrent(ctx) == CUDA_SUCCESS);
  check(cuStreamQuery(parent_stream) == CUDA_ERROR_INVALID_HANDLE);
  check(cuLaunchKernel(parent_append, 1, 1, 1, 1, 1, 1, 0, nullptr, nullptr, nullptr) == CUDA_ERROR_INVALID_HANDLE);
  CUmodule module = nullptr;
  CUfunction append = nullptr;
  check(cuModuleLoadData(&module, kTestModule) == CUDA_SUCCESS);
  check(cuModuleGetFunction(&append, module, "append") == CUDA_SUCCESS);
  CUdeviceptr log = 0;
  check(cuMemAlloc_v2(&log, 64) == CUDA_SUCCESS);
  check(cuMemsetD32_v2(log, 0, 16) == CUDA_SUCCESS);
  std::uint32_t tag = 77;
  void* params[] = {&log, &tag};
  check(cuLaunchKernel(append, 1, 1, 1, 1, 1, 1, 0, nullptr, params, nullptr) == CUDA_SUCCESS);
  std::uint32_t host[2] = {};
  check(cuMemcpyDtoH_v2(host, log, sizeof(host)) == CUDA_SUCCESS);
  check(host[0] == 1 && host[1] == 77);
  return failures;
}

TEST_F(ForkTest, AChildStartsWithAFreshDriver) {
  CUstream stream = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  CUdeviceptr log = zeroed_buffer(64);
  ASSERT_CU_OK(spin(stream, 20'000'000, 0));  // the executor is busy while we fork
  ASSERT_CU_OK(append(stream, log, 1));
  CUfunction parent_append = function("append");
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(child_checks(stream, parent_append));
  int status = 0;
  ASSERT_EQ(child, waitpid(child, &status, 0));
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(0, WEXITSTATUS(status)) << "failed checks in the child";
  // The parent's work is unaffected.
  ASSERT_CU_OK(cuStreamSynchronize(stream));
  EXPECT_EQ((std::vector<std::uint32_t>{1}), read_log(log));
  ASSERT_CU_OK(cuStreamDestroy_v2(stream));
}

}  // namespace
}  // namespace sluice::fake::testing
