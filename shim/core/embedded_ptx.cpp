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

EmbeddedPtx::~EmbeddedPtx() {
  wait();
  if (reader_.joinable()) reader_.join();
}

bool EmbeddedPtx::ready(std::uint32_t arch) {
  std::unique_lock lock(mu_);
  if (reading_ || stopping_.load(std::memory_order_relaxed)) return false;
  if (arch != arch_) {  // another device architecture: other PTX may be the best
    read_.clear();
    modules_.clear();
    by_kernel_.clear();
    arch_ = arch;
  }
  std::vector<std::string> unread;
  for (std::string& path : objects_()) {
    if (!read_.contains(path)) unread.push_back(std::move(path));
  }
  if (unread.empty()) return true;
  if (reader_.joinable()) reader_.join();  // the last reading is over (reading_ is false)
  reading_ = true;
  try {
    reader_ = std::thread([this, unread = std::move(unread), arch] {
      Batch batch = read(unread, arch, stopping_);
      std::lock_guard done_lock(mu_);
      if (arch == arch_ && !stopping_.load(std::memory_order_relaxed)) {
        read_.insert(unread.begin(), unread.end());
        for (Module& module : batch.modules) add(std::move(module));
      }
      reading_ = false;
      done_.notify_all();
    });
  } catch (...) {
    reading_ = false;  // no thread: nothing is read, and nothing found
  }
  return false;
}

void EmbeddedPtx::wait() {
  std::unique_lock lock(mu_);
  done_.wait(lock, [this] { return !reading_; });
}

void EmbeddedPtx::stop() noexcept {
  try {
    std::unique_lock lock(mu_);
    stopping_.store(true, std::memory_order_relaxed);
    done_.wait(lock, [this] { return !reading_; });
  } catch (...) {
  }
}

std::string EmbeddedPtx::find(std::vector<std::string> kernels, std::uint32_t arch) {
  kernels = sorted(std::move(kernels));
  std::lock_guard lock(mu_);
  if (kernels.empty() || arch == 0 || arch != arch_ || reading_) return {};
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

std::size_t EmbeddedPtx::objects_read() {
  std::lock_guard lock(mu_);
  return read_.size();
}

std::size_t EmbeddedPtx::modules_indexed() {
  std::lock_guard lock(mu_);
  return modules_.size();
}

EmbeddedPtx::Batch EmbeddedPtx::read(const std::vector<std::string>& paths, std::uint32_t arch,
                                     const std::atomic<bool>& stop) {
  Batch batch;
  if (arch == 0) return batch;
  for (const std::string& path : paths) {
    if (stop.load(std::memory_order_relaxed)) return batch;
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
      if (stop.load(std::memory_order_relaxed)) return batch;
      const ptx::FatbinEntry* entry = ptx::select_ptx(fatbin, arch);
      if (entry == nullptr) continue;
      auto text = ptx::entry_ptx(*entry);
      if (!text) continue;
      auto module = ptx::parse_module(*text);
      if (!module) continue;  // the rewriter would refuse it too
      std::vector<std::string> kernels;
      for (const ptx::Function* function : module->entries()) kernels.push_back(function->name);
      if (kernels.empty()) continue;
      batch.modules.push_back(Module{std::move(*text), sorted(std::move(kernels))});
    }
  }
  return batch;
}

void EmbeddedPtx::add(Module module) {
  // The same fatbin may be in several containers (a library's .nv_fatbin and __nv_relfatbin).
  for (std::size_t index : by_kernel_[module.kernels.front()]) {
    if (modules_[index].ptx == module.ptx) return;
  }
  const std::size_t index = modules_.size();
  for (const std::string& name : module.kernels) by_kernel_[name].push_back(index);
  modules_.push_back(std::move(module));
}

}  // namespace sluice::shim
