// PTX beside cubins (sluice/shim/ptx_sources.h): a loaded cubin is paired with the PTX kept beside
// an identical cubin file, in Triton's and Inductor's cache layouts, files written after a first
// miss are found, a cubin that differs by a byte is not paired, and the search roots follow the
// environment. Then the whole path: a Twins object given such a cubin builds a kill twin from the
// paired PTX on the fake driver. Last, PTX embedded in loaded objects: the fatbin whose kernels are
// exactly a module's is found, two different ones with the same kernels give none, and Twins give
// a module loaded past the shim a twin from it. Inputs: the cubin, PTX and host libraries that
// tests/ptx makes with the toolkit (skipped without it).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "fake_program.h"
#include "sluice/ptx/elf.h"
#include "sluice/ptx/ptx.h"
#include "sluice/shim/embedded_ptx.h"
#include "sluice/shim/ptx_sources.h"
#include "twins.h"

namespace sluice::shim::test {
namespace {

namespace fs = std::filesystem;

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

std::span<const std::byte> bytes_of(const std::string& text) {
  return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}

// Sets environment variables for one test and restores them after.
class EnvGuard {
 public:
  void set(const char* name, const char* value) {
    if (!saved_.contains(name)) {
      const char* old = std::getenv(name);
      saved_[name] = old != nullptr ? std::optional<std::string>(old) : std::nullopt;
    }
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~EnvGuard() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        setenv(name.c_str(), value->c_str(), 1);
      } else {
        unsetenv(name.c_str());
      }
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

class PtxSourcesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path generated = SLUICE_TEST_GENERATED_DIR;
    if (!fs::exists(generated / "kernels.sm_80.cubin") || !fs::exists(generated / "kernels.ptx"))
      GTEST_SKIP() << "no cubin made by the CUDA toolkit under " << generated;
    cubin = read_text(generated / "kernels.sm_80.cubin");
    ptx = read_text(generated / "kernels.ptx");
    auto elf = ptx::parse_elf(ptx::Bytes(bytes_of(cubin).data(), cubin.size()));
    ASSERT_TRUE(elf) << elf.error().message;
    auto kernels = ptx::cubin_kernels(*elf);
    ASSERT_TRUE(kernels && !kernels->empty());
    // Triton names the files after the kernel; grid_1d is one the rewriter instruments.
    ASSERT_NE(std::find(kernels->begin(), kernels->end(), "grid_1d"), kernels->end());
    kernel = "grid_1d";
    root = fs::temp_directory_path() / ("sluice-ptx-sources-" + std::to_string(getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root);
  }
  void TearDown() override {
    if (!root.empty()) fs::remove_all(root);
  }

  // The fake driver's primary context of device 0, current on this thread (released by the test).
  static void make_fake_context_current() {
    Fake& fake = Fake::get();
    ASSERT_NE(fake.handle, nullptr) << "cannot load " << SLUICE_TEST_FAKE_DRIVER;
    CUcontext ctx = nullptr;
    ASSERT_CU_OK(fake.api.cuInit(0));
    ASSERT_CU_OK(fake.api.cuDevicePrimaryCtxRetain(&ctx, 0));
    ASSERT_CU_OK(fake.api.cuCtxSetCurrent(ctx));
  }

  // Triton's layout: <root>/<hash>/<kernel>.cubin and .ptx.
  void keep(const fs::path& dir, const std::string& cubin_text, const std::string& ptx_text) {
    write_text(dir / (kernel + ".cubin"), cubin_text);
    write_text(dir / (kernel + ".ptx"), ptx_text);
  }

