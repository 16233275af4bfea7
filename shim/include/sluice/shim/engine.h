// The deferral engine: per-stream ordered queues for every stream-ordered driver call, behind a
// pluggable gate. The shim's hooks (shim/preload) are thin wrappers over it; tests drive it
// directly against a mock driver or the fake driver.
//
// What it guarantees
//  * Per-stream order: a call never reaches the driver before an earlier call on the same stream.
//  * Legacy default stream: work on the legacy stream goes to the driver after the earlier work of
//    every blocking stream, and work on a blocking stream after earlier legacy work (the driver
//    then enforces the barrier itself, because it sees the calls in the application's order).
//  * Events are virtualized: records and waits of one event reach the driver in call order; a
//    query of an event whose newest record is held answers CUDA_ERROR_NOT_READY; a wait on it is
//    held behind the record; synchronize and elapsed-time wait until the record went out.
//  * Sync points drain: stream, event and context synchronization, destroys, and (through
//    drain_all) every `sync` entry of shim/gen/api_policy.txt wait until the held work they depend
//    on was submitted, then ask the driver.
//  * Errors the driver returns for held work are returned by the next synchronize or query of that
//    stream, or the next context synchronize.
//  * Fast path: with the gate open and nothing held that the call must follow, the call goes to the
//    driver on the caller's thread: no thread hop, no lock shared between streams, no allocation.
//  * Nothing waits forever: a held call older than EngineOptions::max_hold_ns goes out whatever the
//    gate says (logged and counted).
//
// Calls that cannot be held wait on the caller's thread for their turn and the gate's admission,
// then go inline: work on the per-thread default stream (only its own thread can name it), launches
// whose parameters cannot be sized, copies from or to pageable host memory (the driver reads or
// writes such memory before the call returns), and calls with no current context.
//
// Stream capture: while any capture is in progress, calls whose stream and event have nothing held
// go straight to the driver without asking the gate (captured work does not run; it is recorded).
// Beginning a capture first drains all held work, so nothing held is captured by mistake.
//
// Stream-ordered allocation returns its pointer at once, so it cannot be held: it waits until the
// earlier held work of its stream went out (run_ordered), then runs inline.
//
// Thread rules: every public member may be called from any thread concurrently. The engine starts
// one release thread on the first held call; it uses relaxed stream-capture mode and makes each
// held call's context current before submitting it. Sync points sleep on a condition variable
// until the release thread made progress. The Engine must outlive every thread calling it.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "sluice/shim/driver_api.h"
#include "sluice/shim/function_ref.h"
#include "sluice/shim/gate.h"
#include "sluice/shim/kill.h"
#include "sluice/shim/stats.h"
#include "sluice/shim/unique_function.h"

