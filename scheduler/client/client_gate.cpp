// The gate that follows sluiced's decisions (see sluice/scheduler/client.h for what it does).
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_set>

#include "connection.h"
#include "sluice/common/clock.h"
#include "sluice/common/env.h"
#include "sluice/common/log.h"
#include "sluice/protocol/doorbell.h"
#include "sluice/protocol/socket_path.h"
#include "sluice/scheduler/client.h"
#include "tracker.h"

namespace sluice::sched {

namespace {

using shim::OpDesc;
using Kind = shim::OpKind;

constexpr std::uint64_t kIdlePollNs = 50'000'000;
constexpr std::uint64_t kRtPollNs = 2'000'000;
constexpr std::uint64_t kHeartbeatNs = 100'000'000;
constexpr std::uint64_t kMaxReconnectNs = 2'000'000'000;
constexpr std::uint64_t kDefaultChunkBytes = 8ull << 20;
constexpr std::uint64_t kDefaultMarkerNs = 1'000'000;
constexpr std::uint32_t kMaxSamplesInFlight = 64;
constexpr std::uint64_t kBeSampleEvery = 16;
constexpr std::uint64_t kRtSampleEvery = 256;
constexpr std::uint32_t kPartitionGranule = 8;  // SM partitions on sm_90: multiples of 8 SMs

// Counts forks in this process's ancestry. A gate made before a fork is dead in the child (its
// segment belongs to the parent and its thread did not survive); the shim makes the child a new one.
std::atomic<std::uint32_t> fork_generation{0};
std::atomic<std::uint64_t> next_gate_id{1};
std::once_flag atfork_once;

enum class LinkState : std::uint8_t { connected, passthrough, waiting };

protocol::OpKind wire_kind(Kind kind) {
  switch (kind) {
    case Kind::copy: return protocol::OpKind::copy;
    case Kind::memset: return protocol::OpKind::memset;
    case Kind::graph: return protocol::OpKind::graph;
    default: return protocol::OpKind::kernel;
  }
}

void atomic_max(std::atomic<std::uint64_t>& target, std::uint64_t value) {
  std::uint64_t seen = target.load(std::memory_order_relaxed);
  while (seen < value && !target.compare_exchange_weak(seen, value, std::memory_order_release)) {
  }
}

void atomic_sub_floor(std::atomic<std::uint64_t>& target, std::uint64_t value) {
  std::uint64_t seen = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(seen, seen > value ? seen - value : 0, std::memory_order_release)) {
  }
}

// What admit() reserved for an operation, until on_submit() on the same thread settles it.
struct Reservation {
  std::uint64_t owner = 0;  // the gate's id (never its address, which a later gate may reuse)
  std::uint64_t seq = 0;
  std::uint64_t predicted_ns = 0;
  int device = 0;
};
thread_local Reservation tls_reservation;

// The gate of one device, as the newest decision set it, and the work accounted against it.
struct DeviceGate {
  std::atomic<bool> decided{false};
  std::atomic<std::uint64_t> grant_ns{0};
  std::atomic<bool> solo{false};
  std::atomic<std::uint64_t> marker_ns{kDefaultMarkerNs};
  std::atomic<std::uint64_t> inflight_ns{0};
  std::atomic<std::uint64_t> submitted_ns{0};
  std::atomic<std::uint64_t> completed_ns{0};
  std::atomic<std::uint64_t> held{0};
  std::atomic<std::uint64_t> newest_seq{0};
  std::atomic<std::uint32_t> route_sms{0};  // best-effort work: 0 full GPU, else partition SMs
  std::atomic<bool> used{false};
  // The gate's thread only.
  std::uint64_t retired_seq = 0;
  bool reported_busy = false;
};

class DaemonGate final : public ClientGate {
 public:
  DaemonGate(const shim::GateEnvironment& env, ClientOptions options)
      : env_(env), options_(std::move(options)), tracker_(env.driver) {
    std::call_once(atfork_once, [] { pthread_atfork(nullptr, nullptr, [] { fork_generation.fetch_add(1); }); });
    link_.store(options_.on_loss == OnDaemonLoss::wait ? LinkState::waiting : LinkState::passthrough);
    default_gate_.grant_ns.store(protocol::kUnlimited);
    wake_fd_ = protocol::make_doorbell();
    // Connect now, at cuInit, so that the first launches are already scheduled.
    try_connect();
    thread_ = std::thread([this] { thread_main(); });
  }

  ~DaemonGate() override {
    stop_thread();
    if (Connection* c = conn_.load(); c != nullptr && !forked()) {
      protocol::GoodbyeMsg goodbye{};
      goodbye.type = static_cast<std::uint16_t>(protocol::MsgType::goodbye);
      push(*c, goodbye);
    }
    close(wake_fd_);
  }

