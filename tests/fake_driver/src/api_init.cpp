// Initialisation, versions, error strings and cuGetProcAddress.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <string_view>

#include "api.h"
#include "engine_board.h"
#include "executor.h"
#include "report.h"
#include "sluice/common/clock.h"
#include "sluice/common/log.h"
#include "sluice/shim/driver_api.h"

namespace sluice::fake {
namespace {

constexpr int kDriverVersion = 13000;

struct ErrorEntry {
  CUresult code;
  const char* name;
  const char* text;
};

constexpr ErrorEntry kErrors[] = {
#define SLUICE_FAKE_ERROR(name, value, text) {name, #name, text},
#include "error_table.inc"
#undef SLUICE_FAKE_ERROR
};

const ErrorEntry* find_error(CUresult code) {
  // Applications pass codes that are no enumerator; compare them as integers.
  int value = 0;
  std::memcpy(&value, &code, sizeof(value));
  for (const ErrorEntry& entry : kErrors) {
    if (static_cast<int>(entry.code) == value) return &entry;
  }
  return nullptr;
}

struct ProcRow {
  std::string_view base;
  int version;
  bool per_thread;
  shim::Sym symbol;
};

constexpr ProcRow kProcTable[] = {
#define SLUICE_PROC(base, version, per_thread, symbol) {base, version, per_thread != 0, shim::Sym::symbol},
#include "proc_table.inc"
#undef SLUICE_PROC
};

// This library's own address of every driver symbol it exports (null where it has none),
// looked up through its own handle so that a preloaded shim never answers in its place.
const std::vector<void*>& own_symbols() {
  static std::vector<void*> table;
  static std::once_flag once;
  std::call_once(once, [] {
    table.assign(shim::kSymCount, nullptr);
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&cuInit), &info) == 0 || info.dli_fname == nullptr) return;
    void* self = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (self == nullptr) return;
    for (std::size_t i = 0; i < shim::kSymCount; ++i) {
      void* address = dlsym(self, shim::kSymNames[i]);
      // dlsym searches the library's dependencies too; keep only definitions of this library.
      Dl_info where{};
      if (address != nullptr && dladdr(address, &where) != 0 && where.dli_fbase == info.dli_fbase) {
        table[i] = address;
      }
    }
  });
  return table;
}

// Maps (name, version, flags) to an entry point as the driver's table does: the newest ABI not
// newer than `version`; with CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, the per-thread
// variant when there is one for that ABI.
//
// A name the driver has, asked for with a version older than its first ABI, is no error: as cuda.h
// documents, the answer is CUDA_SUCCESS with a null pointer and VERSION_NOT_SUFFICIENT. The H200
// run of the conformance check (bench/results/fake_driver_conformance_h200.txt) answered so for
// cuLaunchKernelEx at 11050 (CUDA_SUCCESS and that status; the pointer was not recorded). Unknown
// names stay CUDA_ERROR_NOT_FOUND, which no run has contradicted yet.
CUresult get_proc_address(const char* symbol, void** pfn, int version, cuuint64_t flags,
                          CUdriverProcAddressQueryResult* status) {
  ++driver().counters.proc_address_queries;
  auto answer = [&](CUdriverProcAddressQueryResult result, void* address) {
    if (status != nullptr) *status = result;
    *pfn = address;
    return result == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND ? CUDA_ERROR_NOT_FOUND : CUDA_SUCCESS;
  };
  if (symbol == nullptr || pfn == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if ((flags & ~static_cast<cuuint64_t>(CU_GET_PROC_ADDRESS_LEGACY_STREAM | CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)) != 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  const bool per_thread = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
  const std::string_view name(symbol);
  const ProcRow* best_plain = nullptr;
  const ProcRow* best_per_thread = nullptr;
  bool known = false;
  for (const ProcRow& row : kProcTable) {
    if (row.base != name) continue;
    known = true;
    if (row.version > version) continue;
    const ProcRow*& best = row.per_thread ? best_per_thread : best_plain;
    if (best == nullptr || row.version >= best->version) best = &row;
  }
  if (!known) return answer(CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND, nullptr);
  const ProcRow* chosen = best_plain;
  if (per_thread && best_per_thread != nullptr && (chosen == nullptr || best_per_thread->version >= chosen->version)) {
    chosen = best_per_thread;
  }
  if (chosen == nullptr) return answer(CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT, nullptr);
  log::trace("fake driver: cuGetProcAddress({}, {}, {}) -> {}", name, version, flags, shim::sym_name(chosen->symbol));
  void* address = own_symbols()[static_cast<std::size_t>(chosen->symbol)];
  if (address == nullptr) return answer(CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND, nullptr);
  return answer(CU_GET_PROC_ADDRESS_SUCCESS, address);
}

void make_device(Driver& drv, int ordinal) {
  auto device = std::make_unique<Device>();
  device->ordinal = ordinal;
  device->sms = drv.config.sms;
  device->total_memory = drv.config.memory_mib << 20;
  if (!drv.config.gpu_dir.empty()) {
    std::string why;
    device->board = EngineBoard::open_shared(drv.config.gpu_dir, ordinal, device->sms, why);
    if (!device->board) log::warn("fake driver: device {} is private to this process: {}", ordinal, why);
  }
  if (!device->board) device->board = EngineBoard::make_private(device->sms);
  device->executor = std::make_unique<Executor>(drv, *device);
  auto* pool = new MemPool();
  pool->device = device.get();
  register_handle(drv, pool);
  device->default_pool = pool;
  device->current_pool = pool;
  drv.devices.push_back(std::move(device));
}

}  // namespace

namespace api {

void charge_launch_cost(const Driver& drv) {
  const std::uint64_t cost = drv.config.launch_ns;
  if (cost == 0) return;
  const std::uint64_t until = now_ns() + cost;
  while (now_ns() < until) {
  }
}

}  // namespace api
}  // namespace sluice::fake

