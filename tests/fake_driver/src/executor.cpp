#include "executor.h"

#include <sys/prctl.h>

#include <algorithm>
#include <thread>

#include "capture.h"
#include "driver.h"
#include "effects.h"
#include "host_worker.h"
#include "sluice/common/clock.h"
#include "sluice/common/log.h"

namespace sluice::fake {
namespace {

constexpr std::uint64_t kSpinNs = 50'000;              // spin this close to a deadline
constexpr std::uint64_t kPollNs = 50'000;              // stream memory waits are polled this often
constexpr std::uint64_t kIdleNs = 100'000'000;         // nothing to do: look again after this
constexpr std::uint64_t kRemoteCheckNs = 2'000'000;    // blocked by other processes: check they live
constexpr std::uint64_t kReapAfterNs = 20'000'000;     // blocked this long: reclaim dead owners' slots

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

bool deps_done(const Op& op) {
  return std::all_of(op.deps.begin(), op.deps.end(), [](const OpPtr& dep) { return dep->state == OpState::done; });
}

void count_submitted(Driver& drv, const OpSpec& spec) {
  Counters& c = drv.counters;
  switch (spec.kind) {
    case SLUICE_FAKE_OP_KERNEL: ++c.launches_submitted; break;
    case SLUICE_FAKE_OP_COPY: ++c.copies_submitted; break;
    case SLUICE_FAKE_OP_MEMSET: ++c.memsets_submitted; break;
    case SLUICE_FAKE_OP_HOST_FUNC: ++c.host_funcs_submitted; break;
    case SLUICE_FAKE_OP_EVENT_RECORD: ++c.event_records; break;
    case SLUICE_FAKE_OP_EVENT_WAIT: ++c.event_waits; break;
    case SLUICE_FAKE_OP_MEM_WRITE:
    case SLUICE_FAKE_OP_MEM_WAIT: ++c.memops_submitted; break;
    default: break;
  }
}

void count_completed(Driver& drv, const Op& op) {
  Counters& c = drv.counters;
  const bool ok = op.result == CUDA_SUCCESS;
  switch (op.spec.kind) {
    case SLUICE_FAKE_OP_KERNEL: ++(ok ? c.launches_executed : c.launches_failed); break;
    case SLUICE_FAKE_OP_COPY:
      ++(ok ? c.copies_executed : c.copies_failed);
      if (ok) c.bytes_copied += op.spec.bytes;
      break;
    case SLUICE_FAKE_OP_MEMSET: ++(ok ? c.memsets_executed : c.memsets_failed); break;
    case SLUICE_FAKE_OP_HOST_FUNC: ++c.host_funcs_executed; break;
    case SLUICE_FAKE_OP_MEM_WRITE:
    case SLUICE_FAKE_OP_MEM_WAIT: ++c.memops_executed; break;
    default: break;
  }
}

KernelWork* killable(Op& op) {
  auto* kernel = std::get_if<KernelWork>(&op.spec.work);
  return kernel != nullptr && kernel->desc->killable && kernel->inject == CUDA_SUCCESS ? kernel : nullptr;
}

// Starts the next wave of a kill-instrumented grid whose current wave is over. Returns true when
// the grid goes on (its end moved), false when it is done.
bool continue_killable(Driver& drv, Op& op) {
  KernelWork* kernel = killable(op);
  if (kernel == nullptr || kernel->next_block >= kernel->blocks()) return false;
  Wave wave = next_wave(drv, *kernel, op.sms.count());
  if (wave.fault != CUDA_SUCCESS) {
    kernel->inject = wave.fault;  // finishes now, as a device fault
    kernel->inject_sticky = true;
    return false;
  }
  op.end_ns += wave.duration_ns;
  return wave.duration_ns != 0;
}

}  // namespace

void complete_op(Driver& drv, Op& op, CUresult result) {
  if (op.state == OpState::done) return;
  if (op.state != OpState::running) op.end_ns = now_ns();  // running ops keep their modelled end
  op.state = OpState::done;
  op.result = result;
  if (op.start_ns == 0) op.start_ns = op.end_ns;
  if (result != CUDA_SUCCESS && op.ctx != nullptr && op.ctx->sticky == CUDA_SUCCESS) {
    bool sticky = true;
    if (const auto* kernel = std::get_if<KernelWork>(&op.spec.work); kernel && kernel->inject == result) {
      sticky = kernel->inject_sticky;
    }
    record_device_error(drv, *op.ctx, result, sticky);
  }
  count_completed(drv, op);
  trace_op(drv, op);
  drv.changed.notify_all();
}

// ---- host worker ------------------------------------------------------------------------------

void HostWorker::post(OpPtr op) {
  queue_.push_back(std::move(op));
  if (!started_) {
    started_ = true;
    std::thread([this] { run(); }).detach();
  }
  ready_.notify_one();
}

void HostWorker::run() {
  mark_fake_thread();
  std::unique_lock lock(drv_.mu);
  for (;;) {
    ready_.wait(lock, [&] { return !queue_.empty(); });
    OpPtr op = std::move(queue_.front());
    queue_.pop_front();
    const auto work = std::get<HostFuncWork>(op->spec.work);
    const CUresult status = op->ctx->sticky;
    op->start_ns = now_ns();
    lock.unlock();
    if (work.fn != nullptr) {
      work.fn(work.user);
    } else if (work.callback != nullptr) {
      work.callback(work.callback_stream, status, work.user);
    }
    lock.lock();
    complete_op(drv_, *op, CUDA_SUCCESS);
    op->device->executor->wake();
  }
}

// ---- submission -------------------------------------------------------------------------------

std::uint64_t kernel_duration_ns(Driver& drv, const KernelWork& kernel, unsigned sm_count) {
  const KernelDesc& desc = *kernel.desc;
  if (desc.op == KernelOp::spin) {
    const std::uint64_t sms = std::max(1u, sm_count);
    const std::uint64_t waves = (kernel.blocks() + sms - 1) / sms;
    return kernel_param(kernel, 0) * waves;
  }
  if (desc.duration_ns) return *desc.duration_ns;
  if (desc.op == KernelOp::host) {
    auto it = drv.host_kernels.find(desc.name);
    if (it != drv.host_kernels.end()) return it->second.duration_ns;
  }
  return 0;
}

OpPtr enqueue_op(Driver& drv, Stream& stream, OpSpec spec, bool from_graph) {
  auto op = std::make_shared<Op>();
  op->spec = std::move(spec);
  op->stream = &stream;
  op->ctx = stream.ctx;
  op->device = stream.ctx->device;
  op->from_graph = from_graph;
  op->submit_ns = now_ns();
  op->stream_id = stream.id;
  op->stream_handle = reinterpret_cast<std::uint64_t>(stream.handle());
  op->ctx_id = stream.ctx->id;

  // The legacy default stream is a barrier across the blocking streams of its context.
  Context& ctx = *stream.ctx;
  auto depend_on = [&](const OpPtr& other) {
    if (other && other->state != OpState::done) op->deps.push_back(other);
  };
  if (stream.role == StreamRole::legacy) {
    for (Stream* other : ctx.streams) {
      if (other != &stream && other->blocking()) depend_on(other->last);
    }
  } else if (stream.blocking() && ctx.legacy != nullptr) {
    depend_on(ctx.legacy->last);
  }

  Device& device = *op->device;
  if (op->spec.engine != Engine::none) {
    op->ticket = device.board->take_ticket();
    op->sms = ctx.sms;
    if (const auto* kernel = std::get_if<KernelWork>(&op->spec.work)) {
      op->duration_ns = kernel_duration_ns(drv, *kernel, ctx.sms.count());
    } else {
      op->duration_ns = op->spec.bytes / drv.config.copy_gbps;
    }
  }
  count_submitted(drv, op->spec);
  stream.last = op;
  device.executor->enqueue(stream, op);
  return op;
}

CUresult submit(Driver& drv, Stream& stream, OpSpec spec, OpPtr* out) {
  if (out != nullptr) out->reset();
  if (stream.capture) return capture_append(drv, stream, std::move(spec));
  if (stream.role == StreamRole::legacy) {
    if (CUresult conflict = check_legacy_capture(*stream.ctx, true)) return conflict;
  }
  OpPtr op = enqueue_op(drv, stream, std::move(spec));
  if (out != nullptr) *out = std::move(op);
  return CUDA_SUCCESS;
}

void wait_for(Driver& drv, std::unique_lock<std::mutex>& lock, const OpPtr& op) {
  if (!op) return;
  ++drv.counters.synchronizations;
  drv.changed.wait(lock, [&] { return op->state == OpState::done; });
}

void wait_for_context(Driver& drv, std::unique_lock<std::mutex>& lock, Context& ctx) {
  std::vector<OpPtr> pending;
  for (Stream* stream : ctx.streams) {
    if (stream->last && stream->last->state != OpState::done) pending.push_back(stream->last);
  }
  ++drv.counters.synchronizations;
  for (const OpPtr& op : pending) {
    drv.changed.wait(lock, [&] { return op->state == OpState::done; });
  }
}

// ---- the executor -----------------------------------------------------------------------------

Executor::Executor(Driver& drv, Device& device) : drv_(drv), device_(device) {}

void Executor::ensure_thread() {
  if (thread_started_) return;
  thread_started_ = true;
  std::thread([this] { run(); }).detach();
}

void Executor::mark_busy(Stream& stream) {
  if (stream.busy) return;
  stream.busy = true;
  busy_.push_back(&stream);
}

void Executor::enqueue(Stream& stream, OpPtr op) {
  stream.queue.push_back(std::move(op));
  mark_busy(stream);
  ensure_thread();
  device_.board->ring_local();
}

void Executor::wake() { device_.board->ring_local(); }

void Executor::forget(Stream& stream) {
  busy_.erase(std::remove(busy_.begin(), busy_.end(), &stream), busy_.end());
  stream.busy = false;
}

std::uint64_t Executor::next_deadline() const {
  std::uint64_t deadline = UINT64_MAX;
  for (const OpPtr& op : running_) deadline = std::min(deadline, op->end_ns);
  return deadline;
}

void Executor::run() {
  mark_fake_thread();
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);  // sleep as precisely as the kernel allows
  EngineBoard& board = *device_.board;
  std::unique_lock lock(drv_.mu);
  for (;;) {
    const std::uint32_t seen = board.doorbell();
    pump(lock);

    const std::uint64_t now = now_ns();
    const std::uint64_t deadline = next_deadline();
    if (deadline <= now) continue;
    std::uint64_t sleep_ns = kIdleNs;
    if (deadline != UINT64_MAX) sleep_ns = deadline - now;
    if (polling_) sleep_ns = std::min(sleep_ns, kPollNs);
    if (blocked_) {
      sleep_ns = std::min(sleep_ns, kRemoteCheckNs);
      if (now - blocked_since_ns_ > kReapAfterNs && board.reap_dead_owners() != 0) continue;
    }
    if (deadline != UINT64_MAX && deadline - now <= kSpinNs) {
      // Close to a deadline: spin (without the lock) so short kernels last what they should.
      lock.unlock();
      while (now_ns() < deadline) cpu_relax();
      lock.lock();
      continue;
    }
    if (deadline != UINT64_MAX && sleep_ns == deadline - now) sleep_ns -= kSpinNs;
    lock.unlock();
    board.wait(seen, sleep_ns, blocked_ || polling_);
    drv_.counters.executor_wakeups.fetch_add(1, std::memory_order_relaxed);
    lock.lock();
  }
}

