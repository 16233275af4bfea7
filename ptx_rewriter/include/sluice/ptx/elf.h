// A bounded reader for the two kinds of ELF64 little-endian files the rewriter meets: host shared
// libraries (to find their .nv_fatbin section) and cubins (to list their kernels). Only section
// headers, section names and the symbol table are read. Every offset and size is checked against
// the input; a malformed file is an Error naming the field and its offset.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sluice/common/result.h"
#include "sluice/ptx/fatbin.h"

namespace sluice::ptx {

inline constexpr std::uint16_t kElfMachineCuda = 190;  // EM_CUDA
inline constexpr std::uint8_t kStoCudaEntry = 0x10;    // st_other bit of a kernel symbol

struct ElfSection {
  std::string name;
  std::uint32_t type = 0;
  std::uint64_t flags = 0;
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
  std::uint32_t link = 0;
  std::uint32_t info = 0;
  std::uint64_t entsize = 0;
};

struct ElfFile {
  Bytes data;
  std::uint16_t machine = 0;
  std::uint8_t abi_version = 0;  // e_ident[EI_ABIVERSION]
  std::uint32_t flags = 0;
  std::vector<ElfSection> sections;

  const ElfSection* find_section(std::string_view name) const;
  // The section's bytes (empty for SHT_NOBITS); the range was checked when parsing.
  Bytes contents(const ElfSection& section) const;
};

Result<ElfFile> parse_elf(Bytes data);

// The kernels of a cubin: global function symbols marked as CUDA entries.
Result<std::vector<std::string>> cubin_kernels(const ElfFile& cubin);

// The SM of a cubin from its ELF header (0 when unknown): bits 8-15 of e_flags in the ABI of
// CUDA 12 and later (ABI version 8), bits 0-7 before.
std::uint32_t cubin_arch(const ElfFile& cubin);

// The fat binaries of a host shared library or executable: the containers of its .nv_fatbin and
// __nv_relfatbin sections, with offsets relative to the start of the file.
Result<std::vector<Fatbin>> elf_fatbins(const ElfFile& file);

}  // namespace sluice::ptx
