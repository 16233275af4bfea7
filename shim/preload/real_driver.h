// Finding and loading the real CUDA driver by absolute path.
//
// SLUICE_REAL_LIBCUDA names it outright. Otherwise the candidates are searched the way the dynamic
// loader would find libcuda.so.1 (LD_LIBRARY_PATH, the ldconfig cache), then the usual driver
// locations. A candidate that is this very library (same device and inode) is skipped. The driver
// is loaded RTLD_NOW | RTLD_LOCAL, so its symbols never shadow the shim's.
#pragma once

#include <string>
#include <vector>

namespace sluice::shim::preload {

struct LoadedDriver {
  void* handle = nullptr;
  std::string path;
  std::string problem;  // why nothing could be loaded (when handle is null)
};

LoadedDriver load_real_driver();

// The whole content of a file; false when it cannot be read.
bool read_file(const std::string& path, std::string& out);

// Paths of libcuda.so.1 listed in an ld.so.cache file (new format), in cache order.
std::vector<std::string> ldconfig_cache_entries(const std::string& cache_path,
                                                const std::string& soname);

}  // namespace sluice::shim::preload
