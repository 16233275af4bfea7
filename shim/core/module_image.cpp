#include "sluice/shim/module_image.h"

#include <algorithm>
#include <cstring>

#include "sluice/common/hash.h"

namespace sluice::shim {
namespace {

constexpr std::uint32_t kFatbinMagic = 0xBA55ED50u;
// The magics as bytes in memory (little-endian). None contains a zero byte, so comparing byte by
// byte never reads past the end of a short text image.
constexpr unsigned char kFatbinBytes[4] = {0x50, 0xED, 0x55, 0xBA};
constexpr unsigned char kWrapperBytes[4] = {0xB1, 0x43, 0x62, 0x46};
constexpr unsigned char kElfBytes[4] = {0x7F, 'E', 'L', 'F'};
// Nothing real comes close; a corrupt header must not make us hash gigabytes of memory.
constexpr std::uint64_t kMaxImageBytes = std::uint64_t{4} << 30;

bool starts_with(const unsigned char* bytes, const unsigned char (&magic)[4]) {
  for (std::size_t i = 0; i < 4; ++i) {
    if (bytes[i] != magic[i]) return false;
  }
  return true;
}

template <typename T>
T read(const unsigned char* bytes, std::size_t offset) {
  T value;
  std::memcpy(&value, bytes + offset, sizeof value);
  return value;
}

// An ELF64 file ends at the furthest of its header tables and section contents.
std::size_t elf_size(const unsigned char* elf) {
  constexpr unsigned char kElfClass64 = 2;
  if (elf[4] != kElfClass64) return 0;
  const auto phoff = read<std::uint64_t>(elf, 0x20);
  const auto shoff = read<std::uint64_t>(elf, 0x28);
  const auto phentsize = read<std::uint16_t>(elf, 0x36);
  const auto phnum = read<std::uint16_t>(elf, 0x38);
  const auto shentsize = read<std::uint16_t>(elf, 0x3A);
  const auto shnum = read<std::uint16_t>(elf, 0x3C);
  if (phoff > kMaxImageBytes || shoff > kMaxImageBytes) return 0;
  std::uint64_t end = 64;  // the ELF header
  end = std::max<std::uint64_t>(end, phoff + std::uint64_t{phentsize} * phnum);
  end = std::max<std::uint64_t>(end, shoff + std::uint64_t{shentsize} * shnum);
  constexpr std::uint32_t kNoBits = 8;  // SHT_NOBITS occupies no file space
  for (std::uint16_t i = 0; i < shnum && shentsize >= 0x28; ++i) {
    const unsigned char* section = elf + shoff + std::size_t{i} * shentsize;
    if (read<std::uint32_t>(section, 0x04) == kNoBits) continue;
    const auto offset = read<std::uint64_t>(section, 0x18);
    const auto size = read<std::uint64_t>(section, 0x20);
    if (offset > kMaxImageBytes || size > kMaxImageBytes) return 0;
    end = std::max(end, offset + size);
  }
  return end > kMaxImageBytes ? 0 : static_cast<std::size_t>(end);
}

std::size_t fatbin_size(const unsigned char* fatbin) {
  const auto header_size = read<std::uint16_t>(fatbin, 6);
  const auto body_size = read<std::uint64_t>(fatbin, 8);
  if (body_size > kMaxImageBytes) return 0;
  return static_cast<std::size_t>(header_size + body_size);
}

}  // namespace

ImageView image_view(const void* image) noexcept {
  if (image == nullptr) return {};
  const auto* bytes = static_cast<const unsigned char*>(image);
  if (starts_with(bytes, kWrapperBytes)) {
    // struct { int magic; int version; const unsigned long long* data; void* filename_or_fatbins; }
    const auto* data = read<const unsigned char*>(bytes, 8);
    if (data == nullptr || read<std::uint32_t>(data, 0) != kFatbinMagic) return {};
    return {data, fatbin_size(data)};
  }
  if (starts_with(bytes, kFatbinBytes)) return {image, fatbin_size(bytes)};
  if (starts_with(bytes, kElfBytes)) return {image, elf_size(bytes)};
  return {image, std::strlen(static_cast<const char*>(image))};
}

std::uint64_t image_hash(ImageView view) noexcept {
  if (view.data == nullptr || view.size == 0) return 0;
  return fnv1a(view.data, view.size);
}

}  // namespace sluice::shim
