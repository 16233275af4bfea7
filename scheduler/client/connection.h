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
};

// Tries each path in order; the error names every path and why it failed.
Result<std::unique_ptr<Connection>> connect_to_daemon(const std::vector<std::string>& paths,
                                                      const protocol::Hello& hello);

}  // namespace sluice::sched
