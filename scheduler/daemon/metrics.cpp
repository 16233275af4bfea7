#include "metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "sluice/protocol/codec.h"

namespace sluice::sched::metrics {

using nlohmann::json;

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  std::sort(bounds_.begin(), bounds_.end());
  counts_.assign(bounds_.size() + 1, 0);
}

void Histogram::observe(double value) {
  // A value equal to a bound belongs to that bucket (le: less or equal).
  auto bucket = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

namespace {

// Backslash and newline always; the double quote too inside label values.
std::string escape(std::string_view text, bool quote) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\' || (quote && c == '"')) {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string escape_label_value(std::string_view value) { return escape(value, true); }
std::string escape_help(std::string_view help) { return escape(help, false); }

std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) return fmt::format("{}", static_cast<long long>(value));
  return fmt::format("{}", value);  // shortest round-trip form
}

namespace {

std::string label_block(const Labels& labels, std::string_view extra_name = {}, std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return {};
  std::string out = "{";
  bool first = true;
  auto add = [&](std::string_view name, std::string_view value) {
    out += fmt::format("{}{}=\"{}\"", first ? "" : ",", name, escape_label_value(value));
    first = false;
  };
  for (const auto& [name, value] : labels) add(name, value);
  if (!extra_name.empty()) add(extra_name, extra_value);
  return out + "}";
}

}  // namespace

void TextWriter::family(std::string_view name, std::string_view type, std::string_view help) {
  text_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escape_help(help), name, type);
}

void TextWriter::sample(std::string_view name, const Labels& labels, double value) {
  text_ += fmt::format("{}{} {}\n", name, label_block(labels), format_value(value));
}

void TextWriter::histogram(std::string_view name, const Labels& labels, const Histogram& histogram) {
  std::uint64_t cumulative = 0;
  const auto& bounds = histogram.upper_bounds();
  const auto& counts = histogram.bucket_counts();
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    cumulative += counts[i];
    text_ += fmt::format("{}_bucket{} {}\n", name, label_block(labels, "le", format_value(bounds[i])), cumulative);
  }
  text_ += fmt::format("{}_bucket{} {}\n", name, label_block(labels, "le", "+Inf"), histogram.count());
  text_ += fmt::format("{}_sum{} {}\n", name, label_block(labels), format_value(histogram.sum()));
  text_ += fmt::format("{}_count{} {}\n", name, label_block(labels), histogram.count());
}

std::vector<double> gate_wait_buckets() {
  return {10e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
          50e-3, 100e-3, 250e-3, 500e-3, 1.0,    2.5,    5.0,    10.0};
}

DaemonMetrics::DaemonMetrics() : gate_wait_{Histogram(gate_wait_buckets()), Histogram(gate_wait_buckets())} {}

void DaemonMetrics::note_op(protocol::Class cls, bool held) {
  PerClass& counts = per_class_[index(cls)];
  ++counts.submitted;
  if (held) ++counts.held;
}

void DaemonMetrics::note_release(protocol::Class cls, bool was_held, std::uint64_t waited_ns,
                                 std::uint64_t deadline_us) {
  if (was_held) ++per_class_[index(cls)].released;
  gate_wait_[index(cls)].observe(static_cast<double>(waited_ns) / 1e9);
  if (cls == protocol::Class::rt && deadline_us != 0 && waited_ns > deadline_us * 1000) ++rt_deadline_misses_;
}

void DaemonMetrics::note_protocol_error(std::string_view reason) {
  auto it = protocol_errors_.find(reason);
  if (it == protocol_errors_.end()) it = protocol_errors_.emplace(std::string(reason), 0).first;
  ++it->second;
}

const char* invalid_message_reason(protocol::MsgType type) {
  switch (type) {
    case protocol::MsgType::op: return "invalid_op";
    case protocol::MsgType::op_submitted: return "invalid_op_submitted";
    case protocol::MsgType::kernel_name: return "invalid_kernel_name";
    case protocol::MsgType::status: return "invalid_status";
    case protocol::MsgType::sample: return "invalid_sample";
    case protocol::MsgType::goodbye: return "invalid_goodbye";
    case protocol::MsgType::kill_word: return "invalid_kill_word";
    default: return "unknown_message_type";
  }
}

namespace {

double number_at(const json& object, std::initializer_list<const char*> path) {
  const json* at = &object;
  for (const char* key : path) {
    if (!at->is_object() || !at->contains(key)) return 0;
    at = &(*at)[key];
  }
  return at->is_number() ? at->get<double>() : 0;
}

constexpr protocol::Class kClasses[] = {protocol::Class::rt, protocol::Class::be};

Labels class_label(protocol::Class cls) { return {{"class", protocol::class_name(cls)}}; }

}  // namespace

