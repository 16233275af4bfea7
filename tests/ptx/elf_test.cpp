// The ELF reader on cubins and host shared libraries made here, and on broken headers.
#include "sluice/ptx/elf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include "sluice/ptx/ptx.h"
#include "test_support.h"

namespace sluice::ptx {
namespace {

using testing::as_bytes;
using testing::generated_dir;
using testing::read_bytes;

std::set<std::string> ptx_entries() {
  auto module = parse_module(testing::read_text(generated_dir() / "kernels.ptx"));
  EXPECT_TRUE(module);
  std::set<std::string> names;
  for (const Function* entry : module->entries()) names.insert(entry->name);
  return names;
}

TEST(Cubin, ListsTheKernelsOfItsPtx) {
  SLUICE_REQUIRE_GENERATED();
  const std::vector<std::byte> data = read_bytes(generated_dir() / "kernels.sm_80.cubin");
  auto cubin = parse_elf(as_bytes(data));
  ASSERT_TRUE(cubin) << cubin.error().message;
  EXPECT_EQ(cubin->machine, kElfMachineCuda);
  EXPECT_EQ(cubin_arch(*cubin), 80u);
  ASSERT_NE(cubin->find_section(".nv.info"), nullptr);
  auto kernels = cubin_kernels(*cubin);
  ASSERT_TRUE(kernels) << kernels.error().message;
  const std::set<std::string> names(kernels->begin(), kernels->end());
  EXPECT_EQ(names, ptx_entries());
  // The device function wait_for is a function symbol but not an entry.
  EXPECT_FALSE(names.contains("_Z8wait_forPVi"));
}

TEST(SharedLibrary, FindsItsFatbin) {
  SLUICE_REQUIRE_GENERATED();
  const std::vector<std::byte> data = read_bytes(generated_dir() / "libkernels.so");
  auto elf = parse_elf(as_bytes(data));
  ASSERT_TRUE(elf) << elf.error().message;
  EXPECT_EQ(elf->machine, 62);  // EM_X86_64
  auto fatbins = elf_fatbins(*elf);
  ASSERT_TRUE(fatbins) << fatbins.error().message;
  ASSERT_FALSE(fatbins->empty());
  std::set<std::string> archs;
  for (const Fatbin& fatbin : *fatbins) {
    EXPECT_GE(fatbin.offset, elf->find_section(".nv_fatbin")->offset);
    for (const FatbinEntry& entry : fatbin.entries) archs.insert(entry.arch_name());
  }
  EXPECT_EQ(archs, (std::set<std::string>{"sm_80", "compute_80"}));
}

template <typename T>
void poke(std::vector<std::byte>& data, std::size_t offset, T value) {
  std::memcpy(data.data() + offset, &value, sizeof value);
}

TEST(MalformedElf, BrokenHeadersAreNamedErrors) {
  SLUICE_REQUIRE_GENERATED();
  const std::vector<std::byte> good = read_bytes(generated_dir() / "kernels.sm_80.cubin");
  std::uint64_t shoff = 0;
  std::memcpy(&shoff, good.data() + 0x28, sizeof shoff);
  struct Case {
    std::size_t offset;
    std::uint64_t value;
    int width;
    std::string expected;
  };
  const Case cases[] = {
      {0, 0x12345678, 4, "not an ELF file"},
      {4, 1, 1, "only 64-bit little-endian"},
      {0x28, 1ull << 40, 8, "section header table"},
      {0x3a, 40, 2, "section header size 40"},
      {0x3e, 999, 2, "name table index 999"},
      {shoff + 64 + 0x18, 1ull << 40, 8, "runs past the end of the file"},  // section 1's offset
      {shoff + 64 + 0x00, 0xfffffff, 4, "outside the string table"},        // section 1's name
  };
  for (const Case& c : cases) {
    std::vector<std::byte> data = good;
    if (c.width == 1) data[c.offset] = static_cast<std::byte>(c.value);
    if (c.width == 2) poke(data, c.offset, static_cast<std::uint16_t>(c.value));
    if (c.width == 4) poke(data, c.offset, static_cast<std::uint32_t>(c.value));
    if (c.width == 8) poke(data, c.offset, c.value);
    auto elf = parse_elf(as_bytes(data));
    ASSERT_FALSE(elf) << c.expected;
    EXPECT_NE(elf.error().message.find(c.expected), std::string::npos)
        << "got: " << elf.error().message;
    EXPECT_NE(elf.error().message.find("offset 0x"), std::string::npos) << elf.error().message;
  }
  for (std::size_t length = 0; length < 64; ++length) {
    EXPECT_FALSE(parse_elf(as_bytes(good).first(length))) << length;
  }
}

TEST(MalformedElf, SymbolTableLinkOutOfRange) {
  SLUICE_REQUIRE_GENERATED();
  std::vector<std::byte> data = read_bytes(generated_dir() / "kernels.sm_80.cubin");
  auto elf = parse_elf(as_bytes(data));
  ASSERT_TRUE(elf);
  std::uint64_t shoff = 0;
  std::memcpy(&shoff, data.data() + 0x28, sizeof shoff);
  for (std::size_t i = 0; i < elf->sections.size(); ++i) {
    if (elf->sections[i].name == ".symtab") poke(data, shoff + i * 64 + 0x28, std::uint32_t{500});
  }
  auto broken = parse_elf(as_bytes(data));
  ASSERT_TRUE(broken);
  auto kernels = cubin_kernels(*broken);
  ASSERT_FALSE(kernels);
  EXPECT_NE(kernels.error().message.find("links to section 500"), std::string::npos)
      << kernels.error().message;
}

}  // namespace
}  // namespace sluice::ptx
