// Kill instrumentation: the twin of a PTX module whose killable entries check, at block entry, the
// client's kill word and the launch's done bitmap (kill_abi.h, docs/architecture.md "Contract: kill
// instrumentation").
//
// What an instrumented entry does before its original first instruction, all inside one nested
// `{ }` scope whose registers and labels start with "__sluice_":
//   thread (0,0,0) of each block, when the launch parameter is not 0:
//     reads the kill word through __sluice_kill_flag (skipped when the pointer is 0);
//     kill word 0:     atom.global.or its done bit; skip if the bit was already set (it ran before)
//     kill word not 0: skip; set killed = 1 unless the block's done bit says it already ran
//   the decision reaches every thread of the block through a barrier (Broadcast below);
//   skipping threads `ret`.
// Entries that are not killable are left unchanged (and keep their names), so the twin module is a
// drop-in for the original; the shim uses a twin only for the entries the report marks
// instrumented.
//
// Thread rules: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/common/result.h"
#include "sluice/ptx/analysis.h"
#include "sluice/ptx/ptx.h"

namespace sluice::ptx {

// Bump whenever the emitted PTX changes: it is part of the cache key.
inline constexpr std::string_view kRewriterVersion = "sluice-ptx/2";

enum class Broadcast {
  // bar.red.or.pred: thread 0's decision ORed over the block by the barrier itself. No shared
  // memory, so the twin's static shared size, occupancy and dynamic shared limit stay the
  // original's.
  barrier_reduction,
  // st.shared of a .shared word by thread 0, bar.sync 0, ld.shared by all: 4 more bytes of static
  // shared memory per block. The form the contract first described; kept for comparison on a GPU.
  shared_word,
};
std::string_view to_string(Broadcast broadcast);

struct InstrumentOptions {
  Broadcast broadcast = Broadcast::barrier_reduction;
  AnalysisOptions analysis;
};

struct InstrumentedKernel {
  std::string name;
  bool instrumented = false;
  KernelAnalysis analysis;
  // The original parameter buffer, and where the launch-record pointer goes in the twin's: the shim
  // copies the original buffer and writes the u64 at launch_param_offset (kernelParams users append
  // one more pointer to the array instead).
  ParamLayout original_params;
  std::uint32_t launch_param_offset = 0;
  std::uint32_t twin_param_bytes = 0;
};

struct Instrumented {
  std::string ptx;  // the twin module (the original, reprinted, when nothing was instrumented)
  std::vector<InstrumentedKernel> kernels;  // every entry of the module, in order
  std::string cache_key;

  std::size_t instrumented_count() const;
};

// The cache key of the twin of `ptx` under `options`: the rewriter version, the options and a
// content hash of the input, e.g. "sluice-ptx/1-b-3f2a...-1a2b". Cheap enough to compute on every
// module load; the shim keys its on-disk cache of twins by it.
std::string cache_key(std::string_view ptx, const InstrumentOptions& options = {});

Result<Instrumented> instrument(std::string_view ptx, const InstrumentOptions& options = {});
Result<Instrumented> instrument_module(const Module& module, std::string_view source_ptx,
                                       const InstrumentOptions& options = {});

}  // namespace sluice::ptx
