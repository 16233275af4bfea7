// The ABI between an instrumented twin kernel, the shim that launches it and sluiced that kills it
// (docs/architecture.md, "Contract: kill instrumentation"). Both sides include this header; nothing
// here depends on the rest of the rewriter.
#pragma once

#include <cstdint>
#include <string_view>

namespace sluice::ptx::kill_abi {

// Module-scope `.visible .global .align 8 .u64` in every twin module. The shim stores the device
// address of the client's 32-bit kill word in it once per twin module (cuModuleGetGlobal); 0 means
// "never killed". sluiced writes the kill word itself: non-zero means "stop starting blocks".
inline constexpr std::string_view kKillFlagSymbol = "__sluice_kill_flag";

// `.param .u64` appended after the original parameters of each instrumented entry: the device
// address of the launch record, or 0 for an untracked launch (every block runs). Bit 0 set
// (kResumeBit; records are 8-byte aligned, so the address never has it) makes the launch a
// resume: its blocks skip only where their done bit is set and never read the kill word. The
// launch that finishes a killed one is a resume, so that a kill raised again while it runs cannot
// leave blocks that never run.
inline constexpr std::string_view kLaunchParamName = "__sluice_launch";
inline constexpr std::uint64_t kResumeBit = 1;

// Every name the rewriter introduces starts with this; inputs that already use it are refused.
inline constexpr std::string_view kReservedPrefix = "__sluice_";

// Launch record, in device memory, zeroed by the shim before the first launch:
//   u32 killed      set to 1 by a block that skipped because the kill word was non-zero
//   u32 reserved
//   u32 done[]      bit b of done[w]: block 32*w+b has started (so it will finish)
// Block numbers are linear: ctaid.x + nctaid.x * (ctaid.y + nctaid.y * ctaid.z).
// Relaunching the same twin with the same parameters and record runs exactly the blocks whose bit
// is clear (all of them when the relaunch is a resume, kResumeBit).
inline constexpr std::uint32_t kKilledOffset = 0;
inline constexpr std::uint32_t kReservedOffset = 4;
inline constexpr std::uint32_t kDoneOffset = 8;

// Bytes of the launch record of a grid with `blocks` blocks in all.
constexpr std::uint64_t launch_record_bytes(std::uint64_t blocks) {
  return kDoneOffset + 4 * ((blocks + 31) / 32);
}

// Linear block number of block (x, y, z) in a grid of (gx, gy, gz) blocks, as the twin computes it.
constexpr std::uint64_t linear_block(std::uint32_t x, std::uint32_t y, std::uint32_t z,
                                     std::uint32_t gx, std::uint32_t gy) {
  return x + std::uint64_t{gx} * (y + std::uint64_t{gy} * z);
}

}  // namespace sluice::ptx::kill_abi
