// The PTX reader: directives, data, signatures, bodies, errors that name lines, and round trips.
#include <gtest/gtest.h>

#include "sluice/ptx/ptx.h"
#include "test_support.h"

namespace sluice::ptx {
namespace {

Module parse_ok(std::string_view text) {
  auto module = parse_module(text);
  EXPECT_TRUE(module) << module.error().message;
  return module ? std::move(module).value() : Module{};
}

std::string parse_error(std::string_view text) {
  auto module = parse_module(text);
  EXPECT_FALSE(module) << "parsed:\n" << text;
  return module ? std::string() : module.error().message;
}

constexpr std::string_view kHeader = ".version 8.7\n.target sm_90a\n.address_size 64\n";

std::string with_header(std::string_view body) {
  return std::string(kHeader) + std::string(body);
}

TEST(PtxHeader, ReadsVersionTargetAndAddressSize) {
  const Module module =
      parse_ok("// comment\n.version 7.8\n.target sm_80, texmode_independent\n.address_size 64\n");
  EXPECT_EQ(module.version_major, 7);
  EXPECT_EQ(module.version_minor, 8);
  EXPECT_EQ(module.target, (std::vector<std::string>{"sm_80", "texmode_independent"}));
  EXPECT_EQ(module.target_arch(), 80u);
  EXPECT_FALSE(module.target_is_arch_specific());
  EXPECT_TRUE(parse_ok(kHeader).target_is_arch_specific());
}

TEST(PtxParams, ReadsAlignmentPointersAndArrays) {
  const Module module = parse_ok(with_header(R"(
.visible .entry k(
  .param .u64 .ptr .global .align 16 p0,
  .param .align 8 .b8 p1[24],
  .param .u8 p2,
  .param .u16 p3,
  .param .f64 p4
)
.reqntid 128, 2, 1
.minnctapersm 2
.maxnreg 64
{
  ret;
}
)"));
  const Function* k = module.find_function("k");
  ASSERT_NE(k, nullptr);
  ASSERT_TRUE(k->is_entry);
  ASSERT_EQ(k->params.size(), 5u);
  EXPECT_TRUE(k->params[0].is_ptr);
  EXPECT_EQ(k->params[0].ptr_space, ".global");
  EXPECT_EQ(k->params[0].ptr_align, 16u);
  EXPECT_EQ(k->params[0].align, 0u);
  EXPECT_EQ(k->params[1].align, 8u);
  EXPECT_EQ(k->params[1].array_count, 24u);
  EXPECT_EQ(k->params[1].size(), 24u);
  auto layout = layout_params(k->params);
  ASSERT_TRUE(layout) << layout.error().message;
  std::vector<std::uint32_t> offsets;
  for (const ParamSlot& slot : layout->slots) offsets.push_back(slot.offset);
  EXPECT_EQ(offsets, (std::vector<std::uint32_t>{0, 8, 32, 34, 40}));
  EXPECT_EQ(layout->size, 48u);
  EXPECT_EQ(k->directive(".reqntid")->values(), (std::vector<std::uint64_t>{128, 2, 1}));
  EXPECT_EQ(k->directive(".minnctapersm")->values(), (std::vector<std::uint64_t>{2}));
  EXPECT_EQ(k->directive(".maxnreg")->values(), (std::vector<std::uint64_t>{64}));
}

TEST(PtxParams, GeneratedStructParameterLayout) {
  SLUICE_REQUIRE_GENERATED();
  const Module module = parse_ok(testing::read_text(testing::generated_dir() / "kernels.ptx"));
  const Function* kernel = module.find_function("struct_param");
  ASSERT_NE(kernel, nullptr);
  auto layout = layout_params(kernel->params);
  ASSERT_TRUE(layout);
  // struct {double; int; char} by value, char, short, double*: as the C ABI lays them out.
  std::vector<std::pair<std::uint32_t, std::uint32_t>> slots;
  for (const ParamSlot& slot : layout->slots) slots.emplace_back(slot.offset, slot.size);
  EXPECT_EQ(slots, (std::vector<std::pair<std::uint32_t, std::uint32_t>>{
                       {0, 16}, {16, 1}, {18, 2}, {24, 8}}));
}

TEST(PtxData, ReadsModuleScopeVariables) {
  const Module module = parse_ok(with_header(R"(
.extern .shared .align 16 .b8 smem[];
.global .align 4 .b8 table[8] = {1, 2, 3, 4, 5, 6, 7, 8};
.visible .const .align 4 .f32 coefficient = 0f3F800000;
.global .u32 a, b = 5;
.global .attribute(.managed) .align 4 .u32 managed_value;
.global .texref tex;
.visible .global .align 8 .u64 pointer_table[2] = {generic(table), generic(table)+4};
)"));
  const Variable* smem = module.find_variable("smem");
  ASSERT_NE(smem, nullptr);
  EXPECT_TRUE(smem->is_extern());
  EXPECT_EQ(smem->space, ".shared");
  ASSERT_EQ(smem->dims.size(), 1u);
  EXPECT_FALSE(smem->dims[0].has_value());
  const Variable* table = module.find_variable("table");
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(table->type, ".b8");
  EXPECT_EQ(table->dims[0], 8u);
  EXPECT_TRUE(table->has_initializer);
  EXPECT_EQ(join_tokens(table->initializer), "{1, 2, 3, 4, 5, 6, 7, 8}");
  EXPECT_EQ(module.find_variable("coefficient")->space, ".const");
  EXPECT_FALSE(module.find_variable("a")->has_initializer);
  EXPECT_EQ(join_tokens(module.find_variable("b")->initializer), "5");
  EXPECT_TRUE(module.find_variable("managed_value")->has_attribute(".managed"));
  EXPECT_EQ(module.find_variable("tex")->type, ".texref");
  EXPECT_EQ(join_tokens(module.find_variable("pointer_table")->initializer),
            "{generic(table), generic(table)+4}");
}

TEST(PtxBody, ReadsStatementsOfEveryKind) {
  const Module module = parse_ok(with_header(R"(
.func (.param .b32 ret0) helper(.param .b32 x) .noreturn;
.visible .entry k(.param .u64 p)
{
  .reg .pred %p<3>;
  .reg .b32 %r<10>;
  .reg .b64 %rd<4>;
  .loc 1 40 33, function_name $L__info_string0, inlined_at 1 38 5
  ld.param.u64 %rd1, [p];
$L__BB0_1:
  @!%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 16 ];
  setp.lt.s32 %p1|%p2, %r1, -7;
  // begin inline asm
  { .reg .b64 %tmp;
    cvt.u64.u32 %tmp, %r5;
    cvta.shared.u64 %rd2, %tmp; }
  cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r1], [%rd1, {%r2, %r3}], [%r4];
  { .param .b32 param0; st.param.b32 [param0], %r1; call.uni (ret0), helper, (param0); }
  .pragma "nounroll";
  @%p2 bra $L__BB0_1;
  ret;
}
)"));
  const Function* k = module.find_function("k");
  ASSERT_NE(k, nullptr);
  const std::vector<Statement>& body = k->body;
  auto find_opcode = [&](std::string_view opcode) -> const Statement* {
    for (const Statement& s : body) {
      if (s.kind == Statement::Kind::instruction && s.instruction.opcode == opcode) return &s;
    }
    return nullptr;
  };
  const Statement* load = find_opcode("ld.global.v4.b32");
  ASSERT_NE(load, nullptr);
  EXPECT_EQ(load->instruction.guard, "%p1");
  EXPECT_TRUE(load->instruction.guard_negated);
  ASSERT_EQ(load->instruction.operands.size(), 2u);
  EXPECT_EQ(join_tokens(load->instruction.operands[0]), "{%r1, %r2, %r3, %r4}");
  EXPECT_EQ(join_tokens(load->instruction.operands[1]), "[%rd1+16]");
  EXPECT_EQ(load->instruction.base(), "ld");
  EXPECT_TRUE(load->instruction.has_modifier("global"));
  EXPECT_FALSE(load->instruction.has_modifier("glob"));
  EXPECT_EQ(join_tokens(find_opcode("setp.lt.s32")->instruction.operands[0]), "%p1|%p2");
  const Statement* tma =
      find_opcode("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes");
  ASSERT_NE(tma, nullptr);
  EXPECT_EQ(tma->instruction.operands.size(), 3u);
  EXPECT_TRUE(tma->instruction.has_modifier("shared::cluster"));
  const Statement* call = find_opcode("call.uni");
  ASSERT_NE(call, nullptr);
  EXPECT_EQ(join_tokens(call->instruction.operands[2]), "(param0)");
  int labels = 0;
  int blocks = 0;
  int loc = 0;
  for (const Statement& s : body) {
    labels += s.kind == Statement::Kind::label ? 1 : 0;
    blocks += s.kind == Statement::Kind::open_block ? 1 : 0;
    if (s.kind == Statement::Kind::directive && s.name == ".loc") {
      ++loc;
      EXPECT_FALSE(s.semicolon);
      EXPECT_EQ(join_tokens(s.args), "1 40 33, function_name $L__info_string0, inlined_at 1 38 5");
    }
  }
  EXPECT_EQ(labels, 1);
  EXPECT_EQ(blocks, 2);
  EXPECT_EQ(loc, 1);
  const Function* helper = module.find_function("helper");
  ASSERT_NE(helper, nullptr);
  EXPECT_FALSE(helper->has_body);
  EXPECT_TRUE(helper->has_returns);
  EXPECT_NE(helper->directive(".noreturn"), nullptr);
}

TEST(PtxErrors, NameTheLine) {
  struct Case {
    std::string text;
    std::string expected;
  };
  const Case cases[] = {
      {with_header(".visible .entry k()\n{\n  mov.u32 %r1, 1\n}\n"), "line 6"},
      {with_header(".visible .entry k()\n{\n  ret;\n"), "line 4: the body of k is not closed"},
      {with_header("/* open\n\n"), "line 4: unterminated /* comment"},
      {with_header(".global .u32 x;\n#\n"), "line 5: unexpected character '#'"},
      {with_header(".visible .entry k()\n{\n  ld.u32 %r1, [%rd1;\n}\n"), "line 6"},
      {".target sm_80\n", "missing .version"},
      {".version 8.0\n.target sm_80\n.address_size 48\n", "line 3: .address_size must be 32 or 64"},
      {".version eight\n.target sm_80\n", "line 1: .version needs MAJOR.MINOR"},
      {with_header(".visible .entry k(.param .u32 p[)\n{\n}\n"), "line 4: expected an array size"},
      {with_header(".global x;\n"), "line 4: expected a type"},
      {with_header(".visible .entry k()\n{\n}\n}\n"), "line 7"},
      {with_header(".pragma \"x\"\n"), "line 4: expected ';' after .pragma"},
      {with_header(".visible .entry k()\n{\n  @ ;\n}\n"), "line 6: expected a predicate"},
  };
  for (const Case& c : cases) {
    const std::string error = parse_error(c.text);
    EXPECT_NE(error.find(c.expected), std::string::npos)
        << "want '" << c.expected << "', got '" << error << "' for:\n"
        << c.text;
  }
}

// parse -> print -> parse gives the same module, and printing is a fixed point.
void expect_round_trip(const std::string& text, const std::string& name) {
  auto first = parse_module(text);
  ASSERT_TRUE(first) << name << ": " << first.error().message;
  const std::string printed = print_module(*first);
  auto second = parse_module(printed);
  ASSERT_TRUE(second) << name << " (printed): " << second.error().message;
  EXPECT_EQ(print_module(*second), printed) << name;
  const auto a = first->entries();
  const auto b = second->entries();
  ASSERT_EQ(a.size(), b.size()) << name;
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]->name, b[i]->name);
    ASSERT_EQ(a[i]->params.size(), b[i]->params.size());
    for (std::size_t p = 0; p < a[i]->params.size(); ++p) {
      EXPECT_EQ(a[i]->params[p].name, b[i]->params[p].name);
      EXPECT_EQ(a[i]->params[p].type, b[i]->params[p].type);
      EXPECT_EQ(a[i]->params[p].alignment(), b[i]->params[p].alignment());
      EXPECT_EQ(a[i]->params[p].size(), b[i]->params[p].size());
    }
    EXPECT_EQ(a[i]->body.size(), b[i]->body.size()) << name << " " << a[i]->name;
  }
  EXPECT_EQ(first->items.size(), second->items.size()) << name;
}