namespace sluice::shim {

// How a call names the default stream: the plain entry points read handle 0 as the legacy stream,
// the _ptsz/_ptds ones as the calling thread's per-thread stream.
enum class StreamAbi : std::uint8_t { legacy, per_thread };

struct EngineOptions {
  // A held call older than this goes to the driver whatever the gate says.
  std::uint64_t max_hold_ns = 10ull * 1000 * 1000 * 1000;
  // How long waiting threads sleep between re-examinations when nothing wakes them (a gate should
  // call gate_changed(); this bounds the damage when one does not).
  std::uint64_t poll_ns = 2ull * 1000 * 1000;
  // True when every change of a thread's current context is reported (context_switched(),
  // contexts_changed()), as the preloaded shim does: the engine then caches each thread's context
  // and device instead of asking the driver on calls that need them.
  bool context_switches_reported = false;
  // Streams get the greatest priority in RT clients and the least in BE clients
  // (SLUICE_STREAM_PRIORITY; off keeps the application's priorities).
  bool stream_priority = true;
  // Kill in the client (SLUICE_KILL): long best-effort launches of kernels with PTX go out as their
  // instrumented twin, twice, around a stream wait on the kill word (sluice/shim/kill.h).
  KillOptions kill;
};

// What a held call runs when it is released: the driver call on the given stream. The stream is
// normally the one the application named; routing (sluiced moving best-effort work to a green
// context) substitutes another.
using SubmitFn = UniqueFunction<CUresult(CUstream)>;

// One call of a stream-ordered entry point, as the hooks describe it to the engine.
struct Call {
  StreamAbi abi = StreamAbi::legacy;
  CUstream stream = nullptr;  // as the application passed it
  OpDesc desc;  // kind, kernel, sizes; the engine fills seq, stream, ctx, device, call_ns
  CUevent event = nullptr;     // the event an event record or wait refers to
  bool records_event = false;  // true for records: a later query of `event` depends on it
  FunctionRef<CUresult(CUstream)> submit_now;  // the call with the caller's own arguments
  FunctionRef<SubmitFn()> make_held;           // a call owning deep copies; empty: cannot be held
};

struct StreamState;
struct StreamRoute;
struct EventState;
struct HeldOp;
struct EngineData;
struct ParamLayout;
struct KernelRecord;
class TwinLaunch;

class Engine final : public GateListener, public KernelCatalog {
 public:
  explicit Engine(const DriverApi& driver, EngineOptions options = {});
  // Submits everything still held (ignoring the gate) and stops the release thread.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // The gate in force; nullptr restores the built-in open gate. Returns once the release thread
  // no longer uses the previous gate; application threads in the middle of a call may still use it
  // until that call returns. Must not be called from inside a gate's callbacks.
  void set_gate(Gate* gate) noexcept;
  Gate& gate() const noexcept { return *gate_.load(std::memory_order_acquire); }

  // GateListener: held work may be admissible now.
  void gate_changed() noexcept override;
  // GateListener: the daemon is gone; the kill words it may have raised come down.
  void daemon_lost() noexcept override;

  // The calling thread's current context may have changed (cuCtxSetCurrent, push, pop, create).
  void context_switched() noexcept;
  // A context ended (destroy, primary context release or reset): its handle may come back as
  // another context, on any thread.
  void contexts_changed() noexcept;

  // KernelCatalog: identity of a kernel (lock-free after its first sighting).
  const KernelInfo* find(CUfunction func) noexcept override;

  // ---- stream-ordered work ---------------------------------------------------------------------
  // Submits `call` inline if the fast path allows, else holds it or waits (see above). Returns the
  // driver's answer for inline work and CUDA_SUCCESS for held work.
  CUresult submit(const Call& call);

  // A call whose arguments are plain values: the same arguments serve now and later. The CUstream
  // parameter of `fn` is found by type.
  template <typename... P, typename... A>
  CUresult enqueue(StreamAbi abi, OpDesc desc, CUresult (*fn)(P...), A... args);

  using LaunchKernelFn = decltype(DriverApi::cuLaunchKernel);
  using LaunchCooperativeFn = decltype(DriverApi::cuLaunchCooperativeKernel);
  using LaunchKernelExFn = decltype(DriverApi::cuLaunchKernelEx);
  CUresult launch_kernel(StreamAbi abi, LaunchKernelFn fn, CUfunction f, unsigned grid_x,
                         unsigned grid_y, unsigned grid_z, unsigned block_x, unsigned block_y,
                         unsigned block_z, unsigned shared_bytes, CUstream stream, void** params,
                         void** extra);
  CUresult launch_cooperative_kernel(StreamAbi abi, LaunchCooperativeFn fn, CUfunction f,
                                     unsigned grid_x, unsigned grid_y, unsigned grid_z,
                                     unsigned block_x, unsigned block_y, unsigned block_z,
                                     unsigned shared_bytes, CUstream stream, void** params);
  CUresult launch_kernel_ex(StreamAbi abi, LaunchKernelExFn fn, const CUlaunchConfig* config,
                            CUfunction f, void** params, void** extra);

