// How the shim obtains the gate that connects it to sluiced. The shim (shim/preload) calls
// make_daemon_gate() once, at the first cuInit, unless SLUICE_GATE names another gate. The function
// is implemented by the client side of the protocol (scheduler/client), which is linked into
// libsluice.so.
//
// Thread rules: make_daemon_gate() is called once, on the application thread that ran cuInit, with
// no sluice lock held. The gate it returns lives until the process exits (or forks: see
// Gate::after_fork_in_child in gate.h when present); it may start its own threads, which must use
// relaxed stream-capture mode for any driver call they make.
#pragma once

#include <memory>

#include "sluice/shim/driver_api.h"
#include "sluice/shim/gate.h"

namespace sluice::shim {

struct Stats;

struct GateEnvironment {
  GateListener& listener;   // call gate_changed() when held work may now be admitted
  KernelCatalog& catalog;   // kernel identity (module hash + name) for launch descriptors
  const DriverApi& driver;  // the real driver, for the gate's own events and memory operations
  Stats& stats;             // the shim's counters, reported to the daemon
};

// Connects to sluiced and returns a gate that follows its decisions. When the daemon cannot be
// reached it follows SLUICE_ON_DAEMON_LOSS: `passthrough` (the default) returns a gate that admits
// everything while it keeps trying to connect in the background; `wait` returns a gate that holds
// best-effort work until a daemon answers. It returns nullptr only on an internal failure, after
// logging why; the shim then falls back to the open gate.
std::unique_ptr<Gate> make_daemon_gate(const GateEnvironment& env);

}  // namespace sluice::shim
