// What operations do to memory when they run on the fake device.
//
// Engine operations (kernels, copies, memsets) finish in two steps: prepare_effect, under the
// driver lock, checks every range the operation will touch against the allocation table (a device
// fault is CUDA_ERROR_ILLEGAL_ADDRESS) and resolves host kernels; apply_effect, without the lock,
// does the work. Stream memory operations run under the lock (run_mem_write, mem_wait_satisfied).
//
// Builtin kernel ops (parameters in order; pointers are device addresses):
//   noop
//   fill_u32(u64 ptr, u32 value, u32 count)       ptr[i] = value for i < count
//   affine_u32(u64 ptr, u32 mul, u32 add, u32 count)  ptr[i] = ptr[i] * mul + add (order-sensitive)
//   append_u32(u64 log, u32 tag)                  log[1 + log[0]++] = tag
//   copy(u64 dst, u64 src, u64 bytes)
//   spin(u64 ns_per_block, ...)                   device time only: ns_per_block x waves
#pragma once

#include <cstdint>
#include <vector>

#include "driver.h"
#include "objects.h"

namespace sluice::fake {

struct EffectPlan {
  HostKernel host;                  // op=host: the registered implementation
  std::uintptr_t append_limit = 0;  // append_u32: end of the log's allocation
  std::vector<std::size_t> param_offsets;
  std::vector<std::size_t> param_sizes;
  bool skip = false;  // nothing to do (failed already, or dropped by a sticky error)
};

CUresult prepare_effect(Driver& drv, const Op& op, EffectPlan& plan);
CUresult apply_effect(const Op& op, const EffectPlan& plan);

// True when applying the effect may take the host long (large copies, memsets and builtin ops,
// host kernels): the executor hands such effects to its effect worker instead of running them.
bool slow_effect(const Op& op, const EffectPlan& plan);

// Reads parameter `index` of a kernel's parameter buffer as an unsigned integer (at most 8 bytes).
std::uint64_t kernel_param(const KernelWork& kernel, std::size_t index);

// Kill-instrumented twins (docs/architecture.md, "Contract: kill instrumentation"). Their grids
// run wave by wave (a wave is as many blocks as the grid has SMs); at the start of each wave every
// block does the twin's entry check: a block whose done bit is set skips, a block that reads a
// non-zero kill word sets `killed` and skips (a resume launch, bit 0 of the record parameter set,
// never reads the word), any other block sets its done bit and runs. Returns
// the device time of the next wave with a running block (waves where every block skips take no
// time), 0 when the grid is over, or a fault when the check touches invalid memory.
struct Wave {
  std::uint64_t duration_ns = 0;
  CUresult fault = CUDA_SUCCESS;
};
Wave next_wave(Driver& drv, KernelWork& kernel, unsigned sm_count);

// Stream memory operations. The address was checked when the operation was submitted.
CUresult run_mem_write(Driver& drv, const MemWriteWork& write);
bool mem_wait_satisfied(const MemWaitWork& wait);

}  // namespace sluice::fake
