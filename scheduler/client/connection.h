// One connection of a client to sluiced: the socket (whose hang-up means the daemon is gone), the
// shared segment with its two rings, and the doorbells.
//
// Thread rules: the ring to sluiced has one producer at a time (ClientGate serialises its callers
// with a process-local mutex); the ring from sluiced is read by the gate's own thread only.
#pragma once

#include <string>
#include <vector>

#include "sluice/common/result.h"
#include "sluice/protocol/ring.h"
#include "sluice/protocol/segment.h"

namespace sluice::sched {

struct Connection {
  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  std::string socket_path;
  int socket_fd = -1;
  int doorbell_to_daemon = -1;  // rung when sluiced sleeps
  int doorbell_to_client = -1;  // sluiced rings it; the gate's thread waits on it
  protocol::Mapping mapping;
  protocol::SegmentView view;
  protocol::RingWriter to_daemon;
  protocol::RingReader from_daemon;
  std::uint64_t epoch = 0;
  std::uint32_t client_id = 0;
  protocol::Class cls = protocol::Class::be;
  std::string rule;  // the policy rule that classified us
  std::string mps_pipe_dir;  // the daemon's MPS pipe directory ("" outside mps mode)
};

// The largest segment a client maps (the default layout needs about 1 MiB).
inline constexpr std::uint64_t kMaxSegmentBytes = std::uint64_t{64} << 20;

// The handshake's checks of what sluiced sent, in order; each error says what is wrong. Also fed
// arbitrary bytes by tests/fuzz/handshake.
//   check_welcome: the welcome (magic, status, segment size) and the number of descriptors;
//   attach_segment: maps `memfd` (always closed) after checking that the file is as large as the
//   welcome says, reads and checks the layout, and sets `connection`'s mapping, view and rings.
Status check_welcome(const protocol::Welcome& welcome, std::size_t fds);
Status attach_segment(Connection& connection, const protocol::Welcome& welcome, int memfd);

// Tries each path in order; the error names every path and why it failed. A daemon in mps mode
// announces its MPS pipe directory; the first connection sets CUDA_MPS_PIPE_DIRECTORY to it
// (apply_mps_pipe_dir) unless the process has one of its own.
Result<std::unique_ptr<Connection>> connect_to_daemon(const std::vector<std::string>& paths,
                                                      const protocol::Hello& hello);

inline constexpr const char* kMpsPipeEnv = "CUDA_MPS_PIPE_DIRECTORY";

// Sets CUDA_MPS_PIPE_DIRECTORY to `dir` when it is non-empty and the variable is unset or empty.
// Returns true when it set it. The driver reads the variable when it initializes, so this only
// takes effect for this process when it runs before the real cuInit (and for children started
// later). Thread rules: setenv; call it while no other thread reads the environment.
bool apply_mps_pipe_dir(const std::string& dir);

// Asks the daemon for the environment its clients need before the driver initializes (the MPS
// pipe directory in mps mode) and applies it with apply_mps_pipe_dir(). One control round trip,
// bounded by a short timeout; a daemon that is not there or does not answer changes nothing.
// Meant for the shim's cuInit hook, before it calls the real cuInit.
Status prepare_driver_environment(const std::vector<std::string>& paths);

}  // namespace sluice::sched

// The same for the shim, which can declare it weak without including this header:
//   extern "C" int sluice_prepare_driver_environment(void) __attribute__((weak));
// Asks the daemon at the client socket paths (SLUICE_SOCKET, ...). Returns 0 when it answered,
// 1 otherwise; never throws, never exits, and waits at most a short timeout per path.
extern "C" int sluice_prepare_driver_environment(void) noexcept;
