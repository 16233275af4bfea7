// The generated driver table: symbol names, variants, and cuGetProcAddress's choice of variant.
#include <gtest/gtest.h>

#include "sluice/shim/driver_api.h"

namespace sluice::shim {
namespace {

Sym lookup(std::string_view base, int version, bool per_thread) {
  Sym sym{};
  CUdriverProcAddressQueryResult status{};
  EXPECT_TRUE(find_proc(base, version, per_thread, sym, status)) << base << " " << version;
  EXPECT_EQ(status, CU_GET_PROC_ADDRESS_SUCCESS);
  return sym;
}

TEST(ProcTable, NamesVariantsAsTheDriverDoes) {
  EXPECT_EQ(sym_name(lookup("cuLaunchKernel", 12000, false)), std::string_view("cuLaunchKernel"));
  EXPECT_EQ(sym_name(lookup("cuLaunchKernel", 12000, true)),
            std::string_view("cuLaunchKernel_ptsz"));
  EXPECT_EQ(sym_name(lookup("cuMemAlloc", 2000, false)), std::string_view("cuMemAlloc"));
  EXPECT_EQ(sym_name(lookup("cuMemAlloc", 12000, true)), std::string_view("cuMemAlloc_v2"));
  EXPECT_EQ(sym_name(lookup("cuMemcpyHtoD", 12000, true)),
            std::string_view("cuMemcpyHtoD_v2_ptds"));
  EXPECT_EQ(sym_name(lookup("cuMemcpyHtoD", 12000, false)), std::string_view("cuMemcpyHtoD_v2"));
  EXPECT_EQ(sym_name(lookup("cuCtxSynchronize", 12080, false)),
            std::string_view("cuCtxSynchronize"));
  EXPECT_EQ(sym_name(lookup("cuCtxSynchronize", 13000, true)),
            std::string_view("cuCtxSynchronize_v2"));
  EXPECT_EQ(sym_name(lookup("cuStreamBatchMemOp", 12000, true)),
            std::string_view("cuStreamBatchMemOp_v2_ptsz"));
  EXPECT_EQ(sym_name(lookup("cuGetProcAddress", 11030, false)),
            std::string_view("cuGetProcAddress"));
  EXPECT_EQ(sym_name(lookup("cuGetProcAddress", 12000, false)),
            std::string_view("cuGetProcAddress_v2"));
}

TEST(ProcTable, SaysWhyThereIsNoAnswer) {
  Sym sym{};
  CUdriverProcAddressQueryResult status{};
  EXPECT_FALSE(find_proc("cuNoSuchFunction", 13000, false, sym, status));
  EXPECT_EQ(status, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
  EXPECT_FALSE(find_proc("cuLaunchKernelEx", 11000, false, sym, status));
  EXPECT_EQ(status, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
}

// Every row answers for itself at its own version.
TEST(ProcTable, EveryRowIsTheAnswerAtItsOwnVersion) {
  std::size_t rows = 0;
  for (std::size_t i = 0; i < kSymCount; ++i) {
    const Sym s = static_cast<Sym>(i);
    for (const ProcRow& row : proc_rows(sym_base(s))) {
      if (row.sym != s) continue;
      ++rows;
      Sym found{};
      CUdriverProcAddressQueryResult status{};
      ASSERT_TRUE(find_proc(row.base, row.version, row.per_thread, found, status)) << row.base;
      EXPECT_EQ(sym_name(found), sym_name(s))
          << row.base << " " << row.version << " " << row.per_thread;
    }
  }
  EXPECT_GT(rows, 500u);
}

TEST(DriverApi, BaseNamesAndPerThreadVariants) {
  Sym sym{};
  ASSERT_TRUE(find_sym("cuMemcpyHtoDAsync_v2_ptsz", sym));
  EXPECT_EQ(sym_base(sym), "cuMemcpyHtoDAsync");
  EXPECT_TRUE(sym_per_thread(sym));
  ASSERT_TRUE(find_sym("cuMemAlloc_v2", sym));
  EXPECT_EQ(sym_base(sym), "cuMemAlloc");
  EXPECT_FALSE(sym_per_thread(sym));
  ASSERT_TRUE(find_sym("cuMemcpy3DPeer_ptds", sym));
  EXPECT_EQ(sym_base(sym), "cuMemcpy3DPeer");
  EXPECT_FALSE(find_sym("cuNotAFunction", sym));
  EXPECT_EQ(kSymTreatments[static_cast<std::size_t>(Sym::cuMemsetD8Async)], Treatment::QUEUE);
  EXPECT_EQ(kSymTreatments[static_cast<std::size_t>(Sym::cuLaunchKernel)], Treatment::HOOK);
  EXPECT_EQ(kSymTreatments[static_cast<std::size_t>(Sym::cuMemcpyHtoD_v2)], Treatment::SYNC);
  EXPECT_EQ(kSymTreatments[static_cast<std::size_t>(Sym::cuDeviceGet)], Treatment::FORWARD);
}

// The graphics interop headers are part of the table: every name libcudart asks for at startup.
TEST(ProcTable, AnswersGraphicsInteropEntryPoints) {
  Sym sym{};
  CUdriverProcAddressQueryResult status{};
  for (const char* name :
       {"cuGLUnregisterBufferObject", "cuGraphicsGLRegisterBuffer", "cuGraphicsEGLRegisterImage",
        "cuEGLStreamConsumerConnect", "cuEventCreateFromEGLSync", "cuVDPAUGetDevice",
        "cuGraphicsVDPAURegisterVideoSurface", "cuGLGetDevices", "cuGLCtxCreate"}) {
    EXPECT_TRUE(find_proc(name, 13000, false, sym, status)) << name;
  }
  ASSERT_TRUE(find_proc("cuGLMapBufferObjectAsync", 13000, true, sym, status));
  EXPECT_STREQ(sym_name(sym), "cuGLMapBufferObjectAsync_v2_ptsz");
  ASSERT_TRUE(find_proc("cuGLGetDevices", 13000, false, sym, status));
  EXPECT_STREQ(sym_name(sym), "cuGLGetDevices_v2");
  // Stream-ordered interop calls wait for the held work of their stream; they are not launches.
  for (Sym ordered : {Sym::cuGLMapBufferObjectAsync_v2_ptsz, Sym::cuGLUnmapBufferObjectAsync,
                      Sym::cuGraphicsUnmapResources, Sym::cuGraphicsMapResources_ptsz}) {
    EXPECT_EQ(kSymTreatments[static_cast<std::size_t>(ordered)], Treatment::ORDERED)
        << sym_name(ordered);
  }
  EXPECT_EQ(kSymTreatments[static_cast<std::size_t>(Sym::cuEGLStreamConsumerReleaseFrame)],
            Treatment::SYNC);
  EXPECT_FALSE(find_proc("cuWGLGetDevice", 13000, false, sym, status));
}

}  // namespace
}  // namespace sluice::shim
