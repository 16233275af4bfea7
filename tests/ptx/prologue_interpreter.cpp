#include "prologue_interpreter.h"

#include <fmt/format.h>

#include <optional>

namespace sluice::ptx::testing {
namespace {

struct Thread {
  Dim3 tid;
  std::map<std::string, std::uint64_t> regs;
  std::size_t pc = 0;
  bool returned = false;
  bool at_barrier = false;
};

class Interpreter {
 public:
  Interpreter(const std::vector<Statement>& code, Device& device, Dim3 grid, Dim3 block,
              const std::map<std::string, std::uint64_t>& params)
      : code_(code), device_(device), grid_(grid), block_(block), params_(params) {
    for (std::size_t i = 0; i < code.size(); ++i) {
      if (code[i].kind == Statement::Kind::label) labels_[code[i].name] = i;
    }
  }

  // Runs every thread to the end of the code, a `ret`, or a barrier; then resolves the barrier.
  std::string run(std::vector<Thread>& threads) {
    while (true) {
      bool any_waiting = false;
      for (Thread& thread : threads) {
        while (!thread.returned && !thread.at_barrier && thread.pc < code_.size()) {
          if (std::string error = step(thread); !error.empty()) return error;
        }
        any_waiting |= thread.at_barrier;
      }
      if (!any_waiting) return {};
      if (std::string error = resolve_barrier(threads); !error.empty()) return error;
    }
  }

 private:
  std::optional<std::uint64_t> special(const std::string& name, const Thread& thread) const {
    auto component = [](const Dim3& d, char c) { return c == 'x' ? d.x : c == 'y' ? d.y : d.z; };
    const char c = name.back();
    if (name.starts_with("%tid.")) return component(thread.tid, c);
    if (name.starts_with("%ctaid.")) return component(block_, c);
    if (name.starts_with("%nctaid.")) return component(grid_, c);
    return std::nullopt;
  }

  // The value of a register, special register or immediate operand.
  std::optional<std::uint64_t> value(const Tokens& operand, const Thread& thread) const {
    if (operand.size() == 2 && operand[0].is("-")) {
      auto v = value(Tokens{operand[1]}, thread);
      if (v) return static_cast<std::uint64_t>(-static_cast<std::int64_t>(*v));
      return std::nullopt;
    }
    if (operand.size() != 1) return std::nullopt;
    const Token& token = operand[0];
    if (token.kind == TokenKind::number) {
      std::uint64_t v = 0;
      if (!parse_number(token.text, v)) return std::nullopt;
      return v;
    }
    if (auto s = special(token.text, thread)) return s;
    auto it = thread.regs.find(token.text);
    if (it == thread.regs.end()) return std::nullopt;
    return it->second;
  }

  // [reg+off], [symbol+off] or [param]: the address (or parameter name for .param loads).
  std::optional<std::uint64_t> address(const Tokens& operand, const Thread& thread) const {
    if (operand.size() < 3 || !operand.front().is("[") || !operand.back().is("]"))
      return std::nullopt;
    const Token& base = operand[1];
    std::uint64_t result = 0;
    if (auto it = thread.regs.find(base.text); it != thread.regs.end()) {
      result = it->second;
    } else if (auto sym = device_.symbols.find(base.text); sym != device_.symbols.end()) {
      result = sym->second;
    } else {
      return std::nullopt;
    }
    if (operand.size() == 5 && operand[2].is("+")) {
      std::uint64_t offset = 0;
      if (!parse_number(operand[3].text, offset)) return std::nullopt;
      result += offset;
    } else if (operand.size() != 3) {
      return std::nullopt;
    }
    return result;
  }

  std::string fail(const Statement& s, std::string_view what) const {
    return fmt::format("line {}: {} in '{}'", s.line, what, s.instruction.opcode);
  }

