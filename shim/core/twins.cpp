// Twins of PTX modules, the kill word and launch records (core/twins.h); the launch of a kernel as
// twin + wait + twin (TwinLaunch).
#include "twins.h"

#include <algorithm>
#include <cstring>
#include <span>

#include "sluice/common/log.h"
#include "sluice/ptx/fatbin.h"
#include "sluice/ptx/instrument.h"
#include "sluice/ptx/kill_abi.h"

namespace sluice::shim {
namespace {

namespace kill_abi = ptx::kill_abi;

constexpr std::uint64_t kKillWordBytes = 4096;  // its own allocation: IPC handles name a base
constexpr std::uint64_t kRecordGranule = 256;

// The architecture of the current context's device (90 for sm_90); 0 when unknown.
std::uint32_t current_arch(const DriverApi& cu) {
  CUdevice device = 0;
  int major = 0;
  int minor = 0;
  if (cu.cuCtxGetDevice == nullptr || cu.cuDeviceGetAttribute == nullptr ||
      cu.cuCtxGetDevice(&device) != CUDA_SUCCESS ||
      cu.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device) !=
          CUDA_SUCCESS ||
      cu.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device) !=
          CUDA_SUCCESS) {
    return 0;
  }
  return static_cast<std::uint32_t>(major * 10 + minor);
}

// The PTX of an image for `arch`: PTX text as is, the best PTX entry of a fatbin that can JIT to
// `arch`; empty for cubins, unknown images and fatbins without such PTX.
std::string image_ptx(const void* image, std::size_t size, std::uint32_t arch) {
  if (image == nullptr || size == 0) return {};
  const ptx::Bytes bytes(static_cast<const std::byte*>(image), size);
  switch (ptx::classify_image(bytes)) {
    case ptx::ImageKind::ptx: return std::string(static_cast<const char*>(image), size);
    case ptx::ImageKind::fatbin: {
      auto fatbin = ptx::parse_fatbin(bytes);
      if (!fatbin || arch == 0) return {};
      const ptx::FatbinEntry* entry = ptx::select_ptx(*fatbin, arch);
      if (entry == nullptr) return {};
      auto text = ptx::entry_ptx(*entry);
      return text ? std::move(*text) : std::string{};
    }
    default: return {};
  }
}

}  // namespace

Twins::Twins(const DriverApi& driver, KillOptions options, Stats& stats,
             EmbeddedPtx::ObjectLister objects)
    : driver_(driver), options_(std::move(options)), stats_(stats), embedded_(std::move(objects)) {}

void Twins::module_loaded(const void* owner, const void* image, std::size_t size) noexcept {
  try {
    std::string text = image_ptx(image, size, current_arch(driver_));
    // A bare cubin: its compiler may have kept the PTX beside it (Triton's cache).
    if (text.empty() && image != nullptr && size != 0 &&
        ptx::classify_image(ptx::Bytes(static_cast<const std::byte*>(image), size)) ==
            ptx::ImageKind::elf) {
      text = ptx_sources_.find(std::span(static_cast<const std::byte*>(image), size));
      if (!text.empty()) stats_.count_ptx_paired();
    }
    std::lock_guard lock(mu_);
    Module& module = modules_[owner];
    module = Module{};
    module.ptx = std::move(text);
  } catch (...) {
    SLUICE_LOG_ONCE(warn, "kill: cannot read the PTX of a module; its kernels are not killable");
  }
}

void Twins::module_unloaded(const void* owner) noexcept {
  try {
    std::lock_guard lock(mu_);
    auto it = modules_.find(owner);
    if (it == modules_.end()) return;
    if (it->second.twin != nullptr && driver_.cuModuleUnload != nullptr)
      driver_.cuModuleUnload(it->second.twin);
    modules_.erase(it);
    std::erase_if(functions_, [owner](const auto& entry) { return entry.second.owner == owner; });
  } catch (...) {
  }
}

CUdeviceptr Twins::kill_word_of(CUdevice device) noexcept {
  std::lock_guard lock(mu_);
  auto it = kill_words_.find(device);
  return it != kill_words_.end() ? it->second : 0;
}

