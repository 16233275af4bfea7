// The scheduling core of sluiced: a state machine driven by client messages and a clock passed in
// by the caller, so that tests run it with a fake clock and no processes.
//
// What it decides, per device:
//  * Mode. A device is `shut` while any RT client has work pending or in flight there, and for
//    SchedulerParams::holdoff_ns after the last RT client went idle; otherwise `open`.
//  * BE grants. Each BE client gets a grant: the predicted GPU time it may have in flight. The
//    grants of all BE clients together stay within the budget of the mode (be_budget_ns when shut,
//    idle_budget_ns when open, which may be unlimited). A client whose next operation alone is
//    larger than the budget gets `solo`: it may run that one operation while nothing else of any
//    BE client is in flight. Which client gets the budget first is the sharing policy's choice.
//
//  * Route (mps mode only). While a device is shut, BE decisions carry route=partition and
//    partition_sms: BE work runs in a green context that leaves `reserve` SMs to RT. The reserve
//    comes from the policy (reserve_sms) or from RT demand (choose_reserve_sms). In timeslice mode
//    the route is always full: without MPS, contexts of different processes time-slice and a
//    partition would not help RT.
//  * Kill epoch. When RT becomes active on a device while BE work in flight there exceeds the
//    budget, every BE client whose rule allows kill and that has work in flight gets the device's
//    next kill epoch in its decision (and a kill counted in `ps`).
//
// How RT activity is known without slowing RT launches: an RT client admits its work inline and
// only pushes a descriptor into its ring (no system call); sluiced polls RT clients' rings every
// rt_poll_ns. The client's own thread learns completion by querying its streams and events and
// sends a status with `retired_seq`; an RT client is busy on a device while it reported an
// operation newer than the last retired one, or says so in its status.
//
// Why grants stay safe while messages are in flight: a client follows the newest decision it has
// applied and acknowledges it in its status (applied_decision). Until it acknowledges a smaller
// grant, sluiced still counts the larger one against the budget, so the sum of what clients may
// have in flight never exceeds the budget, whatever the order of messages.
//
// Thread rules: not thread-safe; one thread (sluiced's loop) owns it.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "sluice/protocol/codec.h"
#include "sluice/protocol/layout.h"
#include "sluice/scheduler/model.h"
#include "sluice/scheduler/policy.h"

namespace sluice::sched {

using ClientId = std::uint32_t;
using protocol::GateMode;
using protocol::OpKind;

// Where decisions go: sluiced writes them to the client's ring and prediction table; tests record.
class SchedulerOutput {
 public:
  virtual void send_decision(ClientId client, const protocol::DecisionMsg& decision) = 0;
  virtual void publish_prediction(ClientId client, std::uint64_t key, std::uint64_t value_ns) = 0;
  // The client's kill word of `device`, if it registered one: the kill epoch to stop its in-flight
  // killable work, 0 once RT is idle on the device again.
  virtual void write_kill_word(ClientId client, int device, std::uint32_t value) {
    (void)client, (void)device, (void)value;
  }
  // For metrics: a client of `params` reported an operation (`held`: its gate holds it), and an
  // operation went to the driver `waited_ns` after the application's call (`was_held`: it waited
  // in the client's queue).
  virtual void note_op(const ClassParams& params, bool held) { (void)params, (void)held; }
  virtual void note_release(const ClassParams& params, bool was_held, std::uint64_t waited_ns) {
    (void)params, (void)was_held, (void)waited_ns;
  }

