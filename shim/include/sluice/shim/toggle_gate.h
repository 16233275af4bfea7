// ToggleGate: a gate that shuts and reopens on a fixed period (SLUICE_GATE=toggle:<ms>). It holds
// every kind of work for a period, then admits everything for a period, and so on: the GPU check
// and the tests use it to prove that held work computes the same results as work sent at once.
// With a partition size (SLUICE_GATE=toggle:<ms>:<sms>) it also moves work between the full GPU
// and a partition of that many SMs every second flip (open full, shut full, open partition, shut
// partition, ...), to prove the same of routed work and of every route change.
//
// Thread rules: admit() from any thread. The gate runs one timer thread that calls
// GateListener::gate_changed() after each flip; the listener must outlive the gate.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "sluice/shim/gate.h"

namespace sluice::shim {

class ToggleGate final : public Gate {
 public:
  // Starts open on the full GPU; the first flip shuts it after `period_ns`. `partition_sms` 0:
  // never routes.
  ToggleGate(GateListener& listener, std::uint64_t period_ns, std::uint32_t partition_sms = 0);
  ~ToggleGate() override;
  ToggleGate(const ToggleGate&) = delete;
  ToggleGate& operator=(const ToggleGate&) = delete;

  bool admit(const OpDesc&) noexcept override { return open_.load(std::memory_order_acquire); }
  const char* name() const noexcept override { return "toggle"; }
  std::uint32_t needs() const noexcept override {
    return partition_sms_ != 0 ? std::uint32_t{kNeedRoute} : 0u;
  }
  std::uint32_t route_sms(const OpDesc&) const noexcept override {
    return (flips_.load(std::memory_order_acquire) / 2) % 2 == 1 ? partition_sms_ : 0;
  }

  bool is_open() const noexcept { return open_.load(std::memory_order_acquire); }
  std::uint64_t flips() const noexcept { return flips_.load(std::memory_order_relaxed); }

 private:
  void run();

  GateListener& listener_;
  const std::uint64_t period_ns_;
  const std::uint32_t partition_sms_;
  std::atomic<bool> open_{true};
  std::atomic<std::uint64_t> flips_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace sluice::shim
