#include "driver.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "capture.h"
#include "executor.h"
#include "host_worker.h"
#include "sluice/common/log.h"

namespace sluice::fake {
namespace {

std::atomic<Driver*> g_driver{nullptr};
std::mutex g_create_mutex;  // guards making the first Driver; constant-initialised (no constructor runs)
std::atomic<std::uint64_t> g_generation{0};
std::vector<Driver*>* g_abandoned = nullptr;  // Drivers of the parent, kept reachable in a child

void before_fork() {
  if (Driver* drv = g_driver.load()) drv->mu.lock();
}

void after_fork_in_parent() {
  if (Driver* drv = g_driver.load()) drv->mu.unlock();
}

void after_fork_in_child() {
  // The parent's threads do not exist here: start over with a fresh driver. The old one stays
  // allocated (its lock is held and its objects may be referenced by the child's memory).
  Driver* old = g_driver.exchange(nullptr);
  if (old != nullptr) {
    if (g_abandoned == nullptr) g_abandoned = new std::vector<Driver*>();
    g_abandoned->push_back(old);
  }
  g_generation.fetch_add(1);
}

}  // namespace

Driver& driver() {
  Driver* drv = g_driver.load(std::memory_order_acquire);
  if (drv != nullptr) return *drv;
  std::lock_guard guard(g_create_mutex);
  drv = g_driver.load(std::memory_order_acquire);
  if (drv == nullptr) {
    static std::once_flag atfork_once;
    std::call_once(atfork_once, [] { pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child); });
    drv = new Driver();
    drv->generation = g_generation.load() + 1;
    drv->host_worker = std::make_unique<HostWorker>(*drv);
    g_driver.store(drv, std::memory_order_release);
  }
  return *drv;
}

namespace {
thread_local bool t_fake_thread = false;
}  // namespace

bool on_fake_thread() { return t_fake_thread; }
void mark_fake_thread() { t_fake_thread = true; }

ThreadState& thread_state(Driver& drv) {
  thread_local ThreadState state;
  if (state.generation != drv.generation) {
    state = ThreadState{};
    state.generation = drv.generation;
  }
  return state;
}

void register_handle(Driver& drv, Handle* object) { drv.handles[object] = object; }

void unregister_handle(Driver& drv, Handle* object) { drv.handles.erase(object); }

Device* device_at(Driver& drv, CUdevice ordinal) {
  if (ordinal < 0 || static_cast<std::size_t>(ordinal) >= drv.devices.size()) return nullptr;
  return drv.devices[static_cast<std::size_t>(ordinal)].get();
}

CUresult context_from_handle(Driver& drv, CUcontext handle, Context*& out) {
  out = lookup<Context>(drv, handle, HandleKind::context);
  if (out == nullptr || !out->active) return CUDA_ERROR_INVALID_CONTEXT;
  return out->sticky;
}

CUresult current_context(Driver& drv, Context*& out) {
  ThreadState& state = thread_state(drv);
  if (state.stack.empty()) {
    out = nullptr;
    return CUDA_ERROR_INVALID_CONTEXT;
  }
  return context_from_handle(drv, to_handle<Context, CUcontext>(state.stack.back()), out);
}

Stream* create_stream(Driver& drv, Context& ctx, unsigned flags, int priority, StreamRole role) {
  auto* stream = new Stream();
  stream->ctx = &ctx;
  stream->flags = flags;
  stream->priority = priority;
  stream->role = role;
  stream->id = drv.next_id();
  ctx.streams.push_back(stream);
  if (role == StreamRole::normal) register_handle(drv, stream);
  return stream;
}

Stream* per_thread_stream(Driver& drv, Context& ctx) {
  const auto me = std::this_thread::get_id();
  auto it = ctx.per_thread.find(me);
  if (it != ctx.per_thread.end()) return it->second;
  Stream* stream = create_stream(drv, ctx, CU_STREAM_DEFAULT, 0, StreamRole::per_thread);
  ctx.per_thread.emplace(me, stream);
  return stream;
}

CUresult resolve_stream(Driver& drv, StreamArg arg, Stream*& out) {
  out = nullptr;
  const CUstream handle = arg.handle;
  if (handle == nullptr || handle == CU_STREAM_LEGACY || handle == CU_STREAM_PER_THREAD) {
    Context* ctx = nullptr;
    if (CUresult status = current_context(drv, ctx)) return status;
    const bool per_thread =
        handle == CU_STREAM_PER_THREAD || (handle == nullptr && arg.zero_means == DefaultStream::per_thread);
    out = per_thread ? per_thread_stream(drv, *ctx) : ctx->legacy;
    return CUDA_SUCCESS;
  }
  Stream* stream = lookup<Stream>(drv, handle, HandleKind::stream);
  if (stream == nullptr || stream->destroyed) return CUDA_ERROR_INVALID_HANDLE;
  if (!stream->ctx->active) return CUDA_ERROR_INVALID_CONTEXT;
  if (stream->ctx->sticky != CUDA_SUCCESS) return stream->ctx->sticky;
  out = stream;
  return CUDA_SUCCESS;
}

