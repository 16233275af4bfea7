// The engine board: which operation of a fake device may start, decided the same way whether the
// device belongs to one process or is shared by several (SLUICE_FAKE_GPU_DIR).
//
// The device model (docs/architecture.md, "Contract: the fake driver"): every device has a compute
// engine and a copy engine. An operation takes a ticket on its device when the application calls
// the driver. When it reaches the head of its stream with its dependencies met, its process
// *publishes* it on the board as ready. A ready operation starts when no running operation of its
// engine overlaps its SMs and no ready operation of its engine with a lower ticket overlaps them.
// Operations that are not at the head of their stream are not on the board, so they never hold
// anything up.
//
// The board is a fixed array of slots. In shared mode it lives in a file mapped by every process
// of the device; only lock-free atomics are used in it (no pthread mutex or semaphore), waits are
// futex waits with timeouts, and slots of processes that died are reclaimed (reap_dead_owners).
//
// Starting is a claim protocol in the style of Dekker: a process marks its slot CLAIM, then scans
// the others. It backs off (slot back to READY) when it sees an overlapping RUNNING slot or an
// overlapping READY/CLAIM slot with a lower ticket; it waits briefly for an overlapping CLAIM with
// a higher ticket to resolve. Sequentially consistent stores and loads guarantee that of two
// concurrent claimers at least one sees the other, so two overlapping operations never run at once.
//
// Thread safety: a slot is written only by the process that owns it; within a process the fake
// calls publish/try_start/finish from its device executor under the driver lock. take_ticket,
// ring, wait and memory_used may be called from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "sm_mask.h"

namespace sluice::fake {

enum class Engine : std::uint32_t { none = 0, compute = 1, copy = 2 };

inline constexpr std::uint64_t kBoardMagic = 0x44524f4246534c53ull;  // "SLSFBORD"
inline constexpr std::uint32_t kBoardAbiMajor = 2;
inline constexpr std::uint32_t kBoardAbiMinor = 0;
inline constexpr std::uint32_t kBoardSlots = 512;

enum SlotState : std::uint32_t {
  kSlotFree = 0,
  kSlotFilling = 1,  // owned, fields being written; not competing yet
  kSlotReady = 2,
  kSlotClaim = 3,
  kSlotRunning = 4,
};

struct alignas(64) EngineSlot {
  std::atomic<std::uint32_t> state;
  std::atomic<std::uint32_t> generation;  // bumped on every publish, to detect torn reads
  std::atomic<std::int32_t> pid;
  std::atomic<std::uint32_t> engine;
  std::atomic<std::uint64_t> ticket;
  std::atomic<std::uint64_t> owner_start;  // the owner's start time (/proc/<pid>/stat), against pid reuse
  std::atomic<std::uint64_t> sms[kMaxSms / 64];
};
static_assert(sizeof(EngineSlot) == 64);

struct BoardHeader {
  std::uint64_t magic;
  std::uint32_t abi_major;
  std::uint32_t abi_minor;
  std::uint32_t header_bytes;
  std::uint32_t slot_bytes;
  std::uint32_t slot_count;
  std::uint32_t sm_count;
  std::atomic<std::uint32_t> init_state;  // 0 fresh file, 1 being initialised, 2 ready
  std::atomic<std::uint32_t> doorbell;    // futex word, bumped on every change of the board
  std::atomic<std::uint32_t> waiters;     // executors sleeping on the doorbell
  std::atomic<std::uint32_t> high_water;  // slots [0, high_water) may be in use
  std::atomic<std::uint64_t> next_ticket;
  std::atomic<std::uint64_t> memory_used;  // device memory allocated by all processes
  std::atomic<std::uint32_t> watchers;     // sleeping executors that wait for other processes
  std::uint32_t padding;
  std::uint8_t reserved[56];
};
static_assert(sizeof(BoardHeader) == 128);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

struct BoardLayout {
  BoardHeader header;
  EngineSlot slots[kBoardSlots];
};
static_assert(offsetof(BoardLayout, slots) == 128);

class EngineBoard {
 public:
  // A board private to this process.
  static std::unique_ptr<EngineBoard> make_private(unsigned sm_count);
  // The board of device `ordinal` in directory `dir` (created 0700/0600 when missing), shared
  // with every process that opens the same file. Returns null and sets `why` on failure.
  static std::unique_ptr<EngineBoard> open_shared(const std::string& dir, int ordinal,
                                                  unsigned sm_count, std::string& why);
  ~EngineBoard();
  EngineBoard(const EngineBoard&) = delete;
  EngineBoard& operator=(const EngineBoard&) = delete;

  bool shared() const { return shared_; }
  const std::string& path() const { return path_; }

  std::uint64_t take_ticket();

  // Puts a ready operation on the board; returns its slot, or -1 when the board is full.
  int publish(std::uint64_t ticket, Engine engine, const SmMask& sms);
  // The claim protocol; true when the operation in `slot` may start now (it is then RUNNING).
  bool try_start(int slot);
  // Frees the slot (a finished or withdrawn operation) and rings the doorbell.
  void finish(int slot);

  std::uint32_t doorbell() const;
  // Wakes every executor that waits for other processes (an operation blocked by the board, a
  // stream memory wait): a slot was freed or memory written.
  void ring();
  // Wakes this process's executor only (new work, a host function done). Other processes keep
  // sleeping: their futex waits carry a per-process bit (FUTEX_WAIT_BITSET).
  void ring_local();
  // Sleeps until the doorbell differs from `seen`, a ring for this process (or, when
  // `watching_others`, for everyone), or `timeout_ns` passes.
  void wait(std::uint32_t seen, std::uint64_t timeout_ns, bool watching_others);

  // Frees slots whose owning process is gone. Returns how many.
  std::size_t reap_dead_owners();

  std::atomic<std::uint64_t>& memory_used() { return layout_->header.memory_used; }

 private:
  EngineBoard(BoardLayout* layout, std::size_t mapped_bytes, bool shared, std::string path);
  void initialise_header(unsigned sm_count);

  BoardLayout* layout_;
  std::size_t mapped_bytes_;  // 0 for a private board (heap)
  bool shared_;
  std::string path_;

  std::int32_t pid_;
  std::uint64_t start_time_;
  std::uint32_t wake_bit_;  // this process's bit in the doorbell's futex bitset
};

// The start time of process `pid` in clock ticks since boot (/proc/<pid>/stat field 22), or 0.
std::uint64_t process_start_time(int pid);

}  // namespace sluice::fake
