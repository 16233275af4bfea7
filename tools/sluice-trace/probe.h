// The BPF side of sluice-trace: loads sluice_trace.bpf.c (through its generated skeleton),
// attaches one uprobe per driver entry point for every process, and reads the counts.
//
// Thread rules: one thread uses a Probe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "report.h"
#include "symbols.h"

namespace sluice::trace {

// Why attaching failed; each is its own exit status of sluice-trace.
enum class FailureCause : int { failed = 1, bad_input = 2, permission = 3, unsupported = 4 };

struct Failure {
  FailureCause cause = FailureCause::failed;
  std::string message;
};

class Probe {
 public:
  // Checks privileges and kernel support first, then loads and attaches. On failure returns
  // nullptr and fills `failure` with a message that names the cause.
  static std::unique_ptr<Probe> attach(const std::string& driver, const std::vector<DriverSymbol>& symbols,
                                       Failure& failure);
  ~Probe();
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;

  // The counts since attach().
  Snapshot read() const;
  // The entry points that could not be probed, each with the reason (the others still count).
  const std::vector<std::string>& skipped() const;

 private:
  struct State;
  explicit Probe(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace sluice::trace
