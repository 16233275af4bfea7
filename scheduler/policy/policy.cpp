#include "sluice/scheduler/policy.h"

#include <fnmatch.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <sstream>

#include "sluice/protocol/codec.h"

namespace sluice::sched {

using nlohmann::json;

const char* sharing_name(Sharing sharing) {
  switch (sharing) {
    case Sharing::fair: return "fair";
    case Sharing::priority: return "priority";
    case Sharing::srtf: return "srtf";
    case Sharing::fifo: return "fifo";
  }
  return "?";
}

namespace {

constexpr std::uint64_t kUs = 1000;
constexpr std::uint64_t kMs = 1000 * kUs;

const char* type_name(const json& value) {
  if (value.is_number_unsigned()) return "unsigned integer";
  if (value.is_number_integer()) return "integer";
  return value.type_name();
}

// Reads one JSON object, naming the JSON path of every problem it finds.
class ObjectReader {
 public:
  ObjectReader(const json& object, std::string path) : object_(object), path_(std::move(path)) {}

  // The object itself must be an object whose keys are all in `allowed`.
  Status check(std::initializer_list<std::string_view> allowed) const {
    if (!object_.is_object()) return fail_at(path_, fmt::format("expected an object, got {}", type_name(object_)));
    for (const auto& [key, value] : object_.items()) {
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        std::string known;
        for (auto name : allowed) known += fmt::format("{}{}", known.empty() ? "" : ", ", name);
        return fail_at(child(key), fmt::format("unknown key (known: {})", known));
      }
    }
    return {};
  }

  bool has(const char* key) const { return object_.contains(key); }
  const json& at(const char* key) const { return object_.at(key); }
  std::string child(std::string_view key) const { return fmt::format("{}/{}", path_, key); }

  Result<std::uint64_t> u64(const char* key, std::uint64_t min, std::uint64_t max) const {
    const json& value = object_.at(key);
    if (!value.is_number_unsigned()) {
      return fail_at(child(key), fmt::format("expected an unsigned integer, got {}", type_name(value)));
    }
    auto number = value.get<std::uint64_t>();
    if (number < min || number > max) {
      return fail_at(child(key), fmt::format("{} is outside {}..{}", number, min, max));
    }
    return number;
  }

  Result<bool> boolean(const char* key) const {
    const json& value = object_.at(key);
    if (!value.is_boolean()) return fail_at(child(key), fmt::format("expected true or false, got {}", type_name(value)));
    return value.get<bool>();
  }

  Result<std::int64_t> i64(const char* key, std::int64_t min, std::int64_t max) const {
    const json& value = object_.at(key);
    if (!value.is_number_integer()) {
      return fail_at(child(key), fmt::format("expected an integer, got {}", type_name(value)));
    }
    auto number = value.get<std::int64_t>();
    if (number < min || number > max) {
      return fail_at(child(key), fmt::format("{} is outside {}..{}", number, min, max));
    }
    return number;
  }

  Result<double> real(const char* key, double min_exclusive, double max) const {
    const json& value = object_.at(key);
    if (!value.is_number()) return fail_at(child(key), fmt::format("expected a number, got {}", type_name(value)));
    auto number = value.get<double>();
    if (!(number > min_exclusive && number <= max)) {
      return fail_at(child(key), fmt::format("{} is outside ({}, {}]", number, min_exclusive, max));
    }
    return number;
  }

  Result<std::string> text(const char* key) const {
    const json& value = object_.at(key);
    if (!value.is_string()) return fail_at(child(key), fmt::format("expected a string, got {}", type_name(value)));
    auto str = value.get<std::string>();
    if (str.empty()) return fail_at(child(key), "must not be empty");
    return str;
  }

  // An unsigned integer or a list of them.
  Result<std::vector<std::uint32_t>> id_list(const char* key) const {
    const json& value = object_.at(key);
    std::vector<std::uint32_t> ids;
    auto bad = [&] {
      return fail_at(child(key), fmt::format("expected an unsigned integer or a list of them, got {}", type_name(value)));
    };
    if (value.is_number_unsigned()) {
      if (value.get<std::uint64_t>() > 0xffffffffull) return bad();
      ids.push_back(value.get<std::uint32_t>());
      return ids;
    }
    if (!value.is_array() || value.empty()) return bad();
    for (std::size_t i = 0; i < value.size(); ++i) {
      if (!value[i].is_number_unsigned() || value[i].get<std::uint64_t>() > 0xffffffffull) {
        return fail_at(fmt::format("{}/{}", child(key), i),
                       fmt::format("expected an unsigned 32-bit integer, got {}", type_name(value[i])));
      }
      ids.push_back(value[i].get<std::uint32_t>());
    }
    return ids;
  }

