// Recursive-descent parser for the PTX subset described in ptx.h.
#include <algorithm>
#include <charconv>
#include <set>

#include "byte_reader.h"
#include "ptx_lexer.h"
#include "ptx_types.h"
#include "sluice/ptx/ptx.h"

namespace sluice::ptx {
namespace {

using detail::LexedToken;

bool is_directive(const Token& token) {
  return token.kind == TokenKind::word && token.text.starts_with('.');
}

bool is_plain_word(const Token& token) {
  return token.kind == TokenKind::word && !token.text.starts_with('.');
}

const std::set<std::string_view>& linkage_words() {
  static const std::set<std::string_view> words = {".visible", ".extern", ".weak", ".common"};
  return words;
}

const std::set<std::string_view>& data_spaces() {
  static const std::set<std::string_view> spaces = {".global", ".const", ".shared", ".local",
                                                    ".tex"};
  return spaces;
}

// Directives that end at the end of their line rather than at ';'.
bool ends_at_newline(std::string_view directive) {
  return directive == ".loc" || directive == ".file" || directive == ".version" ||
         directive == ".target" || directive == ".address_size";
}

class Parser {
 public:
  Parser(std::string_view source, std::vector<LexedToken> tokens)
      : source_(source), tokens_(std::move(tokens)) {}

  Result<Module> module() {
    Module module;
    bool saw_version = false;
    while (!at_end()) {
      const Token& token = peek();
      if (!is_directive(token)) return error_here("expected a directive or declaration");
      if (token.is(".version")) {
        SLUICE_PTX_CHECK(version(module));
        saw_version = true;
      } else if (token.is(".target")) {
        const int line = next().line;
        for (const Token& arg : rest_of_line(line)) {
          if (arg.is(",")) continue;
          if (arg.kind != TokenKind::word) return error_at(arg, "expected a target name");
          module.target.push_back(arg.text);
        }
        if (module.target.empty()) return make_error("line {}: .target names no target", line);
      } else if (token.is(".address_size")) {
        const int line = next().line;
        const Tokens args = rest_of_line(line);
        std::uint64_t size = 0;
        if (args.size() != 1 || !parse_number(args[0].text, size) || (size != 32 && size != 64)) {
          return make_error("line {}: .address_size must be 32 or 64", line);
        }
        module.address_size = static_cast<int>(size);
      } else if (token.is(".section")) {
        SLUICE_PTX_TRY(section, verbatim_section());
        module.items.emplace_back(std::move(section));
      } else if (linkage_words().contains(token.text) || data_spaces().contains(token.text) ||
                 token.is(".entry") || token.is(".func")) {
        SLUICE_PTX_CHECK(declaration(module));
      } else {
        SLUICE_PTX_TRY(directive, module_directive());
        module.items.emplace_back(std::move(directive));
      }
    }
    if (!saw_version) return make_error("line 1: missing .version directive");
    if (module.target.empty()) return make_error("line 1: missing .target directive");
    return module;
  }

  Result<std::vector<Statement>> statements_until_end() {
    std::vector<Statement> statements;
    int depth = 0;
    while (!at_end()) {
      SLUICE_PTX_TRY(statement, next_statement(depth));
      statements.push_back(std::move(statement));
    }
    if (depth != 0) return make_error("line {}: {} unclosed '{{'", last_line(), depth);
    return statements;
  }

 private:
  // ---- token access ----
  bool at_end() const { return pos_ >= tokens_.size(); }
  const Token& peek(std::size_t ahead = 0) const {
    static const Token end_token{TokenKind::punct, "<end of input>", 0};
    return pos_ + ahead < tokens_.size() ? tokens_[pos_ + ahead].token : end_token;
  }
  Token next() { return tokens_[pos_++].token; }
  int last_line() const { return tokens_.empty() ? 1 : tokens_.back().token.line; }

  Error error_at(const Token& token, std::string_view what) const {
    const int line = token.line != 0 ? token.line : last_line();
    return make_error("line {}: {} (at '{}')", line, what, token.text);
  }
  Error error_here(std::string_view what) const { return error_at(peek(), what); }

  Status expect(std::string_view punct, std::string_view context) {
    if (!peek().is(punct) || peek().kind == TokenKind::string) {
      return error_here(fmt::format("expected '{}' {}", punct, context));
    }
    ++pos_;
    return {};
  }

