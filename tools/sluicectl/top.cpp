#include "top.h"

#include <fmt/format.h>

#include "format.h"

namespace sluice::ctl {

using nlohmann::json;

KillCounts kill_counts(const json& ps) {
  KillCounts counts;
  if (!ps.contains("clients")) return counts;
  for (const json& c : ps["clients"]) counts[c.value("pid", 0u)] = c.value("kills", std::uint64_t{0});
  return counts;
}

namespace {

// "kills: 3 total; since the last refresh: pid 812 +2, pid 900 +1" (one line).
std::string format_kills(const json& status, const json& ps, const KillCounts* previous, double interval_s) {
  std::uint64_t total = 0;
  if (status.contains("counters")) total = status["counters"].value("kills", std::uint64_t{0});
  std::string out = fmt::format("kills: {} total", total);
  if (previous == nullptr) return out + "\n";
  std::string recent;
  for (const auto& [pid, kills] : kill_counts(ps)) {
    auto before = previous->find(pid);
    std::uint64_t earlier = before == previous->end() ? 0 : before->second;
    if (kills > earlier) recent += fmt::format("{}pid {} +{}", recent.empty() ? "" : ", ", pid, kills - earlier);
  }
  return out + fmt::format("; in the last {}: {}\n", format_seconds(interval_s), recent.empty() ? "none" : recent);
}

}  // namespace

std::string format_top(const json& status, const json& ps, const json& queue, const KillCounts* previous,
                       double interval_s) {
  return format_status(status) + "\n" + format_ps(ps) + format_kills(status, ps, previous, interval_s) + "\n" +
         format_queue(queue);
}

std::string in_place(const std::string& frame, unsigned rows, unsigned columns) {
  std::string out = "\033[H";
  unsigned lines = 0;
  std::size_t start = 0;
  while (start < frame.size() && (rows == 0 || lines + 1 < rows)) {
    std::size_t end = frame.find('\n', start);
    if (end == std::string::npos) end = frame.size();
    std::size_t width = end - start;
    if (columns != 0 && width > columns) width = columns;
    out += frame.substr(start, width) + "\033[K\n";
    ++lines;
    start = end + 1;
  }
  return out + "\033[J";
}

}  // namespace sluice::ctl
