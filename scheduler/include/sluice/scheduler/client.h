// The client side of the protocol: the gate that libsluice.so uses when sluiced runs
// (make_daemon_gate() in sluice/shim/gate_factory.h is implemented on top of this).
//
// What it does
//  * At construction (the shim's cuInit) it connects to sluiced and receives its class and a
//    shared segment. No daemon: it says so once and runs in passthrough (or, with
//    SLUICE_ON_DAEMON_LOSS=wait, holds best-effort work), and keeps trying to connect in the
//    background; after a daemon restart it reconnects the same way.
//  * RT clients: admit() is always true. on_submit() pushes a launch descriptor into the ring
//    (no system call, no lock shared with other processes) so sluiced learns RT is active.
//  * BE clients: admit() is true when the operation's predicted duration fits in the grant of its
//    device (in-flight + predicted <= grant), or when nothing is in flight and the grant is solo.
//    Predictions come from the prediction table sluiced fills; unknown operations use the
//    decision's default prediction. Copies larger than the decision's chunk size are split by the
//    shim's engine (copy_chunk_bytes()).
//  * Completion: the gate records marker events after submitted work (at least every
//    DecisionMsg::marker_ns of predicted work, and after every operation on the per-thread
//    stream) and its thread queries them and the streams themselves (never a capturing stream).
//    Retired work frees grant locally at once and is reported in a status message.
//  * Routes (mps mode): a BE client's route_sms() is the newest decision's partition_sms of the
//    operation's device while the decision says route=partition, else 0 (the full GPU); RT clients
//    and clients without a connection always answer 0. A route that is not full or partition, or a
//    partition that is not a positive multiple of 8 SMs, is logged and read as the full GPU.
//  * Class: stream_class() is unknown until sluiced first answered, then the class it gave
//    (stream priorities follow it; see docs/architecture.md).
//  * Timing samples: about one operation in 16 (and every operation the table cannot predict, up
//    to 64 at a time) is bracketed by timing events; its duration goes to sluiced's model.
//
// Thread rules: as Gate (admit/before_submit/on_submit/on_hold from any thread, concurrently,
// never blocking). The gate's own thread ("sluice-client") uses relaxed stream-capture mode and
// makes every driver call that is not on the submitting thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sluice/protocol/layout.h"
#include "sluice/shim/gate.h"
#include "sluice/shim/gate_factory.h"

namespace sluice::sched {

enum class OnDaemonLoss : std::uint8_t { passthrough, wait };

struct ClientOptions {
  std::vector<std::string> socket_paths;  // tried in order
  OnDaemonLoss on_loss = OnDaemonLoss::passthrough;
  std::string label;                 // SLUICE_CLASS
  std::uint64_t job_length_ms = 0;   // SLUICE_JOB_LENGTH_S
  std::uint64_t deadline_us = 0;     // SLUICE_DEADLINE_US
  std::uint64_t reconnect_ns = 200'000'000;  // first retry; doubles up to 2 s
  std::uint64_t busy_poll_ns = 200'000;      // how often in-flight work is checked
};

// Reads SLUICE_SOCKET, SLUICE_ON_DAEMON_LOSS, SLUICE_CLASS, SLUICE_JOB_LENGTH_S and
// SLUICE_DEADLINE_US. Malformed values are warned about once and ignored.
ClientOptions client_options_from_environment();

// What a client gate knows, for tests and the shim's statistics.
struct ClientState {
  bool connected = false;
  protocol::Class cls = protocol::Class::be;
  std::uint64_t epoch = 0;
  std::uint32_t client_id = 0;
  std::uint64_t connects = 0;        // successful handshakes (reconnects included)
  std::uint64_t decisions = 0;       // applied
  std::uint64_t dropped_messages = 0;  // the ring to sluiced was full
  std::uint64_t samples = 0;
  std::uint64_t inflight_ns = 0;     // device 0 (or the default device)
  std::uint64_t grant_ns = 0;
};

class ClientGate : public shim::Gate {
 public:
  virtual ClientState state() const = 0;
};

std::unique_ptr<ClientGate> make_client_gate(const shim::GateEnvironment& env, ClientOptions options);

}  // namespace sluice::sched
