#include "sluice/shim/stats.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

namespace sluice::shim {
namespace {
std::atomic<std::uint64_t> g_next_stats_id{1};

template <typename Array>
std::uint64_t sum(const Array& values) {
  std::uint64_t total = 0;
  for (std::uint64_t v : values) total += v;
  return total;
}
}  // namespace

std::uint64_t StatsSnapshot::total(
    const std::array<std::uint64_t, kOpKinds>& per_kind) const noexcept {
  return sum(per_kind);
}

std::uint64_t StatsSnapshot::of(OpKind kind) const noexcept {
  const auto k = static_cast<std::size_t>(kind);
  return inline_ops[k] + held_ops[k];
}

Stats::Stats() : id_(g_next_stats_id.fetch_add(1, std::memory_order_relaxed)) {}

Stats::Shard& Stats::shard_slow() noexcept {
  try {
    std::lock_guard lock(mu_);
    Shard*& mine = shard_of_[std::this_thread::get_id()];
    if (mine == nullptr) mine = &shards_.emplace_back();
    detail::t_shard_cache = {id_, mine};
    return *mine;
  } catch (...) {
    return shared_shard_;  // counts stay close; nothing crashes
  }
}

bool Stats::note_unknown_proc(std::string_view name) {
  proc_unknown_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  return unknown_names_.emplace(name).second;
}

std::set<std::string> Stats::unknown_proc_names() const {
  std::lock_guard lock(mu_);
  return {unknown_names_.begin(), unknown_names_.end()};
}

StatsSnapshot Stats::snapshot() const {
  StatsSnapshot s;
  auto add = [&s](const Shard& shard) {
    for (std::size_t k = 0; k < kOpKinds; ++k) {
      s.inline_ops[k] += shard.inline_ops[k].load(std::memory_order_relaxed);
      s.held_ops[k] += shard.held_ops[k].load(std::memory_order_relaxed);
      s.failed_ops[k] += shard.failed_ops[k].load(std::memory_order_relaxed);
    }
  };
  {
    std::lock_guard lock(mu_);
    for (const Shard& shard : shards_) add(shard);
  }
  add(shared_shard_);
  s.waited_ops = waited_ops_.load(std::memory_order_relaxed);
  s.forced_releases = forced_releases_.load(std::memory_order_relaxed);
  s.sync_waits = sync_waits_.load(std::memory_order_relaxed);
  s.function_changes = function_changes_.load(std::memory_order_relaxed);
  s.function_change_waits = function_change_waits_.load(std::memory_order_relaxed);
  s.deferred_errors = deferred_errors_.load(std::memory_order_relaxed);
  s.chunked_copies = chunked_copies_.load(std::memory_order_relaxed);
  s.routed_launches = routed_launches_.load(std::memory_order_relaxed);
  s.routed_ops = routed_ops_.load(std::memory_order_relaxed);
  s.route_switches = route_switches_.load(std::memory_order_relaxed);
  s.route_edges = route_edges_.load(std::memory_order_relaxed);
  s.route_failures = route_failures_.load(std::memory_order_relaxed);
  s.partitions = partitions_.load(std::memory_order_relaxed);
  s.mirror_streams = mirror_streams_.load(std::memory_order_relaxed);
  s.priority_overrides = priority_overrides_.load(std::memory_order_relaxed);
  s.module_loads = module_loads_.load(std::memory_order_relaxed);
  s.uncaptured_kernels = uncaptured_kernels_.load(std::memory_order_relaxed);
  s.twins_built = twins_built_.load(std::memory_order_relaxed);
  s.twins_cached = twins_cached_.load(std::memory_order_relaxed);
  s.twin_launches = twin_launches_.load(std::memory_order_relaxed);
  s.twin_failures = twin_failures_.load(std::memory_order_relaxed);
  s.kill_word_registered = kill_words_.load(std::memory_order_relaxed);
  s.ptx_paired = ptx_paired_.load(std::memory_order_relaxed);
  s.embedded_ptx = embedded_ptx_.load(std::memory_order_relaxed);
  s.be_kernels = be_kernels_.load(std::memory_order_relaxed);
  s.be_kernel_ns = be_kernel_ns_.load(std::memory_order_relaxed);
  s.twin_kernel_ns = twin_kernel_ns_.load(std::memory_order_relaxed);
  s.proc_queries = proc_queries_.load(std::memory_order_relaxed);
  s.proc_unknown = proc_unknown_.load(std::memory_order_relaxed);
  s.export_tables = export_tables_.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < kSymCount; ++i) {
    s.unmanaged[i] = unmanaged_[i].load(std::memory_order_relaxed);
    s.unmanaged_total += s.unmanaged[i];
  }
  return s;
}

std::string Stats::to_json(std::string_view gate) const {
  const StatsSnapshot s = snapshot();
  nlohmann::json ops = nlohmann::json::object();
  for (std::size_t k = 0; k < kOpKinds; ++k) {
    ops[op_kind_name(static_cast<OpKind>(k))] = {
        {"inline", s.inline_ops[k]}, {"held", s.held_ops[k]}, {"failed", s.failed_ops[k]}};
  }
  nlohmann::json unmanaged = nlohmann::json::object();
  for (std::size_t i = 0; i < kSymCount; ++i) {
    if (s.unmanaged[i] != 0) unmanaged[kSymNames[i]] = s.unmanaged[i];
  }
  nlohmann::json out = {
      {"pid", static_cast<long>(getpid())},
      {"gate", std::string(gate)},
      {"launches", s.of(OpKind::kernel)},
      {"copies", s.of(OpKind::copy)},
      {"memsets", s.of(OpKind::memset)},
      {"inline", s.total(s.inline_ops)},
      {"held", s.total(s.held_ops)},
      {"waited", s.waited_ops},
      {"failed", s.total(s.failed_ops)},
      {"ops", ops},
      {"module_loads", s.module_loads},
      {"uncaptured_kernels", s.uncaptured_kernels},
      {"proc_queries", s.proc_queries},
      {"proc_unknown", s.proc_unknown},
      {"proc_unknown_names", unknown_proc_names()},
      {"export_table_queries", s.export_tables},
      {"unmanaged_total", s.unmanaged_total},
      {"unmanaged", unmanaged},
      {"deferred_errors", s.deferred_errors},
      {"forced_releases", s.forced_releases},
      {"sync_waits", s.sync_waits},
      {"function_changes", s.function_changes},
      {"function_change_waits", s.function_change_waits},
      {"chunked_copies", s.chunked_copies},
      {"routing",
       {{"routed_launches", s.routed_launches},
        {"routed_ops", s.routed_ops},
        {"route_switches", s.route_switches},
        {"route_edges", s.route_edges},
        {"route_failures", s.route_failures},
        {"partitions", s.partitions},
        {"mirror_streams", s.mirror_streams}}},
      {"priority_overrides", s.priority_overrides},
      {"kill",
       {{"twins_built", s.twins_built},
        {"twins_cached", s.twins_cached},
        {"twin_launches", s.twin_launches},
        {"twin_failures", s.twin_failures},
        {"kill_word_registered", s.kill_word_registered},
        {"ptx_paired", s.ptx_paired},
        {"embedded_ptx", s.embedded_ptx},
        {"be_kernels", s.be_kernels},
        {"be_kernel_ns", s.be_kernel_ns},
        {"twin_kernel_ns", s.twin_kernel_ns}}},
  };
  return out.dump(2) + "\n";
}

}  // namespace sluice::shim
