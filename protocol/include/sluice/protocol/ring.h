// Single-producer single-consumer rings of fixed-size slots in shared memory.
//
// Each side keeps a private copy of the index it owns and only publishes it; the index it reads
// from the other side is checked before use, so a peer that scribbles over the control block makes
// the ring report `corrupt` instead of making the reader run off the end of the segment.
//
// Waking: a consumer that wants to sleep calls prepare_wait(); if that returns true it sleeps on
// its eventfd (doorbell.h) with a timeout, then calls finish_wait(). A producer calls
// should_ring() after publishing and rings the doorbell only when the consumer is asleep, so the
// common path is a few stores and no system call.
//
// Thread rules: one thread at a time per side (callers serialise several producers themselves).
// Both sides may run in different processes.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>

#include "sluice/protocol/layout.h"

namespace sluice::protocol {

enum class RingResult : std::uint8_t { ok, empty, full, corrupt };

namespace detail {
inline std::atomic_ref<std::uint64_t> index_ref(std::uint64_t& field) {
  return std::atomic_ref<std::uint64_t>(field);
}
inline std::atomic_ref<std::uint32_t> flag_ref(std::uint32_t& field) {
  return std::atomic_ref<std::uint32_t>(field);
}
}  // namespace detail

class RingWriter {
 public:
  RingWriter() = default;
  // `control` must already hold the ring's current head (0 for a new ring).
  RingWriter(RingControl* control, Slot* slots, std::uint32_t capacity)
      : control_(control), slots_(slots), capacity_(capacity),
        head_(detail::index_ref(control->head).load(std::memory_order_relaxed)) {}

  bool valid() const noexcept { return control_ != nullptr; }

  // Copies `size` bytes (at most one slot; the rest of the slot is zeroed) into the next slot and
  // publishes it.
  RingResult push(const void* message, std::size_t size) noexcept {
    std::uint64_t tail = detail::index_ref(control_->tail).load(std::memory_order_acquire);
    if (tail > head_ || head_ - tail > capacity_) return RingResult::corrupt;
    if (head_ - tail == capacity_) return RingResult::full;
    Slot& slot = slots_[head_ % capacity_];
    if (size > sizeof(Slot)) size = sizeof(Slot);
    std::memcpy(slot.bytes, message, size);
    if (size < sizeof(Slot)) std::memset(slot.bytes + size, 0, sizeof(Slot) - size);
    ++head_;
    // seq_cst: pairs with prepare_wait() so that either the consumer sees this slot or we see it
    // asleep (should_ring()).
    detail::index_ref(control_->head).store(head_, std::memory_order_seq_cst);
    return RingResult::ok;
  }

  template <typename Msg>
  RingResult push(const Msg& message) noexcept {
    static_assert(sizeof(Msg) == sizeof(Slot));
    return push(&message, sizeof(Msg));
  }

  // After one or more pushes: true when the consumer sleeps and its doorbell must be rung.
  bool should_ring() const noexcept {
    return detail::flag_ref(control_->consumer_waiting).load(std::memory_order_seq_cst) != 0;
  }

  // Slots free right now (0 when the ring looks corrupt).
  std::uint64_t free_slots() const noexcept {
    std::uint64_t tail = detail::index_ref(control_->tail).load(std::memory_order_acquire);
    if (tail > head_ || head_ - tail > capacity_) return 0;
    return capacity_ - (head_ - tail);
  }

 private:
  RingControl* control_ = nullptr;
  Slot* slots_ = nullptr;
  std::uint32_t capacity_ = 0;
  std::uint64_t head_ = 0;
};

class RingReader {
 public:
  RingReader() = default;
  RingReader(RingControl* control, Slot* slots, std::uint32_t capacity)
      : control_(control), slots_(slots), capacity_(capacity),
        tail_(detail::index_ref(control->tail).load(std::memory_order_relaxed)) {}

  bool valid() const noexcept { return control_ != nullptr; }

  // Copies the next slot into `out` (once: callers validate the copy, never the shared slot).
  RingResult pop(Slot& out) noexcept {
    std::uint64_t head = detail::index_ref(control_->head).load(std::memory_order_acquire);
    if (head == tail_) return RingResult::empty;
    if (head < tail_ || head - tail_ > capacity_) return RingResult::corrupt;
    std::memcpy(&out, &slots_[tail_ % capacity_], sizeof(Slot));
    ++tail_;
    detail::index_ref(control_->tail).store(tail_, std::memory_order_release);
    return RingResult::ok;
  }

  // Copies up to `max` slots and publishes the new tail once. Returns how many were copied, or
  // sets `corrupt` and returns 0.
  std::size_t pop_batch(Slot* out, std::size_t max, bool& corrupt) noexcept {
    corrupt = false;
    std::uint64_t head = detail::index_ref(control_->head).load(std::memory_order_acquire);
    if (head < tail_ || head - tail_ > capacity_) {
      corrupt = true;
      return 0;
    }
    std::size_t count = static_cast<std::size_t>(head - tail_);
    if (count > max) count = max;
    for (std::size_t i = 0; i < count; ++i) {
      std::memcpy(&out[i], &slots_[(tail_ + i) % capacity_], sizeof(Slot));
    }
    if (count > 0) {
      tail_ += count;
      detail::index_ref(control_->tail).store(tail_, std::memory_order_release);
    }
    return count;
  }

  // Messages published and not consumed yet (0 when the ring looks corrupt).
  std::uint64_t pending() const noexcept {
    std::uint64_t head = detail::index_ref(control_->head).load(std::memory_order_acquire);
    if (head < tail_ || head - tail_ > capacity_) return 0;
    return head - tail_;
  }

  // Announces that the consumer is about to sleep. Returns false (and withdraws the announcement)
  // when a message arrived meanwhile, in which case the consumer must not sleep.
  bool prepare_wait() noexcept {
    detail::flag_ref(control_->consumer_waiting).store(1, std::memory_order_seq_cst);
    std::uint64_t head = detail::index_ref(control_->head).load(std::memory_order_seq_cst);
    if (head != tail_) {
      finish_wait();
      return false;
    }
    return true;
  }

  void finish_wait() noexcept {
    detail::flag_ref(control_->consumer_waiting).store(0, std::memory_order_relaxed);
  }

 private:
  RingControl* control_ = nullptr;
  Slot* slots_ = nullptr;
  std::uint32_t capacity_ = 0;
  std::uint64_t tail_ = 0;
};

}  // namespace sluice::protocol
