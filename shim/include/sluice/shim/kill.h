// Kill in the client (docs/architecture.md, "Kill in the client"): with SLUICE_KILL=1 the engine
// launches long best-effort kernels whose module has PTX as their kill-instrumented twin
// (ptx_rewriter), twice, with a stream memory wait on the client's kill word between the two:
//
//   twin(args..., record)                      blocks that see the kill word raised skip
//   cuStreamWaitValue32(kill_word == 0)        the stream pauses on the GPU while sluiced kills
//   twin(args..., record)                      runs exactly the blocks that were skipped
//
// This header holds what can be tested without a driver: the options and the on-disk cache of twin
// modules. The engine's side lives in shim/core/kill.cpp.
//
// Thread rules: pure functions; the cache tolerates concurrent writers (each writes a file of its
// own and renames it into place).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::shim {

struct KillOptions {
  bool enabled = false;  // SLUICE_KILL=1
  // Launches predicted to take at least this long use the twin (SLUICE_KILL_MIN_US). When the gate
  // has no prediction (no daemon), a kernel uses its twin from its kUnpredictedLaunches-th launch
  // on, unless min_ns is 0 (every launch).
  std::uint64_t min_ns = 500'000;
  std::string cache_dir;  // where twin modules are kept; empty: no on-disk cache
};

// Launches of one kernel before it counts as long when the gate predicts nothing.
inline constexpr std::uint64_t kUnpredictedLaunches = 8;

// Reads SLUICE_KILL and SLUICE_KILL_MIN_US; the cache directory is $XDG_CACHE_HOME/sluice/twins
// or ~/.cache/sluice/twins. Malformed values are warned about (naming the variable) and ignored.
KillOptions kill_options_from_environment();

// One instrumented entry of a twin module.
struct TwinKernel {
  std::string name;
  std::uint32_t launch_param_offset = 0;  // of the launch-record pointer in the twin's buffer
  std::uint32_t twin_param_bytes = 0;     // size of the twin's parameter buffer
};

// A twin module as cached: the rewriter's cache key, its instrumented entries and its PTX.
struct TwinModule {
  std::string key;
  std::vector<TwinKernel> kernels;
  std::string ptx;
};

// The file text of a cache entry and back. parse_twin() answers nullopt for anything that is not
// a complete entry for `key` (a truncated, corrupt or foreign file).
std::string serialize_twin(const TwinModule& twin);
std::optional<TwinModule> parse_twin(std::string_view text, std::string_view key);

// The cache entry of `key` in `dir`, when present and intact.
std::optional<TwinModule> load_cached_twin(const std::string& dir, const std::string& key);
// Writes the entry atomically (a temporary file renamed into place), creating `dir` (and its
// parent) with mode 0700. Returns false on any failure (the twin is then rebuilt next time).
bool store_cached_twin(const std::string& dir, const TwinModule& twin);
// The file of `key` in `dir` (the key with characters other than [A-Za-z0-9._-] replaced).
std::string twin_cache_path(const std::string& dir, std::string_view key);

}  // namespace sluice::shim
