// A read-only memory mapping of a whole file: the toolkit's libraries are hundreds of megabytes,
// and the readers only touch the parts they need.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "sluice/common/result.h"
#include "sluice/ptx/fatbin.h"

namespace sluice::ptx {

class MappedFile {
 public:
  // Maps `path`; the error names the file and the system's reason.
  static Result<MappedFile> open(const std::string& path);

  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  Bytes bytes() const { return Bytes(data_, size_); }
  std::string_view text() const { return {reinterpret_cast<const char*>(data_), size_}; }

 private:
  MappedFile(const std::byte* data, std::size_t size) : data_(data), size_(size) {}

  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace sluice::ptx
