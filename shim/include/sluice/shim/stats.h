// Counters of everything the shim saw and did, reported at exit (SLUICE_STATS_FILE) and to sluiced.
//
// The per-operation counters sit on the launch fast path, so each thread counts into a shard of its
// own (one cache line per kind set, written only by that thread) and readers add the shards up.
// Rare events (module loads, proc queries, unmanaged calls, forced releases) are plain shared
// atomics. Every counter is exact; a snapshot is taken without stopping the world.
//
// Thread rules: every member may be called from any thread. A shard lives as long as its Stats.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "sluice/shim/driver_api.h"
#include "sluice/shim/gate.h"

namespace sluice::shim {

namespace detail {
// The calling thread's shard of the Stats it used last (keyed by Stats id, never by address).
struct ShardCache {
  std::uint64_t owner = 0;
  void* shard = nullptr;
};
// Initial-exec TLS: counted on the launch path of a preloaded library, where the general model
// would call __tls_get_addr.
__attribute__((tls_model("initial-exec"))) inline thread_local ShardCache t_shard_cache;
}  // namespace detail

inline constexpr std::size_t kOpKinds = static_cast<std::size_t>(OpKind::kCount);

// Totals at one moment, in plain integers.
struct StatsSnapshot {
  std::array<std::uint64_t, kOpKinds> inline_ops{};  // submitted on the caller's thread
  std::array<std::uint64_t, kOpKinds> held_ops{};    // queued, submitted later
  std::array<std::uint64_t, kOpKinds> failed_ops{};  // the driver refused the submission
  std::uint64_t waited_ops = 0;  // not queueable: the caller waited for admission
  std::uint64_t forced_releases =
      0;                         // held past the hold limit and released regardless of the gate
  std::uint64_t sync_waits = 0;  // sync points that had to wait for held work
  std::uint64_t function_changes = 0;  // attribute and configuration changes of kernels
  std::uint64_t function_change_waits = 0;  // of which waited for held launches of the kernel
  std::uint64_t deferred_errors = 0;  // held operations the driver refused (reported at a sync)
  std::uint64_t chunked_copies = 0;   // copies split into gated chunks
  std::uint64_t routed_launches = 0;  // kernels submitted to a mirror stream in an SM partition
  std::uint64_t routed_ops = 0;       // every operation submitted to a mirror (kernels included)
  std::uint64_t route_switches = 0;   // a stream's work moved between its stream and a mirror
  std::uint64_t route_edges = 0;      // ordering events recorded for routing (switches, legacy)
  std::uint64_t route_failures = 0;   // partitions or mirrors that could not be made (full GPU)
  std::uint64_t partitions = 0;       // green contexts created
  std::uint64_t mirror_streams = 0;   // mirror streams created
  std::uint64_t priority_overrides = 0;  // streams created with another priority than asked
  std::uint64_t module_loads = 0;     // cuModuleLoad*, cuLibraryLoad*
  std::uint64_t uncaptured_kernels = 0;  // kernels whose module image no hooked load handed over
  // Kill in the client (SLUICE_KILL=1; docs/architecture.md "Kill in the client").
  std::uint64_t twins_built = 0;       // twin modules instrumented in this process
  std::uint64_t twins_cached = 0;      // twin modules read from the on-disk cache
  std::uint64_t twin_launches = 0;     // launches replaced by twin + wait + twin
  std::uint64_t twin_failures = 0;     // twins that could not be made or launched (original used)
  std::uint64_t kill_word_registered = 0;  // kill words allocated and handed to the gate
  std::uint64_t ptx_paired = 0;        // cubin modules whose PTX was found beside them on disk
  std::uint64_t embedded_ptx = 0;      // modules met without an image, given a loaded object's PTX
  // Coverage: best-effort launches that kill considered, and the gate's predicted time of all of
  // them and of those that went out as twins (0 ns where the gate predicts nothing).
  std::uint64_t be_kernels = 0;
  std::uint64_t be_kernel_ns = 0;
  std::uint64_t twin_kernel_ns = 0;
  std::uint64_t proc_queries = 0;     // cuGetProcAddress calls
  std::uint64_t proc_unknown = 0;     // of which for names the shim's table lacks (forwarded)
  std::uint64_t export_tables = 0;    // cuGetExportTable calls (forwarded)
  std::uint64_t unmanaged_total = 0;  // calls of stream-ordered entry points sluice does not queue
  std::array<std::uint64_t, kSymCount> unmanaged{};

  std::uint64_t total(const std::array<std::uint64_t, kOpKinds>& per_kind) const noexcept;
  std::uint64_t of(OpKind kind) const noexcept;  // inline + held + waited ops of one kind
};

struct Stats {  // a struct: gate_factory.h declares it so
 public:
  Stats();
  Stats(const Stats&) = delete;
  Stats& operator=(const Stats&) = delete;

