// What a file of GPU code holds: its containers and entries, its kernels, which of them have PTX a
// given device can JIT, and which of those the rewriter can make killable. Used by `sluice-ptx
// inspect`/`coverage` and by anyone who wants the same answers as a library call.
//
// Thread rules: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sluice/common/result.h"
#include "sluice/ptx/analysis.h"
#include "sluice/ptx/fatbin.h"

namespace sluice::ptx {

struct EntrySummary {
  std::size_t index = 0;
  std::uint64_t offset = 0;
  std::string kind;  // "ptx", "elf", "unknown"
  std::string arch;  // "sm_90", "compute_90a", ...
  Compression compression = Compression::none;
  std::uint64_t stored_bytes = 0;
  std::uint64_t content_bytes = 0;
  std::uint64_t flags = 0;
  std::string name;
  std::string error;  // why the entry's contents could not be read or parsed; empty when fine
};

struct ContainerSummary {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
  std::vector<EntrySummary> entries;
};

struct KernelSummary {
  std::string name;
  std::vector<std::string> sass;  // archs of the cubins that contain it
  std::vector<std::string> ptx;   // archs of the PTX that defines it
  bool ptx_for_device = false;    // some of that PTX can be JIT-compiled for the device arch
  // The analysis of the PTX the device would use (or, without such PTX, of the newest PTX).
  std::optional<KernelAnalysis> analysis;
  std::string analyzed_ptx;  // arch of the analysed PTX

  bool killable() const { return ptx_for_device && analysis && analysis->killable(); }
};

struct Inspection {
  ImageKind kind = ImageKind::unknown;
  std::vector<ContainerSummary> fatbins;
  std::vector<KernelSummary> kernels;  // sorted by name
};

struct InspectOptions {
  std::uint32_t device_arch = 90;  // compute capability the PTX must JIT for (H100/H200)
  AnalysisOptions analysis;
  DecompressLimits limits;
};

// `data` may be PTX text, a fatbin (one or more containers), a cubin or a host ELF with a
// .nv_fatbin section. Entries whose contents are malformed are reported in EntrySummary::error;
// a malformed container or file is an Error.
Result<Inspection> inspect(Bytes data, const InspectOptions& options = {});

}  // namespace sluice::ptx
