// DriverApi: typed pointers to every entry point of a CUDA driver library, generated from the
// toolkit's cuda.h (see shim/gen/gen_driver_api.py). The shim fills one from the real driver; tests
// fill one from the fake driver or from their own functions.
//
// Thread safety: a DriverApi is filled once, before it is shared, and only read afterwards.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "sluice/shim/cuda.h"
#include "sluice/shim/cuda_interop.h"

namespace sluice::shim {

// One enumerator per exported symbol, in the order of driver_symbols.inc.
enum class Sym : std::uint16_t {
#define SLUICE_SYM(name, treatment, stream, params, args) name,
#include "driver_symbols.inc"
#undef SLUICE_SYM
  kCount
};
inline constexpr std::size_t kSymCount = static_cast<std::size_t>(Sym::kCount);

// What the shim does with a symbol (see shim/gen/api_policy.txt).
enum class Treatment : std::uint8_t { FORWARD, HOOK, QUEUE, SYNC, META, UNMANAGED, ORDERED };

inline constexpr std::array<const char*, kSymCount> kSymNames = {
#define SLUICE_SYM(name, treatment, stream, params, args) #name,
#include "driver_symbols.inc"
#undef SLUICE_SYM
};

inline constexpr std::array<Treatment, kSymCount> kSymTreatments = {
#define SLUICE_SYM(name, treatment, stream, params, args) Treatment::treatment,
#include "driver_symbols.inc"
#undef SLUICE_SYM
};

inline const char* sym_name(Sym sym) {
  return kSymNames[static_cast<std::size_t>(sym)];
}

// True for the _ptsz/_ptds variants, which read stream handle 0 as the per-thread default stream.
constexpr bool sym_per_thread(Sym sym) {
  const std::string_view name = kSymNames[static_cast<std::size_t>(sym)];
  return name.ends_with("_ptsz") || name.ends_with("_ptds");
}

// The name without its per-thread suffix and ABI version: cuMemcpyHtoDAsync_v2_ptsz ->
// cuMemcpyHtoDAsync. Variants of one base take the same arguments or a prefix-compatible list.
constexpr std::string_view sym_base(Sym sym) {
  std::string_view name = kSymNames[static_cast<std::size_t>(sym)];
  if (name.ends_with("_ptsz") || name.ends_with("_ptds")) name.remove_suffix(5);
  const std::size_t v = name.rfind("_v");
  if (v == std::string_view::npos || v + 2 == name.size()) return name;
  for (std::size_t i = v + 2; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return name;
  }
  return name.substr(0, v);
}

struct DriverApi {
#define SLUICE_SYM(name, treatment, stream, params, args) CUresult(*name) params = nullptr;
#include "driver_symbols.inc"
#undef SLUICE_SYM

  // Resolves every symbol with dlsym(handle, name). Symbols the library lacks stay null.
  // Returns how many were found.
  std::size_t resolve(void* dl_handle);

  // The pointer stored for `sym`, type-erased (null when missing).
  void* address(Sym sym) const;
};

// Looks a symbol up by name; returns false when cuda.h has no such symbol.
bool find_sym(std::string_view name, Sym& out);

// One answer of cuGetProcAddress, from the generated proc_table.inc.
struct ProcRow {
  std::string_view base;  // the name asked for ("cuMemAlloc")
  int version;            // the CUDA version that introduced this ABI (3020)
  bool per_thread;        // the per-thread default stream variant
  Sym sym;                // the exported symbol (cuMemAlloc_v2)
};

// Every row for `base`, ordered by version (empty when the table does not know the name).
std::span<const ProcRow> proc_rows(std::string_view base);

// The symbol the driver answers for (base, cudaVersion, per-thread): the newest ABI not newer than
// `version`; when `per_thread`, the per-thread variant if one exists for an ABI at least as new.
// `status` says why there is none (CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND / VERSION_NOT_SUFFICIENT).
bool find_proc(std::string_view base, int version, bool per_thread, Sym& out,
               CUdriverProcAddressQueryResult& status);

}  // namespace sluice::shim
