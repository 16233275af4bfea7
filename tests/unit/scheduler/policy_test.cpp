// The policy file: parsing, validation errors with JSON paths, matching, labels, reload semantics.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <string>

#include "sluice/scheduler/policy.h"

namespace sluice::sched {
namespace {

constexpr const char* kPolicy = R"({
  "version": 1,
  "scheduler": {"be_budget_us": 300, "holdoff_ms": 20, "sharing": "priority", "copy_chunk_mib": 4},
  "defaults": {"class": "be", "priority": 0},
  "rules": [
    {"name": "inference", "match": {"exe": "triton*", "uid": [1000, 1001]}, "class": "rt", "priority": 5,
     "deadline_us": 2000},
    {"name": "service-cgroup", "match": {"cgroup": "/system.slice/infer*.service"}, "class": "rt"},
    {"name": "batch-label", "match": {"label": "batch"}, "class": "be", "priority": -3},
    {"name": "python-serve", "match": {"exe": "python3*", "cmdline": "* serve.py*"}, "class": "rt"},
    {"name": "training", "match": {"gid": 2000}, "class": "be", "priority": 2, "weight": 2.5, "job_length_s": 60}
  ]
})";

Policy parsed() {
  auto policy = parse_policy(kPolicy, "test.json");
  EXPECT_TRUE(policy) << policy.error().message;
  return policy ? *policy : Policy{};
}

ClientIdentity client(std::string exe, std::uint32_t uid = 500, std::uint32_t gid = 500) {
  ClientIdentity id;
  id.pid = 42;
  id.exe = std::move(exe);
  id.uid = uid;
  id.gid = gid;
  id.cgroup = "/user.slice/user-500.slice";
  return id;
}

std::string error_of(const std::string& text) {
  auto policy = parse_policy(text, "p.json");
  return policy ? "(accepted)" : policy.error().message;
}

