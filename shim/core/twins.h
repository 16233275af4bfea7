// The engine's side of kill in the client (sluice/shim/kill.h, docs/architecture.md "Kill in the
// client"): the PTX of loaded modules, their instrumented twins, the kill word of each device and
// the pool of launch records. Private to shim/core.
//
// Thread rules: every member may be called from any thread. One lock (Twins::mu_) guards modules,
// functions and kill words; building a twin happens under it, on the thread of the first long
// launch of one of the module's kernels, with that launch's context current. The record pool has a
// lock of its own (pool_mu_), taken on the submitting thread. mu_ is held while the gate's
// register_kill_word() runs (which must not call into the engine); no engine lock is held here.
// lower_kill_words() takes only lower_mu_ (kill_word() takes it under mu_).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "sluice/shim/driver_api.h"
#include "sluice/shim/embedded_ptx.h"
#include "sluice/shim/engine.h"
#include "sluice/shim/function_ref.h"
#include "sluice/shim/kill.h"
#include "sluice/shim/ptx_sources.h"
#include "sluice/shim/stats.h"

namespace sluice::shim {

class Twins {
 public:
  // What a launch of an instrumented kernel needs: the twin function, where its launch-record
  // parameter goes, and the kill word it checks.
  struct Function {
    CUfunction twin = nullptr;
    std::uint32_t launch_param_offset = 0;
    std::uint32_t twin_param_bytes = 0;
    CUdeviceptr kill_word = 0;
  };

  // The module or library a kernel belongs to.
  struct Owner {
    const void* handle = nullptr;  // CUmodule or CUlibrary
    bool library = false;
  };

  // A launch record in device memory, reused once the event recorded after its last use completed.
  struct Record {
    CUdeviceptr ptr = 0;
    std::uint64_t bytes = 0;
    CUevent done = nullptr;  // an event of `ctx`
    CUcontext ctx = nullptr;  // the context of the streams it serves
  };

  // `objects` lists the files searched for embedded PTX (default: the loaded objects).
  Twins(const DriverApi& driver, KillOptions options, Stats& stats,
        EmbeddedPtx::ObjectLister objects = loaded_object_files);
  Twins(const Twins&) = delete;
  Twins& operator=(const Twins&) = delete;

  const KillOptions& options() const noexcept { return options_; }
  const DriverApi& driver() const noexcept { return driver_; }
  Stats& stats() noexcept { return stats_; }

  // A module or library image was loaded in the current context: keep its PTX for the device's
  // architecture (nothing for cubins or images without usable PTX).
  void module_loaded(const void* owner, const void* image, std::size_t size) noexcept;
  // Unloads the twin of `owner` and forgets its functions (the engine drained held work before).
  void module_unloaded(const void* owner) noexcept;

  // The kill word of `device`; 0 when none was allocated.
  CUdeviceptr kill_word_of(CUdevice device) noexcept;
  // The daemon that raises the kill words is gone: writes 0 to every one of them (stream-ordered,
  // on a stream of its own), so that twins paused on the GPU behind a raised word finish rather
  // than wait for a daemon that may never come back. Any thread.
  void lower_kill_words() noexcept;

  // The process is exiting: background work stops (EmbeddedPtx::stop).
  void process_exiting() noexcept { embedded_.stop(); }

  // Counts a launch of `func` and says whether it is long enough for a twin.
  bool long_enough(CUfunction func, std::uint64_t predicted_ns) noexcept;

  // The twin of `func` (named `name`, of module or library `owner`), built on first use in the
  // current context; nullopt when there is none (not instrumented, no PTX, or a failure, which is
  // logged once per module). `changes` are the function's attribute changes, replayed on the twin.
  // `gate` learns the kill word when it is first allocated. An owner whose image no hooked load
  // handed over gets the PTX embedded in a loaded object for its kernels, if there is one
  // (sluice/shim/embedded_ptx.h); its launches keep the original until those objects are read.
  std::optional<Function> twin_of(CUfunction func, Owner owner, const std::string& name,
                                  const std::vector<Engine::FunctionChange>& changes,
                                  Gate& gate) noexcept;
  // The application changed `func`: the same change goes to its twin, if it has one.
  void function_changed(CUfunction func, Engine::FunctionChange change) noexcept;