bool Twins::long_enough(CUfunction func, std::uint64_t predicted_ns) noexcept {
  if (options_.min_ns == 0) return true;
  if (predicted_ns != 0) return predicted_ns >= options_.min_ns;
  try {
    std::lock_guard lock(mu_);
    return ++launches_[func] >= kUnpredictedLaunches;
  } catch (...) {
    return false;
  }
}

std::optional<TwinModule> Twins::instrument_ptx(const std::string& ptx, const std::string& key) {
  auto instrumented = ptx::instrument(ptx);
  if (!instrumented) {
    log::warn("kill: cannot instrument a module ({}); its kernels run unkillable",
              instrumented.error().message);
    return std::nullopt;
  }
  TwinModule twin;
  twin.key = key;
  twin.ptx = std::move(instrumented->ptx);
  for (const ptx::InstrumentedKernel& k : instrumented->kernels) {
    if (!k.instrumented) continue;
    twin.kernels.push_back({k.name, k.launch_param_offset, k.twin_param_bytes});
  }
  return twin;
}

CUdeviceptr Twins::kill_word(Gate& gate) {
  const DriverApi& cu = driver_;
  CUdevice device = 0;
  if (cu.cuCtxGetDevice == nullptr || cu.cuCtxGetDevice(&device) != CUDA_SUCCESS) return 0;
  if (auto it = kill_words_.find(device); it != kill_words_.end()) return it->second;
  CUdeviceptr word = 0;
  if (cu.cuMemAlloc_v2 == nullptr || cu.cuMemcpyHtoD_v2 == nullptr ||
      cu.cuMemAlloc_v2(&word, kKillWordBytes) != CUDA_SUCCESS) {
    return 0;
  }
  // A synchronous copy: the word is 0 before any twin can read it, whatever stream that uses.
  const std::uint32_t zero = 0;
  if (cu.cuMemcpyHtoD_v2(word, &zero, sizeof zero) != CUDA_SUCCESS) {
    cu.cuMemFree_v2(word);
    return 0;
  }
  kill_words_[device] = word;
  Lowering lowering{nullptr, nullptr, word};
  if (cu.cuCtxGetCurrent == nullptr || cu.cuStreamCreate == nullptr ||
      cu.cuCtxGetCurrent(&lowering.ctx) != CUDA_SUCCESS ||
      cu.cuStreamCreate(&lowering.stream, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS) {
    log::warn("kill: no stream to lower the kill word of device {} with; work that sluiced killed "
              "stays paused if sluiced is lost before it lowers the word",
              device);
  } else {
    std::lock_guard lock(lower_mu_);
    lowering_.push_back(lowering);
  }
  CUipcMemHandle handle{};
  if (cu.cuIpcGetMemHandle != nullptr && cu.cuIpcGetMemHandle(&handle, word) == CUDA_SUCCESS) {
    gate.register_kill_word(device, handle, 0);
    stats_.count_kill_word();
  } else {
    log::warn("kill: no IPC handle for the kill word of device {}; sluiced cannot kill its work",
              device);
  }
  return word;
}

void Twins::lower_kill_words() noexcept {
  const DriverApi& cu = driver_;
  if (cu.cuCtxPushCurrent_v2 == nullptr || cu.cuCtxPopCurrent_v2 == nullptr ||
      cu.cuStreamWriteValue32_v2 == nullptr) {
    return;
  }
  std::lock_guard lock(lower_mu_);
  for (const Lowering& l : lowering_) {
    if (cu.cuCtxPushCurrent_v2(l.ctx) != CUDA_SUCCESS) continue;
    const CUresult written = cu.cuStreamWriteValue32_v2(l.stream, l.word, 0, 0);
    CUcontext popped = nullptr;
    cu.cuCtxPopCurrent_v2(&popped);
    if (written != CUDA_SUCCESS) {
      log::warn("kill: cannot lower a kill word ({}); work that sluiced killed stays paused",
                static_cast<int>(written));
    }
  }
  if (!lowering_.empty()) log::warn("kill: sluiced is gone; kill words lowered");
}

bool Twins::load_twin(Module& module, const TwinModule& twin, Gate& gate) {
  const DriverApi& cu = driver_;
  CUmodule loaded = nullptr;
  if (cu.cuModuleLoadData == nullptr || cu.cuModuleLoadData(&loaded, twin.ptx.c_str()) != CUDA_SUCCESS)
    return false;
  const CUdeviceptr word = kill_word(gate);
  CUdeviceptr flag = 0;
  std::size_t flag_bytes = 0;
  const std::string symbol(kill_abi::kKillFlagSymbol);
  if (word == 0 || cu.cuModuleGetGlobal_v2 == nullptr ||
      cu.cuModuleGetGlobal_v2(&flag, &flag_bytes, loaded, symbol.c_str()) != CUDA_SUCCESS ||
      flag_bytes != sizeof(std::uint64_t) ||
      cu.cuMemcpyHtoD_v2(flag, &word, sizeof(std::uint64_t)) != CUDA_SUCCESS) {
    cu.cuModuleUnload(loaded);
    return false;
  }
  module.twin = loaded;
  module.kill_word = word;
  module.kernels = twin.kernels;
  return true;
}

// Cache first; an entry that is missing, corrupt or that the driver refuses is rebuilt.
bool Twins::build(Module& module, const void* owner, Gate& gate) {
  (void)owner;
  if (module.ptx.empty()) return false;
  const std::string key = ptx::cache_key(module.ptx);
  if (auto cached = load_cached_twin(options_.cache_dir, key)) {
    if (load_twin(module, *cached, gate)) {
      stats_.count_twin_built(/*from_cache=*/true);
      return true;
    }
    log::info("kill: the cached twin {} does not load; rebuilding it", key);
  }
  auto twin = instrument_ptx(module.ptx, key);
  if (!twin) return false;
  if (twin->kernels.empty()) {
    log::info("kill: no kernel of module {} can be instrumented", key);
    return false;
  }
  if (!store_cached_twin(options_.cache_dir, *twin))
    SLUICE_LOG_ONCE(info, "kill: cannot write the twin cache under '{}'", options_.cache_dir);
  if (!load_twin(module, *twin, gate)) {
    log::warn("kill: the driver refuses the twin of module {}; its kernels run unkillable", key);
    return false;
  }
  stats_.count_twin_built(/*from_cache=*/false);
  return true;
}

CUresult Twins::apply(CUfunction twin, Engine::FunctionChange change) const {
  using Kind = Engine::FunctionChange::Kind;
  const DriverApi& cu = driver_;
  switch (change.kind) {
    case Kind::attribute:
      return cu.cuFuncSetAttribute != nullptr
                 ? cu.cuFuncSetAttribute(twin, static_cast<CUfunction_attribute>(change.attribute),
                                         change.value)
                 : CUDA_ERROR_NOT_SUPPORTED;
    case Kind::cache_config:
      return cu.cuFuncSetCacheConfig != nullptr
                 ? cu.cuFuncSetCacheConfig(twin, static_cast<CUfunc_cache>(change.value))
                 : CUDA_ERROR_NOT_SUPPORTED;
    case Kind::shared_config:
      return cu.cuFuncSetSharedMemConfig != nullptr
                 ? cu.cuFuncSetSharedMemConfig(twin, static_cast<CUsharedconfig>(change.value))
                 : CUDA_ERROR_NOT_SUPPORTED;
  }
  return CUDA_ERROR_NOT_SUPPORTED;
}

namespace {

// The names of a module's functions or a library's kernels; empty when the driver cannot list them.
template <typename Owner, typename Item>
std::vector<std::string> names_of(Owner owner, CUresult (*count_fn)(unsigned*, Owner),
                                  CUresult (*list_fn)(Item*, unsigned, Owner),
                                  CUresult (*name_fn)(const char**, Item)) {
  unsigned count = 0;
  if (count_fn == nullptr || list_fn == nullptr || name_fn == nullptr ||
      count_fn(&count, owner) != CUDA_SUCCESS) {
    return {};
  }
  std::vector<Item> items(count);
  if (list_fn(items.data(), count, owner) != CUDA_SUCCESS) return {};
  std::vector<std::string> names;
  for (Item item : items) {
    const char* name = nullptr;
    if (name_fn(&name, item) != CUDA_SUCCESS || name == nullptr) return {};
    names.emplace_back(name);
  }
  return names;
}

}  // namespace

std::vector<std::string> Twins::kernel_names(Owner owner) const {
  void* handle = const_cast<void*>(owner.handle);
  if (owner.library) {
    return names_of(static_cast<CUlibrary>(handle), driver_.cuLibraryGetKernelCount,
                    driver_.cuLibraryEnumerateKernels, driver_.cuKernelGetName);
  }
  return names_of(static_cast<CUmodule>(handle), driver_.cuModuleGetFunctionCount,
                  driver_.cuModuleEnumerateFunctions, driver_.cuFuncGetName);
}

Twins::Module* Twins::adopt(Owner owner) {
  const std::uint32_t arch = current_arch(driver_);
  if (!embedded_.ready(arch)) return nullptr;  // still reading the loaded objects
  Module& module = modules_[owner.handle];
  module.ptx = embedded_.find(kernel_names(owner), arch);
  if (!module.ptx.empty()) stats_.count_embedded_ptx();
  return &module;
}

std::optional<Twins::Function> Twins::twin_of(CUfunction func, Owner of,
                                              const std::string& name,
                                              const std::vector<Engine::FunctionChange>& changes,
                                              Gate& gate) noexcept {
  try {
    std::lock_guard lock(mu_);
    if (auto it = functions_.find(func); it != functions_.end()) return it->second.function;
    const void* owner = of.handle;
    if (owner == nullptr) return std::nullopt;
    auto module_it = modules_.find(owner);
    Module* adopted = module_it != modules_.end() ? &module_it->second : adopt(of);
    if (adopted == nullptr) return std::nullopt;  // ask again at its next launch
    Module& module = *adopted;
    Resolved& resolved = functions_[func];
    resolved.owner = owner;
    if (module.state == Module::State::unbuilt) {
      const bool built = build(module, owner, gate);
      module.state = built ? Module::State::ready : Module::State::failed;
      if (!built && !module.ptx.empty()) stats_.count_twin_failure();
    }
    if (module.state != Module::State::ready) return std::nullopt;
    auto kernel = std::find_if(module.kernels.begin(), module.kernels.end(),
                               [&](const TwinKernel& k) { return k.name == name; });
    if (kernel == module.kernels.end()) return std::nullopt;  // not instrumented
    Function function{nullptr, kernel->launch_param_offset, kernel->twin_param_bytes,
                      module.kill_word};
    if (driver_.cuModuleGetFunction == nullptr ||
        driver_.cuModuleGetFunction(&function.twin, module.twin, name.c_str()) != CUDA_SUCCESS) {
      stats_.count_twin_failure();
      SLUICE_LOG_ONCE(warn, "kill: the twin module lacks a kernel it instrumented; using originals");
      return std::nullopt;
    }
    for (const Engine::FunctionChange& change : changes) {
      if (apply(function.twin, change) != CUDA_SUCCESS) {
        stats_.count_twin_failure();
        log::warn("kill: cannot give the twin of {} the attributes of the original; using the "
                  "original",
                  name);
        return std::nullopt;
      }
    }
    resolved.function = function;
    return function;
  } catch (...) {
    SLUICE_LOG_ONCE(warn, "kill: internal error while making a twin; using the original");
    return std::nullopt;
  }
}

void Twins::function_changed(CUfunction func, Engine::FunctionChange change) noexcept {
  try {
    std::lock_guard lock(mu_);
    auto it = functions_.find(func);
    if (it == functions_.end() || !it->second.function) return;
    if (apply(it->second.function->twin, change) != CUDA_SUCCESS) {
      log::warn("kill: a twin does not take an attribute change of its original; using the "
                "original from now on");
      it->second.function.reset();
    }
  } catch (...) {
  }
}

Twins::Record* Twins::acquire_record(CUstream stream, std::uint64_t bytes) noexcept {
  const DriverApi& cu = driver_;
  try {
    CUcontext ctx = nullptr;
    if (cu.cuStreamGetCtx == nullptr || cu.cuStreamGetCtx(stream, &ctx) != CUDA_SUCCESS) {
      if (cu.cuCtxGetCurrent == nullptr || cu.cuCtxGetCurrent(&ctx) != CUDA_SUCCESS) return nullptr;
    }
    {
      std::lock_guard lock(pool_mu_);
      // Records whose last launch finished are free again.
      for (auto it = in_flight_.begin(); it != in_flight_.end();) {
        if (cu.cuEventQuery((*it)->done) == CUDA_SUCCESS) {
          free_.push_back(std::move(*it));
          it = in_flight_.erase(it);
        } else {
          ++it;
        }
      }
      auto fit = std::find_if(free_.begin(), free_.end(), [&](const auto& r) {
        return r->ctx == ctx && r->bytes >= bytes;
      });
      if (fit != free_.end()) {
        Record* record = fit->release();
        free_.erase(fit);
        return record;
      }
    }
    // A new record: memory and an event of the stream's context (a green context for a mirror).
    auto record = std::make_unique<Record>();
    record->ctx = ctx;
    record->bytes = (bytes + kRecordGranule - 1) / kRecordGranule * kRecordGranule;
    if (cu.cuCtxPushCurrent_v2(ctx) != CUDA_SUCCESS) return nullptr;
    CUresult allocated = cu.cuMemAlloc_v2(&record->ptr, record->bytes);
    CUresult created = allocated == CUDA_SUCCESS
                           ? cu.cuEventCreate(&record->done, CU_EVENT_DISABLE_TIMING)
                           : allocated;
    CUcontext popped = nullptr;
    cu.cuCtxPopCurrent_v2(&popped);
    if (created != CUDA_SUCCESS) {
      if (allocated == CUDA_SUCCESS) cu.cuMemFree_v2(record->ptr);
      return nullptr;
    }
    return record.release();
  } catch (...) {
    return nullptr;
  }
}

void Twins::release_record(Record* record, bool in_flight, bool unused) noexcept {
  std::unique_ptr<Record> owned(record);
  if (!in_flight && !unused) {
    (void)owned.release();  // the GPU may still use it and no event says when: never reused
    return;
  }
  try {
    std::lock_guard lock(pool_mu_);
    (in_flight ? in_flight_ : free_).push_back(std::move(owned));
  } catch (...) {
    (void)owned.release();
  }
}

bool extra_buffer(void** extra, const void*& buffer, std::size_t& size) {
  const std::size_t* size_ptr = nullptr;
  buffer = nullptr;
  for (std::size_t i = 0;; i += 2) {
    const auto key = reinterpret_cast<std::uintptr_t>(extra[i]);
    if (key == CU_LAUNCH_PARAM_END_AS_INT) break;
    if (key == CU_LAUNCH_PARAM_BUFFER_POINTER_AS_INT) {
      buffer = extra[i + 1];
    } else if (key == CU_LAUNCH_PARAM_BUFFER_SIZE_AS_INT) {
      size_ptr = static_cast<const std::size_t*>(extra[i + 1]);
    } else {
      return false;
    }
  }
  if (buffer == nullptr || size_ptr == nullptr) return false;
  size = *size_ptr;
  return true;
}

// ---- TwinLaunch --------------------------------------------------------------------------------

std::optional<TwinLaunch> TwinLaunch::make(Twins& twins, const Twins::Function& function,
                                           const OpDesc& desc,
                                           const std::vector<std::size_t>* sizes, void** params,
                                           void** extra) {
  TwinLaunch launch(twins, function, desc);
  constexpr std::size_t kAlign = 16;
  auto align_up = [](std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; };
  if (params != nullptr && extra != nullptr) return std::nullopt;
  if (extra != nullptr) {
    const void* buffer = nullptr;
    std::size_t size = 0;
    if (!extra_buffer(extra, buffer, size) || size > function.launch_param_offset) return std::nullopt;
    launch.uses_extra_ = true;
    launch.buffer_bytes_ = function.twin_param_bytes;
    launch.storage_.assign(function.twin_param_bytes, std::byte{0});
    std::memcpy(launch.storage_.data(), buffer, size);
    launch.record_offset_ = function.launch_param_offset;
    return launch;
  }
  const std::size_t count = sizes != nullptr ? sizes->size() : 0;
  if (count > 0 && params == nullptr) return std::nullopt;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < count; ++i) bytes += align_up((*sizes)[i]);
  launch.storage_.assign(bytes + sizeof(std::uint64_t), std::byte{0});
  std::size_t offset = 0;
  for (std::size_t i = 0; i < count; ++i) {
    std::memcpy(launch.storage_.data() + offset, params[i], (*sizes)[i]);
    launch.offsets_.push_back(offset);
    offset += align_up((*sizes)[i]);
  }
  launch.record_offset_ = offset;
  return launch;
}

