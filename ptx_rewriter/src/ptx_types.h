// Facts about PTX type and state-space names shared by the parser, printer and analysis.
#pragma once

#include <cstdint>
#include <string_view>

namespace sluice::ptx::detail {

// Bytes of a fundamental type (".u64" -> 8, ".f16x2" -> 4), 0 when `type` is not one.
std::uint32_t type_size(std::string_view type);

// Types a variable can have: the fundamental ones and the opaque .texref/.samplerref/.surfref.
bool is_data_type(std::string_view type);

bool is_state_space(std::string_view word);  // .global, .shared, .const, .local, .param, ...

}  // namespace sluice::ptx::detail
