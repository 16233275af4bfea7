#include "tracker.h"

#include <cmath>

namespace sluice::sched {

namespace {

// Thread-local caches name their tracker by id, never by address: a tracker made after another
// one was destroyed may get its address.
std::atomic<std::uint64_t> next_tracker_id{1};

// The last track a thread used, so that the submitting path rarely takes tracks_mu_.
struct TrackCache {
  std::uint64_t owner = 0;
  CUstream stream = nullptr;
  CUcontext ctx = nullptr;
  void* track = nullptr;
};
thread_local TrackCache tls_track;

// The sample begun by before_submit on this thread, finished by on_submit.
struct PendingSample {
  std::uint64_t owner = 0;
  std::uint64_t seq = 0;
  CUevent start = nullptr;
  CUcontext ctx = nullptr;
  protocol::SampleMsg message{};
};
thread_local PendingSample tls_sample;

}  // namespace

CompletionTracker::CompletionTracker(const shim::DriverApi& driver)
    : driver_(driver), id_(next_tracker_id.fetch_add(1)) {}

// Events are not destroyed: the tracker lives until the process exits, when the driver may already
// be tearing down its contexts.
CompletionTracker::~CompletionTracker() = default;

CUcontext CompletionTracker::current_context() const {
  CUcontext ctx = nullptr;
  if (driver_.cuCtxGetCurrent != nullptr) driver_.cuCtxGetCurrent(&ctx);
  return ctx;
}

CompletionTracker::Track* CompletionTracker::track_for(CUstream stream, CUcontext ctx, int device) {
  TrackCache& cache = tls_track;
  if (cache.owner == id_ && cache.stream == stream && cache.ctx == ctx) return static_cast<Track*>(cache.track);
  std::lock_guard lock(tracks_mu_);
  auto& candidates = tracks_[stream];
  Track* found = nullptr;
  for (auto& track : candidates) {
    if (track->ctx == ctx) found = track.get();
  }
  if (found == nullptr) {
    auto track = std::make_unique<Track>();
    track->stream = stream;
    track->ctx = ctx;
    track->device = device;
    track->queryable = stream != CU_STREAM_PER_THREAD;
    found = track.get();
    candidates.push_back(std::move(track));
    all_tracks_.push_back(found);
  }
  cache = TrackCache{id_, stream, ctx, found};
  return found;
}

// Events are made in the current context, or in `ctx` made current for the call when `in_ctx` (the
// green context of a routed op's stream: the driver records an event only on a stream of its own
// context).
CUevent CompletionTracker::take_event(CUcontext ctx, bool timing, bool in_ctx) {
  {
    std::lock_guard lock(pool_mu_);
    auto& pool = (timing ? timing_pool_ : marker_pool_)[ctx];
    if (!pool.empty()) {
      CUevent event = pool.back();
      pool.pop_back();
      return event;
    }
  }
  CUevent event = nullptr;
  if (driver_.cuEventCreate == nullptr) return nullptr;
  if (in_ctx && (driver_.cuCtxPushCurrent_v2 == nullptr || driver_.cuCtxPopCurrent_v2 == nullptr ||
                 driver_.cuCtxPushCurrent_v2(ctx) != CUDA_SUCCESS)) {
    return nullptr;
  }
  if (driver_.cuEventCreate(&event, timing ? CU_EVENT_DEFAULT : CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS) {
    event = nullptr;
  }
  if (in_ctx) {
    CUcontext popped = nullptr;
    driver_.cuCtxPopCurrent_v2(&popped);
  }
  return event;
}

void CompletionTracker::give_event(CUcontext ctx, CUevent event, bool timing) {
  std::lock_guard lock(pool_mu_);
  (timing ? timing_pool_ : marker_pool_)[ctx].push_back(event);
}

// A stream the application created names one stream; the legacy and per-thread handles name a
// different stream in each context, so their tracks are told apart by the current context. Asking
// the driver for it only then keeps the common launch path free of that call.
bool CompletionTracker::per_context_handle(CUstream stream) {
  return stream == nullptr || stream == CU_STREAM_LEGACY || stream == CU_STREAM_PER_THREAD;
}

// The stream an op went to and the context of events recorded on it: a routed op's mirror stream
// and green context, else the application's stream and its context.
CUstream CompletionTracker::stream_of(const shim::OpDesc& op) {
  return op.submit_stream != nullptr ? op.submit_stream : op.stream;
}
CUcontext CompletionTracker::event_context(const shim::OpDesc& op) const {
  if (op.submit_ctx != nullptr) return op.submit_ctx;
  return op.ctx != nullptr ? op.ctx : current_context();
}

bool CompletionTracker::submitted(const shim::OpDesc& op, std::uint64_t predicted_ns, std::uint64_t marker_ns) {
  const CUstream stream = stream_of(op);
  CUcontext key = per_context_handle(stream) ? (op.ctx != nullptr ? op.ctx : current_context()) : nullptr;
  Track* track = track_for(stream, key, device_index(op.device));
  Marker marker;
  bool need_marker = false;
  {
    std::lock_guard lock(track->mu);
    track->submitted_ns += predicted_ns;
    track->submitted_ops += 1;
    marker.cumulative_ns = track->submitted_ns;
    marker.cumulative_ops = track->submitted_ops;
    need_marker = !track->queryable || track->submitted_ns - track->marked_ns >= marker_ns;
    if (need_marker) track->marked_ns = track->submitted_ns;
  }
  if (!need_marker) return true;
  CUcontext ctx = key != nullptr ? key : event_context(op);
  marker.ctx = ctx;
  marker.event = take_event(ctx, false, op.submit_ctx != nullptr);
  if (marker.event != nullptr && driver_.cuEventRecord(marker.event, stream) == CUDA_SUCCESS) {
    std::lock_guard lock(track->mu);
    track->markers.push_back(marker);
    return true;
  }
  if (marker.event != nullptr) give_event(ctx, marker.event, false);
  if (track->queryable) return true;  // a stream query will retire it
  // Nothing can tell when this completes: count it as complete (fail open).
  std::lock_guard lock(track->mu);
  track->submitted_ns -= predicted_ns;
  track->submitted_ops -= 1;
  track->marked_ns = track->submitted_ns;
  return false;
}

void CompletionTracker::begin_sample(const shim::OpDesc& op, std::uint64_t identity, std::uint64_t work,
                                     protocol::OpKind kind) {
  CUcontext ctx = event_context(op);
  CUevent start = take_event(ctx, true, op.submit_ctx != nullptr);
  if (start == nullptr) return;
  if (driver_.cuEventRecord(start, stream_of(op)) != CUDA_SUCCESS) {
    give_event(ctx, start, true);
    return;
  }
  PendingSample& pending = tls_sample;
  if (pending.owner == id_ && pending.start != nullptr) {
    // A sample begun without on_submit (the engine never submitted it): recycle its event.
    give_event(pending.ctx, pending.start, true);
    samples_in_flight_.fetch_sub(1, std::memory_order_relaxed);
  }
  pending = PendingSample{id_, op.seq, start, ctx, {}};
  pending.message.type = static_cast<std::uint16_t>(protocol::MsgType::sample);
  pending.message.kind = kind;
  pending.message.device = static_cast<std::int16_t>(device_index(op.device));
  pending.message.kernel_id = identity;
  pending.message.work = work;
  pending.message.seq = op.seq;
  samples_in_flight_.fetch_add(1, std::memory_order_relaxed);
}

void CompletionTracker::end_sample(const shim::OpDesc& op, bool submitted_ok) {
  PendingSample& pending = tls_sample;
  if (pending.owner != id_ || pending.seq != op.seq || pending.start == nullptr) return;
  Sample sample;
  sample.start = pending.start;
  sample.ctx = pending.ctx;
  sample.message = pending.message;
  pending = PendingSample{};
  const CUstream stream = stream_of(op);
  if (submitted_ok) sample.end = take_event(sample.ctx, true, op.submit_ctx != nullptr);
  if (sample.end == nullptr || driver_.cuEventRecord(sample.end, stream) != CUDA_SUCCESS) {
    give_event(sample.ctx, sample.start, true);
    if (sample.end != nullptr) give_event(sample.ctx, sample.end, true);
    samples_in_flight_.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  Track* track = track_for(stream, per_context_handle(stream) ? sample.ctx : nullptr, device_index(op.device));
  std::lock_guard lock(track->mu);
  track->samples.push_back(sample);
}

void CompletionTracker::retire(Track& track, std::uint64_t to_ns, std::uint64_t to_ops, Progress& out) {
  std::lock_guard lock(track.mu);
  if (to_ns > track.retired_ns) {
    out.retired_ns[static_cast<std::size_t>(track.device)] += to_ns - track.retired_ns;
    track.retired_ns = to_ns;
  }
  if (to_ops > track.retired_ops) track.retired_ops = to_ops;
}

// Pops the items at the front of `queue` whose event completed (or failed), oldest first, and
// hands each to `done` with the query's result. Only the gate's thread pops, so the front stays
// put while the lock is released for the query.
template <typename Item, typename EventOf, typename Done>
void CompletionTracker::pop_completed(Track& track, std::deque<Item>& queue, EventOf event_of, Done done) {
  for (;;) {
    Item item;
    {
      std::lock_guard lock(track.mu);
      if (queue.empty()) return;
      item = queue.front();
    }
    CUresult result = driver_.cuEventQuery(event_of(item));
    if (result == CUDA_ERROR_NOT_READY) return;
    {
      std::lock_guard lock(track.mu);
      queue.pop_front();
    }
    done(item, result);
  }
}

void CompletionTracker::poll_track(Track& track, Progress& out) {
  // Markers complete in stream order: retire up to each completed one.
  pop_completed(track, track.markers, [](const Marker& m) { return m.event; },
                [&](const Marker& marker, CUresult result) {
                  retire(track, marker.cumulative_ns, marker.cumulative_ops, out);
                  if (result == CUDA_SUCCESS) give_event(marker.ctx, marker.event, false);
                });
  pop_completed(track, track.samples, [](const Sample& s) { return s.end; },
                [&](Sample sample, CUresult result) {
                  float ms = 0;
                  auto elapsed = driver_.cuEventElapsedTime_v2 != nullptr ? driver_.cuEventElapsedTime_v2
                                                                           : driver_.cuEventElapsedTime;
                  if (result == CUDA_SUCCESS && elapsed != nullptr &&
                      elapsed(&ms, sample.start, sample.end) == CUDA_SUCCESS && ms > 0) {
                    sample.message.duration_ns = static_cast<std::uint64_t>(std::llround(static_cast<double>(ms) * 1e6));
                    if (sample.message.duration_ns > 0) out.samples.push_back(sample.message);
                  }
                  give_event(sample.ctx, sample.start, true);
                  give_event(sample.ctx, sample.end, true);
                  samples_in_flight_.fetch_sub(1, std::memory_order_relaxed);
                });
  // A stream that is idle has completed everything submitted before the query.
  std::uint64_t submitted_ns = 0, submitted_ops = 0;
  bool outstanding = false;
  {
    std::lock_guard lock(track.mu);
    submitted_ns = track.submitted_ns;
    submitted_ops = track.submitted_ops;
    outstanding = track.submitted_ops > track.retired_ops;
  }
  if (outstanding && track.queryable && driver_.cuStreamQuery != nullptr) {
    if (track.ctx == nullptr && driver_.cuStreamGetCtx != nullptr) driver_.cuStreamGetCtx(track.stream, &track.ctx);
    if (driver_.cuCtxSetCurrent != nullptr && track.ctx != nullptr) driver_.cuCtxSetCurrent(track.ctx);
    CUstreamCaptureStatus capture = CU_STREAM_CAPTURE_STATUS_NONE;
    // Querying a stream under capture would invalidate the capture: leave it to the markers.
    bool capturing = driver_.cuStreamIsCapturing != nullptr &&
                     driver_.cuStreamIsCapturing(track.stream, &capture) == CUDA_SUCCESS &&
                     capture != CU_STREAM_CAPTURE_STATUS_NONE;
    if (!capturing) {
      CUresult result = driver_.cuStreamQuery(track.stream);
      if (result != CUDA_ERROR_NOT_READY) retire(track, submitted_ns, submitted_ops, out);  // errors fail open
    }
  }
  std::lock_guard lock(track.mu);
  std::uint64_t unretired = track.submitted_ops - std::min(track.submitted_ops, track.retired_ops);
  out.unretired_ops[static_cast<std::size_t>(track.device)] += unretired;
  out.active = out.active || unretired > 0 || !track.samples.empty();
}

void CompletionTracker::poll(Progress& out) {
  std::vector<Track*> tracks;
  {
    std::lock_guard lock(tracks_mu_);
    tracks = all_tracks_;
  }
  for (Track* track : tracks) poll_track(*track, out);
}

}  // namespace sluice::sched
