#include "report.h"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>

namespace sluice::trace {

namespace {

// An unsigned integer field of `object`, or an error naming it.
Result<std::uint64_t> unsigned_field(const nlohmann::json& object, const char* name, std::size_t index) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_number_unsigned()) {
    return make_error("processes[{}].{}: expected an unsigned integer", index, name);
  }
  return it->get<std::uint64_t>();
}

}  // namespace

void sort_processes(std::vector<ProcessCounts>& processes) {
  std::sort(processes.begin(), processes.end(), [](const ProcessCounts& a, const ProcessCounts& b) {
    if (a.launches != b.launches) return a.launches > b.launches;
    return a.pid < b.pid;
  });
}

nlohmann::json to_json(const Snapshot& snapshot) {
  nlohmann::json processes = nlohmann::json::array();
  std::uint64_t launches = 0, copies = 0;
  for (const ProcessCounts& p : snapshot.processes) {
    processes.push_back({{"pid", p.pid}, {"comm", p.comm}, {"launches", p.launches}, {"copies", p.copies}});
    launches += p.launches;
    copies += p.copies;
  }
  return {{"driver", snapshot.driver},
          {"probes", snapshot.probes},
          {"elapsed_s", std::round(snapshot.elapsed_s * 1000) / 1000},
          {"launches_total", launches},
          {"copies_total", copies},
          {"lost", snapshot.lost},
          {"processes", processes}};
}

std::string to_table(const Snapshot& snapshot) {
  std::string out = fmt::format("sluice-trace: {} ({} probes), {:.1f} s\n", snapshot.driver, snapshot.probes,
                                snapshot.elapsed_s);
  if (snapshot.processes.empty()) return out + "no process called the driver's launch or copy entry points\n";
  out += fmt::format("{:>8}  {:<16} {:>12} {:>12}\n", "PID", "COMM", "LAUNCHES", "COPIES");
  for (const ProcessCounts& p : snapshot.processes) {
    out += fmt::format("{:>8}  {:<16} {:>12} {:>12}\n", p.pid, p.comm, p.launches, p.copies);
  }
  if (snapshot.lost != 0) out += fmt::format("{} calls not counted: more than the map's processes\n", snapshot.lost);
  return out;
}

Result<std::vector<ProcessCounts>> processes_from_json_line(const std::string& line) {
  nlohmann::json parsed = nlohmann::json::parse(line, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) return make_error("not a JSON object");
  auto list = parsed.find("processes");
  if (list == parsed.end() || !list->is_array()) return make_error("processes: expected an array");
  std::vector<ProcessCounts> out;
  for (std::size_t i = 0; i < list->size(); ++i) {
    const nlohmann::json& entry = (*list)[i];
    if (!entry.is_object()) return make_error("processes[{}]: expected an object", i);
    auto pid = unsigned_field(entry, "pid", i);
    if (!pid) return std::move(pid).take_error();
    if (*pid == 0 || *pid > INT_MAX) return make_error("processes[{}].pid: {} is not a process id", i, *pid);
    auto launches = unsigned_field(entry, "launches", i);
    if (!launches) return std::move(launches).take_error();
    auto copies = unsigned_field(entry, "copies", i);
    if (!copies) return std::move(copies).take_error();
    ProcessCounts p;
    p.pid = static_cast<std::uint32_t>(*pid);
    if (auto comm = entry.find("comm"); comm != entry.end() && comm->is_string()) p.comm = comm->get<std::string>();
    p.launches = *launches;
    p.copies = *copies;
    out.push_back(std::move(p));
  }
  return out;
}

Result<double> parse_duration(const std::string& option, const std::string& text) {
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  std::string_view unit(end, static_cast<std::size_t>(text.data() + text.size() - end));
  double scale = unit.empty() || unit == "s" ? 1.0 : unit == "ms" ? 1e-3 : unit == "m" ? 60.0 : -1.0;
  if (ec != std::errc() || scale < 0 || !std::isfinite(value) || value <= 0) {
    return make_error("{} '{}': expected a positive duration like 2s, 500ms or 1m", option, text);
  }
  return value * scale;
}

}  // namespace sluice::trace