  void count_inline(OpKind kind) noexcept { bump(shard().inline_ops, kind); }
  void count_held(OpKind kind) noexcept { bump(shard().held_ops, kind); }
  void count_failed(OpKind kind) noexcept { bump(shard().failed_ops, kind); }
  void count_waited() noexcept { waited_ops_.fetch_add(1, std::memory_order_relaxed); }
  void count_forced_release() noexcept { forced_releases_.fetch_add(1, std::memory_order_relaxed); }
  void count_sync_wait() noexcept { sync_waits_.fetch_add(1, std::memory_order_relaxed); }
  void count_function_change(bool waited) noexcept {
    function_changes_.fetch_add(1, std::memory_order_relaxed);
    if (waited) function_change_waits_.fetch_add(1, std::memory_order_relaxed);
  }
  void count_deferred_error() noexcept { deferred_errors_.fetch_add(1, std::memory_order_relaxed); }
  void count_chunked_copy() noexcept { chunked_copies_.fetch_add(1, std::memory_order_relaxed); }
  // Routing and priorities: off the inline fast path (only routed work and stream creation).
  void count_routed(OpKind kind) noexcept {
    routed_ops_.fetch_add(1, std::memory_order_relaxed);
    if (kind == OpKind::kernel) routed_launches_.fetch_add(1, std::memory_order_relaxed);
  }
  void count_route_switch() noexcept { route_switches_.fetch_add(1, std::memory_order_relaxed); }
  void count_route_edge() noexcept { route_edges_.fetch_add(1, std::memory_order_relaxed); }
  void count_route_failure() noexcept { route_failures_.fetch_add(1, std::memory_order_relaxed); }
  void count_partition() noexcept { partitions_.fetch_add(1, std::memory_order_relaxed); }
  void count_mirror_stream() noexcept { mirror_streams_.fetch_add(1, std::memory_order_relaxed); }
  void count_priority_override() noexcept {
    priority_overrides_.fetch_add(1, std::memory_order_relaxed);
  }
  void count_module_load() noexcept { module_loads_.fetch_add(1, std::memory_order_relaxed); }
  void count_uncaptured_kernel() noexcept {
    uncaptured_kernels_.fetch_add(1, std::memory_order_relaxed);
  }
  // Kill in the client: off the fast path (only with SLUICE_KILL=1).
  void count_twin_built(bool from_cache) noexcept {
    (from_cache ? twins_cached_ : twins_built_).fetch_add(1, std::memory_order_relaxed);
  }
  void count_twin_launch() noexcept { twin_launches_.fetch_add(1, std::memory_order_relaxed); }
  void count_twin_failure() noexcept { twin_failures_.fetch_add(1, std::memory_order_relaxed); }
  void count_kill_word() noexcept { kill_words_.fetch_add(1, std::memory_order_relaxed); }
  void count_ptx_paired() noexcept { ptx_paired_.fetch_add(1, std::memory_order_relaxed); }
  void count_embedded_ptx() noexcept { embedded_ptx_.fetch_add(1, std::memory_order_relaxed); }
  void count_be_kernel(std::uint64_t predicted_ns, bool twin) noexcept {
    be_kernels_.fetch_add(1, std::memory_order_relaxed);
    be_kernel_ns_.fetch_add(predicted_ns, std::memory_order_relaxed);
    if (twin) twin_kernel_ns_.fetch_add(predicted_ns, std::memory_order_relaxed);
  }
  void count_proc_query() noexcept { proc_queries_.fetch_add(1, std::memory_order_relaxed); }
  void count_export_table() noexcept { export_tables_.fetch_add(1, std::memory_order_relaxed); }
  void count_unmanaged(Sym sym) noexcept {
    unmanaged_[static_cast<std::size_t>(sym)].fetch_add(1, std::memory_order_relaxed);
  }
  // Counts a cuGetProcAddress answer the shim's table lacked. Returns true the first time `name`
  // is seen (so the caller logs it once).
  bool note_unknown_proc(std::string_view name);

  StatsSnapshot snapshot() const;
  std::set<std::string> unknown_proc_names() const;

  // One JSON object with every counter; `gate` names the gate in force.
  std::string to_json(std::string_view gate) const;

 private:
  using Counter = std::atomic<std::uint64_t>;
  struct alignas(64) Shard {
    std::array<Counter, kOpKinds> inline_ops{};
    std::array<Counter, kOpKinds> held_ops{};
    std::array<Counter, kOpKinds> failed_ops{};
  };

  // Only the owning thread writes a shard, so a plain load and store count exactly without a
  // locked instruction.
  static void bump(std::array<Counter, kOpKinds>& counters, OpKind kind) noexcept {
    Counter& c = counters[static_cast<std::size_t>(kind)];
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  Shard& shard() noexcept {
    if (detail::t_shard_cache.owner == id_)
      return *static_cast<Shard*>(detail::t_shard_cache.shard);
    return shard_slow();
  }
  Shard& shard_slow() noexcept;

  const std::uint64_t id_;  // distinguishes Stats objects in the per-thread shard cache
  mutable std::mutex mu_;   // guards shards_, shard_of_, unknown_names_
  std::deque<Shard> shards_;
  std::unordered_map<std::thread::id, Shard*> shard_of_;
  std::set<std::string, std::less<>> unknown_names_;
  Shard shared_shard_;  // used by threads whose own shard could not be allocated

  Counter waited_ops_{0};
  Counter forced_releases_{0};
  Counter sync_waits_{0};
  Counter function_changes_{0};
  Counter function_change_waits_{0};
  Counter deferred_errors_{0};
  Counter chunked_copies_{0};
  Counter routed_launches_{0};
  Counter routed_ops_{0};
  Counter route_switches_{0};
  Counter route_edges_{0};
  Counter route_failures_{0};
  Counter partitions_{0};
  Counter mirror_streams_{0};
  Counter priority_overrides_{0};
  Counter module_loads_{0};
  Counter uncaptured_kernels_{0};
  Counter twins_built_{0};
  Counter twins_cached_{0};
  Counter twin_launches_{0};
  Counter twin_failures_{0};
  Counter kill_words_{0};
  Counter ptx_paired_{0};
  Counter embedded_ptx_{0};
  Counter be_kernels_{0};
  Counter be_kernel_ns_{0};
  Counter twin_kernel_ns_{0};
  Counter proc_queries_{0};
  Counter proc_unknown_{0};
  Counter export_tables_{0};
  std::array<Counter, kSymCount> unmanaged_{};
};

}  // namespace sluice::shim