 protected:
  ~SchedulerOutput() = default;
};

// Completion markers a BE client records at least this often while its grant is unlimited.
inline constexpr std::uint64_t kOpenMarkerNs = 1'000'000;
// An RT client that says it is busy but sends nothing for this long is taken as idle.
inline constexpr std::uint64_t kRtStaleNs = 2'000'000'000;
// The window over which `ps` measures each client's share of GPU time.
inline constexpr std::uint64_t kShareWindowNs = 1'000'000'000;
// Held operations remembered per client for `sluicectl queue`.
inline constexpr std::size_t kMaxPendingPerClient = 4096;

// RT SM demand is remembered for this many recent RT kernels per device.
inline constexpr std::size_t kRtDemandWindow = 256;
// sm_90 splits SMs into groups of 8 (cuDevSmResourceSplitByCount granularity).
inline constexpr std::uint32_t kSmGranularity = 8;
// The percentile of recent RT kernels' SM demand the automatic reserve covers.
inline constexpr double kReservePercentile = 0.9;

// How many SMs one RT kernel can occupy at once: one block per SM is assumed (a conservative
// estimate: a block never shares an SM with another block of the same kernel), so min(blocks, SMs).
std::uint32_t sm_demand(const std::uint32_t grid[3], std::uint32_t sm_count);

// The reserve for RT on a device of `sm_count` SMs: `fixed` when non-zero, else the
// kReservePercentile-th of `demands` (at least one granule when empty); rounded up to a multiple
// of kSmGranularity (minimum 8) and clamped so that BE keeps at least 8 SMs. 0 when the device is
// too small to split (under 16 SMs).
std::uint32_t choose_reserve_sms(std::uint32_t sm_count, const std::vector<std::uint32_t>& demands, std::uint32_t fixed,
                                 std::uint32_t cap = 0);
// The BE partition for a reserve: what is left, rounded down to the split granularity.
std::uint32_t partition_for_reserve(std::uint32_t sm_count, std::uint32_t reserve);

struct DeviceView {
  int device = 0;
  protocol::Route route = protocol::Route::full;
  std::uint32_t sm_count = 0;       // reported by clients (0: unknown)
  std::uint32_t sms_used = 0;       // what partitions are sized from: reported, policy, or default
  std::uint32_t cc_major = 0, cc_minor = 0;
  std::uint32_t reserve_sms = 0;    // for RT while routed (0 while the route is full)
  std::uint32_t partition_sms = 0;  // for BE while routed
  std::uint32_t kill_epoch = 0;
  std::uint64_t kills = 0;          // kill decisions on this device (one per BE client targeted)
  GateMode mode = GateMode::open;
  bool rt_active = false;
  std::uint64_t budget_ns = 0;        // of the current mode (protocol::kUnlimited: open gate)
  std::uint64_t be_inflight_ns = 0;   // reported by BE clients
  std::uint64_t be_committed_ns = 0;  // what BE clients may occupy: grants in force and in flight
  std::uint64_t rt_idle_ns = 0;       // how long RT has been idle (0 while active)
  std::uint32_t rt_busy_clients = 0;
  std::uint32_t be_waiting_clients = 0;  // BE clients with held work
};

struct ClientView {
  ClientId id = 0;
  ClientIdentity identity;
  Assignment assignment;
  bool overridden = false;  // set by `sluicectl set-class`
  std::uint64_t held_ops = 0;
  std::uint64_t inflight_ns = 0;
  std::uint64_t completed_ns = 0;
  double gpu_share = 0;     // of the GPU time all clients used over the last window
  bool rt_busy = false;
  int rt_rank = 0;          // 1 = first among RT clients; 0 for BE
  std::uint64_t grant_ns = 0;   // BE: the smallest grant over its devices
  bool solo = false;
  std::uint64_t connected_ns = 0;
  std::uint64_t messages = 0;
  std::uint64_t invalid_messages = 0;
  std::uint64_t kills = 0;       // BE: how often its in-flight work was ordered killed
  std::uint32_t kill_epoch = 0;  // BE: the newest kill epoch sent (largest over its devices)
  bool partitioned = false;      // BE: routed to a partition on some device now
};

struct QueueView {
  ClientId client = 0;
  std::uint32_t pid = 0;
  std::string exe;
  std::uint64_t seq = 0;
  int device = 0;
  OpKind kind = OpKind::kernel;
  std::string name;  // kernel name, or the kind for other operations
  std::uint32_t grid[3] = {0, 0, 0};
  std::uint32_t block[3] = {0, 0, 0};
  std::uint64_t bytes = 0;
  std::uint64_t predicted_ns = 0;
  std::uint64_t waiting_ns = 0;
  std::uint64_t stream = 0;
};

struct SchedulerCounters {
  std::uint64_t messages = 0;
  std::uint64_t invalid_messages = 0;
  std::uint64_t ops = 0;
  std::uint64_t samples = 0;
  std::uint64_t decisions = 0;
  std::uint64_t predictions = 0;
  std::uint64_t connects = 0;
  std::uint64_t disconnects = 0;
  std::uint64_t mode_changes = 0;
  std::uint64_t route_changes = 0;
  std::uint64_t kills = 0;
};

class Scheduler {
 public:
  // `served_devices` empty: every device. Ops on other devices are never gated.
  Scheduler(SchedulerParams params, std::vector<int> served_devices, SchedulerOutput& output);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void connect(ClientId id, const ClientIdentity& identity, const Assignment& assignment, std::uint64_t now);
  void disconnect(ClientId id, std::uint64_t now);
  // A new class for a connected client (policy reload or set-class).
  void reassign(ClientId id, const Assignment& assignment, bool overridden, std::uint64_t now);
  void set_params(const SchedulerParams& params, std::uint64_t now);
  // timeslice (default): never partitions. mps: partitions BE while RT is active.
  void set_sharing_mode(protocol::SharingMode mode, std::uint64_t now);
  protocol::SharingMode sharing_mode() const { return sharing_mode_; }