Context* create_context(Driver& drv, Device& device, unsigned flags, bool primary, GreenCtx* green) {
  auto* ctx = new Context();
  ctx->device = &device;
  ctx->flags = flags;
  ctx->primary = primary;
  ctx->green = green;
  ctx->id = drv.next_id();
  ctx->sms = green != nullptr ? green->sms : SmMask::range(0, device.sms);
  ctx->limits[CU_LIMIT_STACK_SIZE] = 1024;
  ctx->limits[CU_LIMIT_PRINTF_FIFO_SIZE] = 1 << 20;
  ctx->limits[CU_LIMIT_MALLOC_HEAP_SIZE] = 8 << 20;
  ctx->limits[CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH] = 2;
  ctx->limits[CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT] = 2048;
  ctx->limits[CU_LIMIT_MAX_L2_FETCH_GRANULARITY] = 32;
  ctx->limits[CU_LIMIT_PERSISTING_L2_CACHE_SIZE] = 0;
  ctx->legacy = create_stream(drv, *ctx, CU_STREAM_DEFAULT, 0, StreamRole::legacy);
  device.contexts.push_back(ctx);
  register_handle(drv, ctx);
  return ctx;
}

Context& primary_context(Driver& drv, Device& device) {
  if (device.primary == nullptr) {
    device.primary = create_context(drv, device, 0, true, nullptr);
    device.primary->active = false;
  }
  return *device.primary;
}

Context& retain_primary(Driver& drv, Device& device) {
  Context& ctx = primary_context(drv, device);
  ++ctx.primary_refs;
  if (!ctx.active) {
    ctx.active = true;
    if (ctx.legacy == nullptr) ctx.legacy = create_stream(drv, ctx, CU_STREAM_DEFAULT, 0, StreamRole::legacy);
  }
  return ctx;
}

void release_primary(Driver& drv, std::unique_lock<std::mutex>& lock, Device& device) {
  Context* ctx = device.primary;
  if (ctx == nullptr || ctx->primary_refs == 0) return;
  if (--ctx->primary_refs == 0) tear_down_context(drv, lock, *ctx);
}

void tear_down_context(Driver& drv, std::unique_lock<std::mutex>& lock, Context& ctx) {
  wait_for_context(drv, lock, ctx);
  // Captures that involve the context end without a graph.
  for (Stream* stream : ctx.streams) {
    if (stream->capture) invalidate_capture(*stream->capture);
  }
  std::vector<Handle*> owned;
  for (auto& [address, handle] : drv.handles) {
    switch (handle->handle_kind) {
      case HandleKind::event:
        if (static_cast<Event*>(handle)->ctx == &ctx) owned.push_back(handle);
        break;
      case HandleKind::module:
        if (static_cast<Module*>(handle)->ctx == &ctx) owned.push_back(handle);
        break;
      default:
        break;
    }
  }
  for (Handle* handle : owned) {
    if (handle->handle_kind == HandleKind::module) {
      auto* module = static_cast<Module*>(handle);
      for (auto& [name, function] : module->functions) {
        unregister_handle(drv, function);
        delete function;
      }
      if (module->library != nullptr) module->library->modules.erase(&ctx);
    }
    unregister_handle(drv, handle);
    delete handle;
  }
  std::vector<std::uintptr_t> allocations;
  drv.memory.for_each([&](Allocation& allocation) {
    if (allocation.ctx == &ctx) allocations.push_back(allocation.base);
  });
  for (std::uintptr_t base : allocations) {
    Allocation* allocation = drv.memory.at(base);
    if (allocation->kind == MemKind::device || allocation->kind == MemKind::managed) {
      free_device_allocation(drv, *allocation);
      continue;
    }
    if (allocation->kind == MemKind::ipc_mapped) {
      std::erase_if(drv.ipc_mappings, [&](const auto& entry) { return entry.second.address == base; });
    }
    if (allocation->mapped_bytes != 0) munmap(reinterpret_cast<void*>(base), allocation->mapped_bytes);  // pinned, IPC
    drv.memory.erase(base);
  }
  for (Stream* stream : ctx.streams) {
    unregister_handle(drv, stream);
    ctx.device->executor->forget(*stream);  // everything in it is done after the wait above
    delete stream;
  }
  ctx.streams.clear();
  ctx.per_thread.clear();
  ctx.legacy = nullptr;
  if (ctx.primary) {
    ctx.active = false;
    ctx.sticky = CUDA_SUCCESS;
    ctx.deferred = CUDA_SUCCESS;
    return;
  }
  auto& contexts = ctx.device->contexts;
  contexts.erase(std::remove(contexts.begin(), contexts.end(), &ctx), contexts.end());
  unregister_handle(drv, &ctx);
  delete &ctx;
}

