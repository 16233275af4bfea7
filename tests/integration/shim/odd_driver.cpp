// A stand-in driver whose cuGetProcAddress answers with internal functions rather than its
// exported symbols (as a real driver may), and which exports an ABI variant newer than sluice's
// table knows (cuMemAlloc_v3) and a graphics interop entry point (cuGLUnregisterBufferObject). shim_proc_fallback_test loads libsluice.so over it.
#include <cstdint>
#include <cstring>

#include "sluice/shim/cuda.h"

namespace {
CUresult internal_launch(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                         unsigned, CUstream, void**, void**) {
  return CUDA_SUCCESS;
}
CUresult internal_alloc(CUdeviceptr* p, std::size_t) {
  *p = 0x1000;
  return CUDA_SUCCESS;
}
CUresult internal_unregister(unsigned) {
  return CUDA_SUCCESS;
}
}  // namespace

extern "C" {
__attribute__((visibility("default"))) CUresult cuInit(unsigned int) {
  return CUDA_SUCCESS;
}
__attribute__((visibility("default"))) CUresult cuLaunchKernel(
    CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
    unsigned shared, CUstream s, void** params, void** extra) {
  return internal_launch(f, gx, gy, gz, bx, by, bz, shared, s, params, extra);
}
__attribute__((visibility("default"))) CUresult cuLaunchKernel_ptsz(
    CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
    unsigned shared, CUstream s, void** params, void** extra) {
  return internal_launch(f, gx, gy, gz, bx, by, bz, shared, s, params, extra);
}
__attribute__((visibility("default"))) CUresult cuMemAlloc_v2(CUdeviceptr* p, std::size_t bytes) {
  return internal_alloc(p, bytes);
}
__attribute__((visibility("default"))) CUresult cuMemAlloc_v3(CUdeviceptr* p, std::size_t bytes) {
  return internal_alloc(p, bytes);
}
// An OpenGL interop entry point (cudaGL.h): the shim's table knows it too.
__attribute__((visibility("default"))) CUresult cuGLUnregisterBufferObject(unsigned buffer) {
  return internal_unregister(buffer);
}
__attribute__((visibility("default"))) CUresult cuGetProcAddress_v2(
    const char* symbol, void** pfn, int, cuuint64_t, CUdriverProcAddressQueryResult* status) {
  void* found = nullptr;
  if (std::strcmp(symbol, "cuLaunchKernel") == 0) found = reinterpret_cast<void*>(&internal_launch);
  if (std::strcmp(symbol, "cuMemAlloc") == 0) found = reinterpret_cast<void*>(&internal_alloc);
  if (std::strcmp(symbol, "cuGLUnregisterBufferObject") == 0) {
    found = reinterpret_cast<void*>(&internal_unregister);
  }
  *pfn = found;
  if (status != nullptr) {
    *status = found != nullptr ? CU_GET_PROC_ADDRESS_SUCCESS : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  }
  return found != nullptr ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}
}
