#include "runtime.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <cstdlib>
#include <string_view>

#include "real_driver.h"
#include "sluice/common/env.h"
#include "sluice/common/log.h"
#include "sluice/shim/gate_factory.h"
#include "sluice/shim/toggle_gate.h"

namespace sluice::shim {
// Implemented by scheduler/client when it is linked into libsluice.so; absent otherwise.
std::unique_ptr<Gate> make_daemon_gate(const GateEnvironment& env) __attribute__((weak));
}  // namespace sluice::shim

namespace sluice::shim::preload {

constinit std::atomic<Runtime*> g_runtime{nullptr};

namespace {

// Plain pthread objects: no constructor runs at load time, and the fork child can reset them.
pthread_mutex_t g_init_mu = PTHREAD_MUTEX_INITIALIZER;
thread_local bool t_initializing = false;
bool g_process_hooks_installed = false;    // guarded by g_init_mu; survives fork on purpose
bool g_gate_selected_before_fork = false;  // the child selects its own gate at once

EngineOptions engine_options() {
  EngineOptions options;
  options.context_switches_reported = true;  // every context-switching entry point is a hook
  auto max_hold_ms = env::get_u64("SLUICE_MAX_HOLD_MS", options.max_hold_ns / 1000000);
  if (max_hold_ms) {
    options.max_hold_ns = *max_hold_ms * 1000000;
  } else {
    log::warn("{}; using {} ms", max_hold_ms.error().message, options.max_hold_ns / 1000000);
  }
  auto priority = env::get_bool("SLUICE_STREAM_PRIORITY", true);
  if (priority) {
    options.stream_priority = *priority;
  } else {
    log::warn("{}; stream priorities follow the class", priority.error().message);
  }
  options.kill = kill_options_from_environment();
  return options;
}

void at_exit() {
  Runtime* rt = g_runtime.load(std::memory_order_acquire);
  if (rt == nullptr || rt->engine == nullptr) return;
  rt->engine->flush();
  // The driver's own exit handlers may tear it down after this one; the gate's thread stops
  // calling it first (a segfault at exit was seen in 2 of 36 runs of an MPS client).
  rt->engine->process_exiting();
  write_stats(*rt);
}

void before_fork() {
  pthread_mutex_lock(&g_init_mu);
}
void after_fork_parent() {
  pthread_mutex_unlock(&g_init_mu);
}
void after_fork_child() {
  // The parent's engine threads do not exist here and its locks may be held: leave its objects
  // alone and build new ones on the next call.
  Runtime* parent = g_runtime.load(std::memory_order_acquire);
  g_gate_selected_before_fork = parent != nullptr && parent->gate_selected.load();
  g_runtime.store(nullptr, std::memory_order_release);
  g_init_mu = PTHREAD_MUTEX_INITIALIZER;
}

Runtime* build() {
  auto rt = std::make_unique<Runtime>();
  LoadedDriver driver = load_real_driver();
  if (driver.handle != nullptr) {
    rt->real.resolve(driver.handle);
    rt->driver_handle = driver.handle;
    rt->driver_loaded = true;
    rt->driver_path = driver.path;
    log::debug("real driver: {}", driver.path);
  } else {
    rt->driver_problem = driver.problem;
    log::error("{}; every CUDA call will fail with CUDA_ERROR_NO_DEVICE", driver.problem);
  }
  rt->engine = new Engine(rt->real, engine_options());
  return rt.release();
}

}  // namespace

Runtime* initialize() noexcept {
  if (t_initializing) return nullptr;  // the driver's own constructors calling back into us
  t_initializing = true;
  pthread_mutex_lock(&g_init_mu);
  Runtime* rt = g_runtime.load(std::memory_order_acquire);
  try {
    if (rt == nullptr) {
      rt = build();
      if (!g_process_hooks_installed) {
        std::atexit(at_exit);
        pthread_atfork(before_fork, after_fork_parent, after_fork_child);
        g_process_hooks_installed = true;
      }
      g_runtime.store(rt, std::memory_order_release);
    }
  } catch (...) {
    log::error("sluice could not initialize (out of memory?); CUDA calls will fail");
  }
  pthread_mutex_unlock(&g_init_mu);
  t_initializing = false;
  if (rt != nullptr && g_gate_selected_before_fork) select_gate(*rt);
  return rt;
}

void select_gate(Runtime& rt) noexcept {
  if (rt.gate_selected.exchange(true)) return;
  try {
    const std::string spec = env::get("SLUICE_GATE").value_or("daemon");
    std::unique_ptr<Gate> gate;
    if (spec == "open") {
      // the engine's own open gate
    } else if (spec.rfind("toggle:", 0) == 0) {
      // toggle:<ms> or toggle:<ms>:<partition SMs>
      char* end = nullptr;
      std::uint64_t ms = std::strtoull(spec.c_str() + 7, &end, 10);
      std::uint64_t sms = 0;
      if (end != nullptr && *end == ':') sms = std::strtoull(end + 1, &end, 10);
      if (ms == 0 || end == nullptr || *end != '\0' || sms > 4096 || sms % 8 != 0) {
        log::warn("SLUICE_GATE='{}': expected toggle:<milliseconds>[:<SMs, a multiple of 8>]; "
                  "using toggle:5", spec);
        ms = 5;
        sms = 0;
      }
      gate = std::make_unique<ToggleGate>(*rt.engine, ms * 1000000, static_cast<std::uint32_t>(sms));
    } else if (spec == "daemon") {
      if (&make_daemon_gate == nullptr) {
        log::info("this libsluice.so has no daemon client; the gate stays open");
      } else {
        gate =
            make_daemon_gate(GateEnvironment{*rt.engine, *rt.engine, rt.real, rt.engine->stats()});
        if (!gate) log::warn("no daemon gate; the gate stays open");
      }
    } else {
      log::warn("SLUICE_GATE='{}' is not one of daemon, open, toggle:<ms>[:<SMs>]; the gate stays open",
                spec);
    }
    rt.engine->set_gate(gate.get());
    rt.gate = std::move(gate);
    log::debug("gate: {}", rt.engine->gate().name());
  } catch (...) {
    log::error("internal error while choosing the gate; the gate stays open");
    rt.engine->set_gate(nullptr);
  }
}

void write_stats(Runtime& rt) noexcept {
  try {
    auto path = env::get("SLUICE_STATS_FILE");
    if (!path || path->empty()) return;
    std::string expanded;
    for (std::size_t i = 0; i < path->size(); ++i) {
      if ((*path)[i] == '%' && i + 1 < path->size() && (*path)[i + 1] == 'p') {
        expanded += std::to_string(getpid());
        ++i;
      } else {
        expanded += (*path)[i];
      }
    }
    const std::string json = rt.engine->stats().to_json(rt.engine->gate().name());
    const int fd =
        ::open(expanded.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
      log::warn("SLUICE_STATS_FILE: cannot write {}", expanded);
      return;
    }
    std::string_view rest = json;
    while (!rest.empty()) {
      const ssize_t n = ::write(fd, rest.data(), rest.size());
      if (n <= 0) break;
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
    ::close(fd);
  } catch (...) {
    log::warn("internal error while writing the statistics file");
  }
}

void warn_once(Runtime& rt, Sym sym, const char* what) noexcept {
  if (rt.warned[static_cast<std::size_t>(sym)].exchange(true, std::memory_order_relaxed)) return;
  log::warn("{}: {}", sym_name(sym), what);
}

}  // namespace sluice::shim::preload
