// The fake driver's configuration, read once at cuInit from SLUICE_FAKE_* variables.
#pragma once

#include <cstdint>
#include <string>

namespace sluice::fake {

struct Config {
  int devices = 1;                  // SLUICE_FAKE_DEVICES
  unsigned sms = 132;               // SLUICE_FAKE_SMS (at most kMaxSms)
  std::uint64_t copy_gbps = 25;     // SLUICE_FAKE_COPY_GBPS: copy engine bandwidth
  std::uint64_t launch_ns = 0;      // SLUICE_FAKE_LAUNCH_NS: host cost of every driver call
  std::string gpu_dir;              // SLUICE_FAKE_GPU_DIR: share devices between processes
  bool trace = false;               // SLUICE_FAKE_TRACE: record the execution trace from cuInit
  std::uint64_t memory_mib = 81920; // SLUICE_FAKE_MEMORY_MIB: device memory of each device
  std::string report;               // SLUICE_FAKE_REPORT: counters as JSON at exit (%p: the pid)
};

// Reads the environment. A malformed value is logged and replaced by its default.
Config load_config();

}  // namespace sluice::fake
