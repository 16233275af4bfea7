// HandleMap<T>: maps driver handles (streams, events, functions, modules) to sluice's state for
// them. Lookups are lock-free, so the launch fast path never takes a lock shared between streams;
// insertions take a mutex and happen once per handle. Entries are never removed: the driver reuses
// handle values, and a reused handle reuses (after a reset by its owner) the same state object.
//
// Thread rules: find() from any thread at any time; find_or_insert() from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace sluice::shim {

template <typename T>
class HandleMap {
 public:
  explicit HandleMap(std::size_t capacity_pow2 = std::size_t{1} << 14)
      : slots_(new Slot[capacity_pow2]), mask_(capacity_pow2 - 1) {}

  T* find(const void* handle) const noexcept {
    const auto key = reinterpret_cast<std::uintptr_t>(handle);
    if (key == 0) return nullptr;
    for (std::size_t i = index_of(key), probes = 0; probes <= mask_;
         i = (i + 1) & mask_, ++probes) {
      std::uintptr_t seen = slots_[i].key.load(std::memory_order_acquire);
      if (seen == key) return slots_[i].value.load(std::memory_order_relaxed);
      if (seen == 0) break;
    }
    if (!overflowed_.load(std::memory_order_acquire)) return nullptr;
    std::lock_guard lock(insert_mu_);
    auto it = overflow_.find(key);
    return it == overflow_.end() ? nullptr : it->second;
  }

  // Returns the state for `handle`, creating it (and calling init(T&) once) when absent.
  template <typename Init>
  T* find_or_insert(const void* handle, Init&& init) {
    if (T* existing = find(handle)) return existing;
    const auto key = reinterpret_cast<std::uintptr_t>(handle);
    std::lock_guard lock(insert_mu_);
    for (std::size_t i = index_of(key), probes = 0; probes <= mask_;
         i = (i + 1) & mask_, ++probes) {
      std::uintptr_t seen = slots_[i].key.load(std::memory_order_relaxed);
      if (seen == key) return slots_[i].value.load(std::memory_order_relaxed);
      if (seen == 0) {
        if ((used_ + 1) * 4 > (mask_ + 1) * 3) break;  // keep probes short: spill instead
        T* value = &storage_.emplace_back();
        init(*value);
        slots_[i].value.store(value, std::memory_order_relaxed);
        slots_[i].key.store(key, std::memory_order_release);  // publishes value
        ++used_;
        return value;
      }
    }
    auto it = overflow_.find(key);
    if (it != overflow_.end()) return it->second;
    T* value = &storage_.emplace_back();
    init(*value);
    overflow_.emplace(key, value);
    overflowed_.store(true, std::memory_order_release);
    return value;
  }

  // Calls f(T&) for every entry (under the insertion lock).
  template <typename F>
  void for_each(F&& f) {
    std::lock_guard lock(insert_mu_);
    for (T& value : storage_) f(value);
  }

 private:
  struct Slot {
    std::atomic<std::uintptr_t> key{0};
    std::atomic<T*> value{nullptr};
  };

  std::size_t index_of(std::uintptr_t key) const noexcept {
    return static_cast<std::size_t>((key >> 3) * 0x9E3779B97F4A7C15ull >> 20) & mask_;
  }

  std::unique_ptr<Slot[]> slots_;
  std::size_t mask_;
  std::size_t used_ = 0;  // guarded by insert_mu_
  mutable std::mutex insert_mu_;
  std::deque<T> storage_;                            // stable addresses; guarded by insert_mu_
  std::unordered_map<std::uintptr_t, T*> overflow_;  // guarded by insert_mu_
  std::atomic<bool> overflowed_{false};
};

}  // namespace sluice::shim
