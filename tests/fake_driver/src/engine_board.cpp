#include "engine_board.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <new>
#include <sstream>

#include "files.h"
#include "sluice/common/clock.h"
#include "sluice/common/log.h"

namespace sluice::fake {
namespace {

constexpr auto kSeqCst = std::memory_order_seq_cst;
constexpr auto kRelaxed = std::memory_order_relaxed;

// How long a claimer waits for an overlapping claim with a higher ticket before backing off.
constexpr int kClaimSpins = 200;

bool masks_overlap(const EngineSlot& slot, const SmMask& mask) {
  for (std::size_t i = 0; i < mask.words.size(); ++i) {
    if ((slot.sms[i].load(kRelaxed) & mask.words[i]) != 0) return true;
  }
  return false;
}

int futex(std::atomic<std::uint32_t>* word, int op, std::uint32_t value, const timespec* timeout, std::uint32_t bits) {
  return static_cast<int>(syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), op, value,
                                  timeout, nullptr, bits));
}

bool process_alive(int pid, std::uint64_t start_time) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  if (start_time == 0) return true;
  std::uint64_t now_start = process_start_time(pid);
  return now_start == 0 || now_start == start_time;
}

}  // namespace

std::uint64_t process_start_time(int pid) {
  std::string text;
  if (!read_whole_file("/proc/" + std::to_string(pid) + "/stat", text)) return 0;
  // The command name (field 2) may contain spaces; fields after it follow the last ')'.
  std::size_t close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  for (int index = 3; index <= 22 && fields >> field; ++index) {
    if (index == 22) return std::strtoull(field.c_str(), nullptr, 10);
  }
  return 0;
}

EngineBoard::EngineBoard(BoardLayout* layout, std::size_t mapped_bytes, bool shared, std::string path)
    : layout_(layout),
      mapped_bytes_(mapped_bytes),
      shared_(shared),
      path_(std::move(path)),
      pid_(static_cast<std::int32_t>(getpid())),
      start_time_(shared ? process_start_time(getpid()) : 0),
      wake_bit_(1u << (static_cast<std::uint32_t>(getpid()) % 32)) {}

EngineBoard::~EngineBoard() {
  if (mapped_bytes_ != 0) {
    munmap(layout_, mapped_bytes_);
  } else {
    delete layout_;
  }
}

void EngineBoard::initialise_header(unsigned sm_count) {
  BoardHeader& header = layout_->header;
  header.magic = kBoardMagic;
  header.abi_major = kBoardAbiMajor;
  header.abi_minor = kBoardAbiMinor;
  header.header_bytes = sizeof(BoardHeader);
  header.slot_bytes = sizeof(EngineSlot);
  header.slot_count = kBoardSlots;
  header.sm_count = sm_count;
  header.next_ticket.store(1, kRelaxed);
}

std::unique_ptr<EngineBoard> EngineBoard::make_private(unsigned sm_count) {
  auto* layout = new BoardLayout{};
  std::unique_ptr<EngineBoard> board(new EngineBoard(layout, 0, false, ""));
  board->initialise_header(sm_count);
  layout->header.init_state.store(2, std::memory_order_release);
  return board;
}

