// Memory: pointer attributes of every kind of memory (pageable host memory included), copies and
// memsets of linear memory, their host synchronization, frees, pools.
#include <cstdlib>
#include <cstring>
#include <thread>

#include "support.h"

namespace sluice::fake::testing {
namespace {

class MemoryTest : public FakeDriverTest {};

unsigned memory_type(CUdeviceptr pointer) {
  unsigned type = 0;
  EXPECT_CU_OK(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, pointer));
  return type;
}

TEST_F(MemoryTest, PointerAttributesTellPinnedFromPageableMemory) {
  CUdeviceptr device = 0;
  ASSERT_CU_OK(cuMemAlloc_v2(&device, 1000));
  void* pinned = nullptr;
  ASSERT_CU_OK(cuMemHostAlloc(&pinned, 256, CU_MEMHOSTALLOC_DEVICEMAP));
  CUdeviceptr managed = 0;
  ASSERT_CU_OK(cuMemAllocManaged(&managed, 64, CU_MEM_ATTACH_GLOBAL));
  std::vector<char> pageable(4096);
  alignas(4096) static char registered[8192];

  EXPECT_EQ(static_cast<unsigned>(CU_MEMORYTYPE_DEVICE), memory_type(device + 999));
  EXPECT_EQ(static_cast<unsigned>(CU_MEMORYTYPE_HOST), memory_type(reinterpret_cast<CUdeviceptr>(pinned)));
  EXPECT_EQ(static_cast<unsigned>(CU_MEMORYTYPE_DEVICE), memory_type(managed));
  bool is_managed = false;
  ASSERT_CU_OK(cuPointerGetAttribute(&is_managed, CU_POINTER_ATTRIBUTE_IS_MANAGED, managed));
  EXPECT_TRUE(is_managed);
  CUcontext owner = nullptr;
  ASSERT_CU_OK(cuPointerGetAttribute(&owner, CU_POINTER_ATTRIBUTE_CONTEXT, device));
  EXPECT_EQ(ctx_, owner);
  CUdeviceptr start = 0;
  std::size_t size = 0;
  ASSERT_CU_OK(cuPointerGetAttribute(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, device + 10));
  ASSERT_CU_OK(cuPointerGetAttribute(&size, CU_POINTER_ATTRIBUTE_RANGE_SIZE, device + 10));
  EXPECT_EQ(device, start);
  EXPECT_EQ(1000u, size);
  void* host_view = nullptr;
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuPointerGetAttribute(&host_view, CU_POINTER_ATTRIBUTE_HOST_POINTER, device));
  unsigned past_end = 0;
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuPointerGetAttribute(&past_end, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, device + 1000));

  // Pageable memory is no CUDA pointer: cuPointerGetAttribute fails, cuPointerGetAttributes
  // succeeds with zeros.
  const auto pageable_ptr = reinterpret_cast<CUdeviceptr>(pageable.data());
  unsigned type = 77;
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, pageable_ptr));
  CUpointer_attribute attributes[] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_CONTEXT};
  void* data[] = {&type, &owner};
  ASSERT_CU_OK(cuPointerGetAttributes(2, attributes, data, pageable_ptr));
  EXPECT_EQ(0u, type);
  EXPECT_EQ(nullptr, owner);

  // Registering makes it pinned until it is unregistered.
  ASSERT_CU_OK(cuMemHostRegister_v2(registered, sizeof(registered), CU_MEMHOSTREGISTER_DEVICEMAP));
  EXPECT_CU(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, cuMemHostRegister_v2(registered + 4096, 16, 0));
  EXPECT_EQ(static_cast<unsigned>(CU_MEMORYTYPE_HOST), memory_type(reinterpret_cast<CUdeviceptr>(registered + 100)));
  CUdeviceptr mapped = 0;
  ASSERT_CU_OK(cuMemHostGetDevicePointer_v2(&mapped, registered, 0));
  EXPECT_EQ(reinterpret_cast<CUdeviceptr>(registered), mapped);
  ASSERT_CU_OK(cuMemHostUnregister(registered));
  EXPECT_CU(CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED, cuMemHostUnregister(registered));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                                                            reinterpret_cast<CUdeviceptr>(registered)));
  unsigned flags = 0;
  ASSERT_CU_OK(cuMemHostGetFlags(&flags, pinned));
  EXPECT_EQ(static_cast<unsigned>(CU_MEMHOSTALLOC_DEVICEMAP), flags);

  ASSERT_CU_OK(cuMemFree_v2(device));
  ASSERT_CU_OK(cuMemFree_v2(managed));
  ASSERT_CU_OK(cuMemFreeHost(pinned));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuMemFree_v2(device));
}

