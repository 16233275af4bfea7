#include "sluice/ptx/instrument.h"

#include <fmt/format.h>

#include "byte_reader.h"
#include "sluice/common/hash.h"
#include "sluice/ptx/kill_abi.h"

namespace sluice::ptx {
namespace {

// The block-entry check, in PTX; a fmt template, so {{ }} are the scope's own braces. Registers:
// p0 skip, p1 "not thread (0,0,0)", p5 a resume launch (kill_abi::kResumeBit: the kill word is not
// read), rd0 launch record, rd1 linear block number, rd2 the record plus 4 * the block's done
// word, r7 the block's done bit, rd3 the kill word's address.
// `ld.volatile` because the kill word changes under a running grid (sluiced writes it); the done
// word is read volatile too, since other blocks of this grid set their bits in it.
constexpr std::string_view kDecide = R"(
{{
.reg .pred %__sluice_p<6>;
.reg .b32 %__sluice_r<10>;
.reg .b64 %__sluice_rd<4>;
{shared_declaration}
mov.pred %__sluice_p0, 0;
mov.u32 %__sluice_r0, %tid.x;
mov.u32 %__sluice_r1, %tid.y;
mov.u32 %__sluice_r2, %tid.z;
or.b32 %__sluice_r0, %__sluice_r0, %__sluice_r1;
or.b32 %__sluice_r0, %__sluice_r0, %__sluice_r2;
setp.ne.u32 %__sluice_p1, %__sluice_r0, 0;
@%__sluice_p1 bra $__sluice_decided;
ld.param.u64 %__sluice_rd0, [__sluice_launch];
setp.eq.u64 %__sluice_p2, %__sluice_rd0, 0;
@%__sluice_p2 bra $__sluice_decided;
and.b64 %__sluice_rd3, %__sluice_rd0, {resume_bit};
setp.ne.u64 %__sluice_p5, %__sluice_rd3, 0;
and.b64 %__sluice_rd0, %__sluice_rd0, {record_mask};
mov.u32 %__sluice_r1, %ctaid.x;
mov.u32 %__sluice_r2, %ctaid.y;
mov.u32 %__sluice_r3, %ctaid.z;
mov.u32 %__sluice_r4, %nctaid.x;
mov.u32 %__sluice_r5, %nctaid.y;
mad.lo.u32 %__sluice_r2, %__sluice_r3, %__sluice_r5, %__sluice_r2;
mul.wide.u32 %__sluice_rd1, %__sluice_r2, %__sluice_r4;
cvt.u64.u32 %__sluice_rd2, %__sluice_r1;
add.u64 %__sluice_rd1, %__sluice_rd1, %__sluice_rd2;
shr.u64 %__sluice_rd2, %__sluice_rd1, 5;
shl.b64 %__sluice_rd2, %__sluice_rd2, 2;
add.u64 %__sluice_rd2, %__sluice_rd2, %__sluice_rd0;
cvt.u32.u64 %__sluice_r6, %__sluice_rd1;
and.b32 %__sluice_r6, %__sluice_r6, 31;
mov.u32 %__sluice_r7, 1;
shl.b32 %__sluice_r7, %__sluice_r7, %__sluice_r6;
ld.global.u64 %__sluice_rd3, [__sluice_kill_flag];
@%__sluice_p5 mov.u64 %__sluice_rd3, 0;
mov.u32 %__sluice_r8, 0;
setp.ne.u64 %__sluice_p3, %__sluice_rd3, 0;
@%__sluice_p3 ld.volatile.global.u32 %__sluice_r8, [%__sluice_rd3];
setp.ne.u32 %__sluice_p3, %__sluice_r8, 0;
@%__sluice_p3 bra $__sluice_killed;
atom.global.or.b32 %__sluice_r8, [%__sluice_rd2+{done}], %__sluice_r7;
and.b32 %__sluice_r8, %__sluice_r8, %__sluice_r7;
setp.ne.u32 %__sluice_p0, %__sluice_r8, 0;
bra.uni $__sluice_decided;
$__sluice_killed:
ld.volatile.global.u32 %__sluice_r8, [%__sluice_rd2+{done}];
and.b32 %__sluice_r8, %__sluice_r8, %__sluice_r7;
setp.eq.u32 %__sluice_p4, %__sluice_r8, 0;
mov.u32 %__sluice_r9, 1;
@%__sluice_p4 st.global.u32 [%__sluice_rd0+{killed}], %__sluice_r9;
mov.pred %__sluice_p0, 1;
$__sluice_decided:
{broadcast}
@%__sluice_p0 ret;
}}
)";

constexpr std::string_view kBarrierBroadcast = "bar.red.or.pred %__sluice_p0, 0, %__sluice_p0;";

constexpr std::string_view kSharedBroadcast = R"(selp.u32 %__sluice_r9, 1, 0, %__sluice_p0;
@!%__sluice_p1 st.shared.u32 [__sluice_skip], %__sluice_r9;
bar.sync 0;
ld.shared.u32 %__sluice_r9, [__sluice_skip];
setp.ne.u32 %__sluice_p0, %__sluice_r9, 0;)";

