// Contexts: creation, the per-thread current-context stack, synchronization, limits.
#include <algorithm>

#include "api.h"
#include "capture.h"
#include "executor.h"

namespace sluice::fake {
namespace {

constexpr int kGreatestPriority = -5;
constexpr int kLeastPriority = 0;

CUresult create_user_context(Driver& drv, CUcontext* pctx, unsigned flags, CUdevice dev) {
  if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if ((flags & ~static_cast<unsigned>(CU_CTX_FLAGS_MASK)) != 0) return CUDA_ERROR_INVALID_VALUE;
  Device* device = device_at(drv, dev);
  if (device == nullptr) return CUDA_ERROR_INVALID_DEVICE;
  std::lock_guard lock(drv.mu);
  Context* ctx = create_context(drv, *device, flags, false, nullptr);
  thread_state(drv).stack.push_back(ctx);
  *pctx = to_handle<Context, CUcontext>(ctx);
  return CUDA_SUCCESS;
}

// The context a call names: `handle`, or the current one when it is null.
CUresult named_or_current(Driver& drv, CUcontext handle, Context*& out) {
  return handle == nullptr ? current_context(drv, out) : context_from_handle(drv, handle, out);
}

CUresult synchronize_context(Driver& drv, CUcontext handle) {
  std::unique_lock lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = named_or_current(drv, handle, ctx)) return status;
  bool capturing = false;
  for (Stream* stream : ctx->streams) {
    if (capture_active(stream->capture)) {
      invalidate_capture(*stream->capture);
      capturing = true;
    }
  }
  if (capturing) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  wait_for_context(drv, lock, *ctx);
  return take_context_error(*ctx);
}

}  // namespace
}  // namespace sluice::fake

using namespace sluice::fake;

FAKE_ENTRY_TWO_ABIS(cuCtxCreate_v2, cuCtxCreate, (CUcontext * pctx, unsigned int flags, CUdevice dev),
           { return create_user_context(drv, pctx, flags, dev); })

FAKE_ENTRY(cuCtxCreate_v3, (CUcontext * pctx, CUexecAffinityParam* paramsArray, int numParams, unsigned int flags, CUdevice dev), {
  if (numParams < 0 || (numParams > 0 && paramsArray == nullptr)) return CUDA_ERROR_INVALID_VALUE;
  if (numParams > 0) return CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY;
  return create_user_context(drv, pctx, flags, dev);
})

FAKE_ENTRY(cuCtxCreate_v4, (CUcontext * pctx, CUctxCreateParams* ctxCreateParams, unsigned int flags, CUdevice dev), {
  if (ctxCreateParams != nullptr && ctxCreateParams->numExecAffinityParams > 0) return CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY;
  if (ctxCreateParams != nullptr && ctxCreateParams->cigParams != nullptr) return CUDA_ERROR_NOT_SUPPORTED;
  return create_user_context(drv, pctx, flags, dev);
})

