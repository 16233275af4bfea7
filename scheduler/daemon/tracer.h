// sluiced's view of GPU processes that bypass sluice: it runs sluice-trace (tools/sluice-trace)
// as a child, reads its JSON lines (per-process counts of the driver's launch and copy entry
// points), and reports the traced processes that are not sluice clients as "unmanaged" in the
// status reply (docs/operations.md, "sluice-trace").
//
// Thread rules: a reader thread owns the child's output; every public member may be called from
// any thread (one mutex guards the counts and the known client pids).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "report.h"

namespace sluice::sched {

struct TracerOptions {
  std::string program;  // sluice-trace: a path, or a name looked up on PATH
  std::string driver;   // --driver; empty: sluice-trace's default (the real libcuda.so.1)
  std::string interval = "1s";
};

// The status reply's "unmanaged" object: {"launches_total": N, "processes": [{"pid", "comm",
// "launches", "copies"}]} over the traced processes whose pid is not in `clients`.
nlohmann::json unmanaged_json(const std::vector<trace::ProcessCounts>& traced, const std::set<std::uint32_t>& clients);

// sluice-trace next to the running executable, else on PATH; $SLUICE_TRACE_PROGRAM overrides.
std::string default_trace_program();

class Tracer {
 public:
  // Starts the tracer. Never fails: when it cannot start or exits, sluiced logs why once and
  // status reports the state ("failed") and the reason.
  explicit Tracer(TracerOptions options);
  ~Tracer();  // stops the child (SIGTERM, then SIGKILL) and joins the reader
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  // A pid that connected as a sluice client: never reported as unmanaged, also after it exits.
  void note_client(std::uint32_t pid);
  // {"launches_total", "processes"} (see unmanaged_json) plus "state" (starting, running,
  // failed), "driver" and, once failed, "error".
  nlohmann::json status() const;

 private:
  void read_output(int fd);
  void on_line(const std::string& line);
  void on_exit(const siginfo_t& info);

  TracerOptions options_;
  mutable std::mutex mu_;
  std::vector<trace::ProcessCounts> traced_;
  std::set<std::uint32_t> clients_;
  std::string state_ = "starting";
  std::string error_;
  std::string last_message_;  // the child's last line that was not JSON (its error message)
  pid_t pid_ = -1;  // set once by the constructor; reaped only by the destructor
  int wake_[2] = {-1, -1};  // the destructor writes to wake_[1] to stop the reader
  std::thread reader_;
};

}  // namespace sluice::sched