TEST(Policy, ParsesKnobsAndRules) {
  Policy policy = parsed();
  EXPECT_EQ(policy.scheduler.be_budget_ns, 300'000u);
  EXPECT_EQ(policy.scheduler.holdoff_ns, 20'000'000u);
  EXPECT_EQ(policy.scheduler.copy_chunk_bytes, 4u << 20);
  EXPECT_EQ(policy.scheduler.sharing, Sharing::priority);
  EXPECT_EQ(policy.scheduler.idle_budget_ns, protocol::kUnlimited);
  ASSERT_EQ(policy.rules.size(), 5u);
  EXPECT_EQ(policy.rules[0].match.uids, (std::vector<std::uint32_t>{1000, 1001}));
  EXPECT_EQ(policy.rules[4].params.weight, 2.5);
  EXPECT_EQ(policy.rules[4].params.job_length_ms, 60'000u);
  EXPECT_EQ(policy.source, "test.json");
}

TEST(Policy, FirstMatchingRuleWins) {
  Policy policy = parsed();
  Assignment a = assign(policy, client("tritonserver", 1000));
  EXPECT_EQ(a.params.cls, Class::rt);
  EXPECT_EQ(a.rule, "inference");
  EXPECT_EQ(a.params.deadline_us, 2000u);

  EXPECT_EQ(assign(policy, client("tritonserver", 999)).rule, "defaults") << "uid not in the list";

  ClientIdentity svc = client("anything");
  svc.cgroup = "/system.slice/inference.service";
  EXPECT_EQ(assign(policy, svc).rule, "service-cgroup");

  ClientIdentity py = client("python3.11");
  py.cmdline = "python3 serve.py --port 80";
  EXPECT_EQ(assign(policy, py).rule, "python-serve");
  py.cmdline = "python3 train.py";
  EXPECT_EQ(assign(policy, py).rule, "defaults");

  Assignment training = assign(policy, client("train", 500, 2000));
  EXPECT_EQ(training.params.cls, Class::be);
  EXPECT_EQ(training.params.priority, 2);
}

TEST(Policy, LabelsCanOnlyLower) {
  Policy policy = parsed();
  // A BE client asking for RT stays BE.
  ClientIdentity be = client("train", 500, 2000);
  be.label = "rt";
  EXPECT_EQ(assign(policy, be).params.cls, Class::be);
  EXPECT_EQ(assign(policy, be).params.priority, 2);

  // An RT client may lower itself to BE, and to a BE priority.
  ClientIdentity rt = client("tritonserver", 1000);
  rt.label = "be";
  Assignment lowered = assign(policy, rt);
  EXPECT_EQ(lowered.params.cls, Class::be);
  EXPECT_NE(lowered.rule.find("lowered by label"), std::string::npos);
  rt.label = "be:-7";
  EXPECT_EQ(assign(policy, rt).params.priority, -7);

  // A label takes part in matching but rules keep their order: the first rule still wins.
  ClientIdentity batch = client("tritonserver", 1000);
  batch.label = "batch";
  EXPECT_EQ(assign(policy, batch).rule, "inference");
  // A label that selects a lower rule is taken; one that would select a higher rule is not.
  ClientIdentity trainer = client("train", 500, 2000);
  trainer.label = "batch";
  EXPECT_EQ(assign(policy, trainer).rule, "batch-label") << "priority -3 is below 2";
  ClientIdentity nobody = client("x");
  nobody.label = "batch";
  EXPECT_EQ(assign(policy, nobody).params.priority, -3);

  // be:N never raises a BE client's priority.
  trainer.label = "be:9";
  EXPECT_EQ(assign(policy, trainer).params.priority, 2);
}

TEST(Policy, HintsFillWhatThePolicyLeavesOpen) {
  Policy policy = parsed();
  ClientIdentity c = client("x");
  c.job_length_ms = 5000;
  c.deadline_us = 300;
  Assignment a = assign(policy, c);
  EXPECT_EQ(a.params.job_length_ms, 5000u);
  ClientIdentity training = client("t", 1, 2000);
  training.job_length_ms = 5000;
  EXPECT_EQ(assign(policy, training).params.job_length_ms, 60'000u) << "the policy's value wins";
}

TEST(Policy, ValidationErrorsNameThePathAndProblem) {
  EXPECT_EQ(error_of(R"({"rules": []})"), "p.json: /version: missing (this sluiced reads version 1)");
  EXPECT_EQ(error_of(R"({"version": 2})"), "p.json: /version: 2 is outside 1..1");
  EXPECT_EQ(error_of(R"({"version": 1, "rules": [{"match": {}, "class": "rt"}, {"match": {"uid": "root"}, "class": "be"}]})"),
            "p.json: /rules/1/match/uid: expected an unsigned integer or a list of them, got string");
  EXPECT_EQ(error_of(R"({"version": 1, "rules": [{"match": {"uid": [1, -2]}, "class": "be"}]})"),
            "p.json: /rules/0/match/uid/1: expected an unsigned 32-bit integer, got integer");
  EXPECT_EQ(error_of(R"({"version": 1, "rules": [{"match": {}}]})"), "p.json: /rules/0/class: missing (rt or be)");
  EXPECT_EQ(error_of(R"({"version": 1, "rules": [{"match": {}, "class": "gold"}]})"),
            "p.json: /rules/0/class: unknown class 'gold' (rt, be)");
  EXPECT_EQ(error_of(R"({"version": 1, "rules": [{"class": "be"}]})"),
            "p.json: /rules/0/match: missing (use {} to match every client)");
  EXPECT_EQ(error_of(R"({"version": 1, "scheduler": {"be_budget_us": 0}})"),
            "p.json: /scheduler/be_budget_us: 0 is outside 1..1000000");
  EXPECT_EQ(error_of(R"({"version": 1, "scheduler": {"sharing": "lottery"}})"),
            "p.json: /scheduler/sharing: unknown policy 'lottery' (fair, priority, srtf, fifo)");
  EXPECT_EQ(error_of(R"({"version": 1, "scheduler": {"budget": 5}})"),
            "p.json: /scheduler/budget: unknown key (known: be_budget_us, idle_budget_us, holdoff_ms, "
            "copy_chunk_mib, default_prediction_us, rt_poll_us, sharing, reserve_sms, sm_count, gate, partition, max_reserve_sms, "
            "partitioned_be_budget_us)");
  EXPECT_EQ(error_of(R"({"version": 1, "scheduler": {"max_reserve_sms": 20}})"),
            "p.json: /scheduler/max_reserve_sms: 20 is not a multiple of 8 (the SM split granularity)");
  EXPECT_EQ(error_of(R"({"version": 1, "scheduler": {"gate": "off"}})"),
            "p.json: /scheduler/gate: expected true or false, got string");
  EXPECT_EQ(error_of(R"({"version": 1, "rules": [{"match": {"exe": ""}, "class": "be"}]})"),
            "p.json: /rules/0/match/exe: must not be empty");
  EXPECT_EQ(error_of(R"({"version": 1, "defaults": {"weight": 0}})"), "p.json: /defaults/weight: 0 is outside (0, 1000]");
  EXPECT_EQ(error_of("[1, 2]"), "p.json: /: expected an object, got array");
  EXPECT_EQ(error_of("{\n  \"version\": 1,\n  \"rules\": [,]\n}"),
            "p.json:3:13: not valid JSON: syntax error while parsing value - unexpected ','; expected '[', '{', or a literal");
}

TEST(Policy, PartitionReserveAndKillKnobs) {
  auto policy = parse_policy(R"({"version": 1, "scheduler": {"reserve_sms": 16, "sm_count": 114},
    "defaults": {"class": "be", "kill": true},
    "rules": [{"name": "rt", "match": {"exe": "rt"}, "class": "rt"},
              {"name": "keep", "match": {"exe": "keep"}, "class": "be", "kill": false}]})", "k.json");
  ASSERT_TRUE(policy) << policy.error().message;
  EXPECT_EQ(policy->scheduler.reserve_sms, 16u);
  EXPECT_EQ(policy->scheduler.sm_count, 114u);
  EXPECT_TRUE(policy->defaults.kill);
  EXPECT_FALSE(policy->rules[0].params.kill) << "an rt rule does not inherit kill";
  EXPECT_FALSE(policy->rules[1].params.kill);
  auto automatic = parse_policy(R"({"version": 1, "scheduler": {"reserve_sms": "auto"}})", "a.json");
  ASSERT_TRUE(automatic) << automatic.error().message;
  EXPECT_EQ(automatic->scheduler.reserve_sms, 0u);
  EXPECT_FALSE(automatic->defaults.kill) << "kill is off by default";

  EXPECT_EQ(error_of(R"({"version": 1, "scheduler": {"reserve_sms": 12}})"),
            "p.json: /scheduler/reserve_sms: 12 is not a multiple of 8 (the SM split granularity)");
  EXPECT_EQ(error_of(R"({"version": 1, "scheduler": {"reserve_sms": 0}})"),
            "p.json: /scheduler/reserve_sms: 0 is outside 8..4096");
  EXPECT_EQ(error_of(R"({"version": 1, "scheduler": {"reserve_sms": "most"}})"),
            "p.json: /scheduler/reserve_sms: expected \"auto\" or a multiple of 8, got 'most'");
  EXPECT_EQ(error_of(R"({"version": 1, "rules": [{"match": {}, "class": "be", "kill": "yes"}]})"),
            "p.json: /rules/0/kill: expected true or false, got string");
  EXPECT_EQ(error_of(R"({"version": 1, "rules": [{"match": {}, "class": "rt", "kill": true}]})"),
            "p.json: /rules/0/kill: only best-effort work can be killed (this is an rt class)");
}

TEST(Policy, NormalisedJsonParsesBackToTheSamePolicy) {
  Policy policy = parsed();
  std::string text = policy_to_json(policy).dump(2);
  auto again = parse_policy(text, "again");
  ASSERT_TRUE(again) << again.error().message << "\n" << text;
  EXPECT_EQ(policy_to_json(*again), policy_to_json(policy));
}

TEST(Policy, LoadFileNamesTheFile) {
  auto missing = load_policy_file("/nonexistent/policy.json");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("/nonexistent/policy.json: cannot be read"), std::string::npos);
  std::string path = testing::TempDir() + "/policy_test.json";
  std::ofstream(path) << kPolicy;
  auto loaded = load_policy_file(path);
  ASSERT_TRUE(loaded) << loaded.error().message;
  EXPECT_EQ(loaded->source, path);
  std::remove(path.c_str());
}

TEST(Policy, ShippedExampleIsValidAndMeansWhatDocsPolicySays) {
  auto policy = load_policy_file(SLUICE_EXAMPLES_DIR "/policy.json");
  ASSERT_TRUE(policy) << policy.error().message;
  ClientIdentity service = client("python3.11", 999);
  service.cgroup = "/system.slice/inference-api.service";
  EXPECT_EQ(assign(*policy, service).rule, "inference-service");
  EXPECT_EQ(assign(*policy, service).params.cls, Class::rt);
  ClientIdentity serving = client("python3.11", 1000);
  serving.cmdline = "python3 serve.py --port 8000";
  EXPECT_EQ(assign(*policy, serving).rule, "python-serving");
  serving.label = "batch";
  EXPECT_EQ(assign(*policy, serving).rule, "nightly-batch") << "the owner lowers its own job";
  ClientIdentity research = client("python3.11", 1234, 2000);
  EXPECT_EQ(assign(*policy, research).params.job_length_ms, 86'400'000u);
  EXPECT_EQ(assign(*policy, client("anything")).rule, "defaults");
}

TEST(Policy, DefaultPolicyMakesEveryoneBestEffort) {
  Policy policy = default_policy();
  EXPECT_EQ(assign(policy, client("anything", 0)).params.cls, Class::be);
  ClientIdentity labeled = client("anything");
  labeled.label = "rt";
  EXPECT_EQ(assign(policy, labeled).params.cls, Class::be);
}

TEST(Policy, LabelValidity) {
  EXPECT_TRUE(valid_label("be:3"));
  EXPECT_TRUE(valid_label("batch-job_1.x"));
  EXPECT_FALSE(valid_label("has space"));
  EXPECT_FALSE(valid_label(std::string(40, 'a')));
  EXPECT_FALSE(class_from_label("be:x"));
  EXPECT_EQ(class_from_label("be:4")->priority, 4);
}

}  // namespace
}  // namespace sluice::sched

