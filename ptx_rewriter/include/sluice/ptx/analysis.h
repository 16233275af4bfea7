// Which kernels of a PTX module may be killed block by block and resumed, and why not.
//
// A kernel is killable when skipping some of its blocks and running them in a later launch gives
// the same result as one uninterrupted launch. The rules, each with a reason code:
//
// cluster: cluster directives (.reqnctapercluster, .explicitcluster, .maxclusterrank), %cluster_*
//   and %clusterid registers, barrier.cluster, mapa, getctarank, .multicast::cluster: blocks of a
//   cluster wait for each other.
// cooperative: %envreg registers, which hold the grid-synchronisation workspace of a cooperative
//   launch (cooperative_groups::this_grid().sync()).
// communicating: heuristics for blocks that wait for or talk to other blocks through memory:
//   - a load of global or generic memory that is .volatile, .acquire, .relaxed with .gpu/.sys
//     scope, or .cv, inside a loop (a spin-wait on a flag);
//   - nanosleep inside a loop;
//   - an atom whose result (through registers, or through a store to and a load from the same
//     state space) becomes a predicate guarding an instruction, or a branch operand: counters of
//     finished blocks, work queues, locks;
//   - multimem (NVLink multicast: NCCL-style kernels).
//   A loop is the range between a label and a later branch back to it. A reduction with red, or
//   with an atom whose result is unused, stays killable.
// module-data: .global/.const variables the kernel (or a function it calls) uses that a twin module
//   cannot mirror: .extern ones, managed ones, texture references, ones any function of the module
//   writes (directly or through an address taken from the symbol), and ones without an initializer
//   (the host fills them; the twin would see zeros). With
//   AnalysisOptions::allow_uninitialized_reads read-only uninitialized data is accepted instead and
//   listed in `mirror`: the shim must then copy it from the original module before each twin
//   launch.
// extern-function: a call to a function declared .extern that the JIT cannot resolve (anything but
//   vprintf, malloc, free, __assertfail): the PTX needs device linking.
// no-body: an .entry declared without a body.
// param-space: no room for the appended 8-byte launch parameter (4 KiB before PTX 8.1 or sm_70,
//   else 32764 bytes).
// address-size: .address_size 32.
// reserved-name: the module already uses the prefix "__sluice_" (e.g. it is a twin).
//
// Notes do not block a kill; they say what the shim or the user should know (grid-stride loops
// where each block can run long, initialized module data assumed unchanged by the host).
//
// Thread rules: pure functions.
#pragma once

#include <string>
#include <vector>

#include "sluice/ptx/ptx.h"

namespace sluice::ptx {

struct SkipReason {
  std::string code;     // one of the codes above
  std::string message;  // names the instruction, register, variable or directive
  int line = 0;         // PTX line, 0 when the reason is not tied to one
};

struct KernelAnalysis {
  std::string name;
  std::vector<SkipReason> reasons;  // empty: killable
  std::vector<std::string> notes;
  std::vector<std::string> module_data;  // module .global/.const variables the kernel uses
  std::vector<std::string> mirror;       // uninitialized ones the shim must copy (see above)

  bool killable() const { return reasons.empty(); }
};

struct AnalysisOptions {
  bool allow_uninitialized_reads = false;
};

std::vector<KernelAnalysis> analyze_module(const Module& module,
                                           const AnalysisOptions& options = {});

// The largest kernel parameter buffer the module's PTX version and target allow.
std::uint32_t max_param_bytes(const Module& module);

}  // namespace sluice::ptx
