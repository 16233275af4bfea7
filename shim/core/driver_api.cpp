#include "sluice/shim/driver_api.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstring>

namespace sluice::shim {

std::size_t DriverApi::resolve(void* dl_handle) {
  std::size_t found = 0;
#define SLUICE_SYM(name, treatment, stream, params, args)           \
  name = reinterpret_cast<decltype(name)>(dlsym(dl_handle, #name)); \
  found += name != nullptr ? 1 : 0;
#include "driver_symbols.inc"
#undef SLUICE_SYM
  return found;
}

void* DriverApi::address(Sym sym) const {
  switch (sym) {
#define SLUICE_SYM(name, treatment, stream, params, args) \
  case Sym::name:                                         \
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

namespace {
constexpr ProcRow kProcRows[] = {
#define SLUICE_PROC(base, version, per_thread, symbol) \
  {base, version, per_thread != 0, Sym::symbol},
#include "proc_table.inc"
#undef SLUICE_PROC
};
}  // namespace

std::span<const ProcRow> proc_rows(std::string_view base) {
  // The generator sorts the table by (base, version, per-thread).
  struct ByBase {
    bool operator()(const ProcRow& row, std::string_view name) const { return row.base < name; }
    bool operator()(std::string_view name, const ProcRow& row) const { return name < row.base; }
  };
  auto [first, last] = std::equal_range(std::begin(kProcRows), std::end(kProcRows), base, ByBase{});
  return {first, last};
}

bool find_proc(std::string_view base, int version, bool per_thread, Sym& out,
               CUdriverProcAddressQueryResult& status) {
  const std::span<const ProcRow> rows = proc_rows(base);
  if (rows.empty()) {
    status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    return false;
  }
  const ProcRow* plain = nullptr;
  const ProcRow* threaded = nullptr;
  for (const ProcRow& row : rows) {
    if (row.version > version) continue;
    (row.per_thread ? threaded : plain) = &row;  // rows ascend by version: the last one wins
  }
  const ProcRow* chosen = plain;
  if (per_thread && threaded != nullptr &&
      (chosen == nullptr || threaded->version >= chosen->version)) {
    chosen = threaded;
  }
  if (chosen == nullptr) {
    status = CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT;
    return false;
  }
  status = CU_GET_PROC_ADDRESS_SUCCESS;
  out = chosen->sym;
  return true;
}

}  // namespace sluice::shim
