// How the fake driver's exported entry points are written.
//
// Every entry point is `extern "C"` under its literal ABI name, so the compiler checks its
// signature against cuda.h (compiled with __CUDA_API_VERSION_INTERNAL: every variant declared
// under its own name). Its body runs inside api::call, which counts the call, charges
// SLUICE_FAKE_LAUNCH_NS, refuses calls before cuInit and keeps exceptions out of the C ABI.
//
// A stream function and its per-thread variant are written once:
//   FAKE_STREAM_ENTRY(cuLaunchKernel, (params...), { ... StreamArg{hStream, kZeroStream} ... })
// defines cuLaunchKernel (stream 0 is the legacy stream) and cuLaunchKernel_ptsz (stream 0 is the
// calling thread's per-thread stream). FAKE_SYNC_ENTRY does the same for the _ptds variants of
// synchronous copies and memsets. The body sees `drv` (the Driver) and `kZeroStream`.
#pragma once

#include <new>

#include "driver.h"
#include "sluice/common/clock.h"

namespace sluice::fake::api {

void charge_launch_cost(const Driver& drv);

// Nanoseconds the calling thread has spent inside the fake's entry points
// (sluice_fake_thread_driver_ns): a program above a shim subtracts it to see the shim's own time.
inline thread_local std::uint64_t t_driver_ns = 0;

struct DriverTime {
  const std::uint64_t start = now_ns();
  ~DriverTime() { t_driver_ns += now_ns() - start; }
};

template <typename Body>
CUresult call(Body&& body) {
  const DriverTime timed;
  try {
    Driver& drv = driver();
    drv.counters.api_calls.fetch_add(1, std::memory_order_relaxed);
    if (!drv.initialized.load(std::memory_order_acquire)) return CUDA_ERROR_NOT_INITIALIZED;
    if (on_fake_thread()) return CUDA_ERROR_NOT_PERMITTED;  // from a host function or host kernel
    charge_launch_cost(drv);
    return body(drv);
  } catch (const std::bad_alloc&) {
    return CUDA_ERROR_OUT_OF_MEMORY;
  } catch (...) {
    return CUDA_ERROR_UNKNOWN;
  }
}

// For the few entry points that work before cuInit (cuInit, cuDriverGetVersion, error strings,
// cuGetProcAddress).
template <typename Body>
CUresult call_uninitialized(Body&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return CUDA_ERROR_OUT_OF_MEMORY;
  } catch (...) {
    return CUDA_ERROR_UNKNOWN;
  }
}

// Locks the driver, resolves the stream argument and runs `body(stream, lock)`.
template <typename Body>
CUresult on_stream(Driver& drv, StreamArg arg, Body&& body) {
  std::unique_lock lock(drv.mu);
  Stream* stream = nullptr;
  if (CUresult status = resolve_stream(drv, arg, stream)) return status;
  return body(*stream, lock);
}

// Locks the driver, checks the current context and runs `body(ctx)`.
template <typename Body>
CUresult on_current(Driver& drv, Body&& body) {
  std::lock_guard lock(drv.mu);
  Context* ctx = nullptr;
  if (CUresult status = current_context(drv, ctx)) return status;
  return body(*ctx);
}

// Locks the driver, looks `handle` up as a `kind` object and runs `body(object)`; a handle that
// is not one gives `missing`.
template <typename T, typename Body>
CUresult on_object(Driver& drv, const void* handle, HandleKind kind, CUresult missing, Body&& body) {
  std::lock_guard lock(drv.mu);
  T* object = lookup<T>(drv, handle, kind);
  if (object == nullptr) return missing;
  return body(*object);
}

}  // namespace sluice::fake::api

#define FAKE_ENTRY(name, params, ...)                                                            \
  extern "C" CUresult name params {                                                              \
    return ::sluice::fake::api::call(                                                            \
        [&]([[maybe_unused]] ::sluice::fake::Driver& drv) -> CUresult __VA_ARGS__);              \
  }

#define FAKE_ENTRY_WITH_ZERO_STREAM(name, zero, params, ...)                                     \
  extern "C" CUresult name params {                                                              \
    [[maybe_unused]] constexpr ::sluice::fake::DefaultStream kZeroStream = zero;                  \
    return ::sluice::fake::api::call(                                                            \
        [&]([[maybe_unused]] ::sluice::fake::Driver& drv) -> CUresult __VA_ARGS__);              \
  }

#define FAKE_STREAM_ENTRY(name, params, ...)                                                     \
  FAKE_ENTRY_WITH_ZERO_STREAM(name, ::sluice::fake::DefaultStream::legacy, params, __VA_ARGS__)   \
  FAKE_ENTRY_WITH_ZERO_STREAM(name##_ptsz, ::sluice::fake::DefaultStream::per_thread, params, __VA_ARGS__)

// An entry point whose older ABI version has the same signature and behaviour (cuStreamDestroy
// and cuStreamDestroy_v2): both names, one body.
#define FAKE_ENTRY_TWO_ABIS(name, older, params, ...) \
  FAKE_ENTRY(name, params, __VA_ARGS__)                \
  FAKE_ENTRY(older, params, __VA_ARGS__)

#define FAKE_SYNC_ENTRY(name, params, ...)                                                       \
  FAKE_ENTRY_WITH_ZERO_STREAM(name, ::sluice::fake::DefaultStream::legacy, params, __VA_ARGS__)   \
  FAKE_ENTRY_WITH_ZERO_STREAM(name##_ptds, ::sluice::fake::DefaultStream::per_thread, params, __VA_ARGS__)
