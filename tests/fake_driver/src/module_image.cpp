#include "module_image.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <map>

namespace sluice::fake {
namespace {

constexpr std::string_view kFakeHeader = "# sluice fake module v1";
constexpr std::uint32_t kElfMagic = 0x464c457f;           // "\x7fELF"
constexpr std::uint32_t kFatbinMagic = 0xba55ed50;        // fatbin container
constexpr std::uint32_t kFatbinWrapperMagic = 0x466243b1;  // __fatBinC_Wrapper_t

struct OpSignature {
  KernelOp op;
  std::string_view name;
  std::vector<std::size_t> params;  // required leading parameter sizes
  bool exact;                       // no further parameters allowed
};

const std::vector<OpSignature>& op_signatures() {
  static const std::vector<OpSignature> signatures = {
      {KernelOp::noop, "noop", {}, false},
      {KernelOp::fill_u32, "fill_u32", {8, 4, 4}, true},
      {KernelOp::affine_u32, "affine_u32", {8, 4, 4, 4}, true},
      {KernelOp::append_u32, "append_u32", {8, 4}, true},
      {KernelOp::copy, "copy", {8, 8, 8}, true},
      {KernelOp::spin, "spin", {8}, false},
      {KernelOp::host, "host", {}, false},
  };
  return signatures;
}

const OpSignature& signature_of(KernelOp op) {
  for (const auto& signature : op_signatures()) {
    if (signature.op == op) return signature;
  }
  return op_signatures().front();
}

std::optional<std::string> check_signature(const KernelDesc& kernel) {
  const OpSignature& signature = signature_of(kernel.op);
  if (kernel.params.size() < signature.params.size() ||
      (signature.exact && kernel.params.size() != signature.params.size())) {
    return fmt::format("kernel {}: op={} takes {}{} parameters, the kernel has {}", kernel.name,
                       signature.name, signature.exact ? "" : "at least ", signature.params.size(),
                       kernel.params.size());
  }
  for (std::size_t i = 0; i < signature.params.size(); ++i) {
    if (kernel.params[i].size != signature.params[i]) {
      return fmt::format("kernel {}: parameter {} of op={} has {} bytes, not {}", kernel.name, i,
                         signature.name, signature.params[i], kernel.params[i].size);
    }
  }
  return std::nullopt;
}

std::size_t natural_alignment(std::size_t size) {
  std::size_t align = 1;
  while (align < 8 && size % (align * 2) == 0) align *= 2;
  return align;
}

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find(separator, start);
    if (end == std::string_view::npos) end = text.size();
    parts.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return text;
}

template <typename T>
std::optional<T> parse_number(std::string_view text) {
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

bool text_starts_like_ptx(const char* text) {
  // PTX starts with comments or directives; skip leading whitespace.
  while (*text == ' ' || *text == '\t' || *text == '\n' || *text == '\r') ++text;
  return (text[0] == '/' && (text[1] == '/' || text[1] == '*')) || text[0] == '.';
}

// ---- PTX --------------------------------------------------------------------------------------

// Removes // and /* */ comments, keeping line structure irrelevant (PTX is free-form).
std::string strip_ptx_comments(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '"') {  // strings (.file, .pragma) may contain comment markers
      std::size_t end = text.find('"', i + 1);
      if (end == std::string_view::npos) end = text.size() - 1;
      out.append(text.substr(i, end - i + 1));
      i = end;
    } else if (text.substr(i, 2) == "//") {
      std::size_t end = text.find('\n', i);
      if (end == std::string_view::npos) break;
      out.push_back('\n');
      i = end;
    } else if (text.substr(i, 2) == "/*") {
      std::size_t end = text.find("*/", i + 2);
      if (end == std::string_view::npos) break;
      out.push_back(' ');
      i = end + 1;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

std::vector<std::string_view> tokenize_ptx(std::string_view text) {
  std::vector<std::string_view> tokens;
  std::size_t i = 0;
  auto is_word = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' || c == '%' || c == '.';
  };
  while (i < text.size()) {
    char c = text[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == '"') {
      std::size_t end = text.find('"', i + 1);
      end = end == std::string_view::npos ? text.size() : end + 1;
      tokens.push_back(text.substr(i, end - i));
      i = end;
    } else if (is_word(c)) {
      std::size_t start = i++;
      // A directive is '.' followed by a word; a word does not continue with '.' after its start
      // except in numbers (8.0) and directive-like words (.b8).
      while (i < text.size() && is_word(text[i]) && !(text[i] == '.' && !std::isdigit(static_cast<unsigned char>(text[start])))) ++i;
      tokens.push_back(text.substr(start, i - start));
    } else {
      tokens.push_back(text.substr(i, 1));
      ++i;
    }
  }
  return tokens;
}

std::optional<std::size_t> ptx_type_size(std::string_view type) {
  static const std::map<std::string_view, std::size_t> sizes = {
      {".u8", 1},  {".s8", 1},  {".b8", 1},  {".u16", 2},   {".s16", 2},  {".b16", 2}, {".f16", 2},
      {".bf16", 2}, {".u32", 4}, {".s32", 4}, {".b32", 4},  {".f32", 4},  {".f16x2", 4}, {".bf16x2", 4},
      {".u64", 8}, {".s64", 8}, {".b64", 8},  {".f64", 8},  {".b128", 16}};
  auto it = sizes.find(type);
  if (it == sizes.end()) return std::nullopt;
  return it->second;
}

struct TypedName {
  std::string name;
  std::size_t size = 0;
  std::size_t align = 0;  // 0: natural
};

// Reads "[.align N] .type name[dims]..." from tokens (anything else, such as .param, .ptr,
// .global after .ptr, is skipped). Returns nullopt when there is no type or no name.
std::optional<TypedName> parse_typed_name(const std::vector<std::string_view>& tokens) {
  TypedName out;
  std::optional<std::size_t> element;
  std::size_t count = 1;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    std::string_view token = tokens[i];
    if (token == ".align" && i + 1 < tokens.size()) {
      if (!element) out.align = parse_number<std::size_t>(tokens[i + 1]).value_or(0);
      ++i;
    } else if (auto size = ptx_type_size(token); size && !element) {
      element = size;
    } else if (token == "[") {
      std::size_t dim = 0;
      if (i + 1 < tokens.size() && tokens[i + 1] != "]") dim = parse_number<std::size_t>(tokens[i + 1]).value_or(0);
      count *= dim;
      while (i < tokens.size() && tokens[i] != "]") ++i;
    } else if (token.front() != '.' && element && out.name.empty() && !std::isdigit(static_cast<unsigned char>(token.front()))) {
      out.name = std::string(token);
    }
  }
  if (!element || out.name.empty()) return std::nullopt;
  out.size = *element * count;
  if (out.align == 0) out.align = *element;
  return out;
}

}  // namespace

