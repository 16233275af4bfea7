// Paths and helpers shared by the ptx_rewriter tests.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/ptx/fatbin.h"

namespace sluice::ptx::testing {

std::filesystem::path source_dir();     // tests/ptx
std::filesystem::path generated_dir();  // build outputs of nvcc, ptxas and fatbinary
std::filesystem::path cuda_lib_dir();   // the toolkit's lib64
bool have_nvcc();
bool have_ptxas();

std::string read_text(const std::filesystem::path& path);
std::vector<std::byte> read_bytes(const std::filesystem::path& path);
Bytes as_bytes(const std::vector<std::byte>& bytes);
Bytes as_bytes(std::string_view text);

// Every .ptx file of corpus/triton, sorted.
std::vector<std::filesystem::path> triton_corpus();

// A generated input; the calling test is skipped when nvcc was not found at configure time.
#define SLUICE_REQUIRE_GENERATED()                                       \
  do {                                                                   \
    if (!::sluice::ptx::testing::have_nvcc()) GTEST_SKIP() << "no nvcc"; \
  } while (0)

struct CommandResult {
  int status = -1;     // exit code, or -1 when the command could not run
  std::string output;  // stdout and stderr together
};
CommandResult run_command(const std::string& command);

// Compiles `ptx` with ptxas for `arch` ("sm_90a"), with extra `flags` ("-c" for relocatable code);
// the result's output holds ptxas' messages.
CommandResult run_ptxas(std::string_view ptx, std::string_view arch, std::string_view flags = "");

// A fresh empty directory under the test's temporary directory.
std::filesystem::path scratch_dir(std::string_view name);

}  // namespace sluice::ptx::testing