using namespace sluice::fake;

extern "C" CUresult cuInit(unsigned int flags) {
  return api::call_uninitialized([&] {
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    Driver& drv = driver();
    ++drv.counters.api_calls;
    std::lock_guard lock(drv.mu);
    if (drv.initialized.load()) return CUDA_SUCCESS;
    drv.config = load_config();
    if (drv.config.trace) drv.tracing = true;
    arm_exit_report(drv.config);
    drv.start_time = process_start_time(getpid());
    for (int ordinal = 0; ordinal < drv.config.devices; ++ordinal) make_device(drv, ordinal);
    drv.initialized.store(true, std::memory_order_release);
    if (drv.config.devices == 0) return CUDA_ERROR_NO_DEVICE;
    return CUDA_SUCCESS;
  });
}

extern "C" CUresult cuDriverGetVersion(int* version) {
  return api::call_uninitialized([&] {
    if (version == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *version = kDriverVersion;
    return CUDA_SUCCESS;
  });
}

extern "C" CUresult cuGetErrorName(CUresult error, const char** name) {
  return api::call_uninitialized([&] {
    if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
    const ErrorEntry* entry = find_error(error);
    *name = entry != nullptr ? entry->name : nullptr;
    return entry != nullptr ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
  });
}

extern "C" CUresult cuGetErrorString(CUresult error, const char** text) {
  return api::call_uninitialized([&] {
    if (text == nullptr) return CUDA_ERROR_INVALID_VALUE;
    const ErrorEntry* entry = find_error(error);
    *text = entry != nullptr ? entry->text : nullptr;
    return entry != nullptr ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
  });
}

extern "C" CUresult cuGetProcAddress(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags) {
  return api::call_uninitialized([&] { return get_proc_address(symbol, pfn, cudaVersion, flags, nullptr); });
}

extern "C" CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags,
                                        CUdriverProcAddressQueryResult* symbolStatus) {
  return api::call_uninitialized([&] { return get_proc_address(symbol, pfn, cudaVersion, flags, symbolStatus); });
}

// The runtime's private tables (context-local storage, tools callbacks, ...) are not modelled;
// README.md says how far the real libcudart gets without them.
extern "C" CUresult cuGetExportTable(const void** table, const CUuuid* id) {
  return api::call_uninitialized([&] {
    if (table == nullptr || id == nullptr) return CUDA_ERROR_INVALID_VALUE;
    ++driver().counters.export_table_queries;
    *table = nullptr;
    char hex[33] = {};
    for (int i = 0; i < 16; ++i) std::snprintf(hex + 2 * i, 3, "%02x", static_cast<unsigned char>(id->bytes[i]));
    sluice::log::debug("fake driver: cuGetExportTable({}): no such table", hex);
    return CUDA_ERROR_NOT_FOUND;
  });
}

extern "C" CUresult cuProfilerStart(void) {
  return api::call([](Driver&) { return CUDA_SUCCESS; });
}

extern "C" CUresult cuProfilerStop(void) {
  return api::call([](Driver&) { return CUDA_SUCCESS; });
}