  static Error fail_at(const std::string& path, const std::string& problem) {
    return make_error("{}: {}", path.empty() ? "/" : path, problem);
  }

 private:
  const json& object_;
  std::string path_;
};

// The common `class`, `priority`, `weight`, `deadline_us`, `job_length_s` fields of a rule or of
// the defaults, on top of `base`.
Result<ClassParams> read_class_params(const ObjectReader& reader, ClassParams base, bool class_required) {
  ClassParams params = base;
  if (reader.has("class")) {
    auto name = reader.text("class");
    if (!name) return std::move(name).take_error();
    if (*name == "rt") {
      params.cls = Class::rt;
    } else if (*name == "be") {
      params.cls = Class::be;
    } else {
      return ObjectReader::fail_at(reader.child("class"), fmt::format("unknown class '{}' (rt, be)", *name));
    }
  } else if (class_required) {
    return ObjectReader::fail_at(reader.child("class"), "missing (rt or be)");
  }
  if (reader.has("priority")) {
    auto priority = reader.i64("priority", -1000, 1000);
    if (!priority) return std::move(priority).take_error();
    params.priority = static_cast<int>(*priority);
  }
  if (reader.has("weight")) {
    auto weight = reader.real("weight", 0.0, 1000.0);
    if (!weight) return std::move(weight).take_error();
    params.weight = *weight;
  }
  if (reader.has("deadline_us")) {
    auto deadline = reader.u64("deadline_us", 0, 60'000'000);
    if (!deadline) return std::move(deadline).take_error();
    params.deadline_us = *deadline;
  }
  if (reader.has("job_length_s")) {
    auto seconds = reader.u64("job_length_s", 0, 365ull * 24 * 3600);
    if (!seconds) return std::move(seconds).take_error();
    params.job_length_ms = *seconds * 1000;
  }
  if (reader.has("kill")) {
    auto kill = reader.boolean("kill");
    if (!kill) return std::move(kill).take_error();
    params.kill = *kill;
  }
  if (params.kill && params.cls == Class::rt) {
    if (reader.has("kill")) {
      return ObjectReader::fail_at(reader.child("kill"), "only best-effort work can be killed (this is an rt class)");
    }
    params.kill = false;  // inherited from best-effort defaults
  }
  return params;
}

Result<Match> read_match(const json& value, const std::string& path) {
  ObjectReader reader(value, path);
  if (auto status = reader.check({"exe", "cmdline", "cgroup", "label", "uid", "gid"}); !status) {
    return std::move(status).take_error();
  }
  Match match;
  for (auto [key, field] : {std::pair{"exe", &match.exe}, std::pair{"cmdline", &match.cmdline},
                            std::pair{"cgroup", &match.cgroup}, std::pair{"label", &match.label}}) {
    if (!reader.has(key)) continue;
    auto glob = reader.text(key);
    if (!glob) return std::move(glob).take_error();
    *field = std::move(*glob);
  }
  if (reader.has("uid")) {
    auto uids = reader.id_list("uid");
    if (!uids) return std::move(uids).take_error();
    match.uids = std::move(*uids);
  }
  if (reader.has("gid")) {
    auto gids = reader.id_list("gid");
    if (!gids) return std::move(gids).take_error();
    match.gids = std::move(*gids);
  }
  return match;
}

Status read_scheduler(const json& value, SchedulerParams& params) {
  ObjectReader reader(value, "/scheduler");
  if (auto status = reader.check({"be_budget_us", "idle_budget_us", "holdoff_ms", "copy_chunk_mib",
                                  "default_prediction_us", "rt_poll_us", "sharing", "reserve_sms", "sm_count", "gate",
                                  "partition", "max_reserve_sms", "partitioned_be_budget_us"});
      !status) {
    return status;
  }
  struct Knob {
    const char* key;
    std::uint64_t min, max, unit;
    std::uint64_t* out;
  };
  std::uint64_t idle_budget_us = 0;
  for (const Knob& knob : {Knob{"be_budget_us", 1, 1'000'000, kUs, &params.be_budget_ns},
                           Knob{"idle_budget_us", 0, 60'000'000, 1, &idle_budget_us},
                           Knob{"holdoff_ms", 0, 60'000, kMs, &params.holdoff_ns},
                           Knob{"copy_chunk_mib", 0, 4096, 1ull << 20, &params.copy_chunk_bytes},
                           Knob{"default_prediction_us", 1, 10'000'000, kUs, &params.default_prediction_ns},
                           Knob{"rt_poll_us", 20, 100'000, kUs, &params.rt_poll_ns}}) {
    if (!reader.has(knob.key)) continue;
    auto number = reader.u64(knob.key, knob.min, knob.max);
    if (!number) return std::move(number).take_error();
    *knob.out = *number * knob.unit;
  }
  if (reader.has("idle_budget_us")) {
    params.idle_budget_ns = idle_budget_us == 0 ? protocol::kUnlimited : idle_budget_us * kUs;
  }
  if (reader.has("partitioned_be_budget_us")) {
    auto us = reader.u64("partitioned_be_budget_us", 0, 1'000'000);
    if (!us) return std::move(us).take_error();
    params.partitioned_be_budget_ns = *us == 0 ? protocol::kUnlimited : *us * kUs;
  }
  if (reader.has("max_reserve_sms")) {
    auto sms = reader.u64("max_reserve_sms", 0, protocol::kMaxSms);
    if (!sms) return std::move(sms).take_error();
    if (*sms % 8 != 0) {
      return ObjectReader::fail_at("/scheduler/max_reserve_sms", fmt::format("{} is not a multiple of 8 (the SM split granularity)", *sms));
    }
    params.max_reserve_sms = static_cast<std::uint32_t>(*sms);
  }
  for (auto [key, out] : {std::pair{"gate", &params.gate}, std::pair{"partition", &params.partition}}) {
    if (!reader.has(key)) continue;
    auto on = reader.boolean(key);
    if (!on) return std::move(on).take_error();
    *out = *on;
  }
  if (reader.has("sm_count")) {
    auto sms = reader.u64("sm_count", 0, protocol::kMaxSms);
    if (!sms) return std::move(sms).take_error();
    params.sm_count = static_cast<std::uint32_t>(*sms);
  }
  if (reader.has("reserve_sms")) {
    const json& reserve = reader.at("reserve_sms");
    if (reserve.is_string() && reserve.get<std::string>() == "auto") {
      params.reserve_sms = 0;
    } else if (!reserve.is_number_unsigned()) {
      return ObjectReader::fail_at("/scheduler/reserve_sms", fmt::format("expected \"auto\" or a multiple of 8, got {}",
                                                                         reserve.is_string() ? "'" + reserve.get<std::string>() + "'" : std::string(type_name(reserve))));
    } else {
      auto sms = reader.u64("reserve_sms", 8, protocol::kMaxSms);
      if (!sms) return std::move(sms).take_error();
      if (*sms % 8 != 0) {
        return ObjectReader::fail_at("/scheduler/reserve_sms", fmt::format("{} is not a multiple of 8 (the SM split granularity)", *sms));
      }
      params.reserve_sms = static_cast<std::uint32_t>(*sms);
    }
  }
  if (reader.has("sharing")) {
    auto name = reader.text("sharing");
    if (!name) return std::move(name).take_error();
    bool found = false;
    for (Sharing sharing : {Sharing::fair, Sharing::priority, Sharing::srtf, Sharing::fifo}) {
      if (*name == sharing_name(sharing)) {
        params.sharing = sharing;
        found = true;
      }
    }
    if (!found) {
      return ObjectReader::fail_at("/scheduler/sharing", fmt::format("unknown policy '{}' (fair, priority, srtf, fifo)", *name));
    }
  }
  return {};
}

// The byte offset of a parse error as line:column.
std::string position_of(std::string_view text, std::size_t byte) {
  std::size_t line = 1, column = 1;
  for (std::size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return fmt::format("{}:{}", line, column);
}

Result<Policy> parse_document(const json& root) {
  ObjectReader reader(root, "");
  if (auto status = reader.check({"version", "scheduler", "defaults", "rules"}); !status) {
    return std::move(status).take_error();
  }
  Policy policy;
  if (!reader.has("version")) return ObjectReader::fail_at("/version", "missing (this sluiced reads version 1)");
  auto version = reader.u64("version", kPolicyVersion, kPolicyVersion);
  if (!version) return std::move(version).take_error();
  if (reader.has("scheduler")) {
    if (auto status = read_scheduler(root.at("scheduler"), policy.scheduler); !status) {
      return std::move(status).take_error();
    }
  }
  if (reader.has("defaults")) {
    ObjectReader defaults(root.at("defaults"), "/defaults");
    if (auto status = defaults.check({"class", "priority", "weight", "deadline_us", "job_length_s", "kill"}); !status) {
      return std::move(status).take_error();
    }
    auto params = read_class_params(defaults, policy.defaults, false);
    if (!params) return std::move(params).take_error();
    policy.defaults = *params;
  }
  if (reader.has("rules")) {
    const json& rules = root.at("rules");
    if (!rules.is_array()) return ObjectReader::fail_at("/rules", fmt::format("expected a list, got {}", type_name(rules)));
    for (std::size_t i = 0; i < rules.size(); ++i) {
      std::string path = fmt::format("/rules/{}", i);
      ObjectReader rule_reader(rules[i], path);
      if (auto status = rule_reader.check({"name", "match", "class", "priority", "weight", "deadline_us", "job_length_s", "kill"});
          !status) {
        return std::move(status).take_error();
      }
      Rule rule;
      rule.name = fmt::format("rule {}", i);
      if (rule_reader.has("name")) {
        auto name = rule_reader.text("name");
        if (!name) return std::move(name).take_error();
        rule.name = std::move(*name);
      }
      if (!rule_reader.has("match")) return ObjectReader::fail_at(path + "/match", "missing (use {} to match every client)");
      auto match = read_match(rules[i].at("match"), path + "/match");
      if (!match) return std::move(match).take_error();
      rule.match = std::move(*match);
      auto params = read_class_params(rule_reader, policy.defaults, true);
      if (!params) return std::move(params).take_error();
      rule.params = *params;
      policy.rules.push_back(std::move(rule));
    }
  }
  return policy;
}

bool glob_matches(const std::optional<std::string>& pattern, const std::string& value) {
  return !pattern || fnmatch(pattern->c_str(), value.c_str(), 0) == 0;
}

bool id_matches(const std::vector<std::uint32_t>& ids, std::uint32_t id) {
  return ids.empty() || std::find(ids.begin(), ids.end(), id) != ids.end();
}

// Does `rule` hold for the client when it carries `label`?
bool rule_matches(const Match& match, const ClientIdentity& client, const std::string& label) {
  if (match.label && label.empty()) return false;
  return glob_matches(match.exe, client.exe) && glob_matches(match.cmdline, client.cmdline) &&
         glob_matches(match.cgroup, client.cgroup) && glob_matches(match.label, label) &&
         id_matches(match.uids, client.uid) && id_matches(match.gids, client.gid);
}

// The first rule that holds, or the defaults.
Assignment first_match(const Policy& policy, const ClientIdentity& client, const std::string& label) {
  for (const Rule& rule : policy.rules) {
    if (rule_matches(rule.match, client, label)) return {rule.params, rule.name};
  }
  return {policy.defaults, "defaults"};
}

// Applies a class-naming label: it can only take a client down.
ClassParams cap_by_label(ClassParams params, const LabelCap& cap) {
  if (cap.cls == Class::rt) return params;
  if (params.cls == Class::rt) {
    params.cls = Class::be;
    params.priority = cap.priority.value_or(0);
  } else if (cap.priority) {
    params.priority = std::min(params.priority, *cap.priority);
  }
  return params;
}

}  // namespace

bool is_lower(const ClassParams& a, const ClassParams& b) {
  if (a.cls != b.cls) return a.cls == Class::be;
  return a.priority < b.priority;
}

Result<Policy> parse_policy(std::string_view text, std::string_view source) {
  json root;
  try {
    // nlohmann reports syntax errors only by exception; this is the one place they are caught.
    root = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& error) {
    std::string what = error.what();
    if (auto colon = what.rfind(": "); colon != std::string::npos) what = what.substr(colon + 2);
    return make_error("{}:{}: not valid JSON: {}", source, position_of(text, error.byte > 0 ? error.byte - 1 : 0), what);
  } catch (const json::exception& error) {  // e.g. a number too large for any type
    std::string what = error.what();
    if (auto bracket = what.find("] "); bracket != std::string::npos) what = what.substr(bracket + 2);
    return make_error("{}: not valid JSON: {}", source, what);
  }
  auto policy = parse_document(root);
  if (!policy) return std::move(policy).take_error().context(source);
  policy->source = std::string(source);
  return policy;
}

Result<Policy> load_policy_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error("{}: cannot be read: {}", path, std::strerror(errno));
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (buffer.str().size() > (1u << 20)) return make_error("{}: larger than 1 MiB", path);
  return parse_policy(buffer.str(), path);
}

Policy default_policy() { return Policy{}; }

Status PolicyStore::reload() {
  if (!path_) return make_error("no policy file was given (sluiced --policy FILE); the built-in policy stays");
  auto loaded = load_policy_file(*path_);
  if (!loaded) return std::move(loaded).take_error();
  current_ = std::make_shared<const Policy>(std::move(*loaded));
  ++generation_;
  return {};
}

bool valid_label(std::string_view label) {
  if (label.size() >= protocol::kLabelBytes) return false;
  return std::all_of(label.begin(), label.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == ':';
  });
}

std::optional<LabelCap> class_from_label(std::string_view label) {
  if (label == "rt") return LabelCap{Class::rt, std::nullopt};
  if (label == "be") return LabelCap{Class::be, std::nullopt};
  if (!label.starts_with("be:")) return std::nullopt;
  int priority = 0;
  auto digits = label.substr(3);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), priority);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return LabelCap{Class::be, priority};
}

