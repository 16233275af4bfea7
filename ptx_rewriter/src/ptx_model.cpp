// Accessors of the PTX model, token joining and parameter layout.
#include <algorithm>
#include <charconv>

#include "ptx_types.h"
#include "sluice/ptx/ptx.h"

namespace sluice::ptx {
namespace detail {

std::uint32_t type_size(std::string_view type) {
  struct Entry {
    std::string_view name;
    std::uint32_t size;
  };
  static constexpr Entry kTypes[] = {
      {".b8", 1},    {".u8", 1},     {".s8", 1},   {".b16", 2}, {".u16", 2}, {".s16", 2},
      {".f16", 2},   {".bf16", 2},   {".b32", 4},  {".u32", 4}, {".s32", 4}, {".f32", 4},
      {".f16x2", 4}, {".bf16x2", 4}, {".tf32", 4}, {".b64", 8}, {".u64", 8}, {".s64", 8},
      {".f64", 8},   {".b128", 16},  {".pred", 1},
  };
  for (const Entry& entry : kTypes) {
    if (entry.name == type) return entry.size;
  }
  return 0;
}

bool is_data_type(std::string_view type) {
  return type_size(type) != 0 || type == ".texref" || type == ".samplerref" || type == ".surfref";
}

bool is_state_space(std::string_view word) {
  return word == ".global" || word == ".shared" || word == ".const" || word == ".local" ||
         word == ".param" || word == ".tex" || word == ".shared::cta" || word == ".shared::cluster";
}

}  // namespace detail

bool parse_number(std::string_view text, std::uint64_t& value) {
  if (!text.empty() && (text.back() == 'U' || text.back() == 'u')) text.remove_suffix(1);
  int base = 10;
  if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
    base = 16;
    text.remove_prefix(2);
  } else if (text.size() > 2 && text[0] == '0' && (text[1] == 'b' || text[1] == 'B')) {
    base = 2;
    text.remove_prefix(2);
  } else if (text.size() > 1 && text[0] == '0') {
    base = 8;
    text.remove_prefix(1);
  }
  if (text.empty()) return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  return ec == std::errc() && end == text.data() + text.size();
}

namespace {

bool is_wordish(const Token& token) {
  return token.kind != TokenKind::punct;
}

}  // namespace

// Two tokens that would read back as a comment when written together: "/" then "/" or "*".
bool would_start_comment(const Token& left, const Token& right) {
  return left.text.ends_with('/') && (right.text.starts_with('/') || right.text.starts_with('*'));
}

std::string join_tokens(const Tokens& tokens) {
  std::string out;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0 && ((is_wordish(tokens[i - 1]) && is_wordish(tokens[i])) || tokens[i - 1].is(",") ||
                  would_start_comment(tokens[i - 1], tokens[i]))) {
      out += ' ';
    }
    out += tokens[i].text;
  }
  return out;
}

std::uint32_t Param::element_size() const {
  return detail::type_size(type);
}

std::uint32_t Param::size() const {
  return element_size() * array_count.value_or(1);
}

std::uint32_t Param::alignment() const {
  return align != 0 ? align : element_size();
}

std::vector<std::uint64_t> FunctionDirective::values() const {
  std::vector<std::uint64_t> numbers;
  for (const Token& token : args) {
    std::uint64_t value = 0;
    if (token.kind == TokenKind::number && parse_number(token.text, value))
      numbers.push_back(value);
  }
  return numbers;
}

std::string_view Instruction::base() const {
  const std::string_view op = opcode;
  return op.substr(0, op.find('.'));
}

bool Instruction::has_modifier(std::string_view modifier) const {
  std::string_view rest = opcode;
  std::size_t dot = rest.find('.');
  while (dot != std::string_view::npos) {
    rest.remove_prefix(dot + 1);
    dot = rest.find('.');
    if (rest.substr(0, dot) == modifier) return true;
  }
  return false;
}

bool Function::is_extern() const {
  return std::find(linkage.begin(), linkage.end(), ".extern") != linkage.end();
}

const FunctionDirective* Function::directive(std::string_view wanted) const {
  for (const FunctionDirective& d : directives) {
    if (d.name == wanted) return &d;
  }
  return nullptr;
}

bool Variable::is_extern() const {
  return std::find(linkage.begin(), linkage.end(), ".extern") != linkage.end();
}

bool Variable::has_attribute(std::string_view attribute) const {
  bool inside = false;
  for (const Token& token : qualifiers) {
    if (token.is(".attribute")) inside = true;
    if (inside && token.is(attribute)) return true;
  }
  return false;
}

std::uint32_t Module::target_arch() const {
  for (const std::string& name : target) {
    if (!name.starts_with("sm_")) continue;
    std::uint32_t arch = 0;
    std::from_chars(name.data() + 3, name.data() + name.size(), arch);
    return arch;
  }
  return 0;
}

bool Module::target_is_arch_specific() const {
  for (const std::string& name : target) {
    if (name.starts_with("sm_") && (name.ends_with('a') || name.ends_with('f'))) return true;
  }
  return false;
}

std::vector<const Function*> Module::entries() const {
  std::vector<const Function*> found;
  for (const ModuleItem& item : items) {
    if (const auto* function = std::get_if<Function>(&item); function && function->is_entry) {
      found.push_back(function);
    }
  }
  return found;
}

const Function* Module::find_function(std::string_view name) const {
  for (const ModuleItem& item : items) {
    if (const auto* function = std::get_if<Function>(&item); function && function->name == name) {
      return function;
    }
  }
  return nullptr;
}

const Variable* Module::find_variable(std::string_view name) const {
  for (const ModuleItem& item : items) {
    if (const auto* variable = std::get_if<Variable>(&item); variable && variable->name == name) {
      return variable;
    }
  }
  return nullptr;
}

Result<ParamLayout> layout_params(const std::vector<Param>& params) {
  ParamLayout layout;
  std::uint64_t offset = 0;
  for (const Param& param : params) {
    const std::uint32_t size = param.size();
    const std::uint32_t align = param.alignment();
    if (size == 0 || align == 0) {
      return make_error("line {}: parameter {} has type {} of unknown size", param.line, param.name,
                        param.type);
    }
    if ((align & (align - 1)) != 0) {
      return make_error("line {}: parameter {} has alignment {}, not a power of two", param.line,
                        param.name, align);
    }
    offset = (offset + align - 1) / align * align;
    layout.slots.push_back({param.name, static_cast<std::uint32_t>(offset), size, align});
    offset += size;
    if (offset > (1u << 24)) {
      return make_error("line {}: parameters exceed {} bytes", param.line, 1u << 24);
    }
  }
  layout.size = static_cast<std::uint32_t>(offset);
  return layout;
}

}  // namespace sluice::ptx
