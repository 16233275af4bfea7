#include "sluice/ptx/elf.h"

#include <algorithm>
#include <cstring>

#include "byte_reader.h"

namespace sluice::ptx {
namespace {

using detail::ByteReader;

constexpr std::uint32_t kShtSymtab = 2;
constexpr std::uint32_t kShtNobits = 8;
constexpr std::uint16_t kShnXindex = 0xffff;
constexpr std::uint64_t kSectionHeaderSize = 64;
constexpr std::uint64_t kSymbolSize = 24;
constexpr std::uint8_t kSttFunc = 2;
constexpr std::uint8_t kStbGlobal = 1;

// A NUL-terminated string at `offset` inside a string table section.
Result<std::string> string_at(const ByteReader& in, const ElfSection& table, std::uint64_t offset,
                              std::string_view what) {
  if (offset >= table.size) {
    return make_error("offset {:#x}: {} name at {:#x} lies outside the string table ({} bytes)",
                      table.offset, what, offset, table.size);
  }
  SLUICE_PTX_TRY(bytes, in.slice(table.offset + offset, table.size - offset, "string table"));
  const auto* text = reinterpret_cast<const char*>(bytes.data());
  const std::size_t length = strnlen(text, bytes.size());
  if (length == bytes.size()) {
    return make_error("offset {:#x}: {} name is not NUL-terminated inside its string table",
                      table.offset + offset, what);
  }
  return std::string(text, length);
}

}  // namespace

const ElfSection* ElfFile::find_section(std::string_view name) const {
  for (const ElfSection& section : sections) {
    if (section.name == name) return &section;
  }
  return nullptr;
}

Bytes ElfFile::contents(const ElfSection& section) const {
  if (section.type == kShtNobits) return {};
  return data.subspan(section.offset, section.size);
}

Result<ElfFile> parse_elf(Bytes data) {
  ByteReader in(data, 0);
  SLUICE_PTX_TRY(magic, in.read<std::uint32_t>(0, "ELF magic"));
  if (magic != 0x464c457fu)
    return make_error("offset 0x0: not an ELF file (magic {:#010x})", magic);
  SLUICE_PTX_TRY(elf_class, in.read<std::uint8_t>(4, "ELF class"));
  SLUICE_PTX_TRY(encoding, in.read<std::uint8_t>(5, "ELF data encoding"));
  if (elf_class != 2 || encoding != 1) {
    return make_error("offset 0x4: only 64-bit little-endian ELF is supported (class {}, data {})",
                      elf_class, encoding);
  }
  ElfFile file;
  file.data = data;
  SLUICE_PTX_TRY(abi_version, in.read<std::uint8_t>(8, "EI_ABIVERSION"));
  SLUICE_PTX_TRY(machine, in.read<std::uint16_t>(0x12, "e_machine"));
  SLUICE_PTX_TRY(shoff, in.read<std::uint64_t>(0x28, "e_shoff"));
  SLUICE_PTX_TRY(flags, in.read<std::uint32_t>(0x30, "e_flags"));
  SLUICE_PTX_TRY(shentsize, in.read<std::uint16_t>(0x3a, "e_shentsize"));
  SLUICE_PTX_TRY(shnum_field, in.read<std::uint16_t>(0x3c, "e_shnum"));
  SLUICE_PTX_TRY(shstrndx_field, in.read<std::uint16_t>(0x3e, "e_shstrndx"));
  file.machine = machine;
  file.abi_version = abi_version;
  file.flags = flags;
  if (shoff == 0) return file;  // no section headers
  if (shentsize != kSectionHeaderSize) {
    return make_error("offset 0x3a: section header size {} (expected {})", shentsize,
                      kSectionHeaderSize);
  }
  // Extended numbering: counts that do not fit 16 bits live in section header 0.
  std::uint64_t shnum = shnum_field;
  std::uint64_t shstrndx = shstrndx_field;
  if (shnum == 0) {
    SLUICE_PTX_TRY(extended, in.read<std::uint64_t>(shoff + 0x20, "section 0 sh_size"));
    shnum = extended;
  }
  if (shstrndx == kShnXindex) {
    SLUICE_PTX_TRY(extended, in.read<std::uint32_t>(shoff + 0x28, "section 0 sh_link"));
    shstrndx = extended;
  }
  if (shnum > data.size() / kSectionHeaderSize) {
    return make_error("offset {:#x}: {} section headers cannot fit in {} bytes", shoff, shnum,
                      data.size());
  }
  if (!in.has(shoff, shnum * kSectionHeaderSize)) {
    return make_error(
        "offset 0x28: section header table ({} entries at {:#x}) runs past the end of "
        "the file",
        shnum, shoff);
  }
  std::vector<std::uint32_t> name_offsets;
  for (std::uint64_t i = 0; i < shnum; ++i) {
    const std::uint64_t at = shoff + i * kSectionHeaderSize;
    ElfSection section;
    SLUICE_PTX_TRY(name, in.read<std::uint32_t>(at + 0x00, "sh_name"));
    SLUICE_PTX_TRY(type, in.read<std::uint32_t>(at + 0x04, "sh_type"));
    SLUICE_PTX_TRY(sh_flags, in.read<std::uint64_t>(at + 0x08, "sh_flags"));
    SLUICE_PTX_TRY(offset, in.read<std::uint64_t>(at + 0x18, "sh_offset"));
    SLUICE_PTX_TRY(size, in.read<std::uint64_t>(at + 0x20, "sh_size"));
    SLUICE_PTX_TRY(link, in.read<std::uint32_t>(at + 0x28, "sh_link"));
    SLUICE_PTX_TRY(info, in.read<std::uint32_t>(at + 0x2c, "sh_info"));
    SLUICE_PTX_TRY(entsize, in.read<std::uint64_t>(at + 0x38, "sh_entsize"));
    if (type != kShtNobits && i != 0 && !in.has(offset, size)) {
      return make_error(
          "offset {:#x}: section {} ({:#x} bytes at {:#x}) runs past the end of the file", at, i,
          size, offset);
    }
    section.type = type;
    section.flags = sh_flags;
    section.offset = offset;
    section.size = i == 0 ? 0 : size;
    section.link = link;
    section.info = info;
    section.entsize = entsize;
    name_offsets.push_back(name);
    file.sections.push_back(std::move(section));
  }
  if (shstrndx != 0) {
    if (shstrndx >= file.sections.size()) {
      return make_error("offset 0x3e: section name table index {} is out of range ({} sections)",
                        shstrndx, file.sections.size());
    }
    const ElfSection names = file.sections[shstrndx];
    for (std::size_t i = 0; i < file.sections.size(); ++i) {
      SLUICE_PTX_TRY(name, string_at(in, names, name_offsets[i], "section"));
      file.sections[i].name = std::move(name);
    }
  }
  return file;
}

Result<std::vector<std::string>> cubin_kernels(const ElfFile& cubin) {
  std::vector<std::string> kernels;
  ByteReader in(cubin.data, 0);
  for (const ElfSection& symtab : cubin.sections) {
    if (symtab.type != kShtSymtab) continue;
    if (symtab.link >= cubin.sections.size()) {
      return make_error("offset {:#x}: symbol table links to section {} of {}", symtab.offset,
                        symtab.link, cubin.sections.size());
    }
    const ElfSection& strings = cubin.sections[symtab.link];
    for (std::uint64_t at = symtab.offset; at + kSymbolSize <= symtab.offset + symtab.size;
         at += kSymbolSize) {
      SLUICE_PTX_TRY(name, in.read<std::uint32_t>(at, "st_name"));
      SLUICE_PTX_TRY(info, in.read<std::uint8_t>(at + 4, "st_info"));
      SLUICE_PTX_TRY(other, in.read<std::uint8_t>(at + 5, "st_other"));
      const bool kernel =
          (info & 0xf) == kSttFunc && (info >> 4) == kStbGlobal && (other & kStoCudaEntry) != 0;
      if (!kernel) continue;
      SLUICE_PTX_TRY(symbol, string_at(in, strings, name, "symbol"));
      kernels.push_back(std::move(symbol));
    }
  }
  return kernels;
}

std::uint32_t cubin_arch(const ElfFile& cubin) {
  if (cubin.machine != kElfMachineCuda) return 0;
  return cubin.abi_version >= 8 ? (cubin.flags >> 8) & 0xff : cubin.flags & 0xff;
}

Result<std::vector<Fatbin>> elf_fatbins(const ElfFile& file) {
  std::vector<Fatbin> fatbins;
  for (std::string_view name : {".nv_fatbin", "__nv_relfatbin"}) {
    const ElfSection* section = file.find_section(name);
    if (section == nullptr || section->type == kShtNobits) continue;
    auto parsed = parse_fatbins(file.contents(*section), section->offset);
    if (!parsed) return std::move(parsed).take_error().context(fmt::format("section {}", name));
    for (Fatbin& fatbin : *parsed) fatbins.push_back(std::move(fatbin));
  }
  return fatbins;
}

}  // namespace sluice::ptx
