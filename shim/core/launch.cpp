// Kernel launches: a held launch owns a deep copy of its parameters, taken at call time, because
// the application may overwrite or free its parameter memory as soon as the launch call returns.
#include <cstring>
#include <memory>
#include <vector>

#include "engine_data.h"
#include "sluice/shim/engine.h"

namespace sluice::shim {
namespace {

constexpr std::size_t kAlign = 16;  // enough for any kernel parameter type
constexpr std::size_t align_up(std::size_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}

// The arguments of one launch, copied: either a kernelParams array or an `extra` buffer.
class KernelArgs {
 public:
  // Copies `params` (sized by `layout`) or `extra`. Returns false when the arguments cannot be
  // sized or are malformed; the driver must then see the original call.
  bool capture(const ParamLayout* layout, void** params, void** extra) {
    if (params != nullptr && extra != nullptr)
      return false;  // the driver rejects this: let it say so now
    if (params != nullptr) return capture_params(layout, params);
    if (extra != nullptr) return capture_extra(extra);
    return true;
  }
  void** params() const { return params_; }
  void** extra() const { return extra_; }

 private:
  bool capture_params(const ParamLayout* layout, void** params) {
    if (layout == nullptr || !layout->known) return false;
    const std::size_t count = layout->sizes.size();
    std::size_t bytes = align_up(count * sizeof(void*));
    for (std::size_t size : layout->sizes) bytes += align_up(size);
    storage_ = std::make_unique<std::byte[]>(bytes == 0 ? 1 : bytes);
    params_ = reinterpret_cast<void**>(storage_.get());
    std::byte* data = storage_.get() + align_up(count * sizeof(void*));
    for (std::size_t i = 0; i < count; ++i) {
      std::memcpy(data, params[i], layout->sizes[i]);
      params_[i] = data;
      data += align_up(layout->sizes[i]);
    }
    return true;
  }

  bool capture_extra(void** extra) {
    const void* buffer = nullptr;
    std::size_t bytes = 0;
    if (!extra_buffer(extra, buffer, bytes)) return false;
    // [extra array of 5 pointers][the size][the buffer]
    constexpr std::size_t kHeader = align_up(5 * sizeof(void*) + sizeof(std::size_t));
    storage_ = std::make_unique<std::byte[]>(kHeader + bytes);
    extra_ = reinterpret_cast<void**>(storage_.get());
    auto* size_copy = reinterpret_cast<std::size_t*>(storage_.get() + 5 * sizeof(void*));
    *size_copy = bytes;
    std::byte* data = storage_.get() + kHeader;
    std::memcpy(data, buffer, bytes);
    extra_[0] = reinterpret_cast<void*>(std::uintptr_t{CU_LAUNCH_PARAM_BUFFER_POINTER_AS_INT});
    extra_[1] = data;
    extra_[2] = reinterpret_cast<void*>(std::uintptr_t{CU_LAUNCH_PARAM_BUFFER_SIZE_AS_INT});
    extra_[3] = size_copy;
    extra_[4] = reinterpret_cast<void*>(std::uintptr_t{CU_LAUNCH_PARAM_END_AS_INT});
    return true;
  }