  void process_exiting() noexcept override {
    stop_thread();
    link_.store(LinkState::passthrough, std::memory_order_release);
  }

  // ---- Gate: submitting threads ---------------------------------------------------------------

  bool admit(const OpDesc& op) noexcept override {
    if (!shim::op_uses_gpu(op.kind) || forked()) return true;
    LinkState link = link_.load(std::memory_order_acquire);
    if (link == LinkState::passthrough || cls_.load(std::memory_order_relaxed) == protocol::Class::rt) return true;
    if (link == LinkState::waiting) return false;
    int device = device_index(op.device);
    const DeviceGate& gate = gate_of(device);
    std::uint64_t grant = gate.grant_ns.load(std::memory_order_acquire);
    if (grant == protocol::kUnlimited) return true;
    std::uint64_t identity = 0, work = 0;
    std::uint64_t predicted = predict(op, identity, work);
    // Admission reserves the operation's share of the grant at once, so that a status sent before
    // the driver call returns already counts it. on_submit() settles the reservation; the engine
    // submits an admitted operation on the thread that asked. A reservation this thread still
    // holds for another operation was never submitted: it is released here.
    Reservation& stale = tls_reservation;
    if (stale.owner == id_ && stale.seq != op.seq) {
      atomic_sub_floor(devices_[static_cast<std::size_t>(stale.device)].inflight_ns, stale.predicted_ns);
      stale = Reservation{};
    }
    std::atomic<std::uint64_t>& inflight = devices_[static_cast<std::size_t>(device)].inflight_ns;
    std::uint64_t current = inflight.load(std::memory_order_acquire);
    do {
      bool fits = current + predicted <= grant || (current == 0 && gate.solo.load(std::memory_order_acquire));
      if (!fits) return false;
    } while (!inflight.compare_exchange_weak(current, current + predicted, std::memory_order_acq_rel));
    if (stale.owner == id_) atomic_sub_floor(inflight, stale.predicted_ns);  // asked twice for one op
    tls_reservation = Reservation{id_, op.seq, predicted, device};
    return true;
  }

  void before_submit(const OpDesc& op) noexcept override {
    if (!shim::op_uses_gpu(op.kind) || link_.load(std::memory_order_relaxed) != LinkState::connected ||
        forked()) {
      return;
    }
    bool rt = cls_.load(std::memory_order_relaxed) == protocol::Class::rt;
    std::uint64_t count = sample_counter_.fetch_add(1, std::memory_order_relaxed);
    std::uint64_t identity = 0, work = 0;
    bool sample = count % (rt ? kRtSampleEvery : kBeSampleEvery) == 0;
    if (!sample && !rt) sample = !known(op, identity, work);  // learn new kernels quickly
    if (!sample || tracker_.samples_in_flight() >= kMaxSamplesInFlight) return;
    if (identity == 0) predict(op, identity, work);
    if (identity != 0) tracker_.begin_sample(op, identity, work, wire_kind(op.kind));
  }

  void on_submit(const OpDesc& op, CUresult result) noexcept override {
    if (!shim::op_uses_gpu(op.kind) || forked()) return;
    bool was_held = forget_held(op);
    Reservation reserved = take_reservation(op);
    tracker_.end_sample(op, result == CUDA_SUCCESS);
    int device = device_index(op.device);
    DeviceGate& dev = devices_[static_cast<std::size_t>(device)];
    Connection* c = conn_.load(std::memory_order_acquire);
    bool connected = c != nullptr && link_.load(std::memory_order_relaxed) == LinkState::connected;
    if (result != CUDA_SUCCESS || !connected) {
      if (reserved.owner != 0) atomic_sub_floor(dev.inflight_ns, reserved.predicted_ns);
      if (connected && was_held) push_submitted(*c, op, device);  // refused by the driver: no longer waiting
      return;
    }
    dev.used.store(true, std::memory_order_relaxed);
    std::uint64_t identity = 0, work = 0;
    std::uint64_t predicted = reserved.owner != 0 ? reserved.predicted_ns : predict(op, identity, work);
    if (tracker_.submitted(op, predicted, marker_of(device))) {
      if (reserved.owner == 0) dev.inflight_ns.fetch_add(predicted, std::memory_order_release);
      dev.submitted_ns.fetch_add(predicted, std::memory_order_relaxed);
    } else if (reserved.owner != 0) {
      atomic_sub_floor(dev.inflight_ns, predicted);  // untrackable: counted as complete
    }
    atomic_max(dev.newest_seq, op.seq);
    if (was_held) {
      push_submitted(*c, op, device);
    } else {
      push_op(*c, op, protocol::OpState::submitted, now_ns(), predicted);
    }
  }

