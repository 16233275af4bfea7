#include "config.h"

#include <algorithm>

#include "sluice/common/env.h"
#include "sluice/common/log.h"
#include "sm_mask.h"

namespace sluice::fake {
namespace {

std::uint64_t read_u64(const char* name, std::uint64_t fallback) {
  auto value = env::get_u64(name, fallback);
  if (!value) {
    log::warn("fake driver: {}; using {}", value.error().message, fallback);
    return fallback;
  }
  return *value;
}

}  // namespace

Config load_config() {
  Config config;
  config.devices = static_cast<int>(std::clamp<std::uint64_t>(read_u64("SLUICE_FAKE_DEVICES", 1), 0, 16));
  config.sms = static_cast<unsigned>(std::clamp<std::uint64_t>(read_u64("SLUICE_FAKE_SMS", 132), 1, kMaxSms));
  config.copy_gbps = std::max<std::uint64_t>(read_u64("SLUICE_FAKE_COPY_GBPS", 25), 1);
  config.launch_ns = read_u64("SLUICE_FAKE_LAUNCH_NS", 0);
  config.memory_mib = std::max<std::uint64_t>(read_u64("SLUICE_FAKE_MEMORY_MIB", 81920), 64);
  config.gpu_dir = env::get("SLUICE_FAKE_GPU_DIR").value_or("");
  auto trace = env::get_bool("SLUICE_FAKE_TRACE", false);
  config.trace = trace.ok() && *trace;
  config.report = env::get("SLUICE_FAKE_REPORT").value_or("");
  return config;
}

}  // namespace sluice::fake