TEST_F(MemoryTest, AsyncCopiesFromPageableMemoryReadTheSourceWhenCalled) {
  CUstream stream = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  std::uint32_t* flag = nullptr;
  ASSERT_CU_OK(cuMemAllocHost_v2(reinterpret_cast<void**>(&flag), 4));
  *flag = 0;
  CUdeviceptr device = zeroed_buffer(64);
  std::vector<std::uint32_t> pageable(16, 5);
  std::uint32_t* pinned = nullptr;
  ASSERT_CU_OK(cuMemAllocHost_v2(reinterpret_cast<void**>(&pinned), 64));
  std::fill(pinned, pinned + 16, 6u);

  ASSERT_CU_OK(cuStreamWaitValue32(stream, reinterpret_cast<CUdeviceptr>(flag), 1, CU_STREAM_WAIT_VALUE_EQ));
  ASSERT_CU_OK(cuMemcpyHtoDAsync_v2(device, pageable.data(), 64, stream));   // staged now
  ASSERT_CU_OK(cuMemcpyHtoDAsync_v2(device + 32, pinned + 8, 32, stream));   // read when it runs
  std::fill(pageable.begin(), pageable.end(), 0u);
  std::fill(pinned, pinned + 16, 8u);
  __atomic_store_n(flag, 1u, __ATOMIC_SEQ_CST);
  ASSERT_CU_OK(cuStreamSynchronize(stream));
  std::uint32_t host[16] = {};
  ASSERT_CU_OK(cuMemcpyDtoH_v2(host, device, 64));
  EXPECT_EQ(5u, host[0]);
  EXPECT_EQ(5u, host[7]);
  EXPECT_EQ(8u, host[8]);
  EXPECT_EQ(8u, host[15]);
  ASSERT_CU_OK(cuStreamDestroy_v2(stream));
  ASSERT_CU_OK(cuMemFreeHost(flag));
  ASSERT_CU_OK(cuMemFreeHost(pinned));
}

TEST_F(MemoryTest, AsyncCopiesToPageableMemoryReturnWhenDone) {
  CUstream stream = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  CUdeviceptr device = zeroed_buffer(64);
  std::uint32_t value = 3;
  std::uint32_t count = 16;
  ASSERT_CU_OK(spin(stream, 2'000'000, 0));
  ASSERT_CU_OK(launch("fill", stream, {&device, &value, &count}));
  std::vector<std::uint32_t> pageable(16, 0);
  ASSERT_CU_OK(cuMemcpyDtoHAsync_v2(pageable.data(), device, 64, stream));
  EXPECT_EQ(3u, pageable[15]);  // no synchronize needed
  std::uint32_t* pinned = nullptr;
  ASSERT_CU_OK(cuMemAllocHost_v2(reinterpret_cast<void**>(&pinned), 64));
  pinned[0] = 0;
  ASSERT_CU_OK(spin(stream, 2'000'000, 0));
  ASSERT_CU_OK(cuMemcpyDtoHAsync_v2(pinned, device, 64, stream));
  EXPECT_CU(CUDA_ERROR_NOT_READY, cuStreamQuery(stream));  // to pinned memory: asynchronous
  ASSERT_CU_OK(cuStreamSynchronize(stream));
  EXPECT_EQ(3u, pinned[0]);
  ASSERT_CU_OK(cuMemFreeHost(pinned));
  ASSERT_CU_OK(cuStreamDestroy_v2(stream));
}

