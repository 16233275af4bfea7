// sluice-ptx as a user runs it: outputs, JSON, files written, and exit codes for bad input.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "sluice/ptx/ptx.h"
#include "test_support.h"

namespace sluice::ptx {
namespace {

using nlohmann::json;
using testing::CommandResult;

CommandResult cli(const std::string& arguments) {
  return testing::run_command(std::string(SLUICE_PTX_CLI) + " " + arguments);
}

json cli_json(const std::string& arguments) {
  const CommandResult result = cli(arguments);
  EXPECT_EQ(result.status, 0) << result.output;
  return json::parse(result.output, nullptr, false);
}

std::string generated(const std::string& name) {
  return (testing::generated_dir() / name).string();
}

TEST(Cli, InspectFatbinListsEntriesAndKernels) {
  SLUICE_REQUIRE_GENERATED();
  const json out = cli_json("inspect --json " + generated("nvcc.default.fatbin"));
  ASSERT_FALSE(out.is_discarded());
  EXPECT_EQ(out["kind"], "fatbin");
  ASSERT_EQ(out["fatbins"].size(), 1u);
  std::set<std::string> entries;
  for (const json& entry : out["fatbins"][0]["entries"]) {
    entries.insert(entry["kind"].get<std::string>() + ":" + entry["arch"].get<std::string>() + ":" +
                   entry["compression"].get<std::string>());
  }
  EXPECT_EQ(entries, (std::set<std::string>{"elf:sm_80:none", "ptx:compute_80:zstd"}));
  std::map<std::string, json> kernels;
  for (const json& kernel : out["kernels"]) kernels[kernel["name"]] = kernel;
  ASSERT_TRUE(kernels.contains("grid_1d"));
  EXPECT_TRUE(kernels["grid_1d"]["killable"].get<bool>());
  EXPECT_EQ(kernels["grid_1d"]["sass"], json::array({"sm_80"}));
  EXPECT_EQ(kernels["grid_1d"]["ptx"], json::array({"compute_80"}));
  EXPECT_FALSE(kernels["writes_counter"]["killable"].get<bool>());
  EXPECT_EQ(kernels["writes_counter"]["reasons"][0]["code"], "module-data");

  // PTX for compute_80 cannot serve a device older than sm_80.
  const json old = cli_json("inspect --json --arch 75 " + generated("nvcc.default.fatbin"));
  for (const json& kernel : old["kernels"]) EXPECT_FALSE(kernel["killable"].get<bool>());
}

TEST(Cli, InspectTextNamesKernelsAndReasons) {
  SLUICE_REQUIRE_GENERATED();
  const CommandResult result = cli("inspect " + generated("communicating.ptx"));
  EXPECT_EQ(result.status, 0);
  EXPECT_NE(result.output.find("spin_lock"), std::string::npos);
  EXPECT_NE(result.output.find("not killable: communicating"), std::string::npos) << result.output;
}

TEST(Cli, InspectSharedLibraryAndCubin) {
  SLUICE_REQUIRE_GENERATED();
  const json library = cli_json("inspect --json " + generated("libkernels.so"));
  EXPECT_EQ(library["kind"], "elf");
  EXPECT_FALSE(library["fatbins"].empty());
  const json cubin = cli_json("inspect --json " + generated("kernels.sm_80.cubin"));
  EXPECT_EQ(cubin["kind"], "elf");
  ASSERT_FALSE(cubin["kernels"].empty());
  EXPECT_EQ(cubin["kernels"][0]["sass"], json::array({"sm_80"}));
  EXPECT_FALSE(cubin["kernels"][0]["killable"].get<bool>());  // no PTX
}

TEST(Cli, ExtractWritesEveryEntry) {
  SLUICE_REQUIRE_GENERATED();
  const auto dir = testing::scratch_dir("extract");
  const json out =
      cli_json("extract --json " + generated("exact.speed.fatbin") + " -o " + dir.string());
  ASSERT_EQ(out["written"].size(), 2u);
  // The PTX as fatbinary stored it (comments stripped): the same module as the source.
  auto extracted = parse_module(testing::read_text(out["written"][0]["path"].get<std::string>()));
  auto source = parse_module(testing::read_text(testing::generated_dir() / "kernels.ptx"));
  ASSERT_TRUE(extracted && source);
  EXPECT_EQ(print_module(*extracted), print_module(*source));
  EXPECT_EQ(testing::read_bytes(out["written"][1]["path"].get<std::string>()),
            testing::read_bytes(testing::generated_dir() / "kernels.sm_80.cubin"));
  EXPECT_EQ(out["written"][0]["compression"], "lz4");

  const auto from_library = testing::scratch_dir("library");
  const CommandResult result =
      cli("extract " + generated("libkernels.so") + " -o " + from_library.string());
  EXPECT_EQ(result.status, 0) << result.output;
  // The library's own kernels (sm_80 SASS and compute_80 PTX), and the static runtime's module.
  std::size_t ptx = 0;
  std::size_t cubins = 0;
  for (const auto& entry : std::filesystem::directory_iterator(from_library)) {
    ptx += entry.path().extension() == ".ptx" ? 1 : 0;
    cubins += entry.path().extension() == ".cubin" ? 1 : 0;
  }
  EXPECT_EQ(ptx, 1u);
  EXPECT_GE(cubins, 1u);
  std::filesystem::remove_all(dir.parent_path());
}

TEST(Cli, InstrumentWritesTwinAndReport) {
  const auto dir = testing::scratch_dir("instrument");
  const std::string input = (testing::source_dir() / "golden/mixed_module.ptx").string();
  const CommandResult result = cli("instrument " + input + " -o " + (dir / "twin.ptx").string() +
                                   " --report " + (dir / "report.json").string());
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_NE(result.output.find("blocks_3d: instrumented"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("cluster_pairs: left as is"), std::string::npos) << result.output;
  const json report = json::parse(testing::read_text(dir / "report.json"));
  EXPECT_EQ(report["instrumented"], 1);
  EXPECT_EQ(report["kernels"][0]["launch_param"]["offset"], 32);
  EXPECT_NE(testing::read_text(dir / "twin.ptx").find("__sluice_launch"), std::string::npos);
  std::filesystem::remove_all(dir.parent_path());
}

TEST(Cli, CoverageCountsKernels) {
  SLUICE_REQUIRE_GENERATED();
  const json out = cli_json("coverage --json " + generated("cluster.ptx") + " " +
                            generated("kernels.sm_80.cubin"));
  ASSERT_EQ(out["files"].size(), 2u);
  EXPECT_EQ(out["files"][0]["kernels"], 4);
  EXPECT_EQ(out["files"][0]["killable"], 1);
  EXPECT_EQ(out["files"][1]["with_ptx"], 0);
  EXPECT_EQ(out["total"]["kernels"],
            out["files"][0]["kernels"].get<int>() + out["files"][1]["kernels"].get<int>());
}

TEST(Cli, ExitCodesTellBadInputApart) {
  const auto dir = testing::scratch_dir("errors");
  const CommandResult missing = cli("inspect " + (dir / "missing.ptx").string());
  EXPECT_EQ(missing.status, 3);
  EXPECT_NE(missing.output.find("missing.ptx: cannot open"), std::string::npos) << missing.output;

  std::ofstream(dir / "broken.ptx") << ".version 8.0\n.target sm_80\n.entry k(\n";
  const CommandResult broken = cli("inspect " + (dir / "broken.ptx").string());
  EXPECT_EQ(broken.status, 4);
  EXPECT_NE(broken.output.find("broken.ptx: line"), std::string::npos) << broken.output;

  std::ofstream(dir / "noise.bin") << "\x01\x02\x03 not a module";
  EXPECT_EQ(cli("inspect " + (dir / "noise.bin").string()).status, 4);
  EXPECT_EQ(cli("extract " + (dir / "broken.ptx").string() + " -o " + dir.string()).status, 4);

  std::ofstream(dir / "cluster.ptx") << ".version 8.0\n.target sm_90\n.address_size 64\n.entry "
                                        "c()\n.explicitcluster\n{\nret;\n}\n";
  const CommandResult nothing =
      cli("instrument " + (dir / "cluster.ptx").string() + " -o " + (dir / "twin.ptx").string());
  EXPECT_EQ(nothing.status, 5) << nothing.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "twin.ptx"));

  EXPECT_EQ(cli("").status, 2);
  EXPECT_EQ(cli("frobnicate x").status, 2);
  EXPECT_EQ(cli("instrument only-input.ptx").status, 2);
  EXPECT_EQ(cli("instrument a.ptx -o b.ptx --broadcast carrier").status, 2);
  std::filesystem::remove_all(dir.parent_path());
}

}  // namespace
}  // namespace sluice::ptx