  // A 1D asynchronous copy (cuMemcpyAsync, HtoD, DtoH, DtoD). Split into gated chunks when the gate
  // asks for it (Gate::copy_chunk_bytes).
  template <typename Dst, typename Src>
  CUresult copy_1d(StreamAbi abi, CUresult (*fn)(Dst, Src, std::size_t, CUstream), Dst dst, Src src,
                   std::size_t bytes, CUstream stream);
  CUresult copy_2d(StreamAbi abi, decltype(DriverApi::cuMemcpy2DAsync_v2) fn,
                   const CUDA_MEMCPY2D* copy, CUstream stream);
  CUresult copy_3d(StreamAbi abi, decltype(DriverApi::cuMemcpy3DAsync_v2) fn,
                   const CUDA_MEMCPY3D* copy, CUstream stream);
  CUresult copy_3d_peer(StreamAbi abi, decltype(DriverApi::cuMemcpy3DPeerAsync) fn,
                        const CUDA_MEMCPY3D_PEER* copy, CUstream stream);
  CUresult batch_mem_op(StreamAbi abi, decltype(DriverApi::cuStreamBatchMemOp) fn, CUstream stream,
                        unsigned count, CUstreamBatchMemOpParams* ops, unsigned flags);

  // Waits until the held work `stream` must follow went out, then runs `call` inline
  // (stream-ordered allocation; unmanaged stream-ordered entry points).
  CUresult run_ordered(StreamAbi abi, CUstream stream, FunctionRef<CUresult()> call);

  // ---- events ----------------------------------------------------------------------------------
  CUresult record_event(StreamAbi abi, decltype(DriverApi::cuEventRecord) fn, CUevent event,
                        CUstream stream);
  CUresult record_event_with_flags(StreamAbi abi, decltype(DriverApi::cuEventRecordWithFlags) fn,
                                   CUevent event, CUstream stream, unsigned flags);
  CUresult wait_event(StreamAbi abi, decltype(DriverApi::cuStreamWaitEvent) fn, CUstream stream,
                      CUevent event, unsigned flags);
  CUresult query_event(decltype(DriverApi::cuEventQuery) fn, CUevent event);
  CUresult synchronize_event(decltype(DriverApi::cuEventSynchronize) fn, CUevent event);
  CUresult elapsed_time(decltype(DriverApi::cuEventElapsedTime) fn, float* ms, CUevent start,
                        CUevent end);
  CUresult destroy_event(decltype(DriverApi::cuEventDestroy_v2) fn, CUevent event);

  // ---- streams and contexts --------------------------------------------------------------------
  // The priority a stream the application creates gets, for the priority it asked for (0 for
  // cuStreamCreate), in the current context: the context's greatest for a real-time class, its
  // least for a best-effort class (Gate::stream_class), as asked when no class is known or the
  // range cannot be read. Differences are counted as priority overrides.
  int stream_priority(int requested) noexcept;
  void stream_created(CUstream stream, unsigned flags);
  CUresult synchronize_stream(StreamAbi abi, decltype(DriverApi::cuStreamSynchronize) fn,
                              CUstream stream);
  CUresult query_stream(StreamAbi abi, decltype(DriverApi::cuStreamQuery) fn, CUstream stream);
  CUresult destroy_stream(decltype(DriverApi::cuStreamDestroy_v2) fn, CUstream stream);
  CUresult synchronize_context(FunctionRef<CUresult()> call);

  // ---- capture ---------------------------------------------------------------------------------
  CUresult begin_capture(StreamAbi abi, CUstream stream, FunctionRef<CUresult()> call);
  CUresult end_capture(StreamAbi abi, CUstream stream, FunctionRef<CUresult()> call);
  bool capture_active() const noexcept {
    return capture_active_.load(std::memory_order_acquire) > 0;
  }

