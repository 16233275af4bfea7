// A small scripted driver for engine unit tests: each entry point the engine uses appends what it
// was asked to a log (with the thread that asked), so tests can check order, arguments and threads.
//
// Handles are small integers cast to pointers. Kernels: a CUfunction's value is its number of u32
// parameters (kNoLayout: the driver cannot size them; kFailing: the launch fails). Host pointers
// are pinned when registered with pin().
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "sluice/shim/driver_api.h"
#include "sluice/shim/gate.h"

namespace sluice::shim::test {

template <typename H>
H handle(std::uintptr_t value) {
  return reinterpret_cast<H>(value);
}

struct Entry {
  std::string what;  // "kernel", "memset", "copy", "record", "wait", "sync", ...
  CUstream stream = nullptr;
  std::uint64_t value = 0;  // first u32 parameter, memset value, copy offset/bytes, ...
  std::uint64_t extra = 0;
  std::thread::id thread;
};

class MockDriver {
 public:
  static constexpr std::uintptr_t kNoLayout = 0xA00;
  static constexpr std::uintptr_t kFailing = 0xBAD;
  static inline const CUcontext kContext = handle<CUcontext>(0xC0);

  MockDriver();
  ~MockDriver();

  DriverApi api;

  std::vector<Entry> log() const {
    std::lock_guard lock(mu_);
    return log_;
  }
  std::size_t count(const std::string& what) const;
  // Values of the entries named `what`, in log order.
  std::vector<std::uint64_t> values(const std::string& what) const;
  void clear() {
    std::lock_guard lock(mu_);
    log_.clear();
  }
  void pin(const void* p) {
    std::lock_guard lock(mu_);
    pinned_.insert(reinterpret_cast<std::uintptr_t>(p));
  }
  void set_stream_flags(CUstream s, unsigned flags) {
    std::lock_guard lock(mu_);
    flags_.emplace_back(s, flags);
  }
  // Function attributes as the mock keeps them; a launch asking for more dynamic shared memory
  // than CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES allows fails when it is submitted (logged
  // as "rejected"), as the driver's does.
  static constexpr int kDefaultDynamicShared = 48 * 1024;
  int attribute(CUfunction f, int attribute, int fallback) const;
  void set_attribute(CUfunction f, int attribute, int value);

  std::atomic<bool> capturing{false};
  std::atomic<int> event_queries{0};

  // The one mock the static entry points talk to.
  static MockDriver& current();
  void append(Entry e);
  bool is_pinned(std::uintptr_t p) const;
  bool stream_flags(CUstream s, unsigned& flags) const;

 private:
  mutable std::mutex mu_;
  std::vector<Entry> log_;
  std::set<std::uintptr_t> pinned_;
  std::vector<std::pair<CUstream, unsigned>> flags_;
  std::map<std::pair<CUfunction, int>, int> attributes_;
};

// A gate the test opens and shuts, optionally only for some streams or kinds.
class ManualGate final : public Gate {
 public:
  explicit ManualGate(GateListener& listener, bool open = false)
      : listener_(listener), open_(open) {}
  bool admit(const OpDesc& op) noexcept override {
    admitted_seq_.store(op.seq, std::memory_order_relaxed);
    if (refused_stream_ != nullptr) return op.stream != refused_stream_.load();
    return open_.load();
  }
  void on_hold(const OpDesc&) noexcept override { holds_.fetch_add(1); }
  std::uint64_t copy_chunk_bytes() const noexcept override { return chunk_; }
  const char* name() const noexcept override { return "manual"; }

  void set_open(bool open) {
    open_.store(open);
    listener_.gate_changed();
  }
  // Refuses only calls on `stream` (nullptr: back to open/shut for everything).
  void refuse_only(CUstream stream) {
    refused_stream_.store(stream);
    listener_.gate_changed();
  }
  void set_chunk(std::uint64_t bytes) { chunk_ = bytes; }
  int holds() const { return holds_.load(); }

 private:
  GateListener& listener_;
  std::atomic<bool> open_;
  std::atomic<CUstream> refused_stream_{nullptr};
  std::atomic<std::uint64_t> admitted_seq_{0};
  std::atomic<int> holds_{0};
  std::uint64_t chunk_ = 0;
};

}  // namespace sluice::shim::test
