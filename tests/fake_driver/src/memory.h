// Memory of the fake driver: device memory from a memfd arena per device, host allocations, and
// the table of every range the driver knows about (the answer to cuPointerGetAttribute and the
// check behind every copy and kernel access).
//
// Device pointers are host addresses ("host memory as device memory"). Each device's arena is one
// sparse memfd mapped once; allocations are page-aligned ranges of it, taken in address order and
// only reused once the arena is exhausted, so a stale pointer to freed memory is recognised as such
// (CUDA_ERROR_INVALID_VALUE at the call, CUDA_ERROR_ILLEGAL_ADDRESS on the device) for a long time.
// Freed ranges are punched out of the memfd. Another process maps a range through
// /proc/<pid>/fd/<fd> (cuIpcOpenMemHandle), so IPC works between processes of the same user.
//
// Thread safety: none; the driver calls everything here under its lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace sluice::fake {

inline constexpr std::size_t kPageBytes = 4096;

enum class MemKind : std::uint8_t {
  device,           // cuMemAlloc, cuMemAllocAsync, cuMemAllocPitch
  managed,          // cuMemAllocManaged
  host_pinned,      // cuMemAllocHost, cuMemHostAlloc
  host_registered,  // cuMemHostRegister
  ipc_mapped,       // cuIpcOpenMemHandle
};

struct Allocation {
  std::uintptr_t base = 0;
  std::size_t size = 0;
  MemKind kind = MemKind::device;
  int device = 0;
  void* ctx = nullptr;        // the CUcontext it belongs to
  void* pool = nullptr;       // the CUmemoryPool of stream-ordered allocations
  void* graph = nullptr;      // the CUgraph whose allocation node made it (captured cuMemAllocAsync)
  std::uint64_t buffer_id = 0;
  unsigned host_flags = 0;    // cuMemHostAlloc / cuMemHostRegister flags
  bool live = true;           // false while a graph-owned allocation is not allocated
  std::size_t arena_offset = 0;
  std::size_t mapped_bytes = 0;  // host_pinned and ipc_mapped: the mmap to undo
};

// One device's arena.
class Arena {
 public:
  Arena() = default;
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // Creates the memfd and maps `bytes` of address space (nothing is committed until touched).
  bool init(std::size_t bytes, int device, std::string& why);
  bool ready() const { return base_ != 0; }

  // A page-aligned range of at least `bytes`, or nullopt when the arena is full.
  std::optional<std::uintptr_t> allocate(std::size_t bytes);
  void release(std::uintptr_t address, std::size_t bytes);

  bool contains(std::uintptr_t address) const { return address >= base_ && address < base_ + size_; }
  int fd() const { return fd_; }
  std::size_t offset_of(std::uintptr_t address) const { return address - base_; }

 private:
  int fd_ = -1;
  std::uintptr_t base_ = 0;
  std::size_t size_ = 0;
  std::size_t bump_ = 0;                    // first never-used offset
  std::map<std::size_t, std::size_t> free_;  // offset -> length of ranges freed below bump_
};

// The ranges the driver knows, keyed by base address.
class AllocationTable {
 public:
  Allocation& insert(const Allocation& allocation);
  void erase(std::uintptr_t base);

  // The allocation containing [address, address + bytes), or null (bytes 0 means 1).
  Allocation* find(std::uintptr_t address, std::size_t bytes = 1);
  // The allocation starting exactly at `base`, or null.
  Allocation* at(std::uintptr_t base);

  template <typename F>
  void for_each(F&& visit) {
    for (auto& [base, allocation] : ranges_) visit(allocation);
  }

  std::uint64_t next_buffer_id() { return ++last_buffer_id_; }

 private:
  std::map<std::uintptr_t, Allocation> ranges_;
  std::uint64_t last_buffer_id_ = 0;
};

// The 64 bytes of a CUipcMemHandle made by this fake.
struct IpcMemHandle {
  std::uint32_t magic;
  std::uint32_t version;
  std::int32_t pid;
  std::int32_t fd;
  std::uint64_t offset;
  std::uint64_t size;
  std::uint64_t buffer_id;
  std::uint64_t owner_start;
  std::int32_t device;
  std::uint32_t reserved[3];
};
static_assert(sizeof(IpcMemHandle) == 64);
inline constexpr std::uint32_t kIpcMagic = 0x534c4950;  // "SLIP"

// Maps `bytes` at `offset` of another process's arena. Returns the address, or 0 with `why`.
std::uintptr_t map_foreign_range(int pid, int fd, std::uint64_t offset, std::size_t bytes, std::string& why);

std::size_t round_up(std::size_t value, std::size_t granule);

}  // namespace sluice::fake