std::string render(const json& status, const json& ps, const DaemonMetrics& counted) {
  TextWriter out;
  out.family("sluice_up", "gauge", "1 while sluiced answers");
  out.sample("sluice_up", {}, 1);
  out.family("sluice_uptime_seconds", "gauge", "Seconds since sluiced started");
  out.sample("sluice_uptime_seconds", {}, number_at(status, {"daemon", "uptime_s"}));

  out.family("sluice_clients", "gauge", "Connected clients by class");
  for (protocol::Class cls : kClasses) {
    out.sample("sluice_clients", class_label(cls), number_at(status, {"clients", protocol::class_name(cls)}));
  }

  // Held operations per class, from the same per-client counts `sluicectl ps` shows as QUEUED.
  double queued[2] = {0, 0};
  if (ps.contains("clients") && ps["clients"].is_array()) {
    for (const json& client : ps["clients"]) {
      bool rt = client.value("class", std::string()) == "rt";
      queued[rt ? 0 : 1] += number_at(client, {"queued"});
    }
  }
  out.family("sluice_queue_depth", "gauge", "Operations held in clients' queues, waiting for the gate, by class");
  out.sample("sluice_queue_depth", class_label(protocol::Class::rt), queued[0]);
  out.sample("sluice_queue_depth", class_label(protocol::Class::be), queued[1]);

  struct Counter {
    const char* name;
    const char* help;
    std::uint64_t DaemonMetrics::PerClass::*field;
  };
  const Counter per_class[] = {
      {"sluice_launches_submitted_total", "Stream operations (kernel launches, copies, memsets, ...) clients reported",
       &DaemonMetrics::PerClass::submitted},
      {"sluice_launches_held_total", "Operations a client's gate held in its queue", &DaemonMetrics::PerClass::held},
      {"sluice_launches_released_total", "Held operations the gate released to the driver",
       &DaemonMetrics::PerClass::released},
  };
  for (const Counter& counter : per_class) {
    out.family(counter.name, "counter", counter.help);
    for (protocol::Class cls : kClasses) {
      out.sample(counter.name, class_label(cls), static_cast<double>(counted.per_class(cls).*counter.field));
    }
  }

  out.family("sluice_gate_wait_seconds", "histogram",
             "Time from the application's call to the driver submission, per operation and class");
  for (protocol::Class cls : kClasses) out.histogram("sluice_gate_wait_seconds", class_label(cls), counted.gate_wait(cls));

  out.family("sluice_rt_deadline_misses_total", "counter",
             "RT operations whose gate wait exceeded the client's deadline (rule deadline_us or SLUICE_DEADLINE_US)");
  out.sample("sluice_rt_deadline_misses_total", {}, static_cast<double>(counted.rt_deadline_misses()));

  out.family("sluice_kills_total", "counter",
             "Kill orders sent (one per BE client with work in flight, each time RT arrives over the budget)");
  out.sample("sluice_kills_total", {}, number_at(status, {"counters", "kills"}));
  out.family("sluice_route_switches_total", "counter", "Changes of a device's route between the full GPU and a partition");
  out.sample("sluice_route_switches_total", {}, number_at(status, {"counters", "route_changes"}));
  out.family("sluice_gate_switches_total", "counter", "Changes of a device's gate between open and shut");
  out.sample("sluice_gate_switches_total", {}, number_at(status, {"counters", "gate_changes"}));
  out.family("sluice_messages_total", "counter", "Messages read from clients' rings");
  out.sample("sluice_messages_total", {}, number_at(status, {"counters", "messages"}));

  out.family("sluice_protocol_errors_total", "counter", "Refused messages, handshakes and frames, by reason");
  for (const auto& [reason, count] : counted.protocol_errors()) {
    out.sample("sluice_protocol_errors_total", {{"reason", reason}}, static_cast<double>(count));
  }

  out.family("sluice_unmanaged_launches_total", "counter", "Kernel launches seen outside sluice (not through the shim)");
  out.sample("sluice_unmanaged_launches_total", {}, number_at(status, {"unmanaged", "launches_total"}));
  out.family("sluice_unmanaged_process_launches_total", "counter",
             "Kernel launches outside sluice by one traced process (sluiced --trace)");
  if (status.contains("unmanaged") && status["unmanaged"].is_object() && status["unmanaged"].contains("processes") &&
      status["unmanaged"]["processes"].is_array()) {
    for (const json& p : status["unmanaged"]["processes"]) {
      out.sample("sluice_unmanaged_process_launches_total",
                 {{"pid", fmt::format("{}", p.value("pid", 0u))}, {"comm", p.value("comm", std::string())}},
                 number_at(p, {"launches"}));
    }
  }

  if (status.contains("devices") && status["devices"].is_array()) {
    out.family("sluice_gate_shut", "gauge", "1 while a device's gate is shut (RT active or within the hold-off)");
    for (const json& dev : status["devices"]) {
      out.sample("sluice_gate_shut", {{"device", fmt::format("{}", dev.value("device", 0))}},
                 dev.value("gate", std::string()) == "shut" ? 1 : 0);
    }
    out.family("sluice_be_inflight_seconds", "gauge", "Predicted BE work in flight on a device");
    for (const json& dev : status["devices"]) {
      out.sample("sluice_be_inflight_seconds", {{"device", fmt::format("{}", dev.value("device", 0))}},
                 number_at(dev, {"be_inflight_us"}) / 1e6);
    }
  }
  return out.text();
}

}  // namespace sluice::sched::metrics
