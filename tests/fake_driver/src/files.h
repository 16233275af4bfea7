// Reading small files (module images, /proc entries) without iostreams.
#pragma once

#include <string>

namespace sluice::fake {

// Reads the whole file at `path` into `out`; false when it cannot be opened or read.
bool read_whole_file(const std::string& path, std::string& out);

}  // namespace sluice::fake
