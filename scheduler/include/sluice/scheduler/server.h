// sluiced's server: the Unix socket, the handshake, one shared segment per client, and the loop
// that feeds client messages to the scheduling core and its decisions back. docs/daemon.md
// describes what it does from the operator's side.
//
// Thread rules: run() on one thread; stop() and reload() from any thread (they only wake run()).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sluice/common/result.h"
#include "sluice/protocol/layout.h"
#include "sluice/scheduler/mps.h"

namespace sluice::sched {

struct ServerOptions {
  std::string socket_path;
  std::optional<std::string> policy_path;  // none: the built-in policy (everyone BE)
  std::vector<int> devices;                // served devices; empty: all
  bool handle_signals = false;             // SIGTERM/SIGINT stop, SIGHUP reloads the policy
  // timeslice: gating (and kill) only. mps: sluiced starts (or adopts) an MPS control daemon with
  // `mps`, tells clients its pipe directory, and partitions BE work while RT is active.
  protocol::SharingMode mode = protocol::SharingMode::timeslice;
  MpsOptions mps;
  bool mps_fallback = false;  // mps mode that cannot start MPS runs in timeslice mode (warns)
  // --admin-group: besides root and sluiced's own user, members of this group may use the mutating
  // control requests (policy reload, set-class of any client).
  std::optional<gid_t> admin_group;
  // --socket-group: the control socket belongs to this group with mode 0660, so that only its
  // members (and root) connect. Without it a root daemon's socket is 0666 and every request is
  // authorised from the caller's credentials.
  std::optional<gid_t> socket_group;
  // sluiced --trace: run sluice-trace (trace_program; empty: next to sluiced, else on PATH) on
  // trace_driver (empty: the real libcuda.so.1) and report processes that bypass sluice.
  bool trace = false;
  std::string trace_driver;
  std::string trace_program;
  // Called by run() on every pass of its loop (at least once a second), on run()'s thread, with the
  // monotonic time in ns: sluiced's systemd watchdog, so that a stuck loop stops the pings.
  std::function<void(std::uint64_t now_ns)> on_loop;
  // Prometheus metrics over HTTP (docs/operations.md): "PORT", "HOST:PORT" or "[V6]:PORT"; empty:
  // off. A non-loopback host needs metrics_any_address.
  std::string metrics_address;
  bool metrics_any_address = false;
};

class Server {
 public:
  // Loads the policy, binds the socket, and in mps mode starts the MPS control daemon. Fails
  // (naming the file, the socket or the program) when the policy does not load, the socket's
  // directory cannot be made, another sluiced listens there, or MPS does not start (unless
  // mps_fallback). The MPS control daemon sluiced started is quit when the Server is destroyed.
  static Result<std::unique_ptr<Server>> start(const ServerOptions& options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Serves until stop() (or SIGTERM/SIGINT with handle_signals).
  Status run();
  void stop() noexcept;
  void reload() noexcept;  // as SIGHUP

  const std::string& socket_path() const;
  std::uint64_t epoch() const;

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::sched