std::string_view kernel_op_name(KernelOp op) { return signature_of(op).name; }

std::size_t layout_params(std::vector<ParamDesc>& params, const std::vector<std::size_t>& aligns) {
  std::size_t offset = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    std::size_t align = i < aligns.size() && aligns[i] != 0 ? aligns[i] : natural_alignment(params[i].size);
    offset = (offset + align - 1) / align * align;
    params[i].offset = offset;
    offset += params[i].size;
  }
  return offset;
}

Result<ModuleImage> parse_fake_module(std::string_view text, std::string_view origin) {
  ModuleImage module;
  module.format = ImageFormat::fake_text;
  std::vector<std::string_view> lines = split(text, '\n');
  for (std::size_t number = 1; number < lines.size(); ++number) {
    std::string_view line = trim(lines[number]);
    if (line.empty() || line.front() == '#') continue;
    auto where = [&] { return fmt::format("{}:{}", origin, number + 1); };
    std::vector<std::string_view> words;
    for (std::string_view word : split(line, ' ')) {
      if (!trim(word).empty()) words.push_back(trim(word));
    }
    if (words[0] == "global") {
      if (words.size() != 3) return make_error("{}: expected 'global <name> <bytes>'", where());
      auto bytes = parse_number<std::size_t>(words[2]);
      if (!bytes || *bytes == 0) return make_error("{}: bad size '{}'", where(), words[2]);
      module.globals.push_back({std::string(words[1]), *bytes});
      continue;
    }
    if (words[0] != "kernel" || words.size() < 2) {
      return make_error("{}: expected 'kernel <name> params=...' or 'global <name> <bytes>'", where());
    }
    auto kernel = std::make_shared<KernelDesc>();
    kernel->name = std::string(words[1]);
    bool have_params = false;
    for (std::size_t i = 2; i < words.size(); ++i) {
      std::string_view word = words[i];
      std::size_t equals = word.find('=');
      if (equals == std::string_view::npos) return make_error("{}: expected key=value, got '{}'", where(), word);
      std::string_view key = word.substr(0, equals);
      std::string_view value = word.substr(equals + 1);
      if (key == "params") {
        have_params = true;
        if (value.empty()) continue;
        for (std::string_view size_text : split(value, ',')) {
          auto size = parse_number<std::size_t>(size_text);
          if (!size || *size == 0 || *size > 4096) return make_error("{}: bad parameter size '{}'", where(), size_text);
          kernel->params.push_back({fmt::format("p{}", kernel->params.size()), 0, *size});
        }
      } else if (key == "duration_us") {
        auto micros = parse_number<double>(value);
        if (!micros || *micros < 0 || !std::isfinite(*micros)) return make_error("{}: bad duration '{}'", where(), value);
        kernel->duration_ns = static_cast<std::uint64_t>(std::llround(*micros * 1000.0));
      } else if (key == "op") {
        auto it = std::find_if(op_signatures().begin(), op_signatures().end(),
                               [&](const OpSignature& s) { return s.name == value; });
        if (it == op_signatures().end()) return make_error("{}: unknown op '{}'", where(), value);
        kernel->op = it->op;
      } else if (key == "tag") {
        auto index = parse_number<std::size_t>(value);
        if (!index) return make_error("{}: bad tag index '{}'", where(), value);
        kernel->tag_param = *index;
      } else {
        return make_error("{}: unknown key '{}'", where(), key);
      }
    }
    if (!have_params) return make_error("{}: kernel {} has no params= (write params= for none)", where(), kernel->name);
    if (kernel->tag_param && *kernel->tag_param >= kernel->params.size()) {
      return make_error("{}: tag={} but the kernel has {} parameters", where(), *kernel->tag_param, kernel->params.size());
    }
    kernel->param_bytes = layout_params(kernel->params, {});
    if (auto problem = check_signature(*kernel)) return make_error("{}: {}", where(), *problem);
    module.kernels.push_back(std::move(kernel));
  }
  return module;
}

