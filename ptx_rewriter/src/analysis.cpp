// Skip rules for kill instrumentation (see analysis.h for the rules and their reasons).
#include "sluice/ptx/analysis.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

#include "sluice/ptx/kill_abi.h"

namespace sluice::ptx {
namespace {

// Device-runtime functions the JIT resolves itself, so PTX calling them loads without linking.
constexpr std::string_view kJitBuiltins[] = {"vprintf", "malloc", "free", "__assertfail"};

constexpr std::string_view kClusterDirectives[] = {".reqnctapercluster", ".explicitcluster",
                                                   ".maxclusterrank", ".blocksareclusters"};
constexpr std::string_view kClusterRegisters[] = {
    "%cluster_ctaid", "%cluster_nctaid", "%cluster_ctarank",    "%cluster_nctarank",
    "%clusterid",     "%nclusterid",     "%is_explicit_cluster"};
constexpr std::string_view kSpecialRegisterPrefixes[] = {"%tid",
                                                         "%ntid",
                                                         "%laneid",
                                                         "%warpid",
                                                         "%nwarpid",
                                                         "%ctaid",
                                                         "%nctaid",
                                                         "%smid",
                                                         "%nsmid",
                                                         "%gridid",
                                                         "%clock",
                                                         "%lanemask",
                                                         "%pm",
                                                         "%envreg",
                                                         "%globaltimer",
                                                         "%cluster",
                                                         "%nclusterid",
                                                         "%clusterid",
                                                         "%is_explicit_cluster",
                                                         "%reserved_smem",
                                                         "%dynamic_smem_size",
                                                         "%total_smem_size",
                                                         "%aggr_smem_size",
                                                         "%current_graph_exec"};

// Instructions whose first operand, though not a [memory] operand, is read rather than written.
constexpr std::string_view kNoDestination[] = {"bar",
                                               "barrier",
                                               "bra",
                                               "brx",
                                               "call",
                                               "ret",
                                               "exit",
                                               "trap",
                                               "membar",
                                               "fence",
                                               "nanosleep",
                                               "setmaxnreg",
                                               "griddepcontrol",
                                               "pmevent",
                                               "brkpt",
                                               "prefetch",
                                               "prefetchu",
                                               "discard",
                                               "applypriority",
                                               "red",
                                               "st"};

template <std::size_t N>
bool contains(const std::string_view (&list)[N], std::string_view value) {
  return std::find(std::begin(list), std::end(list), value) != std::end(list);
}

bool is_register(const Token& token) {
  return token.kind == TokenKind::word && token.text.starts_with('%');
}

bool is_special_register(std::string_view name) {
  for (std::string_view prefix : kSpecialRegisterPrefixes) {
    if (name.starts_with(prefix)) return true;
  }
  return false;
}

bool is_symbol_word(const Token& token) {
  return token.kind == TokenKind::word && !token.text.starts_with('%') &&
         !token.text.starts_with('.');
}

bool has_destination(const Instruction& instruction) {
  if (instruction.operands.empty() || instruction.operands[0].empty()) return false;
  if (instruction.operands[0][0].is("[")) return false;  // st, red, cp, multimem.st, ...
  return !contains(kNoDestination, instruction.base());
}

// The memory state space an ld/st/atom/red names: "global", "shared", "local", "param", "const",
// or "generic" when none.
std::string memory_space(const Instruction& instruction) {
  for (std::string_view space : {"global", "local", "param", "const"}) {
    if (instruction.has_modifier(space)) return std::string(space);
  }
  for (std::string_view space : {"shared", "shared::cta", "shared::cluster"}) {
    if (instruction.has_modifier(space)) return "shared";
  }
  return "generic";
}

bool is_load(const Instruction& instruction) {
  const std::string_view base = instruction.base();
  return base == "ld" || base == "ldu";
}

bool is_store_like(const Instruction& instruction) {
  const std::string_view base = instruction.base();
  return base == "st" || base == "atom" || base == "red" || base == "cp" || base == "stmatrix";
}

// Registers an operand names; `in_memory` selects those inside [...] or those outside.
void collect_registers(const Tokens& operand, bool in_memory, std::set<std::string>& out) {
  int depth = 0;
  for (const Token& token : operand) {
    if (token.is("[")) ++depth;
    if (token.is("]")) --depth;
    if ((depth > 0) == in_memory && is_register(token) && !is_special_register(token.text)) {
      out.insert(token.text);
    }
  }
}

std::set<std::string> destinations(const Instruction& instruction) {
  std::set<std::string> regs;
  if (has_destination(instruction)) collect_registers(instruction.operands[0], false, regs);
  return regs;
}

std::set<std::string> sources(const Instruction& instruction) {
  std::set<std::string> regs;
  const bool dest = has_destination(instruction);
  for (std::size_t i = 0; i < instruction.operands.size(); ++i) {
    if (i > 0 || !dest) collect_registers(instruction.operands[i], false, regs);
    collect_registers(instruction.operands[i], true, regs);
  }
  return regs;
}

// The operand an instruction writes memory through: its first [...] operand.
const Tokens* written_memory_operand(const Instruction& instruction) {
  if (!is_store_like(instruction)) return nullptr;
  for (const Tokens& operand : instruction.operands) {
    if (!operand.empty() && operand[0].is("[")) return &operand;
  }
  return nullptr;
}

bool intersects(const std::set<std::string>& a, const std::set<std::string>& b) {
  return std::any_of(a.begin(), a.end(), [&](const std::string& x) { return b.contains(x); });
}

// How taint crosses a load: `values` when a value loaded through a tainted address is itself
// tainted (it depends on the atom result that chose the address); `addresses` when only address
// arithmetic carries taint (the value stored at a variable is not the variable's address).
enum class Flow { values, addresses };

struct Propagation {
  std::set<std::string> tainted;
  std::set<std::string> stored_spaces;  // state spaces a tainted value was stored to
};

// Registers derived from `seeds`, through instructions and, when a tainted value is stored, through
// loads from the same state space. Flow-insensitive: iterates to a fixed point.
Propagation propagate(const std::vector<Statement>& body, std::set<std::string> seeds, Flow flow) {
  Propagation result{std::move(seeds), {}};
  std::set<std::string>& tainted = result.tainted;
  std::set<std::string>& spaces = result.stored_spaces;
  bool changed = true;
  while (changed) {
    changed = false;
    for (const Statement& statement : body) {
      if (statement.kind != Statement::Kind::instruction) continue;
      const Instruction& instruction = statement.instruction;
      const Tokens* target = written_memory_operand(instruction);
      if (target != nullptr) {
        // st [a], v / atom d, [a], v: the stored values are the registers outside [a] (and d).
        std::set<std::string> values;
        for (std::size_t i = has_destination(instruction) ? 1 : 0; i < instruction.operands.size();
             ++i) {
          if (&instruction.operands[i] != target) {
            collect_registers(instruction.operands[i], false, values);
          }
        }
        if (intersects(values, tainted)) changed |= spaces.insert(memory_space(instruction)).second;
        if (instruction.base() != "atom") continue;
      }
      const bool reads_memory = is_load(instruction) || instruction.base() == "atom";
      bool taint = false;
      if (reads_memory && flow == Flow::addresses) {
        std::set<std::string> outside;
        for (std::size_t i = 1; i < instruction.operands.size(); ++i) {
          collect_registers(instruction.operands[i], false, outside);
        }
        taint = intersects(outside, tainted);
      } else {
        taint = intersects(sources(instruction), tainted);
      }
      if (reads_memory) {
        const std::string space = memory_space(instruction);
        taint |= spaces.contains(space) || spaces.contains("generic") ||
                 (space == "generic" && !spaces.empty());
      }
      if (!taint) continue;
      for (const std::string& reg : destinations(instruction))
        changed |= tainted.insert(reg).second;
    }
  }
  return result;
}

// Whether every call in `function` goes to a builtin that only reads its arguments, so that passing
// it an address (a printf format string) does not let anything write there.
bool calls_only_reading_builtins(const Function& function) {
  for (const Statement& statement : function.body) {
    const Instruction& instruction = statement.instruction;
    if (statement.kind != Statement::Kind::instruction || instruction.base() != "call") continue;
    const bool has_returns = !instruction.operands.empty() && instruction.operands[0][0].is("(");
    const std::size_t target = has_returns ? 1 : 0;
    if (target >= instruction.operands.size()) return false;
    const std::string& callee = instruction.operands[target][0].text;
    if (callee != "vprintf" && callee != "__assertfail") return false;
  }
  return true;
}

// Labels of a body, by statement index.
std::map<std::string, std::size_t> label_positions(const std::vector<Statement>& body) {
  std::map<std::string, std::size_t> labels;
  for (std::size_t i = 0; i < body.size(); ++i) {
    if (body[i].kind == Statement::Kind::label) labels.emplace(body[i].name, i);
  }
  return labels;
}

// in_loop[i]: statement i lies between a label and a later branch back to it.
std::vector<bool> loop_membership(const std::vector<Statement>& body) {
  const auto labels = label_positions(body);
  std::vector<int> delta(body.size() + 1, 0);
  for (std::size_t i = 0; i < body.size(); ++i) {
    const Statement& statement = body[i];
    if (statement.kind != Statement::Kind::instruction) continue;
    const std::string_view base = statement.instruction.base();
    if (base != "bra" && base != "brx") continue;
    for (const Tokens& operand : statement.instruction.operands) {
      for (const Token& token : operand) {
        auto it = labels.find(token.text);
        if (it != labels.end() && it->second <= i) {
          ++delta[it->second];
          --delta[i + 1];
        }
      }
    }
  }
  std::vector<bool> in_loop(body.size(), false);
  int depth = 0;
  for (std::size_t i = 0; i < body.size(); ++i) {
    depth += delta[i];
    in_loop[i] = depth > 0;
  }
  return in_loop;
}

// What one function does, independent of who calls it.
struct FunctionFacts {
  std::vector<SkipReason> reasons;  // cluster, cooperative, communicating
  std::vector<std::string> notes;
  std::set<std::string> symbols;  // words that may name module functions or variables
  bool indirect_call = false;
};

void add_reason(std::vector<SkipReason>& reasons, std::string code, std::string message, int line) {
  // One reason per code and message is enough; a kernel with 40 cluster barriers says so once.
  for (const SkipReason& reason : reasons) {
    if (reason.code == code && reason.message == message) return;
  }
  reasons.push_back({std::move(code), std::move(message), line});
}

void check_special_registers(const Statement& statement, FunctionFacts& facts) {
  for (const Tokens& operand : statement.instruction.operands) {
    for (const Token& token : operand) {
      if (!is_register(token)) continue;
      const std::string_view name = std::string_view(token.text).substr(0, token.text.find('.'));
      if (contains(kClusterRegisters, name)) {
        add_reason(facts.reasons, "cluster", fmt::format("reads {}", name), statement.line);
      } else if (name.starts_with("%envreg")) {
        add_reason(facts.reasons, "cooperative",
                   fmt::format("reads {} (the grid-sync workspace of a cooperative launch)", name),
                   statement.line);
      }
    }
  }
}

void check_cluster_instruction(const Statement& statement, FunctionFacts& facts) {
  const Instruction& instruction = statement.instruction;
  const std::string_view base = instruction.base();
  const bool cluster = (base == "barrier" && instruction.has_modifier("cluster")) ||
                       base == "mapa" || base == "getctarank" ||
                       instruction.opcode.find(".multicast::cluster") != std::string::npos;
  if (cluster) {
    add_reason(facts.reasons, "cluster", fmt::format("uses {}", instruction.opcode),
               statement.line);
  }
}

bool is_polling_load(const Instruction& instruction) {
  if (instruction.base() != "ld") return false;
  const std::string space = memory_space(instruction);
  if (space != "global" && space != "generic") return false;
  const bool strong_scope = instruction.has_modifier("gpu") || instruction.has_modifier("sys");
  return instruction.has_modifier("volatile") || instruction.has_modifier("acquire") ||
         instruction.has_modifier("cv") || (instruction.has_modifier("relaxed") && strong_scope);
}

void check_communication(const Function& function, FunctionFacts& facts) {
  const std::vector<Statement>& body = function.body;
  const std::vector<bool> in_loop = loop_membership(body);
  std::set<std::string> atom_results;
  int first_atom_line = 0;
  bool reads_nctaid = false;
  for (std::size_t i = 0; i < body.size(); ++i) {
    const Statement& statement = body[i];
    if (statement.kind != Statement::Kind::instruction) continue;
    const Instruction& instruction = statement.instruction;
    const std::string_view base = instruction.base();
    if (in_loop[i] && is_polling_load(instruction)) {
      add_reason(facts.reasons, "communicating",
                 fmt::format("{} inside a loop (a spin-wait on memory other blocks write)",
                             instruction.opcode),
                 statement.line);
    }
    if (in_loop[i] && base == "nanosleep") {
      add_reason(facts.reasons, "communicating", "nanosleep inside a loop (a spin-wait)",
                 statement.line);
    }
    if (base == "multimem") {
      add_reason(facts.reasons, "communicating",
                 fmt::format("{} (NVLink multicast memory)", instruction.opcode), statement.line);
    }
    if (base == "atom") {
      const std::set<std::string> dests = destinations(instruction);
      atom_results.insert(dests.begin(), dests.end());
      if (first_atom_line == 0 && !dests.empty()) first_atom_line = statement.line;
    }
    for (const Tokens& operand : instruction.operands) {
      for (const Token& token : operand) {
        if (token.text.starts_with("%nctaid")) reads_nctaid = true;
      }
    }
  }
  if (reads_nctaid && std::find(in_loop.begin(), in_loop.end(), true) != in_loop.end()) {
    facts.notes.push_back(
        fmt::format("{} reads %nctaid and loops: if it is a grid-stride (persistent) kernel, each "
                    "block may run "
                    "long and a kill waits for the blocks already running",
                    function.name));
  }
  if (atom_results.empty()) return;
  const std::set<std::string> derived = propagate(body, atom_results, Flow::values).tainted;
  for (const Statement& statement : body) {
    if (statement.kind != Statement::Kind::instruction) continue;
    const Instruction& instruction = statement.instruction;
    const bool guarded = !instruction.guard.empty() && derived.contains(instruction.guard);
    bool branch_operand = false;
    if (instruction.base() == "bra" || instruction.base() == "brx") {
      branch_operand = intersects(sources(instruction), derived);
    }
    if (guarded || branch_operand) {
      add_reason(
          facts.reasons, "communicating",
          fmt::format("the result of an atom (line {}) decides control flow ({} at line {}): "
                      "blocks coordinate through memory",
                      first_atom_line, instruction.opcode, statement.line),
          statement.line);
      return;
    }
  }
}

FunctionFacts function_facts(const Function& function) {
  FunctionFacts facts;
  if (function.is_entry) {
    for (const FunctionDirective& directive : function.directives) {
      if (contains(kClusterDirectives, directive.name)) {
        add_reason(facts.reasons, "cluster", fmt::format("declares {}", directive.name),
                   directive.line);
      }
    }
  }
  for (const Statement& statement : function.body) {
    for (const Token& token : statement.args) {
      if (is_symbol_word(token)) facts.symbols.insert(token.text);
    }
    if (statement.kind != Statement::Kind::instruction) continue;
    const Instruction& instruction = statement.instruction;
    check_special_registers(statement, facts);
    check_cluster_instruction(statement, facts);
    for (const Tokens& operand : instruction.operands) {
      for (const Token& token : operand) {
        if (is_symbol_word(token)) facts.symbols.insert(token.text);
      }
    }
    if (instruction.base() == "call" && !instruction.operands.empty()) {
      const bool has_returns = instruction.operands[0][0].is("(");
      const std::size_t target = has_returns ? 1 : 0;
      if (target < instruction.operands.size() && !instruction.operands[target].empty() &&
          is_register(instruction.operands[target][0])) {
        facts.indirect_call = true;
      }
    }
  }
  check_communication(function, facts);
  return facts;
}

// Module variables that some function of the module writes, directly or through their address.
std::set<std::string> written_variables(const Module& module,
                                        const std::map<std::string, const Variable*>& variables) {
  std::set<std::string> written;
  // An address kept in module data (a pointer table) can be used for anything.
  for (const ModuleItem& item : module.items) {
    const auto* holder = std::get_if<Variable>(&item);
    if (holder == nullptr) continue;
    for (const Token& token : holder->initializer) {
      if (variables.contains(token.text)) written.insert(token.text);
    }
  }
  for (const ModuleItem& item : module.items) {
    const auto* function = std::get_if<Function>(&item);
    if (function == nullptr || !function->has_body) continue;
    std::map<std::string, std::set<std::string>> address_registers;
    for (const Statement& statement : function->body) {
      if (statement.kind != Statement::Kind::instruction) continue;
      const Instruction& instruction = statement.instruction;
      const Tokens* target = written_memory_operand(instruction);
      for (std::size_t i = 0; i < instruction.operands.size(); ++i) {
        const Tokens& operand = instruction.operands[i];
        const bool memory = !operand.empty() && operand[0].is("[");
        for (const Token& token : operand) {
          if (!variables.contains(token.text)) continue;
          if (&operand == target) written.insert(token.text);
          // The address itself stored to memory escapes: treat it as written.
          if (!memory && target != nullptr) written.insert(token.text);
          if (!memory) {
            const std::set<std::string> dests = destinations(instruction);
            address_registers[token.text].insert(dests.begin(), dests.end());
          }
        }
      }
    }
    for (auto& [name, seeds] : address_registers) {
      if (written.contains(name)) continue;
      const Propagation flow = propagate(function->body, seeds, Flow::addresses);
      const std::set<std::string>& derived = flow.tainted;
      // The address itself went to memory or to a call that might write through it.
      const bool only_to_readers = flow.stored_spaces == std::set<std::string>{"param"} &&
                                   calls_only_reading_builtins(*function);
      if (!flow.stored_spaces.empty() && !only_to_readers) written.insert(name);
      for (const Statement& statement : function->body) {
        if (statement.kind != Statement::Kind::instruction) continue;
        const Tokens* target = written_memory_operand(statement.instruction);
        if (target == nullptr) continue;
        std::set<std::string> address;
        collect_registers(*target, true, address);
        if (intersects(address, derived)) written.insert(name);
      }
    }
  }
  return written;
}

bool uses_reserved_prefix(const Module& module) {
  auto reserved = [](const std::string& text) {
    return text.find(kill_abi::kReservedPrefix) != std::string::npos;
  };
  auto tokens_reserved = [&](const Tokens& tokens) {
    return std::any_of(tokens.begin(), tokens.end(),
                       [&](const Token& t) { return reserved(t.text); });
  };
  for (const ModuleItem& item : module.items) {
    if (const auto* variable = std::get_if<Variable>(&item)) {
      if (reserved(variable->name)) return true;
    } else if (const auto* function = std::get_if<Function>(&item)) {
      if (reserved(function->name)) return true;
      for (const Param& param : function->params) {
        if (reserved(param.name)) return true;
      }
      for (const Statement& statement : function->body) {
        if (reserved(statement.name) || tokens_reserved(statement.args)) return true;
        for (const Tokens& operand : statement.instruction.operands) {
          if (tokens_reserved(operand)) return true;
        }
      }
    }
  }
  return false;
}

class ModuleAnalyzer {
 public:
  ModuleAnalyzer(const Module& module, const AnalysisOptions& options)
      : module_(module), options_(options) {
    for (const ModuleItem& item : module.items) {
      if (const auto* function = std::get_if<Function>(&item)) {
        // A definition wins over an earlier prototype of the same name.
        auto [it, inserted] = functions_.emplace(function->name, function);
        if (!inserted && function->has_body) it->second = function;
      } else if (const auto* variable = std::get_if<Variable>(&item)) {
        if (variable->space == ".global" || variable->space == ".const") {
          variables_.emplace(variable->name, variable);
        }
      }
    }
    for (const auto& [name, function] : functions_) facts_.emplace(name, function_facts(*function));
    written_ = written_variables(module, variables_);
    reserved_ = uses_reserved_prefix(module);
  }

