// The fatbin reader on fatbins made here by `fatbinary` and nvcc in every compression mode, on
// slices of the toolkit's own libraries, and on malformed inputs.
#include "sluice/ptx/fatbin.h"

#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include "sluice/ptx/elf.h"
#include "sluice/ptx/mapped_file.h"
#include "sluice/ptx/ptx.h"
#include "test_support.h"

namespace sluice::ptx {
namespace {

using testing::as_bytes;
using testing::generated_dir;
using testing::read_bytes;
using testing::read_text;

Compression expected_compression(const std::string& mode) {
  if (mode == "none") return Compression::none;
  if (mode == "speed") return Compression::lz4;
  return Compression::zstd;  // size, balance, default
}

std::set<std::string> entry_names(const Module& module) {
  std::set<std::string> names;
  for (const Function* entry : module.entries()) names.insert(entry->name);
  return names;
}

class ExactFatbin : public ::testing::TestWithParam<std::string> {};

// fatbinary packs the PTX and cubin we give it; every mode must give those bytes back exactly.
TEST_P(ExactFatbin, EntriesDecompressToTheirInputs) {
  SLUICE_REQUIRE_GENERATED();
  const std::string mode = GetParam();
  const std::vector<std::byte> data = read_bytes(generated_dir() / ("exact." + mode + ".fatbin"));
  auto fatbin = parse_fatbin(as_bytes(data));
  ASSERT_TRUE(fatbin) << fatbin.error().message;
  EXPECT_EQ(fatbin->size, data.size());
  ASSERT_EQ(fatbin->entries.size(), 2u);

  const FatbinEntry& ptx = fatbin->entries[0];
  EXPECT_TRUE(ptx.is_ptx());
  EXPECT_EQ(ptx.arch, 80u);
  EXPECT_EQ(ptx.arch_name(), "compute_80");
  EXPECT_EQ(ptx.compression, expected_compression(mode));
  // fatbinary strips comments and indentation from PTX: compare the modules, not the text.
  auto text = entry_ptx(ptx);
  ASSERT_TRUE(text) << text.error().message;
  auto packed = parse_module(*text);
  auto source = parse_module(read_text(generated_dir() / "kernels.ptx"));
  ASSERT_TRUE(packed && source);
  EXPECT_EQ(print_module(*packed), print_module(*source));

  const FatbinEntry& elf = fatbin->entries[1];
  EXPECT_TRUE(elf.is_elf());
  EXPECT_EQ(elf.arch_name(), "sm_80");
  EXPECT_EQ(elf.compression, expected_compression(mode));
  auto cubin = entry_contents(elf);
  ASSERT_TRUE(cubin) << cubin.error().message;
  EXPECT_EQ(*cubin, read_bytes(generated_dir() / "kernels.sm_80.cubin"));
}

INSTANTIATE_TEST_SUITE_P(Modes, ExactFatbin,
                         ::testing::Values("none", "speed", "size", "balance", "default"));

class NvccFatbin : public ::testing::TestWithParam<std::string> {};

// nvcc's own fatbins: mode "default" compresses only PTX unless -compress-all is given.
TEST_P(NvccFatbin, EntriesMatchTheSourceKernels) {
  SLUICE_REQUIRE_GENERATED();
  const std::string mode = GetParam();
  const std::vector<std::byte> data = read_bytes(generated_dir() / ("nvcc." + mode + ".fatbin"));
  auto fatbins = parse_fatbins(as_bytes(data));
  ASSERT_TRUE(fatbins) << fatbins.error().message;
  ASSERT_EQ(fatbins->size(), 1u);
  const Fatbin& fatbin = fatbins->front();
  const FatbinEntry* ptx = select_ptx(fatbin, 90);
  ASSERT_NE(ptx, nullptr);
  EXPECT_EQ(ptx->arch_name(), "compute_80");
  EXPECT_EQ(ptx->compression,
            mode == "compress-all" ? Compression::zstd : expected_compression(mode));
  auto text = entry_ptx(*ptx);
  ASSERT_TRUE(text) << text.error().message;
  auto module = parse_module(*text);
  ASSERT_TRUE(module) << module.error().message;
  const auto reference = parse_module(read_text(generated_dir() / "kernels.ptx"));
  ASSERT_TRUE(reference);
  EXPECT_EQ(entry_names(*module), entry_names(*reference));

  const FatbinEntry* elf = nullptr;
  for (const FatbinEntry& entry : fatbin.entries) {
    if (entry.is_elf()) elf = &entry;
  }
  ASSERT_NE(elf, nullptr);
  EXPECT_EQ(elf->arch_name(), "sm_80");
  // Mode "size" and -compress-all compress the cubin too; the other modes only PTX.
  const bool elf_compressed = mode == "size" || mode == "compress-all";
  EXPECT_EQ(elf->compression != Compression::none, elf_compressed);
  auto cubin_bytes = entry_contents(*elf);
  ASSERT_TRUE(cubin_bytes) << cubin_bytes.error().message;
  auto cubin = parse_elf(as_bytes(*cubin_bytes));
  ASSERT_TRUE(cubin) << cubin.error().message;
  auto kernels = cubin_kernels(*cubin);
  ASSERT_TRUE(kernels);
  EXPECT_EQ(std::set<std::string>(kernels->begin(), kernels->end()), entry_names(*reference));
}

INSTANTIATE_TEST_SUITE_P(Modes, NvccFatbin,
                         ::testing::Values("none", "speed", "size", "balance", "default",
                                           "compress-all"));

FatbinEntry entry_for(std::uint32_t arch, std::uint64_t flags) {
  FatbinEntry entry;
  entry.kind = static_cast<std::uint16_t>(EntryKind::ptx);
  entry.arch = arch;
  entry.flags = flags;
  return entry;
}

TEST(SelectPtx, PicksTheNewestPtxTheDeviceCanJit) {
  Fatbin fatbin;
  fatbin.entries = {entry_for(75, 0), entry_for(80, 0), entry_for(90, kFlagArchSpecific),
                    entry_for(100, kFlagFamilySpecific), entry_for(120, 0)};
  fatbin.entries.push_back(entry_for(86, 0));
  fatbin.entries.back().kind = static_cast<std::uint16_t>(EntryKind::elf);  // SASS never counts
  EXPECT_EQ(select_ptx(fatbin, 90)->arch_name(), "compute_90a");
  EXPECT_EQ(select_ptx(fatbin, 89)->arch_name(), "compute_80");
  EXPECT_EQ(select_ptx(fatbin, 103)->arch_name(), "compute_100f");  // same family, newer device
  EXPECT_EQ(select_ptx(fatbin, 110)->arch_name(), "compute_80");    // 90a and 100f do not run here
  EXPECT_EQ(select_ptx(fatbin, 120)->arch_name(), "compute_120");
  EXPECT_EQ(select_ptx(fatbin, 70), nullptr);
}

// ---- real libraries: the first containers of each, every entry decompressed ----
class ToolkitLibrary : public ::testing::TestWithParam<std::string> {};

TEST_P(ToolkitLibrary, FirstContainersDecompressAndParse) {
  const std::string path = (testing::cuda_lib_dir() / GetParam()).string();
  auto file = MappedFile::open(path);
  if (!file) GTEST_SKIP() << file.error().message;
  auto elf = parse_elf(file->bytes());
  ASSERT_TRUE(elf) << elf.error().message;
  const ElfSection* section = elf->find_section(".nv_fatbin");
  ASSERT_NE(section, nullptr);
  const Bytes fatbins = elf->contents(*section);
  std::uint64_t cursor = 0;
  std::set<Compression> seen;
  for (int container = 0; container < 3 && cursor < fatbins.size(); ++container) {
    auto fatbin = parse_fatbin(fatbins.subspan(cursor));
    ASSERT_TRUE(fatbin) << fatbin.error().message;
    cursor += fatbin->size;
    for (const FatbinEntry& entry : fatbin->entries) {
      seen.insert(entry.compression);
      auto contents = entry_contents(entry);
      ASSERT_TRUE(contents) << contents.error().message;
      ASSERT_EQ(contents->size(), entry.content_size());
      if (entry.is_elf()) {
        auto cubin = parse_elf(as_bytes(*contents));
        ASSERT_TRUE(cubin) << cubin.error().message;
        EXPECT_EQ(cubin->machine, kElfMachineCuda);
        auto kernels = cubin_kernels(*cubin);
        ASSERT_TRUE(kernels) << kernels.error().message;
      } else {
        ASSERT_TRUE(entry.is_ptx());
        auto text = entry_ptx(entry);
        ASSERT_TRUE(text);
        auto module = parse_module(*text);
        ASSERT_TRUE(module) << entry.arch_name() << ": " << module.error().message;
        EXPECT_FALSE(module->items.empty());  // some library PTX holds device functions only
      }
    }
  }
  // Every library of CUDA 13's lib64 compresses its fatbin entries with zstd.
  EXPECT_EQ(seen, std::set<Compression>{Compression::zstd});
}

INSTANTIATE_TEST_SUITE_P(Cuda13, ToolkitLibrary,
                         ::testing::Values("libcublasLt.so.13", "libcublas.so.13",
                                           "libcudnn_ops.so.9", "libnccl.so.2"));

// ---- malformed input ----
std::vector<std::byte> small_fatbin(const std::string& mode) {
  return read_bytes(generated_dir() / ("exact." + mode + ".fatbin"));
}

template <typename T>
void poke(std::vector<std::byte>& data, std::size_t offset, T value) {
  std::memcpy(data.data() + offset, &value, sizeof value);
}

// Parses and decompresses everything; the error (if any) must say where.
Status read_all(Bytes data) {
  auto fatbins = parse_fatbins(data);
  if (!fatbins) return std::move(fatbins).take_error();
  for (const Fatbin& fatbin : *fatbins) {
    for (const FatbinEntry& entry : fatbin.entries) {
      auto contents = entry_contents(entry, DecompressLimits{1u << 24});
      if (!contents) return std::move(contents).take_error();
    }
  }
  return {};
}

TEST(MalformedFatbin, EveryTruncationIsAnErrorWithAnOffset) {
  SLUICE_REQUIRE_GENERATED();
  for (const std::string mode : {"none", "speed", "size"}) {
    const std::vector<std::byte> data = small_fatbin(mode);
    ASSERT_TRUE(read_all(as_bytes(data))) << mode;
    for (std::size_t length = 1; length < data.size(); ++length) {
      const std::vector<std::byte> cut(data.begin(),
                                       data.begin() + static_cast<std::ptrdiff_t>(length));
      const Status status = read_all(as_bytes(cut));
      ASSERT_FALSE(status) << mode << " cut at " << length;
      EXPECT_NE(status.error().message.find("offset 0x"), std::string::npos)
          << status.error().message;
    }
  }
}

TEST(MalformedFatbin, BadHeaderFieldsAreNamed) {
  SLUICE_REQUIRE_GENERATED();
  const std::vector<std::byte> good = small_fatbin("size");
  struct Case {
    std::size_t offset;
    std::uint64_t value;
    int width;
    std::string expected;
  };
  const std::uint64_t entry = kFatbinHeaderSize;
  const Case cases[] = {
      {0, 0x12345678, 4, "not a fatbin"},
      {6, 8, 2, "header size 8 is below 16"},
      {8, 1ull << 40, 8, "runs past the end"},
      {entry + 0x04, 16, 4, "entry header size 16"},
      {entry + 0x08, 1ull << 40, 8, "entry payload"},
      {entry + 0x10, 0xffffff, 4, "exceeds the stored payload"},
      {entry + 0x28, kFlagCompressedLz4 | kFlagCompressedZstd, 8, "both LZ4 and zstd"},
      {entry + 0x38, 12, 8, "zstd frame holds"},
      {entry + 0x38, 1ull << 30, 8, "over the limit"},
      {entry + 0x24, 4, 4, "entry name"},
  };
  for (const Case& c : cases) {
    std::vector<std::byte> data = good;
    if (c.width == 2) poke(data, c.offset, static_cast<std::uint16_t>(c.value));
    if (c.width == 4) poke(data, c.offset, static_cast<std::uint32_t>(c.value));
    if (c.width == 8) poke(data, c.offset, c.value);
    const Status status = read_all(as_bytes(data));
    ASSERT_FALSE(status) << c.expected;
    EXPECT_NE(status.error().message.find(c.expected), std::string::npos)
        << "got: " << status.error().message;
    EXPECT_NE(status.error().message.find("offset 0x"), std::string::npos)
        << status.error().message;
  }
}

TEST(MalformedFatbin, CorruptCompressedPayloadsAreErrors) {
  SLUICE_REQUIRE_GENERATED();
  for (const std::string mode : {"speed", "size"}) {
    const std::vector<std::byte> good = small_fatbin(mode);
    auto fatbin = parse_fatbin(as_bytes(good));
    ASSERT_TRUE(fatbin);
    const FatbinEntry& entry = fatbin->entries[1];
    // Scribble over the middle of the compressed cubin.
    std::vector<std::byte> data = good;
    const std::size_t middle = entry.payload_offset + entry.payload.size() / 2;
    for (std::size_t i = middle; i < middle + 16; ++i) data[i] = std::byte{0xff};
    const Status status = read_all(as_bytes(data));
    // Either the decompressor notices, or the output cannot have the promised size.
    if (status) {
      auto reparsed = parse_fatbin(as_bytes(data));
      ASSERT_TRUE(reparsed);
      auto contents = entry_contents(reparsed->entries[1]);
      ASSERT_TRUE(contents);
      EXPECT_NE(*contents, read_bytes(generated_dir() / "kernels.sm_80.cubin")) << mode;
    } else {
      EXPECT_NE(status.error().message.find(mode == "speed" ? "LZ4" : "zstd"), std::string::npos)
          << status.error().message;
    }
  }
}

TEST(MalformedFatbin, ZeroPaddingBetweenContainersIsSkipped) {
  SLUICE_REQUIRE_GENERATED();
  const std::vector<std::byte> one = small_fatbin("none");
  std::vector<std::byte> two = one;
  two.resize(two.size() + 8, std::byte{0});
  two.insert(two.end(), one.begin(), one.end());
  auto fatbins = parse_fatbins(as_bytes(two), 0x1000);
  ASSERT_TRUE(fatbins) << fatbins.error().message;
  ASSERT_EQ(fatbins->size(), 2u);
  EXPECT_EQ((*fatbins)[0].offset, 0x1000u);
  EXPECT_EQ((*fatbins)[1].offset, 0x1000u + one.size() + 8);
  EXPECT_EQ((*fatbins)[1].entries[0].offset, 0x1000u + one.size() + 8 + kFatbinHeaderSize);
  two[one.size() + 8] = std::byte{0x51};  // a stray byte where the second magic starts
  auto broken = parse_fatbins(as_bytes(two), 0x1000);
  ASSERT_FALSE(broken);
  EXPECT_NE(broken.error().message.find(fmt::format("offset {:#x}", 0x1000 + one.size() + 8)),
            std::string::npos)
      << broken.error().message;
}

// ---- the registration wrapper and image kinds ----
TEST(FatbinWrapper, ParsesTheRegistrationStruct) {
  std::vector<std::byte> bytes(kFatbinWrapperSize);
  poke(bytes, 0, kFatbinWrapperMagic);
  poke(bytes, 4, std::uint32_t{1});
  poke(bytes, 8, std::uint64_t{0x7f0012345678});
  auto wrapper = parse_fatbin_wrapper(as_bytes(bytes));
  ASSERT_TRUE(wrapper) << wrapper.error().message;
  EXPECT_EQ(wrapper->version, 1u);
  EXPECT_EQ(wrapper->data, 0x7f0012345678u);

  poke(bytes, 4, std::uint32_t{7});
  EXPECT_FALSE(parse_fatbin_wrapper(as_bytes(bytes)));
  poke(bytes, 4, std::uint32_t{2});
  EXPECT_FALSE(parse_fatbin_wrapper(as_bytes(bytes).first(20)));
  poke(bytes, 0, kFatbinMagic);
  EXPECT_FALSE(parse_fatbin_wrapper(as_bytes(bytes)));
}

TEST(ImageKind, ClassifiesFromTheFirstBytes) {
  std::vector<std::byte> bytes(8);
  poke(bytes, 0, kFatbinMagic);
  EXPECT_EQ(classify_image(as_bytes(bytes)), ImageKind::fatbin);
  poke(bytes, 0, kFatbinWrapperMagic);
  EXPECT_EQ(classify_image(as_bytes(bytes)), ImageKind::fatbin_wrapper);
  poke(bytes, 0, std::uint32_t{0x464c457f});
  EXPECT_EQ(classify_image(as_bytes(bytes)), ImageKind::elf);
  EXPECT_EQ(classify_image(as_bytes(std::string_view("\n//\n// Generated\n.version 8.7"))),
            ImageKind::ptx);
  EXPECT_EQ(classify_image(as_bytes(std::string_view("  .version 8.7"))), ImageKind::ptx);
  EXPECT_EQ(classify_image(as_bytes(std::string_view("hello"))), ImageKind::unknown);
  EXPECT_EQ(classify_image(Bytes()), ImageKind::unknown);
}

TEST(ImageFromPointer, FindsTheExtentOfEachKind) {
  SLUICE_REQUIRE_GENERATED();
  const std::vector<std::byte> fatbin = small_fatbin("size");
  std::vector<std::byte> padded = fatbin;
  padded.resize(padded.size() + 64, std::byte{0xee});  // what lies beyond must not count
  auto image = image_from_pointer(padded.data());
  ASSERT_TRUE(image) << image.error().message;
  EXPECT_EQ(image->size(), fatbin.size());

  std::vector<std::byte> wrapper(kFatbinWrapperSize);
  poke(wrapper, 0, kFatbinWrapperMagic);
  poke(wrapper, 4, std::uint32_t{1});
  poke(wrapper, 8, static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(padded.data())));
  auto through = image_from_pointer(wrapper.data());
  ASSERT_TRUE(through);
  EXPECT_EQ(through->data(), padded.data());
  EXPECT_EQ(through->size(), fatbin.size());

  const std::vector<std::byte> cubin = read_bytes(generated_dir() / "kernels.sm_80.cubin");
  auto elf = image_from_pointer(cubin.data());
  ASSERT_TRUE(elf);
  EXPECT_EQ(elf->size(), cubin.size());

  const char* ptx = ".version 8.0\n.target sm_80\n";
  auto text = image_from_pointer(ptx);
  ASSERT_TRUE(text);
  EXPECT_EQ(text->size(), std::strlen(ptx));
  auto short_text = image_from_pointer("P");  // starts like a fatbin magic, then ends
  ASSERT_TRUE(short_text);
  EXPECT_EQ(short_text->size(), 1u);
  EXPECT_FALSE(image_from_pointer(nullptr));
}

}  // namespace
}  // namespace sluice::ptx