Result<ModuleImage> parse_ptx_module(std::string_view text, std::string_view origin) {
  ModuleImage module;
  module.format = ImageFormat::ptx;
  std::string stripped = strip_ptx_comments(text);
  std::vector<std::string_view> tokens = tokenize_ptx(stripped);

  std::size_t i = 0;
  while (i < tokens.size()) {
    // One module-scope statement: tokens up to ';' or up to a '{' that opens a body.
    std::vector<std::string_view> statement;
    int parens = 0;
    while (i < tokens.size()) {
      std::string_view token = tokens[i];
      if (token == "(") ++parens;
      if (token == ")") --parens;
      if (parens == 0 && (token == ";" || token == "{" || token == "=")) break;
      statement.push_back(token);
      ++i;
    }
    std::string_view terminator = i < tokens.size() ? tokens[i] : ";";
    // Skip the terminator and, for bodies and initializers, everything up to the match.
    if (terminator == "{" || terminator == "=") {
      int depth = 0;
      for (; i < tokens.size(); ++i) {
        if (tokens[i] == "{") ++depth;
        if (tokens[i] == "}") --depth;
        if (terminator == "{" && depth == 0 && tokens[i] == "}") break;
        if (terminator == "=" && depth == 0 && tokens[i] == ";") break;
      }
    }
    ++i;

    auto entry = std::find(statement.begin(), statement.end(), ".entry");
    if (entry != statement.end()) {
      if (entry + 1 == statement.end()) return make_error("{}: .entry without a name", origin);
      auto kernel = std::make_shared<KernelDesc>();
      kernel->name = std::string(*(entry + 1));
      std::vector<std::size_t> aligns;
      auto open = std::find(entry, statement.end(), "(");
      if (open != statement.end()) {
        std::vector<std::string_view> param;
        for (auto it = open + 1; it != statement.end(); ++it) {
          if (*it == "," || *it == ")") {
            if (!param.empty()) {
              auto typed = parse_typed_name(param);
              if (!typed) return make_error("{}: cannot read a parameter of .entry {}", origin, kernel->name);
              kernel->params.push_back({typed->name, 0, typed->size});
              aligns.push_back(typed->align);
            }
            param.clear();
            if (*it == ")") break;
          } else {
            param.push_back(*it);
          }
        }
      }
      kernel->param_bytes = layout_params(kernel->params, aligns);
      if (kernel->name.rfind("sluice_spin", 0) == 0) {
        kernel->op = KernelOp::spin;
        if (auto problem = check_signature(*kernel)) return make_error("{}: {}", origin, *problem);
      }
      module.kernels.push_back(std::move(kernel));
      continue;
    }
    bool is_variable = std::find(statement.begin(), statement.end(), ".global") != statement.end() ||
                       std::find(statement.begin(), statement.end(), ".const") != statement.end();
    bool is_extern = std::find(statement.begin(), statement.end(), ".extern") != statement.end();
    bool is_function = std::find(statement.begin(), statement.end(), ".func") != statement.end();
    if (is_variable && !is_extern && !is_function) {
      auto begin = std::find_if(statement.begin(), statement.end(),
                                [](std::string_view t) { return t == ".global" || t == ".const"; });
      auto typed = parse_typed_name(std::vector<std::string_view>(begin + 1, statement.end()));
      if (typed) module.globals.push_back({typed->name, typed->size});
    }
  }

  bool has_kill_flag = std::any_of(module.globals.begin(), module.globals.end(),
                                   [](const GlobalDesc& g) { return g.name == "__sluice_kill_flag"; });
  for (auto& kernel : module.kernels) {
    if (has_kill_flag && !kernel->params.empty() && kernel->params.back().name == "__sluice_launch" &&
        kernel->params.back().size == 8) {
      std::const_pointer_cast<KernelDesc>(kernel)->killable = true;
    }
  }
  return module;
}

Result<ModuleImage> parse_module_image(const void* image, std::string_view origin) {
  if (image == nullptr) return make_error("{}: null image", origin);
  std::uint32_t magic = 0;
  const char* bytes = static_cast<const char*>(image);
  // A text image may be shorter than four bytes; compare byte by byte up to its NUL.
  bool short_text = bytes[0] == '\0' || bytes[1] == '\0' || bytes[2] == '\0' || bytes[3] == '\0';
  if (!short_text) std::memcpy(&magic, image, sizeof(magic));
  if (magic == kElfMagic || magic == kFatbinMagic || magic == kFatbinWrapperMagic) {
    return ModuleImage{};
  }
  if (std::strncmp(bytes, kFakeHeader.data(), kFakeHeader.size()) == 0) {
    return parse_fake_module(std::string_view(bytes), origin);
  }
  if (text_starts_like_ptx(bytes)) return parse_ptx_module(std::string_view(bytes), origin);
  return ModuleImage{};
}

}  // namespace sluice::fake
