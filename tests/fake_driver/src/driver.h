// The fake driver's process state and the helpers every entry point uses.
//
// One Driver per process, made on first use (never in a static constructor). A forked child gets
// a fresh Driver: the parent's contexts, streams and threads do not exist there, so the child
// calls cuInit again and starts from nothing (the parent's handles are invalid in the child).
//
// Locking: Driver::mu guards everything in the Driver and in the objects of objects.h. The device
// executors and the host worker take it too; they run kernel effects and host functions without
// it. Driver::changed is notified whenever an operation finishes or an error is recorded.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "config.h"
#include "objects.h"
#include "sluice/fake/fake_driver.h"

namespace sluice::fake {

class HostWorker;

// Counter names, in the order of sluice_fake_counters.
#define SLUICE_FAKE_COUNTERS(X)                                                                    \
  X(api_calls) X(launches_submitted) X(launches_executed) X(launches_failed) X(copies_submitted)  \
  X(copies_executed) X(copies_failed) X(memsets_submitted) X(memsets_executed) X(memsets_failed)  \
  X(host_funcs_submitted) X(host_funcs_executed) X(event_records) X(event_waits)                  \
  X(memops_submitted) X(memops_executed) X(graph_launches) X(captured_ops) X(module_loads)         \
  X(allocations) X(frees) X(synchronizations) X(bytes_copied) X(proc_address_queries)             \
  X(export_table_queries) X(executor_wakeups)

struct Counters {
#define SLUICE_FAKE_COUNTER_FIELD(name) std::atomic<std::uint64_t> name{0};
  SLUICE_FAKE_COUNTERS(SLUICE_FAKE_COUNTER_FIELD)
#undef SLUICE_FAKE_COUNTER_FIELD
};

struct HostKernel {
  sluice_fake_kernel_fn fn = nullptr;
  void* user = nullptr;
  std::uint64_t duration_ns = 0;
};

struct Injection {
  CUresult error = CUDA_SUCCESS;
  bool sticky = false;
  std::uint32_t remaining = 0;
};

struct IpcMapping {
  std::uintptr_t address = 0;
  int refs = 0;
};

// The trace stops growing here (about 200 MiB); sluice_fake_trace_clear makes room again.
inline constexpr std::size_t kTraceLimit = std::size_t{1} << 20;

struct Driver {
  std::mutex mu;
  std::condition_variable changed;
  std::uint64_t generation = 0;  // differs between a parent and its forked children
  std::atomic<bool> initialized{false};
  Config config;
  std::vector<std::unique_ptr<Device>> devices;
  std::unordered_map<const void*, Handle*> handles;
  AllocationTable memory;
  std::uint64_t last_id = 0;
  std::map<std::string, HostKernel> host_kernels;
  std::map<std::string, Injection> injections;
  std::atomic<bool> tracing{false};
  std::vector<sluice_fake_trace_record> trace;
  Counters counters;
  std::unique_ptr<HostWorker> host_worker;
  std::vector<std::shared_ptr<Capture>> captures;  // capture sequences in progress
  std::map<std::pair<std::int32_t, std::uint64_t>, IpcMapping> ipc_mappings;  // (pid, buffer) -> map
  std::uint64_t start_time = 0;  // this process's start time, for IPC handles