TEST_F(MemoryTest, StridedCopiesAndMemsets) {
  constexpr std::size_t kWidth = 12;
  constexpr std::size_t kHeight = 3;
  CUdeviceptr pitched = 0;
  std::size_t pitch = 0;
  ASSERT_CU_OK(cuMemAllocPitch_v2(&pitched, &pitch, kWidth, kHeight, 4));
  EXPECT_EQ(512u, pitch);
  ASSERT_CU_OK(cuMemsetD2D32_v2(pitched, pitch, 0xabababab, pitch / 4, kHeight));
  ASSERT_CU_OK(cuMemsetD2D8_v2(pitched, pitch, 0x11, kWidth, kHeight));
  char source[kHeight][kWidth];
  for (std::size_t y = 0; y < kHeight; ++y) {
    for (std::size_t x = 0; x < kWidth; ++x) source[y][x] = static_cast<char>(y * 16 + x);
  }
  CUDA_MEMCPY2D up{};
  up.srcMemoryType = CU_MEMORYTYPE_HOST;
  up.srcHost = source;
  up.srcPitch = kWidth;
  up.srcXInBytes = 4;
  up.dstMemoryType = CU_MEMORYTYPE_DEVICE;
  up.dstDevice = pitched;
  up.dstPitch = pitch;
  up.dstXInBytes = 4;
  up.WidthInBytes = kWidth - 4;
  up.Height = kHeight;
  ASSERT_CU_OK(cuMemcpy2D_v2(&up));
  std::vector<unsigned char> back(pitch * kHeight);
  ASSERT_CU_OK(cuMemcpyDtoH_v2(back.data(), pitched, back.size()));
  for (std::size_t y = 0; y < kHeight; ++y) {
    EXPECT_EQ(0x11, back[y * pitch + 3]);
    EXPECT_EQ(y * 16 + 4, back[y * pitch + 4]);
    EXPECT_EQ(y * 16 + 11, back[y * pitch + 11]);
    EXPECT_EQ(0xab, back[y * pitch + 12]);  // beyond the row: untouched
  }

  // A 3D copy of two slices of two rows, device to device.
  CUdeviceptr volume = zeroed_buffer(2 * 2 * 8);
  CUDA_MEMCPY3D box{};
  box.srcMemoryType = CU_MEMORYTYPE_DEVICE;
  box.srcDevice = pitched;
  box.srcPitch = pitch;
  box.srcHeight = 1;  // each slice is one row of the source apart
  box.dstMemoryType = CU_MEMORYTYPE_UNIFIED;
  box.dstDevice = volume;
  box.dstPitch = 8;
  box.dstHeight = 2;
  box.WidthInBytes = 8;
  box.Height = 1;
  box.Depth = 2;
  ASSERT_CU_OK(cuMemcpy3D_v2(&box));
  unsigned char out[32] = {};
  ASSERT_CU_OK(cuMemcpyDtoH_v2(out, volume, sizeof(out)));
  EXPECT_EQ(0x11, out[0]);
  EXPECT_EQ(4, out[4]);
  EXPECT_EQ(0, out[8]);     // row 1 of slice 0 is outside the copy
  EXPECT_EQ(16 + 4, out[20]);  // slice 1 starts at 16

  // Arrays are not modelled.
  box.dstMemoryType = CU_MEMORYTYPE_ARRAY;
  EXPECT_CU(CUDA_ERROR_NOT_SUPPORTED, cuMemcpy3D_v2(&box));
  // Out of bounds: the copy runs past the allocation.
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuMemcpyDtoD_v2(volume, pitched, pitch * kHeight));
  std::uint16_t halves[3] = {};
  ASSERT_CU_OK(cuMemsetD16Async(volume + 2, 0xbeef, 3, nullptr));
  ASSERT_CU_OK(cuMemcpyDtoH_v2(halves, volume + 2, sizeof(halves)));
  EXPECT_EQ(0xbeef, halves[2]);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuMemsetD32_v2(volume + 2, 0, 1));  // misaligned
}