  // Tokens on `line` from the current position.
  Tokens rest_of_line(int line) {
    Tokens tokens;
    while (!at_end() && peek().line == line) tokens.push_back(next());
    return tokens;
  }

  // Tokens up to (not including) the next ';', which is consumed.
  Result<Tokens> until_semicolon(std::string_view context) {
    Tokens tokens;
    while (!at_end() && !peek().is(";")) tokens.push_back(next());
    SLUICE_PTX_CHECK(expect(";", context));
    return tokens;
  }

  // A balanced group "( ... )" starting at the current '(' : appended to `out`.
  Status balanced_parens(Tokens& out) {
    int depth = 0;
    do {
      if (at_end()) return error_here("unbalanced '('");
      const Token token = next();
      if (token.is("(")) ++depth;
      if (token.is(")")) --depth;
      out.push_back(token);
    } while (depth > 0);
    return {};
  }

  // ---- module scope ----
  Status version(Module& module) {
    const int line = next().line;
    const Tokens args = rest_of_line(line);
    const std::string text = args.size() == 1 ? args[0].text : std::string();
    const std::size_t dot = text.find('.');
    int major = 0;
    int minor = 0;
    const bool ok =
        dot != std::string::npos &&
        std::from_chars(text.data(), text.data() + dot, major).ec == std::errc() &&
        std::from_chars(text.data() + dot + 1, text.data() + text.size(), minor).ec == std::errc();
    if (!ok) return make_error("line {}: .version needs MAJOR.MINOR", line);
    module.version_major = major;
    module.version_minor = minor;
    return {};
  }

  Result<Section> verbatim_section() {
    const LexedToken& start = tokens_[pos_];
    ++pos_;
    while (!at_end() && !peek().is("{")) {
      if (peek().is(";")) return error_here("expected '{' after .section name");
      ++pos_;
    }
    if (at_end()) return make_error("line {}: .section without a body", start.token.line);
    int depth = 0;
    std::size_t end = start.end;
    do {
      if (at_end()) return make_error("line {}: unterminated .section", start.token.line);
      const LexedToken& token = tokens_[pos_++];
      if (token.token.is("{")) ++depth;
      if (token.token.is("}")) --depth;
      end = token.end;
    } while (depth > 0);
    return Section{std::string(source_.substr(start.begin, end - start.begin)), start.token.line};
  }

  Result<ModuleDirective> module_directive() {
    ModuleDirective directive;
    const Token name = next();
    directive.name = name.text;
    directive.line = name.line;
    if (ends_at_newline(directive.name)) {
      directive.args = rest_of_line(name.line);
      return directive;
    }
    SLUICE_PTX_TRY(args, until_semicolon(fmt::format("after {}", directive.name)));
    directive.args = std::move(args);
    directive.semicolon = true;
    return directive;
  }

  Status declaration(Module& module) {
    std::vector<std::string> linkage;
    while (linkage_words().contains(peek().text)) linkage.push_back(next().text);
    if (peek().is(".entry") || peek().is(".func")) {
      SLUICE_PTX_TRY(function, function_declaration(std::move(linkage)));
      module.items.emplace_back(std::move(function));
      return {};
    }
    if (!data_spaces().contains(peek().text)) {
      return error_here("expected .entry, .func or a state space after linkage");
    }
    SLUICE_PTX_TRY(variables, variable_declaration(std::move(linkage)));
    for (Variable& variable : variables) module.items.emplace_back(std::move(variable));
    return {};
  }