void Executor::pump(std::unique_lock<std::mutex>& lock) {
  for (int round = 0;; ++round) {
    bool changed = finish_due(lock);
    polling_ = false;
    for (std::size_t i = 0; i < busy_.size(); ++i) changed |= advance(*busy_[i]);

    // Streams without work leave the list; destroyed ones are deleted once empty.
    auto idle = std::stable_partition(busy_.begin(), busy_.end(), [](Stream* s) { return !s->queue.empty(); });
    for (auto it = idle; it != busy_.end(); ++it) {
      Stream* stream = *it;
      stream->busy = false;
      if (stream->destroyed) {
        auto& streams = stream->ctx->streams;
        streams.erase(std::remove(streams.begin(), streams.end(), stream), streams.end());
        delete stream;
      }
    }
    if (idle != busy_.end()) drv_.changed.notify_all();  // sluice_fake_wait_idle waits for this
    busy_.erase(idle, busy_.end());

    for (int slot : slots_to_release_) device_.board->finish(slot);
    slots_to_release_.clear();
    changed |= start_published();
    if (!changed) break;
  }
}

bool Executor::finish_due(std::unique_lock<std::mutex>& lock) {
  bool changed = complete_worker_effects();
  const std::uint64_t now = now_ns();
  std::vector<OpPtr> due;
  for (auto it = running_.begin(); it != running_.end();) {
    if ((*it)->end_ns <= now && continue_killable(drv_, **it)) {
      ++it;
      continue;
    }
    if ((*it)->end_ns <= now) {
      due.push_back(std::move(*it));
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
  if (due.empty()) return changed;

  std::vector<PendingEffect> here;
  for (OpPtr& op : due) {
    PendingEffect effect{std::move(op), {}, CUDA_SUCCESS};
    const auto* kernel = std::get_if<KernelWork>(&effect.op->spec.work);
    if (effect.op->ctx->sticky != CUDA_SUCCESS) {
      effect.result = effect.op->ctx->sticky;
    } else if (kernel != nullptr && kernel->inject != CUDA_SUCCESS) {
      effect.result = kernel->inject;
    } else {
      effect.result = prepare_effect(drv_, *effect.op, effect.plan);
    }
    effect.plan.skip = effect.plan.skip || effect.result != CUDA_SUCCESS;
    if (slow_effect(*effect.op, effect.plan)) {
      effects_to_apply_.push_back(std::move(effect));
    } else {
      here.push_back(std::move(effect));
    }
  }
  if (!effects_to_apply_.empty()) {
    if (!effect_worker_started_) {
      effect_worker_started_ = true;
      std::thread([this] { run_effects(); }).detach();
    }
    effects_ready_.notify_one();
  }
  lock.unlock();
  for (PendingEffect& effect : here) {
    if (!effect.plan.skip) effect.result = apply_effect(*effect.op, effect.plan);
  }
  lock.lock();
  for (PendingEffect& effect : here) {
    complete_op(drv_, *effect.op, effect.result);
    slots_to_release_.push_back(effect.op->slot);
    effect.op->slot = -1;
  }
  return true;
}

bool Executor::complete_worker_effects() {
  if (effects_applied_.empty()) return false;
  for (PendingEffect& effect : effects_applied_) {
    complete_op(drv_, *effect.op, effect.result);
    slots_to_release_.push_back(effect.op->slot);
    effect.op->slot = -1;
  }
  effects_applied_.clear();
  return true;
}

void Executor::run_effects() {
  mark_fake_thread();
  std::unique_lock lock(drv_.mu);
  for (;;) {
    effects_ready_.wait(lock, [&] { return !effects_to_apply_.empty(); });
    PendingEffect effect = std::move(effects_to_apply_.front());
    effects_to_apply_.pop_front();
    lock.unlock();
    effect.result = apply_effect(*effect.op, effect.plan);
    lock.lock();
    effects_applied_.push_back(std::move(effect));
    device_.board->ring_local();  // the executor completes it
  }
}

bool Executor::advance(Stream& stream) {
  bool changed = false;
  while (!stream.queue.empty()) {
    OpPtr op = stream.queue.front();
    if (op->state == OpState::done) {
      stream.queue.pop_front();
      changed = true;
      continue;
    }
    if (op->state != OpState::queued || !deps_done(*op)) break;
    op->deps.clear();
    Context& ctx = *op->ctx;
    if (ctx.sticky != CUDA_SUCCESS) {
      complete_op(drv_, *op, ctx.sticky);  // a faulted context runs nothing more
      continue;
    }
    switch (op->spec.kind) {
      case SLUICE_FAKE_OP_KERNEL:
      case SLUICE_FAKE_OP_COPY:
      case SLUICE_FAKE_OP_MEMSET: {
        const int slot = device_.board->publish(op->ticket, op->spec.engine, op->sms);
        if (slot < 0) {
          SLUICE_LOG_EVERY_SECOND(warn, "fake driver: engine board of device {} is full", device_.ordinal);
          polling_ = true;
          return changed;
        }
        op->slot = slot;
        op->state = OpState::published;
        published_.push_back(op);
        return true;
      }
      case SLUICE_FAKE_OP_HOST_FUNC:
        op->state = OpState::dispatched;
        drv_.host_worker->post(op);
        return true;
      case SLUICE_FAKE_OP_MEM_WAIT:
        if (!mem_wait_satisfied(std::get<MemWaitWork>(op->spec.work))) {
          polling_ = true;
          return changed;
        }
        op->start_ns = now_ns();
        complete_op(drv_, *op, CUDA_SUCCESS);
        continue;
      case SLUICE_FAKE_OP_MEM_WRITE:
        op->start_ns = now_ns();
        complete_op(drv_, *op, run_mem_write(drv_, std::get<MemWriteWork>(op->spec.work)));
        device_.board->ring();  // streams of other processes may wait for this value
        continue;
      case SLUICE_FAKE_OP_MEM_FREE: {
        const auto& work = std::get<MemFreeWork>(op->spec.work);
        if (Allocation* allocation = drv_.memory.at(work.address)) {
          if (work.graph_owned) {
            allocation->live = false;
          } else {
            free_device_allocation(drv_, *allocation);
          }
        }
        complete_op(drv_, *op, CUDA_SUCCESS);
        continue;
      }
      case SLUICE_FAKE_OP_MARKER:
        if (const auto* marker = std::get_if<MarkerWork>(&op->spec.work); marker && marker->revive != 0) {
          if (Allocation* allocation = drv_.memory.at(marker->revive)) allocation->live = true;
        }
        complete_op(drv_, *op, CUDA_SUCCESS);
        continue;
      default:  // event records and waits: ordering only; the completion time is the timestamp
        complete_op(drv_, *op, CUDA_SUCCESS);
        continue;
    }
  }
  return changed;
}

bool Executor::start_published() {
  if (published_.empty()) {
    blocked_ = false;
    return false;
  }
  std::sort(published_.begin(), published_.end(), [](const OpPtr& a, const OpPtr& b) { return a->ticket < b->ticket; });
  bool started = false;
  bool any_blocked = false;
  const std::uint64_t now = now_ns();
  for (auto it = published_.begin(); it != published_.end();) {
    Op& op = **it;
    if (device_.board->try_start(op.slot)) {
      op.state = OpState::running;
      op.start_ns = now;
      op.end_ns = now + op.duration_ns;
      if (killable(op)) {
        op.end_ns = now;
        continue_killable(drv_, op);
      }
      running_.push_back(std::move(*it));
      it = published_.erase(it);
      started = true;
    } else {
      any_blocked = true;
      ++it;
    }
  }
  if (any_blocked && !blocked_) blocked_since_ns_ = now;
  blocked_ = any_blocked;
  return started;
}

}  // namespace sluice::fake
