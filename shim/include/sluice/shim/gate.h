// The gate: the pluggable decision of when held stream-ordered work may go to the driver.
//
// The engine asks the gate about every operation before submitting it. The default gate is open
// (everything goes at once). sluiced's client gate (scheduler/client) shuts it for best-effort work
// while real-time work is active and grants a budget of predicted in-flight microseconds instead.
//
// Thread rules:
//  * admit(), on_submit() and on_hold() are called on application threads and on sluice's release
//    thread, concurrently, with no sluice lock held. They must be cheap and must never block.
//  * A gate whose answer may have changed calls Engine::gate_changed() (any thread, any time) so
//  the
//    engine re-examines held work.
#pragma once

#include <cstdint>
#include <string>

#include "sluice/shim/cuda.h"

namespace sluice::shim {

enum class OpKind : std::uint8_t {
  kernel,        // cuLaunchKernel, cuLaunchKernelEx, cuLaunchCooperativeKernel
  copy,          // asynchronous copies
  memset,        // asynchronous memsets
  event_record,  // cuEventRecord[WithFlags]
  event_wait,    // cuStreamWaitEvent
  host_fn,       // cuLaunchHostFunc, cuStreamAddCallback
  mem_op,        // cuStreamWrite/WaitValue*, cuStreamBatchMemOp
  mem_free,      // cuMemFreeAsync
  graph,         // cuGraphLaunch, cuGraphUpload
  prefetch,      // cuMemPrefetchAsync
  kCount
};

const char* op_kind_name(OpKind kind);

// Only kernels, copies, memsets and graphs occupy the GPU; the rest are bookkeeping that is ordered
// but never worth holding on its own.
inline bool op_uses_gpu(OpKind kind) {
  return kind == OpKind::kernel || kind == OpKind::copy || kind == OpKind::memset ||
         kind == OpKind::graph;
}

// The fields of OpDesc that cost time on every call; the engine fills them only for a gate that
// reads them (Gate::needs()), and always for held work.
enum GateNeeds : std::uint32_t {
  kNeedSeq = 1u << 0,               // OpDesc::seq
  kNeedCallTime = 1u << 1,          // OpDesc::call_ns
  kNeedDevice = 1u << 2,            // OpDesc::device
  kNeedSubmitCallbacks = 1u << 3,   // before_submit() and on_submit() for inline work
  kNeedRoute = 1u << 4,             // route_sms() for work on application streams
  kNeedAll = (1u << 5) - 1,
};

// The class of the process as the gate knows it; it decides the priority of the streams the
// application creates (Engine::stream_priority).
enum class StreamClass : std::uint8_t {
  unknown,  // no class known (no daemon): priorities are left as the application asks
  rt,       // every stream gets the context's greatest priority
  be,       // every stream gets the context's least priority
};

// What the gate and the daemon learn about one operation. Filled on the launching thread.
struct OpDesc {
  std::uint64_t seq = 0;      // per-process, increasing in submission-call order (kNeedSeq)
  CUstream stream = nullptr;  // as the application named it; CU_STREAM_LEGACY for the legacy stream
  CUcontext ctx = nullptr;    // current context at the call (filled only for held work)
  std::int32_t device = -1;   // device ordinal of the stream's context, -1 when not known (kNeedDevice)
  OpKind kind = OpKind::kernel;
  bool cooperative = false;
  bool records_event = false;  // a launch whose attributes record an application event
  CUfunction func = nullptr;  // kernels only; may be a CUkernel handle
  std::uint32_t grid[3] = {0, 0, 0};
  std::uint32_t block[3] = {0, 0, 0};
  std::uint32_t shared_mem = 0;
  std::uint64_t bytes = 0;    // copies and memsets
  std::uint64_t call_ns = 0;  // monotonic time of the application's call (kNeedCallTime)
  // Set in before_submit()/on_submit() when the engine routes the op to another stream than the
  // application's (a mirror in an SM partition, Gate::route_sms): the stream it goes to and that
  // stream's context (a green context). A gate records its own events there, with events of that
  // context; nullptr when the op goes to `stream` itself.
  CUstream submit_stream = nullptr;
  CUcontext submit_ctx = nullptr;
};

// What the engine knows about a kernel: a stable identity (module hash and name) that the shim and
// sluiced compute alike, and the parameter layout used to deep-copy held launches.
struct KernelInfo {
  std::uint64_t id = 0;           // fnv1a(name, seed = module_hash)
  std::uint64_t module_hash = 0;  // fnv1a of the module image; 0 when the image was not seen
  std::string name;               // mangled name as the driver reports it
};

// Implemented by the engine. find() is lock-free after a function's first sighting.
class KernelCatalog {
 public:
  virtual const KernelInfo* find(CUfunction func) noexcept = 0;