  Result<std::vector<Variable>> variable_declaration(std::vector<std::string> linkage) {
    Variable shared;
    const Token space = next();
    shared.linkage = std::move(linkage);
    shared.space = space.text;
    shared.line = space.line;
    while (is_directive(peek())) {
      if (peek().is(".attribute")) {
        shared.qualifiers.push_back(next());
        if (!peek().is("(")) return error_here("expected '(' after .attribute");
        SLUICE_PTX_CHECK(balanced_parens(shared.qualifiers));
        continue;
      }
      const Token qualifier = next();
      shared.qualifiers.push_back(qualifier);
      if (qualifier.is(".align")) {
        if (peek().kind != TokenKind::number) return error_here("expected a number after .align");
        shared.qualifiers.push_back(next());
      } else if (detail::is_data_type(qualifier.text)) {
        shared.type = qualifier.text;
      }
    }
    if (shared.type.empty()) return error_here("expected a type in the variable declaration");
    std::vector<Variable> variables;
    while (true) {
      Variable variable = shared;
      if (!is_plain_word(peek())) return error_here("expected a variable name");
      const Token name = next();
      variable.name = name.text;
      variable.line = name.line;
      while (peek().is("[")) {
        ++pos_;
        std::optional<std::uint64_t> dim;
        if (peek().kind == TokenKind::number) {
          std::uint64_t value = 0;
          if (!parse_number(peek().text, value)) return error_here("bad array dimension");
          dim = value;
          ++pos_;
        }
        SLUICE_PTX_CHECK(expect("]", "after the array dimension"));
        variable.dims.push_back(dim);
      }
      if (peek().is("=")) {
        ++pos_;
        variable.has_initializer = true;
        int depth = 0;
        while (!at_end() && !(depth == 0 && (peek().is(";") || peek().is(",")))) {
          if (peek().is("{") || peek().is("(")) ++depth;
          if (peek().is("}") || peek().is(")")) --depth;
          variable.initializer.push_back(next());
        }
        if (variable.initializer.empty()) return error_here("empty initializer");
      }
      variables.push_back(std::move(variable));
      if (peek().is(",")) {
        ++pos_;
        continue;
      }
      SLUICE_PTX_CHECK(expect(";", "after the variable declaration"));
      return variables;
    }
  }

  Result<Param> param() {
    Param param;
    if (!peek().is(".param") && !peek().is(".reg")) return error_here("expected .param or .reg");
    const Token space = next();
    param.space = space.text;
    param.line = space.line;
    while (is_directive(peek())) {
      const Token word = next();
      if (word.is(".align")) {
        std::uint64_t align = 0;
        if (peek().kind != TokenKind::number || !parse_number(peek().text, align) || align == 0 ||
            align > (1u << 16)) {
          return error_here("expected an alignment after .align");
        }
        ++pos_;
        (param.is_ptr ? param.ptr_align : param.align) = static_cast<std::uint32_t>(align);
      } else if (word.is(".ptr")) {
        param.is_ptr = true;
      } else if (param.is_ptr && param.ptr_space.empty() && detail::is_state_space(word.text)) {
        param.ptr_space = word.text;
      } else if (param.type.empty()) {
        param.type = word.text;
      } else {
        return error_at(word, "unexpected parameter attribute");
      }
    }
    if (param.type.empty()) return error_here("expected a parameter type");
    if (!is_plain_word(peek())) return error_here("expected a parameter name");
    param.name = next().text;
    if (peek().is("[")) {
      ++pos_;
      std::uint64_t count = 0;
      if (peek().kind != TokenKind::number || !parse_number(peek().text, count) ||
          count > (1u << 20)) {
        return error_here("expected an array size");
      }
      ++pos_;
      param.array_count = static_cast<std::uint32_t>(count);
      SLUICE_PTX_CHECK(expect("]", "after the array size"));
    }
    return param;
  }

  Result<std::vector<Param>> param_list() {
    std::vector<Param> params;
    SLUICE_PTX_CHECK(expect("(", "to open the parameter list"));
    if (peek().is(")")) {
      ++pos_;
      return params;
    }
    while (true) {
      SLUICE_PTX_TRY(p, param());
      params.push_back(std::move(p));
      if (peek().is(",")) {
        ++pos_;
        continue;
      }
      SLUICE_PTX_CHECK(expect(")", "to close the parameter list"));
      return params;
    }
  }

  Result<Function> function_declaration(std::vector<std::string> linkage) {
    Function function;
    const Token keyword = next();
    function.is_entry = keyword.is(".entry");
    function.linkage = std::move(linkage);
    function.line = keyword.line;
    while (peek().is(".attribute")) {
      function.attributes.push_back(next());
      if (!peek().is("(")) return error_here("expected '(' after .attribute");
      SLUICE_PTX_CHECK(balanced_parens(function.attributes));
    }
    if (!function.is_entry && peek().is("(")) {
      SLUICE_PTX_TRY(returns, param_list());
      function.has_returns = true;
      function.returns = std::move(returns);
    }
    if (!is_plain_word(peek())) return error_here("expected a function name");
    function.name = next().text;
    if (peek().is("(")) {
      SLUICE_PTX_TRY(params, param_list());
      function.has_params = true;
      function.params = std::move(params);
    }
    while (is_directive(peek())) {
      FunctionDirective directive;
      const Token name = next();
      directive.name = name.text;
      directive.line = name.line;
      if (directive.name == ".pragma") {
        SLUICE_PTX_TRY(args, until_semicolon("after .pragma"));
        directive.args = std::move(args);
        directive.semicolon = true;
      } else {
        while (peek().kind == TokenKind::number || peek().is(",")) directive.args.push_back(next());
      }
      function.directives.push_back(std::move(directive));
    }
    if (peek().is(";")) {
      ++pos_;
      return function;
    }
    SLUICE_PTX_CHECK(expect("{", fmt::format("to open the body of {}", function.name)));
    function.has_body = true;
    int depth = 0;
    while (true) {
      if (at_end()) {
        return make_error("line {}: the body of {} is not closed", function.line, function.name);
      }
      if (depth == 0 && peek().is("}")) {
        ++pos_;
        return function;
      }
      SLUICE_PTX_TRY(statement, next_statement(depth));
      function.body.push_back(std::move(statement));
    }
  }

