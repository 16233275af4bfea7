// The kernel catalog: identity (module hash + name) and parameter layout of each CUfunction the
// engine meets. Both are computed once per handle and published through atomics, so lookups after
// the first are lock-free.
#include "engine_data.h"
#include "sluice/common/hash.h"
#include "sluice/common/log.h"
#include "sluice/shim/engine.h"
#include "sluice/shim/module_image.h"

namespace sluice::shim {
namespace {

// A CUfunction argument may be a CUkernel handle (CUDA 12 accepts both in launches): ask about it
// as a function first, then as a kernel.
CUkernel as_kernel(CUfunction func) {
  return reinterpret_cast<CUkernel>(func);
}

// Sizes of parameters 0, 1, ... until the driver says the index is out of range.
template <typename Handle, typename Getter>
bool read_layout(Getter getter, Handle handle, ParamLayout& layout) {
  constexpr std::size_t kMaxParams = 1 << 16;
  if (getter == nullptr) return false;
  layout.sizes.clear();
  for (std::size_t index = 0; index < kMaxParams; ++index) {
    std::size_t offset = 0;
    std::size_t size = 0;
    const CUresult result = getter(handle, index, &offset, &size);
    if (result == CUDA_ERROR_INVALID_VALUE) return true;  // past the last parameter
    if (result != CUDA_SUCCESS) return false;
    layout.sizes.push_back(size);
  }
  return false;
}

// A CUfunction argument may be a CUkernel handle. Asked about the other kind of handle, the driver
// can answer CUDA_ERROR_INVALID_VALUE, the same answer that ends a parameter list, which would read
// as "no parameters" and launch a held copy without arguments. So the handle's kind is settled
// first, by asking for its name, and only the matching getter is used.
bool read_any_layout(const DriverApi& driver, CUfunction func, ParamLayout& layout) {
  const char* name = nullptr;
  if (driver.cuFuncGetName != nullptr && driver.cuFuncGetName(&name, func) == CUDA_SUCCESS) {
    return read_layout(driver.cuFuncGetParamInfo, func, layout);
  }
  if (driver.cuKernelGetName != nullptr &&
      driver.cuKernelGetName(&name, as_kernel(func)) == CUDA_SUCCESS) {
    return read_layout(driver.cuKernelGetParamInfo, as_kernel(func), layout);
  }
  return false;
}

}  // namespace

const KernelInfo* Engine::find(CUfunction func) noexcept {
  if (func == nullptr) return nullptr;
  try {
    KernelRecord* record = data_->kernels.find(func);
    if (record != nullptr) {
      if (const KernelInfo* info = record->info.load(std::memory_order_acquire)) return info;
    }
    const char* name = nullptr;
    const void* owner = nullptr;
    bool library_owner = false;
    if (driver_.cuFuncGetName != nullptr && driver_.cuFuncGetName(&name, func) == CUDA_SUCCESS) {
      CUmodule module = nullptr;
      if (driver_.cuFuncGetModule != nullptr &&
          driver_.cuFuncGetModule(&module, func) == CUDA_SUCCESS) {
        owner = module;
      }
    } else if (driver_.cuKernelGetName != nullptr &&
               driver_.cuKernelGetName(&name, as_kernel(func)) == CUDA_SUCCESS) {
      CUlibrary library = nullptr;
      if (driver_.cuKernelGetLibrary != nullptr &&
          driver_.cuKernelGetLibrary(&library, as_kernel(func)) == CUDA_SUCCESS) {
        owner = library;
        library_owner = true;
      }
    }
    if (name == nullptr) return nullptr;
    record = data_->kernels.find_or_insert(func, [](KernelRecord&) {});
    std::lock_guard lock(data_->catalog_mu);
    if (const KernelInfo* info = record->info.load(std::memory_order_acquire)) return info;
    auto hash = data_->image_hashes.find(owner);
    const std::uint64_t module_hash = hash != data_->image_hashes.end() ? hash->second : 0;
    // Its module came through a load the shim does not hook (the runtime's private table), so
    // kill has no image to build a twin from.
    if (hash == data_->image_hashes.end()) stats_.count_uncaptured_kernel();
    KernelInfo& info = data_->infos.emplace_back(
        KernelInfo{fnv1a(std::string_view(name), module_hash), module_hash, name});
    record->owner.store(owner, std::memory_order_relaxed);
    record->owner_is_library.store(library_owner, std::memory_order_relaxed);
    record->info.store(&info, std::memory_order_release);
    return &info;
  } catch (...) {
    SLUICE_LOG_ONCE(warn, "internal error while naming a kernel; it stays anonymous");
    return nullptr;
  }
}

const ParamLayout* Engine::param_layout(CUfunction func) {
  KernelRecord* record = data_->kernels.find_or_insert(func, [](KernelRecord&) {});
  if (const ParamLayout* layout = record->layout.load(std::memory_order_acquire)) return layout;
  ParamLayout layout;
  layout.known = read_any_layout(driver_, func, layout);
  if (!layout.known) {
    SLUICE_LOG_ONCE(info,
                    "the driver cannot size kernel parameters (cuFuncGetParamInfo); launches "
                    "that cannot be held wait on their thread instead");
  }
  std::lock_guard lock(data_->catalog_mu);
  if (const ParamLayout* existing = record->layout.load(std::memory_order_acquire)) return existing;
  ParamLayout& stored = data_->layouts.emplace_back(std::move(layout));
  record->layout.store(&stored, std::memory_order_release);
  return &stored;
}

namespace {
void image_loaded(EngineData& data, Stats& stats, const void* owner, const void* image,
                  std::size_t size) {
  stats.count_module_load();
  const std::uint64_t hash = image != nullptr && size > 0 ? image_hash({image, size}) : 0;
  std::lock_guard lock(data.catalog_mu);
  data.image_hashes[owner] = hash;
}

void image_unloaded(EngineData& data, const void* owner) {
  {
    std::lock_guard lock(data.catalog_mu);
    data.image_hashes.erase(owner);
  }
  // Records keep their arenas' objects (a gate may still hold a pointer); they are only unlinked.
  data.kernels.for_each([owner](KernelRecord& record) {
    if (record.owner.load(std::memory_order_relaxed) != owner) return;
    record.info.store(nullptr, std::memory_order_release);
    record.layout.store(nullptr, std::memory_order_release);
    record.owner.store(nullptr, std::memory_order_relaxed);
  });
}
}  // namespace

void Engine::module_loaded(CUmodule module, const void* image, std::size_t size) {
  image_loaded(*data_, stats_, module, image, size);
  if (data_->twins) data_->twins->module_loaded(module, image, size);
}
void Engine::library_loaded(CUlibrary library, const void* image, std::size_t size) {
  image_loaded(*data_, stats_, library, image, size);
  if (data_->twins) data_->twins->module_loaded(library, image, size);
}
void Engine::module_unloaded(CUmodule module) {
  image_unloaded(*data_, module);
  if (data_->twins) data_->twins->module_unloaded(module);
}
void Engine::library_unloaded(CUlibrary library) {
  image_unloaded(*data_, library);
  if (data_->twins) data_->twins->module_unloaded(library);
}

}  // namespace sluice::shim