  std::string step(Thread& thread) {
    const Statement& s = code_[thread.pc++];
    if (s.kind != Statement::Kind::instruction) return {};
    const Instruction& in = s.instruction;
    if (!in.guard.empty()) {
      auto guard = thread.regs.find(in.guard);
      if (guard == thread.regs.end()) return fail(s, "unset guard " + in.guard);
      if ((guard->second != 0) == in.guard_negated) return {};
    }
    const std::string_view op = in.opcode;
    const auto& ops = in.operands;
    auto set = [&](std::uint64_t v) { thread.regs[ops[0][0].text] = v; };
    auto result = [&](std::uint64_t v) {
      set(v);
      return std::string();
    };
    auto arg = [&](std::size_t i) { return value(ops.at(i), thread); };
    const bool wide = in.has_modifier("u64") || in.has_modifier("b64");
    const std::uint64_t mask = wide ? ~0ull : 0xffffffffull;

    if (op == "ret") {
      thread.returned = true;
      return {};
    }
    if (op == "bra" || op == "bra.uni") {
      auto it = labels_.find(ops.at(0).at(0).text);
      if (it == labels_.end()) return fail(s, "unknown label");
      thread.pc = it->second;
      return {};
    }
    if (in.base() == "bar") {
      thread.at_barrier = true;
      --thread.pc;  // resolve_barrier moves past it
      return {};
    }
    if (in.base() == "ld" && in.has_modifier("param")) {
      auto it = params_.find(ops.at(1).at(1).text);
      if (it == params_.end()) return fail(s, "unknown parameter");
      set(it->second);
      return {};
    }
    if (in.base() == "ld" && in.has_modifier("shared")) {
      set(shared_.at(ops.at(1).at(1).text));
      return {};
    }
    if (in.base() == "st" && in.has_modifier("shared")) {
      auto v = arg(1);
      if (!v) return fail(s, "bad operand");
      shared_[ops.at(0).at(1).text] = *v;
      return {};
    }
    if (in.base() == "ld" && in.has_modifier("global")) {
      auto a = address(ops.at(1), thread);
      if (!a) return fail(s, "bad address");
      std::uint64_t v = device_.load32(*a);
      if (wide) v |= std::uint64_t{device_.load32(*a + 4)} << 32;
      set(v);
      return {};
    }
    if (in.base() == "st" && in.has_modifier("global")) {
      auto a = address(ops.at(0), thread);
      auto v = arg(1);
      if (!a || !v) return fail(s, "bad operand");
      device_.store32(*a, static_cast<std::uint32_t>(*v));
      return {};
    }
    if (op == "atom.global.or.b32") {
      auto a = address(ops.at(1), thread);
      auto v = arg(2);
      if (!a || !v) return fail(s, "bad operand");
      const std::uint32_t old = device_.load32(*a);
      device_.store32(*a, old | static_cast<std::uint32_t>(*v));
      set(old);
      return {};
    }
    if (in.base() == "setp") {
      auto a = arg(1);
      auto b = arg(2);
      if (!a || !b) return fail(s, "bad operand");
      const std::uint64_t x = *a & mask;
      const std::uint64_t y = *b & mask;
      if (in.has_modifier("ne")) return result(x != y);
      if (in.has_modifier("eq")) return result(x == y);
      return fail(s, "unknown comparison");
    }
    if (op == "selp.u32") {
      auto a = arg(1);
      auto b = arg(2);
      auto p = arg(3);
      if (!a || !b || !p) return fail(s, "bad operand");
      set(*p != 0 ? *a : *b);
      return {};
    }
    // Arithmetic: d = f(operands).
    std::vector<std::uint64_t> v;
    for (std::size_t i = 1; i < ops.size(); ++i) {
      auto x = arg(i);
      if (!x) return fail(s, fmt::format("bad operand {}", i));
      v.push_back(*x);
    }
    if (in.base() == "mov" && v.size() == 1) return result(v[0] & mask);
    if (in.base() == "or" && v.size() == 2) return result((v[0] | v[1]) & mask);
    if (in.base() == "and" && v.size() == 2) return result((v[0] & v[1]) & mask);
    if (in.base() == "add" && v.size() == 2) return result((v[0] + v[1]) & mask);
    if (in.base() == "shl" && v.size() == 2) return result((v[0] << v[1]) & mask);
    if (in.base() == "shr" && v.size() == 2) return result((v[0] & mask) >> v[1]);
    if (op == "mad.lo.u32" && v.size() == 3) {
      return result((v[0] * v[1] + v[2]) & 0xffffffffull);
    }
    if (op == "mul.wide.u32" && v.size() == 2) {
      return result((v[0] & 0xffffffffull) * (v[1] & 0xffffffffull));
    }
    if (op == "cvt.u64.u32" && v.size() == 1) return result(v[0] & 0xffffffffull);
    if (op == "cvt.u32.u64" && v.size() == 1) return result(v[0] & 0xffffffffull);
    return fail(s, "unknown instruction");
  }