  // ---- sync points -----------------------------------------------------------------------------
  // Waits until every call held now went to the driver (as the gate allows).
  void drain_all();
  // Submits everything held now, ignoring the gate (process exit). Restores the caller's context.
  void flush() noexcept;
  // The process is exiting and flush() ran: the engine's and the gate's background threads stop
  // using the driver and whatever the exit destroys (Gate::process_exiting).
  void process_exiting() noexcept;

  // ---- function state --------------------------------------------------------------------------
  // A change of the launch-relevant state of a kernel: a function attribute (cuFuncSetAttribute,
  // cuKernelSetAttribute), the cache or shared-memory configuration. The driver reads that state
  // when a launch is submitted, so a change must not reach it before the held launches of the same
  // kernel that were called earlier: `call` runs once those went out, or at once when none of them
  // can notice it (nothing of the kernel is held; the value is the current one; a dynamic
  // shared-memory limit that every held launch fits in). Changes that went through are remembered
  // and replayed on the kernel's instrumented twin (function_changes()).
  struct FunctionChange {
    enum class Kind : std::uint8_t { attribute, cache_config, shared_config };
    Kind kind = Kind::attribute;
    int attribute = 0;  // CUfunction_attribute, for Kind::attribute
    int value = 0;
  };
  CUresult change_function(CUfunction func, FunctionChange change, FunctionRef<CUresult()> call);
  // The same for a CUkernel (cuKernelSetAttribute, cuKernelSetCacheConfig) on `device`: launches
  // name the kernel itself or a CUfunction that cuKernelGetFunction gave for it.
  CUresult change_kernel(CUkernel kernel, CUdevice device, FunctionChange change,
                         FunctionRef<CUresult()> call);
  // cuKernelGetFunction said that `func` is `kernel` in the current context.
  void function_of_kernel(CUfunction func, CUkernel kernel);
  // The changes made so far to `func` (and to the CUkernel it belongs to), oldest first, one per
  // attribute or configuration.
  std::vector<FunctionChange> function_changes(CUfunction func);

  // ---- module images ---------------------------------------------------------------------------
  // Record the image of a loaded module or library, so its kernels get a stable module hash.
  void module_loaded(CUmodule module, const void* image, std::size_t size);
  void library_loaded(CUlibrary library, const void* image, std::size_t size);
  // Forget the kernels of an unloaded module or library (their handles may be reused).
  void module_unloaded(CUmodule module);
  void library_unloaded(CUlibrary library);

  // The device address of the kill word of `device` (SLUICE_KILL), 0 before its first twin or with
  // kill off. For diagnostics and tests; sluiced learns it through the gate.
  CUdeviceptr kill_word(CUdevice device) const noexcept;

  Stats& stats() noexcept { return stats_; }
  const DriverApi& driver() const noexcept { return driver_; }
  const EngineOptions& options() const noexcept { return options_; }
  // Calls held in queues right now.
  std::uint64_t held_now() const noexcept;