 protected:
  ~KernelCatalog() = default;
};

// Implemented by the engine: a gate calls gate_changed() when held work may now be admitted.
class GateListener {
 public:
  virtual void gate_changed() noexcept = 0;
  // The daemon behind the gate is gone (its connection was lost): kill words it may have raised
  // must come down, or work it killed waits on the GPU until a daemon lowers them. Any thread; no
  // gate lock held.
  virtual void daemon_lost() noexcept {}

 protected:
  ~GateListener() = default;
};

class Gate {
 public:
  virtual ~Gate() = default;

  // May `op` go to the driver now? False holds it in its stream's queue (or, where the engine
  // cannot queue, makes the calling thread wait for a later true).
  virtual bool admit(const OpDesc& op) noexcept = 0;

  // `op` is about to be handed to the driver (after admit() said yes, or on a forced release).
  // Called on the submitting thread with the op's context current; a gate may record an event on
  // op.stream here to time the op.
  virtual void before_submit(const OpDesc& op) noexcept { (void)op; }

  // `op` was handed to the driver; `result` is the driver's answer. Called on the submitting
  // thread right after the driver call, with the op's context current.
  virtual void on_submit(const OpDesc& op, CUresult result) noexcept {
    (void)op;
    (void)result;
  }

  // `op` was put in a queue instead of being submitted.
  virtual void on_hold(const OpDesc& op) noexcept { (void)op; }

  // Asynchronous copies larger than this are split into chunks that are gated one by one, so that
  // other work never waits behind more than one chunk on a copy engine. 0 disables splitting.
  virtual std::uint64_t copy_chunk_bytes() const noexcept { return 0; }

  // A short name for logs and statistics ("open", "daemon", "toggle").
  virtual const char* name() const noexcept = 0;

  // Which of the costly OpDesc fields and callbacks the gate uses (GateNeeds bits). Work the engine
  // holds always has every field; inline work only those asked for. Must be constant for the
  // gate's lifetime.
  virtual std::uint32_t needs() const noexcept { return kNeedAll; }

  // Where `op` runs: 0 on the full GPU (the application's stream itself), N > 0 in a partition of N
  // SMs of op.device (a green context; on sm_90 N is a multiple of 8, at least 8). Asked, when
  // needs() has kNeedRoute, for every operation on a stream the application created or on the
  // legacy stream, right before it goes to the driver (op.device filled); never for the per-thread
  // default stream, graph launches, or during stream captures. Must be cheap and must not block. The engine keeps per-stream order across every change of
  // the answer (docs/architecture.md, "Mechanisms in the client").
  virtual std::uint32_t route_sms(const OpDesc& op) const noexcept {
    (void)op;
    return 0;
  }

  // The class the priorities of new streams follow. Asked once per stream creation.
  virtual StreamClass stream_class() const noexcept { return StreamClass::unknown; }

  // The device time `op` is predicted to take, in ns; 0 when the gate has no prediction. Asked only
  // when kill is enabled (SLUICE_KILL=1), before a kernel launch, to tell long kernels (worth an
  // instrumented twin) from short ones. Must be cheap and must not block.
  virtual std::uint64_t predicted_ns(const OpDesc& op) const noexcept {
    (void)op;
    return 0;
  }

  // The process is exiting (the shim's atexit handler, after held work was submitted): the driver
  // may be torn down from now on, so a gate's own threads must stop calling it before this returns,
  // and work that still comes is admitted.
  virtual void process_exiting() noexcept {}

  // The client's kill word of `device` is the 4-byte word at `offset` in the device allocation that
  // `handle` (cuIpcGetMemHandle) names. A gate that talks to sluiced tells it now and after every
  // reconnection, so that sluiced can raise the word when it kills this client's work. Called once
  // per device, from an application thread; must not block.
  virtual void register_kill_word(std::int32_t device, const CUipcMemHandle& handle,
                                  std::uint64_t offset) noexcept {
    (void)device;
    (void)handle;
    (void)offset;
  }
};

// The default: admits everything.
class OpenGate final : public Gate {
 public:
  bool admit(const OpDesc&) noexcept override { return true; }
  const char* name() const noexcept override { return "open"; }
  std::uint32_t needs() const noexcept override { return 0; }
};

}  // namespace sluice::shim