  KernelAnalysis analyze(const Function& entry) const {
    KernelAnalysis result;
    result.name = entry.name;
    if (module_.address_size != 64) {
      result.reasons.push_back({"address-size", ".address_size 32 is not supported", 0});
    }
    if (reserved_) {
      result.reasons.push_back({"reserved-name",
                                fmt::format("the module already uses names starting with {} "
                                            "(is it instrumented already?)",
                                            kill_abi::kReservedPrefix),
                                0});
    }
    if (!entry.has_body) {
      result.reasons.push_back({"no-body", "the entry is only declared here", entry.line});
      return result;
    }
    check_params(entry, result);
    std::set<std::string> symbols;
    for (const Function* function : reachable(entry)) {
      const FunctionFacts& facts = facts_.at(function->name);
      for (const SkipReason& reason : facts.reasons) {
        SkipReason copy = reason;
        if (function != &entry) copy.message += fmt::format(" (in {})", function->name);
        add_reason(result.reasons, copy.code, copy.message, copy.line);
      }
      result.notes.insert(result.notes.end(), facts.notes.begin(), facts.notes.end());
      symbols.insert(facts.symbols.begin(), facts.symbols.end());
      if (!function->has_body && !contains(kJitBuiltins, function->name)) {
        result.reasons.push_back(
            {"extern-function",
             fmt::format("calls {}, which is not defined in this module (needs device linking)",
                         function->name),
             function->line});
      }
    }
    check_module_data(symbols, result);
    return result;
  }

