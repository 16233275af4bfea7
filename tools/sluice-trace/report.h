// What sluice-trace prints: per-process counts as a table or as one JSON object per line; and
// the reader of those lines (sluiced --trace).
//
// JSON line (cumulative since the probes were attached):
//   {"driver": PATH, "probes": N, "elapsed_s": S, "launches_total": N, "copies_total": N,
//    "lost": N, "processes": [{"pid": N, "comm": "...", "launches": N, "copies": N}, ...]}
//
// Thread rules: pure functions; any thread.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sluice/common/result.h"

namespace sluice::trace {

struct ProcessCounts {
  std::uint32_t pid = 0;
  std::string comm;
  std::uint64_t launches = 0;
  std::uint64_t copies = 0;
};

struct Snapshot {
  std::string driver;
  std::size_t probes = 0;
  double elapsed_s = 0;
  std::uint64_t lost = 0;  // calls of processes the full map had no room for
  std::vector<ProcessCounts> processes;  // sorted: most launches first, then by pid
};

void sort_processes(std::vector<ProcessCounts>& processes);
nlohmann::json to_json(const Snapshot& snapshot);
std::string to_table(const Snapshot& snapshot);
// The processes of one JSON line. The error names the field that is wrong.
Result<std::vector<ProcessCounts>> processes_from_json_line(const std::string& line);

// "2s", "500ms", "1.5s", "1m", or plain seconds ("2"); positive. The error names the option.
Result<double> parse_duration(const std::string& option, const std::string& text);

}  // namespace sluice::trace
