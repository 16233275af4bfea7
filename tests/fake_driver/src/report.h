// The fake driver's counters as JSON, and the report written at exit (SLUICE_FAKE_REPORT).
#pragma once

#include <string>

#include "config.h"

namespace sluice::fake {

struct Driver;

// One JSON object: the pid, every counter of sluice_fake_counters, and *_pending (submitted but
// neither executed nor failed yet) for launches, copies and memsets.
std::string counters_json(Driver& drv);

// Registers the exit handler that writes counters_json to config.report (%p: the pid), once per
// process. Called at cuInit with the driver's lock held.
void arm_exit_report(const Config& config);

}  // namespace sluice::fake
