// The systemd notification protocol (sd_notify(3)) without libsystemd: one AF_UNIX datagram per
// state change to $NOTIFY_SOCKET. sluiced uses it so that a `Type=notify` unit knows when the
// socket listens (READY=1), what the daemon is doing (STATUS=), that the scheduling loop still
// turns (WATCHDOG=1), and that it is shutting down (STOPPING=1). packaging/systemd/sluiced.service
// is the unit; docs/operations.md, "Running under systemd", the operator's side.
//
// Without $NOTIFY_SOCKET (not started by systemd) every call is a no-op.
//
// Thread rules: not thread-safe. sluiced calls it from its main thread, which also runs the
// server's loop (the watchdog ticks come from that loop).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "sluice/common/result.h"

namespace sluice::sched {

class SystemdNotifier {
 public:
  // Reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID, then removes them from the environment
  // so that programs sluiced starts (the MPS control daemon) do not inherit them. Malformed values
  // are logged once, naming the variable, and turn that part off; they never stop the daemon.
  static SystemdNotifier from_environment();

  SystemdNotifier() = default;  // disabled
  // socket_path: a file system path, or "@name" for the abstract namespace. watchdog_usec: 0 = no
  // watchdog. Does not touch the environment.
  SystemdNotifier(std::string socket_path, std::uint64_t watchdog_usec);
  SystemdNotifier(SystemdNotifier&& other) noexcept;
  SystemdNotifier& operator=(SystemdNotifier&& other) noexcept;
  SystemdNotifier(const SystemdNotifier&) = delete;
  SystemdNotifier& operator=(const SystemdNotifier&) = delete;
  ~SystemdNotifier();

  bool enabled() const { return !socket_path_.empty(); }
  // How often the loop must call watchdog_tick(): half of WATCHDOG_USEC; 0 when there is no watchdog.
  std::uint64_t watchdog_period_ns() const { return watchdog_period_ns_; }

  // Sends `state` ("READY=1\nSTATUS=...") as one datagram. Fails naming $NOTIFY_SOCKET.
  Status send(std::string_view state);

  // The messages sluiced sends; each logs a failure once and otherwise returns nothing.
  void ready(std::string_view text);
  void status(std::string_view text);
  void stopping(std::string_view text);
  // From the scheduling loop, on every pass: sends WATCHDOG=1 when watchdog_period_ns() has passed
  // since the last one (the first call sends at once).
  void watchdog_tick(std::uint64_t now_ns);

 private:
  void send_or_warn(std::string_view state);

  std::string socket_path_;
  std::uint64_t watchdog_period_ns_ = 0;
  std::uint64_t last_watchdog_ns_ = 0;
  bool watchdog_sent_ = false;
  bool warned_ = false;
  int fd_ = -1;
};

// "STATUS=" text: newlines (which would start a new assignment) become spaces.
std::string notify_status_line(std::string_view text);

}  // namespace sluice::sched
