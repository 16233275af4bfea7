#include "sluice/ptx/inspect.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "byte_reader.h"
#include "ptx_lexer.h"
#include "sluice/ptx/elf.h"

namespace sluice::ptx {
namespace {

// Where the analysis of a kernel came from, to keep the one the device would use.
struct PtxCandidate {
  std::string arch;
  std::uint32_t arch_number = 0;
  bool for_device = false;
};

class Collector {
 public:
  explicit Collector(const InspectOptions& options) : options_(options) {}

  void add_sass(const std::string& kernel, const std::string& arch) {
    append_unique(summary(kernel).sass, arch);
  }

  // PTX the device cannot JIT only tells which kernels have PTX at all.
  void add_ptx_names(const std::vector<std::string>& names, const PtxCandidate& candidate) {
    for (const std::string& name : names) append_unique(summary(name).ptx, candidate.arch);
  }

  void add_ptx_module(const Module& module, const PtxCandidate& candidate) {
    const std::vector<KernelAnalysis> analyses = analyze_module(module, options_.analysis);
    for (const KernelAnalysis& analysis : analyses) {
      KernelSummary& kernel = summary(analysis.name);
      append_unique(kernel.ptx, candidate.arch);
      // Keep the analysis of the PTX the device uses: the newest that runs on it, else the newest.
      const PtxCandidate& current = chosen_[analysis.name];
      const bool better = !kernel.analysis || (candidate.for_device && !current.for_device) ||
                          (candidate.for_device == current.for_device &&
                           candidate.arch_number > current.arch_number);
      kernel.ptx_for_device |= candidate.for_device;
      if (better) {
        kernel.analysis = analysis;
        kernel.analyzed_ptx = candidate.arch;
        chosen_[analysis.name] = candidate;
      }
    }
  }

  std::vector<KernelSummary> kernels() && {
    std::vector<KernelSummary> out;
    for (auto& [name, kernel] : kernels_) out.push_back(std::move(kernel));
    return out;
  }

 private:
  static void append_unique(std::vector<std::string>& list, const std::string& value) {
    if (std::find(list.begin(), list.end(), value) == list.end()) list.push_back(value);
  }

  KernelSummary& summary(const std::string& name) {
    KernelSummary& kernel = kernels_[name];
    kernel.name = name;
    return kernel;
  }

