// The shared-memory layout between a shim client and sluiced: the only structures both processes
// read. Everything here is fixed-width and trivially copyable; sizes and offsets are pinned by
// static_asserts below and by the golden test tests/unit/scheduler/protocol_layout_test.cpp.
//
// One memfd per client, created by sluiced and handed over with SCM_RIGHTS:
//
//   offset 0                SegmentHeader (one page)
//   to_daemon_offset        RingControl + to_daemon_slots x Slot   (client -> daemon, SPSC)
//   to_client_offset        RingControl + to_client_slots x Slot   (daemon -> client, SPSC)
//   predictions_offset      prediction_slots x PredictionSlot      (daemon writes, client reads)
//
// Rules of the layout (a change that breaks one of them bumps kAbiMajor):
//  * Fields are only ever appended inside reserved space; kAbiMinor counts such additions.
//  * No lock lives in shared memory. Rings are single-producer single-consumer with monotonic
//    64-bit indices updated through std::atomic_ref; waits go through eventfds with timeouts.
//  * sluiced never trusts what it reads back: it keeps its own copy of the layout and of its ring
//    index, copies each slot out once and validates the copy (codec.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace sluice::protocol {

inline constexpr std::uint32_t kMagic = 0x45434c53;  // "SLCE" in memory order
inline constexpr std::uint16_t kAbiMajor = 1;
// 1: SegmentHeader.sharing_mode and mps_pipe_dir; StatusMsg.sm_count and compute capability.
// 2: the kill_word message.
inline constexpr std::uint16_t kAbiMinor = 2;

inline constexpr std::size_t kSlotBytes = 128;
inline constexpr std::size_t kHeaderBytes = 4096;
inline constexpr std::uint32_t kToDaemonSlots = 4096;  // launch descriptors and events
inline constexpr std::uint32_t kToClientSlots = 256;   // decisions (the newest one wins)
inline constexpr std::uint32_t kPredictionSlots = 4096;

// A grant that admits everything: the gate is open.
inline constexpr std::uint64_t kUnlimited = ~std::uint64_t{0};

// ---- segment header ----------------------------------------------------------------------------

// How processes share the GPU under this daemon (docs/daemon.md): without MPS, contexts of
// different processes time-slice; with MPS their kernels run side by side.
enum class SharingMode : std::uint8_t { timeslice = 0, mps = 1 };

inline constexpr std::size_t kPathBytes = 256;

struct SegmentHeader {
  std::uint32_t magic;
  std::uint16_t abi_major;
  std::uint16_t abi_minor;
  std::uint32_t header_bytes;
  std::uint32_t slot_bytes;
  std::uint64_t segment_bytes;
  std::uint64_t daemon_epoch;  // changes each time sluiced starts
  std::uint32_t client_id;
  std::uint32_t reserved0;
  std::uint64_t to_daemon_offset;
  std::uint64_t to_client_offset;
  std::uint64_t predictions_offset;
  std::uint32_t to_daemon_slots;
  std::uint32_t to_client_slots;
  std::uint32_t prediction_slots;
  std::uint32_t reserved1;
  // ABI 1.1. In mps mode, the MPS control daemon's pipe directory (NUL-terminated; empty in
  // timeslice mode). A client without CUDA_MPS_PIPE_DIRECTORY of its own uses it.
  SharingMode sharing_mode;
  std::uint8_t reserved2[7];
  char mps_pipe_dir[kPathBytes];
  std::uint8_t reserved[kHeaderBytes - 88 - kPathBytes];
};

// ---- rings -------------------------------------------------------------------------------------

// The control block in front of each ring's slots. head and tail are slot counts since the ring
// was created (never wrapped); slot i lives at index i % capacity. Each index sits on its own
// cache line so producer and consumer do not share lines.
struct alignas(64) RingControl {
  std::uint64_t head;  // written by the producer: slots published
  std::uint8_t pad0[56];
  std::uint64_t tail;  // written by the consumer: slots consumed
  std::uint8_t pad1[56];
  // Set by the consumer before it sleeps; a producer that publishes while it is set rings the
  // consumer's eventfd. Producers that never see it set never make a system call.
  std::uint32_t consumer_waiting;
  std::uint8_t pad2[60];
};

struct alignas(64) Slot {
  std::uint8_t bytes[kSlotBytes];
};

