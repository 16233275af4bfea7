// cuGetProcAddress answers from the generated table of the toolkit (proc_table.inc), and every
// answer is the fake's own implementation of the exact ABI variant.
#include <dlfcn.h>

#include <cstring>

#include "support.h"

namespace sluice::fake::testing {
namespace {

void* own(const char* symbol) {
  static void* self = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD);
  return self != nullptr ? dlsym(self, symbol) : nullptr;
}

struct Query {
  const char* name;
  int version;
  cuuint64_t flags;
  const char* expected;  // null: no entry point
  CUdriverProcAddressQueryResult status;
};

TEST(ProcAddress, MapsNameVersionAndFlagsToTheExactVariant) {
  ASSERT_CU_OK(cuInit(0));
  constexpr cuuint64_t kLegacy = CU_GET_PROC_ADDRESS_LEGACY_STREAM;
  constexpr cuuint64_t kPerThread = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
  const Query queries[] = {
      {"cuMemAlloc", 13000, 0, "cuMemAlloc_v2", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuMemAlloc", 2000, 0, nullptr, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND},  // the 32-bit ABI: not implemented
      {"cuLaunchKernel", 12000, 0, "cuLaunchKernel", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuLaunchKernel", 12000, kLegacy, "cuLaunchKernel", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuLaunchKernel", 12000, kPerThread, "cuLaunchKernel_ptsz", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuLaunchKernel", 6000, kPerThread, "cuLaunchKernel", CU_GET_PROC_ADDRESS_SUCCESS},  // before per-thread streams
      {"cuMemcpyHtoD", 13000, kPerThread, "cuMemcpyHtoD_v2_ptds", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuMemcpyHtoD", 13000, 0, "cuMemcpyHtoD_v2", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuMemcpyHtoDAsync", 13000, kPerThread, "cuMemcpyHtoDAsync_v2_ptsz", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuStreamBeginCapture", 10000, 0, "cuStreamBeginCapture", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuStreamBeginCapture", 12000, kPerThread, "cuStreamBeginCapture_v2_ptsz", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuStreamGetCaptureInfo", 13000, 0, "cuStreamGetCaptureInfo_v3", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuStreamGetCaptureInfo", 11030, kPerThread, "cuStreamGetCaptureInfo_v2_ptsz", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuStreamWaitValue32", 12000, kPerThread, "cuStreamWaitValue32_v2_ptsz", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuCtxSynchronize", 13000, 0, "cuCtxSynchronize_v2", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuDevicePrimaryCtxRelease", 7000, 0, "cuDevicePrimaryCtxRelease", CU_GET_PROC_ADDRESS_SUCCESS},  // libcudart 13 asks so
      {"cuDevicePrimaryCtxRelease", 11000, 0, "cuDevicePrimaryCtxRelease_v2", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuCtxSynchronize", 12080, kPerThread, "cuCtxSynchronize", CU_GET_PROC_ADDRESS_SUCCESS},  // no per-thread variant
      {"cuEventElapsedTime", 12080, 0, "cuEventElapsedTime_v2", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuGetProcAddress", 12000, 0, "cuGetProcAddress_v2", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuGraphLaunch", 12000, kPerThread, "cuGraphLaunch_ptsz", CU_GET_PROC_ADDRESS_SUCCESS},
      {"cuLaunchKernelEx", 11050, 0, nullptr, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT},
      {"cuNoSuchFunction", 13000, 0, nullptr, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND},
  };
  for (const Query& q : queries) {
    void* pfn = reinterpret_cast<void*>(1);
    CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SUCCESS;
    CUresult result = cuGetProcAddress_v2(q.name, &pfn, q.version, q.flags, &status);
    EXPECT_EQ(q.status, status) << q.name << " " << q.version << " " << q.flags;
    if (q.expected == nullptr) {
      // Too old a version is no error, only a null pointer (cuda.h; the real driver on the H200).
      const CUresult none = q.status == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
      EXPECT_EQ(none, result) << q.name;
      EXPECT_EQ(nullptr, pfn) << q.name;
    } else {
      EXPECT_EQ(CUDA_SUCCESS, result) << q.name;
      EXPECT_NE(nullptr, own(q.expected)) << q.expected;
      EXPECT_EQ(own(q.expected), pfn) << q.name << " " << q.version << " " << q.flags << " should be " << q.expected;
    }
  }
}

TEST(ProcAddress, TheFirstAbiHasNoStatusAndBadArgumentsAreRefused) {
  void* pfn = nullptr;
  ASSERT_CU_OK(cuGetProcAddress("cuMemFree", &pfn, 12000, 0));
  EXPECT_EQ(own("cuMemFree_v2"), pfn);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuGetProcAddress_v2("cuMemFree", &pfn, 12000, 4, nullptr));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuGetProcAddress_v2(nullptr, &pfn, 12000, 0, nullptr));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuGetProcAddress_v2("cuMemFree", nullptr, 12000, 0, nullptr));
}

TEST(ProcAddress, AnswersBeforeCuInitAndTheAnswerWorks) {
  void* pfn = nullptr;
  ASSERT_CU_OK(cuGetProcAddress_v2("cuDriverGetVersion", &pfn, 13000, 0, nullptr));
  int version = 0;
  ASSERT_CU_OK(reinterpret_cast<CUresult (*)(int*)>(pfn)(&version));
  EXPECT_EQ(13000, version);
  const char* name = nullptr;
  ASSERT_CU_OK(cuGetErrorName(CUDA_ERROR_STREAM_CAPTURE_IMPLICIT, &name));
  EXPECT_STREQ("CUDA_ERROR_STREAM_CAPTURE_IMPLICIT", name);
  const char* text = nullptr;
  ASSERT_CU_OK(cuGetErrorString(CUDA_ERROR_OUT_OF_MEMORY, &text));
  EXPECT_NE(nullptr, std::strstr(text, "memory"));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuGetErrorName(static_cast<CUresult>(998), &name));
  EXPECT_EQ(nullptr, name);
}

TEST(ProcAddress, ExportsOnlyDriverAndControlSymbols) {
  // Every export of the fake is a driver entry point of cuda.h or the control API.
  Dl_info info{};
  ASSERT_NE(0, dladdr(own("cuInit"), &info));
  EXPECT_EQ(nullptr, own("_ZN6sluice4fake6driverEv"));  // sluice::fake::driver() stays local
  EXPECT_NE(nullptr, own("sluice_fake_trace_read"));
  EXPECT_EQ(nullptr, own("cuMemcpyAtoH_v2"));  // not implemented: absent, not a stub
}

}  // namespace
}  // namespace sluice::fake::testing
