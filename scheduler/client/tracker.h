// Completion tracking for a client gate: which submitted work is still on the GPU, learned without
// the submitting thread ever waiting, and timing samples for sluiced's duration model.
//
// Per (stream, context) it keeps the predicted work submitted and retired. The submitting thread
// records a marker event after an operation when enough predicted work accumulated since the last
// marker (or always, on the per-thread stream, which no other thread can name); the gate's thread
// retires work up to each completed marker, and everything when a stream query says the stream is
// idle. Driver errors (a destroyed stream, a lost context) retire the work: the gate fails open.
//
// Thread rules: submitted(), begin_sample() and end_sample() on submitting threads with the op's
// context current; poll() on the gate's thread only.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "sluice/protocol/codec.h"
#include "sluice/shim/driver_api.h"
#include "sluice/shim/gate.h"

namespace sluice::sched {

inline constexpr int kClientDevices = protocol::kMaxDevices;

inline int device_index(std::int32_t device) {
  return device < 0 || device >= kClientDevices ? 0 : device;
}

// What poll() found since the previous call.
struct Progress {
  std::array<std::uint64_t, kClientDevices> retired_ns{};   // predicted work that completed
  std::array<std::uint64_t, kClientDevices> unretired_ops{};  // still in flight after the poll
  std::vector<protocol::SampleMsg> samples;
  bool active = false;  // some work is still in flight
};

class CompletionTracker {
 public:
  explicit CompletionTracker(const shim::DriverApi& driver);
  ~CompletionTracker();
  CompletionTracker(const CompletionTracker&) = delete;
  CompletionTracker& operator=(const CompletionTracker&) = delete;

  // `op` went to the driver with predicted duration `predicted_ns`. Returns false when the work
  // could not be tracked (it is then counted as complete at once).
  bool submitted(const shim::OpDesc& op, std::uint64_t predicted_ns, std::uint64_t marker_ns);

  // Records a timing event before `op` (its sample is finished by end_sample() on this thread).
  void begin_sample(const shim::OpDesc& op, std::uint64_t identity, std::uint64_t work, protocol::OpKind kind);
  void end_sample(const shim::OpDesc& op, bool submitted_ok);
  std::uint32_t samples_in_flight() const { return samples_in_flight_.load(std::memory_order_relaxed); }

  void poll(Progress& out);

 private:
  struct Marker {
    CUevent event = nullptr;
    CUcontext ctx = nullptr;  // of the event's pool
    std::uint64_t cumulative_ns = 0;
    std::uint64_t cumulative_ops = 0;
  };
  struct Sample {
    CUevent start = nullptr;
    CUevent end = nullptr;
    CUcontext ctx = nullptr;
    protocol::SampleMsg message{};
  };
  struct Track {
    CUstream stream = nullptr;
    CUcontext ctx = nullptr;  // per-context handles: from the start; others: asked for by poll()
    int device = 0;
    bool queryable = true;  // the per-thread stream can only be named by its own thread
    std::mutex mu;          // guards everything below; never held across a driver call
    std::uint64_t submitted_ns = 0, submitted_ops = 0;
    std::uint64_t retired_ns = 0, retired_ops = 0;
    std::uint64_t marked_ns = 0;
    std::deque<Marker> markers;
    std::deque<Sample> samples;
  };

  Track* track_for(CUstream stream, CUcontext ctx, int device);
  CUevent take_event(CUcontext ctx, bool timing, bool in_ctx = false);
  static CUstream stream_of(const shim::OpDesc& op);
  CUcontext event_context(const shim::OpDesc& op) const;
  void give_event(CUcontext ctx, CUevent event, bool timing);
  void retire(Track& track, std::uint64_t to_ns, std::uint64_t to_ops, Progress& out);
  void poll_track(Track& track, Progress& out);
  template <typename Item, typename EventOf, typename Done>
  void pop_completed(Track& track, std::deque<Item>& queue, EventOf event_of, Done done);
  CUcontext current_context() const;
  static bool per_context_handle(CUstream stream);

  const shim::DriverApi& driver_;
  const std::uint64_t id_;  // names this tracker in thread-local caches
  std::mutex tracks_mu_;
  std::unordered_map<CUstream, std::vector<std::unique_ptr<Track>>> tracks_;  // guarded by tracks_mu_
  std::vector<Track*> all_tracks_;  // guarded by tracks_mu_; entries live as long as the tracker

  std::mutex pool_mu_;
  std::unordered_map<CUcontext, std::vector<CUevent>> timing_pool_, marker_pool_;  // guarded by pool_mu_
  std::atomic<std::uint32_t> samples_in_flight_{0};
};

}  // namespace sluice::sched
