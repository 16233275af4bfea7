// Canonical PTX printing: one statement a line, a tab per block level, tokens joined by
// join_tokens. Parsing the output gives back the same module.
#include <fmt/format.h>

#include "sluice/ptx/ptx.h"

namespace sluice::ptx {
namespace {

void print_param(std::string& out, const Param& param) {
  out += param.space;
  if (param.align != 0) fmt::format_to(std::back_inserter(out), " .align {}", param.align);
  out += ' ';
  out += param.type;
  if (param.is_ptr) {
    out += " .ptr";
    if (!param.ptr_space.empty()) out += ' ' + param.ptr_space;
    if (param.ptr_align != 0)
      fmt::format_to(std::back_inserter(out), " .align {}", param.ptr_align);
  }
  out += ' ';
  out += param.name;
  if (param.array_count) fmt::format_to(std::back_inserter(out), "[{}]", *param.array_count);
}

void print_param_list(std::string& out, const std::vector<Param>& params, bool one_per_line) {
  out += '(';
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (one_per_line) out += "\n\t";
    print_param(out, params[i]);
    if (i + 1 < params.size()) out += one_per_line ? "," : ", ";
  }
  if (one_per_line && !params.empty()) out += '\n';
  out += ')';
}

void print_words(std::string& out, const std::vector<std::string>& words) {
  for (const std::string& word : words) {
    out += word;
    out += ' ';
  }
}

void print_directive_line(std::string& out, std::string_view name, const Tokens& args,
                          bool semicolon) {
  out += name;
  if (!args.empty()) {
    out += ' ';
    out += join_tokens(args);
  }
  if (semicolon) out += ';';
  out += '\n';
}

void print_statement(std::string& out, const Statement& statement, int& depth) {
  if (statement.kind == Statement::Kind::close_block) --depth;
  if (statement.kind != Statement::Kind::label)
    out.append(static_cast<std::size_t>(depth) + 1, '\t');
  switch (statement.kind) {
    case Statement::Kind::open_block:
      out += "{\n";
      ++depth;
      return;
    case Statement::Kind::close_block:
      out += "}\n";
      return;
    case Statement::Kind::label:
      out += statement.name;
      out += ":\n";
      return;
    case Statement::Kind::directive:
      print_directive_line(out, statement.name, statement.args, statement.semicolon);
      return;
    case Statement::Kind::instruction: {
      const Instruction& instruction = statement.instruction;
      if (!instruction.guard.empty()) {
        out += instruction.guard_negated ? "@!" : "@";
        out += instruction.guard;
        out += ' ';
      }
      out += instruction.opcode;
      for (std::size_t i = 0; i < instruction.operands.size(); ++i) {
        out += i == 0 ? "\t" : ", ";
        out += join_tokens(instruction.operands[i]);
      }
      out += ";\n";
      return;
    }
  }
}

void print_function(std::string& out, const Function& function) {
  print_words(out, function.linkage);
  out += function.is_entry ? ".entry " : ".func ";
  if (!function.attributes.empty()) {
    out += join_tokens(function.attributes);
    out += ' ';
  }
  if (function.has_returns) {
    print_param_list(out, function.returns, false);
    out += ' ';
  }
  out += function.name;
  if (function.has_params) print_param_list(out, function.params, true);
  out += '\n';
  for (const FunctionDirective& directive : function.directives) {
    print_directive_line(out, directive.name, directive.args, directive.semicolon);
  }
  if (!function.has_body) {
    out += ";\n";
    return;
  }
  out += "{\n";
  int depth = 0;
  for (const Statement& statement : function.body) print_statement(out, statement, depth);
  out += "}\n";
}

void print_variable(std::string& out, const Variable& variable) {
  print_words(out, variable.linkage);
  out += variable.space;
  if (!variable.qualifiers.empty()) {
    out += ' ';
    out += join_tokens(variable.qualifiers);
  }
  out += ' ';
  out += variable.name;
  for (const auto& dim : variable.dims) {
    out += dim ? fmt::format("[{}]", *dim) : std::string("[]");
  }
  if (variable.has_initializer) {
    out += " = ";
    out += join_tokens(variable.initializer);
  }
  out += ";\n";
}

struct ItemPrinter {
  std::string& out;
  void operator()(const ModuleDirective& d) const {
    print_directive_line(out, d.name, d.args, d.semicolon);
  }
  void operator()(const Section& s) const {
    out += s.text;
    out += '\n';
  }
  void operator()(const Variable& v) const { print_variable(out, v); }
  void operator()(const Function& f) const {
    out += '\n';
    print_function(out, f);
  }
};

}  // namespace

std::string print_module(const Module& module) {
  std::string out;
  fmt::format_to(std::back_inserter(out), ".version {}.{}\n.target ", module.version_major,
                 module.version_minor);
  for (std::size_t i = 0; i < module.target.size(); ++i) {
    if (i > 0) out += ", ";
    out += module.target[i];
  }
  fmt::format_to(std::back_inserter(out), "\n.address_size {}\n\n", module.address_size);
  for (const ModuleItem& item : module.items) std::visit(ItemPrinter{out}, item);
  return out;
}

}  // namespace sluice::ptx
