// Where the PTX of a module loaded as a bare cubin can be found (docs/architecture.md, "PTX beside
// cubins").
//
// A cubin carries no PTX, so its kernels cannot get kill-instrumented twins by themselves. Some
// compilers keep the PTX they compiled the cubin from on disk, beside it. Triton does, in its cache:
// <root>/<hash>/<kernel>.cubin and <kernel>.ptx (torch.compile's Inductor puts that cache under its
// own directory, <inductor cache>/triton/<device>/<hash>/). A loaded cubin is paired with such a PTX
// only when the cubin file beside it is byte for byte the loaded image, so a stale or foreign file
// never lends its PTX to another module.
//
// Thread rules: find() may be called from any thread; one lock guards the directory index.
#pragma once

#include <cstddef>
#include <ctime>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace sluice::shim {

// The directories searched, from the environment at the time of the call: the colon-separated
// SLUICE_PTX_DIRS when it is set (empty turns pairing off); otherwise Triton's cache
// ($TRITON_CACHE_DIR, else $TRITON_HOME/.triton/cache, else $HOME/.triton/cache) and Inductor's
// ($TORCHINDUCTOR_CACHE_DIR/triton, else <temp dir>/torchinductor_<user>/triton).
std::vector<std::string> ptx_source_roots();

class PtxSources {
 public:
  // `roots`: the directories to search; none given means ptx_source_roots() at each lookup (the
  // application may set TRITON_CACHE_DIR after it started).
  explicit PtxSources(std::vector<std::string> roots = {});

  // The PTX kept beside the cubin file that equals `cubin`, an ELF image; empty when there is none
  // (not an ELF cubin, no such file, or no readable PTX beside it). A miss re-reads the directories
  // that changed since the last look, since the compiler writes its files just before it loads them.
  std::string find(std::span<const std::byte> cubin);

  // Directories the last lookups listed (for tests and stats).
  std::size_t directories_listed() const;

 private:
  struct Directory {
    timespec mtime{};
    std::vector<std::string> subdirectories;
    std::vector<std::string> cubin_stems;  // <stem>.cubin files it holds
  };

  // The PTX beside a <dir>/<kernel>.cubin of the index that equals `cubin`; empty when none.
  std::string lookup(const std::vector<std::string>& kernels, std::span<const std::byte> cubin) const;
  // Re-lists the directories under `roots` whose modification time changed.
  void refresh(const std::vector<std::string>& roots);
  void scan(const std::string& dir, int depth, std::set<std::string>& seen);
  void forget(const std::string& dir);

  std::vector<std::string> fixed_roots_;
  mutable std::mutex mu_;
  std::map<std::string, Directory> directories_;
  std::map<std::string, std::set<std::string>> dirs_by_stem_;  // kernel name -> directories
  std::size_t listed_ = 0;
};

}  // namespace sluice::shim
