#include "memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sluice/common/log.h"

namespace sluice::fake {

std::size_t round_up(std::size_t value, std::size_t granule) {
  return (value + granule - 1) / granule * granule;
}

Arena::~Arena() {
  if (base_ != 0) munmap(reinterpret_cast<void*>(base_), size_);
  if (fd_ >= 0) close(fd_);
}

bool Arena::init(std::size_t bytes, int device, std::string& why) {
  std::string name = fmt::format("sluice-fake-gpu{}", device);
  fd_ = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd_ < 0) {
    why = fmt::format("memfd_create: {}", std::strerror(errno));
    return false;
  }
  if (ftruncate(fd_, static_cast<off_t>(bytes)) != 0) {
    why = fmt::format("ftruncate of the {} byte arena: {}", bytes, std::strerror(errno));
    return false;
  }
  void* mapped = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd_, 0);
  if (mapped == MAP_FAILED) {
    why = fmt::format("mmap of the {} byte arena: {}", bytes, std::strerror(errno));
    return false;
  }
  base_ = reinterpret_cast<std::uintptr_t>(mapped);
  size_ = bytes;
  return true;
}

std::optional<std::uintptr_t> Arena::allocate(std::size_t bytes) {
  const std::size_t length = round_up(bytes == 0 ? 1 : bytes, kPageBytes);
  if (bump_ + length <= size_) {
    std::uintptr_t address = base_ + bump_;
    bump_ += length;
    return address;
  }
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < length) continue;
    const std::size_t offset = it->first;
    const std::size_t rest = it->second - length;
    free_.erase(it);
    if (rest != 0) free_.emplace(offset + length, rest);
    return base_ + offset;
  }
  return std::nullopt;
}

void Arena::release(std::uintptr_t address, std::size_t bytes) {
  const std::size_t length = round_up(bytes == 0 ? 1 : bytes, kPageBytes);
  std::size_t offset = address - base_;
  // Give the pages back; the range reads as zeros if something still touches it.
  if (fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                static_cast<off_t>(length)) != 0) {
    SLUICE_LOG_ONCE(warn, "fake driver: cannot punch freed device memory: {}", std::strerror(errno));
  }
  std::size_t merged_length = length;
  auto next = free_.lower_bound(offset);
  if (next != free_.end() && next->first == offset + length) {
    merged_length += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto previous = std::prev(next);
    if (previous->first + previous->second == offset) {
      offset = previous->first;
      merged_length += previous->second;
      free_.erase(previous);
    }
  }
  free_.emplace(offset, merged_length);
}

Allocation& AllocationTable::insert(const Allocation& allocation) {
  auto [it, inserted] = ranges_.insert_or_assign(allocation.base, allocation);
  return it->second;
}

void AllocationTable::erase(std::uintptr_t base) { ranges_.erase(base); }

Allocation* AllocationTable::find(std::uintptr_t address, std::size_t bytes) {
  auto it = ranges_.upper_bound(address);
  if (it == ranges_.begin()) return nullptr;
  --it;
  Allocation& candidate = it->second;
  const std::size_t span = bytes == 0 ? 1 : bytes;
  if (address - candidate.base >= candidate.size) return nullptr;
  if (span > candidate.size - (address - candidate.base)) return nullptr;
  return &candidate;
}

Allocation* AllocationTable::at(std::uintptr_t base) {
  auto it = ranges_.find(base);
  return it == ranges_.end() ? nullptr : &it->second;
}

std::uintptr_t map_foreign_range(int pid, int fd, std::uint64_t offset, std::size_t bytes, std::string& why) {
  std::string path = fmt::format("/proc/{}/fd/{}", pid, fd);
  int local = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (local < 0) {
    why = fmt::format("cannot open {}: {}", path, std::strerror(errno));
    return 0;
  }
  void* mapped = mmap(nullptr, round_up(bytes, kPageBytes), PROT_READ | PROT_WRITE, MAP_SHARED, local,
                      static_cast<off_t>(offset));
  close(local);
  if (mapped == MAP_FAILED) {
    why = fmt::format("cannot map {}: {}", path, std::strerror(errno));
    return 0;
  }
  return reinterpret_cast<std::uintptr_t>(mapped);
}

}  // namespace sluice::fake