 private:
  struct Route;
  Route route(StreamAbi abi, CUstream stream);
  StreamState* register_unknown(CUstream stream);
  EventState* event_state(CUevent event);
  bool quiet(const Route& route, const EventState* event) const noexcept;
  struct ThreadContext {
    CUcontext ctx = nullptr;
    std::int32_t device = -1;
  };
  ThreadContext thread_context();
  std::int32_t device_of(const Route& route);
  void describe(OpDesc& desc, const Route& route, std::uint32_t fields);
  CUresult submit_inline(Gate& gate, std::uint32_t needs, StreamState* state, const OpDesc& desc,
                         const Call& call);
  CUresult submit_waiting(const Route& route, EventState* event, const OpDesc& desc,
                          const Call& call);
  CUresult hold(StreamState& state, EventState* event, const OpDesc& desc, SubmitFn submit,
                const Call& call);
  void collect_dependencies(const Route& route, EventState* event, HeldOp& op);
  bool dependencies_met(const HeldOp& op) const noexcept;
  bool drain(StreamState& state, bool force, CUcontext& current);
  void retire(StreamState& state);
  void wait_for_stream(const Route& route);
  template <typename Done>
  void wait_until(Done&& done);
  void activate(StreamState& state);
  void notify_progress() noexcept;
  void ensure_release_thread();
  void release_thread_main();
  CUcontext current_context() const noexcept;
  bool holdable_pointer(CUdeviceptr pointer) const noexcept;
  bool holdable_pointer(const void* pointer) const noexcept {
    return holdable_pointer(reinterpret_cast<CUdeviceptr>(pointer));
  }
  template <typename Copy>
  bool holdable_copy(const Copy& copy) const noexcept;
  template <typename Copy, typename Fn>
  CUresult copy_struct(StreamAbi abi, Fn fn, const Copy* copy, std::uint64_t bytes,
                       CUstream stream);
  const ParamLayout* param_layout(CUfunction func);
  // Kill in the client (core/twins.cpp): the launch as twin + wait + twin, or nullptr when the
  // original must go (kill off, RT class, capture, cooperative, no twin, short kernel).
  // Counts the best-effort launch for the coverage figures (Stats::be_kernel_ns).
  std::shared_ptr<TwinLaunch> twin_launch(StreamAbi abi, const OpDesc& desc, CUstream stream,
                                          void** params, void** extra);
  std::shared_ptr<TwinLaunch> make_twin_launch(Gate& g, std::uint64_t predicted_ns,
                                               const OpDesc& desc, void** params, void** extra);
  template <typename Now, typename Held>
  CUresult submit_launch(StreamAbi abi, CUstream stream, const OpDesc& desc, void** params,
                         void** extra, Now& now, Held& held);
  CUresult take_deferred_error(StreamState* state) noexcept;
  void count_held_launch(HeldOp& op);
  CUresult change_state(KernelRecord& record, FunctionChange change,
                        FunctionRef<bool(int&)> current_value, FunctionRef<CUresult()> call);

  // ---- routing to SM partitions (core/route.cpp) ----
  // Submits one operation of `state` (nullptr: a default or unknown stream) through `submit`, on
  // the stream the gate routes it to, keeping the stream's order and the legacy barrier.
  // With `callbacks`, the gate's before_submit()/on_submit() run around the driver call and see
  // where it went (OpDesc::submit_stream).
  template <typename Submit>
  CUresult submit_to(Gate& g, std::uint32_t needs, bool callbacks, StreamState* state,
                     const OpDesc& desc, CUstream app_stream, Submit&& submit);
  CUstream route_target(StreamState& state, std::uint32_t sms, const OpDesc& desc,
                        CUcontext& target_ctx);
  CUstream mirror_of(StreamState& state, std::uint32_t sms, const OpDesc& desc);
  CUgreenCtx partition(std::int32_t device, std::uint32_t sms);
  bool order_after(CUstream from, CUstream to, CUevent& edge);
  CUevent green_event(CUcontext green_ctx);
  static CUevent& edge_on(StreamRoute& route, CUstream stream);
  void route_failed(const char* what, CUresult result) noexcept;
  void before_legacy_op(CUcontext ctx);
  void after_legacy_op() noexcept;
  void fold_mirrors(CUcontext ctx, const StreamState* skip);
  void fold_into_legacy(StreamState& state, CUcontext ctx);
  void fold_legacy_mirror(CUcontext ctx);
  CUresult submit_unrouted(StreamState* state, const OpDesc& desc, FunctionRef<CUresult()> submit);
  void unroute(StreamState& state);
  void unroute_all();
  CUresult synchronize_mirrors(CUcontext ctx);
  void forget_mirrors(StreamState& state);
  void destroy_partitions() noexcept;
  std::vector<StreamState*> routed_streams();