  // Every live thread must be at the same barrier (the check runs converged, as on a GPU).
  std::string resolve_barrier(std::vector<Thread>& threads) {
    std::optional<std::size_t> pc;
    bool reduction = false;
    std::uint64_t any = 0;
    for (Thread& thread : threads) {
      if (thread.returned) return "a thread returned before a barrier the others wait at";
      if (!thread.at_barrier || (pc && *pc != thread.pc)) return "threads diverged at a barrier";
      pc = thread.pc;
      const Instruction& in = code_[thread.pc].instruction;
      if (in.opcode == "bar.red.or.pred") {
        reduction = true;
        auto v = value(in.operands.at(2), thread);
        if (!v) return "bad bar.red operand";
        any |= *v;
      } else if (in.opcode != "bar.sync") {
        return "unknown barrier " + in.opcode;
      }
    }
    for (Thread& thread : threads) {
      if (reduction) thread.regs[code_[thread.pc].instruction.operands[0][0].text] = any != 0;
      thread.at_barrier = false;
      ++thread.pc;
    }
    return {};
  }

  const std::vector<Statement>& code_;
  Device& device_;
  Dim3 grid_;
  Dim3 block_;
  const std::map<std::string, std::uint64_t>& params_;
  std::map<std::string, std::size_t> labels_;
  std::map<std::string, std::uint64_t> shared_;
};

}  // namespace

std::uint32_t Device::load32(std::uint64_t address) const {
  auto it = global.find(address);
  return it == global.end() ? 0 : it->second;
}

BlockOutcome run_block_check(const Function& entry, Device& device, Dim3 grid, Dim3 block,
                             Dim3 threads, const std::map<std::string, std::uint64_t>& params) {
  BlockOutcome outcome;
  // The check is the entry's first statement block.
  if (entry.body.empty() || entry.body[0].kind != Statement::Kind::open_block) {
    outcome.error = "the entry does not start with the check's block";
    return outcome;
  }
  std::size_t end = 1;
  for (int depth = 1; end < entry.body.size() && depth > 0; ++end) {
    if (entry.body[end].kind == Statement::Kind::open_block) ++depth;
    if (entry.body[end].kind == Statement::Kind::close_block) --depth;
  }
  const std::vector<Statement> code(entry.body.begin() + 1,
                                    entry.body.begin() + static_cast<std::ptrdiff_t>(end - 1));
  std::vector<Thread> team;
  for (std::uint32_t z = 0; z < threads.z; ++z) {
    for (std::uint32_t y = 0; y < threads.y; ++y) {
      for (std::uint32_t x = 0; x < threads.x; ++x)
        team.push_back(Thread{Dim3{x, y, z}, {}, 0, false, false});
    }
  }
  Interpreter interpreter(code, device, grid, block, params);
  outcome.error = interpreter.run(team);
  std::size_t returned = 0;
  for (const Thread& thread : team) returned += thread.returned ? 1 : 0;
  if (outcome.error.empty() && returned != 0 && returned != team.size()) {
    outcome.error = "some threads of the block returned and others did not";
  }
  outcome.ran = returned == 0;
  return outcome;
}

}  // namespace sluice::ptx::testing