std::unique_ptr<EngineBoard> EngineBoard::open_shared(const std::string& dir, int ordinal,
                                                      unsigned sm_count, std::string& why) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    why = fmt::format("cannot create {}: {}", dir, std::strerror(errno));
    return nullptr;
  }
  std::string path = fmt::format("{}/sluice-fake-gpu{}.board", dir, ordinal);
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    why = fmt::format("cannot open {}: {}", path, std::strerror(errno));
    return nullptr;
  }
  struct stat info {};
  if (fstat(fd, &info) != 0 ||
      (static_cast<std::size_t>(info.st_size) < sizeof(BoardLayout) && ftruncate(fd, sizeof(BoardLayout)) != 0)) {
    why = fmt::format("cannot size {}: {}", path, std::strerror(errno));
    close(fd);
    return nullptr;
  }
  void* mapped = mmap(nullptr, sizeof(BoardLayout), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (mapped == MAP_FAILED) {
    why = fmt::format("cannot map {}: {}", path, std::strerror(errno));
    return nullptr;
  }
  auto* layout = static_cast<BoardLayout*>(mapped);
  std::unique_ptr<EngineBoard> board(new EngineBoard(layout, sizeof(BoardLayout), true, path));

  // The first process initialises the header; the others wait (bounded) until it is ready.
  BoardHeader& header = layout->header;
  std::uint32_t fresh = 0;
  if (header.init_state.compare_exchange_strong(fresh, 1, kSeqCst)) {
    board->initialise_header(sm_count);
    header.init_state.store(2, std::memory_order_release);
  } else {
    const std::uint64_t deadline = now_ns() + 2'000'000'000ull;
    while (header.init_state.load(std::memory_order_acquire) != 2) {
      if (now_ns() > deadline) {
        why = fmt::format("{} was never initialised (its creator died?); remove it", path);
        return nullptr;
      }
      usleep(1000);
    }
  }
  if (header.magic != kBoardMagic || header.abi_major != kBoardAbiMajor ||
      header.header_bytes != sizeof(BoardHeader) || header.slot_bytes != sizeof(EngineSlot) ||
      header.slot_count != kBoardSlots) {
    why = fmt::format("{} has another layout (magic {:#x}, ABI {}.{}); remove it", path, header.magic,
                      header.abi_major, header.abi_minor);
    return nullptr;
  }
  if (header.sm_count != sm_count) {
    why = fmt::format("{} describes a device with {} SMs, this process has SLUICE_FAKE_SMS={}", path,
                      header.sm_count, sm_count);
    return nullptr;
  }
  return board;
}

std::uint64_t EngineBoard::take_ticket() { return layout_->header.next_ticket.fetch_add(1, kSeqCst); }

int EngineBoard::publish(std::uint64_t ticket, Engine engine, const SmMask& sms) {
  // The lowest free slot: high_water, and so every claim's scan, stays as short as the number of
  // operations on the board at once.
  for (std::uint32_t index = 0; index < kBoardSlots; ++index) {
    EngineSlot& slot = layout_->slots[index];
    std::uint32_t expected = kSlotFree;
    if (slot.state.load(kRelaxed) != kSlotFree ||
        !slot.state.compare_exchange_strong(expected, kSlotFilling, kSeqCst)) {
      continue;
    }
    slot.generation.fetch_add(1, kSeqCst);
    slot.pid.store(pid_, kRelaxed);
    slot.owner_start.store(start_time_, kRelaxed);
    slot.engine.store(static_cast<std::uint32_t>(engine), kRelaxed);
    slot.ticket.store(ticket, kRelaxed);
    for (std::size_t i = 0; i < sms.words.size(); ++i) slot.sms[i].store(sms.words[i], kRelaxed);
    slot.generation.fetch_add(1, kSeqCst);
    std::uint32_t high = layout_->header.high_water.load(kSeqCst);
    while (high < index + 1 && !layout_->header.high_water.compare_exchange_weak(high, index + 1, kSeqCst)) {
    }
    slot.state.store(kSlotReady, kSeqCst);
    return static_cast<int>(index);
  }
  return -1;
}

