#include "sluice/shim/toggle_gate.h"

#include <chrono>

namespace sluice::shim {

ToggleGate::ToggleGate(GateListener& listener, std::uint64_t period_ns, std::uint32_t partition_sms)
    : listener_(listener),
      period_ns_(period_ns),
      partition_sms_(partition_sms),
      thread_([this] { run(); }) {}

ToggleGate::~ToggleGate() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void ToggleGate::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    if (cv_.wait_for(lock, std::chrono::nanoseconds(period_ns_), [this] { return stopping_; }))
      return;
    open_.store(!open_.load(std::memory_order_relaxed), std::memory_order_release);
    flips_.fetch_add(1, std::memory_order_release);
    lock.unlock();
    listener_.gate_changed();
    lock.lock();
  }
}

}  // namespace sluice::shim
