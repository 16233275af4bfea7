#include "sluice/shim/ptx_sources.h"

#include <dirent.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>

#include "sluice/common/env.h"
#include "sluice/ptx/elf.h"

namespace sluice::shim {
namespace {

// Triton: <root>/<hash>/<kernel>.cubin. Inductor: <root>/<device>/<hash>/<kernel>.cubin. One more
// level leaves room for a user's own grouping under SLUICE_PTX_DIRS.
constexpr int kMaxDepth = 3;
// Nothing a compiler keeps comes close; a huge file is not read.
constexpr std::uintmax_t kMaxFileBytes = std::uintmax_t{256} << 20;

std::vector<std::string> split_paths(const std::string& list) {
  std::vector<std::string> paths;
  std::size_t start = 0;
  while (start <= list.size()) {
    std::size_t end = list.find(':', start);
    if (end == std::string::npos) end = list.size();
    if (end > start) paths.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  return paths;
}

// The user name as Python's getpass.getuser() finds it, with the characters Inductor replaces.
std::string user_name() {
  std::string name;
  for (const char* var : {"LOGNAME", "USER", "LNAME", "USERNAME"}) {
    if (auto value = env::get(var); value && !value->empty()) {
      name = *value;
      break;
    }
  }
  if (name.empty()) {
    passwd entry{};
    passwd* found = nullptr;
    char buffer[1024];
    if (getpwuid_r(geteuid(), &entry, buffer, sizeof buffer, &found) == 0 && found != nullptr)
      name = found->pw_name;
  }
  for (char& c : name) {
    if (std::strchr("\\/:*?\"<>|", c) != nullptr) c = '_';
  }
  return name;
}

// Python's tempfile.gettempdir(): the first of TMPDIR, TEMP, TMP that is set, else /tmp.
std::string temp_dir() {
  for (const char* var : {"TMPDIR", "TEMP", "TMP"}) {
    if (auto value = env::get(var); value && !value->empty()) return *value;
  }
  return "/tmp";
}

bool read_file(const std::string& path, std::string& out) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::uintmax_t>(st.st_size) > kMaxFileBytes) {
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return !in.bad();
}

bool same_mtime(const timespec& a, const timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

}  // namespace

std::vector<std::string> ptx_source_roots() {
  if (auto explicit_dirs = env::get("SLUICE_PTX_DIRS")) return split_paths(*explicit_dirs);
  std::vector<std::string> roots;
  if (auto triton = env::get("TRITON_CACHE_DIR"); triton && !triton->empty()) {
    roots.push_back(*triton);
  } else if (auto home = env::get("TRITON_HOME"); home && !home->empty()) {
    roots.push_back(*home + "/.triton/cache");
  } else if (auto user_home = env::get("HOME"); user_home && !user_home->empty()) {
    roots.push_back(*user_home + "/.triton/cache");
  }
  if (auto inductor = env::get("TORCHINDUCTOR_CACHE_DIR"); inductor && !inductor->empty()) {
    roots.push_back(*inductor + "/triton");
  } else if (std::string user = user_name(); !user.empty()) {
    roots.push_back(temp_dir() + "/torchinductor_" + user + "/triton");
  }
  return roots;
}

PtxSources::PtxSources(std::vector<std::string> roots) : fixed_roots_(std::move(roots)) {}

std::size_t PtxSources::directories_listed() const {
  std::lock_guard lock(mu_);
  return listed_;
}

std::string PtxSources::find(std::span<const std::byte> cubin) {
  auto elf = ptx::parse_elf(ptx::Bytes(cubin.data(), cubin.size()));
  if (!elf || elf->machine != ptx::kElfMachineCuda) return {};
  auto kernels = ptx::cubin_kernels(*elf);
  if (!kernels || kernels->empty()) return {};
  const std::vector<std::string> roots = fixed_roots_.empty() ? ptx_source_roots() : fixed_roots_;
  std::lock_guard lock(mu_);
  std::string ptx = lookup(*kernels, cubin);
  if (!ptx.empty()) return ptx;
  refresh(roots);
  return lookup(*kernels, cubin);
}

std::string PtxSources::lookup(const std::vector<std::string>& kernels,
                               std::span<const std::byte> cubin) const {
  std::string file;
  for (const std::string& kernel : kernels) {
    auto it = dirs_by_stem_.find(kernel);
    if (it == dirs_by_stem_.end()) continue;
    for (const std::string& dir : it->second) {
      if (!read_file(dir + "/" + kernel + ".cubin", file) || file.size() != cubin.size() ||
          std::memcmp(file.data(), cubin.data(), cubin.size()) != 0) {
        continue;
      }
      std::string ptx;
      if (read_file(dir + "/" + kernel + ".ptx", ptx) && !ptx.empty()) return ptx;
    }
  }
  return {};
}

void PtxSources::refresh(const std::vector<std::string>& roots) {
  std::set<std::string> seen;
  for (const std::string& root : roots) {
    if (!root.empty() && root.front() == '/') scan(root, 0, seen);
  }
  // Directories that are gone (or no longer under a root) leave the index.
  std::vector<std::string> gone;
  for (const auto& [dir, state] : directories_) {
    if (!seen.contains(dir)) gone.push_back(dir);
  }
  for (const std::string& dir : gone) forget(dir);
}

void PtxSources::scan(const std::string& dir, int depth, std::set<std::string>& seen) {
  if (!seen.insert(dir).second) return;
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return;
  auto known = directories_.find(dir);
  if (known == directories_.end() || !same_mtime(known->second.mtime, st.st_mtim)) {
    forget(dir);
    Directory listing;
    listing.mtime = st.st_mtim;
    if (DIR* handle = opendir(dir.c_str())) {
      ++listed_;
      while (const dirent* entry = readdir(handle)) {
        const std::string name = entry->d_name;
        if (name == "." || name == "..") continue;
        const std::string path = dir + "/" + name;
        struct stat child {};
        if (lstat(path.c_str(), &child) != 0) continue;
        if (S_ISDIR(child.st_mode)) {
          listing.subdirectories.push_back(path);
        } else if (S_ISREG(child.st_mode) && name.size() > 6 && name.ends_with(".cubin")) {
          listing.cubin_stems.push_back(name.substr(0, name.size() - 6));
        }
      }
      closedir(handle);
    }
    for (const std::string& stem : listing.cubin_stems) dirs_by_stem_[stem].insert(dir);
    known = directories_.insert_or_assign(dir, std::move(listing)).first;
  }
  if (depth >= kMaxDepth) return;
  // A copy: scanning a child may insert into directories_, and std::map keeps references valid,
  // but the child list itself must not change under the loop.
  const std::vector<std::string> children = known->second.subdirectories;
  for (const std::string& child : children) scan(child, depth + 1, seen);
}

void PtxSources::forget(const std::string& dir) {
  auto it = directories_.find(dir);
  if (it == directories_.end()) return;
  for (const std::string& stem : it->second.cubin_stems) {
    auto by_stem = dirs_by_stem_.find(stem);
    if (by_stem == dirs_by_stem_.end()) continue;
    by_stem->second.erase(dir);
    if (by_stem->second.empty()) dirs_by_stem_.erase(by_stem);
  }
  directories_.erase(it);
}

}  // namespace sluice::shim
