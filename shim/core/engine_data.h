// The engine's internal state: per-stream queues, event states, the kernel catalog and the release
// thread. Private to shim/core.
//
// Lock order (outer to inner): EventState::mu, StreamState::mu, EngineData::active_mu. No sluice
// lock is held while calling the driver or the gate, except StreamState::drain_mu, which only the
// thread submitting a stream's queue holds, and the routing locks: EngineData::route_mu (held around
// the ordering edges and the submission of work that routing concerns), then
// EngineData::partitions_mu (creating a green context), then EngineData::routed_mu.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sluice/shim/engine.h"
#include "sluice/shim/handle_map.h"
#include "twins.h"

namespace sluice::shim {

// Satisfied once `count` calls queued on `state` went to the driver.
struct Dependency {
  StreamState* state = nullptr;
  std::uint64_t count = 0;
};

struct KernelRecord;

struct HeldOp {
  OpDesc desc;
  // Kernel launches: the records of the launched function and of the CUkernel it belongs to, whose
  // held_launches count this launch.
  KernelRecord* kernel_records[2] = {nullptr, nullptr};
  CUstream app_stream = nullptr;  // the handle the application passed
  SubmitFn submit;
  std::vector<Dependency> deps;  // other queues this call must follow
  EventState* event = nullptr;   // the event it records or waits on
  bool records_event = false;
  bool blocking = false;      // counted in EngineData::held_blocking
  std::uint64_t hold_ns = 0;  // when it was queued
};

// Where the work of one application stream goes (routing to SM partitions, core/route.cpp).
// Guarded by EngineData::route_mu unless said otherwise.
struct StreamRoute {
  struct Mirror {
    std::uint32_t sms = 0;
    CUstream stream = nullptr;  // a non-blocking stream of the partition's green context
    // Recorded on `stream` when later work must follow it: an event of the green context, as the
    // driver wants an event and the stream it is recorded on in one context (nullptr: `edge`).
    CUevent edge = nullptr;
    CUcontext ctx = nullptr;  // the green context as a CUcontext (cuCtxFromGreenCtx)
  };
  std::vector<Mirror> mirrors;  // created on first use, destroyed with the application's stream
  // The stream that received the stream's newest work: the application's stream or a mirror.
  // Written under route_mu; read without it by stream synchronization and queries.
  std::atomic<CUstream> target{nullptr};
  CUevent edge = nullptr;     // recorded on the stream or the legacy stream, waited on by a mirror
  CUcontext ctx = nullptr;    // the application stream's context (where the legacy stream is)
  bool listed = false;        // in EngineData::routed
  bool dirty = false;         // a mirror got work since the legacy stream last waited for it
  std::uint64_t legacy_seen = ~std::uint64_t{0};  // EngineData::legacy_epoch at the last edge
  // The legacy stream's own route: EngineData::blocking_epoch when its mirror last waited for the
  // blocking streams (through the legacy stream).
  std::uint64_t blocking_seen = ~std::uint64_t{0};
};

struct alignas(64) StreamState {
  // Read by every call on the stream (the fast path); written when work is held or released.
  std::atomic<std::uint32_t> held{0};
  std::atomic<bool> registered{false};
  std::atomic<bool> blocking{
      true};  // synchronizes with the legacy stream (no CU_STREAM_NON_BLOCKING)
  std::atomic<std::int32_t> device{-1};
  bool legacy = false;
  // True while the stream's work goes to a mirror (routing, core/route.cpp): read on every call.
  std::atomic<bool> routed{false};
  CUstream handle = nullptr;

  alignas(64) std::mutex mu;  // guards queue; enqueued and submitted change only under it
  std::deque<HeldOp> queue;
  std::atomic<std::uint64_t> enqueued{0};
  std::atomic<std::uint64_t> submitted{0};
  std::mutex drain_mu;  // one submitting thread per queue
  std::atomic<int> deferred_error{CUDA_SUCCESS};
  bool active = false;  // listed in EngineData::active (guarded by EngineData::active_mu)