std::string prologue_text(Broadcast broadcast) {
  const bool shared = broadcast == Broadcast::shared_word;
  return fmt::format(
      fmt::runtime(kDecide),
      fmt::arg("shared_declaration", shared ? ".shared .align 4 .u32 __sluice_skip;" : ""),
      fmt::arg("broadcast", shared ? kSharedBroadcast : kBarrierBroadcast),
      fmt::arg("done", kill_abi::kDoneOffset), fmt::arg("killed", kill_abi::kKilledOffset),
      fmt::arg("resume_bit", kill_abi::kResumeBit),
      fmt::arg("record_mask", fmt::format("{:#018x}", ~kill_abi::kResumeBit)));
}

Variable kill_flag_variable() {
  auto word = [](std::string text) { return Token{TokenKind::word, std::move(text), 0}; };
  Variable flag;
  flag.linkage = {".visible"};
  flag.space = ".global";
  flag.qualifiers = {word(".align"), Token{TokenKind::number, "8", 0}, word(".u64")};
  flag.type = ".u64";
  flag.name = std::string(kill_abi::kKillFlagSymbol);
  flag.has_initializer = true;
  flag.initializer = {Token{TokenKind::number, "0", 0}};
  return flag;
}

Param launch_param() {
  Param param;
  param.space = ".param";
  param.type = ".u64";
  param.name = std::string(kill_abi::kLaunchParamName);
  return param;
}

}  // namespace

std::string_view to_string(Broadcast broadcast) {
  return broadcast == Broadcast::shared_word ? "shared-word" : "barrier-reduction";
}

std::size_t Instrumented::instrumented_count() const {
  std::size_t count = 0;
  for (const InstrumentedKernel& kernel : kernels) count += kernel.instrumented ? 1 : 0;
  return count;
}

std::string cache_key(std::string_view ptx, const InstrumentOptions& options) {
  return fmt::format("{}-{}{}-{:016x}-{:x}", kRewriterVersion,
                     options.broadcast == Broadcast::shared_word ? 's' : 'b',
                     options.analysis.allow_uninitialized_reads ? "m" : "",
                     fnv1a(ptx.data(), ptx.size()), ptx.size());
}

Result<Instrumented> instrument_module(const Module& module, std::string_view source_ptx,
                                       const InstrumentOptions& options) {
  Instrumented result;
  result.cache_key = cache_key(source_ptx, options);
  const std::vector<KernelAnalysis> analyses = analyze_module(module, options.analysis);
  SLUICE_PTX_TRY(prologue, parse_statements(prologue_text(options.broadcast)));

  Module twin = module;
  std::size_t entry_index = 0;
  for (ModuleItem& item : twin.items) {
    auto* function = std::get_if<Function>(&item);
    if (function == nullptr || !function->is_entry) continue;
    InstrumentedKernel kernel;
    kernel.name = function->name;
    kernel.analysis = analyses.at(entry_index++);
    auto layout = layout_params(function->params);
    if (layout) kernel.original_params = *layout;
    if (kernel.analysis.killable()) {
      kernel.instrumented = true;
      kernel.launch_param_offset = (kernel.original_params.size + 7) / 8 * 8;
      kernel.twin_param_bytes = kernel.launch_param_offset + 8;
      function->has_params = true;
      function->params.push_back(launch_param());
      function->body.insert(function->body.begin(), prologue.begin(), prologue.end());
    }
    result.kernels.push_back(std::move(kernel));
  }
  if (result.instrumented_count() > 0) twin.items.insert(twin.items.begin(), kill_flag_variable());
  result.ptx = print_module(twin);
  return result;
}

Result<Instrumented> instrument(std::string_view ptx, const InstrumentOptions& options) {
  SLUICE_PTX_TRY(module, parse_module(ptx));
  return instrument_module(module, ptx, options);
}

}  // namespace sluice::ptx