  std::uint64_t next_id() { return ++last_id; }
};

// The process's driver, made on first use.
Driver& driver();

// ---- per-thread state -------------------------------------------------------------------------

struct ThreadState {
  std::uint64_t generation = 0;
  std::vector<Context*> stack;  // the current-context stack; back() is current
  CUstreamCaptureMode capture_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;
};

// The calling thread's state, reset when it belongs to an earlier Driver (before a fork).
ThreadState& thread_state(Driver& drv);

// True on the fake's own threads (device executors, the host worker). Host functions and host
// kernels run there and must not call the driver: such calls fail with
// CUDA_ERROR_NOT_PERMITTED instead of deadlocking.
bool on_fake_thread();
void mark_fake_thread();

// ---- handles ----------------------------------------------------------------------------------

void register_handle(Driver& drv, Handle* object);
void unregister_handle(Driver& drv, Handle* object);

template <typename T>
T* lookup(Driver& drv, const void* handle, HandleKind kind) {
  if (handle == nullptr) return nullptr;
  auto it = drv.handles.find(handle);
  if (it == drv.handles.end() || it->second->handle_kind != kind) return nullptr;
  return static_cast<T*>(it->second);
}

template <typename T, typename H>
H to_handle(T* object) {
  return reinterpret_cast<H>(object);
}

// ---- contexts, devices and streams ------------------------------------------------------------

Device* device_at(Driver& drv, CUdevice ordinal);

// The calling thread's current context, checked: CUDA_ERROR_INVALID_CONTEXT when there is none
// or it was destroyed or (a primary context) released; the context's sticky error if it has one.
CUresult current_context(Driver& drv, Context*& out);

// A context handle given by the application, checked the same way.
CUresult context_from_handle(Driver& drv, CUcontext handle, Context*& out);

// Which stream handle 0 names: the legacy default stream (plain entry points) or the calling
// thread's per-thread default stream (the _ptsz/_ptds entry points).
enum class DefaultStream : std::uint8_t { legacy, per_thread };

struct StreamArg {
  CUstream handle;
  DefaultStream zero_means;
};

// Resolves a stream argument to its object (for 0, CU_STREAM_LEGACY and CU_STREAM_PER_THREAD in
// the current context). Fails with the context's sticky error if it has one.
CUresult resolve_stream(Driver& drv, StreamArg arg, Stream*& out);

// The per-thread default stream of `ctx` for the calling thread (made on first use).
Stream* per_thread_stream(Driver& drv, Context& ctx);

Stream* create_stream(Driver& drv, Context& ctx, unsigned flags, int priority, StreamRole role);
Context* create_context(Driver& drv, Device& device, unsigned flags, bool primary, GreenCtx* green);
// The device's primary context, made (inactive) on first use.
Context& primary_context(Driver& drv, Device& device);
// cuDevicePrimaryCtxRetain / Release: the last release resets the context.
Context& retain_primary(Driver& drv, Device& device);
void release_primary(Driver& drv, std::unique_lock<std::mutex>& lock, Device& device);

// Waits for the context's work, then frees everything it owns. The Context object itself is
// deleted unless it is a primary context (which stays, inactive).
void tear_down_context(Driver& drv, std::unique_lock<std::mutex>& lock, Context& ctx);

// ---- errors -----------------------------------------------------------------------------------

// Records an error of device work in its context and wakes waiters.
void record_device_error(Driver& drv, Context& ctx, CUresult error, bool sticky);

// What a synchronizing call returns after its wait: the sticky error, else the deferred error
// (which it consumes), else CUDA_SUCCESS.
CUresult take_context_error(Context& ctx);

// ---- memory -----------------------------------------------------------------------------------

enum class PtrClass : std::uint8_t { device, managed, host_pinned, pageable, invalid };

// Classifies [address, address + bytes): memory the driver knows, pageable host memory, or
// invalid (inside a device arena but not a live allocation, or running past an allocation).
PtrClass classify(Driver& drv, std::uintptr_t address, std::size_t bytes);

// True when device code may touch [address, address + bytes) now.
bool device_accessible(Driver& drv, std::uintptr_t address, std::size_t bytes);

// Takes `bytes` of device memory of `ctx`'s device (kind device or managed). Returns
// CUDA_ERROR_OUT_OF_MEMORY when the device (all processes sharing it) has no room left.
CUresult allocate_device(Driver& drv, Context& ctx, std::size_t bytes, MemKind kind, Allocation*& out);

// Frees a device allocation (kind device or managed) at its base.
void free_device_allocation(Driver& drv, Allocation& allocation);

// ---- trace ------------------------------------------------------------------------------------

void trace_op(Driver& drv, const Op& op);

}  // namespace sluice::fake
