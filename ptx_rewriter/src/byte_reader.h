// Bounded little-endian reads from a byte span. Every read names the field and its absolute offset
// in the error, so malformed inputs say what and where.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "sluice/common/result.h"
#include "sluice/ptx/fatbin.h"

namespace sluice::ptx::detail {

class ByteReader {
 public:
  // `base` is the absolute offset of data[0], used only in messages and reported offsets.
  ByteReader(Bytes data, std::uint64_t base) : data_(data), base_(base) {}

  std::uint64_t size() const { return data_.size(); }
  std::uint64_t absolute(std::uint64_t offset) const { return base_ + offset; }

  bool has(std::uint64_t offset, std::uint64_t count) const {
    return offset <= data_.size() && count <= data_.size() - offset;
  }

  template <typename T>
  Result<T> read(std::uint64_t offset, std::string_view field) const {
    static_assert(std::is_integral_v<T>);
    if (!has(offset, sizeof(T))) {
      return make_error("offset {:#x}: {} ({} bytes) runs past the end of the input ({:#x})",
                        absolute(offset), field, sizeof(T), absolute(data_.size()));
    }
    T value{};
    std::memcpy(&value, data_.data() + offset, sizeof(T));  // little-endian hosts only (x86, arm64)
    return value;
  }

  Result<Bytes> slice(std::uint64_t offset, std::uint64_t count, std::string_view field) const {
    if (!has(offset, count)) {
      return make_error("offset {:#x}: {} of {:#x} bytes runs past the end of the input ({:#x})",
                        absolute(offset), field, count, absolute(data_.size()));
    }
    return data_.subspan(offset, count);
  }

 private:
  Bytes data_;
  std::uint64_t base_;
};

}  // namespace sluice::ptx::detail

// Evaluates a Result-returning expression; on error returns its Error from the enclosing function,
// otherwise yields the value.
#define SLUICE_PTX_TRY(var, expr)                                 \
  auto var##_result = (expr);                                     \
  if (!var##_result) return std::move(var##_result).take_error(); \
  auto var = std::move(var##_result).value()

// Evaluates a Status-returning expression; on error returns its Error from the enclosing function.
#define SLUICE_PTX_CHECK(expr)                         \
  do {                                                 \
    if (auto sluice_status_ = (expr); !sluice_status_) \
      return std::move(sluice_status_).take_error();   \
  } while (0)