  std::string cubin;
  std::string ptx;
  std::string kernel;
  fs::path root;
};

TEST_F(PtxSourcesTest, PairsACubinWithThePtxBesideItsIdenticalFile) {
  keep(root / "0f3a9c", cubin, ptx);
  write_text(root / "0f3a9c" / (kernel + ".json"), "{}");
  PtxSources sources({root.string()});
  EXPECT_EQ(sources.find(bytes_of(cubin)), ptx);
  // A second lookup is answered from the index: nothing is listed again.
  const std::size_t listed = sources.directories_listed();
  EXPECT_EQ(sources.find(bytes_of(cubin)), ptx);
  EXPECT_EQ(sources.directories_listed(), listed);
}

TEST_F(PtxSourcesTest, FindsInductorsNestedLayout) {
  keep(root / "0" / "c2ab77", cubin, ptx);
  PtxSources sources({root.string()});
  EXPECT_EQ(sources.find(bytes_of(cubin)), ptx);
}

TEST_F(PtxSourcesTest, ACubinFileThatDiffersByOneByteLendsNoPtx) {
  std::string other = cubin;
  other[other.size() / 2] = static_cast<char>(other[other.size() / 2] ^ 0x01);
  keep(root / "aa11", other, ptx);
  PtxSources sources({root.string()});
  EXPECT_EQ(sources.find(bytes_of(cubin)), "");
  // The same name in another directory, with the right bytes, is still found.
  keep(root / "bb22", cubin, ptx);
  EXPECT_EQ(sources.find(bytes_of(cubin)), ptx);
}

TEST_F(PtxSourcesTest, FilesWrittenAfterAMissAreFound) {
  PtxSources sources({root.string()});
  EXPECT_EQ(sources.find(bytes_of(cubin)), "");  // the root does not exist yet
  keep(root / "first", cubin + "x", "not this one");
  EXPECT_EQ(sources.find(bytes_of(cubin)), "");
  keep(root / "second", cubin, ptx);
  EXPECT_EQ(sources.find(bytes_of(cubin)), ptx);
}

TEST_F(PtxSourcesTest, WithoutPtxBesideTheCubinThereIsNone) {
  write_text(root / "only-cubin" / (kernel + ".cubin"), cubin);
  PtxSources sources({root.string()});
  EXPECT_EQ(sources.find(bytes_of(cubin)), "");
}

TEST_F(PtxSourcesTest, ImagesThatAreNotCubinsAreNotLookedUp) {
  keep(root / "0f3a9c", cubin, ptx);
  PtxSources sources({root.string()});
  EXPECT_EQ(sources.find(bytes_of(ptx)), "");
  EXPECT_EQ(sources.find(bytes_of(std::string("\x7f" "ELF garbage"))), "");
  EXPECT_EQ(sources.directories_listed(), 0u);
}

TEST(PtxSourceRoots, FollowTheEnvironment) {
  EnvGuard env;
  env.set("SLUICE_PTX_DIRS", "/a:/b::/c");
  EXPECT_EQ(ptx_source_roots(), (std::vector<std::string>{"/a", "/b", "/c"}));
  env.set("SLUICE_PTX_DIRS", "");
  EXPECT_TRUE(ptx_source_roots().empty());

  env.set("SLUICE_PTX_DIRS", nullptr);
  env.set("TRITON_CACHE_DIR", "/triton-cache");
  env.set("TORCHINDUCTOR_CACHE_DIR", "/inductor");
  EXPECT_EQ(ptx_source_roots(), (std::vector<std::string>{"/triton-cache", "/inductor/triton"}));

  env.set("TRITON_CACHE_DIR", nullptr);
  env.set("TRITON_HOME", "/th");
  EXPECT_EQ(ptx_source_roots().front(), "/th/.triton/cache");

  env.set("TRITON_HOME", nullptr);
  env.set("HOME", "/home/u");
  env.set("TORCHINDUCTOR_CACHE_DIR", nullptr);
  env.set("LOGNAME", "dom\\ain/user");
  env.set("TMPDIR", "/scratch");
  EXPECT_EQ(ptx_source_roots(), (std::vector<std::string>{
                                    "/home/u/.triton/cache", "/scratch/torchinductor_dom_ain_user/triton"}));
}

// A gate that admits everything and accepts the kill word.
class TwinGate final : public Gate {
 public:
  bool admit(const OpDesc&) noexcept override { return true; }
  const char* name() const noexcept override { return "twin-test"; }
  StreamClass stream_class() const noexcept override { return StreamClass::be; }
  void register_kill_word(std::int32_t, const CUipcMemHandle&, std::uint64_t) noexcept override {
    ++registrations;
  }
  int registrations = 0;
};

TEST_F(PtxSourcesTest, TwinsBuildAKillTwinFromThePairedPtx) {
  const DriverApi& cu = Fake::get().api;
  ASSERT_NO_FATAL_FAILURE(make_fake_context_current());

  keep(root / "triton" / "5e9d01", cubin, ptx);
  EnvGuard env;
  env.set("SLUICE_PTX_DIRS", (root / "triton").c_str());
  Stats stats;
  KillOptions options;
  options.enabled = true;
  options.min_ns = 0;
  options.cache_dir = (root / "twins").string();
  Twins twins(cu, options, stats);
  TwinGate gate;
  int owner = 0;  // any address names the module
  twins.module_loaded(&owner, cubin.data(), cubin.size());
  EXPECT_EQ(stats.snapshot().ptx_paired, 1u);

  auto function = twins.twin_of(reinterpret_cast<CUfunction>(&owner), {&owner, false}, kernel, {},
                                gate);
  ASSERT_TRUE(function.has_value()) << "no twin for " << kernel;
  EXPECT_NE(function->twin, nullptr);
  EXPECT_NE(function->kill_word, 0u);
  EXPECT_EQ(gate.registrations, 1);
  EXPECT_EQ(stats.snapshot().twins_built, 1u);

  // A cubin nobody kept PTX for stays unkillable.
  std::string other = cubin;
  other[other.size() / 2] = static_cast<char>(other[other.size() / 2] ^ 0x01);
  int other_owner = 0;
  twins.module_loaded(&other_owner, other.data(), other.size());
  EXPECT_EQ(stats.snapshot().ptx_paired, 1u);
  EXPECT_FALSE(twins.twin_of(reinterpret_cast<CUfunction>(&other_owner), {&other_owner, false},
                             kernel, {}, gate));
  twins.module_unloaded(&owner);
  twins.module_unloaded(&other_owner);
  ASSERT_CU_OK(cu.cuDevicePrimaryCtxRelease(0));
}

// ---- PTX embedded in loaded objects (sluice/shim/embedded_ptx.h) --------------------------------

class EmbeddedPtxTest : public PtxSourcesTest {
 protected:
  void SetUp() override {
    PtxSourcesTest::SetUp();
    if (IsSkipped()) return;
    const fs::path generated = SLUICE_TEST_GENERATED_DIR;
    library = generated / "libkernels.so";
    lineinfo_library = generated / "libkernels_lineinfo.so";
    if (!fs::exists(library) || !fs::exists(lineinfo_library))
      GTEST_SKIP() << "no host libraries made by the CUDA toolkit under " << generated;
    auto module = ptx::parse_module(ptx);
    ASSERT_TRUE(module) << module.error().message;
    for (const ptx::Function* entry : module->entries()) kernels.push_back(entry->name);
  }

