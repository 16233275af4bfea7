// ToggleGate: a gate that shuts and reopens on a fixed period (SLUICE_GATE=toggle:<ms>). It holds
// every kind of work for a period, then admits everything for a period, and so on: the GPU check
// and the tests use it to prove that held work computes the same results as work sent at once.
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
  // Starts open; the first flip shuts it after `period_ns`.
  ToggleGate(GateListener& listener, std::uint64_t period_ns);
  ~ToggleGate() override;
  ToggleGate(const ToggleGate&) = delete;
  ToggleGate& operator=(const ToggleGate&) = delete;

  bool admit(const OpDesc&) noexcept override { return open_.load(std::memory_order_acquire); }
  const char* name() const noexcept override { return "toggle"; }
  std::uint32_t needs() const noexcept override { return 0; }

  bool is_open() const noexcept { return open_.load(std::memory_order_acquire); }
  std::uint64_t flips() const noexcept { return flips_.load(std::memory_order_relaxed); }

 private:
  void run();

  GateListener& listener_;
  const std::uint64_t period_ns_;
  std::atomic<bool> open_{true};
  std::atomic<std::uint64_t> flips_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace sluice::shim
