#include "sluice/common/env.h"

#include <strings.h>

#include <charconv>
#include <cstdlib>

namespace sluice::env {

std::optional<std::string> get(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

Result<bool> get_bool(const char* name, bool fallback) {
  auto value = get(name);
  if (!value) return fallback;
  for (const char* yes : {"1", "true", "yes", "on"}) {
    if (strcasecmp(value->c_str(), yes) == 0) return true;
  }
  for (const char* no : {"0", "false", "no", "off"}) {
    if (strcasecmp(value->c_str(), no) == 0) return false;
  }
  return make_error("{}='{}': expected one of 1/0, true/false, yes/no, on/off", name, *value);
}

Result<std::uint64_t> get_u64(const char* name, std::uint64_t fallback) {
  auto value = get(name);
  if (!value) return fallback;
  std::uint64_t parsed = 0;
  const char* begin = value->data();
  const char* end = begin + value->size();
  auto [ptr, ec] = std::from_chars(begin, end, parsed);
  if (ec != std::errc() || ptr != end || value->empty()) {
    return make_error("{}='{}': expected a non-negative integer", name, *value);
  }
  return parsed;
}

}  // namespace sluice::env