  std::unique_ptr<std::byte[]> storage_;
  void** params_ = nullptr;
  void** extra_ = nullptr;
};

OpDesc kernel_desc(CUfunction f, unsigned grid_x, unsigned grid_y, unsigned grid_z,
                   unsigned block_x, unsigned block_y, unsigned block_z, unsigned shared_bytes) {
  OpDesc desc;
  desc.kind = OpKind::kernel;
  desc.func = f;
  desc.grid[0] = grid_x;
  desc.grid[1] = grid_y;
  desc.grid[2] = grid_z;
  desc.block[0] = block_x;
  desc.block[1] = block_y;
  desc.block[2] = block_z;
  desc.shared_mem = shared_bytes;
  return desc;
}

}  // namespace

CUdeviceptr Engine::kill_word(CUdevice device) const noexcept {
  return data_->twins != nullptr ? data_->twins->kill_word_of(device) : 0;
}

// Kill in the client: which launches go out as twin + wait + twin (docs/architecture.md).
std::shared_ptr<TwinLaunch> Engine::twin_launch(StreamAbi abi, const OpDesc& desc, CUstream stream,
                                                void** params, void** extra) {
  Twins* twins = data_->twins.get();
  if (twins == nullptr || desc.cooperative || desc.records_event || capture_active()) return {};
  // The per-thread default stream of another entry point family: not ours to name.
  if (stream == CU_STREAM_PER_THREAD || (abi == StreamAbi::per_thread && stream == nullptr))
    return {};
  Gate& g = gate();
  if (g.stream_class() == StreamClass::rt) return {};
  const std::uint64_t predicted_ns = g.predicted_ns(desc);
  std::shared_ptr<TwinLaunch> launch = make_twin_launch(g, predicted_ns, desc, params, extra);
  twins->stats().count_be_kernel(predicted_ns, launch != nullptr);
  return launch;
}

std::shared_ptr<TwinLaunch> Engine::make_twin_launch(Gate& g, std::uint64_t predicted_ns,
                                                     const OpDesc& desc, void** params,
                                                     void** extra) {
  Twins* twins = data_->twins.get();
  if (!twins->long_enough(desc.func, predicted_ns)) return {};
  const KernelInfo* info = find(desc.func);
  KernelRecord* record = info != nullptr ? data_->kernels.find(desc.func) : nullptr;
  const void* owner = record != nullptr ? record->owner.load(std::memory_order_relaxed) : nullptr;
  if (owner == nullptr) return {};
  const Twins::Owner of{owner, record->owner_is_library.load(std::memory_order_relaxed)};
  auto function = twins->twin_of(desc.func, of, info->name, function_changes(desc.func), g);
  if (!function) return {};
  const ParamLayout* layout = params != nullptr ? param_layout(desc.func) : nullptr;
  if (params != nullptr && (layout == nullptr || !layout->known)) return {};
  auto launch = TwinLaunch::make(*twins, *function, desc, layout != nullptr ? &layout->sizes : nullptr,
                                 params, extra);
  if (!launch) return {};
  return std::make_shared<TwinLaunch>(std::move(*launch));
}

// Submits a launch, or its twin form when twin_launch() gives one: the original (`now`, `held`)
// stays the fallback of every twin launch that fails before it started.
template <typename Now, typename Held>
CUresult Engine::submit_launch(StreamAbi abi, CUstream stream, const OpDesc& desc, void** params,
                               void** extra, Now& now, Held& held) {
  std::shared_ptr<TwinLaunch> twin;
  if (data_->twins != nullptr) twin = twin_launch(abi, desc, stream, params, extra);
  if (!twin) return submit(Call{abi, stream, desc, nullptr, false, now, held});
  auto twin_now = [&](CUstream s) { return twin->run(s, now); };
  auto twin_held = [&]() -> SubmitFn {
    SubmitFn original = held();
    if (!original) return {};
    return [twin, original = std::move(original)](CUstream s) mutable {
      return twin->run(s, original);
    };
  };
  return submit(Call{abi, stream, desc, nullptr, false, twin_now, twin_held});
}

CUresult Engine::launch_kernel(StreamAbi abi, LaunchKernelFn fn, CUfunction f, unsigned grid_x,
                               unsigned grid_y, unsigned grid_z, unsigned block_x, unsigned block_y,
                               unsigned block_z, unsigned shared_bytes, CUstream stream,
                               void** params, void** extra) {
  auto now = [&](CUstream s) {
    return fn(f, grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_bytes, s, params, extra);
  };
  auto held = [&]() -> SubmitFn {
    KernelArgs args;
    if (!args.capture(params != nullptr ? param_layout(f) : nullptr, params, extra)) return {};
    return [fn, f, grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_bytes,
            args = std::move(args)](CUstream s) {
      return fn(f, grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_bytes, s,
                args.params(), args.extra());
    };
  };
  const OpDesc desc =
      kernel_desc(f, grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_bytes);
  return submit_launch(abi, stream, desc, params, extra, now, held);
}

CUresult Engine::launch_cooperative_kernel(StreamAbi abi, LaunchCooperativeFn fn, CUfunction f,
                                           unsigned grid_x, unsigned grid_y, unsigned grid_z,
                                           unsigned block_x, unsigned block_y, unsigned block_z,
                                           unsigned shared_bytes, CUstream stream, void** params) {
  auto now = [&](CUstream s) {
    return fn(f, grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_bytes, s, params);
  };
  auto held = [&]() -> SubmitFn {
    KernelArgs args;
    if (!args.capture(params != nullptr ? param_layout(f) : nullptr, params, nullptr)) return {};
    return [fn, f, grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_bytes,
            args = std::move(args)](CUstream s) {
      return fn(f, grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_bytes, s,
                args.params());
    };
  };
  OpDesc desc = kernel_desc(f, grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_bytes);
  desc.cooperative = true;
  return submit(Call{abi, stream, desc, nullptr, false, now, held});
}

CUresult Engine::launch_kernel_ex(StreamAbi abi, LaunchKernelExFn fn, const CUlaunchConfig* config,
                                  CUfunction f, void** params, void** extra) {
  if (config == nullptr) return fn(config, f, params, extra);  // the driver's error, now
  OpDesc desc =
      kernel_desc(f, config->gridDimX, config->gridDimY, config->gridDimZ, config->blockDimX,
                  config->blockDimY, config->blockDimZ, config->sharedMemBytes);
  // Attributes that record events make the launch an event record too; such launches go inline
  // after waiting, so that no event is left with a record the driver has not seen.
  bool records_event = false;
  for (unsigned i = 0; config->attrs != nullptr && i < config->numAttrs; ++i) {
    const CUlaunchAttribute& attr = config->attrs[i];
    if (attr.id == CU_LAUNCH_ATTRIBUTE_COOPERATIVE && attr.value.cooperative != 0)
      desc.cooperative = true;
    if (attr.id == CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT ||
        attr.id == CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT) {
      records_event = true;
    }
  }
  desc.records_event = records_event;
  auto now = [&](CUstream s) {
    CUlaunchConfig routed = *config;
    routed.hStream = s;
    return fn(&routed, f, params, extra);
  };
  auto held = [&]() -> SubmitFn {
    KernelArgs args;
    if (records_event ||
        !args.capture(params != nullptr ? param_layout(f) : nullptr, params, extra))
      return {};
    std::vector<CUlaunchAttribute> attrs;
    if (config->attrs != nullptr) attrs.assign(config->attrs, config->attrs + config->numAttrs);
    return [fn, f, copy = *config, attrs = std::move(attrs), args = std::move(args)](CUstream s) {
      CUlaunchConfig routed = copy;
      routed.hStream = s;
      routed.attrs = attrs.empty() ? nullptr : const_cast<CUlaunchAttribute*>(attrs.data());
      routed.numAttrs = static_cast<unsigned>(attrs.size());
      return fn(&routed, f, args.params(), args.extra());
    };
  };
  // Only plain launches have twins: attributes (clusters, priorities, programmatic launches) might
  // not mean the same for three operations.
  if (config->numAttrs == 0) return submit_launch(abi, config->hStream, desc, params, extra, now, held);
  return submit(Call{abi, config->hStream, desc, nullptr, false, now, held});
}

}  // namespace sluice::shim
