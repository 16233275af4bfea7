// Typed reads of environment variables. A malformed value is an error that names the variable;
// callers decide whether that is fatal (tools) or a warning followed by the default (the shim).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "sluice/common/result.h"

namespace sluice::env {

// The variable's value, or nullopt when it is unset. An empty value counts as set.
std::optional<std::string> get(const char* name);

// "1/true/yes/on" and "0/false/no/off", case-insensitive. Unset gives `fallback`.
Result<bool> get_bool(const char* name, bool fallback);

// A decimal unsigned integer. Unset gives `fallback`.
Result<std::uint64_t> get_u64(const char* name, std::uint64_t fallback);

}  // namespace sluice::env