  void on_hold(const OpDesc& op) noexcept override {
    if (!shim::op_uses_gpu(op.kind) || forked()) return;
    DeviceGate& dev = devices_[static_cast<std::size_t>(device_index(op.device))];
    try {
      std::lock_guard lock(held_mu_);
      if (!held_seqs_.insert(op.seq).second) return;
    } catch (...) {
      return;
    }
    held_count_.fetch_add(1, std::memory_order_relaxed);
    dev.held.fetch_add(1, std::memory_order_relaxed);
    dev.used.store(true, std::memory_order_relaxed);
    Connection* c = conn_.load(std::memory_order_acquire);
    if (c != nullptr && link_.load(std::memory_order_relaxed) == LinkState::connected) {
      std::uint64_t identity = 0, work = 0;
      push_op(*c, op, protocol::OpState::held, 0, predict(op, identity, work));
    }
  }

  std::uint64_t copy_chunk_bytes() const noexcept override {
    if (link_.load(std::memory_order_relaxed) != LinkState::connected ||
        cls_.load(std::memory_order_relaxed) == protocol::Class::rt) {
      return 0;
    }
    return chunk_bytes_.load(std::memory_order_relaxed);
  }

  const char* name() const noexcept override { return "daemon"; }

  // Best-effort work goes where the newest decision of its device says; real-time work, and all
  // work while sluiced is not connected, on the full GPU.
  std::uint32_t route_sms(const OpDesc& op) const noexcept override {
    if (link_.load(std::memory_order_relaxed) != LinkState::connected ||
        cls_.load(std::memory_order_relaxed) != protocol::Class::be || forked()) {
      return 0;
    }
    return gate_of(device_index(op.device)).route_sms.load(std::memory_order_relaxed);
  }

  // The class sluiced gave at the first connection (and later decisions); unknown before.
  shim::StreamClass stream_class() const noexcept override {
    if (!class_known_.load(std::memory_order_acquire)) return shim::StreamClass::unknown;
    return cls_.load(std::memory_order_relaxed) == protocol::Class::rt ? shim::StreamClass::rt
                                                                       : shim::StreamClass::be;
  }

  std::uint64_t predicted_ns(const OpDesc& op) const noexcept override {
    if (link_.load(std::memory_order_relaxed) != LinkState::connected || forked()) return 0;
    std::uint64_t identity = 0, work = 0;
    return predict(op, identity, work);
  }

  // Kept for the life of the gate: every (re)connection tells sluiced again.
  void register_kill_word(std::int32_t device, const CUipcMemHandle& handle,
                          std::uint64_t offset) noexcept override {
    if (device < 0 || device >= kClientDevices) return;
    protocol::KillWordMsg msg{};
    msg.type = static_cast<std::uint16_t>(protocol::MsgType::kill_word);
    msg.device = static_cast<std::int16_t>(device);
    msg.offset = offset;
    static_assert(sizeof(msg.ipc_handle) == sizeof(handle.reserved));
    std::memcpy(msg.ipc_handle, handle.reserved, sizeof(msg.ipc_handle));
    try {
      std::lock_guard lock(kill_mu_);
      kill_words_.push_back(msg);
    } catch (...) {
      return;
    }
    Connection* c = conn_.load(std::memory_order_acquire);
    if (c != nullptr && link_.load(std::memory_order_relaxed) == LinkState::connected) push(*c, msg);
  }

  ClientState state() const override {
    ClientState s;
    Connection* c = conn_.load(std::memory_order_acquire);
    s.connected = link_.load() == LinkState::connected && c != nullptr;
    s.cls = cls_.load();
    s.epoch = c != nullptr ? c->epoch : 0;
    s.client_id = c != nullptr ? c->client_id : 0;
    s.connects = connects_.load();
    s.decisions = decisions_.load();
    s.dropped_messages = dropped_.load();
    s.samples = samples_sent_.load();
    s.inflight_ns = devices_[0].inflight_ns.load();
    s.grant_ns = gate_of(0).grant_ns.load();
    return s;
  }

 private:
  bool forked() const noexcept {
    return fork_generation.load(std::memory_order_relaxed) != generation_;
  }

  const DeviceGate& gate_of(int device) const {
    const DeviceGate& dev = devices_[static_cast<std::size_t>(device)];
    return dev.decided.load(std::memory_order_acquire) ? dev : default_gate_;
  }
  std::uint64_t marker_of(int device) const { return gate_of(device).marker_ns.load(std::memory_order_relaxed); }

