// Green contexts and SM resources. A partition is a set of SMs of the device (SmMask); grids on
// a green context's streams occupy only its SMs, so grids of disjoint partitions run together in
// the device model. Partitions are multiples of 8 SMs (minimum 8), as on sm_90; with
// CU_DEV_SM_RESOURCE_SPLIT_IGNORE_SM_COSCHEDULING, multiples of 2.
#include <algorithm>
#include <cstring>

#include "api.h"
#include "capture.h"
#include "executor.h"

namespace sluice::fake {
namespace {

constexpr std::uint32_t kResourceMagic = 0x534c5352;  // "SLSR"
constexpr unsigned kPartitionGranule = 8;
constexpr unsigned kFineGranule = 2;

// What the fake keeps in a CUdevResource's internal bytes.
struct ResourceTag {
  std::uint32_t magic;
  std::int32_t device;
  std::uint64_t split;  // resources from one split share it (cuDevResourceGenerateDesc checks)
  std::uint64_t sms[kMaxSms / 64];
};
static_assert(sizeof(ResourceTag) <= sizeof(CUdevResource::_internal_padding));

void write_resource(CUdevResource& out, int device, std::uint64_t split, const SmMask& sms, unsigned alignment) {
  std::memset(&out, 0, sizeof(out));
  out.type = CU_DEV_RESOURCE_TYPE_SM;
  out.sm.smCount = sms.count();
  out.sm.minSmPartitionSize = kPartitionGranule;
  out.sm.smCoscheduledAlignment = alignment;
  ResourceTag tag{kResourceMagic, device, split, {}};
  std::copy(sms.words.begin(), sms.words.end(), tag.sms);
  std::memcpy(out._internal_padding, &tag, sizeof(tag));
}

bool read_resource(const CUdevResource& resource, ResourceTag& tag, SmMask& sms) {
  if (resource.type != CU_DEV_RESOURCE_TYPE_SM) return false;
  std::memcpy(&tag, resource._internal_padding, sizeof(tag));
  if (tag.magic != kResourceMagic) return false;
  std::copy(std::begin(tag.sms), std::end(tag.sms), sms.words.begin());
  return true;
}

CUresult context_resource(const Context& ctx, CUdevResource* resource, CUdevResourceType type) {
  if (resource == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (type != CU_DEV_RESOURCE_TYPE_SM) return CUDA_ERROR_INVALID_RESOURCE_TYPE;
  const bool whole = ctx.green == nullptr;
  write_resource(*resource, ctx.device->ordinal, 0, ctx.sms, whole ? kFineGranule : kPartitionGranule);
  return CUDA_SUCCESS;
}

GreenCtx* green_of(Driver& drv, CUgreenCtx handle) { return lookup<GreenCtx>(drv, handle, HandleKind::green_ctx); }

}  // namespace
}  // namespace sluice::fake

using namespace sluice::fake;

FAKE_ENTRY(cuDeviceGetDevResource, (CUdevice device, CUdevResource* resource, CUdevResourceType type), {
  Device* object = device_at(drv, device);
  if (object == nullptr) return CUDA_ERROR_INVALID_DEVICE;
  if (resource == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (type != CU_DEV_RESOURCE_TYPE_SM) return CUDA_ERROR_INVALID_RESOURCE_TYPE;
  write_resource(*resource, device, 0, SmMask::range(0, object->sms), kFineGranule);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDevSmResourceSplitByCount, (CUdevResource * result, unsigned int* nbGroups, const CUdevResource* input,
                                         CUdevResource* remaining, unsigned int useFlags, unsigned int minCount), {
  if (nbGroups == nullptr || input == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if ((useFlags & ~static_cast<unsigned>(CU_DEV_SM_RESOURCE_SPLIT_IGNORE_SM_COSCHEDULING |
                                         CU_DEV_SM_RESOURCE_SPLIT_MAX_POTENTIAL_CLUSTER_SIZE)) != 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  ResourceTag tag{};
  SmMask available;
  if (!read_resource(*input, tag, available)) return CUDA_ERROR_INVALID_RESOURCE_TYPE;
  const unsigned total = available.count();
  if (minCount > total) return CUDA_ERROR_INVALID_VALUE;
  const unsigned granule = (useFlags & CU_DEV_SM_RESOURCE_SPLIT_IGNORE_SM_COSCHEDULING) != 0 ? kFineGranule : kPartitionGranule;
  const unsigned group = std::max(granule, (minCount + granule - 1) / granule * granule);
  const unsigned possible = total / group;
  if (result == nullptr) {
    *nbGroups = possible;
    return CUDA_SUCCESS;
  }
  if (*nbGroups == 0) return CUDA_ERROR_INVALID_VALUE;
  const unsigned groups = std::min(*nbGroups, possible);
  std::lock_guard lock(drv.mu);
  const std::uint64_t split = drv.next_id();
  unsigned sm = 0;
  for (unsigned g = 0; g < groups; ++g) {
    SmMask part;
    for (unsigned taken = 0; taken < group; ++sm) {
      if (available.test(sm)) {
        part.set(sm);
        ++taken;
      }
    }
    write_resource(result[g], tag.device, split, part, granule);
    available = available.without(part);
  }
  if (remaining != nullptr) write_resource(*remaining, tag.device, split, available, kFineGranule);
  *nbGroups = groups;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuDevResourceGenerateDesc, (CUdevResourceDesc * phDesc, CUdevResource* resources, unsigned int nbResources), {
  if (phDesc == nullptr || resources == nullptr || nbResources == 0) return CUDA_ERROR_INVALID_VALUE;
  SmMask sms;
  ResourceTag first{};
  for (unsigned i = 0; i < nbResources; ++i) {
    ResourceTag tag{};
    SmMask part;
    if (!read_resource(resources[i], tag, part)) return CUDA_ERROR_INVALID_RESOURCE_TYPE;
    if (i == 0) first = tag;
    if (tag.device != first.device || (nbResources > 1 && (tag.split != first.split || tag.split == 0))) {
      return CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION;
    }
    sms = sms | part;
  }
  std::lock_guard lock(drv.mu);
  Device* device = device_at(drv, first.device);
  if (device == nullptr || sms.empty()) return CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION;
  auto* desc = new ResourceDesc();
  desc->device = device;
  desc->sms = sms;
  register_handle(drv, desc);
  *phDesc = to_handle<ResourceDesc, CUdevResourceDesc>(desc);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuGreenCtxCreate, (CUgreenCtx * phCtx, CUdevResourceDesc desc, CUdevice dev, unsigned int flags), {
  if (phCtx == nullptr || (flags & CU_GREEN_CTX_DEFAULT_STREAM) == 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Device* device = device_at(drv, dev);
  if (device == nullptr) return CUDA_ERROR_INVALID_DEVICE;
  auto* resources = lookup<ResourceDesc>(drv, desc, HandleKind::resource_desc);
  if (resources == nullptr || resources->device != device) return CUDA_ERROR_INVALID_VALUE;
  // The green context retains the device's primary context, as the driver does.
  retain_primary(drv, *device);
  auto* green = new GreenCtx();
  green->sms = resources->sms;
  green->ctx = create_context(drv, *device, device->primary->flags, false, green);
  register_handle(drv, green);
  *phCtx = to_handle<GreenCtx, CUgreenCtx>(green);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuGreenCtxDestroy, (CUgreenCtx hCtx), {
  std::unique_lock lock(drv.mu);
  GreenCtx* green = green_of(drv, hCtx);
  if (green == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  Device& device = *green->ctx->device;
  auto& stack = thread_state(drv).stack;
  stack.erase(std::remove(stack.begin(), stack.end(), green->ctx), stack.end());
  unregister_handle(drv, green);
  tear_down_context(drv, lock, *green->ctx);
  delete green;
  release_primary(drv, lock, device);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxFromGreenCtx, (CUcontext * pContext, CUgreenCtx hCtx), {
  if (pContext == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  GreenCtx* green = green_of(drv, hCtx);
  if (green == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  *pContext = to_handle<Context, CUcontext>(green->ctx);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuGreenCtxStreamCreate, (CUstream * phStream, CUgreenCtx greenCtx, unsigned int flags, int priority), {
  if (phStream == nullptr || flags != CU_STREAM_NON_BLOCKING) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  GreenCtx* green = green_of(drv, greenCtx);
  if (green == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (green->ctx->sticky != CUDA_SUCCESS) return green->ctx->sticky;
  Stream* stream = create_stream(drv, *green->ctx, flags, std::clamp(priority, -5, 0), StreamRole::normal);
  *phStream = stream->handle();
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuStreamGetGreenCtx, (CUstream hStream, CUgreenCtx * phCtx), {
  if (phCtx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_stream(drv, StreamArg{hStream, DefaultStream::legacy}, [&](Stream& stream, auto&) {
    *phCtx = to_handle<GreenCtx, CUgreenCtx>(stream.ctx->green);
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuGreenCtxGetDevResource, (CUgreenCtx hCtx, CUdevResource * resource, CUdevResourceType type), {
  std::lock_guard lock(drv.mu);
  GreenCtx* green = green_of(drv, hCtx);
  if (green == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  return context_resource(*green->ctx, resource, type);
})

FAKE_ENTRY(cuCtxGetDevResource, (CUcontext hCtx, CUdevResource * resource, CUdevResourceType type), {
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = context_from_handle(drv, hCtx, ctx)) return status;
  return context_resource(*ctx, resource, type);
})

FAKE_ENTRY(cuGreenCtxGetId, (CUgreenCtx greenCtx, unsigned long long* greenCtxId), {
  if (greenCtxId == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  GreenCtx* green = green_of(drv, greenCtx);
  if (green == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  *greenCtxId = green->ctx->id;
  return CUDA_SUCCESS;
})
