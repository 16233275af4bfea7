#include "test_support.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <iterator>

namespace sluice::ptx::testing {

std::filesystem::path source_dir() {
  return SLUICE_PTX_SOURCE_DIR;
}
std::filesystem::path generated_dir() {
  return SLUICE_PTX_GENERATED_DIR;
}
std::filesystem::path cuda_lib_dir() {
  return SLUICE_PTX_CUDA_LIB_DIR;
}
bool have_nvcc() {
  return SLUICE_PTX_HAVE_NVCC;
}
bool have_ptxas() {
  return std::filesystem::exists(SLUICE_PTX_PTXAS);
}

std::vector<std::byte> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) ADD_FAILURE() << "cannot read " << path;
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  std::transform(chars.begin(), chars.end(), bytes.begin(), [](char c) { return std::byte(c); });
  return bytes;
}

std::string read_text(const std::filesystem::path& path) {
  const std::vector<std::byte> bytes = read_bytes(path);
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

Bytes as_bytes(const std::vector<std::byte>& bytes) {
  return Bytes(bytes.data(), bytes.size());
}

Bytes as_bytes(std::string_view text) {
  return Bytes(reinterpret_cast<const std::byte*>(text.data()), text.size());
}

std::vector<std::filesystem::path> triton_corpus() {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(source_dir() / "corpus/triton")) {
    if (entry.path().extension() == ".ptx") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  std::size_t got = 0;
  while ((got = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    result.output.append(buffer.data(), got);
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::filesystem::path scratch_dir(std::string_view name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("sluice-ptx-test-" + std::to_string(::getpid())) /
      (std::string(info->test_suite_name()) + "." + info->name()) / std::string(name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

CommandResult run_ptxas(std::string_view ptx, std::string_view arch, std::string_view flags) {
  const std::filesystem::path dir = scratch_dir(std::string("ptxas-") + std::string(arch));
  const std::filesystem::path input = dir / "input.ptx";
  {
    std::ofstream out(input, std::ios::binary);
    out.write(ptx.data(), static_cast<std::streamsize>(ptx.size()));
  }
  CommandResult result =
      run_command(fmt::format("{} -arch={} {} -o {} {}", SLUICE_PTX_PTXAS, arch, flags,
                              (dir / "out.cubin").string(), input.string()));
  std::filesystem::remove_all(dir);
  return result;
}

}  // namespace sluice::ptx::testing
