// Devices, their attributes, primary and ordinary contexts, the current-context stack.
#include <cstring>
#include <thread>

#include "support.h"

namespace sluice::fake::testing {
namespace {

TEST(Device, LooksLikeAnH100) {
  ASSERT_CU_OK(cuInit(0));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuInit(1));
  int count = 0;
  ASSERT_CU_OK(cuDeviceGetCount(&count));
  EXPECT_EQ(1, count);
  CUdevice device = -1;
  ASSERT_CU_OK(cuDeviceGet(&device, 0));
  EXPECT_CU(CUDA_ERROR_INVALID_DEVICE, cuDeviceGet(&device, 1));
  int major = 0;
  int minor = 0;
  int sms = 0;
  ASSERT_CU_OK(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0));
  ASSERT_CU_OK(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 0));
  ASSERT_CU_OK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 0));
  EXPECT_EQ(9, major);
  EXPECT_EQ(0, minor);
  EXPECT_EQ(132, sms);
  int value = 0;
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuDeviceGetAttribute(&value, CU_DEVICE_ATTRIBUTE_MAX, 0));
  char name[128] = {};
  ASSERT_CU_OK(cuDeviceGetName(name, sizeof(name), 0));
  EXPECT_NE(nullptr, std::strstr(name, "H100"));
  CUuuid first{};
  CUuuid second{};
  ASSERT_CU_OK(cuDeviceGetUuid_v2(&first, 0));
  ASSERT_CU_OK(cuDeviceGetUuid(&second, 0));
  EXPECT_EQ(0, std::memcmp(first.bytes, second.bytes, sizeof(first.bytes)));
  char bus_id[32] = {};
  ASSERT_CU_OK(cuDeviceGetPCIBusId(bus_id, sizeof(bus_id), 0));
  CUdevice by_bus = -1;
  ASSERT_CU_OK(cuDeviceGetByPCIBusId(&by_bus, bus_id));
  EXPECT_EQ(0, by_bus);
  std::size_t memory = 0;
  ASSERT_CU_OK(cuDeviceTotalMem_v2(&memory, 0));
  EXPECT_EQ(80ull << 30, memory);
  int version = 0;
  ASSERT_CU_OK(cuDriverGetVersion(&version));
  EXPECT_EQ(13000, version);
}

TEST(Context, PrimaryContextIsRetainedReleasedAndReset) {
  ASSERT_CU_OK(cuInit(0));
  unsigned flags = 1;
  int active = 1;
  ASSERT_CU_OK(cuDevicePrimaryCtxGetState(0, &flags, &active));
  EXPECT_EQ(0, active);
  ASSERT_CU_OK(cuDevicePrimaryCtxSetFlags_v2(0, CU_CTX_SCHED_BLOCKING_SYNC));
  CUcontext a = nullptr;
  CUcontext b = nullptr;
  ASSERT_CU_OK(cuDevicePrimaryCtxRetain(&a, 0));
  ASSERT_CU_OK(cuDevicePrimaryCtxRetain(&b, 0));
  EXPECT_EQ(a, b);
  ASSERT_CU_OK(cuDevicePrimaryCtxGetState(0, &flags, &active));
  EXPECT_EQ(1, active);
  EXPECT_EQ(static_cast<unsigned>(CU_CTX_SCHED_BLOCKING_SYNC), flags);
  ASSERT_CU_OK(cuCtxSetCurrent(a));
  CUdeviceptr memory = 0;
  ASSERT_CU_OK(cuMemAlloc_v2(&memory, 64));
  // A reset frees everything but leaves the retained context usable.
  ASSERT_CU_OK(cuDevicePrimaryCtxReset_v2(0));
  unsigned type = 0;
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, memory));
  ASSERT_CU_OK(cuMemAlloc_v2(&memory, 64));
  ASSERT_CU_OK(cuDevicePrimaryCtxRelease_v2(0));
  ASSERT_CU_OK(cuDevicePrimaryCtxGetState(0, &flags, &active));
  EXPECT_EQ(1, active);  // one reference left
  ASSERT_CU_OK(cuDevicePrimaryCtxRelease_v2(0));
  ASSERT_CU_OK(cuDevicePrimaryCtxGetState(0, &flags, &active));
  EXPECT_EQ(0, active);
  EXPECT_CU(CUDA_ERROR_INVALID_CONTEXT, cuDevicePrimaryCtxRelease_v2(0));
  EXPECT_CU(CUDA_ERROR_INVALID_CONTEXT, cuMemAlloc_v2(&memory, 64));  // still current, but inactive
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, memory));
  ASSERT_CU_OK(cuCtxSetCurrent(nullptr));
}

