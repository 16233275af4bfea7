// Where a module image passed to cuModuleLoadData / cuModuleLoadFatBinary / cuLibraryLoadData
// ends. The driver takes these images without a size: an ELF cubin, a fatbin (magic 0xBA55ED50),
// the wrapper nvcc emits around a fatbin (magic 0x466243B1), or NUL-terminated text (PTX, or the
// fake driver's module format).
#pragma once

#include <cstddef>
#include <cstdint>

namespace sluice::shim {

struct ImageView {
  const void* data = nullptr;  // the image proper (a wrapper is followed to its fatbin)
  std::size_t size = 0;        // 0 when the image is null or malformed
};

ImageView image_view(const void* image) noexcept;

// Stable identity of a module image: fnv1a of its bytes (0 for an empty view).
std::uint64_t image_hash(ImageView view) noexcept;

}  // namespace sluice::shim
