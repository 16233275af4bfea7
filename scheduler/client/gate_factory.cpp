// make_daemon_gate(): the shim's entry point into the client (sluice/shim/gate_factory.h).
#include "sluice/shim/gate_factory.h"

#include <exception>

#include "sluice/common/log.h"
#include "sluice/scheduler/client.h"

namespace sluice::shim {

std::unique_ptr<Gate> make_daemon_gate(const GateEnvironment& env) {
  try {
    return sched::make_client_gate(env, sched::client_options_from_environment());
  } catch (const std::exception& error) {
    log::error("cannot start the daemon gate: {}; using the open gate", error.what());
  } catch (...) {
    log::error("cannot start the daemon gate; using the open gate");
  }
  return nullptr;
}

}  // namespace sluice::shim