  StreamRoute route;  // guarded by EngineData::route_mu (`routed` above is written under it)
};

struct EventState {
  std::mutex mu;  // serializes holding calls that refer to the event; guards the dependencies
  std::atomic<std::uint32_t> pending_refs{0};     // held records and waits
  std::atomic<std::uint32_t> pending_records{0};  // held records
  Dependency last_ref;
  Dependency last_record;
};

// Parameter layout of a kernel, for deep copies of held launches.
struct ParamLayout {
  bool known = false;
  std::vector<std::size_t> sizes;
};

struct KernelRecord {
  std::atomic<const KernelInfo*> info{nullptr};
  std::atomic<const ParamLayout*> layout{nullptr};
  std::atomic<const void*> owner{nullptr};  // the CUmodule or CUlibrary, when known
  std::atomic<bool> owner_is_library{false};  // which of the two `owner` is
  std::atomic<KernelRecord*> kernel{nullptr};  // a CUfunction's CUkernel (cuKernelGetFunction)
  std::atomic<std::uint32_t> held_launches{0};  // held launches of this function or kernel
  std::mutex changes_mu;
  std::vector<Engine::FunctionChange> changes;  // guarded by changes_mu; see function_changes()
};

struct EngineData {
  HandleMap<StreamState> streams;
  HandleMap<EventState> events{std::size_t{1} << 15};
  HandleMap<KernelRecord> kernels;
  StreamState legacy;

  std::atomic<std::uint64_t> held_total{0};
  std::atomic<std::uint64_t> held_blocking{0};  // held calls on blocking streams and the legacy one

  std::mutex active_mu;
  std::vector<StreamState*> active;  // streams with held calls

  std::mutex progress_mu;
  std::condition_variable progress_cv;
  std::uint64_t progress_epoch = 0;  // guarded by progress_mu

  std::mutex thread_mu;
  std::thread release_thread;
  std::mutex pass_mu;  // held by the release thread while it drains (set_gate waits for it)
  std::atomic<bool> stopping{false};

  std::mutex catalog_mu;                                        // guards the maps and arenas below
  std::unordered_map<const void*, std::uint64_t> image_hashes;  // CUmodule/CUlibrary -> image hash
  std::deque<KernelInfo> infos;  // never freed: a gate may still read an old KernelInfo
  std::deque<ParamLayout> layouts;

  std::mutex capture_mu;
  std::vector<std::pair<CUstream, std::thread::id>> captures;  // streams capturing now

  // Routing (core/route.cpp). A partition is created once per (device, SMs), lazily, on the thread
  // that first submits work for it; a failed creation is remembered and never retried.
  struct Partition {
    std::int32_t device = -1;
    std::uint32_t sms = 0;
    CUgreenCtx green = nullptr;  // nullptr: creation failed
  };
  std::mutex partitions_mu;
  std::vector<Partition> partitions;  // guarded by partitions_mu
  std::mutex route_mu;  // one for all streams: routing is for best-effort work
  std::atomic<bool> mirrors_exist{false};
  std::atomic<bool> legacy_routed{false};  // the legacy stream has had a mirror
  // Submissions to blocking streams (and the per-thread stream) since the legacy stream was first
  // routed: its mirror waits for the legacy stream (which the driver orders after them) when it
  // changed.
  std::atomic<std::uint64_t> blocking_epoch{0};
  // Submissions to the legacy stream since the first mirror: a routed blocking stream waits for
  // the legacy stream when it changed (the legacy barrier, which the driver does not apply to a
  // mirror).
  std::atomic<std::uint64_t> legacy_epoch{0};
  std::mutex routed_mu;
  std::vector<StreamState*> routed;  // streams that have mirrors (guarded by routed_mu)
  std::atomic<bool> route_failure_logged{false};

  // Kill in the client; null unless EngineOptions::kill.enabled.
  std::unique_ptr<Twins> twins;
};

// The streams with held calls now.
inline std::vector<StreamState*> snapshot(EngineData& data) {
  std::lock_guard lock(data.active_mu);
  return data.active;
}

inline bool met(const Dependency& dep) noexcept {
  return dep.state == nullptr || dep.state->submitted.load(std::memory_order_acquire) >= dep.count;
}

// Sleeps until done() holds, re-checking after every progress of the release thread (and every
// EngineOptions::poll_ns).
template <typename Done>
void Engine::wait_until(Done&& done) {
  EngineData& d = *data_;
  for (;;) {
    std::unique_lock lock(d.progress_mu);
    const std::uint64_t seen = d.progress_epoch;
    lock.unlock();
    if (done()) return;
    lock.lock();
    d.progress_cv.wait_for(lock, std::chrono::nanoseconds(options_.poll_ns),
                           [&] { return d.progress_epoch != seen; });
  }
}

}  // namespace sluice::shim
