// DriverApi: typed pointers to every entry point of a CUDA driver library, generated from the
// toolkit's cuda.h (see shim/gen/gen_driver_api.py). The shim fills one from the real driver; tests
// fill one from the fake driver or from their own functions.
//
// Thread safety: a DriverApi is filled once, before it is shared, and only read afterwards.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "sluice/shim/cuda.h"

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
enum class Treatment : std::uint8_t { FORWARD, HOOK, SYNC, META, UNMANAGED };

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

inline const char* sym_name(Sym sym) { return kSymNames[static_cast<std::size_t>(sym)]; }

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

}  // namespace sluice::shim