 private:
  // The entry and every function it may call, directly, through a taken address, or (after an
  // indirect call) any function of the module.
  std::vector<const Function*> reachable(const Function& entry) const {
    std::vector<const Function*> order = {&entry};
    std::set<std::string> seen = {entry.name};
    bool indirect = false;
    for (std::size_t i = 0; i < order.size(); ++i) {
      const FunctionFacts& facts = facts_.at(order[i]->name);
      indirect |= facts.indirect_call;
      for (const std::string& symbol : facts.symbols) {
        auto it = functions_.find(symbol);
        if (it != functions_.end() && !it->second->is_entry && seen.insert(symbol).second) {
          order.push_back(it->second);
        }
      }
      if (i + 1 == order.size() && indirect) {
        for (const auto& [name, function] : functions_) {
          if (!function->is_entry && seen.insert(name).second) order.push_back(function);
        }
      }
    }
    return order;
  }

  void check_params(const Function& entry, KernelAnalysis& result) const {
    auto layout = layout_params(entry.params);
    if (!layout) {
      result.reasons.push_back({"param-space", layout.error().message, entry.line});
      return;
    }
    const std::uint64_t needed = (std::uint64_t{layout->size} + 7) / 8 * 8 + 8;
    if (needed > max_param_bytes(module_)) {
      result.reasons.push_back(
          {"param-space",
           fmt::format("parameters take {} bytes; with the 8-byte launch parameter they would "
                       "exceed the {}-byte limit",
                       layout->size, max_param_bytes(module_)),
           entry.line});
    }
  }

