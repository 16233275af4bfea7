// JSON forms of the rewriter's reports, as `sluice-ptx --json` prints them and as the shim may
// store them beside cached twins. Field names are stable: scripts read them.
#pragma once

#include <nlohmann/json.hpp>

#include "sluice/ptx/analysis.h"
#include "sluice/ptx/inspect.h"
#include "sluice/ptx/instrument.h"

namespace sluice::ptx {

nlohmann::json to_json(const SkipReason& reason);
nlohmann::json to_json(const KernelAnalysis& analysis);
nlohmann::json to_json(const ParamLayout& layout);
// The instrumentation report: options, cache key and per kernel the verdict and parameter layout.
// The twin PTX itself is not included.
nlohmann::json to_json(const Instrumented& instrumented, const InstrumentOptions& options);
nlohmann::json to_json(const Inspection& inspection);

}  // namespace sluice::ptx