  // ---- bodies ----
  Result<Statement> next_statement(int& depth) {
    Statement statement;
    const Token& first = peek();
    statement.line = first.line;
    if (first.is("{") && first.kind == TokenKind::punct) {
      ++pos_;
      ++depth;
      statement.kind = Statement::Kind::open_block;
      return statement;
    }
    if (first.is("}") && first.kind == TokenKind::punct) {
      if (depth == 0) return error_here("'}' without a matching '{'");
      ++pos_;
      --depth;
      statement.kind = Statement::Kind::close_block;
      return statement;
    }
    if (is_plain_word(first) && peek(1).is(":")) {
      statement.kind = Statement::Kind::label;
      statement.name = next().text;
      ++pos_;
      return statement;
    }
    if (is_directive(first)) {
      statement.kind = Statement::Kind::directive;
      statement.name = next().text;
      if (ends_at_newline(statement.name)) {
        statement.args = rest_of_line(statement.line);
        statement.semicolon = false;
        return statement;
      }
      SLUICE_PTX_TRY(args, until_semicolon(fmt::format("after {}", statement.name)));
      statement.args = std::move(args);
      return statement;
    }
    statement.kind = Statement::Kind::instruction;
    Instruction& instruction = statement.instruction;
    if (first.is("@")) {
      ++pos_;
      if (peek().is("!")) {
        ++pos_;
        instruction.guard_negated = true;
      }
      if (peek().kind != TokenKind::word) return error_here("expected a predicate after '@'");
      instruction.guard = next().text;
    }
    if (!is_plain_word(peek())) return error_here("expected an instruction");
    instruction.opcode = next().text;
    Tokens operand;
    int nesting = 0;
    while (true) {
      if (at_end()) {
        return make_error("line {}: expected ';' after {}", statement.line, instruction.opcode);
      }
      const Token token = next();
      if (nesting == 0 && token.is(";")) break;
      if (nesting == 0 && token.is("}")) {
        return make_error("line {}: expected ';' after {}", statement.line, instruction.opcode);
      }
      if (nesting == 0 && token.is(",")) {
        if (operand.empty()) return error_at(token, "empty operand");
        instruction.operands.push_back(std::move(operand));
        operand.clear();
        continue;
      }
      if (token.kind == TokenKind::punct) {
        if (token.is("(") || token.is("[") || token.is("{")) ++nesting;
        if (token.is(")") || token.is("]") || token.is("}")) {
          if (nesting == 0) return error_at(token, "unbalanced bracket in operands");
          --nesting;
        }
      }
      operand.push_back(token);
    }
    if (!operand.empty()) {
      instruction.operands.push_back(std::move(operand));
    } else if (!instruction.operands.empty()) {
      return make_error("line {}: trailing ',' in the operands of {}", statement.line,
                        instruction.opcode);
    }
    return statement;
  }

  std::string_view source_;
  std::vector<LexedToken> tokens_;
  std::size_t pos_ = 0;
};

}  // namespace

Result<Module> parse_module(std::string_view text) {
  SLUICE_PTX_TRY(tokens, detail::lex(text));
  Parser parser(text, std::move(tokens));
  return parser.module();
}

Result<std::vector<Statement>> parse_statements(std::string_view text) {
  SLUICE_PTX_TRY(tokens, detail::lex(text));
  Parser parser(text, std::move(tokens));
  return parser.statements_until_end();
}

}  // namespace sluice::ptx