namespace sluice::sched {
namespace {

TEST(PolicyStore, ReloadIsAtomic) {
  std::string path = testing::TempDir() + "/policy_store_test.json";
  std::ofstream(path) << R"({"version": 1, "rules": [{"match": {"exe": "a"}, "class": "rt"}]})";
  PolicyStore store(path);
  ASSERT_TRUE(store.reload());
  EXPECT_EQ(store.generation(), 1u);
  auto first = store.current();
  ASSERT_EQ(first->rules.size(), 1u);

  std::ofstream(path, std::ios::trunc) << R"({"version": 1, "rules": [{"match": {"exe": 5}, "class": "rt"}]})";
  auto bad = store.reload();
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message, path + ": /rules/0/match/exe: expected a string, got unsigned integer");
  EXPECT_EQ(store.current(), first) << "a bad file keeps the old policy";
  EXPECT_EQ(store.generation(), 1u);

  std::ofstream(path, std::ios::trunc) << R"({"version": 1, "rules": []})";
  ASSERT_TRUE(store.reload());
  EXPECT_TRUE(store.current()->rules.empty());
  EXPECT_EQ(first->rules.size(), 1u) << "earlier snapshots stay valid";
  std::remove(path.c_str());

  PolicyStore builtin;
  EXPECT_FALSE(builtin.reload());
  EXPECT_EQ(builtin.current()->rules.size(), 0u);
}

}  // namespace
}  // namespace sluice::sched
