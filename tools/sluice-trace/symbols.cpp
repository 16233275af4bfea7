#include "symbols.h"

#include <elf.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>

#include "sluice/ptx/mapped_file.h"

namespace sluice::trace {

namespace {

// `count` objects of T at `offset` of `bytes`, or nullptr when they do not fit.
template <typename T>
const T* at(ptx::Bytes bytes, std::uint64_t offset, std::uint64_t count = 1) {
  if (count > bytes.size() / sizeof(T) || offset > bytes.size() - count * sizeof(T)) return nullptr;
  return reinterpret_cast<const T*>(bytes.data() + offset);
}

bool starts_with_any(std::string_view name, std::initializer_list<std::string_view> prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(), [&](std::string_view p) { return name.starts_with(p); });
}

// The file offset of virtual address `address`, through the loadable segments.
std::optional<std::uint64_t> file_offset(const Elf64_Phdr* segments, std::size_t count, std::uint64_t address) {
  for (std::size_t i = 0; i < count; ++i) {
    const Elf64_Phdr& s = segments[i];
    if (s.p_type == PT_LOAD && address >= s.p_vaddr && address < s.p_vaddr + s.p_filesz) {
      return address - s.p_vaddr + s.p_offset;
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<EntryKind> classify_entry_point(std::string_view name) {
  if (starts_with_any(name, {"cuLaunchKernel", "cuLaunchCooperativeKernel", "cuGraphLaunch"})) {
    return EntryKind::launch;
  }
  if (name.starts_with("cuMemcpy")) return EntryKind::copy;
  return std::nullopt;
}

Result<std::vector<DriverSymbol>> driver_entry_points(const std::string& path) {
  auto file = ptx::MappedFile::open(path);
  if (!file) return std::move(file).take_error();
  ptx::Bytes bytes = file->bytes();
  const auto* header = at<Elf64_Ehdr>(bytes, 0);
  if (header == nullptr || std::memcmp(header->e_ident, ELFMAG, SELFMAG) != 0 ||
      header->e_ident[EI_CLASS] != ELFCLASS64) {
    return make_error("{}: not a 64-bit ELF file", path);
  }
  if (header->e_type != ET_DYN) return make_error("{}: not a shared library", path);
  const auto* sections = at<Elf64_Shdr>(bytes, header->e_shoff, header->e_shnum);
  const auto* segments = at<Elf64_Phdr>(bytes, header->e_phoff, header->e_phnum);
  if (sections == nullptr || segments == nullptr) return make_error("{}: truncated ELF headers", path);

  // address -> the symbol kept for it (the shortest name, so aliases report the base name)
  std::map<std::uint64_t, DriverSymbol> by_offset;
  bool has_dynsym = false;
  for (std::size_t i = 0; i < header->e_shnum; ++i) {
    const Elf64_Shdr& table = sections[i];
    if (table.sh_type != SHT_DYNSYM || table.sh_entsize != sizeof(Elf64_Sym) || table.sh_link >= header->e_shnum) {
      continue;
    }
    has_dynsym = true;
    const Elf64_Shdr& strings = sections[table.sh_link];
    const auto* symbols = at<Elf64_Sym>(bytes, table.sh_offset, table.sh_size / sizeof(Elf64_Sym));
    const char* names = at<char>(bytes, strings.sh_offset, strings.sh_size);
    if (symbols == nullptr || names == nullptr) return make_error("{}: truncated dynamic symbol table", path);
    for (std::size_t k = 0; k < table.sh_size / sizeof(Elf64_Sym); ++k) {
      const Elf64_Sym& sym = symbols[k];
      if (ELF64_ST_TYPE(sym.st_info) != STT_FUNC || sym.st_shndx == SHN_UNDEF || sym.st_value == 0 ||
          sym.st_name >= strings.sh_size) {
        continue;
      }
      std::string_view name(names + sym.st_name, strnlen(names + sym.st_name, strings.sh_size - sym.st_name));
      auto kind = classify_entry_point(name);
      if (!kind) continue;
      auto offset = file_offset(segments, header->e_phnum, sym.st_value);
      if (!offset) return make_error("{}: symbol {} lies outside every loadable segment", path, name);
      auto [it, fresh] = by_offset.try_emplace(*offset, DriverSymbol{std::string(name), *offset, *kind});
      if (!fresh && name.size() < it->second.name.size()) it->second.name = std::string(name);
    }
  }
  if (!has_dynsym) return make_error("{}: no dynamic symbol table", path);

  std::vector<DriverSymbol> out;
  for (auto& [offset, symbol] : by_offset) out.push_back(std::move(symbol));
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  bool has_launch = std::any_of(out.begin(), out.end(), [](const auto& s) { return s.name == "cuLaunchKernel"; });
  bool has_copy = std::any_of(out.begin(), out.end(), [](const auto& s) { return s.kind == EntryKind::copy; });
  if (!has_launch) return make_error("{}: symbol cuLaunchKernel not found: not a CUDA driver library", path);
  if (!has_copy) return make_error("{}: no cuMemcpy* symbol found: not a CUDA driver library", path);
  return out;
}

std::string find_driver_library() {
  std::vector<std::string> candidates;
  // `ldconfig -p` lines look like "\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1".
  for (const char* ldconfig : {"/sbin/ldconfig", "/usr/sbin/ldconfig"}) {
    if (access(ldconfig, X_OK) != 0) continue;
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(fmt::format("{} -p 2>/dev/null", ldconfig).c_str(), "r"), pclose);
    if (!pipe) break;
    std::array<char, 1024> line{};
    while (std::fgets(line.data(), static_cast<int>(line.size()), pipe.get()) != nullptr) {
      std::string_view text(line.data());
      auto arrow = text.find(" => ");
      if (text.find("libcuda.so.1 ") == std::string_view::npos || arrow == std::string_view::npos) continue;
      if (text.find("x86-64") == std::string_view::npos) continue;
      std::string_view target = text.substr(arrow + 4);
      while (!target.empty() && (target.back() == '\n' || target.back() == ' ')) target.remove_suffix(1);
      candidates.emplace_back(target);
    }
    break;
  }
  for (const char* dir : {"/usr/lib/x86_64-linux-gnu", "/usr/local/nvidia/lib64", "/usr/lib64"}) {
    candidates.push_back(fmt::format("{}/libcuda.so.1", dir));
  }
  for (const std::string& candidate : candidates) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(candidate, ec)) return std::filesystem::canonical(candidate, ec).string();
  }
  return {};
}

}  // namespace sluice::trace