  const InspectOptions& options_;
  std::map<std::string, KernelSummary> kernels_;
  std::map<std::string, PtxCandidate> chosen_;
};

bool ptx_runs_on(const Module& module, std::uint32_t device_arch) {
  const std::uint32_t arch = module.target_arch();
  if (module.target_is_arch_specific()) return arch == device_arch;
  return arch != 0 && arch <= device_arch;
}

// The names of the .entry functions of PTX text, without parsing it: a word ".entry" at the start
// of a declaration (after linkage words), then the name. Text after "//" on a line is ignored.
std::vector<std::string> scan_entry_names(std::string_view text) {
  std::vector<std::string> names;
  std::size_t at = 0;
  while ((at = text.find(".entry", at)) != std::string_view::npos) {
    const std::size_t line_start = text.rfind('\n', at) + 1;  // npos + 1 == 0
    const bool commented =
        text.substr(line_start, at - line_start).find("//") != std::string_view::npos;
    at += 6;
    if (commented || at >= text.size() || (text[at] != ' ' && text[at] != '\t')) continue;
    while (at < text.size() && (text[at] == ' ' || text[at] == '\t')) ++at;
    const std::size_t begin = at;
    while (at < text.size() && detail::is_word_char(text[at])) ++at;
    if (at > begin) names.emplace_back(text.substr(begin, at - begin));
  }
  return names;
}

// Reads one fatbin entry into the collector; problems go into the entry's summary.
void inspect_entry(const FatbinEntry& entry, const InspectOptions& options, Collector& collector,
                   EntrySummary& summary) {
  if (entry.is_ptx()) {
    auto text = entry_ptx(entry, options.limits);
    if (!text) {
      summary.error = text.error().message;
      return;
    }
    const PtxCandidate candidate{entry.arch_name(), entry.arch,
                                 runs_on(entry, options.device_arch)};
    if (!candidate.for_device) {
      collector.add_ptx_names(scan_entry_names(*text), candidate);
      return;
    }
    auto module = parse_module(*text);
    if (!module) {
      summary.error =
          fmt::format("PTX at offset {:#x}: {}", entry.payload_offset, module.error().message);
      return;
    }
    // The fatbin's own arch and flags say where the PTX may run; they agree with .target.
    collector.add_ptx_module(*module, candidate);
  } else if (entry.is_elf()) {
    auto contents = entry_contents(entry, options.limits);
    if (!contents) {
      summary.error = contents.error().message;
      return;
    }
    auto cubin = parse_elf(*contents);
    auto kernels = cubin ? cubin_kernels(*cubin) : Result<std::vector<std::string>>(cubin.error());
    if (!kernels) {
      summary.error =
          fmt::format("cubin at offset {:#x}: {}", entry.payload_offset, kernels.error().message);
      return;
    }
    for (const std::string& kernel : *kernels) collector.add_sass(kernel, entry.arch_name());
  }
}

ContainerSummary inspect_container(const Fatbin& fatbin, const InspectOptions& options,
                                   Collector& collector) {
  ContainerSummary container{fatbin.offset, fatbin.size, {}};
  for (std::size_t i = 0; i < fatbin.entries.size(); ++i) {
    const FatbinEntry& entry = fatbin.entries[i];
    EntrySummary summary;
    summary.index = i;
    summary.offset = entry.offset;
    summary.kind = std::string(entry.kind_name());
    summary.arch = entry.arch_name();
    summary.compression = entry.compression;
    summary.stored_bytes = entry.payload.size();
    summary.content_bytes = entry.content_size();
    summary.flags = entry.flags;
    summary.name = entry.name;
    inspect_entry(entry, options, collector, summary);
    container.entries.push_back(std::move(summary));
  }
  return container;
}

}  // namespace

Result<Inspection> inspect(Bytes data, const InspectOptions& options) {
  Inspection inspection;
  inspection.kind = classify_image(data.first(std::min<std::size_t>(data.size(), 64)));
  Collector collector(options);
  std::vector<Fatbin> fatbins;
  switch (inspection.kind) {
    case ImageKind::ptx: {
      const std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
      SLUICE_PTX_TRY(module, parse_module(text.substr(0, text.find('\0'))));
      const std::string arch = module.target.empty() ? "?" : module.target.front();
      collector.add_ptx_module(
          module, {arch, module.target_arch(), ptx_runs_on(module, options.device_arch)});
      break;
    }
    case ImageKind::fatbin: {
      SLUICE_PTX_TRY(parsed, parse_fatbins(data));
      fatbins = std::move(parsed);
      break;
    }
    case ImageKind::elf: {
      SLUICE_PTX_TRY(elf, parse_elf(data));
      if (elf.machine == kElfMachineCuda) {
        SLUICE_PTX_TRY(kernels, cubin_kernels(elf));
        const std::string arch = fmt::format("sm_{}", cubin_arch(elf));
        for (const std::string& kernel : kernels) collector.add_sass(kernel, arch);
        break;
      }
      SLUICE_PTX_TRY(parsed, elf_fatbins(elf));
      fatbins = std::move(parsed);
      break;
    }
    case ImageKind::fatbin_wrapper:
      return make_error(
          "a __cudaRegisterFatBinary wrapper holds a pointer into a running process; inspect the "
          "fatbin it points to");
    case ImageKind::unknown:
      return make_error("neither PTX text, a fatbin, nor an ELF file");
  }
  for (const Fatbin& fatbin : fatbins) {
    inspection.fatbins.push_back(inspect_container(fatbin, options, collector));
  }
  inspection.kernels = std::move(collector).kernels();
  return inspection;
}

}  // namespace sluice::ptx
