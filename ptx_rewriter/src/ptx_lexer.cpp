#include "ptx_lexer.h"

namespace sluice::ptx::detail {
namespace {

bool is_word_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$' || c == '%' ||
         c == '.';
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

constexpr std::string_view kTwoCharPuncts[] = {"<<", ">>", "==", "!=", "<=", ">=", "&&", "||"};

}  // namespace

bool is_word_char(char c) {
  return is_word_start(c) || is_digit(c);
}

Result<std::vector<LexedToken>> lex(std::string_view source) {
  std::vector<LexedToken> tokens;
  int line = 1;
  std::size_t i = 0;
  const std::size_t n = source.size();
  auto push = [&](TokenKind kind, std::size_t begin, std::size_t end) {
    tokens.push_back(
        {Token{kind, std::string(source.substr(begin, end - begin)), line}, begin, end});
  };
  while (i < n) {
    const char c = source[i];
    if (c == '\n') {
      ++line;
      ++i;
    } else if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
      ++i;
    } else if (c == '/' && i + 1 < n && source[i + 1] == '/') {
      while (i < n && source[i] != '\n') ++i;
    } else if (c == '/' && i + 1 < n && source[i + 1] == '*') {
      const int start_line = line;
      i += 2;
      while (i + 1 < n && !(source[i] == '*' && source[i + 1] == '/')) {
        if (source[i] == '\n') ++line;
        ++i;
      }
      if (i + 1 >= n) return make_error("line {}: unterminated /* comment", start_line);
      i += 2;
    } else if (c == '"') {
      const std::size_t begin = i++;
      while (i < n && source[i] != '"' && source[i] != '\n') i += source[i] == '\\' ? 2 : 1;
      if (i >= n || source[i] != '"') return make_error("line {}: unterminated string", line);
      push(TokenKind::string, begin, ++i);
    } else if (is_word_start(c)) {
      const std::size_t begin = i++;
      // "::" continues a word: .shared::cluster, mbarrier::complete_tx::bytes.
      while (i < n &&
             (is_word_char(source[i]) || (source[i] == ':' && i + 1 < n && source[i + 1] == ':' &&
                                          i + 2 < n && is_word_char(source[i + 2])))) {
        i += source[i] == ':' ? 2 : 1;
      }
      push(TokenKind::word, begin, i);
    } else if (is_digit(c)) {
      // 12, 0x1F, 0f3F800000, 0d..., 1.5, 1U: one run of alphanumerics and dots.
      const std::size_t begin = i++;
      while (i < n && (is_word_char(source[i]) && source[i] != '%' && source[i] != '$')) ++i;
      push(TokenKind::number, begin, i);
    } else {
      const std::string_view two = source.substr(i, 2);
      std::size_t length = 1;
      for (std::string_view punct : kTwoCharPuncts) {
        if (two == punct) length = 2;
      }
      if (std::string_view("{}()[],;:@!+-*/<>=|&^~?").find(c) == std::string_view::npos) {
        return make_error("line {}: unexpected character '{}' ({:#04x})", line,
                          c >= 0x20 && c < 0x7f ? c : '?', static_cast<unsigned char>(c));
      }
      push(TokenKind::punct, i, i + length);
      i += length;
    }
  }
  return tokens;
}

}  // namespace sluice::ptx::detail
