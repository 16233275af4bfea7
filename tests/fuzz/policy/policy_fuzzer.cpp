// Fuzzes the policy parser. A policy that parses must classify clients without trouble and survive
// a round trip through its normalised JSON unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "sluice/scheduler/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sluice::sched;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto policy = parse_policy(text, "fuzz.json");
  if (!policy) return 0;
  ClientIdentity client;
  client.pid = 1;
  client.uid = 1000;
  client.gid = 1000;
  client.exe = "python3.11";
  client.cmdline = "python3 serve.py";
  client.cgroup = "/system.slice/infer.service";
  for (const char* label : {"", "rt", "be", "be:-3", "batch", "be:x"}) {
    client.label = label;
    (void)assign(*policy, client);
  }
  nlohmann::json normalised = policy_to_json(*policy);
  auto again = parse_policy(normalised.dump(), "normalised.json");
  if (!again || policy_to_json(*again) != normalised) std::abort();
  return 0;
}