FAKE_ENTRY_TWO_ABIS(cuCtxDestroy_v2, cuCtxDestroy, (CUcontext ctx), {
  std::unique_lock lock(drv.mu);
  Context* object = lookup<Context>(drv, ctx, HandleKind::context);
  if (object == nullptr || object->primary || object->green != nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  auto& stack = thread_state(drv).stack;
  stack.erase(std::remove(stack.begin(), stack.end(), object), stack.end());
  tear_down_context(drv, lock, *object);
  return CUDA_SUCCESS;
})

FAKE_ENTRY_TWO_ABIS(cuCtxPushCurrent_v2, cuCtxPushCurrent, (CUcontext ctx), {
  std::lock_guard lock(drv.mu);
  Context* object = lookup<Context>(drv, ctx, HandleKind::context);
  if (object == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  thread_state(drv).stack.push_back(object);
  return CUDA_SUCCESS;
})

FAKE_ENTRY_TWO_ABIS(cuCtxPopCurrent_v2, cuCtxPopCurrent, (CUcontext * pctx), {
  std::lock_guard lock(drv.mu);
  auto& stack = thread_state(drv).stack;
  if (stack.empty()) return CUDA_ERROR_INVALID_CONTEXT;
  if (pctx != nullptr) *pctx = to_handle<Context, CUcontext>(stack.back());
  stack.pop_back();
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxSetCurrent, (CUcontext ctx), {
  std::lock_guard lock(drv.mu);
  auto& stack = thread_state(drv).stack;
  if (ctx == nullptr) {
    if (!stack.empty()) stack.pop_back();
    return CUDA_SUCCESS;
  }
  Context* object = lookup<Context>(drv, ctx, HandleKind::context);
  if (object == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (stack.empty()) {
    stack.push_back(object);
  } else {
    stack.back() = object;
  }
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxGetCurrent, (CUcontext * pctx), {
  if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  auto& stack = thread_state(drv).stack;
  *pctx = stack.empty() ? nullptr : to_handle<Context, CUcontext>(stack.back());
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxGetDevice, (CUdevice * device), {
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  *device = ctx->device->ordinal;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxGetDevice_v2, (CUdevice * device, CUcontext ctx), {
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* object = nullptr;
  if (CUresult status = named_or_current(drv, ctx, object)) return status;
  *device = object->device->ordinal;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxGetFlags, (unsigned int* flags), {
  if (flags == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  *flags = ctx->flags;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxSetFlags, (unsigned int flags), {
  if ((flags & ~static_cast<unsigned>(CU_CTX_FLAGS_MASK)) != 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  ctx->flags = flags;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxGetId, (CUcontext ctx, unsigned long long* ctxId), {
  if (ctxId == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* object = nullptr;
  CUresult status = named_or_current(drv, ctx, object);
  if (object == nullptr) return status;
  *ctxId = object->id;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxSynchronize, (void), { return synchronize_context(drv, nullptr); })

FAKE_ENTRY(cuCtxSynchronize_v2, (CUcontext ctx), { return synchronize_context(drv, ctx); })

FAKE_ENTRY(cuCtxSetLimit, (CUlimit limit, size_t value), {
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  if (limit < 0 || limit >= CU_LIMIT_MAX) return CUDA_ERROR_INVALID_VALUE;
  if (limit == CU_LIMIT_SHMEM_SIZE || limit == CU_LIMIT_CIG_ENABLED) return CUDA_ERROR_UNSUPPORTED_LIMIT;
  ctx->limits[limit] = value;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxGetLimit, (size_t * pvalue, CUlimit limit), {
  if (pvalue == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  if (limit < 0 || limit >= CU_LIMIT_MAX) return CUDA_ERROR_INVALID_VALUE;
  auto it = ctx->limits.find(limit);
  *pvalue = it != ctx->limits.end() ? it->second : 0;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxGetCacheConfig, (CUfunc_cache * pconfig), {
  if (pconfig == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  *pconfig = ctx->cache_config;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxSetCacheConfig, (CUfunc_cache config), {
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  ctx->cache_config = config;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxGetApiVersion, (CUcontext ctx, unsigned int* version), {
  if (version == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* object = nullptr;
  CUresult status = named_or_current(drv, ctx, object);
  if (object == nullptr) return status;
  *version = 13000;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxGetStreamPriorityRange, (int* leastPriority, int* greatestPriority), {
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  if (leastPriority != nullptr) *leastPriority = kLeastPriority;
  if (greatestPriority != nullptr) *greatestPriority = kGreatestPriority;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxResetPersistingL2Cache, (void), {
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  return current_context(drv, ctx);
})

FAKE_ENTRY(cuCtxGetExecAffinity, (CUexecAffinityParam * pExecAffinity, CUexecAffinityType type), {
  (void)pExecAffinity;
  (void)type;
  return CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY;
})

FAKE_ENTRY(cuCtxEnablePeerAccess, (CUcontext peerContext, unsigned int Flags), {
  if (Flags != 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  Context* peer = lookup<Context>(drv, peerContext, HandleKind::context);
  if (peer == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (peer->device == ctx->device) return CUDA_ERROR_INVALID_DEVICE;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuCtxDisablePeerAccess, (CUcontext peerContext), {
  std::lock_guard lock(drv.mu);
  Context* peer = lookup<Context>(drv, peerContext, HandleKind::context);
  return peer == nullptr ? CUDA_ERROR_INVALID_CONTEXT : CUDA_SUCCESS;
})
