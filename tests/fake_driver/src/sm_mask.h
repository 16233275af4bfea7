// A set of SMs of one device, as a fixed bitset (a device has at most kMaxSms SMs). The same
// representation lives in shared memory (engine slots), so it is four plain 64-bit words.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

namespace sluice::fake {

inline constexpr unsigned kMaxSms = 256;

struct SmMask {
  std::array<std::uint64_t, kMaxSms / 64> words{};

  // SMs [first, first + count).
  static SmMask range(unsigned first, unsigned count) {
    SmMask mask;
    for (unsigned sm = first; sm < first + count && sm < kMaxSms; ++sm) mask.set(sm);
    return mask;
  }

  void set(unsigned sm) { words[sm / 64] |= std::uint64_t{1} << (sm % 64); }
  bool test(unsigned sm) const { return (words[sm / 64] >> (sm % 64)) & 1u; }

  unsigned count() const {
    unsigned total = 0;
    for (std::uint64_t word : words) total += static_cast<unsigned>(std::popcount(word));
    return total;
  }
  bool empty() const { return count() == 0; }

  bool overlaps(const SmMask& other) const {
    for (std::size_t i = 0; i < words.size(); ++i) {
      if ((words[i] & other.words[i]) != 0) return true;
    }
    return false;
  }

  SmMask operator|(const SmMask& other) const {
    SmMask out;
    for (std::size_t i = 0; i < words.size(); ++i) out.words[i] = words[i] | other.words[i];
    return out;
  }
  SmMask without(const SmMask& other) const {
    SmMask out;
    for (std::size_t i = 0; i < words.size(); ++i) out.words[i] = words[i] & ~other.words[i];
    return out;
  }
  bool operator==(const SmMask&) const = default;
};

}  // namespace sluice::fake
