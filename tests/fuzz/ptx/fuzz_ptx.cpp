// Fuzzes the PTX reader and everything built on it. Beyond "no crash", it checks the properties the
// shim relies on: a parsed module prints to text that parses again to the same text, and a twin
// parses again.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "sluice/ptx/analysis.h"
#include "sluice/ptx/instrument.h"
#include "sluice/ptx/ptx.h"

namespace {

[[noreturn]] void violated(const char* what, std::string_view detail) {
  std::fprintf(stderr, "fuzz_ptx_module: %s: %.*s\n", what, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sluice::ptx;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto module = parse_module(text);
  if (!module) return 0;
  const std::string printed = print_module(*module);
  auto reparsed = parse_module(printed);
  if (!reparsed) violated("printed module does not parse", reparsed.error().message);
  if (print_module(*reparsed) != printed) violated("printing is not a fixed point", printed);
  (void)analyze_module(*module, AnalysisOptions{.allow_uninitialized_reads = true});
  for (const Function* entry : module->entries()) (void)layout_params(entry->params);
  auto twin = instrument_module(*module, text);
  if (!twin) violated("instrumenting a parsed module failed", twin.error().message);
  if (auto again = parse_module(twin->ptx); !again)
    violated("twin does not parse", again.error().message);
  return 0;
}
