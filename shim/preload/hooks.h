// The hooks of libsluice.so. Every exported entry point is generated (forwarders.cpp) as an
// envelope around one of:
//   forward      call the real driver
//   sync         drain all held work, then call the real driver
//   unmanaged    wait for the held work of its stream, call the real driver, count it
//   queue:<kind> hold or submit a call with plain-value arguments (Engine::enqueue)
//   hook         hooked<Sym>() below: the hand-written part, a few lines per family of variants
// The envelope catches everything: on an internal failure the call goes straight to the driver
// and the failure is logged once per entry point. No exception crosses the C ABI.
#pragma once

#include <string_view>
#include <type_traits>

#include "runtime.h"
#include "sluice/shim/driver_api.h"
#include "sluice/shim/engine.h"

namespace sluice::shim::preload {

inline constexpr StreamAbi abi_of(Sym sym) {
  return sym_per_thread(sym) ? StreamAbi::per_thread : StreamAbi::legacy;
}

// Entry points that answer without a driver.
inline constexpr bool works_without_driver(Sym sym) {
  return sym_base(sym) == "cuGetProcAddress";
}

CUresult no_driver(Runtime* rt, Sym sym) noexcept;

// Entry points after which the calling thread's current context may be another one.
inline constexpr bool switches_context(std::string_view base) {
  return base == "cuCtxSetCurrent" || base == "cuCtxPushCurrent" || base == "cuCtxPopCurrent" ||
         base == "cuCtxCreate" || base == "cuGLCtxCreate" || base == "cuVDPAUCtxCreate";
}

// Entry points after which a context handle may name another context (all of them `sync`).
inline constexpr bool ends_context(std::string_view base) {
  return base == "cuCtxDestroy" || base == "cuDevicePrimaryCtxRelease" ||
         base == "cuDevicePrimaryCtxReset" || base == "cuGreenCtxDestroy";
}

// Runs `body(runtime, real_fn)`; on an exception, `fallback(real_fn)`.
template <typename Fn, typename Body, typename Fallback>
CUresult guarded(Sym sym, Fn DriverApi::*member, Body&& body, Fallback&& fallback) {
  Runtime* rt = runtime();
  if (rt == nullptr || (!rt->driver_loaded && !works_without_driver(sym)))
    return no_driver(rt, sym);
  Fn fn = rt->real.*member;
  if (fn == nullptr && !works_without_driver(sym)) {
    warn_once(*rt, sym, "the CUDA driver has no such entry point; returning CUDA_ERROR_NOT_FOUND");
    return CUDA_ERROR_NOT_FOUND;
  }
  try {
    return body(*rt, fn);
  } catch (...) {
    warn_once(*rt, sym, "internal error in sluice; this call went straight to the driver");
  }
  if (fn == nullptr) return CUDA_ERROR_NOT_FOUND;
  return fallback(fn);
}

// ---- the hand-written parts --------------------------------------------------------------------

using ProcAddressV2 = decltype(DriverApi::cuGetProcAddress_v2);
CUresult get_proc_address(Runtime& rt, const char* symbol, void** pfn, int version,
                          cuuint64_t flags, CUdriverProcAddressQueryResult* status);
CUresult get_export_table(Runtime& rt, decltype(DriverApi::cuGetExportTable) fn, const void** table,
                          const CUuuid* id);
CUresult init(Runtime& rt, decltype(DriverApi::cuInit) fn, unsigned flags);
// A module or library was loaded from `image` (or from the file `path` when image is null).
void image_loaded(Runtime& rt, const void* handle, bool library, const void* image,
                  const char* path);

// The address of the shim's own export of `sym` (what cuGetProcAddress hands out).
void* own_entry_point(Sym sym) noexcept;

template <typename... A>
CUstream stream_argument(A... args) {
  CUstream stream = nullptr;
  auto take = [&stream](auto arg) {
    if constexpr (std::is_same_v<decltype(arg), CUstream>) stream = arg;
  };
  (take(args), ...);
  return stream;
}

// The hand-written hook of the entry point S (a `hook` entry of api_policy.txt), given the real
// function and the caller's arguments. Variants of one function share a branch; a `hook` entry
// without a branch does not compile.
template <Sym S, typename Fn, typename... A>
CUresult hooked(Runtime& rt, Fn fn, A... a) {
  constexpr std::string_view base = sym_base(S);
  constexpr StreamAbi abi = abi_of(S);
  Engine& e = *rt.engine;
  auto call = [&] { return fn(a...); };
  if constexpr (switches_context(base)) {
    const CUresult result = call();
    e.context_switched();
    return result;
  } else if constexpr (base == "cuInit") {
    return init(rt, fn, a...);
  } else if constexpr (base == "cuGetProcAddress") {
    if constexpr (sizeof...(A) == 5) {
      return get_proc_address(rt, a...);
    } else {
      return get_proc_address(rt, a..., nullptr);
    }
  } else if constexpr (base == "cuGetExportTable") {
    return get_export_table(rt, fn, a...);
  } else if constexpr (base == "cuLaunchKernel") {
    return e.launch_kernel(abi, fn, a...);
  } else if constexpr (base == "cuLaunchCooperativeKernel") {
    return e.launch_cooperative_kernel(abi, fn, a...);
  } else if constexpr (base == "cuLaunchKernelEx") {
    return e.launch_kernel_ex(abi, fn, a...);
  } else if constexpr (base == "cuFuncSetAttribute") {
    const auto [func, attribute, value] = std::make_tuple(a...);
    return e.change_function(
        func, {Engine::FunctionChange::Kind::attribute, static_cast<int>(attribute), value}, call);
  } else if constexpr (base == "cuKernelSetAttribute") {
    const auto [attribute, value, kernel, device] = std::make_tuple(a...);
    return e.change_kernel(
        kernel, device,
        {Engine::FunctionChange::Kind::attribute, static_cast<int>(attribute), value}, call);
  } else if constexpr (base == "cuFuncSetCacheConfig" || base == "cuFuncSetSharedMemConfig") {
    const auto [func, config] = std::make_tuple(a...);
    constexpr auto kind = base == "cuFuncSetCacheConfig" ? Engine::FunctionChange::Kind::cache_config
                                                         : Engine::FunctionChange::Kind::shared_config;
    return e.change_function(func, {kind, 0, static_cast<int>(config)}, call);
  } else if constexpr (base == "cuKernelSetCacheConfig") {
    const auto [kernel, config, device] = std::make_tuple(a...);
    return e.change_kernel(kernel, device,
                           {Engine::FunctionChange::Kind::cache_config, 0, static_cast<int>(config)},
                           call);
  } else if constexpr (base == "cuKernelGetFunction") {
    const CUresult result = call();
    const auto [func, kernel] = std::make_tuple(a...);
    if (result == CUDA_SUCCESS && func != nullptr) e.function_of_kernel(*func, kernel);
    return result;
  } else if constexpr (base == "cuMemcpyAsync" || base == "cuMemcpyHtoDAsync" ||
                       base == "cuMemcpyDtoHAsync" || base == "cuMemcpyDtoDAsync") {
    return e.copy_1d(abi, fn, a...);
  } else if constexpr (base == "cuMemcpy2DAsync") {
    return e.copy_2d(abi, fn, a...);
  } else if constexpr (base == "cuMemcpy3DAsync") {
    return e.copy_3d(abi, fn, a...);
  } else if constexpr (base == "cuMemcpy3DPeerAsync") {
    return e.copy_3d_peer(abi, fn, a...);
  } else if constexpr (base == "cuStreamBatchMemOp") {
    return e.batch_mem_op(abi, fn, a...);
  } else if constexpr (base == "cuMemAllocAsync" || base == "cuMemAllocFromPoolAsync") {
    return e.run_ordered(abi, stream_argument(a...), call);
  } else if constexpr (base == "cuEventRecord") {
    return e.record_event(abi, fn, a...);
  } else if constexpr (base == "cuEventRecordWithFlags") {
    return e.record_event_with_flags(abi, fn, a...);
  } else if constexpr (base == "cuStreamWaitEvent") {
    return e.wait_event(abi, fn, a...);
  } else if constexpr (base == "cuEventQuery") {
    return e.query_event(fn, a...);
  } else if constexpr (base == "cuEventSynchronize") {
    return e.synchronize_event(fn, a...);
  } else if constexpr (base == "cuEventElapsedTime") {
    return e.elapsed_time(fn, a...);
  } else if constexpr (base == "cuEventDestroy") {
    return e.destroy_event(fn, a...);
  } else if constexpr (base == "cuStreamCreate" || base == "cuStreamCreateWithPriority" ||
                       base == "cuGreenCtxStreamCreate") {
    // cuStreamCreate(&s, flags); cuStreamCreateWithPriority(&s, flags, prio);
    // cuGreenCtxStreamCreate(&s, green, flags, prio). The priority follows the class
    // (Engine::stream_priority): cuStreamCreate becomes cuStreamCreateWithPriority when it changes.
    auto args = std::make_tuple(a...);
    CUresult result = CUDA_SUCCESS;
    if constexpr (base == "cuStreamCreate") {
      const int priority = e.stream_priority(0);
      result = priority != 0 && rt.real.cuStreamCreateWithPriority != nullptr
                   ? rt.real.cuStreamCreateWithPriority(std::get<0>(args), std::get<1>(args),
                                                        priority)
                   : call();
    } else if constexpr (base == "cuStreamCreateWithPriority") {
      const auto [stream, flags, priority] = args;
      result = fn(stream, flags, e.stream_priority(priority));
    } else {
      const auto [stream, green, flags, priority] = args;
      result = fn(stream, green, flags, e.stream_priority(priority));
    }
    if (result == CUDA_SUCCESS) {
      if constexpr (base == "cuGreenCtxStreamCreate") {
        e.stream_created(*std::get<0>(args), std::get<2>(args));
      } else {
        e.stream_created(*std::get<0>(args), std::get<1>(args));
      }
    }
    return result;
  } else if constexpr (base == "cuStreamDestroy") {
    return e.destroy_stream(fn, a...);
  } else if constexpr (base == "cuStreamSynchronize") {
    return e.synchronize_stream(abi, fn, a...);
  } else if constexpr (base == "cuStreamQuery") {
    return e.query_stream(abi, fn, a...);
  } else if constexpr (base == "cuStreamBeginCapture" || base == "cuStreamBeginCaptureToGraph") {
    return e.begin_capture(abi, stream_argument(a...), call);
  } else if constexpr (base == "cuStreamEndCapture") {
    return e.end_capture(abi, stream_argument(a...), call);
  } else if constexpr (base == "cuCtxSynchronize") {
    return e.synchronize_context(call);
  } else if constexpr (base == "cuModuleLoad" || base == "cuModuleLoadData" ||
                       base == "cuModuleLoadDataEx" || base == "cuModuleLoadFatBinary" ||
                       base == "cuLibraryLoadData" || base == "cuLibraryLoadFromFile") {
    const CUresult result = call();
    const auto args = std::make_tuple(a...);
    if (result == CUDA_SUCCESS) {
      constexpr bool library = base.starts_with("cuLibrary");
      constexpr bool from_file = base == "cuModuleLoad" || base == "cuLibraryLoadFromFile";
      const void* image = nullptr;
      const char* path = nullptr;
      if constexpr (from_file) {
        path = std::get<1>(args);
      } else {
        image = std::get<1>(args);
      }
      image_loaded(rt, *std::get<0>(args), library, image, path);
    }
    return result;
  } else if constexpr (base == "cuModuleUnload" || base == "cuLibraryUnload") {
    e.drain_all();  // held launches may use its kernels
    const CUresult result = call();
    if (result == CUDA_SUCCESS) {
      if constexpr (base == "cuModuleUnload") {
        e.module_unloaded(a...);
      } else {
        e.library_unloaded(a...);
      }
    }
    return result;
  } else {
    static_assert(sizeof(Fn) == 0, "a `hook` entry of api_policy.txt has no branch in hooked<>()");
    return CUDA_ERROR_NOT_SUPPORTED;
  }
}

}  // namespace sluice::shim::preload
