#include "real_driver.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <sstream>

#include "sluice/common/env.h"

namespace sluice::shim::preload {
namespace {

constexpr const char* kSoname = "libcuda.so.1";

// Where NVIDIA's packages and container toolkits put the driver.
constexpr const char* kDriverDirs[] = {
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/usr/lib/wsl/lib",
    "/run/opengl-driver/lib",
};

struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const FileId&) const = default;
};

bool file_id(const std::string& path, FileId& out) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  out = {st.st_dev, st.st_ino};
  return true;
}

// This library's own file, so that the search never loads the shim as its own driver.
FileId self_id() {
  Dl_info info{};
  FileId id;
  if (dladdr(reinterpret_cast<void*>(&load_real_driver), &info) != 0 && info.dli_fname != nullptr) {
    file_id(info.dli_fname, id);
  }
  return id;
}

std::vector<std::string> search_candidates() {
  std::vector<std::string> out;
  if (auto paths = env::get("LD_LIBRARY_PATH")) {
    std::stringstream list(*paths);
    std::string dir;
    while (std::getline(list, dir, ':')) {
      if (!dir.empty()) out.push_back(dir + "/" + kSoname);
    }
  }
  for (std::string& path : ldconfig_cache_entries("/etc/ld.so.cache", kSoname))
    out.push_back(std::move(path));
  for (const char* dir : kDriverDirs) out.push_back(std::string(dir) + "/" + kSoname);
  return out;
}

}  // namespace

bool read_file(const std::string& path, std::string& out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out.clear();
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n <= 0) {
      ::close(fd);
      return n == 0;
    }
    out.append(buffer, static_cast<std::size_t>(n));
  }
}

std::vector<std::string> ldconfig_cache_entries(const std::string& cache_path,
                                                const std::string& soname) {
  // glibc's cache: "glibc-ld.so.cache" "1.1", nlibs, len_strings, flags, padding, extension offset,
  // three unused words, then nlibs entries {i32 flags; u32 key; u32 value; u32 osversion; u64
  // hwcap} whose key and value are offsets of NUL-terminated strings from the start of that header.
  std::vector<std::string> out;
  std::string data;
  if (!read_file(cache_path, data)) return out;
  static constexpr char kMagic[] = "glibc-ld.so.cache1.1";
  const std::size_t header = data.find(kMagic);
  constexpr std::size_t kHeaderSize = 48;
  constexpr std::size_t kEntrySize = 24;
  if (header == std::string::npos || data.size() < header + kHeaderSize) return out;
  std::uint32_t nlibs = 0;
  std::memcpy(&nlibs, data.data() + header + 20, sizeof nlibs);
  auto string_at = [&](std::uint32_t offset) -> std::string {
    const std::size_t at = header + offset;
    if (at >= data.size()) return {};
    const std::size_t end = data.find('\0', at);
    return data.substr(at, end == std::string::npos ? std::string::npos : end - at);
  };
  for (std::uint32_t i = 0; i < nlibs; ++i) {
    const std::size_t entry = header + kHeaderSize + std::size_t{i} * kEntrySize;
    if (entry + kEntrySize > data.size()) break;
    std::uint32_t key = 0;
    std::uint32_t value = 0;
    std::memcpy(&key, data.data() + entry + 4, sizeof key);
    std::memcpy(&value, data.data() + entry + 8, sizeof value);
    if (string_at(key) == soname) out.push_back(string_at(value));
  }
  return out;
}

LoadedDriver load_real_driver() {
  LoadedDriver result;
  const FileId self = self_id();
  std::vector<std::string> candidates;
  const auto forced = env::get("SLUICE_REAL_LIBCUDA");
  if (forced && !forced->empty()) {
    candidates.push_back(*forced);
  } else {
    candidates = search_candidates();
  }
  std::string tried;
  for (const std::string& path : candidates) {
    FileId id;
    if (!file_id(path, id)) continue;
    if (id == self) continue;  // this shim, reached through a path or a link
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = dlerror();
      tried += "\n  " + path + ": " + (why != nullptr ? why : "dlopen failed");
      continue;
    }
    if (dlsym(handle, "cuInit") == nullptr) {
      tried += "\n  " + path + ": has no cuInit";
      dlclose(handle);
      continue;
    }
    result.handle = handle;
    result.path = path;
    return result;
  }
  if (forced && !forced->empty()) {
    result.problem = "SLUICE_REAL_LIBCUDA=" + *forced + " cannot be loaded" +
                     (tried.empty() ? " (no such file, or it is this shim)" : tried);
  } else {
    result.problem =
        "no CUDA driver (libcuda.so.1) found besides this shim" +
        (tried.empty() ? std::string(" (set SLUICE_REAL_LIBCUDA to its path)") : tried);
  }
  return result;
}

}  // namespace sluice::shim::preload