TEST_F(MemoryTest, FreeWaitsForSubmittedWorkThatUsesTheMemory) {
  CUstream stream = nullptr;
  ASSERT_CU_OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  CUdeviceptr buffer = zeroed_buffer(64);
  std::uint32_t value = 1;
  std::uint32_t count = 16;
  ASSERT_CU_OK(spin(stream, 2'000'000, 0));
  ASSERT_CU_OK(launch("fill", stream, {&buffer, &value, &count}));
  ASSERT_CU_OK(cuMemFree_v2(buffer));
  EXPECT_CU_OK(cuStreamSynchronize(stream));  // the fill ran before the memory went away
  sluice_fake_counters counters{};
  sluice_fake_counters_get(&counters, sizeof(counters));
  EXPECT_EQ(0u, counters.launches_failed);
  ASSERT_CU_OK(cuStreamDestroy_v2(stream));
}

TEST_F(MemoryTest, MemoryInfoTracksAllocations) {
  std::size_t free_before = 0;
  std::size_t total = 0;
  ASSERT_CU_OK(cuMemGetInfo_v2(&free_before, &total));
  std::size_t device_total = 0;
  ASSERT_CU_OK(cuDeviceTotalMem_v2(&device_total, 0));
  EXPECT_EQ(device_total, total);
  CUdeviceptr big = 0;
  ASSERT_CU_OK(cuMemAlloc_v2(&big, 64 << 20));
  std::size_t free_after = 0;
  ASSERT_CU_OK(cuMemGetInfo_v2(&free_after, &total));
  EXPECT_EQ(free_before - (64 << 20), free_after);
  CUdeviceptr base = 0;
  std::size_t size = 0;
  ASSERT_CU_OK(cuMemGetAddressRange_v2(&base, &size, big + 12345));
  EXPECT_EQ(big, base);
  EXPECT_EQ(64u << 20, size);
  CUdeviceptr impossible = 0;
  EXPECT_CU(CUDA_ERROR_OUT_OF_MEMORY, cuMemAlloc_v2(&impossible, total));
  ASSERT_CU_OK(cuMemFree_v2(big));
  ASSERT_CU_OK(cuMemGetInfo_v2(&free_after, &total));
  EXPECT_EQ(free_before, free_after);
}

TEST_F(MemoryTest, PoolsReportWhatTheyHold) {
  CUmemoryPool pool = nullptr;
  ASSERT_CU_OK(cuDeviceGetDefaultMemPool(&pool, 0));
  cuuint64_t threshold = 1 << 20;
  ASSERT_CU_OK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &threshold));
  threshold = 0;
  ASSERT_CU_OK(cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &threshold));
  EXPECT_EQ(1u << 20, threshold);
  CUdeviceptr block = 0;
  ASSERT_CU_OK(cuMemAllocAsync(&block, 5000, nullptr));
  cuuint64_t used = 0;
  ASSERT_CU_OK(cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &used));
  EXPECT_EQ(5000u, used);
  CUmemoryPool owner = nullptr;
  ASSERT_CU_OK(cuPointerGetAttribute(&owner, CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE, block));
  EXPECT_EQ(pool, owner);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &used));
  ASSERT_CU_OK(cuMemFreeAsync(block, nullptr));
  ASSERT_CU_OK(cuStreamSynchronize(nullptr));
  ASSERT_CU_OK(cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &used));
  EXPECT_EQ(0u, used);
}

}  // namespace
}  // namespace sluice::fake::testing
