// FNV-1a 64-bit: stable kernel and module identities that both the shim and sluiced compute.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sluice {

inline constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ull;

inline std::uint64_t fnv1a(const void* data, std::size_t size, std::uint64_t seed = kFnvOffset) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  std::uint64_t hash = seed;
  for (std::size_t i = 0; i < size; ++i) {
    hash ^= bytes[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

constexpr std::uint64_t fnv1a(std::string_view text, std::uint64_t seed = kFnvOffset) {
  std::uint64_t hash = seed;
  for (char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

}  // namespace sluice
