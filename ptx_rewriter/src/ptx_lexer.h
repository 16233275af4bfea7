// Tokenizer for PTX text. Comments are dropped; each token keeps its line. `.section` blocks are
// also reported as source ranges so the parser can keep them verbatim.
#pragma once

#include <string_view>
#include <vector>

#include "sluice/common/result.h"
#include "sluice/ptx/ptx.h"

namespace sluice::ptx::detail {

struct LexedToken {
  Token token;
  std::size_t begin = 0;  // byte offsets of the token in the source
  std::size_t end = 0;
};

Result<std::vector<LexedToken>> lex(std::string_view source);

// Characters that continue a word token: identifiers, opcodes with dots, "::" qualifiers.
bool is_word_char(char c);

}  // namespace sluice::ptx::detail