  EmbeddedPtx::ObjectLister files(std::vector<fs::path> paths) {
    return [this, paths] {
      ++listings;
      std::vector<std::string> out;
      for (const fs::path& path : paths) out.push_back(path.string());
      return out;
    };
  }

  static std::vector<std::string> entries_of(const std::string& text) {
    std::vector<std::string> names;
    auto module = ptx::parse_module(text);
    if (!module) return names;
    for (const ptx::Function* entry : module->entries()) names.push_back(entry->name);
    std::sort(names.begin(), names.end());
    return names;
  }

  // Asks until the background reading for `arch` is over.
  static void read_all(EmbeddedPtx& embedded, std::uint32_t arch) {
    while (!embedded.ready(arch)) embedded.wait();
  }

  fs::path library;
  fs::path lineinfo_library;
  std::vector<std::string> kernels;  // of kernels.cu, in PTX order
  int listings = 0;
};

TEST_F(EmbeddedPtxTest, FindsThePtxOfTheFatbinWithExactlyTheModulesKernels) {
  EmbeddedPtx embedded(files({library}));
  // The first question starts the reading in the background.
  EXPECT_FALSE(embedded.ready(90));
  read_all(embedded, 90);
  std::vector<std::string> reversed(kernels.rbegin(), kernels.rend());  // any order
  const std::string found = embedded.find(reversed, 90);
  ASSERT_FALSE(found.empty());
  std::vector<std::string> expected = kernels;
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(entries_of(found), expected);
  EXPECT_EQ(embedded.objects_read(), 1u);

  // One kernel fewer or one more: another module, so nothing.
  std::vector<std::string> fewer(kernels.begin() + 1, kernels.end());
  EXPECT_EQ(embedded.find(fewer, 90), "");
  std::vector<std::string> more = kernels;
  more.push_back("not_in_the_library");
  EXPECT_EQ(embedded.find(more, 90), "");
  EXPECT_EQ(embedded.find({}, 90), "");
  EXPECT_TRUE(embedded.ready(90));
  EXPECT_EQ(embedded.objects_read(), 1u);  // each file is read once
  const int listed = listings;
  // compute_80 PTX cannot be compiled for an sm_75 device; no architecture known, nothing either.
  read_all(embedded, 75);
  EXPECT_EQ(embedded.find(kernels, 75), "");
  read_all(embedded, 0);
  EXPECT_EQ(embedded.find(kernels, 0), "");
  read_all(embedded, 90);
  EXPECT_EQ(embedded.find(kernels, 90), found);
  EXPECT_GT(listings, listed);  // new objects are looked for at every ready()
}

TEST_F(EmbeddedPtxTest, TwoDifferentModulesWithTheSameKernelsGiveNone) {
  fs::create_directories(root);
  const fs::path copy = root / "libcopy.so";
  fs::copy_file(library, copy);
  // The same PTX in two files is one module.
  EmbeddedPtx same(files({library, copy}));
  read_all(same, 90);
  EXPECT_FALSE(same.find(kernels, 90).empty());
  EXPECT_EQ(same.modules_indexed(), 1u);
  // The same kernels with other code (here only line information) may be either: neither is used.
  EmbeddedPtx different(files({library, lineinfo_library}));
  read_all(different, 90);
  EXPECT_EQ(different.find(kernels, 90), "");
  EXPECT_EQ(different.modules_indexed(), 2u);
}

TEST_F(EmbeddedPtxTest, FilesThatAreNotObjectsOrAreMissingAreSkipped) {
  fs::create_directories(root);
  write_text(root / "notes.txt", "not an ELF file");
  EmbeddedPtx embedded(files({root / "missing.so", root / "notes.txt", library}));
  read_all(embedded, 90);
  EXPECT_FALSE(embedded.find(kernels, 90).empty());
  // The test program itself, as the loaded objects list it, has no fatbin of these kernels.
  EmbeddedPtx loaded;
  read_all(loaded, 90);
  EXPECT_EQ(loaded.find(kernels, 90), "");
  EXPECT_GE(loaded.objects_read(), 2u);  // the program and at least the C++ runtime
}

TEST_F(EmbeddedPtxTest, StopEndsTheReadingAndNothingIsReadAfterIt) {
  std::vector<fs::path> many(64);  // 64 copies of the library: a long reading
  fs::create_directories(root);
  for (int i = 0; i < 64; ++i) {
    many[static_cast<std::size_t>(i)] = root / ("lib" + std::to_string(i) + ".so");
    fs::copy_file(library, many[static_cast<std::size_t>(i)]);
  }
  EmbeddedPtx embedded(files(many));
  EXPECT_FALSE(embedded.ready(90));
  embedded.stop();  // returns once the reader let go
  EXPECT_FALSE(embedded.ready(90));
  EXPECT_EQ(embedded.find(kernels, 90), "");
  EXPECT_EQ(embedded.objects_read(), 0u);  // a stopped reading adds nothing
}

TEST_F(EmbeddedPtxTest, TwinsGiveAModuleLoadedPastTheShimThePtxOfItsLibrary) {
  const DriverApi& cu = Fake::get().api;
  ASSERT_NO_FATAL_FAILURE(make_fake_context_current());
  // As the CUDA runtime registers a library's fatbin: loaded without telling the shim.
  CUmodule module = nullptr;
  ASSERT_CU_OK(cu.cuModuleLoadData(&module, ptx.c_str()));
  CUfunction func = nullptr;
  ASSERT_CU_OK(cu.cuModuleGetFunction(&func, module, kernel.c_str()));

  Stats stats;
  KillOptions options;
  options.enabled = true;
  options.min_ns = 0;
  options.cache_dir = (root / "twins").string();
  TwinGate gate;
  {
    Twins twins(cu, options, stats, files({library}));
    // The first launches keep the original while the library is read; a later one gets the twin.
    std::optional<Twins::Function> function;
    for (int launch = 0; launch < 2000 && !function; ++launch) {
      function = twins.twin_of(func, {module, false}, kernel, {}, gate);
      if (!function) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_TRUE(function.has_value()) << "no twin for " << kernel;
    EXPECT_NE(function->twin, nullptr);
    EXPECT_NE(function->twin, func);
    EXPECT_EQ(stats.snapshot().embedded_ptx, 1u);
    EXPECT_EQ(stats.snapshot().twins_built, 1u);
    twins.module_unloaded(module);
  }
  {
    // No loaded object has its PTX: the kernel keeps its original, and the miss is remembered.
    Twins twins(cu, options, stats, files({lineinfo_library, library}));
    for (int launch = 0; launch < 200; ++launch) {
      EXPECT_FALSE(twins.twin_of(func, {module, false}, kernel, {}, gate));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_EQ(stats.snapshot().embedded_ptx, 1u);
    EXPECT_EQ(stats.snapshot().twin_failures, 0u);
  }
  ASSERT_CU_OK(cu.cuModuleUnload(module));
  ASSERT_CU_OK(cu.cuDevicePrimaryCtxRelease(0));
}

}  // namespace
}  // namespace sluice::shim::test
