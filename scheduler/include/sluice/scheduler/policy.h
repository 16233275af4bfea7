// The policy file: who is real-time (RT) and who is best-effort (BE), and the scheduler's knobs.
// docs/policy.md documents the format; examples/policy.json is a complete example.
//
// A client's class comes from the first rule whose match holds for its credentials (executable,
// command line, uid/gid, cgroup) read by sluiced, never from what the client says. The one thing a
// client says that counts is its SLUICE_CLASS label, and it can only lower the outcome.
//
// Thread rules: a Policy is an immutable value once parsed; share it through shared_ptr<const>.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/common/result.h"
#include "sluice/protocol/layout.h"

namespace sluice::sched {

using protocol::Class;

inline constexpr int kPolicyVersion = 1;

// How best-effort clients share what the gate lets through.
enum class Sharing : std::uint8_t {
  fair,      // equal GPU time (weighted)
  priority,  // higher BE priority first; fair among equals
  srtf,      // shortest remaining job first, from a job-length hint
  fifo,      // the client whose oldest waiting operation is oldest first
};

const char* sharing_name(Sharing sharing);

struct SchedulerParams {
  std::uint64_t be_budget_ns = 200'000;            // predicted BE work in flight while RT is active
  std::uint64_t idle_budget_ns = protocol::kUnlimited;  // ... while RT is idle (unlimited: open)
  std::uint64_t holdoff_ns = 50'000'000;           // RT idle this long before BE reopens
  std::uint64_t copy_chunk_bytes = 8ull << 20;     // BE copies above this are split (0: never)
  std::uint64_t default_prediction_ns = 200'000;   // operations the model has not timed yet
  std::uint64_t rt_poll_ns = 200'000;              // how often sluiced looks at RT clients' rings
  Sharing sharing = Sharing::fair;
  // mps mode: SMs kept free for RT while BE runs in a partition. 0: chosen from RT demand (auto).
  std::uint32_t reserve_sms = 0;
  // SMs per device when no client reported the count (0: kDefaultSmCount).
  std::uint32_t sm_count = 0;
  // Mechanisms that can be switched off (to measure what each buys): false lets BE work through
  // at any amount while RT is active (gate), or keeps BE on the full GPU in mps mode (partition).
  bool gate = true;
  bool partition = true;
  // mps mode: the most SMs an automatic reserve takes (0: no cap), and the BE budget while BE runs
  // in a partition (kUnlimited: the partition alone protects RT).
  std::uint32_t max_reserve_sms = 16;
  std::uint64_t partitioned_be_budget_ns = protocol::kUnlimited;
};

// The SM count assumed for a device no client described (an H100/H200 SXM).
inline constexpr std::uint32_t kDefaultSmCount = 132;

// What a rule gives a client.
struct ClassParams {
  Class cls = Class::be;
  int priority = 0;            // higher first: among RT clients, and within BE under `priority`
  double weight = 1.0;         // share under `fair`
  std::uint64_t deadline_us = 0;     // RT: relative deadline hint (0: none)
  std::uint64_t job_length_ms = 0;   // BE: job length hint for `srtf` (0: none)
  bool kill = false;           // BE: in-flight work may be killed when RT arrives
};

struct Match {
  std::optional<std::string> exe;      // glob over the executable's file name (/proc/PID/exe)
  std::optional<std::string> cmdline;  // glob over the space-joined command line
  std::optional<std::string> cgroup;   // glob over the cgroup v2 path (/proc/PID/cgroup)
  std::optional<std::string> label;    // glob over the client's SLUICE_CLASS label
  std::vector<std::uint32_t> uids;     // any of these (empty: any uid)
  std::vector<std::uint32_t> gids;
};

struct Rule {
  std::string name;
  Match match;
  ClassParams params;
};

struct Policy {
  int version = kPolicyVersion;
  SchedulerParams scheduler;
  ClassParams defaults;
  std::vector<Rule> rules;
  std::string source = "<built-in>";  // the file it came from
};

// What sluiced knows about a client when it classifies it.
struct ClientIdentity {
  std::uint32_t pid = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::string exe;      // file name of /proc/PID/exe
  std::string cmdline;  // arguments joined by spaces
  std::string cgroup;   // cgroup v2 path, e.g. /system.slice/infer.service
  std::string label;    // SLUICE_CLASS as the client sent it ("" when unset)
  std::uint64_t job_length_ms = 0;  // hints the client sent
  std::uint64_t deadline_us = 0;
};

struct Assignment {
  ClassParams params;
  std::string rule;  // the rule's name, or "defaults"
};

// Parses and validates a policy. Errors name `source`, the JSON path and the problem, e.g.
// "policy.json: /rules/2/match/uid: expected an unsigned integer or a list of them, got string".
Result<Policy> parse_policy(std::string_view text, std::string_view source);
Result<Policy> load_policy_file(const std::string& path);

// The policy of a daemon started without --policy: everyone is BE, default knobs.
Policy default_policy();

// The class of a client (see the top of this file for how the label takes part).
Assignment assign(const Policy& policy, const ClientIdentity& client);

// A SLUICE_CLASS label that names a class ("rt", "be" or "be:<priority>") lowers a client to at
// most that class (and BE priority); any other label only takes part in rule matching.
struct LabelCap {
  Class cls = Class::be;
  std::optional<int> priority;  // BE priority cap
};
std::optional<LabelCap> class_from_label(std::string_view label);
bool valid_label(std::string_view label);

// True when `a` ranks below `b`: BE below RT, then lower priority below higher.
bool is_lower(const ClassParams& a, const ClassParams& b);

// The policy as normalised JSON (what `sluicectl policy show` prints).
nlohmann::json policy_to_json(const Policy& policy);

// The policy in force and the file it comes from. Reload is atomic: a file that does not load
// leaves the current policy in force, and the error says why.
// Thread rules: one thread (sluiced's loop); current() hands out an immutable snapshot.
class PolicyStore {
 public:
  // No path: the built-in default policy, and reload() has nothing to read.
  explicit PolicyStore(std::optional<std::string> path = std::nullopt) : path_(std::move(path)) {}

  Status reload();
  std::shared_ptr<const Policy> current() const { return current_; }
  const std::optional<std::string>& path() const { return path_; }
  std::uint64_t generation() const { return generation_; }  // counts successful loads

 private:
  std::optional<std::string> path_;
  std::shared_ptr<const Policy> current_ = std::make_shared<const Policy>();
  std::uint64_t generation_ = 0;
};

}  // namespace sluice::sched
