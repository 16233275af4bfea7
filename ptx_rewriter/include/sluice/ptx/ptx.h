// A PTX module as the rewriter sees it: the header directives, module-scope data, functions with
// their parameters and performance directives, and bodies as statements (labels, directives,
// instructions with a guard, an opcode and operand token lists). Enough to find registers, labels,
// special registers and every instruction the skip rules look at, and to print the module back.
//
// Printing is canonical (one statement a line, comments dropped) and round-trips: parsing the
// printed text gives the same module. `.section` blocks (DWARF) are kept verbatim.
//
// Thread rules: values only; parse/print are pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "sluice/common/result.h"

namespace sluice::ptx {

enum class TokenKind : std::uint8_t {
  word,    // identifiers, opcodes, directives, registers, labels: ld.global.v4.b32, %r1, .reg, $L0
  number,  // 12, 0x1f, 0f3F800000, 1.5
  string,  // "nounroll" (quotes included)
  punct,   // { } ( ) [ ] , ; : @ ! + - < > = | ... and << >> == != <= >= && ||
};

struct Token {
  TokenKind kind = TokenKind::punct;
  std::string text;
  int line = 0;

  bool is(std::string_view punct_or_word) const { return text == punct_or_word; }
};
using Tokens = std::vector<Token>;

// Joins tokens the way the printer does: a space between two adjacent words/numbers/strings and
// after commas, nothing elsewhere ("[%rd1+8]", "{%r1, %r2}", "%r<12>").
std::string join_tokens(const Tokens& tokens);

// An integer literal as PTX writes it: decimal, 0x hexadecimal, 0b binary or 0-prefixed octal,
// with an optional U suffix. False when `text` is not one.
bool parse_number(std::string_view text, std::uint64_t& value);

// One entry of a parameter list: `.param .align 8 .b8 p[16]`, `.param .u64 .ptr .global .align 1
// x`,
// `.reg .b32 r` (old-style .func parameters).
struct Param {
  std::string space = ".param";  // ".param" or ".reg"
  std::uint32_t align = 0;       // explicit .align before the type, 0 when absent
  std::string type;              // ".u64", ".b8", ...
  bool is_ptr = false;           // .ptr attribute (kernel parameters only)
  std::string ptr_space;         // ".global", ".shared", ... after .ptr, or empty
  std::uint32_t ptr_align = 0;   // .align after .ptr
  std::string name;
  std::optional<std::uint32_t> array_count;  // p[16]
  int line = 0;

  std::uint32_t element_size() const;  // bytes of `type`, 0 if unknown
  std::uint32_t size() const;          // element_size * array_count
  std::uint32_t alignment() const;     // explicit .align, else element_size
};

// A directive after a function's signature: .reqntid 128, 1, 1 / .maxnreg 64 / .explicitcluster /
// .noreturn / .pragma "nounroll";
struct FunctionDirective {
  std::string name;
  Tokens args;             // without the terminating ';'
  bool semicolon = false;  // `.pragma "...";` ends with one; performance directives do not
  int line = 0;

  // The directive's numbers (".reqntid 128, 2" -> {128, 2}); non-numbers are skipped.
  std::vector<std::uint64_t> values() const;
};

struct Instruction {
  std::string guard;  // "%p1" for "@%p1" or "@!%p1"; empty when unguarded
  bool guard_negated = false;
  std::string opcode;            // "ld.global.v4.b32"
  std::vector<Tokens> operands;  // split at top-level commas

  // The opcode's parts: "ld.global.v4.b32" -> base "ld", modifiers {"global", "v4", "b32"}.
  std::string_view base() const;
  bool has_modifier(std::string_view modifier) const;
};

struct Statement {
  enum class Kind : std::uint8_t { instruction, label, directive, open_block, close_block };
  Kind kind = Kind::instruction;
  int line = 0;
  std::string name;         // label name, or directive name (".reg", ".loc", ...)
  Tokens args;              // directive arguments, without a terminating ';'
  bool semicolon = true;    // directives: whether the source ended it with ';' (.loc does not)
  Instruction instruction;  // when kind == instruction
};

struct Function {
  bool is_entry = false;
  std::vector<std::string> linkage;  // .visible / .extern / .weak
  Tokens attributes;                 // e.g. .attribute(.unified(...)) between .func and the name
  bool has_returns = false;          // `.func (.param .b32 r) f(...)`
  std::vector<Param> returns;
  std::string name;
  bool has_params = false;  // a parameter list was written, possibly empty
  std::vector<Param> params;
  std::vector<FunctionDirective> directives;
  bool has_body = false;        // false for a declaration ending in ';'
  std::vector<Statement> body;  // between the outer braces
  int line = 0;

  bool is_extern() const;
  const FunctionDirective* directive(std::string_view name) const;
};

// Module-scope data: `.visible .global .align 8 .u64 x = 0;`, `.extern .shared .b8 smem[];`,
// `.const .align 4 .b8 table[64] = {...};`, `.global .texref t;`.
struct Variable {
  std::vector<std::string> linkage;  // .visible / .extern / .weak / .common
  std::string space;                 // .global / .const / .shared / .local
  Tokens qualifiers;                 // everything between the space and the name, in order
  std::string type;                  // the fundamental type among the qualifiers
  std::string name;
  std::vector<std::optional<std::uint64_t>> dims;  // [N] per dimension; nullopt for []
  bool has_initializer = false;
  Tokens initializer;
  int line = 0;

  bool is_extern() const;
  bool has_attribute(std::string_view attribute) const;  // ".managed" inside .attribute(...)
};

// A directive kept as tokens: .file, .pragma, .alias, and anything else at module scope.
struct ModuleDirective {
  std::string name;
  Tokens args;
  bool semicolon = false;
  int line = 0;
};

// A `.section name { ... }` block, verbatim.
struct Section {
  std::string text;
  int line = 0;
};

using ModuleItem = std::variant<ModuleDirective, Section, Variable, Function>;

struct Module {
  int version_major = 0;
  int version_minor = 0;
  std::vector<std::string> target;  // {"sm_90a"} or {"sm_80", "texmode_independent"}
  int address_size = 64;
  std::vector<ModuleItem> items;

  // The SM number of the target ("sm_90a" -> 90), 0 when absent.
  std::uint32_t target_arch() const;
  bool target_is_arch_specific() const;  // sm_90a, sm_100f, ...
  std::vector<const Function*> entries() const;
  const Function* find_function(std::string_view name) const;
  const Variable* find_variable(std::string_view name) const;
};

// Parses PTX text. Errors name the line: "line 12: expected ';' after ...".
Result<Module> parse_module(std::string_view text);

// Parses a sequence of body statements (used to build the instrumentation from a template).
Result<std::vector<Statement>> parse_statements(std::string_view text);

std::string print_module(const Module& module);

// Where the driver puts each kernel parameter in the parameter buffer: in order, each at the next
// multiple of its alignment.
struct ParamSlot {
  std::string name;
  std::uint32_t offset = 0;
  std::uint32_t size = 0;
  std::uint32_t align = 0;
};
struct ParamLayout {
  std::vector<ParamSlot> slots;
  std::uint32_t size = 0;  // end of the last slot
};
Result<ParamLayout> layout_params(const std::vector<Param>& params);

}  // namespace sluice::ptx