Assignment assign(const Policy& policy, const ClientIdentity& client) {
  Assignment result = first_match(policy, client, "");
  if (!client.label.empty()) {
    // A label may select another rule, but only a lower one; a class-naming label caps the result.
    Assignment labeled = first_match(policy, client, client.label);
    if (is_lower(labeled.params, result.params)) result = std::move(labeled);
    if (auto cap = class_from_label(client.label)) {
      ClassParams capped = cap_by_label(result.params, *cap);
      if (is_lower(capped, result.params)) {
        result.params = capped;
        result.rule += fmt::format(" (lowered by label '{}')", client.label);
      }
    }
  }
  // Hints fill in what the policy left open; they never change the class.
  if (result.params.job_length_ms == 0) result.params.job_length_ms = client.job_length_ms;
  if (result.params.deadline_us == 0) result.params.deadline_us = client.deadline_us;
  return result;
}

nlohmann::json policy_to_json(const Policy& policy) {
  auto params_json = [](const ClassParams& params) {
    json out = {{"class", protocol::class_name(params.cls)}, {"priority", params.priority}, {"weight", params.weight}};
    if (params.deadline_us != 0) out["deadline_us"] = params.deadline_us;
    if (params.job_length_ms != 0) out["job_length_s"] = params.job_length_ms / 1000;
    if (params.kill) out["kill"] = true;
    return out;
  };
  const SchedulerParams& s = policy.scheduler;
  json out;
  out["version"] = policy.version;
  out["scheduler"] = {
      {"be_budget_us", s.be_budget_ns / kUs},
      {"idle_budget_us", s.idle_budget_ns == protocol::kUnlimited ? 0 : s.idle_budget_ns / kUs},
      {"holdoff_ms", s.holdoff_ns / kMs},
      {"copy_chunk_mib", s.copy_chunk_bytes >> 20},
      {"default_prediction_us", s.default_prediction_ns / kUs},
      {"rt_poll_us", s.rt_poll_ns / kUs},
      {"sharing", sharing_name(s.sharing)},
      {"reserve_sms", s.reserve_sms == 0 ? json("auto") : json(s.reserve_sms)},
      {"sm_count", s.sm_count},
      {"gate", s.gate},
      {"partition", s.partition},
      {"max_reserve_sms", s.max_reserve_sms},
      {"partitioned_be_budget_us",
       s.partitioned_be_budget_ns == protocol::kUnlimited ? 0 : s.partitioned_be_budget_ns / kUs}};
  out["defaults"] = params_json(policy.defaults);
  out["rules"] = json::array();
  for (const Rule& rule : policy.rules) {
    json entry = params_json(rule.params);
    entry["name"] = rule.name;
    json match = json::object();
    if (rule.match.exe) match["exe"] = *rule.match.exe;
    if (rule.match.cmdline) match["cmdline"] = *rule.match.cmdline;
    if (rule.match.cgroup) match["cgroup"] = *rule.match.cgroup;
    if (rule.match.label) match["label"] = *rule.match.label;
    if (!rule.match.uids.empty()) match["uid"] = rule.match.uids;
    if (!rule.match.gids.empty()) match["gid"] = rule.match.gids;
    entry["match"] = match;
    out["rules"].push_back(entry);
  }
  return out;
}

}  // namespace sluice::sched
