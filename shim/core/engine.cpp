// The deferral engine: routing of calls to queues, holding, releasing, and sync points.
// Kernel launches and copies are in launch.cpp and copies.cpp, the kernel catalog in catalog.cpp.
#include "sluice/shim/engine.h"

#include <chrono>
#include <thread>

#include "engine_data.h"
#include "sluice/common/clock.h"
#include "sluice/common/log.h"

namespace sluice::shim {

struct Engine::Route {
  enum class Lane : std::uint8_t {
    queued,      // a stream the engine keeps a queue for (the legacy stream included)
    per_thread,  // the caller's per-thread default stream: never queued
    passthrough  // a handle the driver does not know: the driver answers the call
  };
  Lane lane;
  StreamState* state;  // queued lane only
  CUstream canonical;  // CU_STREAM_LEGACY / CU_STREAM_PER_THREAD for the default streams
};

namespace {

// The engine whose release thread this is (nullptr on every other thread).
thread_local const Engine* t_release_thread_of = nullptr;

std::atomic<std::uint64_t> g_next_engine_id{1};

// The calling thread's context and its device, as last read from the driver, and what they were
// read under. Initial-exec TLS: read on the launch path of a preloaded library, where the general
// model would call __tls_get_addr.
struct CachedContext {
  std::uint64_t engine = 0;
  std::uint64_t switches = 0;  // t_context_switches when read
  std::uint64_t epoch = 0;     // Engine::context_epoch_ when read
  CUcontext ctx = nullptr;
  std::int32_t device = -1;
};
__attribute__((tls_model("initial-exec"))) thread_local CachedContext t_context;
__attribute__((tls_model("initial-exec"))) thread_local std::uint64_t t_context_switches = 0;

}  // namespace

Engine::Engine(const DriverApi& driver, EngineOptions options)
    : driver_(driver),
      options_(options),
      gate_(&open_gate_),
      id_(g_next_engine_id.fetch_add(1, std::memory_order_relaxed)),
      data_(std::make_unique<EngineData>()) {
  StreamState& legacy = data_->legacy;
  legacy.legacy = true;
  legacy.handle = CU_STREAM_LEGACY;
  legacy.registered.store(true, std::memory_order_release);
  if (options_.kill.enabled) data_->twins = std::make_unique<Twins>(driver_, options_.kill, stats_);
}

Engine::~Engine() {
  flush();
  {
    std::lock_guard lock(data_->thread_mu);
    data_->stopping.store(true, std::memory_order_release);
  }
  notify_progress();
  if (data_->release_thread.joinable()) data_->release_thread.join();
  flush();  // anything held while the thread was stopping
  destroy_partitions();
}

void Engine::set_gate(Gate* gate) noexcept {
  gate_.store(gate != nullptr ? gate : &open_gate_, std::memory_order_release);
  // Wait for the release thread's current pass, which may still be asking the previous gate.
  if (t_release_thread_of != this) {
    std::lock_guard pass(data_->pass_mu);
  }
  gate_changed();
}

void Engine::gate_changed() noexcept {
  notify_progress();
}

void Engine::daemon_lost() noexcept {
  if (data_->twins != nullptr) data_->twins->lower_kill_words();
}

std::uint64_t Engine::held_now() const noexcept {
  return data_->held_total.load(std::memory_order_acquire);
}

// ---- routing
// -------------------------------------------------------------------------------------

Engine::Route Engine::route(StreamAbi abi, CUstream stream) {
  if (stream == nullptr)
    stream = abi == StreamAbi::legacy ? CU_STREAM_LEGACY : CU_STREAM_PER_THREAD;
  if (stream == CU_STREAM_LEGACY) return {Route::Lane::queued, &data_->legacy, CU_STREAM_LEGACY};
  if (stream == CU_STREAM_PER_THREAD)
    return {Route::Lane::per_thread, nullptr, CU_STREAM_PER_THREAD};
  StreamState* state = data_->streams.find(stream);
  if (state == nullptr || !state->registered.load(std::memory_order_acquire)) {
    state = register_unknown(stream);
    if (state == nullptr) return {Route::Lane::passthrough, nullptr, stream};
  }
  return {Route::Lane::queued, state, stream};
}

namespace {
void describe_stream(StreamState& state, unsigned flags, std::int32_t device) {
  state.blocking.store((flags & CU_STREAM_NON_BLOCKING) == 0, std::memory_order_relaxed);
  state.device.store(device, std::memory_order_relaxed);
  state.registered.store(true, std::memory_order_release);
}
}  // namespace

// A stream created behind sluice's back (or before a destroy and reuse): ask the driver about it.
StreamState* Engine::register_unknown(CUstream stream) {
  unsigned flags = 0;
  if (driver_.cuStreamGetFlags != nullptr &&
      driver_.cuStreamGetFlags(stream, &flags) != CUDA_SUCCESS) {
    return nullptr;
  }
  CUdevice device = -1;
  if (driver_.cuStreamGetDevice == nullptr ||
      driver_.cuStreamGetDevice(stream, &device) != CUDA_SUCCESS) {
    device = -1;
  }
  StreamState* state =
      data_->streams.find_or_insert(stream, [stream](StreamState& s) { s.handle = stream; });
  describe_stream(*state, flags, device);
  return state;
}

void Engine::stream_created(CUstream stream, unsigned flags) {
  CUdevice device = -1;
  if (driver_.cuCtxGetDevice == nullptr || driver_.cuCtxGetDevice(&device) != CUDA_SUCCESS)
    device = -1;
  StreamState* state =
      data_->streams.find_or_insert(stream, [stream](StreamState& s) { s.handle = stream; });
  describe_stream(*state, flags, device);
}

EventState* Engine::event_state(CUevent event) {
  return data_->events.find_or_insert(event, [](EventState&) {});
}

bool Engine::quiet(const Route& route, const EventState* event) const noexcept {
  if (event != nullptr && event->pending_refs.load(std::memory_order_acquire) != 0) return false;
  const StreamState& legacy = data_->legacy;
  switch (route.lane) {
    case Route::Lane::passthrough:
      return true;
    case Route::Lane::per_thread:  // a blocking stream that is never queued
      return legacy.held.load(std::memory_order_acquire) == 0;
    case Route::Lane::queued:
      break;
  }
  const StreamState& state = *route.state;
  if (state.held.load(std::memory_order_acquire) != 0) return false;
  if (state.legacy) return data_->held_blocking.load(std::memory_order_acquire) == 0;
  return !state.blocking.load(std::memory_order_relaxed) ||
         legacy.held.load(std::memory_order_acquire) == 0;
}

CUcontext Engine::current_context() const noexcept {
  CUcontext ctx = nullptr;
  if (driver_.cuCtxGetCurrent == nullptr || driver_.cuCtxGetCurrent(&ctx) != CUDA_SUCCESS)
    return nullptr;
  return ctx;
}

void Engine::context_switched() noexcept {
  ++t_context_switches;
}

void Engine::contexts_changed() noexcept {
  context_epoch_.fetch_add(1, std::memory_order_acq_rel);
}

// The calling thread's current context and its device. When every context switch is reported,
// the pair is read from the driver once per switch; otherwise the context is asked for each time
// (the device only when the context differs from the last one).
Engine::ThreadContext Engine::thread_context() {
  CachedContext& cached = t_context;
  const std::uint64_t epoch = context_epoch_.load(std::memory_order_acquire);
  const bool fresh = cached.engine == id_ && cached.epoch == epoch;
  if (options_.context_switches_reported && fresh && cached.switches == t_context_switches) {
    return {cached.ctx, cached.device};
  }
  const CUcontext ctx = current_context();
  if (!fresh || cached.ctx != ctx || ctx == nullptr) {
    CUdevice device = -1;
    if (ctx == nullptr || driver_.cuCtxGetDevice == nullptr ||
        driver_.cuCtxGetDevice(&device) != CUDA_SUCCESS) {
      device = -1;
    }
    cached = {id_, 0, epoch, ctx, device};
  }
  cached.switches = t_context_switches;
  return {cached.ctx, cached.device};
}

// The device of a named stream is known from its creation; the default streams belong to the
// calling thread's current context.
std::int32_t Engine::device_of(const Route& route) {
  if (route.state != nullptr && !route.state->legacy)
    return route.state->device.load(std::memory_order_relaxed);
  return thread_context().device;
}

// Fills the costly fields of `desc` that `fields` (GateNeeds bits) asks for and it lacks.
void Engine::describe(OpDesc& desc, const Route& route, std::uint32_t fields) {
  if ((fields & kNeedSeq) != 0 && desc.seq == 0)
    desc.seq = seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  if ((fields & kNeedCallTime) != 0 && desc.call_ns == 0) desc.call_ns = now_ns();
  if ((fields & kNeedDevice) != 0 && desc.device < 0) desc.device = device_of(route);
}

// ---- submission
// ----------------------------------------------------------------------------------

// The fast path costs one plain load more than no routing at all (EngineData::mirrors_exist), and
// a virtual call when the gate routes (kNeedRoute).
template <typename Submit>
CUresult Engine::submit_to(Gate& g, std::uint32_t needs, bool callbacks, StreamState* state,
                           const OpDesc& desc, CUstream app_stream, Submit&& submit) {
  auto go = [&](const OpDesc& d, CUstream stream) {
    if (callbacks) g.before_submit(d);
    const CUresult result = submit(stream);
    if (callbacks) g.on_submit(d, result);
    return result;
  };
  // Graph launches and launches that record an application event stay on the application's
  // stream: an executable graph and an event belong to their context.
  const bool routable = state != nullptr && (needs & kNeedRoute) != 0 &&
                        desc.kind != OpKind::graph && !desc.records_event && !capture_active();
  const std::uint32_t sms = routable ? g.route_sms(desc) : 0;
  if (sms == 0 && (state == nullptr || !state->routed.load(std::memory_order_acquire))) {
    if (!data_->mirrors_exist.load(std::memory_order_relaxed) ||
        (state == nullptr && desc.stream != CU_STREAM_PER_THREAD)) {
      return go(desc, app_stream);
    }
    return submit_unrouted(state, desc, [&] { return go(desc, app_stream); });
  }
  CUresult result = CUDA_SUCCESS;
  {
    std::lock_guard lock(data_->route_mu);
    CUcontext target_ctx = nullptr;
    const CUstream target = route_target(*state, sms, desc, target_ctx);
    if (target == state->handle) {
      result = go(desc, app_stream);
    } else {
      OpDesc routed = desc;
      routed.submit_stream = target;
      routed.submit_ctx = target_ctx;
      result = go(routed, target);
    }
  }
  if (state->legacy) {
    after_legacy_op();
  } else if (state->blocking.load(std::memory_order_relaxed) &&
             data_->legacy_routed.load(std::memory_order_relaxed)) {
    data_->blocking_epoch.fetch_add(1, std::memory_order_acq_rel);
  }
  return result;
}

CUresult Engine::submit(const Call& call) {
  const Route r = route(call.abi, call.stream);
  EventState* event = call.event != nullptr ? event_state(call.event) : nullptr;
  OpDesc desc = call.desc;
  desc.stream = r.canonical;
  const bool is_quiet = quiet(r, event);
  if (r.lane == Route::Lane::passthrough || (is_quiet && capture_active())) {
    // Captured work is recorded, not run; an unknown handle is the driver's to reject. Routing is
    // off during captures (a stream routed before goes back to itself).
    stats_.count_inline(desc.kind);
    const CUresult result =
        submit_to(gate(), 0, false, r.state, desc, call.stream, call.submit_now);
    if (result != CUDA_SUCCESS) stats_.count_failed(desc.kind);
    return result;
  }
  Gate& g = gate();
  const std::uint32_t needs = g.needs();
  describe(desc, r, (needs & kNeedRoute) != 0 ? needs | kNeedDevice : needs);
  if (is_quiet && g.admit(desc)) return submit_inline(g, needs, r.state, desc, call);
  describe(desc, r, kNeedAll);  // held or waiting work: the gate and the hold limit read them all
  if (r.lane == Route::Lane::queued) {
    desc.ctx = thread_context().ctx;
    if (desc.ctx != nullptr) {  // without a context the driver must answer the call now
      SubmitFn held = call.make_held();
      if (held) return hold(*r.state, event, desc, std::move(held), call);
    }
  }
  return submit_waiting(r, event, desc, call);
}

CUresult Engine::submit_inline(Gate& g, std::uint32_t needs, StreamState* state, const OpDesc& desc,
                               const Call& call) {
  const bool callbacks = (needs & kNeedSubmitCallbacks) != 0;
  const CUresult result = submit_to(g, needs, callbacks, state, desc, call.stream, call.submit_now);
  stats_.count_inline(desc.kind);
  if (result != CUDA_SUCCESS) stats_.count_failed(desc.kind);
  return result;
}

// The call cannot be queued: wait on this thread until what it must follow went out and the gate
// admits it (or it waited past the hold limit), then submit it here.
CUresult Engine::submit_waiting(const Route& r, EventState* event, const OpDesc& desc,
                                const Call& call) {
  stats_.count_waited();
  HeldOp probe;
  {
    std::unique_lock<std::mutex> event_lock;
    if (event != nullptr) event_lock = std::unique_lock(event->mu);
    collect_dependencies(r, event, probe);
  }
  if (r.state != nullptr)
    probe.deps.push_back({r.state, r.state->enqueued.load(std::memory_order_acquire)});
  wait_until([&] { return dependencies_met(probe); });
  const std::uint64_t start = now_ns();
  wait_until([&] {
    if (gate().admit(desc)) return true;
    if (now_ns() - start < options_.max_hold_ns) return false;
    stats_.count_forced_release();
    SLUICE_LOG_EVERY_SECOND(warn, "a {} waited {} ms for the gate '{}': submitted regardless",
                            op_kind_name(desc.kind), options_.max_hold_ns / 1000000, gate().name());
    return true;
  });
  return submit_inline(gate(), kNeedAll, r.state, desc, call);
}

// What a call on `r` must follow besides the earlier calls of its own queue: the legacy-stream
// barrier and the newest held call referring to the same event. The caller holds event->mu.
void Engine::collect_dependencies(const Route& r, EventState* event, HeldOp& op) {
  StreamState& legacy = data_->legacy;
  if (r.state != nullptr && r.state->legacy) {
    if (data_->held_blocking.load(std::memory_order_acquire) >
        legacy.held.load(std::memory_order_acquire)) {
      std::lock_guard lock(data_->active_mu);
      for (StreamState* other : data_->active) {
        if (other == &legacy || !other->blocking.load(std::memory_order_relaxed)) continue;
        if (other->held.load(std::memory_order_acquire) == 0) continue;
        op.deps.push_back({other, other->enqueued.load(std::memory_order_acquire)});
      }
    }
  } else if (r.lane == Route::Lane::per_thread ||
             (r.state != nullptr && r.state->blocking.load(std::memory_order_relaxed))) {
    if (legacy.held.load(std::memory_order_acquire) > 0) {
      op.deps.push_back({&legacy, legacy.enqueued.load(std::memory_order_acquire)});
    }
  }
  if (event != nullptr && event->pending_refs.load(std::memory_order_acquire) > 0) {
    op.deps.push_back(event->last_ref);
  }
}

bool Engine::dependencies_met(const HeldOp& op) const noexcept {
  for (const Dependency& dep : op.deps) {
    if (!met(dep)) return false;
  }
  return true;
}

CUresult Engine::hold(StreamState& state, EventState* event, const OpDesc& desc, SubmitFn submit,
                      const Call& call) {
  ensure_release_thread();  // first, so that a failure to start it holds nothing
  // The gate hears of the hold before the release thread can see the call (and submit it).
  stats_.count_held(desc.kind);
  gate().on_hold(desc);
  HeldOp op;
  op.desc = desc;
  op.app_stream = call.stream;
  op.submit = std::move(submit);
  op.event = event;
  op.records_event = call.records_event;
  op.blocking = state.legacy || state.blocking.load(std::memory_order_relaxed);
  op.hold_ns = desc.call_ns;
  if (desc.kind == OpKind::kernel && desc.func != nullptr) count_held_launch(op);

  std::unique_lock<std::mutex> event_lock;
  if (event != nullptr) event_lock = std::unique_lock(event->mu);
  const Route r{Route::Lane::queued, &state, desc.stream};
  collect_dependencies(r, event, op);
  bool first = false;
  {
    std::lock_guard lock(state.mu);
    const std::uint64_t count = state.enqueued.load(std::memory_order_relaxed) + 1;
    // Every counter goes up before the call is visible in the queue, so a fast releaser can never
    // take them below zero.
    if (event != nullptr) {
      event->last_ref = {&state, count};
      event->pending_refs.fetch_add(1, std::memory_order_acq_rel);
      if (op.records_event) {
        event->last_record = {&state, count};
        event->pending_records.fetch_add(1, std::memory_order_acq_rel);
      }
    }
    data_->held_total.fetch_add(1, std::memory_order_acq_rel);
    if (op.blocking) data_->held_blocking.fetch_add(1, std::memory_order_acq_rel);
    state.held.fetch_add(1, std::memory_order_acq_rel);
    first = state.queue.empty();
    state.queue.push_back(std::move(op));
    state.enqueued.store(count, std::memory_order_release);
  }
  if (event_lock.owns_lock()) event_lock.unlock();
  activate(state);
  if (first) notify_progress();  // a call behind others cannot go before them anyway
  return CUDA_SUCCESS;
}

void Engine::activate(StreamState& state) {
  std::lock_guard lock(data_->active_mu);
  if (!state.active) {
    state.active = true;
    data_->active.push_back(&state);
  }
}

// ---- release
// -------------------------------------------------------------------------------------

// Submits the admissible calls at the head of `state`'s queue. Never blocks on another thread's
// submission: returns false when someone else is draining this queue.
bool Engine::drain(StreamState& state, bool force, CUcontext& current) {
  std::unique_lock drain_lock(state.drain_mu, std::try_to_lock);
  if (!drain_lock.owns_lock()) return false;
  bool progress = false;
  for (;;) {
    HeldOp* op = nullptr;
    {
      std::lock_guard lock(state.mu);
      if (state.queue.empty()) break;
      op = &state.queue.front();  // stays valid: only this thread pops, pushes go to the back
    }
    if (!dependencies_met(*op)) break;
    Gate& g = gate();
    const std::uint64_t held_ns = now_ns() - op->hold_ns;
    const bool overdue = held_ns >= options_.max_hold_ns;
    if (!force && !overdue && !g.admit(op->desc)) break;
    if (overdue && !force) {
      stats_.count_forced_release();
      SLUICE_LOG_EVERY_SECOND(warn, "a {} was held {} ms by the gate '{}': released regardless",
                              op_kind_name(op->desc.kind), held_ns / 1000000, g.name());
    }
    if (op->desc.ctx != current && driver_.cuCtxSetCurrent != nullptr &&
        driver_.cuCtxSetCurrent(op->desc.ctx) == CUDA_SUCCESS) {
      current = op->desc.ctx;
    }
    const CUresult result =
        submit_to(g, g.needs(), true, &state, op->desc, op->app_stream, op->submit);
    if (result != CUDA_SUCCESS) {
      stats_.count_failed(op->desc.kind);
      stats_.count_deferred_error();
      int expected = CUDA_SUCCESS;
      state.deferred_error.compare_exchange_strong(expected, result, std::memory_order_acq_rel);
      SLUICE_LOG_EVERY_SECOND(info, "a held {} failed with error {}; reported at the next sync",
                              op_kind_name(op->desc.kind), static_cast<int>(result));
    }
    retire(state);
    progress = true;
  }
  drain_lock.unlock();
  if (progress) notify_progress();
  return progress;
}

void Engine::retire(StreamState& state) {
  HeldOp done;  // destroyed (with its deep copies) after the lock is released
  bool emptied = false;
  {
    std::lock_guard lock(state.mu);
    done = std::move(state.queue.front());
    state.queue.pop_front();
    state.submitted.store(state.submitted.load(std::memory_order_relaxed) + 1,
                          std::memory_order_release);
    if (done.event != nullptr) {
      done.event->pending_refs.fetch_sub(1, std::memory_order_acq_rel);
      if (done.records_event) done.event->pending_records.fetch_sub(1, std::memory_order_acq_rel);
    }
    for (KernelRecord* record : done.kernel_records) {
      if (record != nullptr) record->held_launches.fetch_sub(1, std::memory_order_acq_rel);
    }
    data_->held_total.fetch_sub(1, std::memory_order_acq_rel);
    if (done.blocking) data_->held_blocking.fetch_sub(1, std::memory_order_acq_rel);
    emptied = state.held.fetch_sub(1, std::memory_order_acq_rel) == 1;
  }
  if (emptied) {
    std::lock_guard lock(data_->active_mu);
    if (state.active && state.held.load(std::memory_order_acquire) == 0) {
      state.active = false;
      std::erase(data_->active, &state);
    }
  }
}

void Engine::notify_progress() noexcept {
  {
    std::lock_guard lock(data_->progress_mu);
    ++data_->progress_epoch;
  }
  data_->progress_cv.notify_all();
}

void Engine::ensure_release_thread() {
  EngineData& d = *data_;
  std::lock_guard lock(d.thread_mu);
  if (d.release_thread.joinable() || d.stopping.load(std::memory_order_acquire)) return;
  d.release_thread = std::thread([this] { release_thread_main(); });
}

void Engine::release_thread_main() {
  t_release_thread_of = this;
  // Submitting held work must never trip another thread's global-mode capture.
  if (driver_.cuThreadExchangeStreamCaptureMode != nullptr) {
    CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
    driver_.cuThreadExchangeStreamCaptureMode(&mode);
  }
  EngineData& d = *data_;
  CUcontext current = nullptr;
  for (;;) {
    std::uint64_t seen = 0;
    {
      std::lock_guard lock(d.progress_mu);
      seen = d.progress_epoch;
    }
    bool progress = false;
    {
      std::lock_guard pass(d.pass_mu);
      for (StreamState* state : snapshot(d)) progress |= drain(*state, false, current);
    }
    if (progress) continue;
    if (d.stopping.load(std::memory_order_acquire)) return;
    // With work held, wake up now and then: gates that forget gate_changed(), and the hold limit.
    const auto timeout = d.held_total.load(std::memory_order_acquire) > 0
                             ? std::chrono::nanoseconds(options_.poll_ns)
                             : std::chrono::nanoseconds(std::chrono::seconds(1));
    std::unique_lock lock(d.progress_mu);
    d.progress_cv.wait_for(lock, timeout, [&] {
      return d.progress_epoch != seen || d.stopping.load(std::memory_order_acquire);
    });
  }
}

void Engine::process_exiting() noexcept {
  if (data_->twins) data_->twins->process_exiting();
  gate().process_exiting();
}

void Engine::flush() noexcept {
  try {
    EngineData& d = *data_;
    // At process exit the driver may already have run its thread-exit cleanup for this thread:
    // call it only when there is work to submit.
    if (d.held_total.load(std::memory_order_acquire) == 0) return;
    const CUcontext saved = current_context();
    CUcontext current = saved;
    const std::uint64_t give_up = now_ns() + options_.max_hold_ns;
    while (d.held_total.load(std::memory_order_acquire) > 0 && now_ns() < give_up) {
      bool progress = false;
      for (StreamState* state : snapshot(d)) progress |= drain(*state, true, current);
      if (!progress)
        std::this_thread::sleep_for(std::chrono::microseconds(100));  // another drainer
    }
    if (current != saved && driver_.cuCtxSetCurrent != nullptr) driver_.cuCtxSetCurrent(saved);
    if (d.held_total.load(std::memory_order_acquire) > 0) {
      log::warn("{} held calls could not be submitted before exit", d.held_total.load());
    }
  } catch (...) {
    log::error("internal error while submitting held work at exit");
  }
}

// ---- sync points
// ---------------------------------------------------------------------------------

void Engine::drain_all() {
  EngineData& d = *data_;
  // A sync point of the legacy stream (synchronous copies, context-wide calls) also covers the
  // mirrors of blocking streams, as it would cover the streams themselves.
  if (d.held_total.load(std::memory_order_acquire) == 0) {
    before_legacy_op(nullptr);
    return;
  }
  std::vector<Dependency> targets;
  for (StreamState* state : snapshot(d)) {
    targets.push_back({state, state->enqueued.load(std::memory_order_acquire)});
  }
  stats_.count_sync_wait();
  wait_until([&] {
    for (const Dependency& target : targets) {
      if (!met(target)) return false;
    }
    return true;
  });
  before_legacy_op(nullptr);
}

// Waits until every call queued so far on the route's stream went out. The legacy stream's sync
// covers the blocking streams it is a barrier for, so it drains everything.
void Engine::wait_for_stream(const Route& r) {
  if (r.lane != Route::Lane::queued) return;
  if (r.state->legacy) {
    drain_all();
    return;
  }
  if (r.state->held.load(std::memory_order_acquire) == 0) return;
  const Dependency target{r.state, r.state->enqueued.load(std::memory_order_acquire)};
  stats_.count_sync_wait();
  wait_until([&] { return met(target); });
}

CUresult Engine::run_ordered(StreamAbi abi, CUstream stream, FunctionRef<CUresult()> call) {
  const Route r = route(abi, stream);
  if (!quiet(r, nullptr)) {
    HeldOp probe;
    collect_dependencies(r, nullptr, probe);
    if (r.state != nullptr)
      probe.deps.push_back({r.state, r.state->enqueued.load(std::memory_order_acquire)});
    stats_.count_sync_wait();
    wait_until([&] { return dependencies_met(probe); });
  }
  // The call goes to the application's stream itself: a routed stream's work comes back first,
  // and the legacy barrier is kept as for any other work.
  if (r.state != nullptr) unroute(*r.state);
  if (!data_->mirrors_exist.load(std::memory_order_acquire) ||
      (r.state == nullptr && r.lane != Route::Lane::per_thread)) {
    return call();
  }
  OpDesc desc;
  desc.stream = r.canonical;
  return submit_unrouted(r.state, desc, call);
}

CUresult Engine::take_deferred_error(StreamState* state) noexcept {
  if (state == nullptr) return CUDA_SUCCESS;
  return static_cast<CUresult>(
      state->deferred_error.exchange(CUDA_SUCCESS, std::memory_order_acq_rel));
}

CUresult Engine::synchronize_stream(StreamAbi abi, decltype(DriverApi::cuStreamSynchronize) fn,
                                    CUstream stream) {
  const Route r = route(abi, stream);
  wait_for_stream(r);
  CUresult result = fn(stream);
  // A routed stream's newest work is on its mirror, which waited for all earlier work (and the
  // stream itself waited for the mirror's work when it came back).
  const CUstream mirror =
      r.state != nullptr ? r.state->route.target.load(std::memory_order_acquire) : nullptr;
  if (result == CUDA_SUCCESS && mirror != nullptr && mirror != r.state->handle)
    result = driver_.cuStreamSynchronize(mirror);
  const CUresult deferred = take_deferred_error(r.state);
  return result != CUDA_SUCCESS ? result : deferred;
}

CUresult Engine::query_stream(StreamAbi abi, decltype(DriverApi::cuStreamQuery) fn,
                              CUstream stream) {
  const Route r = route(abi, stream);
  if (r.state != nullptr && r.state->held.load(std::memory_order_acquire) > 0)
    return CUDA_ERROR_NOT_READY;
  CUresult result = fn(stream);
  const CUstream mirror =
      r.state != nullptr ? r.state->route.target.load(std::memory_order_acquire) : nullptr;
  if (result == CUDA_SUCCESS && mirror != nullptr && mirror != r.state->handle)
    result = driver_.cuStreamQuery(mirror);
  if (result != CUDA_SUCCESS && result != CUDA_ERROR_NOT_READY) return result;
  const CUresult deferred = take_deferred_error(r.state);
  return deferred != CUDA_SUCCESS ? deferred : result;
}

CUresult Engine::destroy_stream(decltype(DriverApi::cuStreamDestroy_v2) fn, CUstream stream) {
  const Route r = route(StreamAbi::legacy, stream);
  const bool named = r.lane == Route::Lane::queued && !r.state->legacy;
  if (named) wait_for_stream(r);
  const CUresult result = fn(stream);
  if (result == CUDA_SUCCESS && named) {
    forget_mirrors(*r.state);
    // The driver may hand the same handle to a later stream with other flags.
    r.state->registered.store(false, std::memory_order_release);
    r.state->deferred_error.store(CUDA_SUCCESS, std::memory_order_release);
  }
  return result;
}

CUresult Engine::synchronize_context(FunctionRef<CUresult()> call) {
  drain_all();
  CUresult result = call();
  const CUresult mirrors = synchronize_mirrors(thread_context().ctx);
  if (result == CUDA_SUCCESS) result = mirrors;
  CUresult deferred = take_deferred_error(&data_->legacy);
  data_->streams.for_each([&](StreamState& state) {
    const CUresult error = take_deferred_error(&state);
    if (deferred == CUDA_SUCCESS) deferred = error;
  });
  return result != CUDA_SUCCESS ? result : deferred;
}

// ---- events
// --------------------------------------------------------------------------------------

CUresult Engine::record_event(StreamAbi abi, decltype(DriverApi::cuEventRecord) fn, CUevent event,
                              CUstream stream) {
  auto now = [&](CUstream s) { return fn(event, s); };
  auto held = [&]() -> SubmitFn { return [fn, event](CUstream s) { return fn(event, s); }; };
  OpDesc desc;
  desc.kind = OpKind::event_record;
  return submit(Call{abi, stream, desc, event, true, now, held});
}

CUresult Engine::record_event_with_flags(StreamAbi abi,
                                         decltype(DriverApi::cuEventRecordWithFlags) fn,
                                         CUevent event, CUstream stream, unsigned flags) {
  auto now = [&](CUstream s) { return fn(event, s, flags); };
  auto held = [&]() -> SubmitFn {
    return [fn, event, flags](CUstream s) { return fn(event, s, flags); };
  };
  OpDesc desc;
  desc.kind = OpKind::event_record;
  return submit(Call{abi, stream, desc, event, true, now, held});
}

CUresult Engine::wait_event(StreamAbi abi, decltype(DriverApi::cuStreamWaitEvent) fn,
                            CUstream stream, CUevent event, unsigned flags) {
  auto now = [&](CUstream s) { return fn(s, event, flags); };
  auto held = [&]() -> SubmitFn {
    return [fn, event, flags](CUstream s) { return fn(s, event, flags); };
  };
  OpDesc desc;
  desc.kind = OpKind::event_wait;
  return submit(Call{abi, stream, desc, event, false, now, held});
}

namespace {
// The newest held record (or any held reference) of an event, if one is held.
bool pending(EventState* state, bool records_only, Dependency& out) {
  if (state == nullptr) return false;
  const auto& counter = records_only ? state->pending_records : state->pending_refs;
  if (counter.load(std::memory_order_acquire) == 0) return false;
  std::lock_guard lock(state->mu);
  out = records_only ? state->last_record : state->last_ref;
  return true;
}
}  // namespace

CUresult Engine::query_event(decltype(DriverApi::cuEventQuery) fn, CUevent event) {
  EventState* state = data_->events.find(event);
  if (state != nullptr && state->pending_records.load(std::memory_order_acquire) > 0) {
    return CUDA_ERROR_NOT_READY;  // its newest record has not reached the driver
  }
  return fn(event);
}

CUresult Engine::synchronize_event(decltype(DriverApi::cuEventSynchronize) fn, CUevent event) {
  Dependency record;
  if (pending(data_->events.find(event), true, record)) {
    stats_.count_sync_wait();
    wait_until([&] { return met(record); });
  }
  return fn(event);
}

CUresult Engine::elapsed_time(decltype(DriverApi::cuEventElapsedTime) fn, float* ms, CUevent start,
                              CUevent end) {
  for (CUevent event : {start, end}) {
    Dependency record;
    if (pending(data_->events.find(event), true, record)) {
      stats_.count_sync_wait();
      wait_until([&] { return met(record); });
    }
  }
  return fn(ms, start, end);
}

CUresult Engine::destroy_event(decltype(DriverApi::cuEventDestroy_v2) fn, CUevent event) {
  Dependency last;
  if (pending(data_->events.find(event), false, last)) {
    stats_.count_sync_wait();
    wait_until([&] { return met(last); });
  }
  return fn(event);
}

// ---- capture
// -------------------------------------------------------------------------------------

CUresult Engine::begin_capture(StreamAbi abi, CUstream stream, FunctionRef<CUresult()> call) {
  capture_active_.fetch_add(1, std::memory_order_acq_rel);
  drain_all();    // nothing held may end up in the graph
  unroute_all();  // captured work goes to the streams themselves
  const CUresult result = call();
  if (result != CUDA_SUCCESS) {
    capture_active_.fetch_sub(1, std::memory_order_acq_rel);
    return result;
  }
  const Route r = route(abi, stream);
  const std::thread::id owner =
      r.lane == Route::Lane::per_thread ? std::this_thread::get_id() : std::thread::id{};
  std::lock_guard lock(data_->capture_mu);
  data_->captures.emplace_back(r.canonical, owner);
  return result;
}

CUresult Engine::end_capture(StreamAbi abi, CUstream stream, FunctionRef<CUresult()> call) {
  const CUresult result = call();
  const Route r = route(abi, stream);
  auto is_capturing =
      abi == StreamAbi::per_thread ? driver_.cuStreamIsCapturing_ptsz : driver_.cuStreamIsCapturing;
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  const bool ended = is_capturing != nullptr && is_capturing(stream, &status) == CUDA_SUCCESS
                         ? status == CU_STREAM_CAPTURE_STATUS_NONE
                         : result != CUDA_ERROR_ILLEGAL_STATE;
  if (!ended) return result;
  const std::thread::id owner =
      r.lane == Route::Lane::per_thread ? std::this_thread::get_id() : std::thread::id{};
  std::lock_guard lock(data_->capture_mu);
  auto& captures = data_->captures;
  for (auto it = captures.begin(); it != captures.end(); ++it) {
    if (it->first == r.canonical && it->second == owner) {
      captures.erase(it);
      capture_active_.fetch_sub(1, std::memory_order_acq_rel);
      break;
    }
  }
  return result;
}

}  // namespace sluice::shim
