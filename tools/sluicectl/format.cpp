#include "format.h"

#include <fmt/format.h>

#include <cmath>

namespace sluice::ctl {

using nlohmann::json;

namespace {

double number(const json& value, const char* key, double fallback = 0) {
  return value.contains(key) && value[key].is_number() ? value[key].get<double>() : fallback;
}

std::string text(const json& value, const char* key) {
  return value.contains(key) && value[key].is_string() ? value[key].get<std::string>() : "";
}

std::string shorten(std::string value, std::size_t width) {
  if (value.size() <= width) return value;
  return value.substr(0, width - 1) + "~";
}

}  // namespace

std::string format_micros(const json& micros) {
  if (micros.is_null()) return "unlimited";
  double us = micros.get<double>();
  if (us >= 1e6) return fmt::format("{:.2f} s", us / 1e6);
  if (us >= 1e3) return fmt::format("{:.1f} ms", us / 1e3);
  return fmt::format("{:.0f} us", us);
}

std::string format_seconds(double seconds) {
  auto total = static_cast<long long>(seconds);
  if (total >= 3600) return fmt::format("{}h{:02}m", total / 3600, (total / 60) % 60);
  if (total >= 60) return fmt::format("{}m{:02}s", total / 60, total % 60);
  return fmt::format("{:.1f}s", seconds);
}

namespace {

// "mode mps (MPS control daemon started, pipe ...)" or "mode timeslice (...)".
std::string format_mode(const json& daemon) {
  std::string mode = text(daemon, "mode");
  if (mode.empty()) return {};
  if (mode != "mps") return "mode timeslice: no MPS, processes time-slice; gating and kills only\n";
  const json& mps = daemon["mps"];
  std::string state = mps.is_object() ? text(mps, "state") : "";
  std::string out = fmt::format("mode mps: MPS control daemon {} (pipe {}, log {})\n", state, text(mps, "pipe_dir"),
                                text(mps, "log_dir"));
  if (mps.is_object() && !text(mps, "error").empty()) out += fmt::format("  MPS error: {}\n", text(mps, "error"));
  return out;
}

// "  route partition: BE on 112 of 132 SMs, 20 reserved for RT; kill epoch 2 (3 kills)".
std::string format_route(const json& dev) {
  if (!dev.contains("route")) return {};
  std::string sms = dev["sm_count"].is_number()
                        ? fmt::format("{} SMs, cc {}", dev["sm_count"].get<unsigned>(), text(dev, "compute_capability"))
                        : fmt::format("SM count not reported, {} assumed", dev.value("sm_count_used", 0u));
  std::string route = text(dev, "route") == "partition"
                          ? fmt::format("partition: BE on {} SMs, {} reserved for RT", dev["partition_sms"].get<unsigned>(),
                                        dev["reserve_sms"].get<unsigned>())
                          : std::string("full GPU");
  return fmt::format("  route {} ({}); kill epoch {} ({} kills)\n", route, sms, dev["kill_epoch"].get<unsigned>(),
                     dev["kills"].get<std::uint64_t>());
}

}  // namespace

std::string format_status(const json& s) {
  const json& d = s["daemon"];
  const json& p = s["policy"];
  const json& k = s["scheduler"];
  const json& c = s["clients"];
  std::string out = fmt::format("sluiced pid {}, up {}, protocol {}, socket {}\n", d["pid"].get<int>(),
                                format_seconds(number(d, "uptime_s")), text(d, "protocol"), text(d, "socket"));
  out += fmt::format("policy {} (generation {}, {} rules)\n", text(p, "source"), p["generation"].get<std::uint64_t>(),
                     p["rules"].get<std::uint64_t>());
  if (!text(p, "last_reload_error").empty()) out += fmt::format("  last reload failed: {}\n", text(p, "last_reload_error"));
  out += format_mode(d);
  out += fmt::format("scheduler: BE budget {} while RT is active, {} while idle; hold-off {:.0f} ms; sharing {}; "
                     "copies split at {} MiB\n",
                     format_micros(k["be_budget_us"]), format_micros(k["idle_budget_us"]), number(k, "holdoff_ms"),
                     text(k, "sharing"), k["copy_chunk_mib"].get<std::uint64_t>());
  out += fmt::format("clients: {} ({} rt, {} be)\n", c["total"].get<int>(), c["rt"].get<int>(), c["be"].get<int>());
  for (const json& dev : s["devices"]) {
    std::string rt = dev["rt_active"].get<bool>()
                         ? fmt::format("RT active, {} busy", dev["rt_busy_clients"].get<int>())
                         : fmt::format("RT idle for {:.0f} ms", number(dev, "rt_idle_ms"));
    out += fmt::format("device {}: gate {} ({}); BE in flight {} of {}; {} BE client(s) waiting\n",
                       dev["device"].get<int>(), text(dev, "gate"), rt, format_micros(dev["be_inflight_us"]),
                       format_micros(dev["budget_us"]), dev["be_waiting_clients"].get<int>());
    out += format_route(dev);
  }
  if (s["devices"].empty()) out += "devices: none seen yet\n";
  const json& n = s["counters"];
  out += fmt::format("counters: {} messages ({} invalid), {} launches, {} samples, {} kernels timed, {} decisions, "
                     "{} gate changes, {} route changes, {} kills\n",
                     n["messages"].get<std::uint64_t>(), n["invalid_messages"].get<std::uint64_t>(),
                     n["ops"].get<std::uint64_t>(), n["samples"].get<std::uint64_t>(),
                     n["kernels_timed"].get<std::uint64_t>(), n["decisions"].get<std::uint64_t>(),
                     n["gate_changes"].get<std::uint64_t>(), n.value("route_changes", std::uint64_t{0}),
                     n.value("kills", std::uint64_t{0}));
  return out;
}

std::string format_ps(const json& ps) {
  std::string out = fmt::format("{:>7} {:<5} {:>4} {:>6} {:>10} {:>10} {:>6} {:>5} {:<24} {}\n", "PID", "CLASS", "PRI",
                                "QUEUED", "IN FLIGHT", "GRANT", "GPU%", "KILLS", "RULE", "EXE");
  for (const json& c : ps["clients"]) {
    std::string cls = text(c, "class");
    if (c["rt_busy"].get<bool>()) cls += "*";
    if (c["solo"].get<bool>()) cls += "!";
    if (c.value("partitioned", false)) cls += "%";
    bool be = text(c, "class") != "rt";
    std::string kills = be && c.value("kill", false) ? fmt::format("{}", c.value("kills", std::uint64_t{0})) : "-";
    out += fmt::format("{:>7} {:<5} {:>4} {:>6} {:>10} {:>10} {:>6.1f} {:>5} {:<24} {}\n", c["pid"].get<int>(), cls,
                       c["priority"].get<int>(), c["queued"].get<std::uint64_t>(), format_micros(c["inflight_us"]),
                       be ? format_micros(c["grant_us"]) : "-", 100.0 * number(c, "gpu_share"), kills,
                       shorten(text(c, "rule"), 24), text(c, "exe"));
  }
  if (ps["clients"].empty()) out += "(no clients)\n";
  return out;
}

std::string format_ps_all(const json& ps_and_unmanaged) {
  std::string out = format_ps(ps_and_unmanaged);
  const json& unmanaged = ps_and_unmanaged["unmanaged"];
  if (!unmanaged.is_object()) return out + "(unmanaged processes are not traced: start sluiced with --trace)\n";
  if (unmanaged.value("state", "") == "failed") {
    return out + fmt::format("(unmanaged processes are not traced: {})\n", text(unmanaged, "error"));
  }
  out += fmt::format("\n{:>7} {:<9} {:>12} {:>12}  {}\n", "PID", "", "LAUNCHES", "COPIES", "COMM");
  for (const json& p : unmanaged["processes"]) {
    out += fmt::format("{:>7} {:<9} {:>12} {:>12}  {}\n", p["pid"].get<int>(), "unmanaged",
                       p["launches"].get<std::uint64_t>(), p["copies"].get<std::uint64_t>(), text(p, "comm"));
  }
  if (unmanaged["processes"].empty()) out += "(no process calls the driver outside sluice)\n";
  return out;
}

std::string format_queue(const json& queue) {
  std::string out = fmt::format("{:>7} {:<16} {:<7} {:<32} {:>14} {:>12} {:>10} {:>10}\n", "PID", "EXE", "KIND", "NAME",
                                "GRID", "BLOCK", "PREDICTED", "WAITING");
  for (const json& q : queue["queue"]) {
    auto dims = [](const json& v) {
      return fmt::format("{}x{}x{}", v[0].get<unsigned>(), v[1].get<unsigned>(), v[2].get<unsigned>());
    };
    bool kernel = text(q, "kind") == "kernel";
    out += fmt::format("{:>7} {:<16} {:<7} {:<32} {:>14} {:>12} {:>10} {:>7.1f} ms\n", q["pid"].get<int>(),
                       shorten(text(q, "exe"), 16), text(q, "kind"), shorten(text(q, "name"), 32),
                       kernel ? dims(q["grid"]) : fmt::format("{} B", q["bytes"].get<std::uint64_t>()),
                       kernel ? dims(q["block"]) : "-", format_micros(q["predicted_us"]), number(q, "waiting_ms"));
  }
  if (queue["queue"].empty()) out += "(nothing waiting)\n";
  if (queue.value("truncated", false)) out += "(more not shown; use --limit)\n";
  return out;
}

std::string format_policy(const json& policy) {
  return fmt::format("# {} (generation {})\n{}\n", text(policy, "source"), policy["generation"].get<std::uint64_t>(),
                     policy["policy"].dump(2));
}

}  // namespace sluice::ctl