  // The identity and size of an operation, for the duration model.
  void identify(const OpDesc& op, std::uint64_t& identity, std::uint64_t& work) const {
    switch (op.kind) {
      case Kind::kernel: {
        const shim::KernelInfo* info = op.func != nullptr ? env_.catalog.find(op.func) : nullptr;
        identity = info != nullptr ? info->id : 0;
        work = std::uint64_t{op.grid[0]} * op.grid[1] * op.grid[2];
        break;
      }
      case Kind::copy: identity = protocol::kCopyIdentity; work = op.bytes; break;
      case Kind::memset: identity = protocol::kMemsetIdentity; work = op.bytes; break;
      default: identity = protocol::kGraphIdentity; work = 1; break;
    }
  }

  // Does the prediction table know this operation's exact size?
  bool known(const OpDesc& op, std::uint64_t& identity, std::uint64_t& work) const {
    identify(op, identity, work);
    Connection* c = conn_.load(std::memory_order_acquire);
    if (c == nullptr || identity == 0) return true;
    const auto& view = c->view;
    return protocol::lookup_prediction(view.predictions, view.layout.prediction_slots,
                                       protocol::prediction_key(identity, protocol::size_bucket(work))) != 0;
  }

  std::uint64_t predict(const OpDesc& op, std::uint64_t& identity, std::uint64_t& work) const {
    identify(op, identity, work);
    std::uint64_t predicted = 0;
    if (Connection* c = conn_.load(std::memory_order_acquire); c != nullptr && identity != 0) {
      const auto& view = c->view;
      std::uint32_t slots = view.layout.prediction_slots;
      predicted = protocol::lookup_prediction(view.predictions, slots,
                                              protocol::prediction_key(identity, protocol::size_bucket(work)));
      if (predicted == 0) {
        predicted = protocol::lookup_prediction(view.predictions, slots, protocol::prediction_key(identity, protocol::kAnyBucket));
      }
    }
    return predicted != 0 ? predicted : default_prediction_.load(std::memory_order_relaxed);
  }

  // True when `op` had been held (and is no longer).
  bool forget_held(const OpDesc& op) noexcept {
    if (held_count_.load(std::memory_order_acquire) == 0) return false;  // the common, lock-free path
    try {
      std::lock_guard lock(held_mu_);
      if (held_seqs_.erase(op.seq) == 0) return false;
    } catch (...) {
      return false;
    }
    held_count_.fetch_sub(1, std::memory_order_relaxed);
    atomic_sub_floor(devices_[static_cast<std::size_t>(device_index(op.device))].held, 1);
    return true;
  }

  // The reservation admit() made for `op` on this thread, if any (the engine submits an admitted
  // operation on the thread that asked).
  Reservation take_reservation(const OpDesc& op) noexcept {
    Reservation& r = tls_reservation;
    if (r.owner != id_ || r.seq != op.seq) return {};
    Reservation taken = r;
    r = Reservation{};
    return taken;
  }

  // ---- messages to sluiced ---------------------------------------------------------------------

  void push_submitted(Connection& c, const OpDesc& op, int device) noexcept {
    protocol::OpSubmittedMsg done{};
    done.type = static_cast<std::uint16_t>(protocol::MsgType::op_submitted);
    done.device = static_cast<std::int16_t>(device);
    done.seq = op.seq;
    done.submit_ns = now_ns();
    push(c, done);
  }

  // A full ring means sluiced is behind or stopped. A best-effort producer then waits for room,
  // ringing sluiced's doorbell, for at most kRingFullWaitNs; an RT producer never waits on
  // sluiced. A message that still finds no room is dropped and counted (the periodic status
  // repairs sluiced's view of the work in flight; the work itself is always submitted by this
  // process), and until the ring has room again later messages do not wait either, so a stopped
  // daemon costs one bounded wait, not one per launch.
  static constexpr std::uint64_t kRingFullWaitNs = 100'000'000;

