// The device executor: one thread per fake device that moves every stream of this process forward
// and runs what reaches the device, following the device model of engine_board.h.
//
// Each iteration (a "pump", under the driver lock):
//   1. operations whose device time is over finish: their effect runs (without the lock), they
//      are traced and leave their stream;
//   2. every stream with work advances: finished heads leave, heads whose dependencies are met
//      start: engine operations are published on the board, host functions go to the host
//      worker, everything else (event records and waits, memory operations, frees) runs at once;
//   3. board slots of finished operations are released: after step 2, so that a stream's next
//      operation is already on the board when its predecessor's slot frees (a deep queue keeps its
//      place against operations submitted after it);
//   4. published operations start in ticket order when the board allows.
// Effects that take the host long (large copies and memsets, host kernels) run on a second
// thread, the effect worker, so the executor keeps starting other operations meanwhile: an
// operation's slot stays taken until its effect is done, and its modelled times do not change.
//
// Between iterations the thread sleeps on the board's doorbell until the next operation is due
// (sleeping until ~50 us before, then spinning, so short kernels last about their duration), a
// submission or a remote change rings, or a stream memory wait needs polling.
//
// An operation that is not at the head of its stream is never on the board, so it cannot hold up
// operations of other streams: event waits across streams cannot deadlock the device.
//
// Thread safety: every member function except the thread body is called under the driver lock.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "effects.h"
#include "objects.h"

namespace sluice::fake {

struct Driver;

class Executor {
 public:
  Executor(Driver& drv, Device& device);
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Appends `op` (prepared by enqueue_op) to its stream and wakes the executor.
  void enqueue(Stream& stream, OpPtr op);
  // Makes the executor look at its streams again (a host function finished, an error).
  void wake();
  // True when no stream of this device has work left.
  bool idle() const { return busy_.empty(); }
  // Drops `stream` from the streams with work; its operations must all be done.
  void forget(Stream& stream);

 private:
  struct PendingEffect {
    OpPtr op;
    EffectPlan plan;
    CUresult result = CUDA_SUCCESS;
  };

  void ensure_thread();
  void run();
  void run_effects();
  bool complete_worker_effects();
  void pump(std::unique_lock<std::mutex>& lock);
  bool finish_due(std::unique_lock<std::mutex>& lock);
  bool advance(Stream& stream);
  bool start_published();
  void mark_busy(Stream& stream);
  std::uint64_t next_deadline() const;

  Driver& drv_;
  Device& device_;
  bool thread_started_ = false;
  std::vector<Stream*> busy_;
  std::vector<OpPtr> published_;
  std::vector<OpPtr> running_;
  std::vector<int> slots_to_release_;
  bool effect_worker_started_ = false;
  std::deque<PendingEffect> effects_to_apply_;
  std::vector<PendingEffect> effects_applied_;
  std::condition_variable effects_ready_;
  bool polling_ = false;  // a stream memory wait is unsatisfied, or the board was full
  bool blocked_ = false;  // a published operation could not start
  std::uint64_t blocked_since_ns_ = 0;
};

// ---- submission (driver lock held) ------------------------------------------------------------

// Prepares `spec` as an operation of `stream` (ticket, SMs, duration, dependencies on the
// legacy-stream barrier) and enqueues it. The stream must not be capturing.
OpPtr enqueue_op(Driver& drv, Stream& stream, OpSpec spec, bool from_graph = false);

// What every stream-ordered entry point calls: records the operation into the stream's graph
// while it is capturing, refuses legacy-stream work that would depend on a capture, and
// otherwise enqueues it. `out` receives the enqueued operation (null when captured).
CUresult submit(Driver& drv, Stream& stream, OpSpec spec, OpPtr* out = nullptr);

// Blocks until `op` is done (the lock is released while waiting).
void wait_for(Driver& drv, std::unique_lock<std::mutex>& lock, const OpPtr& op);

// Blocks until every stream of `ctx` has finished the work enqueued so far.
void wait_for_context(Driver& drv, std::unique_lock<std::mutex>& lock, Context& ctx);

// Device time of a kernel on `sm_count` SMs.
std::uint64_t kernel_duration_ns(Driver& drv, const KernelWork& kernel, unsigned sm_count);

}  // namespace sluice::fake