// ---- client -> daemon messages -----------------------------------------------------------------

enum class MsgType : std::uint16_t {
  none = 0,
  op = 1,            // an operation was held or submitted (a launch descriptor)
  op_submitted = 2,  // a held operation went to the driver
  kernel_name = 3,   // a chunk of a kernel's name (sent once per kernel)
  status = 4,        // the client's accounting for one device
  sample = 5,        // a timed operation: the duration model's input
  goodbye = 6,       // the client is exiting cleanly
  kill_word = 7,     // where the client's kill word of a device lives (ABI 1.2)
  decision = 64,     // daemon -> client
};

enum class OpKind : std::uint8_t { kernel = 0, copy = 1, memset = 2, graph = 3, kCount };

enum class OpState : std::uint8_t { held = 0, submitted = 1 };

inline constexpr std::uint16_t kOpCooperative = 1u << 0;

struct OpMsg {
  std::uint16_t type;  // MsgType::op
  OpKind kind;
  OpState state;
  std::int16_t device;   // ordinal; -1 when the shim did not know it yet
  std::uint16_t flags;   // kOp*
  std::uint64_t seq;     // per-client, increasing in call order
  std::uint64_t stream;  // the application's handle (an opaque identity)
  std::uint64_t kernel_id;  // kernels: fnv1a(name, seed = module hash); 0 otherwise
  std::uint32_t grid[3];
  std::uint32_t block[3];
  std::uint64_t bytes;         // copies and memsets
  std::uint64_t call_ns;       // CLOCK_MONOTONIC of the application's call
  std::uint64_t submit_ns;     // when it went to the driver (state submitted), else 0
  std::uint64_t predicted_ns;  // the prediction the client used
  std::uint32_t shared_mem;
  std::uint8_t reserved[36];
};

struct OpSubmittedMsg {
  std::uint16_t type;  // MsgType::op_submitted
  std::int16_t device;
  std::uint32_t reserved0;
  std::uint64_t seq;
  std::uint64_t submit_ns;
  std::uint8_t reserved[104];
};

inline constexpr std::size_t kNameChunkBytes = 96;
inline constexpr std::size_t kMaxNameBytes = 4096;

struct KernelNameMsg {
  std::uint16_t type;  // MsgType::kernel_name
  std::uint16_t offset;     // of this chunk within the name
  std::uint16_t total;      // the whole name's length
  std::uint8_t length;      // bytes of text in this chunk
  std::uint8_t reserved0;
  std::uint64_t kernel_id;
  std::uint64_t module_hash;
  char text[kNameChunkBytes];
  std::uint64_t reserved1;
};

inline constexpr std::uint8_t kStatusBusy = 1u << 0;  // work submitted and not known complete

struct StatusMsg {
  std::uint16_t type;  // MsgType::status
  std::int16_t device;
  std::uint8_t flags;  // kStatus*
  std::uint8_t reserved0[3];
  std::uint64_t applied_decision;  // decision_seq of the newest decision the gate follows
  std::uint64_t inflight_ns;       // predicted work submitted and not known complete
  std::uint64_t held_ops;          // operations waiting in the client's queues
  std::uint64_t retired_seq;       // every op with seq <= this is known complete
  std::uint64_t completed_ns;      // total predicted work completed (GPU time used)
  std::uint64_t submitted_ns;      // total predicted work submitted
  std::uint64_t sent_ns;
  // ABI 1.1, optional (0: unknown): the device's SM count and compute capability, so that sluiced
  // can size SM partitions. Clients of ABI 1.0 leave them 0.
  std::uint32_t sm_count;
  std::uint8_t cc_major;
  std::uint8_t cc_minor;
  std::uint8_t reserved[58];
};

struct SampleMsg {
  std::uint16_t type;  // MsgType::sample
  OpKind kind;
  std::uint8_t reserved0;
  std::int16_t device;
  std::uint16_t reserved1;
  std::uint64_t kernel_id;
  std::uint64_t work;         // blocks for kernels, bytes for copies and memsets
  std::uint64_t duration_ns;  // measured with events around the operation
  std::uint64_t seq;
  std::uint8_t reserved[88];
};

struct GoodbyeMsg {
  std::uint16_t type;  // MsgType::goodbye
  std::uint8_t reserved[126];
};

