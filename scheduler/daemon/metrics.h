// sluiced's Prometheus metrics (docs/operations.md, "Metrics"): a writer of the text exposition
// format 0.0.4, the few counters sluiced keeps only for metrics, and the rendering of a scrape from
// the same replies `sluicectl status` and `ps` show.
//
// Thread rules: DaemonMetrics is written and read on sluiced's loop thread only (a scrape is a
// control request answered there); TextWriter and Histogram are plain values.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sluice/protocol/layout.h"

namespace sluice::sched::metrics {

// Buckets counted separately; cumulative only when written.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  const std::vector<double>& upper_bounds() const { return bounds_; }
  // Per bucket, not cumulative; one more than upper_bounds(): the last counts values above them all.
  const std::vector<std::uint64_t>& bucket_counts() const { return counts_; }
  double sum() const { return sum_; }
  std::uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

using Labels = std::vector<std::pair<std::string, std::string>>;

// "a\\b\"c\nd": backslash, double quote and newline escaped, as the format wants in label values.
std::string escape_label_value(std::string_view value);
// HELP text escapes backslash and newline only.
std::string escape_help(std::string_view help);
// Integers without exponent or fraction; NaN, +Inf, -Inf as the format spells them.
std::string format_value(double value);

class TextWriter {
 public:
  // The # HELP and # TYPE lines; `type` is counter, gauge or histogram.
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, const Labels& labels, double value);
  // name_bucket{...,le="..."} (cumulative, ending with le="+Inf"), name_sum and name_count.
  void histogram(std::string_view name, const Labels& labels, const Histogram& histogram);
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

// Upper bounds of the gate wait histogram, in seconds: 10 us to 10 s.
std::vector<double> gate_wait_buckets();

// What sluiced counts for metrics beyond what status and ps show. Fed by the scheduler's
// SchedulerOutput hooks and the server's validation paths.
class DaemonMetrics {
 public:
  DaemonMetrics();
  // An operation a client reported (every launch, copy, memset... descriptor); `held`: it waits in
  // the client's queue for the gate.
  void note_op(protocol::Class cls, bool held);
  // An operation went to the driver `waited_ns` after the application's call. `was_held`: the gate
  // held it. `deadline_us`: the client's RT deadline from its rule (0: none).
  void note_release(protocol::Class cls, bool was_held, std::uint64_t waited_ns, std::uint64_t deadline_us);
  // A message, handshake or frame refused; `reason` is one of a small fixed set (docs).
  void note_protocol_error(std::string_view reason);

  struct PerClass {
    std::uint64_t submitted = 0;
    std::uint64_t held = 0;
    std::uint64_t released = 0;
  };
  const PerClass& per_class(protocol::Class cls) const { return per_class_[index(cls)]; }
  const Histogram& gate_wait(protocol::Class cls) const { return gate_wait_[index(cls)]; }
  std::uint64_t rt_deadline_misses() const { return rt_deadline_misses_; }
  const std::map<std::string, std::uint64_t, std::less<>>& protocol_errors() const { return protocol_errors_; }

 private:
  static std::size_t index(protocol::Class cls) { return cls == protocol::Class::rt ? 0 : 1; }
  std::array<PerClass, 2> per_class_{};
  std::array<Histogram, 2> gate_wait_;
  std::uint64_t rt_deadline_misses_ = 0;
  std::map<std::string, std::uint64_t, std::less<>> protocol_errors_;
};

// The reason label for a client message that failed validation: "invalid_<type>" for the known
// types, else "unknown_message_type".
const char* invalid_message_reason(protocol::MsgType type);

// A whole scrape: families from the daemon's status and ps replies (control.cpp) and `counted`.
// The status reply's optional "unmanaged": {"launches_total": N, "processes": [{"pid", "comm",
// "launches"}...]} (sluiced --trace) feeds sluice_unmanaged_launches_total (0 when absent) and
// sluice_unmanaged_process_launches_total{pid,comm}.
std::string render(const nlohmann::json& status, const nlohmann::json& ps, const DaemonMetrics& counted);

}  // namespace sluice::sched::metrics