void TwinLaunch::set_record(CUdeviceptr record) {
  const std::uint64_t value = record;
  std::memcpy(storage_.data() + record_offset_, &value, sizeof value);
}

CUresult TwinLaunch::launch_twin(CUstream stream) {
  const DriverApi& cu = twins_->driver();
  if (uses_extra_) {
    void* extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, storage_.data(), CU_LAUNCH_PARAM_BUFFER_SIZE,
                     &buffer_bytes_, CU_LAUNCH_PARAM_END};
    return cu.cuLaunchKernel(function_.twin, desc_.grid[0], desc_.grid[1], desc_.grid[2],
                             desc_.block[0], desc_.block[1], desc_.block[2], desc_.shared_mem,
                             stream, nullptr, extra);
  }
  // The kernelParams array: one pointer per parameter copy, then one to the record pointer.
  params_.clear();
  for (std::size_t offset : offsets_) params_.push_back(storage_.data() + offset);
  params_.push_back(storage_.data() + record_offset_);
  return cu.cuLaunchKernel(function_.twin, desc_.grid[0], desc_.grid[1], desc_.grid[2],
                           desc_.block[0], desc_.block[1], desc_.block[2], desc_.shared_mem, stream,
                           params_.data(), nullptr);
}

CUresult TwinLaunch::run(CUstream stream, FunctionRef<CUresult(CUstream)> original) {
  Twins& twins = *twins_;
  const DriverApi& cu = twins.driver();
  const std::uint64_t blocks =
      std::uint64_t{desc_.grid[0]} * std::max(desc_.grid[1], 1u) * std::max(desc_.grid[2], 1u);
  const std::uint64_t bytes = kill_abi::launch_record_bytes(blocks);
  auto fall_back = [&](Twins::Record* record) {
    if (record != nullptr) twins.release_record(record, false, /*unused=*/true);
    twins.stats().count_twin_failure();
    SLUICE_LOG_EVERY_SECOND(warn, "kill: a twin launch failed before it started; launching the "
                                  "original instead");
    return original(stream);
  };
  Twins::Record* record = twins.acquire_record(stream, bytes);
  if (record == nullptr) return fall_back(nullptr);
  set_record(record->ptr);
  if (cu.cuMemsetD8Async(record->ptr, 0, bytes, stream) != CUDA_SUCCESS) return fall_back(record);
  const CUresult first = launch_twin(stream);
  if (first != CUDA_SUCCESS) return fall_back(record);
  // From here the record is in use on the GPU: it is never reused before the event after (c).
  const CUresult wait = cu.cuStreamWaitValue32_v2(stream, function_.kill_word, 0,
                                                  CU_STREAM_WAIT_VALUE_EQ);
  if (wait != CUDA_SUCCESS) {
    SLUICE_LOG_ONCE(warn, "kill: cuStreamWaitValue32 failed ({}); killed blocks resume at once",
                    static_cast<int>(wait));
  }
  // The second launch resumes: it runs every block the first did not start, whatever the kill
  // word says by then (a kill raised again while it runs would otherwise leave blocks behind).
  set_record(record->ptr | kill_abi::kResumeBit);
  const CUresult second = launch_twin(stream);
  const bool recorded = cu.cuEventRecord(record->done, stream) == CUDA_SUCCESS;
  twins.release_record(record, recorded, /*unused=*/false);
  if (second != CUDA_SUCCESS) {
    twins.stats().count_twin_failure();
    return second;
  }
  twins.stats().count_twin_launch();
  return CUDA_SUCCESS;
}

}  // namespace sluice::shim