// The client's 32-bit kill word of one device, which sluiced writes (cuStreamWriteValue32 through
// the IPC handle) when it orders the client's in-flight killable work stopped: the kill epoch,
// non-zero, stops instrumented blocks from starting; 0 once the device's gate opens again.
inline constexpr std::size_t kIpcHandleBytes = 64;

struct KillWordMsg {
  std::uint16_t type;  // MsgType::kill_word
  std::int16_t device;  // an ordinal (not -1)
  std::uint32_t reserved0;
  std::uint64_t offset;  // of the word within the allocation the handle names (4-byte aligned)
  std::uint8_t ipc_handle[kIpcHandleBytes];  // CUipcMemHandle of the allocation (cuIpcGetMemHandle)
  std::uint8_t reserved[48];
};

// ---- daemon -> client messages -----------------------------------------------------------------

enum class Class : std::uint8_t { rt = 0, be = 1 };
enum class GateMode : std::uint8_t { open = 0, shut = 1 };
enum class Route : std::uint8_t { full = 0, partition = 1 };

inline constexpr std::int16_t kAllDevices = -1;

// The gate for one device (or for every device without a decision of its own: kAllDevices).
// A best-effort client admits an operation when inflight + predicted <= grant_ns, or when nothing
// of its own is in flight and `solo` is set (an operation larger than the whole budget).
struct DecisionMsg {
  std::uint16_t type;  // MsgType::decision
  std::int16_t device;
  Class cls;
  GateMode mode;
  Route route;  // partition: BE work goes to a green context of partition_sms SMs (mps mode)
  std::uint8_t solo;
  std::uint64_t decision_seq;  // increasing per client
  std::uint64_t grant_ns;      // kUnlimited: admit everything
  std::uint64_t copy_chunk_bytes;
  std::uint64_t default_prediction_ns;  // for operations the prediction table does not know
  std::uint64_t marker_ns;  // track completion at least every this much predicted work
  std::uint32_t kill_epoch;     // per device; a BE client stops in-flight killable work when it grows
  std::uint32_t partition_sms;  // route partition: the SMs BE work may use (a multiple of 8)
  std::uint8_t reserved[72];
};

// ---- predictions -------------------------------------------------------------------------------

// An open-addressed table of predicted durations, written only by sluiced. key 0 is empty; a
// slot's value is stored before its key is published (release), and updated in place later.
struct PredictionSlot {
  std::uint64_t key;
  std::uint64_t value_ns;
};

// Bucket of an operation's size: floor(log2(work)), work = blocks or bytes. kAnyBucket holds the
// largest mean seen for the kernel, for sizes not timed yet.
inline constexpr std::uint32_t kAnyBucket = 63;

inline constexpr std::uint32_t size_bucket(std::uint64_t work) {
  std::uint32_t bucket = 0;
  while (work > 1) {
    work >>= 1;
    ++bucket;
  }
  return bucket;
}

inline constexpr std::uint64_t prediction_key(std::uint64_t kernel_id, std::uint32_t bucket) {
  std::uint64_t key = (kernel_id ^ (std::uint64_t{bucket} * 0x9E3779B97F4A7C15ull)) *
                      0xff51afd7ed558ccdull;
  key ^= key >> 33;
  return key | 1;  // never 0
}

// Pseudo kernel identities of operations that are not kernels, for the duration model.
inline constexpr std::uint64_t kCopyIdentity = 0x636f70792d6f7031ull;
inline constexpr std::uint64_t kMemsetIdentity = 0x6d656d7365742d31ull;
inline constexpr std::uint64_t kGraphIdentity = 0x67726170682d6f31ull;

// ---- handshake over the Unix socket ------------------------------------------------------------

enum class Role : std::uint32_t { shim = 1, control = 2 };

inline constexpr std::size_t kLabelBytes = 32;

// First frame a peer sends. Everything in it is a claim; sluiced decides the class from its
// policy and the SO_PEERCRED credentials, and the label can only lower it.
struct Hello {
  std::uint32_t magic;
  std::uint16_t abi_major;
  std::uint16_t abi_minor;
  Role role;
  std::uint32_t pid;  // informational; SO_PEERCRED is authoritative
  char label[kLabelBytes];  // SLUICE_CLASS, NUL-terminated
  std::uint64_t job_length_ms;  // srtf hint, 0 when none
  std::uint64_t deadline_us;    // RT deadline hint, 0 when none
  std::uint8_t reserved[48];
};