  void check_module_data(const std::set<std::string>& symbols, KernelAnalysis& result) const {
    for (const std::string& name : symbols) {
      auto it = variables_.find(name);
      if (it == variables_.end()) continue;
      const Variable& variable = *it->second;
      result.module_data.push_back(name);
      auto refuse = [&](std::string why) {
        result.reasons.push_back(
            {"module-data", fmt::format("{} {} {}", variable.space, name, why), variable.line});
      };
      if (variable.is_extern()) {
        refuse("is .extern: defined in another module, which the twin cannot link");
      } else if (variable.has_attribute(".managed")) {
        refuse("is managed memory the host reads and writes");
      } else if (variable.type == ".texref" || variable.type == ".samplerref" ||
                 variable.type == ".surfref") {
        refuse("is bound by the host to the original module only");
      } else if (written_.contains(name)) {
        refuse("is written by kernels of this module: the twin's copy would diverge");
      } else if (!variable.has_initializer) {
        if (options_.allow_uninitialized_reads) {
          result.mirror.push_back(name);
        } else {
          refuse("has no initializer: the host may fill it, and the twin would see its own copy");
        }
      } else {
        result.notes.push_back(
            fmt::format("reads initialized {} {}: the twin assumes the host never overwrites it",
                        variable.space, name));
      }
    }
  }

  const Module& module_;
  const AnalysisOptions& options_;
  std::map<std::string, const Function*> functions_;
  std::map<std::string, const Variable*> variables_;
  std::map<std::string, FunctionFacts> facts_;
  std::set<std::string> written_;
  bool reserved_ = false;
};

}  // namespace

std::uint32_t max_param_bytes(const Module& module) {
  const bool large =
      (module.version_major > 8 || (module.version_major == 8 && module.version_minor >= 1)) &&
      module.target_arch() >= 70;
  return large ? 32764 : 4096;
}

std::vector<KernelAnalysis> analyze_module(const Module& module, const AnalysisOptions& options) {
  ModuleAnalyzer analyzer(module, options);
  std::vector<KernelAnalysis> kernels;
  for (const Function* entry : module.entries()) kernels.push_back(analyzer.analyze(*entry));
  return kernels;
}

}  // namespace sluice::ptx
