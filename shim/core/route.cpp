// Routing of application streams to SM partitions (green contexts), and stream priorities.
//
// A routed stream's work goes to its mirror: a non-blocking stream of a green context that owns
// Gate::route_sms() SMs of the device, created once per (device, SMs) and per (stream, SMs).
// Everything stream-ordered of a routed stream goes to the mirror (kernels, copies, memsets, event
// records and waits, host functions, memory operations), so an event recorded on it still means
// "all earlier work of the stream". Order across a change of target: an event recorded on the
// previous target and waited for by the next one, before the next operation. The driver's legacy
// barrier does not reach a mirror (it is non-blocking and in another context), so for blocking
// streams the engine adds it: a mirror waits for the legacy stream when that got work since the
// mirror last waited for it, and the legacy stream waits for mirrors that got work before each
// legacy operation and at every sync point. See docs/architecture.md ("Mechanisms in the client").
#include <algorithm>

#include "engine_data.h"
#include "sluice/common/log.h"
#include "sluice/shim/engine.h"

namespace sluice::shim {

// ---- priorities
// ------------------------------------------------------------------------------------

int Engine::stream_priority(int requested) noexcept {
  const StreamClass cls = gate().stream_class();
  if (!options_.stream_priority || cls == StreamClass::unknown || driver_.cuCtxGetStreamPriorityRange == nullptr)
    return requested;
  int least = 0;
  int greatest = 0;
  if (driver_.cuCtxGetStreamPriorityRange(&least, &greatest) != CUDA_SUCCESS) return requested;
  // Lower numbers are greater priorities. Each class moves a stream only in its own direction,
  // which with one class per process means: every stream to the end of the range.
  const int priority = cls == StreamClass::rt ? greatest : least;
  if (priority != requested) stats_.count_priority_override();
  return priority;
}

// ---- partitions and mirrors
// ------------------------------------------------------------------------

void Engine::route_failed(const char* what, CUresult result) noexcept {
  stats_.count_route_failure();
  if (!data_->route_failure_logged.exchange(true, std::memory_order_acq_rel)) {
    log::warn(
        "SM partitions are not available ({} failed with error {}); best-effort work stays "
        "on the full GPU",
        what, static_cast<int>(result));
  }
}

// The green context of `sms` SMs of `device`, created on first use; nullptr when it cannot be.
CUgreenCtx Engine::partition(std::int32_t device, std::uint32_t sms) {
  EngineData& d = *data_;
  std::lock_guard lock(d.partitions_mu);
  for (const EngineData::Partition& p : d.partitions) {
    if (p.device == device && p.sms == sms) return p.green;
  }
  EngineData::Partition& made = d.partitions.emplace_back();
  made.device = device;
  made.sms = sms;
  const DriverApi& cu = driver_;
  if (cu.cuDeviceGetDevResource == nullptr || cu.cuDevSmResourceSplitByCount == nullptr ||
      cu.cuDevResourceGenerateDesc == nullptr || cu.cuGreenCtxCreate == nullptr ||
      cu.cuGreenCtxStreamCreate == nullptr) {
    route_failed("looking up the green context entry points", CUDA_ERROR_NOT_SUPPORTED);
    return nullptr;
  }
  CUdevResource whole{};
  CUresult result = cu.cuDeviceGetDevResource(device, &whole, CU_DEV_RESOURCE_TYPE_SM);
  if (result != CUDA_SUCCESS) {
    route_failed("cuDeviceGetDevResource", result);
    return nullptr;
  }
  CUdevResource part{};
  CUdevResource rest{};
  unsigned groups = 1;
  result = cu.cuDevSmResourceSplitByCount(&part, &groups, &whole, &rest, 0, sms);
  if (result != CUDA_SUCCESS || groups != 1) {
    route_failed("cuDevSmResourceSplitByCount",
                 result != CUDA_SUCCESS ? result : CUDA_ERROR_INVALID_VALUE);
    return nullptr;
  }
  CUdevResourceDesc desc = nullptr;
  result = cu.cuDevResourceGenerateDesc(&desc, &part, 1);
  if (result != CUDA_SUCCESS) {
    route_failed("cuDevResourceGenerateDesc", result);
    return nullptr;
  }
  CUgreenCtx green = nullptr;
  result = cu.cuGreenCtxCreate(&green, desc, device, CU_GREEN_CTX_DEFAULT_STREAM);
  if (result != CUDA_SUCCESS) {
    route_failed("cuGreenCtxCreate", result);
    return nullptr;
  }
  made.green = green;
  stats_.count_partition();
  log::info("SM partition of {} SMs on device {} for best-effort work", part.sm.smCount, device);
  return green;
}

// An event of the green context `green_ctx`, for recording on its streams (nullptr when it cannot
// be made).
CUevent Engine::green_event(CUcontext green_ctx) {
  const DriverApi& cu = driver_;
  if (green_ctx == nullptr || cu.cuCtxPushCurrent_v2 == nullptr ||
      cu.cuCtxPopCurrent_v2 == nullptr || cu.cuEventCreate == nullptr ||
      cu.cuCtxPushCurrent_v2(green_ctx) != CUDA_SUCCESS) {
    return nullptr;
  }
  CUevent event = nullptr;
  if (cu.cuEventCreate(&event, CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS) event = nullptr;
  CUcontext popped = nullptr;
  cu.cuCtxPopCurrent_v2(&popped);
  return event;
}

// The event to record on `stream` (the stream, the legacy stream or one of its mirrors).
CUevent& Engine::edge_on(StreamRoute& route, CUstream stream) {
  for (StreamRoute::Mirror& m : route.mirrors) {
    if (m.stream == stream && m.edge != nullptr) return m.edge;
  }
  return route.edge;
}

// The mirror of `state` in the partition of `sms` SMs, created on first use (route_mu held).
CUstream Engine::mirror_of(StreamState& state, std::uint32_t sms, const OpDesc& desc) {
  StreamRoute& route = state.route;
  for (const StreamRoute::Mirror& m : route.mirrors) {
    if (m.sms == sms) return m.stream;
  }
  if (desc.device < 0) return nullptr;
  CUgreenCtx green = partition(desc.device, sms);
  if (green == nullptr) return nullptr;
  int priority = 0;
  if (driver_.cuStreamGetPriority == nullptr ||
      driver_.cuStreamGetPriority(state.handle, &priority) != CUDA_SUCCESS) {
    priority = 0;
  }
  CUstream mirror = nullptr;
  const CUresult result =
      driver_.cuGreenCtxStreamCreate(&mirror, green, CU_STREAM_NON_BLOCKING, priority);
  if (result != CUDA_SUCCESS) {
    route_failed("cuGreenCtxStreamCreate", result);
    return nullptr;
  }
  CUcontext green_ctx = nullptr;
  if (driver_.cuCtxFromGreenCtx == nullptr ||
      driver_.cuCtxFromGreenCtx(&green_ctx, green) != CUDA_SUCCESS) {
    green_ctx = nullptr;
  }
  route.mirrors.push_back({sms, mirror, green_event(green_ctx), green_ctx});
  stats_.count_mirror_stream();
  if (!route.listed) {
    std::lock_guard lock(data_->routed_mu);
    data_->routed.push_back(&state);
    route.listed = true;
  }
  if (state.legacy) data_->legacy_routed.store(true, std::memory_order_release);
  data_->mirrors_exist.store(true, std::memory_order_release);
  return mirror;
}

// Makes `to` wait for everything submitted to `from` so far. When no event can be recorded, waits
// on the host instead, which orders as well.
bool Engine::order_after(CUstream from, CUstream to, CUevent& edge) {
  stats_.count_route_edge();
  if (edge == nullptr && driver_.cuEventCreate != nullptr &&
      driver_.cuEventCreate(&edge, CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS) {
    edge = nullptr;
  }
  if (edge != nullptr && driver_.cuEventRecord != nullptr && driver_.cuStreamWaitEvent != nullptr &&
      driver_.cuEventRecord(edge, from) == CUDA_SUCCESS &&
      driver_.cuStreamWaitEvent(to, edge, 0) == CUDA_SUCCESS) {
    return true;
  }
  return driver_.cuStreamSynchronize != nullptr &&
         driver_.cuStreamSynchronize(from) == CUDA_SUCCESS;
}

// Where the next operation of `state` goes for a route of `sms` SMs (0: the full GPU), with the
// ordering edges it needs. route_mu held.
CUstream Engine::route_target(StreamState& state, std::uint32_t sms, const OpDesc& desc,
                              CUcontext& target_ctx) {
  StreamRoute& route = state.route;
  const CUcontext ctx = desc.ctx != nullptr ? desc.ctx : thread_context().ctx;
  if (route.ctx == nullptr) route.ctx = ctx;
  // The legacy stream is one per context; only that of the first context it was routed in is.
  if (state.legacy && route.ctx != ctx) return state.handle;
  CUstream from = route.target.load(std::memory_order_relaxed);
  if (from == nullptr) from = state.handle;
  if (desc.kind == OpKind::event_record) {
    // The application's event belongs to the stream's context, and the driver records an event
    // only on a stream of its own context: it is recorded on the stream itself, after the stream
    // waited for the mirror. The mirror stays the target.
    if (from != state.handle && !order_after(from, state.handle, edge_on(route, from)))
      route_failed("ordering an event record after a mirror", CUDA_ERROR_UNKNOWN);
    // What the driver's legacy barrier orders the record after must be on the streams the
    // barrier sees: the mirrors of blocking streams for the legacy stream, the legacy stream's
    // mirror for a blocking stream.
    if (state.legacy) {
      fold_mirrors(ctx, &state);
    } else if (state.blocking.load(std::memory_order_relaxed)) {
      fold_legacy_mirror(ctx);
    }
    return state.handle;
  }
  CUstream want = state.handle;
  if (sms != 0) {
    const CUstream mirror = mirror_of(state, sms, desc);
    if (mirror != nullptr) want = mirror;
  }
  const std::uint64_t blocking_epoch = data_->blocking_epoch.load(std::memory_order_acquire);
  // The legacy stream's work follows the earlier work of every blocking stream: routed ones are
  // folded into the legacy stream, and its mirror waits for the legacy stream.
  if (state.legacy &&
      (want == state.handle || want != from || blocking_epoch != route.blocking_seen))
    fold_mirrors(ctx, &state);
  if (want != from) {
    if (!order_after(from, want, edge_on(route, from))) {
      if (from != state.handle)
        route_failed("ordering a stream after its mirror", CUDA_ERROR_UNKNOWN);
      want = from;  // keep the order: stay where the earlier work went
    } else {
      stats_.count_route_switch();
      route.target.store(want, std::memory_order_release);
      state.routed.store(want != state.handle, std::memory_order_release);
      route.dirty = false;  // the new target waited for everything of the old one
      // An event recorded on the legacy stream itself covers the blocking streams (the driver's
      // barrier); one recorded on a mirror covers that mirror only, so a legacy mirror that
      // follows another one must still wait for the legacy stream below.
      if (from == state.handle) route.blocking_seen = blocking_epoch;
    }
  }
  if (want == state.handle) {
    // Back on a blocking stream itself: the driver's barrier orders the operation after the
    // legacy stream, which must first wait for its mirror (the legacy stream folded above).
    if (!state.legacy && state.blocking.load(std::memory_order_relaxed)) fold_legacy_mirror(ctx);
    return want;
  }
  route.dirty = true;
  if (state.legacy) {
    if (blocking_epoch != route.blocking_seen && order_after(CU_STREAM_LEGACY, want, route.edge))
      route.blocking_seen = blocking_epoch;
  } else if (state.blocking.load(std::memory_order_relaxed)) {
    // The legacy barrier: a blocking stream's work follows earlier work of the legacy stream
    // (and of the legacy stream's mirror, folded into it first).
    const std::uint64_t epoch = data_->legacy_epoch.load(std::memory_order_acquire);
    if (epoch != route.legacy_seen) {
      fold_legacy_mirror(ctx);
      if (order_after(CU_STREAM_LEGACY, want, route.edge)) route.legacy_seen = epoch;
    }
  }
  stats_.count_routed(desc.kind);
  for (const StreamRoute::Mirror& m : route.mirrors) {
    if (m.stream == want) target_ctx = m.ctx;
  }
  return want;
}

std::vector<StreamState*> Engine::routed_streams() {
  std::lock_guard lock(data_->routed_mu);
  return data_->routed;
}

// The legacy stream of `ctx` waits for `state`'s mirror when that got work since it last did.
// route_mu held.
void Engine::fold_into_legacy(StreamState& state, CUcontext ctx) {
  StreamRoute& route = state.route;
  const CUstream target = route.target.load(std::memory_order_relaxed);
  if (!route.dirty || route.ctx != ctx || target == nullptr || target == state.handle) return;
  if (order_after(target, CU_STREAM_LEGACY, edge_on(route, target))) route.dirty = false;
}

// The legacy stream of `ctx` waits for the mirrors of blocking streams (the legacy stream's own
// included, unless it is `skip`) that got work since it last did: what the driver's barrier would
// have done had the work stayed on the streams. route_mu held.
void Engine::fold_mirrors(CUcontext ctx, const StreamState* skip) {
  for (StreamState* state : routed_streams()) {
    if (state == skip || !state->blocking.load(std::memory_order_relaxed)) continue;
    fold_into_legacy(*state, ctx);
  }
}

// Work of blocking streams follows the legacy stream's work, which may be on its mirror.
// route_mu held.
void Engine::fold_legacy_mirror(CUcontext ctx) {
  if (data_->legacy_routed.load(std::memory_order_acquire)) fold_into_legacy(data_->legacy, ctx);
}

void Engine::before_legacy_op(CUcontext ctx) {
  if (!data_->mirrors_exist.load(std::memory_order_acquire) || capture_active()) return;
  std::lock_guard lock(data_->route_mu);
  fold_mirrors(ctx != nullptr ? ctx : thread_context().ctx, nullptr);
}

void Engine::after_legacy_op() noexcept {
  if (data_->mirrors_exist.load(std::memory_order_relaxed))
    data_->legacy_epoch.fetch_add(1, std::memory_order_acq_rel);
}

// Work that routing does not move but must order: the legacy stream's (after the mirrors of
// blocking streams) and blocking streams' (after the legacy stream's mirror). `state` nullptr: the
// per-thread default stream.
CUresult Engine::submit_unrouted(StreamState* state, const OpDesc& desc,
                                 FunctionRef<CUresult()> submit) {
  const bool legacy = state != nullptr && state->legacy;
  const bool blocking = state == nullptr || state->blocking.load(std::memory_order_relaxed);
  const bool legacy_routed = data_->legacy_routed.load(std::memory_order_acquire);
  if (!capture_active() && (legacy || (blocking && legacy_routed))) {
    const CUcontext ctx = desc.ctx != nullptr ? desc.ctx : thread_context().ctx;
    std::lock_guard lock(data_->route_mu);
    if (legacy) {
      fold_mirrors(ctx, nullptr);
    } else {
      fold_legacy_mirror(ctx);
    }
  }
  const CUresult result = submit();
  if (legacy) {
    after_legacy_op();
  } else if (blocking && legacy_routed) {
    data_->blocking_epoch.fetch_add(1, std::memory_order_acq_rel);
  }
  return result;
}

// Moves the stream's work back to the stream itself (before calls that go to it directly).
void Engine::unroute(StreamState& state) {
  if (!state.routed.load(std::memory_order_acquire)) return;
  std::lock_guard lock(data_->route_mu);
  OpDesc desc;
  desc.kind = OpKind::event_wait;
  CUcontext unused = nullptr;
  route_target(state, 0, desc, unused);
}

void Engine::unroute_all() {
  if (!data_->mirrors_exist.load(std::memory_order_acquire)) return;
  for (StreamState* state : routed_streams()) unroute(*state);
}

// Waits for the mirrors of the streams of `ctx` (context synchronization covers them too).
CUresult Engine::synchronize_mirrors(CUcontext ctx) {
  if (!data_->mirrors_exist.load(std::memory_order_acquire)) return CUDA_SUCCESS;
  std::vector<CUstream> mirrors;
  {
    std::lock_guard lock(data_->route_mu);
    for (StreamState* state : routed_streams()) {
      if (state->route.ctx != ctx) continue;
      for (const StreamRoute::Mirror& m : state->route.mirrors) mirrors.push_back(m.stream);
    }
  }
  CUresult first = CUDA_SUCCESS;
  for (CUstream m : mirrors) {
    const CUresult result = driver_.cuStreamSynchronize(m);
    if (first == CUDA_SUCCESS) first = result;
  }
  return first;
}

// The application destroyed the stream: its mirrors go too (the driver finishes their work).
void Engine::forget_mirrors(StreamState& state) {
  std::lock_guard lock(data_->route_mu);
  {
    std::lock_guard listed(data_->routed_mu);
    std::erase(data_->routed, &state);
  }
  StreamRoute& route = state.route;
  for (const StreamRoute::Mirror& m : route.mirrors) {
    if (driver_.cuStreamDestroy_v2 != nullptr) driver_.cuStreamDestroy_v2(m.stream);
    if (m.edge != nullptr && driver_.cuEventDestroy_v2 != nullptr)
      driver_.cuEventDestroy_v2(m.edge);
  }
  if (route.edge != nullptr && driver_.cuEventDestroy_v2 != nullptr)
    driver_.cuEventDestroy_v2(route.edge);
  route.mirrors.clear();
  route.edge = nullptr;
  route.ctx = nullptr;
  route.listed = false;
  route.dirty = false;
  route.legacy_seen = ~std::uint64_t{0};
  route.blocking_seen = ~std::uint64_t{0};
  route.target.store(nullptr, std::memory_order_release);
  state.routed.store(false, std::memory_order_release);
}

void Engine::destroy_partitions() noexcept {
  try {
    for (StreamState* state : routed_streams()) {
      {
        std::lock_guard lock(data_->route_mu);
        for (const StreamRoute::Mirror& m : state->route.mirrors)
          driver_.cuStreamSynchronize(m.stream);
      }
      forget_mirrors(*state);
    }
    std::lock_guard lock(data_->partitions_mu);
    for (const EngineData::Partition& p : data_->partitions) {
      if (p.green != nullptr && driver_.cuGreenCtxDestroy != nullptr)
        driver_.cuGreenCtxDestroy(p.green);
    }
    data_->partitions.clear();
  } catch (...) {
    log::warn("internal error while releasing SM partitions");
  }
}

}  // namespace sluice::shim