bool EngineBoard::try_start(int index) {
  EngineSlot& me = layout_->slots[index];
  const std::uint64_t my_ticket = me.ticket.load(kRelaxed);
  const std::uint32_t my_engine = me.engine.load(kRelaxed);
  SmMask mine;
  for (std::size_t i = 0; i < mine.words.size(); ++i) mine.words[i] = me.sms[i].load(kRelaxed);

  me.state.store(kSlotClaim, kSeqCst);
  auto back_off = [&] {
    me.state.store(kSlotReady, kSeqCst);
    return false;
  };
  const std::uint32_t high = layout_->header.high_water.load(kSeqCst);
  for (std::uint32_t i = 0; i < high; ++i) {
    if (static_cast<int>(i) == index) continue;
    EngineSlot& other = layout_->slots[i];
    for (int spins = 0;; ++spins) {
      const std::uint32_t generation = other.generation.load(kSeqCst);
      const std::uint32_t state = other.state.load(kSeqCst);
      if (state == kSlotFree || state == kSlotFilling) break;
      const bool competing = other.engine.load(kRelaxed) == my_engine && masks_overlap(other, mine);
      const std::uint64_t ticket = other.ticket.load(kRelaxed);
      if (other.generation.load(kSeqCst) != generation) continue;  // torn read: look again
      if (!competing) break;
      if (state == kSlotRunning) return back_off();
      if (ticket < my_ticket) return back_off();
      if (state == kSlotReady) break;  // a later ticket waits for us
      // An overlapping claim with a later ticket: it will back off or start; wait to see which.
      if (spins >= kClaimSpins) return back_off();
      sched_yield();
    }
  }
  me.state.store(kSlotRunning, kSeqCst);
  return true;
}

void EngineBoard::finish(int index) {
  layout_->slots[index].state.store(kSlotFree, kSeqCst);
  ring();
}

std::uint32_t EngineBoard::doorbell() const { return layout_->header.doorbell.load(kSeqCst); }

// Every ring bumps the doorbell, so a sleeper that read it before the change never sleeps through
// it; the futex wake (a system call) goes only to sleepers that asked for that kind of ring.
void EngineBoard::ring() {
  BoardHeader& header = layout_->header;
  header.doorbell.fetch_add(1, kSeqCst);
  if (header.watchers.load(kSeqCst) != 0) {
    futex(&header.doorbell, shared_ ? FUTEX_WAKE_BITSET : FUTEX_WAKE_BITSET_PRIVATE, INT_MAX, nullptr, FUTEX_BITSET_MATCH_ANY);
  }
}

void EngineBoard::ring_local() {
  BoardHeader& header = layout_->header;
  header.doorbell.fetch_add(1, kSeqCst);
  if (header.waiters.load(kSeqCst) != 0) {
    futex(&header.doorbell, shared_ ? FUTEX_WAKE_BITSET : FUTEX_WAKE_BITSET_PRIVATE, INT_MAX, nullptr, wake_bit_);
  }
}

void EngineBoard::wait(std::uint32_t seen, std::uint64_t timeout_ns, bool watching_others) {
  BoardHeader& header = layout_->header;
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline.
  timespec deadline{};
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  const std::uint64_t until_ns = static_cast<std::uint64_t>(deadline.tv_nsec) + timeout_ns;
  deadline.tv_sec += static_cast<time_t>(until_ns / 1'000'000'000ull);
  deadline.tv_nsec = static_cast<long>(until_ns % 1'000'000'000ull);
  header.waiters.fetch_add(1, kSeqCst);
  if (watching_others) header.watchers.fetch_add(1, kSeqCst);
  if (header.doorbell.load(kSeqCst) == seen) {
    futex(&header.doorbell, shared_ ? FUTEX_WAIT_BITSET : FUTEX_WAIT_BITSET_PRIVATE, seen, &deadline, wake_bit_);
  }
  if (watching_others) header.watchers.fetch_sub(1, kSeqCst);
  header.waiters.fetch_sub(1, kSeqCst);
}

std::size_t EngineBoard::reap_dead_owners() {
  if (!shared_) return 0;
  std::size_t reaped = 0;
  const std::uint32_t high = layout_->header.high_water.load(kSeqCst);
  for (std::uint32_t i = 0; i < high; ++i) {
    EngineSlot& slot = layout_->slots[i];
    std::uint32_t state = slot.state.load(kSeqCst);
    if (state == kSlotFree) continue;
    const std::int32_t pid = slot.pid.load(kRelaxed);
    if (pid == pid_ || pid <= 0 || process_alive(pid, slot.owner_start.load(kRelaxed))) continue;
    if (slot.state.compare_exchange_strong(state, kSlotFree, kSeqCst)) {
      log::info("fake driver: freed engine slot {} of dead process {}", i, pid);
      ++reaped;
    }
  }
  if (reaped != 0) ring();
  return reaped;
}

}  // namespace sluice::fake
