// A tiny interpreter for the block-entry check the rewriter emits, so that the kill/resume logic
// of the real PTX text is tested against the contract without a GPU. It runs the instrumented
// entry's first block statement ({ ... }) for the threads of one block, with barriers, over a
// word-addressed global memory. Any instruction it does not know fails the test: a change of the
// emitted PTX must come with a change here.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "sluice/ptx/ptx.h"

namespace sluice::ptx::testing {

struct Dim3 {
  std::uint32_t x = 1, y = 1, z = 1;
};

struct Device {
  std::map<std::uint64_t, std::uint32_t> global;  // byte address (4-aligned) -> 32-bit word
  std::map<std::string, std::uint64_t> symbols;   // module .global name -> address

  std::uint32_t load32(std::uint64_t address) const;
  void store32(std::uint64_t address, std::uint32_t value) { global[address] = value; }
};

struct BlockOutcome {
  bool ran = false;   // the block's threads went past the check
  std::string error;  // interpreter failure (unknown instruction, bad operand)
};

// Runs the check of `entry` (an instrumented twin entry) for block `block` of a grid of `grid`
// blocks of `threads` threads, with `params` (parameter name -> value).
BlockOutcome run_block_check(const Function& entry, Device& device, Dim3 grid, Dim3 block,
                             Dim3 threads, const std::map<std::string, std::uint64_t>& params);

}  // namespace sluice::ptx::testing
