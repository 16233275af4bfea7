#include "sluice/shim/driver_api.h"

#include <dlfcn.h>

#include <cstring>

namespace sluice::shim {

std::size_t DriverApi::resolve(void* dl_handle) {
  std::size_t found = 0;
#define SLUICE_SYM(name, treatment, stream, params, args)                  \
  name = reinterpret_cast<decltype(name)>(dlsym(dl_handle, #name));        \
  found += name != nullptr ? 1 : 0;
#include "driver_symbols.inc"
#undef SLUICE_SYM
  return found;
}

void* DriverApi::address(Sym sym) const {
  switch (sym) {
#define SLUICE_SYM(name, treatment, stream, params, args) \
  case Sym::name:                                          \
    return reinterpret_cast<void*>(name);
#include "driver_symbols.inc"
#undef SLUICE_SYM
    case Sym::kCount:
      break;
  }
  return nullptr;
}

bool find_sym(std::string_view name, Sym& out) {
  // kSymNames is sorted (the generator emits symbols in name order), so a binary search suffices.
  std::size_t lo = 0;
  std::size_t hi = kSymCount;
  while (lo < hi) {
    std::size_t mid = (lo + hi) / 2;
    int cmp = name.compare(kSymNames[mid]);
    if (cmp == 0) {
      out = static_cast<Sym>(mid);
      return true;
    }
    if (cmp < 0) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return false;
}

}  // namespace sluice::shim