  // A zeroed-on-use record of at least `bytes` for work on `stream`; nullptr on failure.
  Record* acquire_record(CUstream stream, std::uint64_t bytes) noexcept;
  // Gives the record back: `in_flight` when its event was recorded after its last use (it is
  // reused once the event completes); otherwise it is reusable at once when `unused`, or dropped.
  void release_record(Record* record, bool in_flight, bool unused) noexcept;

 private:
  struct Module {
    std::string ptx;  // for the device's architecture; empty: none
    enum class State : std::uint8_t { unbuilt, ready, failed } state = State::unbuilt;
    CUmodule twin = nullptr;
    CUdeviceptr kill_word = 0;
    std::vector<TwinKernel> kernels;
  };
  struct Resolved {
    std::optional<Function> function;  // nullopt: use the original
    const void* owner = nullptr;
  };

  bool build(Module& module, const void* owner, Gate& gate);
  // The module entry of an owner met without an image: its PTX from the loaded objects, or none;
  // nullptr while the loaded objects are still being read.
  Module* adopt(Owner owner);
  std::vector<std::string> kernel_names(Owner owner) const;
  bool load_twin(Module& module, const TwinModule& twin, Gate& gate);
  std::optional<TwinModule> instrument_ptx(const std::string& ptx, const std::string& key);
  CUdeviceptr kill_word(Gate& gate);
  CUresult apply(CUfunction twin, Engine::FunctionChange change) const;

  const DriverApi& driver_;
  const KillOptions options_;
  Stats& stats_;
  PtxSources ptx_sources_;  // PTX kept beside bare cubins (its own lock; not under mu_)
  EmbeddedPtx embedded_;    // PTX in the loaded objects' fatbins (guarded by mu_)

  std::mutex mu_;
  std::unordered_map<const void*, Module> modules_;
  std::unordered_map<CUfunction, Resolved> functions_;
  std::unordered_map<CUfunction, std::uint64_t> launches_;
  std::unordered_map<CUdevice, CUdeviceptr> kill_words_;

  // What lower_kill_words() needs of each kill word: its context and a non-blocking stream there
  // (a write on the legacy stream would queue behind the paused twins).
  struct Lowering {
    CUcontext ctx = nullptr;
    CUstream stream = nullptr;
    CUdeviceptr word = 0;
  };
  std::mutex lower_mu_;
  std::vector<Lowering> lowering_;

  std::mutex pool_mu_;
  std::vector<std::unique_ptr<Record>> free_;
  std::vector<std::unique_ptr<Record>> in_flight_;
};

// The parameter buffer and size an `extra` launch argument names (CU_LAUNCH_PARAM_BUFFER_POINTER,
// CU_LAUNCH_PARAM_BUFFER_SIZE). False when one is missing or another key appears (one this build
// does not know how to copy).
bool extra_buffer(void** extra, const void*& buffer, std::size_t& size);

// One launch of a kernel as twin + wait + twin, with copies of its arguments taken at the call and
// room for the launch-record pointer. Movable; run() on the submitting thread.
class TwinLaunch {
 public:
  // nullopt when the arguments cannot be copied (unknown layout, an `extra` buffer larger than the
  // twin's, keys other than the buffer and its size).
  static std::optional<TwinLaunch> make(Twins& twins, const Twins::Function& function,
                                        const OpDesc& desc, const std::vector<std::size_t>* sizes,
                                        void** params, void** extra);

  // Submits the three operations (after zeroing a launch record) on `stream`. Before anything of
  // the twin reached the driver, a failure runs `original` on `stream` instead.
  CUresult run(CUstream stream, FunctionRef<CUresult(CUstream)> original);

 private:
  TwinLaunch(Twins& twins, const Twins::Function& function, const OpDesc& desc)
      : twins_(&twins), function_(function), desc_(desc) {}
  void set_record(CUdeviceptr record);
  CUresult launch_twin(CUstream stream);

  Twins* twins_;
  Twins::Function function_;
  OpDesc desc_;
  std::vector<std::byte> storage_;  // parameter values, or the twin's parameter buffer
  std::vector<std::size_t> offsets_;  // kernelParams form: of each parameter's copy in storage_
  std::vector<void*> params_;         // kernelParams: the copies, then the record's slot
  std::size_t record_offset_ = 0;   // of the record pointer in storage_
  std::size_t buffer_bytes_ = 0;    // `extra` form: the size the driver is told
  bool uses_extra_ = false;
};

}  // namespace sluice::shim
