// sluice-ptx: look inside GPU code and make kill-instrumented twins of PTX.
//
//   sluice-ptx inspect FILE [--json] [--arch N] [--entries]   containers, entries, kernels,
//   killability sluice-ptx extract FILE -o DIR [--json]                    PTX and cubins out of
//   fatbins / .so files sluice-ptx instrument IN.ptx -o OUT.ptx [--report R.json]  the twin module
//   and its report sluice-ptx coverage FILE... [--json] [--arch N]            share of kernels with
//   PTX / killable
//
// FILE may be PTX text, a fatbin, a cubin, or a host ELF (shared library, executable) with a
// .nv_fatbin section. Exit codes: 0 done, 2 bad usage, 3 a file could not be read or written,
// 4 malformed input, 5 `instrument` found no killable kernel (the output is still written).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <tuple>

#include "sluice/ptx/elf.h"
#include "sluice/ptx/fatbin.h"
#include "sluice/ptx/inspect.h"
#include "sluice/ptx/instrument.h"
#include "sluice/ptx/mapped_file.h"
#include "sluice/ptx/report_json.h"

namespace {

using namespace sluice;
using namespace sluice::ptx;
using nlohmann::json;

enum Exit : int { kOk = 0, kUsage = 2, kIo = 3, kBadInput = 4, kNothingInstrumented = 5 };

// A failure that ends the command with an exit code; thrown only inside this file's commands.
struct Failure {
  Exit code;
  std::string message;
};

[[noreturn]] void fail(Exit code, std::string message) {
  throw Failure{code, std::move(message)};
}

// Maps an input file or ends the command with kIo.
MappedFile map_or_fail(const std::string& path) {
  auto file = MappedFile::open(path);
  if (!file) fail(kIo, file.error().message);
  return std::move(file).value();
}

void write_file(const std::filesystem::path& path, std::string_view contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  out.close();
  if (!out) fail(kIo, fmt::format("{}: cannot write", path.string()));
}

template <typename T>
T or_fail(Result<T> result, const std::string& input) {
  if (!result) fail(kBadInput, fmt::format("{}: {}", input, result.error().message));
  return std::move(result).value();
}

std::string human_bytes(std::uint64_t bytes) {
  if (bytes >= (1u << 20)) return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
  if (bytes >= (1u << 10)) return fmt::format("{:.1f} KiB", static_cast<double>(bytes) / (1 << 10));
  return fmt::format("{} B", bytes);
}

std::string reasons_text(const KernelSummary& kernel, std::uint32_t arch) {
  if (kernel.ptx.empty()) return "no PTX";
  if (!kernel.ptx_for_device) return fmt::format("no PTX that sm_{} can JIT", arch);
  std::string text;
  for (const SkipReason& reason : kernel.analysis->reasons) {
    if (!text.empty()) text += "; ";
    text += fmt::format("{}: {}", reason.code, reason.message);
    if (reason.line != 0) text += fmt::format(" (line {})", reason.line);
  }
  return text;
}

// ---- inspect ----
struct InspectArgs {
  std::string file;
  bool json = false;
  bool entries = false;
  std::uint32_t arch = 90;
  bool uninitialized_reads = false;
};

void print_entries(const Inspection& inspection, bool every_entry) {
  if (every_entry) {
    for (const ContainerSummary& container : inspection.fatbins) {
      fmt::print("container at {:#x} ({})\n", container.offset, human_bytes(container.size));
      for (const EntrySummary& entry : container.entries) {
        fmt::print("  #{:<3} {:<4} {:<13} {:<5} {:>10} -> {:>10}{}\n", entry.index, entry.kind,
                   entry.arch, to_string(entry.compression), human_bytes(entry.stored_bytes),
                   human_bytes(entry.content_bytes),
                   entry.error.empty() ? "" : "  ERROR: " + entry.error);
      }
    }
    return;
  }
  // Libraries hold thousands of containers: group entries by kind, arch and compression.
  std::map<std::tuple<std::string, std::string, std::string>,
           std::tuple<int, std::uint64_t, std::uint64_t>>
      groups;
  std::size_t errors = 0;
  for (const ContainerSummary& container : inspection.fatbins) {
    for (const EntrySummary& entry : container.entries) {
      auto& [count, stored, content] =
          groups[{entry.kind, entry.arch, std::string(to_string(entry.compression))}];
      ++count;
      stored += entry.stored_bytes;
      content += entry.content_bytes;
      if (!entry.error.empty()) {
        if (errors++ < 5) fmt::print("  entry at {:#x}: {}\n", entry.offset, entry.error);
      }
    }
  }
  fmt::print("{} containers; entries by kind, arch and compression:\n", inspection.fatbins.size());
  for (const auto& [key, value] : groups) {
    const auto& [kind, arch, compression] = key;
    const auto& [count, stored, content] = value;
    fmt::print("  {:<4} {:<13} {:<5} x{:<5} {:>10} stored, {:>10} uncompressed\n", kind, arch,
               compression, count, human_bytes(stored), human_bytes(content));
  }
  if (errors > 0) fmt::print("  {} entries could not be read (first ones above)\n", errors);
}

int run_inspect(const InspectArgs& args) {
  const MappedFile file = map_or_fail(args.file);
  InspectOptions options;
  options.device_arch = args.arch;
  options.analysis.allow_uninitialized_reads = args.uninitialized_reads;
  const Inspection inspection = or_fail(inspect(file.bytes(), options), args.file);
  if (args.json) {
    json out = to_json(inspection);
    out["file"] = args.file;
    out["device_arch"] = args.arch;
    fmt::print("{}\n", out.dump(2));
    return kOk;
  }
  fmt::print("{}: {}\n", args.file, to_string(inspection.kind));
  if (!inspection.fatbins.empty()) print_entries(inspection, args.entries);
  fmt::print("kernels: {}\n", inspection.kernels.size());
  for (const KernelSummary& kernel : inspection.kernels) {
    fmt::print("  {}\n    sass [{}] ptx [{}] -> {}\n", kernel.name, fmt::join(kernel.sass, " "),
               fmt::join(kernel.ptx, " "),
               kernel.killable() ? "killable" : "not killable: " + reasons_text(kernel, args.arch));
    if (kernel.analysis) {
      for (const std::string& note : kernel.analysis->notes) fmt::print("    note: {}\n", note);
    }
  }
  return kOk;
}

// ---- extract ----
struct ExtractArgs {
  std::string file;
  std::string out_dir;
  bool json = false;
};

int run_extract(const ExtractArgs& args) {
  const MappedFile file = map_or_fail(args.file);
  std::vector<Fatbin> fatbins;
  switch (classify_image(file.bytes().first(std::min<std::size_t>(file.bytes().size(), 64)))) {
    case ImageKind::fatbin:
      fatbins = or_fail(parse_fatbins(file.bytes()), args.file);
      break;
    case ImageKind::elf: {
      const ElfFile elf = or_fail(parse_elf(file.bytes()), args.file);
      if (elf.machine == kElfMachineCuda) fail(kBadInput, args.file + ": a cubin holds no fatbin");
      fatbins = or_fail(elf_fatbins(elf), args.file);
      break;
    }
    default:
      fail(kBadInput, args.file + ": neither a fatbin nor an ELF file with a .nv_fatbin section");
  }
  std::error_code ec;
  std::filesystem::create_directories(args.out_dir, ec);
  if (ec) fail(kIo, fmt::format("{}: cannot create: {}", args.out_dir, ec.message()));
  const std::string stem = std::filesystem::path(args.file).filename().string();
  json written = json::array();
  for (std::size_t c = 0; c < fatbins.size(); ++c) {
    for (std::size_t e = 0; e < fatbins[c].entries.size(); ++e) {
      const FatbinEntry& entry = fatbins[c].entries[e];
      const char* extension = entry.is_ptx() ? "ptx" : entry.is_elf() ? "cubin" : "bin";
      const std::filesystem::path path =
          std::filesystem::path(args.out_dir) /
          fmt::format("{}.{}.{}.{}.{}", stem, c, e, entry.arch_name(), extension);
      std::string contents;
      if (entry.is_ptx()) {
        contents = or_fail(entry_ptx(entry), args.file);
      } else {
        const std::vector<std::byte> bytes = or_fail(entry_contents(entry), args.file);
        contents.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      }
      write_file(path, contents);
      written.push_back({{"path", path.string()},
                         {"kind", entry.kind_name()},
                         {"arch", entry.arch_name()},
                         {"compression", to_string(entry.compression)},
                         {"bytes", contents.size()}});
      if (!args.json) {
        fmt::print("{} ({}, {})\n", path.string(), to_string(entry.compression),
                   human_bytes(contents.size()));
      }
    }
  }
  if (args.json) fmt::print("{}\n", json{{"file", args.file}, {"written", written}}.dump(2));
  return kOk;
}

// ---- instrument ----
struct InstrumentArgs {
  std::string input;
  std::string output;
  std::string report;
  std::string broadcast = "barrier";
  bool uninitialized_reads = false;
  bool json = false;
};

int run_instrument(const InstrumentArgs& args) {
  const MappedFile file = map_or_fail(args.input);
  InstrumentOptions options;
  options.broadcast =
      args.broadcast == "shared" ? Broadcast::shared_word : Broadcast::barrier_reduction;
  options.analysis.allow_uninitialized_reads = args.uninitialized_reads;
  const std::string_view text = file.text().substr(0, file.text().find('\0'));
  const Instrumented twin = or_fail(instrument(text, options), args.input);
  write_file(args.output, twin.ptx);
  json report = to_json(twin, options);
  report["input"] = args.input;
  report["output"] = args.output;
  if (!args.report.empty()) write_file(args.report, report.dump(2) + "\n");
  if (args.json) {
    fmt::print("{}\n", report.dump(2));
  } else {
    for (const InstrumentedKernel& kernel : twin.kernels) {
      if (kernel.instrumented) {
        fmt::print(
            "{}: instrumented; launch record pointer at parameter offset {} ({} bytes in all)\n",
            kernel.name, kernel.launch_param_offset, kernel.twin_param_bytes);
        continue;
      }
      fmt::print("{}: left as is\n", kernel.name);
      for (const SkipReason& reason : kernel.analysis.reasons) {
        fmt::print("  {}: {}{}\n", reason.code, reason.message,
                   reason.line != 0 ? fmt::format(" (line {})", reason.line) : "");
      }
    }
  }
  return twin.instrumented_count() > 0 ? kOk : kNothingInstrumented;
}

// ---- coverage ----
struct CoverageArgs {
  std::vector<std::string> files;
  bool json = false;
  std::uint32_t arch = 90;
};

struct Counts {
  std::size_t kernels = 0;
  std::size_t with_ptx = 0;
  std::size_t ptx_for_device = 0;
  std::size_t killable = 0;

