// cuGetProcAddress through libsluice.so when the driver answers with addresses that are not its
// exported symbols: the shim picks its own wrapper from the table, unless the driver exports an
// ABI variant newer than the table knows, in which case it hands out the driver's answer (and
// counts the name as unknown) rather than a wrapper with the wrong prototype.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "sluice/shim/cuda.h"

namespace {

TEST(ProcAddressFallback, TableAnswersAndNewerDriverVariantsPassThrough) {
  setenv("SLUICE_REAL_LIBCUDA", SLUICE_ODD_DRIVER, 1);
  setenv("SLUICE_GATE", "open", 1);
  void* shim = dlopen(SLUICE_SHIM, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(shim, nullptr) << dlerror();
  auto get_proc =
      reinterpret_cast<decltype(&cuGetProcAddress_v2)>(dlsym(shim, "cuGetProcAddress_v2"));
  ASSERT_NE(get_proc, nullptr);

  void* fn = nullptr;
  CUdriverProcAddressQueryResult status{};
  ASSERT_EQ(get_proc("cuLaunchKernel", &fn, 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
                     &status),
            CUDA_SUCCESS);
  EXPECT_EQ(status, CU_GET_PROC_ADDRESS_SUCCESS);
  EXPECT_EQ(fn, dlsym(shim, "cuLaunchKernel_ptsz"));
  ASSERT_EQ(get_proc("cuLaunchKernel", &fn, 12000, CU_GET_PROC_ADDRESS_DEFAULT, &status),
            CUDA_SUCCESS);
  EXPECT_EQ(fn, dlsym(shim, "cuLaunchKernel"));

  // The driver has cuMemAlloc_v3, which this build's table does not: its own answer goes back.
  ASSERT_EQ(get_proc("cuMemAlloc", &fn, 13000, 0, &status), CUDA_SUCCESS);
  ASSERT_NE(fn, nullptr);
  EXPECT_NE(fn, dlsym(shim, "cuMemAlloc_v2"));
  void* odd = dlopen(SLUICE_ODD_DRIVER, RTLD_NOW | RTLD_NOLOAD);
  ASSERT_NE(odd, nullptr);
  Dl_info info{};
  ASSERT_NE(dladdr(fn, &info), 0);
  EXPECT_EQ(info.dli_fbase, [&] {
    Dl_info odd_info{};
    dladdr(dlsym(odd, "cuInit"), &odd_info);
    return odd_info.dli_fbase;
  }());

  // Graphics interop entry points (cudaGL.h, cudaEGL.h, cudaVDPAU.h) are in the table: the shim's own
  // forwarder goes back, and it reaches the driver.
  ASSERT_EQ(get_proc("cuGLUnregisterBufferObject", &fn, 13000, 0, &status), CUDA_SUCCESS);
  EXPECT_EQ(fn, dlsym(shim, "cuGLUnregisterBufferObject"));
  ASSERT_NE(fn, nullptr);
  EXPECT_EQ(reinterpret_cast<CUresult (*)(unsigned)>(fn)(7), CUDA_SUCCESS);

  // Names the driver does not have come back as the driver says.
  fn = reinterpret_cast<void*>(1);
  EXPECT_EQ(get_proc("cuNoSuchThing", &fn, 13000, 0, &status), CUDA_ERROR_NOT_FOUND);
  EXPECT_EQ(fn, nullptr);
  EXPECT_EQ(status, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
}

}  // namespace
