// One client's shared segment: creating it (sluiced), attaching to it (the shim's client), and the
// prediction table inside it.
//
// Thread rules: a Mapping is owned by one object; the views it hands out follow the ring and table
// rules (one producer and one consumer per ring, one writer of the prediction table).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "sluice/common/result.h"
#include "sluice/protocol/layout.h"
#include "sluice/protocol/ring.h"

namespace sluice::protocol {

struct SegmentLayout {
  std::uint64_t to_daemon_offset = 0;
  std::uint64_t to_client_offset = 0;
  std::uint64_t predictions_offset = 0;
  std::uint64_t segment_bytes = 0;
  std::uint32_t to_daemon_slots = kToDaemonSlots;
  std::uint32_t to_client_slots = kToClientSlots;
  std::uint32_t prediction_slots = kPredictionSlots;
};

inline constexpr std::uint64_t round_up(std::uint64_t value, std::uint64_t align) {
  return (value + align - 1) / align * align;
}

inline constexpr SegmentLayout default_layout() {
  SegmentLayout layout;
  std::uint64_t offset = kHeaderBytes;
  layout.to_daemon_offset = offset;
  offset += sizeof(RingControl) + std::uint64_t{layout.to_daemon_slots} * sizeof(Slot);
  layout.to_client_offset = round_up(offset, 64);
  offset = layout.to_client_offset + sizeof(RingControl) +
           std::uint64_t{layout.to_client_slots} * sizeof(Slot);
  layout.predictions_offset = round_up(offset, 64);
  offset = layout.predictions_offset + std::uint64_t{layout.prediction_slots} * sizeof(PredictionSlot);
  layout.segment_bytes = round_up(offset, 4096);
  return layout;
}

// A shared mapping of a whole segment; unmaps on destruction.
class Mapping {
 public:
  Mapping() = default;
  Mapping(void* base, std::size_t size) : base_(base), size_(size) {}
  Mapping(Mapping&& other) noexcept { *this = std::move(other); }
  Mapping& operator=(Mapping&& other) noexcept {
    if (this != &other) {
      reset();
      base_ = std::exchange(other.base_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  static Result<Mapping> map(int fd, std::size_t size) {
    void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) return make_error("mmap of {} bytes: {}", size, std::strerror(errno));
    return Mapping(base, size);
  }

  std::byte* base() const noexcept { return static_cast<std::byte*>(base_); }
  std::size_t size() const noexcept { return size_; }
  explicit operator bool() const noexcept { return base_ != nullptr; }

  void reset() noexcept {
    if (base_ != nullptr) munmap(base_, size_);
    base_ = nullptr;
    size_ = 0;
  }

 private:
  void* base_ = nullptr;
  std::size_t size_ = 0;
};

// Typed pointers into a mapped segment, computed from a trusted layout.
struct SegmentView {
  SegmentHeader* header = nullptr;
  RingControl* to_daemon = nullptr;
  Slot* to_daemon_slots = nullptr;
  RingControl* to_client = nullptr;
  Slot* to_client_slots = nullptr;
  PredictionSlot* predictions = nullptr;
  SegmentLayout layout;

  static SegmentView over(std::byte* base, const SegmentLayout& layout) {
    SegmentView view;
    view.layout = layout;
    view.header = reinterpret_cast<SegmentHeader*>(base);
    view.to_daemon = reinterpret_cast<RingControl*>(base + layout.to_daemon_offset);
    view.to_daemon_slots = reinterpret_cast<Slot*>(base + layout.to_daemon_offset + sizeof(RingControl));
    view.to_client = reinterpret_cast<RingControl*>(base + layout.to_client_offset);
    view.to_client_slots = reinterpret_cast<Slot*>(base + layout.to_client_offset + sizeof(RingControl));
    view.predictions = reinterpret_cast<PredictionSlot*>(base + layout.predictions_offset);
    return view;
  }
};

// sluiced: writes the header of a fresh (zero-filled) segment.
inline void init_segment(std::byte* base, const SegmentLayout& layout, std::uint64_t epoch,
                         std::uint32_t client_id) {
  SegmentHeader header{};
  header.magic = kMagic;
  header.abi_major = kAbiMajor;
  header.abi_minor = kAbiMinor;
  header.header_bytes = kHeaderBytes;
  header.slot_bytes = kSlotBytes;
  header.segment_bytes = layout.segment_bytes;
  header.daemon_epoch = epoch;
  header.client_id = client_id;
  header.to_daemon_offset = layout.to_daemon_offset;
  header.to_client_offset = layout.to_client_offset;
  header.predictions_offset = layout.predictions_offset;
  header.to_daemon_slots = layout.to_daemon_slots;
  header.to_client_slots = layout.to_client_slots;
  header.prediction_slots = layout.prediction_slots;
  std::memcpy(base, &header, sizeof(header));
}

// sluiced: how clients of this daemon share the GPU, and in mps mode the MPS control daemon's pipe
// directory (written once, before the segment is handed to the client). A directory that does not
// fit is not written at all, rather than cut short.
inline void write_sharing(std::byte* base, SharingMode mode, const std::string& mps_pipe_dir) {
  auto* header = reinterpret_cast<SegmentHeader*>(base);
  header->sharing_mode = mode;
  std::memset(header->mps_pipe_dir, 0, sizeof(header->mps_pipe_dir));
  if (mps_pipe_dir.size() < sizeof(header->mps_pipe_dir)) {
    std::memcpy(header->mps_pipe_dir, mps_pipe_dir.data(), mps_pipe_dir.size());
  }
}

// The client: the MPS pipe directory the daemon announced ("" for none, for a daemon of ABI 1.0,
// or for text that is not a NUL-terminated absolute path).
inline std::string read_mps_pipe_dir(const std::byte* base) {
  SegmentHeader header;
  std::memcpy(&header, base, sizeof(header));
  if (header.abi_minor < 1 || header.sharing_mode != SharingMode::mps) return {};
  std::size_t length = strnlen(header.mps_pipe_dir, sizeof(header.mps_pipe_dir));
  if (length == 0 || length == sizeof(header.mps_pipe_dir) || header.mps_pipe_dir[0] != '/') return {};
  return std::string(header.mps_pipe_dir, length);
}

// The client: reads the header of a segment it was handed and checks that it describes a segment
// this build understands and that fits in `mapped_bytes`.
inline Result<SegmentLayout> read_layout(const std::byte* base, std::size_t mapped_bytes) {
  if (mapped_bytes < kHeaderBytes) return make_error("segment of {} bytes has no room for a header", mapped_bytes);
  SegmentHeader header;
  std::memcpy(&header, base, sizeof(header));
  if (header.magic != kMagic) return make_error("segment magic {:#x}, expected {:#x}", header.magic, kMagic);
  if (header.abi_major != kAbiMajor) {
    return make_error("segment ABI {}.{}, this client speaks {}.{}", header.abi_major,
                      header.abi_minor, kAbiMajor, kAbiMinor);
  }
  if (header.header_bytes != kHeaderBytes || header.slot_bytes != kSlotBytes) {
    return make_error("segment header_bytes {} slot_bytes {}, expected {} and {}",
                      header.header_bytes, header.slot_bytes, kHeaderBytes, kSlotBytes);
  }
  SegmentLayout layout;
  layout.to_daemon_offset = header.to_daemon_offset;
  layout.to_client_offset = header.to_client_offset;
  layout.predictions_offset = header.predictions_offset;
  layout.segment_bytes = header.segment_bytes;
  layout.to_daemon_slots = header.to_daemon_slots;
  layout.to_client_slots = header.to_client_slots;
  layout.prediction_slots = header.prediction_slots;
  auto ring_fits = [&](std::uint64_t offset, std::uint32_t slots) {
    return offset % 64 == 0 && offset >= kHeaderBytes && slots > 0 && slots <= (1u << 20) &&
           offset + sizeof(RingControl) + std::uint64_t{slots} * sizeof(Slot) <= mapped_bytes;
  };
  bool table_fits = layout.predictions_offset % 16 == 0 && layout.prediction_slots > 0 &&
                    (layout.prediction_slots & (layout.prediction_slots - 1)) == 0 &&
                    layout.predictions_offset + std::uint64_t{layout.prediction_slots} * sizeof(PredictionSlot) <= mapped_bytes;
  if (layout.segment_bytes != mapped_bytes || !ring_fits(layout.to_daemon_offset, layout.to_daemon_slots) ||
      !ring_fits(layout.to_client_offset, layout.to_client_slots) || !table_fits) {
    return make_error("segment layout does not fit its {} bytes", mapped_bytes);
  }
  return layout;
}

// ---- prediction table --------------------------------------------------------------------------

inline constexpr std::uint32_t kPredictionProbes = 16;

// sluiced's side: the only writer. Returns false when the table has no free slot near the key.
inline bool publish_prediction(PredictionSlot* table, std::uint32_t slots, std::uint64_t key,
                               std::uint64_t value_ns) noexcept {
  std::uint32_t mask = slots - 1;
  for (std::uint32_t probe = 0; probe < kPredictionProbes; ++probe) {
    PredictionSlot& slot = table[(key + probe) & mask];
    std::atomic_ref<std::uint64_t> slot_key(slot.key);
    std::uint64_t seen = slot_key.load(std::memory_order_relaxed);
    if (seen == key || seen == 0) {
      std::atomic_ref<std::uint64_t>(slot.value_ns).store(value_ns, std::memory_order_relaxed);
      if (seen == 0) slot_key.store(key, std::memory_order_release);
      return true;
    }
  }
  return false;
}

// The client's side: lock-free lookup. 0 means unknown.
inline std::uint64_t lookup_prediction(PredictionSlot* table, std::uint32_t slots,
                                       std::uint64_t key) noexcept {
  std::uint32_t mask = slots - 1;
  for (std::uint32_t probe = 0; probe < kPredictionProbes; ++probe) {
    PredictionSlot& slot = table[(key + probe) & mask];
    std::uint64_t seen = std::atomic_ref<std::uint64_t>(slot.key).load(std::memory_order_acquire);
    if (seen == key) {
      return std::atomic_ref<std::uint64_t>(slot.value_ns).load(std::memory_order_relaxed);
    }
    if (seen == 0) return 0;
  }
  return 0;
}

}  // namespace sluice::protocol
