// sluice-trace: counts, per process, the calls of the CUDA driver's launch and copy entry points,
// system-wide, with uprobes on the driver library (docs/operations.md, "sluice-trace").
//
//   1. parse the command line; find the driver library (--driver, else the real libcuda.so.1)
//   2. read its launch and copy symbols (symbols.cpp)
//   3. check privileges and kernel support, load the BPF program, attach the uprobes (probe.cpp)
//   4. print the counts: once after --duration (--once), or every --interval until SIGINT/SIGTERM
//
// Exit codes: 0 success; 1 failure while tracing; 2 bad input (usage, driver library not found
// or not a driver, a symbol missing); 3 not permitted (needs root or CAP_BPF + CAP_PERFMON);
// 4 the kernel lacks uprobe or BPF support.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>

#include "probe.h"
#include "report.h"
#include "symbols.h"

namespace {

using sluice::trace::FailureCause;

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true); }

// Sleeps up to `seconds`; false when a signal asked to stop.
bool sleep_unless_stopped(double seconds) {
  using Clock = std::chrono::steady_clock;
  Clock::time_point deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (!g_stop.load()) {
    Clock::duration left = deadline - Clock::now();
    if (left <= Clock::duration::zero()) return true;
    std::this_thread::sleep_for(std::min<Clock::duration>(left, std::chrono::milliseconds(50)));
  }
  return false;
}

int fail(FailureCause cause, const std::string& message) {
  std::cerr << "sluice-trace: " << message << std::endl;
  return static_cast<int>(cause);
}

// Prints one snapshot; false when stdout is gone (the reader exited).
bool print(const sluice::trace::Snapshot& snapshot, bool as_json) {
  std::string text = as_json ? sluice::trace::to_json(snapshot).dump() + "\n" : sluice::trace::to_table(snapshot);
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size()) return false;
  return std::fflush(stdout) == 0;
}

int run(int argc, char** argv) {
  CLI::App app{"sluice-trace: per-process counts of CUDA driver launches and copies, system-wide (eBPF uprobes)"};
  std::string driver, duration_text = "2s", interval_text = "1s";
  bool once = false, as_json = false, list_symbols = false;
  app.add_option("--driver", driver, "the driver library to probe (default: libcuda.so.1 from ldconfig, else "
                                     "/usr/lib/x86_64-linux-gnu, /usr/local/nvidia/lib64, /usr/lib64)");
  app.add_flag("--once", once, "print the counts once, after --duration, and exit");
  app.add_option("--duration", duration_text, "how long --once counts (default 2s; e.g. 500ms, 10s, 1m)");
  app.add_option("--interval", interval_text, "without --once: print the counts so far this often (default 1s)");
  app.add_flag("--json", as_json, "one JSON object per line instead of a table");
  app.add_flag("--list-symbols", list_symbols, "print the entry points that would be probed and exit (no BPF)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    int code = app.exit(error);
    return code == 0 ? 0 : static_cast<int>(FailureCause::bad_input);
  }

  auto duration = sluice::trace::parse_duration("--duration", duration_text);
  if (!duration) return fail(FailureCause::bad_input, duration.error().message);
  auto interval = sluice::trace::parse_duration("--interval", interval_text);
  if (!interval) return fail(FailureCause::bad_input, interval.error().message);

  if (driver.empty()) {
    driver = sluice::trace::find_driver_library();
    if (driver.empty()) {
      return fail(FailureCause::bad_input,
                  "no CUDA driver library found (libcuda.so.1 is neither known to ldconfig nor in "
                  "/usr/lib/x86_64-linux-gnu, /usr/local/nvidia/lib64, /usr/lib64); name one with --driver");
    }
  }
  std::error_code ignored;
  if (auto canonical = std::filesystem::canonical(driver, ignored); !ignored) driver = canonical.string();
  auto symbols = sluice::trace::driver_entry_points(driver);
  if (!symbols) return fail(FailureCause::bad_input, symbols.error().message);
  if (list_symbols) {
    for (const auto& s : *symbols) {
      std::cout << fmt::format("{:#010x} {} {}\n", s.offset, s.kind == sluice::trace::EntryKind::launch ? "launch" : "copy",
                               s.name);
    }
    return 0;
  }

  // A closed stdout must end the tracer (sluiced reads it through a pipe), not kill it silently.
  signal(SIGPIPE, SIG_IGN);
  // Without SA_RESTART: a write blocked on a reader that stalls returns at SIGTERM, so we exit.
  struct sigaction stop {};
  stop.sa_handler = on_signal;
  sigaction(SIGINT, &stop, nullptr);
  sigaction(SIGTERM, &stop, nullptr);
  sluice::trace::Failure failure;
  auto probe = sluice::trace::Probe::attach(driver, *symbols, failure);
  if (!probe) return fail(failure.cause, failure.message);
  for (const std::string& why : probe->skipped()) std::cerr << "sluice-trace: skipped: " << why << "\n";
  std::cerr << fmt::format("sluice-trace: {} probes on {}\n", symbols->size() - probe->skipped().size(), driver);

  if (once) {
    sleep_unless_stopped(*duration);
    return print(probe->read(), as_json) ? 0 : 1;
  }
  // The first line comes at once, so a reader knows the probes are in place.
  do {
    if (!print(probe->read(), as_json)) return 1;
  } while (sleep_unless_stopped(*interval));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "sluice-trace: " << error.what() << std::endl;
    return 1;
  }
}