  // Takes one validated message. Grant changes are computed by flush(), once per batch.
  void handle(ClientId id, const protocol::ClientMessage& message, std::uint64_t now);
  // Re-evaluates the grants of every device whose state changed since the last flush.
  void flush(std::uint64_t now);
  // A message from `id` failed validation (counted and shown in `ps`).
  void note_invalid(ClientId id);

  // Runs timers (hold-off, stale RT clients, GPU share). Call at least by next_tick().
  void tick(std::uint64_t now);
  std::uint64_t next_tick(std::uint64_t now) const;

  bool has_rt_clients() const;
  bool is_rt(ClientId id) const;
  const SchedulerParams& params() const { return params_; }

  std::vector<ClientView> clients(std::uint64_t now) const;
  std::vector<DeviceView> devices(std::uint64_t now) const;
  std::vector<QueueView> queue(std::uint64_t now, std::size_t limit) const;
  const SchedulerCounters& counters() const { return counters_; }
  const DurationModel& model() const { return model_; }
  std::string kernel_name(std::uint64_t kernel_id) const;

 private:
  struct Link;
  struct Client;
  struct Device;

  Client* find(ClientId id);
  const Client* find(ClientId id) const;
  Device& device(int ordinal);
  Link& link(Client& client, int ordinal);
  int ordinal_of(std::int16_t device) const { return device < 0 ? 0 : device; }
  bool served(int ordinal) const;

  void on_op(Client& client, const protocol::OpMsg& op, std::uint64_t now);
  void on_submitted(Client& client, const protocol::OpSubmittedMsg& done, std::uint64_t now);
  void on_status(Client& client, const protocol::StatusMsg& status, std::uint64_t now);
  void on_sample(const protocol::SampleMsg& sample);
  void on_name(Client& client, const protocol::KernelNameMsg& name);

  bool rt_busy(const Link& link, std::uint64_t now) const;
  void update_mode(Device& device, std::uint64_t now);
  void allocate(Device& device, std::uint64_t now);
  void allocate_all(std::uint64_t now);
  std::vector<Client*> sharing_order(int ordinal);
  void send_rt_decision(Client& client);
  void send_default_decision(Client& client);
  struct Placement {
    protocol::Route route = protocol::Route::full;
    std::uint32_t partition_sms = 0;
  };
  Placement placement(Device& device);
  std::uint32_t device_sms(const Device& device) const;
  void order_kills(Device& device);
  void lower_kill_words(Device& device);
  void send_grant(Client& client, Link& link, int ordinal, std::uint64_t grant, bool solo, GateMode mode,
                  Placement where);
  protocol::DecisionMsg base_decision(Client& client, int ordinal, protocol::Class cls, GateMode mode);
  std::uint64_t occupation(const Link& link) const;
  std::uint64_t finite_window(const Link& link) const;
  std::uint64_t demand(const Client& client, const Link& link, int ordinal) const;
  std::uint64_t next_operation(const Client& client, const Link& link, int ordinal) const;
  std::uint64_t predict(const protocol::OpMsg& op) const;
  void publish_for(Client& client, std::uint64_t identity, std::uint64_t work);
  void publish_identity(std::uint64_t identity);
  void update_shares(std::uint64_t now);

  SchedulerParams params_;
  protocol::SharingMode sharing_mode_ = protocol::SharingMode::timeslice;
  std::vector<int> served_devices_;
  SchedulerOutput& output_;
  DurationModel model_;
  std::map<ClientId, std::unique_ptr<Client>> clients_;
  std::map<int, std::unique_ptr<Device>> devices_;
  std::unordered_map<std::uint64_t, std::string> names_;
  SchedulerCounters counters_;
  std::uint64_t next_share_ns_ = 0;
};

}  // namespace sluice::sched