void record_device_error(Driver& drv, Context& ctx, CUresult error, bool sticky) {
  if (sticky) {
    ctx.sticky = error;
  } else if (ctx.deferred == CUDA_SUCCESS) {
    ctx.deferred = error;
  }
  drv.changed.notify_all();
}

CUresult take_context_error(Context& ctx) {
  if (ctx.sticky != CUDA_SUCCESS) return ctx.sticky;
  CUresult deferred = ctx.deferred;
  ctx.deferred = CUDA_SUCCESS;
  return deferred;
}

PtrClass classify(Driver& drv, std::uintptr_t address, std::size_t bytes) {
  if (Allocation* allocation = drv.memory.find(address, bytes)) {
    switch (allocation->kind) {
      case MemKind::device:
      case MemKind::ipc_mapped:
        return allocation->live ? PtrClass::device : PtrClass::invalid;
      case MemKind::managed:
        return PtrClass::managed;
      case MemKind::host_pinned:
      case MemKind::host_registered:
        return PtrClass::host_pinned;
    }
  }
  if (drv.memory.find(address, 1) != nullptr) return PtrClass::invalid;  // runs past its allocation
  for (const auto& device : drv.devices) {
    if (device->arena.ready() && device->arena.contains(address)) return PtrClass::invalid;  // freed
  }
  return PtrClass::pageable;
}

bool device_accessible(Driver& drv, std::uintptr_t address, std::size_t bytes) {
  if (bytes == 0) return true;
  Allocation* allocation = drv.memory.find(address, bytes);
  // Device, managed and pinned (mapped) host memory; pageable host memory is out of reach.
  return allocation != nullptr && allocation->live;
}

CUresult allocate_device(Driver& drv, Context& ctx, std::size_t bytes, MemKind kind, Allocation*& out) {
  if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  Device& device = *ctx.device;
  if (!device.arena.ready()) {
    std::string why;
    if (!device.arena.init(device.total_memory, device.ordinal, why)) {
      log::error("fake driver: device {} has no memory: {}", device.ordinal, why);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
  }
  const std::size_t charged = round_up(bytes, kPageBytes);
  auto& used = device.board->memory_used();
  if (used.fetch_add(charged) + charged > device.total_memory) {
    used.fetch_sub(charged);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  auto address = device.arena.allocate(bytes);
  if (!address) {
    used.fetch_sub(charged);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  Allocation allocation;
  allocation.base = *address;
  allocation.size = bytes;
  allocation.kind = kind;
  allocation.device = device.ordinal;
  allocation.ctx = &ctx;
  allocation.buffer_id = drv.memory.next_buffer_id();
  allocation.arena_offset = device.arena.offset_of(*address);
  out = &drv.memory.insert(allocation);
  ++drv.counters.allocations;
  return CUDA_SUCCESS;
}

void free_device_allocation(Driver& drv, Allocation& allocation) {
  Device* device = device_at(drv, allocation.device);
  if (device != nullptr && allocation.kind != MemKind::ipc_mapped) {
    device->arena.release(allocation.base, allocation.size);
    device->board->memory_used().fetch_sub(round_up(allocation.size, kPageBytes));
  }
  ++drv.counters.frees;
  drv.memory.erase(allocation.base);
}

void trace_op(Driver& drv, const Op& op) {
  if (!drv.tracing.load(std::memory_order_relaxed)) return;
  if (drv.trace.size() >= kTraceLimit) {
    SLUICE_LOG_ONCE(warn, "fake driver: the trace holds {} records; later operations are not traced", kTraceLimit);
    return;
  }
  sluice_fake_trace_record record{};
  record.seq = drv.trace.size();
  record.stream_id = op.stream_id;
  record.stream = op.stream_handle;
  record.ctx_id = op.ctx_id;
  record.ticket = op.ticket;
  record.tag = op.spec.tag;
  record.bytes = op.spec.bytes;
  record.submit_ns = op.submit_ns;
  record.start_ns = op.start_ns;
  record.end_ns = op.end_ns;
  for (std::size_t i = 0; i < 4; ++i) record.sm_mask[i] = op.sms.words[i];
  record.kind = op.spec.kind;
  record.engine = static_cast<std::uint32_t>(op.spec.engine);
  if (const auto* kernel = std::get_if<KernelWork>(&op.spec.work)) {
    record.blocks = static_cast<std::uint32_t>(std::min<std::uint64_t>(kernel->blocks(), UINT32_MAX));
    record.sm_count = op.sms.count();
  }
  record.device = op.device != nullptr ? op.device->ordinal : -1;
  record.result = op.result;
  record.from_graph = op.from_graph ? 1 : 0;
  std::strncpy(record.name, op.spec.name, sizeof(record.name) - 1);
  drv.trace.push_back(record);
}

}  // namespace sluice::fake
