// The hooks that are more than a call into the engine: the loader entry points and module images.
#include "hooks.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <span>
#include <string>

#include "real_driver.h"
#include "sluice/common/log.h"
#include "sluice/shim/module_image.h"

// From the daemon client (scheduler/client/connection.h); weak so that the shim links without it.
extern "C" int sluice_prepare_driver_environment(void) __attribute__((weak));

namespace sluice::shim::preload {

CUresult no_driver(Runtime* rt, Sym sym) noexcept {
  if (rt == nullptr) return CUDA_ERROR_NOT_INITIALIZED;  // called back while sluice initializes
  // The reason was logged once when loading failed; each entry point only notes it at debug level.
  if (log::enabled(log::Level::debug)) log::debug("{}: no CUDA driver is loaded", sym_name(sym));
  return CUDA_ERROR_NO_DEVICE;
}

CUresult init(Runtime& rt, decltype(DriverApi::cuInit) fn, unsigned flags) {
  // The driver reads CUDA_MPS_PIPE_DIRECTORY when it initializes, so sluiced's MPS pipe directory
  // (mps mode) must be in the environment before the real cuInit: one bounded round trip to the
  // daemon, once per process, only when the gate follows the daemon.
  static std::once_flag environment_once;
  std::call_once(environment_once, [] {
    const char* gate = std::getenv("SLUICE_GATE");
    if (sluice_prepare_driver_environment != nullptr &&
        (gate == nullptr || *gate == '\0' || std::strcmp(gate, "daemon") == 0)) {
      sluice_prepare_driver_environment();
    }
  });
  const CUresult result = fn(flags);
  if (result == CUDA_SUCCESS) select_gate(rt);
  return result;
}

CUresult get_export_table(Runtime& rt, decltype(DriverApi::cuGetExportTable) fn, const void** table,
                          const CUuuid* id) {
  // cudart's private interface: forwarded as is (cudart registers its own modules through it).
  rt.engine->stats().count_export_table();
  return fn(table, id);
}

namespace {

// The shim's own export that matches what the real driver answered: the driver knows best which
// ABI variant fits (name, version, flags); sluice hands out its wrapper of that same variant.
bool match_real_answer(const Runtime& rt, std::string_view base, void* real_address, Sym& out) {
  for (const ProcRow& row : proc_rows(base)) {
    if (rt.real.address(row.sym) == real_address) {
      out = row.sym;
      return true;
    }
  }
  return false;
}

// True when the driver exports an ABI variant of `base` newer than every one this build's cuda.h
// knows (cuFoo_v3 where the table stops at cuFoo_v2): the driver may then have chosen it, and a
// wrapper of an older variant would take the wrong arguments.
bool driver_knows_newer_variant(const Runtime& rt, std::string_view base) {
  const std::span<const ProcRow> rows = proc_rows(base);
  if (rows.empty() || rt.driver_handle == nullptr) return false;
  int newest = 1;  // the plain name is ABI 1; base_vN is ABI N
  for (const ProcRow& row : rows) {
    const std::string_view name = sym_name(row.sym);
    const std::size_t v = name.rfind("_v");
    if (v != std::string_view::npos && name.substr(0, v) == base) {
      newest = std::max(newest, std::atoi(std::string(name.substr(v + 2)).c_str()));
    }
  }
  for (int abi = newest + 1; abi <= newest + 3; ++abi) {
    const std::string candidate = std::string(base) + "_v" + std::to_string(abi);
    if (dlsym(rt.driver_handle, candidate.c_str()) != nullptr ||
        dlsym(rt.driver_handle, (candidate + "_ptsz").c_str()) != nullptr ||
        dlsym(rt.driver_handle, (candidate + "_ptds").c_str()) != nullptr) {
      return true;
    }
  }
  return false;
}

}  // namespace

CUresult get_proc_address(Runtime& rt, const char* symbol, void** pfn, int version,
                          cuuint64_t flags, CUdriverProcAddressQueryResult* status) {
  rt.engine->stats().count_proc_query();
  if (symbol == nullptr || pfn == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const std::string_view base(symbol);
  const bool per_thread = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
  auto answer = [&](void* address, CUdriverProcAddressQueryResult result, CUresult code) {
    *pfn = address;
    if (status != nullptr) *status = result;
    return code;
  };

  if (!rt.driver_loaded) {  // answer from the table: every wrapper then reports the missing driver
    Sym sym{};
    CUdriverProcAddressQueryResult result = CU_GET_PROC_ADDRESS_SUCCESS;
    if (!find_proc(base, version, per_thread, sym, result)) {
      // As the driver answers: a known name asked for with too old a version is CUDA_SUCCESS with
      // a null pointer (cuda.h; the H200 run in bench/results/fake_driver_conformance_h200.txt).
      const CUresult code = result == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
                                ? CUDA_SUCCESS
                                : CUDA_ERROR_NOT_FOUND;
      return answer(nullptr, result, code);
    }
    return answer(own_entry_point(sym), result, CUDA_SUCCESS);
  }

  // The real driver decides whether the function exists for this version, and which variant.
  void* real_address = nullptr;
  CUdriverProcAddressQueryResult real_status = CU_GET_PROC_ADDRESS_SUCCESS;
  CUresult real_result = CUDA_ERROR_NOT_FOUND;
  if (rt.real.cuGetProcAddress_v2 != nullptr) {
    real_result = rt.real.cuGetProcAddress_v2(symbol, &real_address, version, flags, &real_status);
  } else if (rt.real.cuGetProcAddress != nullptr) {
    real_result = rt.real.cuGetProcAddress(symbol, &real_address, version, flags);
    if (real_address == nullptr) real_status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  }
  if (real_address == nullptr) return answer(nullptr, real_status, real_result);

  Sym sym{};
  CUdriverProcAddressQueryResult table_status = CU_GET_PROC_ADDRESS_SUCCESS;
  if (match_real_answer(rt, base, real_address, sym) ||
      (find_proc(base, version, per_thread, sym, table_status) && rt.real.address(sym) != nullptr &&
       !driver_knows_newer_variant(rt, base))) {
    return answer(own_entry_point(sym), real_status, real_result);
  }
  // A function (or an ABI of it) that no header of this build's toolkit declares: hand out the
  // driver's own. Counted and named in the statistics, logged once at info level: nothing bypasses
  // sluice silently, and a newer driver's extra names are no reason to alarm anyone.
  if (rt.engine->stats().note_unknown_proc(base)) {
    log::info(
        "cuGetProcAddress('{}', {}): sluice's table (the driver headers of this build) has no wrapper "
        "for the driver's answer; calls through it bypass sluice",
        base, version);
  }
  return answer(real_address, real_status, real_result);
}

void image_loaded(Runtime& rt, const void* handle, bool library, const void* image,
                  const char* path) {
  std::string file;
  ImageView view = image_view(image);
  if (image == nullptr && path != nullptr) {
    if (!read_file(path, file)) file.clear();
    view = {file.data(), file.size()};
  }
  if (library) {
    rt.engine->library_loaded(static_cast<CUlibrary>(const_cast<void*>(handle)), view.data,
                              view.size);
  } else {
    rt.engine->module_loaded(static_cast<CUmodule>(const_cast<void*>(handle)), view.data,
                             view.size);
  }
}

}  // namespace sluice::shim::preload
