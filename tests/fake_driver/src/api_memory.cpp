// Memory: device, pinned, registered and managed allocations, pointer attributes, IPC handles,
// stream-ordered allocation and memory pools.
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "api.h"
#include "capture.h"
#include "executor.h"
#include "sluice/common/log.h"

namespace sluice::fake {
namespace {

constexpr std::size_t kPitchAlignment = 512;

// cuMemAlloc and its kin: device memory of the current context (a potentially unsafe call
// during stream capture).
CUresult allocate_in_current(Driver& drv, std::size_t bytes, MemKind kind, CUdeviceptr* out) {
  if (out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_current(drv, [&](Context& ctx) {
    if (CUresult conflict = check_unsafe_call(drv, nullptr)) return conflict;
    Allocation* allocation = nullptr;
    if (CUresult status = allocate_device(drv, ctx, bytes, kind, allocation)) return status;
    *out = allocation->base;
    return CUDA_SUCCESS;
  });
}

CUresult allocate_host(Driver& drv, std::size_t bytes, unsigned flags, void** out) {
  if (out == nullptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  if (CUresult conflict = check_unsafe_call(drv, nullptr)) return conflict;
  const std::size_t mapped = round_up(bytes, kPageBytes);
  void* memory = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
  Allocation allocation;
  allocation.base = reinterpret_cast<std::uintptr_t>(memory);
  allocation.size = bytes;
  allocation.kind = MemKind::host_pinned;
  allocation.device = ctx->device->ordinal;
  allocation.ctx = ctx;
  allocation.host_flags = flags;
  allocation.buffer_id = drv.memory.next_buffer_id();
  allocation.mapped_bytes = mapped;
  drv.memory.insert(allocation);
  ++drv.counters.allocations;
  *out = memory;
  return CUDA_SUCCESS;
}

// Frees wait for the work already submitted to the allocation's context, as the driver does;
// work the application still holds back (a shim's queue) finds the memory gone.
void wait_before_free(Driver& drv, std::unique_lock<std::mutex>& lock, Allocation& allocation) {
  if (auto* ctx = lookup<Context>(drv, allocation.ctx, HandleKind::context)) wait_for_context(drv, lock, *ctx);
}

template <typename T>
void put(void* data, T value) {
  std::memcpy(data, &value, sizeof(value));
}

CUresult pointer_attribute(Driver& drv, void* data, CUpointer_attribute attribute, CUdeviceptr ptr) {
  Allocation* allocation = drv.memory.find(ptr, 1);
  if (allocation == nullptr || !allocation->live) return CUDA_ERROR_INVALID_VALUE;
  const bool host = allocation->kind == MemKind::host_pinned || allocation->kind == MemKind::host_registered;
  const bool managed = allocation->kind == MemKind::managed;
  switch (attribute) {
    case CU_POINTER_ATTRIBUTE_CONTEXT: put(data, static_cast<CUcontext>(allocation->ctx)); break;
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
      put(data, static_cast<unsigned>(host ? CU_MEMORYTYPE_HOST : CU_MEMORYTYPE_DEVICE));
      break;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER: put(data, static_cast<CUdeviceptr>(ptr)); break;
    case CU_POINTER_ATTRIBUTE_HOST_POINTER:
      if (!host && !managed) return CUDA_ERROR_INVALID_VALUE;
      put(data, reinterpret_cast<void*>(ptr));
      break;
    case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS: put(data, false); break;
    case CU_POINTER_ATTRIBUTE_BUFFER_ID: put(data, static_cast<unsigned long long>(allocation->buffer_id)); break;
    case CU_POINTER_ATTRIBUTE_IS_MANAGED: put(data, managed); break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: put(data, allocation->device); break;
    case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE: put(data, allocation->kind == MemKind::device); break;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: put(data, static_cast<CUdeviceptr>(allocation->base)); break;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE: put(data, allocation->size); break;
    case CU_POINTER_ATTRIBUTE_MAPPED: put(data, true); break;
    case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES: put(data, static_cast<unsigned>(0)); break;
    case CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE: put(data, false); break;
    case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS: put(data, static_cast<unsigned>(CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE)); break;
    case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE: put(data, static_cast<CUmemoryPool>(allocation->pool)); break;
    case CU_POINTER_ATTRIBUTE_MAPPING_SIZE: put(data, allocation->size); break;
    case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR: put(data, reinterpret_cast<void*>(allocation->base)); break;
    case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID: put(data, static_cast<unsigned long long>(allocation->buffer_id)); break;
    case CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE: put(data, false); break;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}

// The zero value cuPointerGetAttributes reports for a pointer the driver does not know.
void default_attribute(void* data, CUpointer_attribute attribute) {
  switch (attribute) {
    case CU_POINTER_ATTRIBUTE_CONTEXT:
    case CU_POINTER_ATTRIBUTE_HOST_POINTER:
    case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
    case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR: put(data, static_cast<void*>(nullptr)); break;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: put(data, CUdeviceptr{0}); break;
    case CU_POINTER_ATTRIBUTE_BUFFER_ID:
    case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID: put(data, 0ull); break;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
    case CU_POINTER_ATTRIBUTE_MAPPING_SIZE: put(data, std::size_t{0}); break;
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
    case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
    case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS: put(data, 0u); break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: put(data, -2); break;
    default: put(data, false); break;
  }
}

enum class PoolAttribute : std::uint8_t { flag, setting, usage, unknown };

PoolAttribute pool_attribute_kind(CUmemPool_attribute attribute) {
  switch (attribute) {
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: return PoolAttribute::flag;
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD:
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH:
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH: return PoolAttribute::setting;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT:
    case CU_MEMPOOL_ATTR_USED_MEM_CURRENT: return PoolAttribute::usage;
    default: return PoolAttribute::unknown;
  }
}

MemPool* pool_of(Driver& drv, CUmemoryPool handle) { return lookup<MemPool>(drv, handle, HandleKind::mem_pool); }

CUresult alloc_async(Driver& drv, CUdeviceptr* dptr, std::size_t bytes, MemPool* pool, Stream& stream) {
  if (dptr == nullptr) return CUDA_ERROR_INVALID_VALUE;
  Allocation* allocation = nullptr;
  if (CUresult status = allocate_device(drv, *stream.ctx, bytes, MemKind::device, allocation)) return status;
  allocation->pool = pool != nullptr ? pool : stream.ctx->device->current_pool;
  *dptr = allocation->base;
  if (stream.capture) {
    // An allocation node: the range belongs to the graph and is live from each launch's
    // allocation node to its free node.
    allocation->graph = stream.capture->graph;
    OpSpec spec;
    spec.name = "mem alloc";
    spec.bytes = bytes;
    spec.work = MarkerWork{allocation->base};
    return capture_append(drv, stream, std::move(spec));
  }
  return CUDA_SUCCESS;
}

CUresult free_async(Driver& drv, CUdeviceptr dptr, Stream& stream) {
  Allocation* allocation = drv.memory.at(dptr);
  if (allocation == nullptr || allocation->kind != MemKind::device) return CUDA_ERROR_INVALID_VALUE;
  OpSpec spec;
  spec.kind = SLUICE_FAKE_OP_MEM_FREE;
  spec.name = "mem free";
  spec.tag = dptr;
  spec.work = MemFreeWork{dptr, allocation->graph != nullptr};
  return submit(drv, stream, std::move(spec));
}

CUresult prefetch(Driver& drv, CUdeviceptr dptr, std::size_t count, Stream& stream) {
  if (classify(drv, dptr, count) != PtrClass::managed) return CUDA_ERROR_INVALID_VALUE;
  OpSpec spec;
  spec.name = "prefetch";
  spec.bytes = count;
  return submit(drv, stream, std::move(spec));
}

}  // namespace
}  // namespace sluice::fake

using namespace sluice::fake;

FAKE_ENTRY(cuMemAlloc_v2, (CUdeviceptr * dptr, size_t bytesize),
           { return allocate_in_current(drv, bytesize, MemKind::device, dptr); })

FAKE_ENTRY(cuMemAllocPitch_v2, (CUdeviceptr * dptr, size_t* pPitch, size_t WidthInBytes, size_t Height, unsigned int ElementSizeBytes), {
  if (pPitch == nullptr || WidthInBytes == 0 || Height == 0) return CUDA_ERROR_INVALID_VALUE;
  if (ElementSizeBytes != 4 && ElementSizeBytes != 8 && ElementSizeBytes != 16) return CUDA_ERROR_INVALID_VALUE;
  const std::size_t pitch = round_up(WidthInBytes, kPitchAlignment);
  CUresult status = allocate_in_current(drv, pitch * Height, MemKind::device, dptr);
  if (status == CUDA_SUCCESS) *pPitch = pitch;
  return status;
})

FAKE_ENTRY(cuMemAllocManaged, (CUdeviceptr * dptr, size_t bytesize, unsigned int flags), {
  if (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST) return CUDA_ERROR_INVALID_VALUE;
  return allocate_in_current(drv, bytesize, MemKind::managed, dptr);
})

FAKE_ENTRY(cuMemFree_v2, (CUdeviceptr dptr), {
  std::unique_lock lock(drv.mu);
  Allocation* allocation = drv.memory.at(dptr);
  if (allocation == nullptr || (allocation->kind != MemKind::device && allocation->kind != MemKind::managed)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (CUresult conflict = check_unsafe_call(drv, nullptr)) return conflict;
  wait_before_free(drv, lock, *allocation);
  if ((allocation = drv.memory.at(dptr)) != nullptr) free_device_allocation(drv, *allocation);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuMemGetInfo_v2, (size_t * free, size_t* total), {
  if (free == nullptr || total == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  const Device& device = *ctx->device;
  const std::uint64_t used = std::min<std::uint64_t>(device.board->memory_used().load(), device.total_memory);
  *total = device.total_memory;
  *free = device.total_memory - used;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuMemGetAddressRange_v2, (CUdeviceptr * pbase, size_t* psize, CUdeviceptr dptr), {
  std::lock_guard lock(drv.mu);
  Allocation* allocation = drv.memory.find(dptr, 1);
  if (allocation == nullptr || allocation->kind == MemKind::host_registered) return CUDA_ERROR_NOT_FOUND;
  if (pbase != nullptr) *pbase = allocation->base;
  if (psize != nullptr) *psize = allocation->size;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuMemAllocHost_v2, (void** pp, size_t bytesize), {
  std::lock_guard lock(drv.mu);
  return allocate_host(drv, bytesize, CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP, pp);
})

FAKE_ENTRY(cuMemHostAlloc, (void** pp, size_t bytesize, unsigned int Flags), {
  constexpr unsigned kValid = CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED;
  if ((Flags & ~kValid) != 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  return allocate_host(drv, bytesize, Flags, pp);
})

FAKE_ENTRY(cuMemFreeHost, (void* p), {
  std::unique_lock lock(drv.mu);
  const auto base = reinterpret_cast<std::uintptr_t>(p);
  Allocation* allocation = drv.memory.at(base);
  if (allocation == nullptr || allocation->kind != MemKind::host_pinned) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult conflict = check_unsafe_call(drv, nullptr)) return conflict;
  wait_before_free(drv, lock, *allocation);
  if ((allocation = drv.memory.at(base)) == nullptr) return CUDA_SUCCESS;
  munmap(p, allocation->mapped_bytes);
  drv.memory.erase(base);
  ++drv.counters.frees;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuMemHostGetDevicePointer_v2, (CUdeviceptr * pdptr, void* p, unsigned int Flags), {
  if (pdptr == nullptr || Flags != 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  PtrClass kind = classify(drv, reinterpret_cast<std::uintptr_t>(p), 1);
  if (kind != PtrClass::host_pinned) return CUDA_ERROR_INVALID_VALUE;
  *pdptr = reinterpret_cast<CUdeviceptr>(p);  // unified addressing: the same address
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuMemHostGetFlags, (unsigned int* pFlags, void* p), {
  if (pFlags == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Allocation* allocation = drv.memory.find(reinterpret_cast<std::uintptr_t>(p), 1);
  if (allocation == nullptr || allocation->kind != MemKind::host_pinned) return CUDA_ERROR_INVALID_VALUE;
  *pFlags = allocation->host_flags;
  return CUDA_SUCCESS;
})

FAKE_ENTRY_TWO_ABIS(cuMemHostRegister_v2, cuMemHostRegister, (void* p, size_t bytesize, unsigned int Flags), {
  constexpr unsigned kValid = CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP | CU_MEMHOSTREGISTER_IOMEMORY |
                              CU_MEMHOSTREGISTER_READ_ONLY;
  if (p == nullptr || bytesize == 0 || (Flags & ~kValid) != 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  if (CUresult conflict = check_unsafe_call(drv, nullptr)) return conflict;
  const auto base = reinterpret_cast<std::uintptr_t>(p);
  if (drv.memory.find(base, 1) != nullptr || drv.memory.find(base + bytesize - 1, 1) != nullptr) {
    return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
  }
  Allocation allocation;
  allocation.base = base;
  allocation.size = bytesize;
  allocation.kind = MemKind::host_registered;
  allocation.device = ctx->device->ordinal;
  allocation.ctx = ctx;
  allocation.host_flags = Flags;
  allocation.buffer_id = drv.memory.next_buffer_id();
  drv.memory.insert(allocation);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuMemHostUnregister, (void* p), {
  std::unique_lock lock(drv.mu);
  const auto base = reinterpret_cast<std::uintptr_t>(p);
  Allocation* allocation = drv.memory.at(base);
  if (allocation == nullptr || allocation->kind != MemKind::host_registered) return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
  if (CUresult conflict = check_unsafe_call(drv, nullptr)) return conflict;
  wait_before_free(drv, lock, *allocation);
  drv.memory.erase(base);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuPointerGetAttribute, (void* data, CUpointer_attribute attribute, CUdeviceptr ptr), {
  if (data == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  return pointer_attribute(drv, data, attribute, ptr);
})

FAKE_ENTRY(cuPointerGetAttributes, (unsigned int numAttributes, CUpointer_attribute* attributes, void** data, CUdeviceptr ptr), {
  if (numAttributes > 0 && (attributes == nullptr || data == nullptr)) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  for (unsigned i = 0; i < numAttributes; ++i) {
    if (data[i] == nullptr) continue;
    // Unlike cuPointerGetAttribute, an unknown pointer is not an error: it reads as zeros.
    if (pointer_attribute(drv, data[i], attributes[i], ptr) != CUDA_SUCCESS) default_attribute(data[i], attributes[i]);
  }
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuPointerSetAttribute, (const void* value, CUpointer_attribute attribute, CUdeviceptr ptr), {
  (void)value;
  std::lock_guard lock(drv.mu);
  if (drv.memory.find(ptr, 1) == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return attribute == CU_POINTER_ATTRIBUTE_SYNC_MEMOPS ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
})

// ---- IPC --------------------------------------------------------------------------------------

FAKE_ENTRY(cuIpcGetMemHandle, (CUipcMemHandle * pHandle, CUdeviceptr dptr), {
  if (pHandle == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Allocation* allocation = drv.memory.at(dptr);
  if (allocation == nullptr || allocation->kind != MemKind::device || !allocation->live) return CUDA_ERROR_INVALID_VALUE;
  Device* device = device_at(drv, allocation->device);
  IpcMemHandle handle{};
  handle.magic = kIpcMagic;
  handle.version = 1;
  handle.pid = static_cast<std::int32_t>(getpid());
  handle.fd = device->arena.fd();
  handle.offset = allocation->arena_offset;
  handle.size = allocation->size;
  handle.buffer_id = allocation->buffer_id;
  handle.owner_start = drv.start_time;
  handle.device = allocation->device;
  static_assert(sizeof(pHandle->reserved) == sizeof(handle));
  std::memcpy(pHandle->reserved, &handle, sizeof(handle));
  return CUDA_SUCCESS;
})

FAKE_ENTRY_TWO_ABIS(cuIpcOpenMemHandle_v2, cuIpcOpenMemHandle, (CUdeviceptr * pdptr, CUipcMemHandle handle, unsigned int Flags), {
  if (pdptr == nullptr || (Flags & ~static_cast<unsigned>(CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS)) != 0) return CUDA_ERROR_INVALID_VALUE;
  IpcMemHandle ipc{};
  std::memcpy(&ipc, handle.reserved, sizeof(ipc));
  if (ipc.magic != kIpcMagic || ipc.version != 1 || ipc.size == 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  if (ipc.pid == static_cast<std::int32_t>(getpid())) return CUDA_ERROR_INVALID_CONTEXT;  // not within one process
  IpcMapping& mapping = drv.ipc_mappings[{ipc.pid, ipc.buffer_id}];
  if (mapping.refs == 0) {
    std::string why;
    mapping.address = map_foreign_range(ipc.pid, ipc.fd, ipc.offset, static_cast<std::size_t>(ipc.size), why);
    if (mapping.address == 0) {
      drv.ipc_mappings.erase({ipc.pid, ipc.buffer_id});
      sluice::log::warn("fake driver: cuIpcOpenMemHandle: {}", why);
      return CUDA_ERROR_INVALID_HANDLE;
    }
    Allocation allocation;
    allocation.base = mapping.address;
    allocation.size = static_cast<std::size_t>(ipc.size);
    allocation.kind = MemKind::ipc_mapped;
    allocation.device = ctx->device->ordinal;
    allocation.ctx = ctx;
    allocation.buffer_id = drv.memory.next_buffer_id();
    allocation.mapped_bytes = round_up(allocation.size, kPageBytes);
    drv.memory.insert(allocation);
  }
  ++mapping.refs;
  *pdptr = mapping.address;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuIpcCloseMemHandle, (CUdeviceptr dptr), {
  std::unique_lock lock(drv.mu);
  Allocation* allocation = drv.memory.at(dptr);
  if (allocation == nullptr || allocation->kind != MemKind::ipc_mapped) return CUDA_ERROR_INVALID_VALUE;
  for (auto it = drv.ipc_mappings.begin(); it != drv.ipc_mappings.end(); ++it) {
    if (it->second.address != dptr) continue;
    if (--it->second.refs == 0) {
      wait_before_free(drv, lock, *allocation);
      allocation = drv.memory.at(dptr);
      munmap(reinterpret_cast<void*>(dptr), allocation->mapped_bytes);
      drv.memory.erase(dptr);
      drv.ipc_mappings.erase(it);
    }
    return CUDA_SUCCESS;
  }
  return CUDA_ERROR_INVALID_VALUE;
})

// ---- stream-ordered allocation and pools ------------------------------------------------------

FAKE_STREAM_ENTRY(cuMemAllocAsync, (CUdeviceptr * dptr, size_t bytesize, CUstream hStream), {
  return api::on_stream(drv, StreamArg{hStream, kZeroStream},
                        [&](Stream& stream, auto&) { return alloc_async(drv, dptr, bytesize, nullptr, stream); });
})

FAKE_STREAM_ENTRY(cuMemAllocFromPoolAsync, (CUdeviceptr * dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream), {
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) {
    MemPool* object = pool_of(drv, pool);
    if (object == nullptr || object->device != stream.ctx->device) return CUDA_ERROR_INVALID_VALUE;
    return alloc_async(drv, dptr, bytesize, object, stream);
  });
})

FAKE_STREAM_ENTRY(cuMemFreeAsync, (CUdeviceptr dptr, CUstream hStream), {
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) { return free_async(drv, dptr, stream); });
})

FAKE_STREAM_ENTRY(cuMemPrefetchAsync, (CUdeviceptr devPtr, size_t count, CUdevice dstDevice, CUstream hStream), {
  (void)dstDevice;
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) { return prefetch(drv, devPtr, count, stream); });
})

FAKE_STREAM_ENTRY(cuMemPrefetchAsync_v2, (CUdeviceptr devPtr, size_t count, CUmemLocation location, unsigned int flags, CUstream hStream), {
  (void)location;
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, StreamArg{hStream, kZeroStream}, [&](Stream& stream, auto&) { return prefetch(drv, devPtr, count, stream); });
})

FAKE_ENTRY(cuMemAdvise, (CUdeviceptr devPtr, size_t count, CUmem_advise advice, CUdevice device), {
  (void)advice;
  (void)device;
  std::lock_guard lock(drv.mu);
  return classify(drv, devPtr, count) == PtrClass::managed ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
})

FAKE_ENTRY(cuMemAdvise_v2, (CUdeviceptr devPtr, size_t count, CUmem_advise advice, CUmemLocation location), {
  (void)advice;
  (void)location;
  std::lock_guard lock(drv.mu);
  return classify(drv, devPtr, count) == PtrClass::managed ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
})

FAKE_ENTRY(cuMemPoolCreate, (CUmemoryPool * pool, const CUmemPoolProps* poolProps), {
  if (pool == nullptr || poolProps == nullptr || poolProps->allocType != CU_MEM_ALLOCATION_TYPE_PINNED) return CUDA_ERROR_INVALID_VALUE;
  if (poolProps->location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_NOT_SUPPORTED;
  std::lock_guard lock(drv.mu);
  Device* device = device_at(drv, poolProps->location.id);
  if (device == nullptr) return CUDA_ERROR_INVALID_DEVICE;
  auto* object = new MemPool();
  object->device = device;
  register_handle(drv, object);
  *pool = to_handle<MemPool, CUmemoryPool>(object);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuMemPoolDestroy, (CUmemoryPool pool), {
  std::lock_guard lock(drv.mu);
  MemPool* object = pool_of(drv, pool);
  if (object == nullptr || object == object->device->default_pool) return CUDA_ERROR_INVALID_VALUE;
  if (object->device->current_pool == object) object->device->current_pool = object->device->default_pool;
  unregister_handle(drv, object);
  delete object;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuMemPoolTrimTo, (CUmemoryPool pool, size_t minBytesToKeep), {
  (void)minBytesToKeep;
  std::lock_guard lock(drv.mu);
  return pool_of(drv, pool) != nullptr ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
})

FAKE_ENTRY(cuMemPoolSetAttribute, (CUmemoryPool pool, CUmemPool_attribute attr, void* value), {
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_object<MemPool>(drv, pool, HandleKind::mem_pool, CUDA_ERROR_INVALID_VALUE, [&](MemPool& object) {
    switch (pool_attribute_kind(attr)) {
      case PoolAttribute::flag:
        object.attributes[attr] = static_cast<std::uint64_t>(*static_cast<int*>(value));
        return CUDA_SUCCESS;
      case PoolAttribute::setting:
        object.attributes[attr] = *static_cast<cuuint64_t*>(value);
        return CUDA_SUCCESS;
      default:
        return CUDA_ERROR_INVALID_VALUE;  // usage counters are read-only
    }
  });
})

FAKE_ENTRY(cuMemPoolGetAttribute, (CUmemoryPool pool, CUmemPool_attribute attr, void* value), {
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_object<MemPool>(drv, pool, HandleKind::mem_pool, CUDA_ERROR_INVALID_VALUE, [&](MemPool& object) {
    auto stored = object.attributes.find(attr);
    switch (pool_attribute_kind(attr)) {
      case PoolAttribute::flag:
        *static_cast<int*>(value) = stored != object.attributes.end() ? static_cast<int>(stored->second) : 1;
        return CUDA_SUCCESS;
      case PoolAttribute::setting:
        *static_cast<cuuint64_t*>(value) = stored != object.attributes.end() ? stored->second : 0;
        return CUDA_SUCCESS;
      case PoolAttribute::usage: {
        cuuint64_t used = 0;
        drv.memory.for_each([&](Allocation& allocation) {
          if (allocation.pool == &object && allocation.live) used += allocation.size;
        });
        *static_cast<cuuint64_t*>(value) = used;
        return CUDA_SUCCESS;
      }
      default:
        return CUDA_ERROR_INVALID_VALUE;
    }
  });
})
