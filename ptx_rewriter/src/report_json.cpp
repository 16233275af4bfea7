#include "sluice/ptx/report_json.h"

#include "sluice/ptx/kill_abi.h"

namespace sluice::ptx {

using nlohmann::json;

json to_json(const SkipReason& reason) {
  return json{{"code", reason.code}, {"message", reason.message}, {"line", reason.line}};
}

json to_json(const KernelAnalysis& analysis) {
  json reasons = json::array();
  for (const SkipReason& reason : analysis.reasons) reasons.push_back(to_json(reason));
  return json{{"name", analysis.name},
              {"killable", analysis.killable()},
              {"reasons", reasons},
              {"notes", analysis.notes},
              {"module_data", analysis.module_data},
              {"mirror", analysis.mirror}};
}

json to_json(const ParamLayout& layout) {
  json slots = json::array();
  for (const ParamSlot& slot : layout.slots) {
    slots.push_back(
        {{"name", slot.name}, {"offset", slot.offset}, {"size", slot.size}, {"align", slot.align}});
  }
  return json{{"params", slots}, {"size", layout.size}};
}

json to_json(const Instrumented& instrumented, const InstrumentOptions& options) {
  json kernels = json::array();
  for (const InstrumentedKernel& kernel : instrumented.kernels) {
    json entry = to_json(kernel.analysis);
    entry["instrumented"] = kernel.instrumented;
    entry["original_params"] = to_json(kernel.original_params);
    if (kernel.instrumented) {
      entry["launch_param"] = {{"name", kill_abi::kLaunchParamName},
                               {"offset", kernel.launch_param_offset},
                               {"size", 8}};
      entry["twin_param_bytes"] = kernel.twin_param_bytes;
    }
    kernels.push_back(std::move(entry));
  }
  return json{{"rewriter", kRewriterVersion},
              {"cache_key", instrumented.cache_key},
              {"broadcast", to_string(options.broadcast)},
              {"allow_uninitialized_reads", options.analysis.allow_uninitialized_reads},
              {"kill_flag_symbol", kill_abi::kKillFlagSymbol},
              {"instrumented", instrumented.instrumented_count()},
              {"kernels", kernels}};
}

json to_json(const Inspection& inspection) {
  json fatbins = json::array();
  for (const ContainerSummary& container : inspection.fatbins) {
    json entries = json::array();
    for (const EntrySummary& entry : container.entries) {
      json item = {{"index", entry.index},
                   {"offset", entry.offset},
                   {"kind", entry.kind},
                   {"arch", entry.arch},
                   {"compression", to_string(entry.compression)},
                   {"stored_bytes", entry.stored_bytes},
                   {"content_bytes", entry.content_bytes},
                   {"flags", entry.flags}};
      if (!entry.name.empty()) item["name"] = entry.name;
      if (!entry.error.empty()) item["error"] = entry.error;
      entries.push_back(std::move(item));
    }
    fatbins.push_back(
        {{"offset", container.offset}, {"size", container.size}, {"entries", entries}});
  }
  json kernels = json::array();
  for (const KernelSummary& kernel : inspection.kernels) {
    json item = {{"name", kernel.name},
                 {"sass", kernel.sass},
                 {"ptx", kernel.ptx},
                 {"ptx_for_device", kernel.ptx_for_device},
                 {"killable", kernel.killable()}};
    if (kernel.analysis) {
      json analysis = to_json(*kernel.analysis);
      item["analyzed_ptx"] = kernel.analyzed_ptx;
      item["reasons"] = analysis["reasons"];
      item["notes"] = analysis["notes"];
    }
    kernels.push_back(std::move(item));
  }
  return json{{"kind", to_string(inspection.kind)}, {"fatbins", fatbins}, {"kernels", kernels}};
}

}  // namespace sluice::ptx