  void add(const Counts& other) {
    kernels += other.kernels;
    with_ptx += other.with_ptx;
    ptx_for_device += other.ptx_for_device;
    killable += other.killable;
  }
  json to_json() const {
    return {{"kernels", kernels},
            {"with_ptx", with_ptx},
            {"ptx_for_device", ptx_for_device},
            {"killable", killable}};
  }
};

double share(std::size_t part, std::size_t whole) {
  return whole == 0 ? 0.0 : 100.0 * static_cast<double>(part) / static_cast<double>(whole);
}

int run_coverage(const CoverageArgs& args) {
  Counts total;
  json files = json::array();
  if (!args.json) {
    fmt::print("{:<48} {:>8} {:>14} {:>14} {:>14}\n", "file", "kernels", "with PTX",
               fmt::format("PTX for sm_{}", args.arch), "killable");
  }
  for (const std::string& path : args.files) {
    const MappedFile file = map_or_fail(path);
    InspectOptions options;
    options.device_arch = args.arch;
    const Inspection inspection = or_fail(inspect(file.bytes(), options), path);
    Counts counts;
    for (const KernelSummary& kernel : inspection.kernels) {
      ++counts.kernels;
      counts.with_ptx += kernel.ptx.empty() ? 0 : 1;
      counts.ptx_for_device += kernel.ptx_for_device ? 1 : 0;
      counts.killable += kernel.killable() ? 1 : 0;
    }
    total.add(counts);
    json item = counts.to_json();
    item["file"] = path;
    files.push_back(std::move(item));
    if (!args.json) {
      fmt::print("{:<48} {:>8} {:>8} {:>4.0f}% {:>8} {:>4.0f}% {:>8} {:>4.0f}%\n", path,
                 counts.kernels, counts.with_ptx, share(counts.with_ptx, counts.kernels),
                 counts.ptx_for_device, share(counts.ptx_for_device, counts.kernels),
                 counts.killable, share(counts.killable, counts.kernels));
    }
  }
  if (args.json) {
    fmt::print(
        "{}\n",
        json{{"device_arch", args.arch}, {"files", files}, {"total", total.to_json()}}.dump(2));
  } else if (args.files.size() > 1) {
    fmt::print("{:<48} {:>8} {:>8} {:>4.0f}% {:>8} {:>4.0f}% {:>8} {:>4.0f}%\n", "total",
               total.kernels, total.with_ptx, share(total.with_ptx, total.kernels),
               total.ptx_for_device, share(total.ptx_for_device, total.kernels), total.killable,
               share(total.killable, total.kernels));
  }
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sluice-ptx: inspect GPU code and build kill-instrumented PTX twins"};
  app.require_subcommand(1);

  InspectArgs inspect_args;
  CLI::App* inspect_cmd = app.add_subcommand("inspect", "List containers, entries and kernels");
  inspect_cmd->add_option("FILE", inspect_args.file, "PTX, fatbin, cubin or ELF with .nv_fatbin")
      ->required();
  inspect_cmd->add_flag("--json", inspect_args.json, "Print JSON");
  inspect_cmd->add_flag("--entries", inspect_args.entries, "List every fatbin entry");
  inspect_cmd->add_option("--arch", inspect_args.arch, "Device compute capability (90 = sm_90)");
  inspect_cmd->add_flag(
      "--allow-uninitialized-reads", inspect_args.uninitialized_reads,
      "Accept kernels that only read uninitialized module data (shim mirrors it)");

  ExtractArgs extract_args;
  CLI::App* extract_cmd = app.add_subcommand("extract", "Write the PTX and cubins of fatbins");
  extract_cmd->add_option("FILE", extract_args.file, "Fatbin or ELF with .nv_fatbin")->required();
  extract_cmd->add_option("-o,--output", extract_args.out_dir, "Directory to write into")
      ->required();
  extract_cmd->add_flag("--json", extract_args.json, "Print JSON");

  InstrumentArgs instrument_args;
  CLI::App* instrument_cmd =
      app.add_subcommand("instrument", "Write the kill-instrumented twin of a PTX module");
  instrument_cmd->add_option("IN", instrument_args.input, "PTX module")->required();
  instrument_cmd->add_option("-o,--output", instrument_args.output, "Twin PTX to write")
      ->required();
  instrument_cmd->add_option("--report", instrument_args.report, "Write the JSON report here");
  instrument_cmd
      ->add_option("--broadcast", instrument_args.broadcast,
                   "How thread 0's decision reaches the block")
      ->check(CLI::IsMember({"barrier", "shared"}));
  instrument_cmd->add_flag("--allow-uninitialized-reads", instrument_args.uninitialized_reads,
                           "Accept kernels that only read uninitialized module data");
  instrument_cmd->add_flag("--json", instrument_args.json, "Print the JSON report");

  CoverageArgs coverage_args;
  CLI::App* coverage_cmd =
      app.add_subcommand("coverage", "Share of kernels with usable PTX and killable kernels");
  coverage_cmd->add_option("FILE", coverage_args.files, "Files to count")->required();
  coverage_cmd->add_flag("--json", coverage_args.json, "Print JSON");
  coverage_cmd->add_option("--arch", coverage_args.arch, "Device compute capability (90 = sm_90)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kOk : kUsage;
  }
  try {
    if (*inspect_cmd) return run_inspect(inspect_args);
    if (*extract_cmd) return run_extract(extract_args);
    if (*instrument_cmd) return run_instrument(instrument_args);
    if (*coverage_cmd) return run_coverage(coverage_args);
  } catch (const Failure& failure) {
    fmt::print(stderr, "sluice-ptx: {}\n", failure.message);
    return failure.code;
  } catch (const std::exception& e) {
    fmt::print(stderr, "sluice-ptx: {}\n", e.what());
    return kIo;
  }
  return kUsage;
}