enum class WelcomeStatus : std::int32_t { ok = 0, version_mismatch = 1, refused = 2, internal = 3 };

inline constexpr std::size_t kReasonBytes = 160;

// sluiced's answer to a shim Hello; with status ok it carries the segment's memfd and the two
// eventfds (to_daemon doorbell, to_client doorbell) as SCM_RIGHTS, in that order.
struct Welcome {
  std::uint32_t magic;
  std::uint16_t abi_major;
  std::uint16_t abi_minor;
  WelcomeStatus status;
  std::uint32_t client_id;
  std::uint64_t daemon_epoch;
  std::uint64_t segment_bytes;
  Class cls;
  std::uint8_t reserved0[7];
  char reason[kReasonBytes];  // why it was refused; NUL-terminated
};

inline constexpr std::size_t kWelcomeFds = 3;

// ---- pinned layout ------------------------------------------------------------------------------

template <typename T>
inline constexpr bool kWireSafe = std::is_trivially_copyable_v<T> && std::is_standard_layout_v<T>;

static_assert(kWireSafe<SegmentHeader> && sizeof(SegmentHeader) == kHeaderBytes);
static_assert(offsetof(SegmentHeader, daemon_epoch) == 24);
static_assert(offsetof(SegmentHeader, to_daemon_offset) == 40);
static_assert(offsetof(SegmentHeader, prediction_slots) == 72);
static_assert(offsetof(SegmentHeader, sharing_mode) == 80 && offsetof(SegmentHeader, mps_pipe_dir) == 88);
static_assert(kWireSafe<RingControl> && sizeof(RingControl) == 192);
static_assert(offsetof(RingControl, tail) == 64 && offsetof(RingControl, consumer_waiting) == 128);
static_assert(sizeof(Slot) == kSlotBytes);
static_assert(kWireSafe<OpMsg> && sizeof(OpMsg) == kSlotBytes);
static_assert(offsetof(OpMsg, seq) == 8 && offsetof(OpMsg, grid) == 32 && offsetof(OpMsg, bytes) == 56);
static_assert(offsetof(OpMsg, predicted_ns) == 80 && offsetof(OpMsg, shared_mem) == 88);
static_assert(kWireSafe<OpSubmittedMsg> && sizeof(OpSubmittedMsg) == kSlotBytes);
static_assert(kWireSafe<KernelNameMsg> && sizeof(KernelNameMsg) == kSlotBytes);
static_assert(offsetof(KernelNameMsg, text) == 24);
static_assert(kWireSafe<StatusMsg> && sizeof(StatusMsg) == kSlotBytes);
static_assert(offsetof(StatusMsg, applied_decision) == 8 && offsetof(StatusMsg, sent_ns) == 56);
static_assert(offsetof(StatusMsg, sm_count) == 64 && offsetof(StatusMsg, cc_minor) == 69);
static_assert(kWireSafe<SampleMsg> && sizeof(SampleMsg) == kSlotBytes);
static_assert(offsetof(SampleMsg, duration_ns) == 24);
static_assert(kWireSafe<GoodbyeMsg> && sizeof(GoodbyeMsg) == kSlotBytes);
static_assert(kWireSafe<KillWordMsg> && sizeof(KillWordMsg) == kSlotBytes);
static_assert(offsetof(KillWordMsg, offset) == 8 && offsetof(KillWordMsg, ipc_handle) == 16);
static_assert(kWireSafe<DecisionMsg> && sizeof(DecisionMsg) == kSlotBytes);
static_assert(offsetof(DecisionMsg, decision_seq) == 8 && offsetof(DecisionMsg, kill_epoch) == 48);
static_assert(kWireSafe<PredictionSlot> && sizeof(PredictionSlot) == 16);
static_assert(kWireSafe<Hello> && sizeof(Hello) == 112);
static_assert(offsetof(Hello, label) == 16 && offsetof(Hello, job_length_ms) == 48);
static_assert(kWireSafe<Welcome> && sizeof(Welcome) == 200);
static_assert(offsetof(Welcome, daemon_epoch) == 16 && offsetof(Welcome, reason) == 40);

}  // namespace sluice::protocol
