// Fuzzes the binary readers: fatbin containers and their decompression, the registration wrapper,
// ELF files (host libraries and cubins), and the inspection that ties them together. Any input must
// give a value or an Error, never a crash, an over-read or an unbounded allocation.
#include <cstddef>
#include <cstdint>

#include "sluice/ptx/elf.h"
#include "sluice/ptx/fatbin.h"
#include "sluice/ptx/inspect.h"

namespace {

using namespace sluice::ptx;

// Small enough that a claimed size cannot exhaust the fuzzer's memory.
constexpr DecompressLimits kLimits{1u << 22};

void read_fatbins(Bytes data) {
  auto fatbins = parse_fatbins(data);
  if (!fatbins) return;
  for (const Fatbin& fatbin : *fatbins) {
    for (const FatbinEntry& entry : fatbin.entries) {
      auto contents = entry_contents(entry, kLimits);
      if (contents && entry.is_elf()) {
        auto cubin = parse_elf(Bytes(contents->data(), contents->size()));
        if (cubin) (void)cubin_kernels(*cubin);
      }
      if (entry.is_ptx()) (void)entry_ptx(entry, kLimits);
    }
    (void)select_ptx(fatbin, 90);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Bytes bytes(reinterpret_cast<const std::byte*>(data), size);
  (void)classify_image(bytes);
  (void)parse_fatbin_wrapper(bytes);
  read_fatbins(bytes);
  if (auto elf = parse_elf(bytes)) {
    (void)cubin_kernels(*elf);
    (void)elf_fatbins(*elf);
  }
  InspectOptions options;
  options.limits = kLimits;
  (void)inspect(bytes, options);
  return 0;
}
