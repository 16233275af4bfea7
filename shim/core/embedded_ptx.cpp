#include "sluice/shim/embedded_ptx.h"

#include <link.h>

#include <algorithm>

#include "sluice/common/log.h"
#include "sluice/ptx/elf.h"
#include "sluice/ptx/fatbin.h"
#include "sluice/ptx/mapped_file.h"
#include "sluice/ptx/ptx.h"

namespace sluice::shim {
namespace {

int collect_object(dl_phdr_info* info, std::size_t, void* out) {
  auto& files = *static_cast<std::vector<std::string>*>(out);
  const char* name = info->dlpi_name;
  if (name == nullptr || *name == '\0') {
    // The program itself (listed first, without a name).
    if (files.empty()) files.emplace_back("/proc/self/exe");
    return 0;
  }
  if (name[0] == '/') files.emplace_back(name);  // not the vDSO, which has no file
  return 0;
}

std::vector<std::string> sorted(std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

}  // namespace

std::vector<std::string> loaded_object_files() {
  std::vector<std::string> files;
  dl_iterate_phdr(collect_object, &files);
  return files;
}

EmbeddedPtx::EmbeddedPtx(ObjectLister objects) : objects_(std::move(objects)) {}

std::string EmbeddedPtx::find(std::vector<std::string> kernels, std::uint32_t arch) {
  kernels = sorted(std::move(kernels));
  if (kernels.empty() || arch == 0) return {};
  read_new_objects(arch);
  auto it = by_kernel_.find(kernels.front());
  if (it == by_kernel_.end()) return {};
  const Module* match = nullptr;
  for (std::size_t index : it->second) {
    const Module& module = modules_[index];
    if (module.kernels != kernels) continue;
    if (match != nullptr) return {};  // two different modules with these kernels: neither is sure
    match = &module;
  }
  return match != nullptr ? match->ptx : std::string{};
}

void EmbeddedPtx::read_new_objects(std::uint32_t arch) {
  if (arch != arch_) {  // another device architecture: other PTX may be the best
    read_.clear();
    modules_.clear();
    by_kernel_.clear();
    arch_ = arch;
  }
  for (const std::string& path : objects_()) {
    if (!read_.insert(path).second) continue;
    auto file = ptx::MappedFile::open(path);
    if (!file) continue;
    auto elf = ptx::parse_elf(file->bytes());
    if (!elf) continue;
    auto fatbins = ptx::elf_fatbins(*elf);
    if (!fatbins) {
      log::debug("kill: the fatbins of {} cannot be read: {}", path, fatbins.error().message);
      continue;
    }
    for (const ptx::Fatbin& fatbin : *fatbins) {
      const ptx::FatbinEntry* entry = ptx::select_ptx(fatbin, arch);
      if (entry == nullptr) continue;
      if (auto text = ptx::entry_ptx(*entry)) add(std::move(*text));
    }
  }
}

void EmbeddedPtx::add(std::string ptx) {
  auto module = ptx::parse_module(ptx);
  if (!module) return;  // the rewriter would refuse it too
  std::vector<std::string> kernels;
  for (const ptx::Function* entry : module->entries()) kernels.push_back(entry->name);
  kernels = sorted(std::move(kernels));
  if (kernels.empty()) return;
  // The same fatbin may be in several containers (a library's .nv_fatbin and __nv_relfatbin).
  for (std::size_t index : by_kernel_[kernels.front()]) {
    if (modules_[index].ptx == ptx) return;
  }
  const std::size_t index = modules_.size();
  modules_.push_back(Module{std::move(ptx), kernels});
  for (const std::string& name : kernels) by_kernel_[name].push_back(index);
}

}  // namespace sluice::shim