TEST(PtxRoundTrip, TritonCorpus) {
  const auto files = testing::triton_corpus();
  ASSERT_GE(files.size(), 9u);
  for (const auto& path : files) expect_round_trip(testing::read_text(path), path.filename());
}

TEST(PtxRoundTrip, GeneratedModules) {
  SLUICE_REQUIRE_GENERATED();
  for (const char* name : {"kernels", "cooperative", "communicating", "cluster", "relocatable"}) {
    expect_round_trip(testing::read_text(testing::generated_dir() / (std::string(name) + ".ptx")),
                      name);
  }
}

// Found by fuzz_ptx_module: "/" "/" printed together read back as a comment.
TEST(PtxRoundTrip, SlashesDoNotBecomeComments) {
  const std::string text =
      with_header(".entry k()\n{\n.loc 1 2 3 c/ /path/ /* x */ / *y\nret;\n}\n");
  expect_round_trip(text, "slashes");
  const Module module = parse_ok(text);
  const Statement& loc = module.find_function("k")->body.at(0);
  EXPECT_EQ(join_tokens(loc.args), "1 2 3 c/ /path/ / *y");
}

TEST(PtxStatements, ParseOnTheirOwn) {
  auto statements = parse_statements("{\n.reg .b32 %x;\nmov.u32 %x, 1;\n$L: @%p bra $L;\n}\n");
  ASSERT_TRUE(statements) << statements.error().message;
  ASSERT_EQ(statements->size(), 6u);
  EXPECT_EQ((*statements)[3].kind, Statement::Kind::label);
  EXPECT_FALSE(parse_statements("{\nret;\n"));
}

}  // namespace
}  // namespace sluice::ptx
