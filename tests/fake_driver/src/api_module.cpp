// Modules, libraries, kernels and functions: loading, lookup, parameters and attributes,
// occupancy.
#include <algorithm>

#include "api.h"
#include "executor.h"
#include "files.h"
#include "modules.h"
#include "sluice/common/log.h"

namespace sluice::fake {
namespace {

constexpr int kStaticSharedLimit = 48 * 1024;
constexpr int kOptInSharedLimit = 232448;
constexpr int kMaxBlocksPerSm = 32;
constexpr int kMaxThreadsPerSm = 2048;
constexpr int kSharedPerSm = 233472;

CUresult parse_image(const void* image, std::string_view origin, ModuleImage& out) {
  auto parsed = parse_module_image(image, origin);
  if (!parsed) {
    log::error("fake driver: cannot load module: {}", parsed.error().message);
    return CUDA_ERROR_INVALID_IMAGE;
  }
  out = std::move(parsed).value();
  return CUDA_SUCCESS;
}

CUresult read_file(const char* path, std::string& out) {
  if (path == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return read_whole_file(path, out) ? CUDA_SUCCESS : CUDA_ERROR_FILE_NOT_FOUND;
}

void free_module_globals(Driver& drv, Module& module) {
  for (auto& [name, global] : module.globals) {
    if (Allocation* allocation = drv.memory.at(global.first)) free_device_allocation(drv, *allocation);
  }
  module.globals.clear();
}

CUresult make_module(Driver& drv, Context& ctx, ModuleImage image, Library* library, Module*& out) {
  auto module = std::make_unique<Module>();
  module->ctx = &ctx;
  module->library = library;
  module->image = std::move(image);
  for (const GlobalDesc& global : module->image.globals) {
    Allocation* allocation = nullptr;
    if (CUresult status = allocate_device(drv, ctx, global.bytes, MemKind::device, allocation)) {
      free_module_globals(drv, *module);
      return status;
    }
    module->globals[global.name] = {allocation->base, global.bytes};
  }
  ++drv.counters.module_loads;
  out = module.release();
  register_handle(drv, out);
  return CUDA_SUCCESS;
}

void destroy_module(Driver& drv, std::unique_lock<std::mutex>& lock, Module* module) {
  // Kernels already submitted keep their description; the module's globals are their memory.
  if (auto* ctx = lookup<Context>(drv, module->ctx, HandleKind::context)) wait_for_context(drv, lock, *ctx);
  for (auto& [name, function] : module->functions) {
    unregister_handle(drv, function);
    delete function;
  }
  free_module_globals(drv, *module);
  unregister_handle(drv, module);
  delete module;
}

CUresult load_into_current(Driver& drv, const void* image, std::string_view origin, CUmodule* out) {
  if (out == nullptr || image == nullptr) return CUDA_ERROR_INVALID_VALUE;
  ModuleImage parsed;
  if (CUresult status = parse_image(image, origin, parsed)) return status;
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  Module* module = nullptr;
  if (CUresult status = make_module(drv, *ctx, std::move(parsed), nullptr, module)) return status;
  *out = to_handle<Module, CUmodule>(module);
  return CUDA_SUCCESS;
}

CUresult function_of(Driver& drv, Module& module, const char* name, Function*& out) {
  if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto cached = module.functions.find(name);
  if (cached != module.functions.end()) {
    out = cached->second;
    return CUDA_SUCCESS;
  }
  for (const auto& kernel : module.image.kernels) {
    if (kernel->name != name) continue;
    auto* function = new Function();
    function->module = &module;
    function->desc = kernel;
    register_handle(drv, function);
    module.functions[name] = function;
    out = function;
    return CUDA_SUCCESS;
  }
  return CUDA_ERROR_NOT_FOUND;
}

// The library's module in the current context, loaded on first use.
CUresult library_module(Driver& drv, Library& library, Module*& out) {
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  auto it = library.modules.find(ctx);
  if (it != library.modules.end()) {
    out = it->second;
    return CUDA_SUCCESS;
  }
  if (CUresult status = make_module(drv, *ctx, library.image, &library, out)) return status;
  library.modules[ctx] = out;
  return CUDA_SUCCESS;
}

CUresult load_library(Driver& drv, const void* image, std::string_view origin, CUlibrary* out) {
  if (out == nullptr || image == nullptr) return CUDA_ERROR_INVALID_VALUE;
  ModuleImage parsed;
  if (CUresult status = parse_image(image, origin, parsed)) return status;
  std::lock_guard lock(drv.mu);
  auto* library = new Library();
  library->image = std::move(parsed);
  for (const auto& desc : library->image.kernels) {
    auto* kernel = new Kernel();
    kernel->library = library;
    kernel->desc = desc;
    register_handle(drv, kernel);
    library->kernels[desc->name] = kernel;
  }
  register_handle(drv, library);
  ++drv.counters.module_loads;
  *out = to_handle<Library, CUlibrary>(library);
  return CUDA_SUCCESS;
}

int function_attribute(const LaunchTarget& target, CUfunction_attribute attribute) {
  if (target.attributes != nullptr) {
    auto it = target.attributes->find(attribute);
    if (it != target.attributes->end()) return it->second;
  }
  switch (attribute) {
    case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: return 1024;
    case CU_FUNC_ATTRIBUTE_NUM_REGS: return 32;
    case CU_FUNC_ATTRIBUTE_PTX_VERSION: return 90;
    case CU_FUNC_ATTRIBUTE_BINARY_VERSION: return 90;
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: return kStaticSharedLimit;
    case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: return -1;
    default: return 0;
  }
}

CUresult set_function_attribute(std::map<int, int>& attributes, CUfunction_attribute attribute, int value) {
  switch (attribute) {
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES:
      if (value < 0 || value > kOptInSharedLimit) return CUDA_ERROR_INVALID_VALUE;
      break;
    case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
      if (value < -1 || value > 100) return CUDA_ERROR_INVALID_VALUE;
      break;
    case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH:
    case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT:
    case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH:
    case CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED:
    case CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE:
      break;
    default:
      return CUDA_ERROR_INVALID_VALUE;  // read-only
  }
  attributes[attribute] = value;
  return CUDA_SUCCESS;
}

CUresult param_info(const KernelDesc& desc, size_t index, size_t* offset, size_t* size) {
  if (index >= desc.params.size()) return CUDA_ERROR_INVALID_VALUE;
  if (offset != nullptr) *offset = desc.params[index].offset;
  if (size != nullptr) *size = desc.params[index].size;
  return CUDA_SUCCESS;
}

CUresult global_of(const Module& module, const char* name, CUdeviceptr* dptr, size_t* bytes) {
  if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto it = module.globals.find(name);
  if (it == module.globals.end()) return CUDA_ERROR_NOT_FOUND;
  if (dptr != nullptr) *dptr = it->second.first;
  if (bytes != nullptr) *bytes = it->second.second;
  return CUDA_SUCCESS;
}

// Locks the driver, resolves a CUfunction (or a CUkernel passed as one) and runs `body(target)`.
template <typename Body>
CUresult on_target(Driver& drv, CUfunction handle, Body&& body) {
  std::lock_guard lock(drv.mu);
  LaunchTarget target;
  if (CUresult status = resolve_launch_target(drv, handle, target)) return status;
  return body(target);
}

int blocks_per_sm(int block_size, std::size_t dynamic_shared) {
  if (block_size <= 0 || block_size > 1024) return 0;
  int by_threads = kMaxThreadsPerSm / block_size;
  int by_shared = static_cast<int>(kSharedPerSm / (dynamic_shared + 1024));
  return std::max(0, std::min({kMaxBlocksPerSm, by_threads, by_shared}));
}

}  // namespace

CUresult resolve_launch_target(Driver& drv, CUfunction handle, LaunchTarget& out) {
  if (auto* function = lookup<Function>(drv, handle, HandleKind::function)) {
    out.desc = function->desc;
    out.attributes = &function->attributes;
    out.function = function;
    return CUDA_SUCCESS;
  }
  if (auto* kernel = lookup<Kernel>(drv, handle, HandleKind::kernel)) {
    out.desc = kernel->desc;
    out.attributes = &kernel->attributes;
    out.kernel = kernel;
    return CUDA_SUCCESS;
  }
  return CUDA_ERROR_INVALID_HANDLE;
}

std::uintptr_t kill_flag_address(Driver& drv, const LaunchTarget& target) {
  Module* module = target.function != nullptr ? target.function->module : nullptr;
  if (target.kernel != nullptr && library_module(drv, *target.kernel->library, module) != CUDA_SUCCESS) return 0;
  if (module == nullptr) return 0;
  auto it = module->globals.find("__sluice_kill_flag");
  return it != module->globals.end() ? it->second.first : 0;
}

unsigned max_dynamic_shared(const LaunchTarget& target) {
  return static_cast<unsigned>(function_attribute(target, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES));
}

}  // namespace sluice::fake

using namespace sluice::fake;

// ---- modules ----------------------------------------------------------------------------------

FAKE_ENTRY(cuModuleLoad, (CUmodule * module, const char* fname), {
  std::string bytes;
  if (CUresult status = read_file(fname, bytes)) return status;
  return load_into_current(drv, bytes.c_str(), fname, module);
})

FAKE_ENTRY(cuModuleLoadData, (CUmodule * module, const void* image), { return load_into_current(drv, image, "image", module); })

FAKE_ENTRY(cuModuleLoadDataEx, (CUmodule * module, const void* image, unsigned int numOptions, CUjit_option* options, void** optionValues), {
  (void)numOptions;
  (void)options;
  (void)optionValues;
  return load_into_current(drv, image, "image", module);
})

FAKE_ENTRY(cuModuleLoadFatBinary, (CUmodule * module, const void* fatCubin),
           { return load_into_current(drv, fatCubin, "fatbin", module); })

FAKE_ENTRY(cuModuleUnload, (CUmodule hmod), {
  std::unique_lock lock(drv.mu);
  Module* module = lookup<Module>(drv, hmod, HandleKind::module);
  if (module == nullptr || module->library != nullptr) return CUDA_ERROR_INVALID_HANDLE;
  destroy_module(drv, lock, module);
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuModuleGetFunction, (CUfunction * hfunc, CUmodule hmod, const char* name), {
  if (hfunc == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_object<Module>(drv, hmod, HandleKind::module, CUDA_ERROR_INVALID_HANDLE, [&](Module& module) {
    Function* function = nullptr;
    if (CUresult status = function_of(drv, module, name, function)) return status;
    *hfunc = to_handle<Function, CUfunction>(function);
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuModuleGetGlobal_v2, (CUdeviceptr * dptr, size_t* bytes, CUmodule hmod, const char* name), {
  return api::on_object<Module>(drv, hmod, HandleKind::module, CUDA_ERROR_INVALID_HANDLE,
                                [&](Module& module) { return global_of(module, name, dptr, bytes); });
})

FAKE_ENTRY(cuModuleGetFunctionCount, (unsigned int* count, CUmodule mod), {
  if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_object<Module>(drv, mod, HandleKind::module, CUDA_ERROR_INVALID_HANDLE, [&](Module& module) {
    *count = static_cast<unsigned>(module.image.kernels.size());
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuModuleEnumerateFunctions, (CUfunction * functions, unsigned int numFunctions, CUmodule mod), {
  if (functions == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_object<Module>(drv, mod, HandleKind::module, CUDA_ERROR_INVALID_HANDLE, [&](Module& module) {
    const auto& kernels = module.image.kernels;
    for (unsigned i = 0; i < numFunctions && i < kernels.size(); ++i) {
      Function* function = nullptr;
      if (CUresult status = function_of(drv, module, kernels[i]->name.c_str(), function)) return status;
      functions[i] = to_handle<Function, CUfunction>(function);
    }
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuModuleGetLoadingMode, (CUmoduleLoadingMode * mode), {
  if (mode == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *mode = CU_MODULE_EAGER_LOADING;
  return CUDA_SUCCESS;
})

// ---- libraries and kernels --------------------------------------------------------------------

// The JIT and library options change nothing in the fake.
#define FAKE_LIBRARY_OPTIONS                                                                      \
  CUjit_option *jitOptions, void **jitOptionsValues, unsigned int numJitOptions,                  \
      CUlibraryOption *libraryOptions, void **libraryOptionValues, unsigned int numLibraryOptions
#define FAKE_IGNORE_LIBRARY_OPTIONS \
  (void)jitOptions, (void)jitOptionsValues, (void)numJitOptions, (void)libraryOptions, (void)libraryOptionValues, (void)numLibraryOptions

FAKE_ENTRY(cuLibraryLoadData, (CUlibrary * library, const void* code, FAKE_LIBRARY_OPTIONS), {
  FAKE_IGNORE_LIBRARY_OPTIONS;
  return load_library(drv, code, "library", library);
})

FAKE_ENTRY(cuLibraryLoadFromFile, (CUlibrary * library, const char* fileName, FAKE_LIBRARY_OPTIONS), {
  FAKE_IGNORE_LIBRARY_OPTIONS;
  std::string bytes;
  if (CUresult status = read_file(fileName, bytes)) return status;
  return load_library(drv, bytes.c_str(), fileName, library);
})

FAKE_ENTRY(cuLibraryUnload, (CUlibrary library), {
  std::unique_lock lock(drv.mu);
  Library* object = lookup<Library>(drv, library, HandleKind::library);
  if (object == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  auto modules = object->modules;
  for (auto& [ctx, module] : modules) destroy_module(drv, lock, module);
  for (auto& [name, kernel] : object->kernels) {
    unregister_handle(drv, kernel);
    delete kernel;
  }
  unregister_handle(drv, object);
  delete object;
  return CUDA_SUCCESS;
})

FAKE_ENTRY(cuLibraryGetKernel, (CUkernel * pKernel, CUlibrary library, const char* name), {
  if (pKernel == nullptr || name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_object<Library>(drv, library, HandleKind::library, CUDA_ERROR_INVALID_HANDLE, [&](Library& object) {
    auto it = object.kernels.find(name);
    if (it == object.kernels.end()) return CUDA_ERROR_NOT_FOUND;
    *pKernel = to_handle<Kernel, CUkernel>(it->second);
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuLibraryGetKernelCount, (unsigned int* count, CUlibrary lib), {
  if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_object<Library>(drv, lib, HandleKind::library, CUDA_ERROR_INVALID_HANDLE, [&](Library& object) {
    *count = static_cast<unsigned>(object.kernels.size());
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuLibraryEnumerateKernels, (CUkernel * kernels, unsigned int numKernels, CUlibrary lib), {
  if (kernels == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_object<Library>(drv, lib, HandleKind::library, CUDA_ERROR_INVALID_HANDLE, [&](Library& object) {
    unsigned i = 0;
    for (const auto& desc : object.image.kernels) {
      if (i == numKernels) break;
      kernels[i++] = to_handle<Kernel, CUkernel>(object.kernels[desc->name]);
    }
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuLibraryGetModule, (CUmodule * pMod, CUlibrary library), {
  if (pMod == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_object<Library>(drv, library, HandleKind::library, CUDA_ERROR_INVALID_HANDLE, [&](Library& object) {
    Module* module = nullptr;
    if (CUresult status = library_module(drv, object, module)) return status;
    *pMod = to_handle<Module, CUmodule>(module);
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuLibraryGetGlobal, (CUdeviceptr * dptr, size_t* bytes, CUlibrary library, const char* name), {
  return api::on_object<Library>(drv, library, HandleKind::library, CUDA_ERROR_INVALID_HANDLE, [&](Library& object) {
    Module* module = nullptr;
    if (CUresult status = library_module(drv, object, module)) return status;
    return global_of(*module, name, dptr, bytes);
  });
})

FAKE_ENTRY(cuKernelGetFunction, (CUfunction * pFunc, CUkernel kernel), {
  if (pFunc == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_object<Kernel>(drv, kernel, HandleKind::kernel, CUDA_ERROR_INVALID_HANDLE, [&](Kernel& object) {
    Module* module = nullptr;
    if (CUresult status = library_module(drv, *object.library, module)) return status;
    Function* function = nullptr;
    if (CUresult status = function_of(drv, *module, object.desc->name.c_str(), function)) return status;
    *pFunc = to_handle<Function, CUfunction>(function);
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuKernelGetLibrary, (CUlibrary * pLib, CUkernel kernel), {
  if (pLib == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_object<Kernel>(drv, kernel, HandleKind::kernel, CUDA_ERROR_INVALID_HANDLE, [&](Kernel& object) {
    *pLib = to_handle<Library, CUlibrary>(object.library);
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuKernelGetName, (const char** name, CUkernel hfunc), {
  if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_object<Kernel>(drv, hfunc, HandleKind::kernel, CUDA_ERROR_INVALID_HANDLE, [&](Kernel& object) {
    *name = object.desc->name.c_str();
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuKernelGetParamInfo, (CUkernel kernel, size_t paramIndex, size_t* paramOffset, size_t* paramSize), {
  return api::on_object<Kernel>(drv, kernel, HandleKind::kernel, CUDA_ERROR_INVALID_HANDLE,
                                [&](Kernel& object) { return param_info(*object.desc, paramIndex, paramOffset, paramSize); });
})

FAKE_ENTRY(cuKernelGetAttribute, (int* pi, CUfunction_attribute attrib, CUkernel kernel, CUdevice dev), {
  if (pi == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (device_at(drv, dev) == nullptr) return CUDA_ERROR_INVALID_DEVICE;
  return api::on_object<Kernel>(drv, kernel, HandleKind::kernel, CUDA_ERROR_INVALID_HANDLE, [&](Kernel& object) {
    *pi = function_attribute(LaunchTarget{object.desc, &object.attributes}, attrib);
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuKernelSetAttribute, (CUfunction_attribute attrib, int val, CUkernel kernel, CUdevice dev), {
  if (device_at(drv, dev) == nullptr) return CUDA_ERROR_INVALID_DEVICE;
  return api::on_object<Kernel>(drv, kernel, HandleKind::kernel, CUDA_ERROR_INVALID_HANDLE,
                                [&](Kernel& object) { return set_function_attribute(object.attributes, attrib, val); });
})

FAKE_ENTRY(cuKernelSetCacheConfig, (CUkernel kernel, CUfunc_cache config, CUdevice dev), {
  (void)config;
  if (device_at(drv, dev) == nullptr) return CUDA_ERROR_INVALID_DEVICE;
  return api::on_object<Kernel>(drv, kernel, HandleKind::kernel, CUDA_ERROR_INVALID_HANDLE, [](Kernel&) { return CUDA_SUCCESS; });
})

// ---- functions --------------------------------------------------------------------------------

FAKE_ENTRY(cuFuncGetParamInfo, (CUfunction func, size_t paramIndex, size_t* paramOffset, size_t* paramSize), {
  return on_target(drv, func, [&](const LaunchTarget& target) {
    return param_info(*target.desc, paramIndex, paramOffset, paramSize);
  });
})

FAKE_ENTRY(cuFuncGetAttribute, (int* pi, CUfunction_attribute attrib, CUfunction hfunc), {
  if (pi == nullptr || attrib < 0 || attrib >= CU_FUNC_ATTRIBUTE_MAX) return CUDA_ERROR_INVALID_VALUE;
  return on_target(drv, hfunc, [&](const LaunchTarget& target) {
    *pi = function_attribute(target, attrib);
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuFuncSetAttribute, (CUfunction hfunc, CUfunction_attribute attrib, int value), {
  return api::on_object<Function>(drv, hfunc, HandleKind::function, CUDA_ERROR_INVALID_HANDLE,
                                  [&](Function& function) { return set_function_attribute(function.attributes, attrib, value); });
})

FAKE_ENTRY(cuFuncSetCacheConfig, (CUfunction hfunc, CUfunc_cache config), {
  return api::on_object<Function>(drv, hfunc, HandleKind::function, CUDA_ERROR_INVALID_HANDLE, [&](Function& function) {
    function.cache_config = config;
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuFuncGetName, (const char** name, CUfunction hfunc), {
  if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return on_target(drv, hfunc, [&](const LaunchTarget& target) {
    *name = target.desc->name.c_str();
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuFuncGetModule, (CUmodule * hmod, CUfunction hfunc), {
  if (hmod == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return api::on_object<Function>(drv, hfunc, HandleKind::function, CUDA_ERROR_INVALID_HANDLE, [&](Function& function) {
    *hmod = to_handle<Module, CUmodule>(function.module);
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuFuncIsLoaded, (CUfunctionLoadingState * state, CUfunction function), {
  if (state == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return on_target(drv, function, [&](const LaunchTarget&) {
    *state = CU_FUNCTION_LOADING_STATE_LOADED;
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuFuncLoad, (CUfunction function), { return on_target(drv, function, [](const LaunchTarget&) { return CUDA_SUCCESS; }); })

// ---- occupancy --------------------------------------------------------------------------------

FAKE_ENTRY(cuOccupancyMaxActiveBlocksPerMultiprocessor, (int* numBlocks, CUfunction func, int blockSize, size_t dynamicSMemSize), {
  if (numBlocks == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return on_target(drv, func, [&](const LaunchTarget&) {
    *numBlocks = blocks_per_sm(blockSize, dynamicSMemSize);
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags, (int* numBlocks, CUfunction func, int blockSize,
                                                                  size_t dynamicSMemSize, unsigned int flags), {
  (void)flags;
  if (numBlocks == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return on_target(drv, func, [&](const LaunchTarget&) {
    *numBlocks = blocks_per_sm(blockSize, dynamicSMemSize);
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuOccupancyMaxPotentialBlockSize, (int* minGridSize, int* blockSize, CUfunction func,
                                              CUoccupancyB2DSize blockSizeToDynamicSMemSize, size_t dynamicSMemSize, int blockSizeLimit), {
  if (minGridSize == nullptr || blockSize == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return on_target(drv, func, [&](const LaunchTarget&) {
    const int block = blockSizeLimit > 0 ? std::min(blockSizeLimit, 1024) : 1024;
    const std::size_t shared = blockSizeToDynamicSMemSize != nullptr ? blockSizeToDynamicSMemSize(block) : dynamicSMemSize;
    *blockSize = block;
    *minGridSize = blocks_per_sm(block, shared) * static_cast<int>(drv.devices.front()->sms);
    return CUDA_SUCCESS;
  });
})

FAKE_ENTRY(cuOccupancyAvailableDynamicSMemPerBlock, (size_t * dynamicSmemSize, CUfunction func, int numBlocks, int blockSize), {
  if (dynamicSmemSize == nullptr || numBlocks <= 0 || blockSize <= 0) return CUDA_ERROR_INVALID_VALUE;
  return on_target(drv, func, [&](const LaunchTarget&) {
    *dynamicSmemSize = std::min<std::size_t>(kOptInSharedLimit, kSharedPerSm / static_cast<std::size_t>(numBlocks) - 1024);
    return CUDA_SUCCESS;
  });
})
