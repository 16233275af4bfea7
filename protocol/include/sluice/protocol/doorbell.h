// Doorbells: non-blocking eventfds that wake a ring's consumer. Every wait has a timeout, so a
// peer that dies between publishing and ringing costs at most one timeout.
//
// Thread rules: any thread may ring; the consumer that owns the doorbell drains and waits.
#pragma once

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <ctime>

namespace sluice::protocol {

// A new doorbell (-1 on failure; errno says why).
inline int make_doorbell() noexcept { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

inline void ring_doorbell(int fd) noexcept {
  std::uint64_t one = 1;
  // EAGAIN means the counter is saturated, i.e. the consumer has a pending wake-up already.
  [[maybe_unused]] ssize_t ignored = write(fd, &one, sizeof(one));
}

// Clears pending rings so the next wait sleeps.
inline void drain_doorbell(int fd) noexcept {
  std::uint64_t count = 0;
  [[maybe_unused]] ssize_t ignored = read(fd, &count, sizeof(count));
}

inline timespec to_timespec(std::uint64_t ns) noexcept {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1000000000ull);
  ts.tv_nsec = static_cast<long>(ns % 1000000000ull);
  return ts;
}

// Waits until the doorbell rings or `timeout_ns` passes. True when it rang.
inline bool wait_doorbell(int fd, std::uint64_t timeout_ns) noexcept {
  pollfd pfd{fd, POLLIN, 0};
  timespec ts = to_timespec(timeout_ns);
  int ready = ppoll(&pfd, 1, &ts, nullptr);
  if (ready > 0) {
    drain_doorbell(fd);
    return true;
  }
  return false;
}

}  // namespace sluice::protocol