  const DriverApi& driver_;
  const EngineOptions options_;
  OpenGate open_gate_;
  std::atomic<Gate*> gate_;
  Stats stats_;
  const std::uint64_t id_;  // tells engines apart in thread-local caches
  std::atomic<int> capture_active_{0};
  std::atomic<std::uint64_t> context_epoch_{0};  // contexts_changed() calls
  // Written on every call when the gate asks for sequence numbers: a line of its own.
  alignas(64) std::atomic<std::uint64_t> seq_{0};
  std::unique_ptr<EngineData>
      data_;  // queues, events, kernels, release thread (core/engine_data.h)
};

// ---- template members
// ----------------------------------------------------------------------------

namespace detail {
// Index of the first CUstream in a parameter list (the stream a driver call is ordered on).
template <typename... P>
constexpr std::size_t stream_index() {
  constexpr bool is_stream[] = {std::is_same_v<P, CUstream>...};
  for (std::size_t i = 0; i < sizeof...(P); ++i) {
    if (is_stream[i]) return i;
  }
  return sizeof...(P);
}

inline CUdeviceptr advance(CUdeviceptr p, std::size_t offset) {
  return p + offset;
}
inline void* advance(void* p, std::size_t offset) {
  return static_cast<char*>(p) + offset;
}
inline const void* advance(const void* p, std::size_t offset) {
  return static_cast<const char*>(p) + offset;
}
}  // namespace detail

template <typename... P, typename... A>
CUresult Engine::enqueue(StreamAbi abi, OpDesc desc, CUresult (*fn)(P...), A... args) {
  constexpr std::size_t kStream = detail::stream_index<P...>();
  static_assert(kStream < sizeof...(P), "enqueue() needs a driver call with a CUstream parameter");
  std::tuple<P...> values(args...);
  auto with_stream = [fn](std::tuple<P...> call_args, CUstream stream) {
    std::get<kStream>(call_args) = stream;
    return std::apply(fn, call_args);
  };
  auto now = [&](CUstream stream) { return with_stream(values, stream); };
  auto held = [&]() -> SubmitFn {
    return [with_stream, values](CUstream stream) { return with_stream(values, stream); };
  };
  return submit(Call{abi, std::get<kStream>(values), desc, nullptr, false, now, held});
}

template <typename Dst, typename Src>
CUresult Engine::copy_1d(StreamAbi abi, CUresult (*fn)(Dst, Src, std::size_t, CUstream), Dst dst,
                         Src src, std::size_t bytes, CUstream stream) {
  auto piece = [&](std::size_t offset, std::size_t length) {
    Dst piece_dst = detail::advance(dst, offset);
    Src piece_src = detail::advance(src, offset);
    OpDesc desc;
    desc.kind = OpKind::copy;
    desc.bytes = length;
    auto now = [&](CUstream s) { return fn(piece_dst, piece_src, length, s); };
    auto held = [&]() -> SubmitFn {
      // Pageable host memory is read (or written) by the driver before the call returns, and the
      // application may reuse it right after: such a copy cannot wait in a queue.
      if (!holdable_pointer(piece_dst) || !holdable_pointer(piece_src)) return {};
      return [fn, piece_dst, piece_src, length](CUstream s) {
        return fn(piece_dst, piece_src, length, s);
      };
    };
    return submit(Call{abi, stream, desc, nullptr, false, now, held});
  };
  const std::uint64_t chunk = gate().copy_chunk_bytes();
  if (chunk == 0 || bytes <= chunk || capture_active()) return piece(0, bytes);
  stats_.count_chunked_copy();
  for (std::size_t offset = 0; offset < bytes; offset += chunk) {
    CUresult result =
        piece(offset, static_cast<std::size_t>(std::min<std::uint64_t>(chunk, bytes - offset)));
    if (result != CUDA_SUCCESS) return result;
  }
  return CUDA_SUCCESS;
}

}  // namespace sluice::shim
