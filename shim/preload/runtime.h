// The shim's process-wide state: the real driver, the engine and the gate, created on first use.
//
// Nothing here runs in a static constructor. runtime() initializes on the first call of any
// exported entry point; a forked child starts over with a fresh engine (and release thread) while
// the parent's objects are left untouched. At exit, held work is submitted, the gate's threads stop
// calling the driver (which the exit may tear down under them) and the statistics file is written
// (SLUICE_STATS_FILE).
//
// Thread rules: runtime() from any thread; initialization is serialized by one mutex and is never
// re-entered (a driver call made while sluice itself initializes gets CUDA_ERROR_NOT_INITIALIZED).
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <string>

#include "sluice/shim/driver_api.h"
#include "sluice/shim/engine.h"
#include "sluice/shim/gate.h"

namespace sluice::shim::preload {

struct Runtime {
  DriverApi real;                 // the real driver's entry points (null where it lacks one)
  void* driver_handle = nullptr;  // its dlopen handle
  bool driver_loaded = false;
  std::string driver_path;     // where it was loaded from, or
  std::string driver_problem;  // why no driver could be loaded
  Engine* engine = nullptr;    // never destroyed: threads may still call in during exit
  std::unique_ptr<Gate> gate;  // the gate chosen at the first successful cuInit
  std::atomic<bool> gate_selected{false};
  std::array<std::atomic<bool>, kSymCount> warned{};  // one warning per entry point
};

extern constinit std::atomic<Runtime*> g_runtime;

Runtime* initialize() noexcept;

// The runtime, initialized on first use; nullptr only during sluice's own initialization.
inline Runtime* runtime() noexcept {
  Runtime* rt = g_runtime.load(std::memory_order_acquire);
  return rt != nullptr ? rt : initialize();
}

// Chooses the gate (SLUICE_GATE) once, after the first successful cuInit.
void select_gate(Runtime& rt) noexcept;

// Writes the statistics file now (also done at exit).
void write_stats(Runtime& rt) noexcept;

// Logs once per entry point: `what` happened in `sym`.
void warn_once(Runtime& rt, Sym sym, const char* what) noexcept;

}  // namespace sluice::shim::preload
