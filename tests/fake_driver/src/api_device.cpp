// Devices, their attributes and their primary contexts. The fake device looks like an H100 SXM
// (compute capability 9.0) with SLUICE_FAKE_SMS SMs and SLUICE_FAKE_MEMORY_MIB of memory.
#include <cstdio>
#include <cstring>

#include "api.h"
#include "capture.h"
#include "executor.h"

namespace sluice::fake {
namespace {

constexpr const char* kDeviceName = "NVIDIA H100 80GB HBM3 (sluice fake)";
constexpr int kPciBusBase = 0x18;

// Attribute values of an H100 SXM; attributes not listed read 0.
int attribute_value(const Device& device, CUdevice_attribute attribute) {
  switch (attribute) {
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: return 1024;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: return 1024;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: return 1024;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: return 64;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: return 2147483647;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: return 65535;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: return 65535;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: return 49152;
    case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: return 65536;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: return 32;
    case CU_DEVICE_ATTRIBUTE_MAX_PITCH: return 2147483647;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: return 65536;
    case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: return 1980000;
    case CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT: return 512;
    case CU_DEVICE_ATTRIBUTE_GPU_OVERLAP: return 1;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: return static_cast<int>(device.sms);
    case CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY: return 1;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_MODE: return CU_COMPUTEMODE_DEFAULT;
    case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_WIDTH: return 131072;
    case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_WIDTH: return 131072;
    case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_HEIGHT: return 65536;
    case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_WIDTH: return 16384;
    case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_HEIGHT: return 16384;
    case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_DEPTH: return 16384;
    case CU_DEVICE_ATTRIBUTE_SURFACE_ALIGNMENT: return 512;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: return 1;
    case CU_DEVICE_ATTRIBUTE_ECC_ENABLED: return 1;
    case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: return kPciBusBase + device.ordinal;
    case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID: return 0;
    case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: return 2619000;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: return 5120;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: return 52428800;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: return 2048;
    case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: return 1;  // the model has one copy engine
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: return 1;
    case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID: return 0;
    case CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT: return 32;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: return 9;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: return 0;
    case CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED: return 1;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_L1_CACHE_SUPPORTED: return 1;
    case CU_DEVICE_ATTRIBUTE_LOCAL_L1_CACHE_SUPPORTED: return 1;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: return 233472;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: return 65536;
    case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY: return 1;
    case CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD_GROUP_ID: return device.ordinal;
    case CU_DEVICE_ATTRIBUTE_SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO: return 2;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS: return 1;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_PREEMPTION_SUPPORTED: return 1;
    case CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM: return 1;
    case CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_MEM_OPS_V1: return 1;
    case CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS_V1: return 1;
    case CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR_V1: return 1;
    case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH: return 1;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: return 232448;
    case CU_DEVICE_ATTRIBUTE_CAN_FLUSH_REMOTE_WRITES: return 0;
    case CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED: return 1;
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: return 0;  // cuMemCreate/Map are not modelled
    case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED: return 0;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: return 32;
    case CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE: return 32505856;
    case CU_DEVICE_ATTRIBUTE_MAX_ACCESS_POLICY_WINDOW_SIZE: return 134213632;
    case CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK: return 1024;
    case CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED: return 1;
    case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: return 1;
    case CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES: return 0;
    case CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH: return 1;
    case CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS: return 1;
    case CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR: return 1;
    case CU_DEVICE_ATTRIBUTE_IPC_EVENT_SUPPORTED: return 0;
    case CU_DEVICE_ATTRIBUTE_MEM_SYNC_DOMAIN_COUNT: return 4;
    case CU_DEVICE_ATTRIBUTE_TENSOR_MAP_ACCESS_SUPPORTED: return 1;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_FUNCTION_POINTERS: return 1;
    case CU_DEVICE_ATTRIBUTE_NUMA_CONFIG: return CU_DEVICE_NUMA_CONFIG_NONE;
    case CU_DEVICE_ATTRIBUTE_NUMA_ID: return -1;
    case CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID: return -1;
    default: return 0;
  }
}

CUresult device_from_ordinal(Driver& drv, CUdevice ordinal, Device*& out) {
  out = device_at(drv, ordinal);
  return out != nullptr ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

CUuuid device_uuid(const Device& device) {
  CUuuid uuid{};
  std::memcpy(uuid.bytes, "sluice-fake-gpu", 15);
  uuid.bytes[15] = static_cast<char>(device.ordinal);
  return uuid;
}

std::string pci_bus_id(const Device& device) {
  char text[32];
  std::snprintf(text, sizeof(text), "00000000:%02X:00.0", kPciBusBase + device.ordinal);
  return text;
}

}  // namespace
}  // namespace sluice::fake

using namespace sluice::fake;

FAKE_ENTRY(cuDeviceGetCount, (int* count), {
  if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *count = static_cast<int>(drv.devices.size());
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceGet, (CUdevice * device, int ordinal), {
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (device_at(drv, ordinal) == nullptr) return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceGetName, (char* name, int len, CUdevice dev), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  if (name == nullptr || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  std::snprintf(name, static_cast<std::size_t>(len), "%s", kDeviceName);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceGetUuid, (CUuuid * uuid, CUdevice dev), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  if (uuid == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *uuid = device_uuid(*device);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceGetUuid_v2, (CUuuid * uuid, CUdevice dev), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  if (uuid == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *uuid = device_uuid(*device);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceGetLuid, (char* luid, unsigned int* deviceNodeMask, CUdevice dev), {
  (void)luid;
  (void)deviceNodeMask;
  (void)dev;
  return CUDA_ERROR_NOT_SUPPORTED;  // Windows only
})

FAKE_ENTRY(cuDeviceTotalMem_v2, (size_t * bytes, CUdevice dev), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  if (bytes == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *bytes = device->total_memory;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceGetAttribute, (int* pi, CUdevice_attribute attrib, CUdevice dev), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  if (pi == nullptr || attrib <= 0 || attrib >= CU_DEVICE_ATTRIBUTE_MAX) return CUDA_ERROR_INVALID_VALUE;
  *pi = attribute_value(*device, attrib);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceComputeCapability, (int* major, int* minor, CUdevice dev), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  if (major == nullptr || minor == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *major = 9;
  *minor = 0;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceGetProperties, (CUdevprop * prop, CUdevice dev), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  if (prop == nullptr) return CUDA_ERROR_INVALID_VALUE;
  prop->maxThreadsPerBlock = attribute_value(*device, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
  prop->maxThreadsDim[0] = 1024;
  prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->sharedMemPerBlock = 49152;
  prop->totalConstantMemory = 65536;
  prop->SIMDWidth = 32;
  prop->memPitch = 2147483647;
  prop->regsPerBlock = 65536;
  prop->clockRate = 1980000;
  prop->textureAlign = 512;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceGetPCIBusId, (char* pciBusId, int len, CUdevice dev), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  if (pciBusId == nullptr || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  std::snprintf(pciBusId, static_cast<std::size_t>(len), "%s", pci_bus_id(*device).c_str());
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceGetByPCIBusId, (CUdevice * dev, const char* pciBusId), {
  if (dev == nullptr || pciBusId == nullptr) return CUDA_ERROR_INVALID_VALUE;
  unsigned domain = 0, bus = 0, slot = 0, function = 0;
  if (std::sscanf(pciBusId, "%x:%x:%x.%x", &domain, &bus, &slot, &function) != 4 &&
      std::sscanf(pciBusId, "%x:%x.%x", &bus, &slot, &function) != 3) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  for (const auto& device : drv.devices) {
    if (static_cast<int>(bus) == kPciBusBase + device->ordinal && domain == 0 && slot == 0 && function == 0) {
      *dev = device->ordinal;
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_INVALID_DEVICE;
})

FAKE_ENTRY(cuDeviceCanAccessPeer, (int* canAccessPeer, CUdevice dev, CUdevice peerDev), {
  if (canAccessPeer == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (device_at(drv, dev) == nullptr || device_at(drv, peerDev) == nullptr) return CUDA_ERROR_INVALID_DEVICE;
  *canAccessPeer = dev != peerDev ? 1 : 0;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceGetP2PAttribute, (int* value, CUdevice_P2PAttribute attrib, CUdevice srcDevice, CUdevice dstDevice), {
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (device_at(drv, srcDevice) == nullptr || device_at(drv, dstDevice) == nullptr || srcDevice == dstDevice) {
    return CUDA_ERROR_INVALID_DEVICE;
  }
  *value = attrib == CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK ? 0 : 1;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceGetExecAffinitySupport, (int* pi, CUexecAffinityType type, CUdevice dev), {
  (void)type;
  if (pi == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (device_at(drv, dev) == nullptr) return CUDA_ERROR_INVALID_DEVICE;
  *pi = 0;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceGetDefaultMemPool, (CUmemoryPool * pool_out, CUdevice dev), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  if (pool_out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  *pool_out = to_handle<MemPool, CUmemoryPool>(device->default_pool);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceGetMemPool, (CUmemoryPool * pool, CUdevice dev), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  if (pool == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  *pool = to_handle<MemPool, CUmemoryPool>(device->current_pool);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDeviceSetMemPool, (CUdevice dev, CUmemoryPool pool), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  std::lock_guard lock(drv.mu);
  auto* object = lookup<MemPool>(drv, pool, HandleKind::mem_pool);
  if (object == nullptr || object->device != device) return CUDA_ERROR_INVALID_VALUE;
  device->current_pool = object;
  return CUDA_SUCCESS;
})

// ---- primary contexts -------------------------------------------------------------------------

FAKE_ENTRY(cuDevicePrimaryCtxRetain, (CUcontext * pctx, CUdevice dev), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  *pctx = to_handle<Context, CUcontext>(&retain_primary(drv, *device));
  return CUDA_SUCCESS;
})

FAKE_ENTRY_TWO_ABIS(cuDevicePrimaryCtxRelease_v2, cuDevicePrimaryCtxRelease, (CUdevice dev), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  std::unique_lock lock(drv.mu);
  if (device->primary == nullptr || device->primary->primary_refs == 0) return CUDA_ERROR_INVALID_CONTEXT;
  release_primary(drv, lock, *device);
  return CUDA_SUCCESS;
})

FAKE_ENTRY_TWO_ABIS(cuDevicePrimaryCtxReset_v2, cuDevicePrimaryCtxReset, (CUdevice dev), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  std::unique_lock lock(drv.mu);
  Context* ctx = device->primary;
  if (ctx == nullptr || !ctx->active) return CUDA_SUCCESS;
  // Everything the context owns goes; whoever retained it keeps a fresh, usable context and still
  // releases it as usual.
  tear_down_context(drv, lock, *ctx);
  if (ctx->primary_refs > 0) {
    ctx->active = true;
    ctx->legacy = create_stream(drv, *ctx, CU_STREAM_DEFAULT, 0, StreamRole::legacy);
  }
  return CUDA_SUCCESS;
})

FAKE_ENTRY_TWO_ABIS(cuDevicePrimaryCtxSetFlags_v2, cuDevicePrimaryCtxSetFlags, (CUdevice dev, unsigned int flags), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  if ((flags & ~static_cast<unsigned>(CU_CTX_FLAGS_MASK)) != 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  primary_context(drv, *device).flags = flags;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDevicePrimaryCtxGetState, (CUdevice dev, unsigned int* flags, int* active), {
  Device* device = nullptr;
  if (CUresult status = device_from_ordinal(drv, dev, device)) return status;
  if (flags == nullptr || active == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context& ctx = primary_context(drv, *device);
  *flags = ctx.flags;
  *active = ctx.active ? 1 : 0;
  return CUDA_SUCCESS;
})