  template <typename Msg>
  void push(Connection& c, const Msg& message) noexcept {
    std::uint64_t deadline = 0;
    for (;;) {
      bool ring = false;
      protocol::RingResult result = protocol::RingResult::ok;
      {
        std::lock_guard lock(push_mu_);
        if (conn_.load(std::memory_order_relaxed) != &c) return;
        result = c.to_daemon.push(message);
        if (result == protocol::RingResult::ok) ring = c.to_daemon.should_ring();
      }
      if (result == protocol::RingResult::ok) {
        if (ring) protocol::ring_doorbell(c.doorbell_to_daemon);
        ring_stalled_.store(false, std::memory_order_relaxed);
        return;
      }
      const std::uint64_t now = now_ns();
      if (deadline == 0) deadline = now + kRingFullWaitNs;
      const bool may_wait = result == protocol::RingResult::full &&
                            cls_.load(std::memory_order_relaxed) != protocol::Class::rt &&
                            !ring_stalled_.load(std::memory_order_relaxed) && now < deadline &&
                            !stop_.load(std::memory_order_relaxed);
      if (!may_wait) {
        if (result == protocol::RingResult::full && now >= deadline) ring_stalled_.store(true, std::memory_order_relaxed);
        dropped_.fetch_add(1, std::memory_order_relaxed);
        SLUICE_LOG_EVERY_SECOND(warn, "the ring to sluiced is {}: a message to it was dropped ({} so far); the work itself is submitted",
                                result == protocol::RingResult::full ? "full" : "corrupt",
                                dropped_.load(std::memory_order_relaxed));
        return;
      }
      protocol::ring_doorbell(c.doorbell_to_daemon);
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  void push_op(Connection& c, const OpDesc& op, protocol::OpState state, std::uint64_t submit_ns,
               std::uint64_t predicted) noexcept {
    protocol::OpMsg msg{};
    msg.type = static_cast<std::uint16_t>(protocol::MsgType::op);
    msg.kind = wire_kind(op.kind);
    msg.state = state;
    msg.device = static_cast<std::int16_t>(op.device < 0 || op.device >= kClientDevices ? -1 : op.device);
    msg.flags = op.cooperative ? protocol::kOpCooperative : 0;
    msg.seq = op.seq != 0 ? op.seq : 1;
    msg.stream = reinterpret_cast<std::uintptr_t>(op.stream);
    msg.bytes = op.bytes;
    msg.call_ns = op.call_ns != 0 ? op.call_ns : now_ns();
    msg.submit_ns = state == protocol::OpState::submitted ? std::max(submit_ns, std::uint64_t{1}) : 0;
    msg.predicted_ns = predicted;
    msg.shared_mem = op.shared_mem;
    if (op.kind == Kind::kernel) {
      for (int axis = 0; axis < 3; ++axis) {
        msg.grid[axis] = std::max(op.grid[axis], 1u);
        msg.block[axis] = std::max(op.block[axis], 1u);
      }
      const shim::KernelInfo* info = op.func != nullptr ? env_.catalog.find(op.func) : nullptr;
      if (info != nullptr && info->id != 0) {
        msg.kernel_id = info->id;
        send_name_once(c, *info);
      }
    } else if (op.kind == Kind::graph) {
      msg.kernel_id = protocol::kGraphIdentity;
    }
    push(c, msg);
  }

  // Names travel once per connection, before the first descriptor that uses them.
  void send_name_once(Connection& c, const shim::KernelInfo& info) noexcept {
    try {
      {
        std::lock_guard lock(push_mu_);
        if (!named_.insert(info.id).second) return;
      }
      std::size_t total = std::min(info.name.size(), protocol::kMaxNameBytes);
      for (std::size_t offset = 0; offset < total; offset += protocol::kNameChunkBytes) {
        protocol::KernelNameMsg chunk{};
        chunk.type = static_cast<std::uint16_t>(protocol::MsgType::kernel_name);
        chunk.kernel_id = info.id;
        chunk.module_hash = info.module_hash;
        chunk.offset = static_cast<std::uint16_t>(offset);
        chunk.total = static_cast<std::uint16_t>(total);
        chunk.length = static_cast<std::uint8_t>(std::min(protocol::kNameChunkBytes, total - offset));
        std::memcpy(chunk.text, info.name.data() + offset, chunk.length);
        for (std::size_t i = 0; i < chunk.length; ++i) {
          auto ch = static_cast<unsigned char>(chunk.text[i]);
          if (ch < 0x20 || ch == 0x7f) chunk.text[i] = '?';
        }
        push(c, chunk);
      }
    } catch (...) {
    }
  }

  void send_status(Connection& c, int device, const Progress& progress) {
    DeviceGate& dev = devices_[static_cast<std::size_t>(device)];
    std::uint64_t held = dev.held.load(std::memory_order_relaxed);
    bool busy = progress.unretired_ops[static_cast<std::size_t>(device)] > 0 || held > 0;
    protocol::StatusMsg status{};
    status.type = static_cast<std::uint16_t>(protocol::MsgType::status);
    status.device = static_cast<std::int16_t>(device);
    status.flags = busy ? protocol::kStatusBusy : 0;
    status.applied_decision = applied_seq_.load(std::memory_order_relaxed);
    status.inflight_ns = dev.inflight_ns.load(std::memory_order_relaxed);
    status.held_ops = held;
    status.retired_seq = dev.retired_seq;
    status.completed_ns = dev.completed_ns.load(std::memory_order_relaxed);
    status.submitted_ns = dev.submitted_ns.load(std::memory_order_relaxed);
    status.sent_ns = now_ns();
    dev.reported_busy = busy;
    push(c, status);
  }

  // ---- the gate's thread ----------------------------------------------------------------------

  bool try_connect() {
    protocol::Hello hello{};
    hello.magic = protocol::kMagic;
    hello.abi_major = protocol::kAbiMajor;
    hello.abi_minor = protocol::kAbiMinor;
    hello.role = protocol::Role::shim;
    hello.pid = static_cast<std::uint32_t>(getpid());
    std::memcpy(hello.label, options_.label.data(), std::min(options_.label.size(), sizeof(hello.label) - 1));
    hello.job_length_ms = options_.job_length_ms;
    hello.deadline_us = options_.deadline_us;
    auto connection = connect_to_daemon(options_.socket_paths, hello);
    if (!connection) {
      if (!unreachable_logged_.exchange(true)) {
        log::warn("sluiced is not reachable ({}); {}", connection.error().message,
                  options_.on_loss == OnDaemonLoss::wait
                      ? "holding best-effort work until it answers (SLUICE_ON_DAEMON_LOSS=wait)"
                      : "running in passthrough: nothing is held (SLUICE_ON_DAEMON_LOSS=passthrough)");
      }
      return false;
    }
    Connection* c = connection->get();
    {
      std::lock_guard lock(push_mu_);
      connections_.push_back(std::move(*connection));
      named_.clear();
      conn_.store(c, std::memory_order_release);
    }
    cls_.store(c->cls);
    class_known_.store(true, std::memory_order_release);
    apply_decisions(*c);  // sluiced put the first decisions in the ring before answering
    link_.store(LinkState::connected, std::memory_order_release);
    connects_.fetch_add(1);
    unreachable_logged_.store(false);
    log::info("connected to sluiced at {} as {} ({}), client {}", c->socket_path,
              protocol::class_name(cls_.load()), c->rule, c->client_id);
    send_status(*c, 0, Progress{});  // acknowledges the first decisions
    send_kill_words(*c);
    env_.listener.gate_changed();
    return true;
  }

  void send_kill_words(Connection& c) {
    std::vector<protocol::KillWordMsg> words;
    {
      std::lock_guard lock(kill_mu_);
      words = kill_words_;
    }
    for (const auto& msg : words) push(c, msg);
  }

  void lose_connection(Connection& c) {
    link_.store(options_.on_loss == OnDaemonLoss::wait ? LinkState::waiting : LinkState::passthrough,
                std::memory_order_release);
    {
      std::lock_guard lock(push_mu_);
      conn_.store(nullptr, std::memory_order_release);
    }
    for (auto& dev : devices_) dev.decided.store(false);
    log::warn("lost sluiced at {}; {} until it is back", c.socket_path,
              options_.on_loss == OnDaemonLoss::wait ? "holding best-effort work" : "passthrough");
    unreachable_logged_.store(true);  // the loss was said; retries stay quiet
    env_.listener.daemon_lost();      // a kill word it raised would pause killed work for good
    env_.listener.gate_changed();
  }

  bool apply_decisions(Connection& c) {
    bool applied = false;
    protocol::Slot slot;
    while (c.from_daemon.pop(slot) == protocol::RingResult::ok) {
      auto decision = protocol::decode_decision(slot);
      if (!decision) {
        SLUICE_LOG_EVERY_SECOND(warn, "ignoring a bad decision from sluiced: {}", decision.error().message);
        continue;
      }
      cls_.store(decision->cls, std::memory_order_relaxed);
      chunk_bytes_.store(decision->copy_chunk_bytes, std::memory_order_relaxed);
      if (decision->default_prediction_ns != 0) {
        default_prediction_.store(decision->default_prediction_ns, std::memory_order_relaxed);
      }
      DeviceGate& gate = decision->device < 0 ? default_gate_ : devices_[static_cast<std::size_t>(decision->device)];
      gate.marker_ns.store(decision->marker_ns != 0 ? decision->marker_ns : kDefaultMarkerNs, std::memory_order_relaxed);
      gate.solo.store(decision->solo != 0, std::memory_order_relaxed);
      gate.route_sms.store(route_of(*decision), std::memory_order_relaxed);
      gate.grant_ns.store(decision->grant_ns, std::memory_order_release);
      gate.decided.store(true, std::memory_order_release);
      applied_seq_.store(decision->decision_seq, std::memory_order_relaxed);
      decisions_.fetch_add(1, std::memory_order_relaxed);
      applied = true;
    }
    return applied;
  }

  // The partition a decision puts best-effort work in (0: the full GPU). A route sluice cannot
  // follow is reported and read as the full GPU.
  static std::uint32_t route_of(const protocol::DecisionMsg& decision) {
    if (decision.route == protocol::Route::full) return 0;
    if (decision.route != protocol::Route::partition) {
      SLUICE_LOG_EVERY_SECOND(warn, "decision {} from sluiced: unknown route {}; using the full GPU",
                              decision.decision_seq, static_cast<int>(decision.route));
      return 0;
    }
    if (decision.partition_sms == 0 || decision.partition_sms % kPartitionGranule != 0) {
      SLUICE_LOG_EVERY_SECOND(warn,
                              "decision {} from sluiced: partition_sms {} is not a positive "
                              "multiple of {}; using the full GPU",
                              decision.decision_seq, decision.partition_sms, kPartitionGranule);
      return 0;
    }
    return decision.partition_sms;
  }

  void ensure_relaxed_capture_mode() {
    if (relaxed_mode_ || env_.driver.cuThreadExchangeStreamCaptureMode == nullptr) return;
    CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
    relaxed_mode_ = env_.driver.cuThreadExchangeStreamCaptureMode(&mode) == CUDA_SUCCESS;
  }

  // One round: decisions in, completions and samples out.
  void serve(Connection& c, bool woken_by_daemon) {
    if (woken_by_daemon) protocol::drain_doorbell(c.doorbell_to_client);
    bool applied = apply_decisions(c);
    std::array<std::uint64_t, kClientDevices> newest{};
    for (int d = 0; d < kClientDevices; ++d) newest[static_cast<std::size_t>(d)] = devices_[static_cast<std::size_t>(d)].newest_seq.load(std::memory_order_acquire);
    Progress progress;
    ensure_relaxed_capture_mode();
    tracker_.poll(progress);
    bool freed = false;
    for (int d = 0; d < kClientDevices; ++d) {
      std::uint64_t retired = progress.retired_ns[static_cast<std::size_t>(d)];
      if (retired == 0) continue;
      DeviceGate& dev = devices_[static_cast<std::size_t>(d)];
      atomic_sub_floor(dev.inflight_ns, retired);
      dev.completed_ns.fetch_add(retired, std::memory_order_relaxed);
      freed = true;
    }
    for (const auto& sample : progress.samples) push(c, sample);
    samples_sent_.fetch_add(progress.samples.size(), std::memory_order_relaxed);
    std::uint64_t now = now_ns();
    bool heartbeat = now >= next_heartbeat_;
    if (heartbeat) next_heartbeat_ = now + kHeartbeatNs;
    bool any_busy = false;
    for (int d = 0; d < kClientDevices; ++d) {
      DeviceGate& dev = devices_[static_cast<std::size_t>(d)];
      if (!dev.used.load(std::memory_order_relaxed)) continue;
      bool busy = progress.unretired_ops[static_cast<std::size_t>(d)] > 0 || dev.held.load(std::memory_order_relaxed) > 0;
      if (!busy) dev.retired_seq = std::max(dev.retired_seq, newest[static_cast<std::size_t>(d)]);
      any_busy = any_busy || busy;
      if (applied || heartbeat || busy != dev.reported_busy || progress.retired_ns[static_cast<std::size_t>(d)] != 0) {
        send_status(c, d, progress);
        applied = false;  // one status acknowledges every device's decisions
      }
    }
    if (applied) send_status(c, 0, progress);
    busy_ = any_busy || progress.active;
    if (freed || applied) env_.listener.gate_changed();
  }

  // Stops the gate's thread; idempotent, and never called on that thread.
  void stop_thread() noexcept {
    stop_.store(true);
    protocol::ring_doorbell(wake_fd_);
    if (thread_.joinable()) thread_.join();
  }

  void thread_main() {
    std::uint64_t backoff = options_.reconnect_ns;
    std::uint64_t next_attempt = now_ns() + backoff;
    while (!stop_.load()) {
      if (forked()) return;
      Connection* c = conn_.load(std::memory_order_acquire);
      if (c == nullptr) {
        std::uint64_t now = now_ns();
        if (now >= next_attempt) {
          if (try_connect()) {
            backoff = options_.reconnect_ns;
            continue;
          }
          backoff = std::min(backoff * 2, kMaxReconnectNs);
          next_attempt = now + backoff;
        }
        protocol::wait_doorbell(wake_fd_, next_attempt > now ? next_attempt - now : 0);
        continue;
      }
      pollfd fds[3] = {{c->socket_fd, POLLIN | POLLRDHUP, 0}, {c->doorbell_to_client, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      // Announce the sleep so that sluiced rings for its next decision; a decision that arrived
      // meanwhile makes it a zero-length poll.
      bool sleep = c->from_daemon.prepare_wait();
      // A BE client looks at its work often while it runs: completions free grant. An RT client
      // looks every couple of milliseconds, busy or not: its launches need no help from this
      // thread, and what it learns only moves the end of RT activity, which a hold-off of tens of
      // milliseconds follows anyway. Fewer wake-ups also keep it out of the RT threads' way.
      bool rt = cls_.load(std::memory_order_relaxed) == protocol::Class::rt;
      std::uint64_t poll = rt ? kRtPollNs : busy_ ? options_.busy_poll_ns : kIdlePollNs;
      timespec timeout = protocol::to_timespec(!sleep ? 0 : poll);
      int ready = ppoll(fds, 3, &timeout, nullptr);
      if (sleep) c->from_daemon.finish_wait();
      if (ready < 0 && errno != EINTR) continue;
      if (fds[2].revents != 0) protocol::drain_doorbell(wake_fd_);
      // sluiced sends nothing on the socket after the welcome: anything there is its hang-up.
      if (fds[0].revents != 0) {
        lose_connection(*c);
        backoff = options_.reconnect_ns;
        next_attempt = now_ns() + backoff;
        continue;
      }
      serve(*c, fds[1].revents != 0);
    }
  }

  const shim::GateEnvironment env_;
  const ClientOptions options_;
  const std::uint32_t generation_ = fork_generation.load();
  const std::uint64_t id_ = next_gate_id.fetch_add(1);
  CompletionTracker tracker_;

  std::atomic<LinkState> link_{LinkState::passthrough};
  std::atomic<protocol::Class> cls_{protocol::Class::be};
  std::atomic<bool> class_known_{false};  // sluiced answered once
  std::atomic<Connection*> conn_{nullptr};
  std::atomic<std::uint64_t> chunk_bytes_{kDefaultChunkBytes};
  std::atomic<std::uint64_t> default_prediction_{200'000};
  std::atomic<std::uint64_t> applied_seq_{0};
  std::array<DeviceGate, kClientDevices> devices_;
  DeviceGate default_gate_;

  std::mutex push_mu_;  // one producer at a time on the ring to sluiced; process-local
  std::vector<std::unique_ptr<Connection>> connections_;  // guarded by push_mu_; kept until exit
  std::unordered_set<std::uint64_t> named_;               // guarded by push_mu_

  std::mutex kill_mu_;
  std::vector<protocol::KillWordMsg> kill_words_;  // guarded by kill_mu_; one per device

  std::mutex held_mu_;
  std::set<std::uint64_t> held_seqs_;  // guarded by held_mu_
  std::atomic<std::uint64_t> held_count_{0};

  std::atomic<std::uint64_t> sample_counter_{0};
  std::atomic<std::uint64_t> connects_{0}, decisions_{0}, dropped_{0}, samples_sent_{0};
  std::atomic<bool> unreachable_logged_{false};
  std::atomic<bool> stop_{false};
  std::atomic<bool> ring_stalled_{false};  // a push to sluiced timed out on a full ring
  int wake_fd_ = -1;
  std::thread thread_;
  // The gate's thread only.
  bool busy_ = false;
  bool relaxed_mode_ = false;
  std::uint64_t next_heartbeat_ = 0;
};

}  // namespace

ClientOptions client_options_from_environment() {
  ClientOptions options;
  options.socket_paths = protocol::client_socket_paths();
  if (auto loss = env::get("SLUICE_ON_DAEMON_LOSS")) {
    if (*loss == "wait") {
      options.on_loss = OnDaemonLoss::wait;
    } else if (*loss != "passthrough") {
      log::warn("SLUICE_ON_DAEMON_LOSS='{}': expected passthrough or wait; using passthrough", *loss);
    }
  }
  if (auto label = env::get("SLUICE_CLASS")) {
    if (label->size() >= protocol::kLabelBytes) {
      log::warn("SLUICE_CLASS is longer than {} bytes; ignored", protocol::kLabelBytes - 1);
    } else {
      options.label = *label;
    }
  }
  auto job = env::get_u64("SLUICE_JOB_LENGTH_S", 0);
  if (job) {
    options.job_length_ms = *job * 1000;
  } else {
    log::warn("{}; ignored", job.error().message);
  }
  auto deadline = env::get_u64("SLUICE_DEADLINE_US", 0);
  if (deadline) {
    options.deadline_us = *deadline;
  } else {
    log::warn("{}; ignored", deadline.error().message);
  }
  return options;
}

std::unique_ptr<ClientGate> make_client_gate(const shim::GateEnvironment& env, ClientOptions options) {
  return std::make_unique<DaemonGate>(env, std::move(options));
}

}  // namespace sluice::sched