TEST(Context, EachThreadHasItsOwnStackOfCurrentContexts) {
  ASSERT_CU_OK(cuInit(0));
  CUcontext current = reinterpret_cast<CUcontext>(1);
  ASSERT_CU_OK(cuCtxGetCurrent(&current));
  EXPECT_EQ(nullptr, current);
  CUdevice device = -1;
  EXPECT_CU(CUDA_ERROR_INVALID_CONTEXT, cuCtxGetDevice(&device));
  CUstream stream = nullptr;
  EXPECT_CU(CUDA_ERROR_INVALID_CONTEXT, cuStreamCreate(&stream, 0));

  CUcontext first = nullptr;
  CUcontext second = nullptr;
  ASSERT_CU_OK(cuCtxCreate_v2(&first, 0, 0));  // made current
  ASSERT_CU_OK(cuCtxCreate_v4(&second, nullptr, 0, 0));
  ASSERT_CU_OK(cuCtxGetCurrent(&current));
  EXPECT_EQ(second, current);
  unsigned long long first_id = 0;
  unsigned long long second_id = 0;
  ASSERT_CU_OK(cuCtxGetId(first, &first_id));
  ASSERT_CU_OK(cuCtxGetId(second, &second_id));
  EXPECT_NE(first_id, second_id);
  std::thread other([&] {
    CUcontext seen = reinterpret_cast<CUcontext>(1);
    EXPECT_CU_OK(cuCtxGetCurrent(&seen));
    EXPECT_EQ(nullptr, seen);
    EXPECT_CU_OK(cuCtxPushCurrent_v2(first));
    EXPECT_CU_OK(cuCtxGetCurrent(&seen));
    EXPECT_EQ(first, seen);
  });
  other.join();
  CUcontext popped = nullptr;
  ASSERT_CU_OK(cuCtxPopCurrent_v2(&popped));
  EXPECT_EQ(second, popped);
  ASSERT_CU_OK(cuCtxGetCurrent(&current));
  EXPECT_EQ(first, current);
  ASSERT_CU_OK(cuCtxGetDevice(&device));
  EXPECT_EQ(0, device);
  ASSERT_CU_OK(cuCtxDestroy_v2(second));
  EXPECT_CU(CUDA_ERROR_INVALID_CONTEXT, cuCtxPushCurrent_v2(second));
  ASSERT_CU_OK(cuCtxDestroy_v2(first));
  ASSERT_CU_OK(cuCtxGetCurrent(&current));
  EXPECT_EQ(nullptr, current);  // destroying the current context pops it
}

TEST(Context, LimitsAndConfiguration) {
  ASSERT_CU_OK(cuInit(0));
  CUcontext ctx = nullptr;
  ASSERT_CU_OK(cuCtxCreate_v2(&ctx, 0, 0));
  std::size_t stack = 0;
  ASSERT_CU_OK(cuCtxGetLimit(&stack, CU_LIMIT_STACK_SIZE));
  EXPECT_EQ(1024u, stack);
  ASSERT_CU_OK(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 4096));
  ASSERT_CU_OK(cuCtxGetLimit(&stack, CU_LIMIT_STACK_SIZE));
  EXPECT_EQ(4096u, stack);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuCtxSetLimit(CU_LIMIT_MAX, 1));
  ASSERT_CU_OK(cuCtxSetCacheConfig(CU_FUNC_CACHE_PREFER_L1));
  CUfunc_cache cache = CU_FUNC_CACHE_PREFER_NONE;
  ASSERT_CU_OK(cuCtxGetCacheConfig(&cache));
  EXPECT_EQ(CU_FUNC_CACHE_PREFER_L1, cache);
  ASSERT_CU_OK(cuCtxSynchronize_v2(ctx));
  ASSERT_CU_OK(cuCtxDestroy_v2(ctx));
}

TEST(Context, DestroyingAContextWaitsForItsWorkAndFreesWhatItOwns) {
  ASSERT_CU_OK(cuInit(0));
  CUcontext ctx = nullptr;
  ASSERT_CU_OK(cuCtxCreate_v2(&ctx, 0, 0));
  CUmodule module = nullptr;
  ASSERT_CU_OK(cuModuleLoadData(&module, kTestModule));
  CUfunction spin = nullptr;
  ASSERT_CU_OK(cuModuleGetFunction(&spin, module, "spin"));
  CUstream stream = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  CUevent event = nullptr;
  ASSERT_CU_OK(cuEventCreate(&event, CU_EVENT_DEFAULT));
  CUdeviceptr memory = 0;
  ASSERT_CU_OK(cuMemAlloc_v2(&memory, 256));
  std::uint64_t ns = 5'000'000;
  std::uint32_t tag = 1;
  void* params[] = {&ns, &tag};
  ASSERT_CU_OK(cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, stream, params, nullptr));
  ASSERT_CU_OK(cuEventRecord(event, stream));
  ASSERT_CU_OK(cuCtxDestroy_v2(ctx));  // waits for the 5 ms grid
  EXPECT_EQ(0, sluice_fake_wait_idle(1'000'000));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, cuEventQuery(event));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, cuStreamQuery(stream));
  unsigned type = 0;
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, memory));
}

}  // namespace
}  // namespace sluice::fake::testing
