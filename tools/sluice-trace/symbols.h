// The CUDA driver library's launch and copy entry points, read from its ELF dynamic symbol table,
// as file offsets that uprobes attach to.
//
// Thread rules: pure functions; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/common/result.h"

namespace sluice::trace {

enum class EntryKind : std::uint8_t { launch, copy };

struct DriverSymbol {
  std::string name;          // e.g. cuLaunchKernel_ptsz
  std::uint64_t offset = 0;  // file offset of the function's first instruction
  EntryKind kind = EntryKind::launch;
};

// Which entry points are counted: kernel launches (cuLaunchKernel*, cuLaunchCooperativeKernel*,
// cuGraphLaunch*) and copies (cuMemcpy*), every ABI variant (_v2, _ptsz, _ptds). Anything else:
// nullopt.
std::optional<EntryKind> classify_entry_point(std::string_view name);

// The counted entry points that `path` defines, one per distinct address (aliases share one
// probe, so a call is counted once), sorted by name. Fails, naming the file, when it cannot be
// read, is not a 64-bit ELF shared object, or lacks cuLaunchKernel or every cuMemcpy* symbol.
Result<std::vector<DriverSymbol>> driver_entry_points(const std::string& path);

// The real driver library: libcuda.so.1 from `ldconfig -p`, else the usual directories
// (/usr/lib/x86_64-linux-gnu, /usr/local/nvidia/lib64, /usr/lib64). "" when none exists.
std::string find_driver_library();

}  // namespace sluice::trace
