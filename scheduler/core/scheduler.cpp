#include "sluice/scheduler/scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "sluice/common/log.h"

namespace sluice::sched {

using protocol::Class;
using protocol::kUnlimited;

namespace {

std::uint64_t sat_add(std::uint64_t a, std::uint64_t b) {
  return a > kUnlimited - b ? kUnlimited : a + b;
}

struct Decided {
  std::uint64_t seq = 0;
  std::uint64_t reserve = 0;  // what the client may occupy while it follows this decision
};

}  // namespace

// One client's use of one device, and the decisions sent for it.
struct Scheduler::Link {
  // Reported by the client.
  std::uint64_t inflight_ns = 0;
  std::uint64_t held_ops = 0;
  std::uint64_t completed_ns = 0;
  std::uint64_t retired_seq = 0;
  bool status_busy = false;
  std::uint64_t last_op_seq = 0;
  std::uint64_t last_message_ns = 0;
  std::uint64_t busy_since_ns = 0;
  bool stale_logged = false;
  // Decided here.
  bool sent = false;
  std::uint64_t grant_ns = 0;
  bool solo = false;
  GateMode mode = GateMode::open;
  protocol::Route route = protocol::Route::full;
  std::uint32_t partition_sms = 0;
  std::uint32_t kill_epoch_sent = 0;
  std::uint32_t kill_epoch = 0;  // BE: the device's kill epoch when this client was last targeted
  bool kill_word_raised = false;  // its kill word holds that epoch (cleared when RT is idle)
  std::deque<Decided> unacked;
  std::uint64_t acked_reserve = 0;
};

struct Scheduler::Client {
  ClientId id = 0;
  ClientIdentity identity;
  Assignment assignment;
  bool overridden = false;
  std::uint64_t connected_ns = 0;
  std::map<int, Link> links;
  Link defaults;  // the decision for devices without one of their own
  std::map<std::uint64_t, protocol::OpMsg> pending;  // held operations by seq
  std::uint64_t decision_seq = 0;
  std::uint64_t fair_offset_ns = 0;  // fair sharing: virtual time granted on arrival
  std::unordered_map<std::uint64_t, std::vector<std::uint32_t>> published;  // identity -> buckets
  std::unordered_map<std::uint64_t, std::string> partial_names;
  std::uint64_t messages = 0;
  std::uint64_t invalid_messages = 0;
  double gpu_share = 0;
  std::uint64_t share_mark_ns = 0;  // completed_ns at the start of the share window
  std::uint64_t kills = 0;

  bool rt() const { return assignment.params.cls == Class::rt; }
  std::uint64_t completed_total() const {
    std::uint64_t total = 0;
    for (const auto& [ordinal, link] : links) total = sat_add(total, link.completed_ns);
    return total;
  }
  double fair_vtime() const {
    return static_cast<double>(completed_total()) / assignment.params.weight + static_cast<double>(fair_offset_ns);
  }
};

struct Scheduler::Device {
  int ordinal = 0;
  GateMode mode = GateMode::open;
  bool rt_active = false;
  bool ever_active = false;
  std::uint64_t rt_idle_since_ns = 0;
  bool dirty = true;
  // Described by clients (0: unknown).
  std::uint32_t sm_count = 0;
  std::uint8_t cc_major = 0, cc_minor = 0;
  // SM demand of recent RT kernels (blocks, as launched), oldest first.
  std::deque<std::uint32_t> rt_demand;
  protocol::Route route = protocol::Route::full;
  std::uint32_t reserve_sms = 0;
  std::uint32_t partition_sms = 0;
  std::uint32_t kill_epoch = 0;
  std::uint64_t kills = 0;
};

std::uint32_t sm_demand(const std::uint32_t grid[3], std::uint32_t sm_count) {
  std::uint64_t blocks = std::uint64_t{grid[0]} * grid[1] * grid[2];
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(blocks, sm_count));
}

std::uint32_t choose_reserve_sms(std::uint32_t sm_count, const std::vector<std::uint32_t>& demands, std::uint32_t fixed,
                                 std::uint32_t cap) {
  if (sm_count < 2 * kSmGranularity) return 0;
  std::uint32_t reserve = fixed;
  if (reserve == 0) {
    std::vector<std::uint32_t> sorted;
    sorted.reserve(demands.size());
    for (std::uint32_t d : demands) sorted.push_back(std::min(d, sm_count));
    if (!sorted.empty()) {
      // The nearest-rank percentile: the smallest demand that at least that share of kernels fits.
      auto rank = static_cast<std::size_t>(std::ceil(kReservePercentile * static_cast<double>(sorted.size())));
      rank = std::clamp<std::size_t>(rank, 1, sorted.size()) - 1;
      std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(rank), sorted.end());
      reserve = sorted[rank];
    }
    // Models' kernels often fill the whole GPU: RT then starts on the reserve at once and spreads
    // into BE's SMs as their blocks finish, while BE keeps most of the device.
    if (cap != 0) reserve = std::min(reserve, cap);
  }
  reserve = std::max(reserve, kSmGranularity);
  reserve = (reserve + kSmGranularity - 1) / kSmGranularity * kSmGranularity;
  return std::min(reserve, sm_count - kSmGranularity);
}

std::uint32_t partition_for_reserve(std::uint32_t sm_count, std::uint32_t reserve) {
  if (reserve == 0 || reserve >= sm_count) return 0;
  return (sm_count - reserve) / kSmGranularity * kSmGranularity;
}

Scheduler::Scheduler(SchedulerParams params, std::vector<int> served_devices, SchedulerOutput& output)
    : params_(params), served_devices_(std::move(served_devices)), output_(output) {
  for (int ordinal : served_devices_) device(ordinal);
}

Scheduler::~Scheduler() = default;

Scheduler::Client* Scheduler::find(ClientId id) {
  auto it = clients_.find(id);
  return it == clients_.end() ? nullptr : it->second.get();
}

const Scheduler::Client* Scheduler::find(ClientId id) const {
  auto it = clients_.find(id);
  return it == clients_.end() ? nullptr : it->second.get();
}

bool Scheduler::served(int ordinal) const {
  return served_devices_.empty() ||
         std::find(served_devices_.begin(), served_devices_.end(), ordinal) != served_devices_.end();
}

Scheduler::Device& Scheduler::device(int ordinal) {
  auto& slot = devices_[ordinal];
  if (!slot) {
    slot = std::make_unique<Device>();
    slot->ordinal = ordinal;
  }
  return *slot;
}

Scheduler::Link& Scheduler::link(Client& client, int ordinal) {
  auto [it, inserted] = client.links.try_emplace(ordinal);
  if (inserted) {
    // Until the client follows a decision for this device, it follows its default decision.
    it->second.acked_reserve = occupation(client.defaults);
  }
  return it->second;
}

// ---- connections -------------------------------------------------------------------------------

void Scheduler::connect(ClientId id, const ClientIdentity& identity, const Assignment& assignment,
                        std::uint64_t now) {
  auto client = std::make_unique<Client>();
  client->id = id;
  client->identity = identity;
  client->assignment = assignment;
  client->connected_ns = now;
  double least_vtime = -1;
  for (const auto& [other_id, other] : clients_) {
    if (!other->rt() && (least_vtime < 0 || other->fair_vtime() < least_vtime)) least_vtime = other->fair_vtime();
  }
  if (least_vtime > 0) client->fair_offset_ns = static_cast<std::uint64_t>(least_vtime);
  Client& added = *client;
  clients_[id] = std::move(client);
  ++counters_.connects;
  if (added.rt()) {
    send_rt_decision(added);
  } else {
    send_default_decision(added);
    for (auto& [ordinal, dev] : devices_) {
      link(added, ordinal);
      dev->dirty = true;
    }
  }
  flush(now);
}

void Scheduler::disconnect(ClientId id, std::uint64_t now) {
  Client* client = find(id);
  if (client == nullptr) return;
  for (auto& [ordinal, link] : client->links) {
    if (auto it = devices_.find(ordinal); it != devices_.end()) it->second->dirty = true;
  }
  clients_.erase(id);
  ++counters_.disconnects;
  for (auto& [ordinal, dev] : devices_) update_mode(*dev, now);
  flush(now);
}

void Scheduler::reassign(ClientId id, const Assignment& assignment, bool overridden, std::uint64_t now) {
  Client* client = find(id);
  if (client == nullptr) return;
  bool was_rt = client->rt();
  client->assignment = assignment;
  client->overridden = overridden;
  if (client->rt() && !was_rt) {
    send_rt_decision(*client);
  } else if (!client->rt() && was_rt) {
    // As an RT client it admitted everything: count it as unlimited until it follows a BE grant.
    for (Link* link : {&client->defaults}) {
      link->unacked.clear();
      link->acked_reserve = kUnlimited;
      link->sent = false;
    }
    for (auto& [ordinal, link] : client->links) {
      link.unacked.clear();
      link.acked_reserve = kUnlimited;
      link.sent = false;
    }
    send_default_decision(*client);
    for (auto& [ordinal, dev] : devices_) link(*client, ordinal);
  }
  for (auto& [ordinal, dev] : devices_) {
    dev->dirty = true;
    update_mode(*dev, now);
  }
  flush(now);
}

void Scheduler::set_sharing_mode(protocol::SharingMode mode, std::uint64_t now) {
  sharing_mode_ = mode;
  for (auto& [ordinal, dev] : devices_) dev->dirty = true;
  flush(now);
}

void Scheduler::set_params(const SchedulerParams& params, std::uint64_t now) {
  params_ = params;
  for (auto& [id, client] : clients_) {
    if (client->rt()) {
      send_rt_decision(*client);
    } else {
      client->defaults.sent = false;
      send_default_decision(*client);
      for (auto& [ordinal, link] : client->links) link.sent = false;  // resend with new knobs
    }
  }
  for (auto& [ordinal, dev] : devices_) {
    dev->dirty = true;
    update_mode(*dev, now);
  }
  flush(now);
}

// ---- messages ----------------------------------------------------------------------------------

void Scheduler::note_invalid(ClientId id) {
  ++counters_.invalid_messages;
  if (Client* client = find(id)) ++client->invalid_messages;
}

void Scheduler::handle(ClientId id, const protocol::ClientMessage& message, std::uint64_t now) {
  Client* client = find(id);
  if (client == nullptr) return;
  ++counters_.messages;
  ++client->messages;
  std::visit(
      [&](const auto& msg) {
        using Msg = std::decay_t<decltype(msg)>;
        if constexpr (std::is_same_v<Msg, protocol::OpMsg>) {
          on_op(*client, msg, now);
        } else if constexpr (std::is_same_v<Msg, protocol::OpSubmittedMsg>) {
          on_submitted(*client, msg, now);
        } else if constexpr (std::is_same_v<Msg, protocol::StatusMsg>) {
          on_status(*client, msg, now);
        } else if constexpr (std::is_same_v<Msg, protocol::SampleMsg>) {
          on_sample(msg);
        } else if constexpr (std::is_same_v<Msg, protocol::KernelNameMsg>) {
          on_name(*client, msg);
        }
        // GoodbyeMsg: the socket hang-up that follows does the rest.
      },
      message);
}

void Scheduler::on_op(Client& client, const protocol::OpMsg& op, std::uint64_t now) {
  ++counters_.ops;
  int ordinal = ordinal_of(op.device);
  if (op.kind == OpKind::kernel && op.kernel_id != 0) {
    std::uint64_t blocks = std::uint64_t{op.grid[0]} * op.grid[1] * op.grid[2];
    publish_for(client, op.kernel_id, blocks);
  } else if (op.kind == OpKind::copy || op.kind == OpKind::memset) {
    publish_for(client, op.kind == OpKind::copy ? protocol::kCopyIdentity : protocol::kMemsetIdentity, op.bytes);
  }
  output_.note_op(client.assignment.params, op.state == protocol::OpState::held);
  if (op.state == protocol::OpState::held) {
    if (client.pending.size() >= kMaxPendingPerClient) client.pending.erase(client.pending.begin());
    client.pending[op.seq] = op;
  } else {
    output_.note_release(client.assignment.params, false, op.submit_ns > op.call_ns ? op.submit_ns - op.call_ns : 0);
  }
  if (!served(ordinal)) return;
  bool known = devices_.count(ordinal) != 0;
  Device& dev = device(ordinal);
  if (!known) {
    for (auto& [other_id, other] : clients_) {
      if (!other->rt()) link(*other, ordinal);
    }
  }
  Link& l = link(client, ordinal);
  l.last_message_ns = now;
  bool was_busy = client.rt() && rt_busy(l, now);
  if (op.seq > l.last_op_seq) l.last_op_seq = op.seq;
  if (client.rt()) {
    if (op.kind == OpKind::kernel) {
      std::uint64_t blocks = std::uint64_t{op.grid[0]} * op.grid[1] * op.grid[2];
      dev.rt_demand.push_back(static_cast<std::uint32_t>(std::min<std::uint64_t>(blocks, protocol::kMaxSms)));
      if (dev.rt_demand.size() > kRtDemandWindow) dev.rt_demand.pop_front();
    }
    if (!was_busy) {
      l.busy_since_ns = now;
      update_mode(dev, now);
    }
  } else if (op.state == protocol::OpState::held) {
    dev.dirty = true;  // new demand
  }
}

void Scheduler::on_submitted(Client& client, const protocol::OpSubmittedMsg& done, std::uint64_t now) {
  auto it = client.pending.find(done.seq);
  if (it == client.pending.end()) return;
  int ordinal = ordinal_of(it->second.device);
  std::uint64_t call_ns = it->second.call_ns;
  output_.note_release(client.assignment.params, true, done.submit_ns > call_ns ? done.submit_ns - call_ns : 0);
  client.pending.erase(it);
  if (auto dev = devices_.find(ordinal); dev != devices_.end() && !client.rt()) dev->second->dirty = true;
  (void)now;
}

void Scheduler::on_status(Client& client, const protocol::StatusMsg& status, std::uint64_t now) {
  // Acknowledged decisions: the newest one at or below applied_decision is in force.
  auto acknowledge = [&](Link& l) {
    while (!l.unacked.empty() && l.unacked.front().seq <= status.applied_decision) {
      l.acked_reserve = l.unacked.front().reserve;
      l.unacked.pop_front();
    }
  };
  acknowledge(client.defaults);
  for (auto& [ordinal, l] : client.links) acknowledge(l);

  int ordinal = ordinal_of(status.device);
  // Everything up to retired_seq is complete: it cannot be waiting any more.
  while (!client.pending.empty() && client.pending.begin()->first <= status.retired_seq) {
    client.pending.erase(client.pending.begin());
  }
  if (!served(ordinal)) return;
  Device& dev = device(ordinal);
  if (status.sm_count != 0 && status.sm_count != dev.sm_count) {
    dev.sm_count = status.sm_count;
    dev.cc_major = status.cc_major;
    dev.cc_minor = status.cc_minor;
    dev.dirty = true;
  }
  Link& l = link(client, ordinal);
  bool was_busy = client.rt() && rt_busy(l, now);
  l.inflight_ns = status.inflight_ns;
  l.held_ops = status.held_ops;
  l.completed_ns = status.completed_ns;
  l.retired_seq = std::max(l.retired_seq, status.retired_seq);
  l.status_busy = (status.flags & protocol::kStatusBusy) != 0;
  l.last_message_ns = now;
  l.stale_logged = false;
  if (client.rt()) {
    bool busy = rt_busy(l, now);
    if (busy && !was_busy) l.busy_since_ns = now;
    if (busy != was_busy) update_mode(dev, now);
  } else {
    for (auto& [other, d] : devices_) d->dirty = true;  // acknowledgements free budget anywhere
  }
}

void Scheduler::on_sample(const protocol::SampleMsg& sample) {
  ++counters_.samples;
  if (!model_.observe(sample.kernel_id, sample.work, sample.duration_ns)) {
    SLUICE_LOG_EVERY_SECOND(warn, "duration model is full ({} identities); new kernels use the default prediction",
                            DurationModel::kMaxIdentities);
    return;
  }
  publish_identity(sample.kernel_id);
}

void Scheduler::on_name(Client& client, const protocol::KernelNameMsg& name) {
  constexpr std::size_t kMaxNames = 1 << 16;
  std::string& partial = client.partial_names[name.kernel_id];
  if (name.offset == 0) partial.clear();
  if (name.offset != partial.size()) {  // out of order: wait for the name to be sent again
    client.partial_names.erase(name.kernel_id);
    return;
  }
  partial.append(name.text, name.length);
  if (partial.size() < name.total) return;
  if (names_.size() < kMaxNames) names_[name.kernel_id] = partial;
  client.partial_names.erase(name.kernel_id);
}

// ---- modes and grants --------------------------------------------------------------------------

bool Scheduler::rt_busy(const Link& l, std::uint64_t now) const {
  bool busy = l.status_busy || l.last_op_seq > l.retired_seq;
  return busy && now - l.last_message_ns < kRtStaleNs;
}

void Scheduler::update_mode(Device& dev, std::uint64_t now) {
  bool active = false;
  for (auto& [id, client] : clients_) {
    if (!client->rt()) continue;
    auto it = client->links.find(dev.ordinal);
    if (it == client->links.end()) continue;
    Link& l = it->second;
    if (rt_busy(l, now)) {
      active = true;
    } else if ((l.status_busy || l.last_op_seq > l.retired_seq) && !l.stale_logged) {
      l.stale_logged = true;
      log::warn("client {} (pid {}) looks busy on device {} but sent nothing for {} ms; taking it as idle",
                id, client->identity.pid, dev.ordinal, kRtStaleNs / 1000000);
    }
  }
  if (active) {
    if (!dev.rt_active) order_kills(dev);
    dev.rt_active = true;
    dev.ever_active = true;
  } else if (dev.rt_active) {
    dev.rt_active = false;
    dev.rt_idle_since_ns = now;
    // A kill clears the SMs for the RT work at hand; once that is done the killed blocks may run
    // again. Waiting for the gate to open instead would starve killable BE work for as long as RT
    // keeps arriving within the holdoff (periodic RT requests), since nothing else lowers the word.
    lower_kill_words(dev);
  }
  bool in_holdoff = dev.ever_active && !dev.rt_active && now - dev.rt_idle_since_ns < params_.holdoff_ns;
  GateMode mode = (dev.rt_active || in_holdoff) ? GateMode::shut : GateMode::open;
  if (mode != dev.mode) {
    dev.mode = mode;
    dev.dirty = true;
    if (mode == GateMode::open) lower_kill_words(dev);  // words raised while RT was active
    ++counters_.mode_changes;
    log::debug("device {}: best-effort gate {}", dev.ordinal, mode == GateMode::shut ? "shut" : "open");
  }
}

// Like occupation(), without unlimited grants: those belong to an open gate that is being shut, a
// moment when nothing bounds the client anyway; new grants are sized for after it acknowledges.
std::uint64_t Scheduler::finite_window(const Link& l) const {
  std::uint64_t reserve = l.acked_reserve == kUnlimited ? 0 : l.acked_reserve;
  for (const Decided& d : l.unacked) {
    if (d.reserve != kUnlimited) reserve = std::max(reserve, d.reserve);
  }
  return std::max(reserve, l.inflight_ns);
}

std::uint64_t Scheduler::occupation(const Link& l) const {
  std::uint64_t reserve = l.acked_reserve;
  for (const Decided& d : l.unacked) reserve = std::max(reserve, d.reserve);
  return std::max(reserve, l.inflight_ns);
}

std::uint64_t Scheduler::predict(const protocol::OpMsg& op) const {
  std::optional<std::uint64_t> predicted;
  switch (op.kind) {
    case OpKind::kernel:
      predicted = model_.predict(op.kernel_id, std::uint64_t{op.grid[0]} * op.grid[1] * op.grid[2]);
      break;
    case OpKind::copy: predicted = model_.predict(protocol::kCopyIdentity, op.bytes); break;
    case OpKind::memset: predicted = model_.predict(protocol::kMemsetIdentity, op.bytes); break;
    default: break;
  }
  if (predicted) return *predicted;
  return op.predicted_ns != 0 ? op.predicted_ns : params_.default_prediction_ns;
}

// The predicted duration of a client's oldest held operation on a device (0: it holds nothing).
std::uint64_t Scheduler::next_operation(const Client& client, const Link& l, int ordinal) const {
  for (const auto& [seq, op] : client.pending) {
    if (ordinal_of(op.device) == ordinal) return predict(op);
  }
  return l.held_ops > 0 ? params_.default_prediction_ns : 0;
}

// What a BE client would like in flight on a device: what it has, plus what it holds.
std::uint64_t Scheduler::demand(const Client& client, const Link& l, int ordinal) const {
  std::uint64_t held = 0;
  for (const auto& [seq, op] : client.pending) {
    if (ordinal_of(op.device) == ordinal) held = sat_add(held, predict(op));
  }
  if (held == 0 && l.held_ops > 0) held = params_.default_prediction_ns;
  return sat_add(l.inflight_ns, held);
}

std::vector<Scheduler::Client*> Scheduler::sharing_order(int ordinal) {
  std::vector<Client*> order;
  for (auto& [id, client] : clients_) {
    if (!client->rt()) order.push_back(client.get());
  }
  // Fair sharing compares virtual GPU time in quanta, so that near-equal clients do not swap
  // places on every completion.
  const double quantum = static_cast<double>(std::max<std::uint64_t>(4 * params_.be_budget_ns, 1'000'000));
  auto fair_key = [&](const Client* c) { return static_cast<std::uint64_t>(c->fair_vtime() / quantum); };
  auto oldest_wait = [&](const Client* c) {
    for (const auto& [seq, op] : c->pending) {
      if (ordinal_of(op.device) == ordinal) return op.call_ns;
    }
    return std::numeric_limits<std::uint64_t>::max();
  };
  auto remaining = [](const Client* c) {
    std::uint64_t job_ns = c->assignment.params.job_length_ms * 1'000'000;
    if (job_ns == 0) return std::numeric_limits<std::uint64_t>::max();
    std::uint64_t used = c->completed_total();
    return used >= job_ns ? 0 : job_ns - used;
  };
  auto by = [&](auto key) {
    std::stable_sort(order.begin(), order.end(), [&](const Client* a, const Client* b) {
      auto ka = key(a), kb = key(b);
      if (ka != kb) return ka < kb;
      return a->id < b->id;
    });
  };
  switch (params_.sharing) {
    case Sharing::fair: by(fair_key); break;
    case Sharing::priority:
      by([&](const Client* c) { return std::pair(-c->assignment.params.priority, fair_key(c)); });
      break;
    case Sharing::srtf: by([&](const Client* c) { return std::pair(remaining(c), fair_key(c)); }); break;
    case Sharing::fifo: by(oldest_wait); break;
  }
  return order;
}

// RT arrives on a device: BE work in flight beyond the budget is what RT would wait behind. Each
// BE client whose rule allows kill and that has work in flight there gets the next epoch.
void Scheduler::order_kills(Device& dev) {
  std::uint64_t inflight = 0;
  std::vector<Link*> targets;
  for (auto& [id, client] : clients_) {
    if (client->rt()) continue;
    auto it = client->links.find(dev.ordinal);
    if (it == client->links.end()) continue;
    inflight = sat_add(inflight, it->second.inflight_ns);
    if (client->assignment.params.kill && it->second.inflight_ns > 0) targets.push_back(&it->second);
  }
  if (inflight <= params_.be_budget_ns || targets.empty()) return;
  ++dev.kill_epoch;
  for (auto& [id, client] : clients_) {
    if (client->rt()) continue;
    auto it = client->links.find(dev.ordinal);
    if (it == client->links.end() || std::find(targets.begin(), targets.end(), &it->second) == targets.end()) continue;
    it->second.kill_epoch = dev.kill_epoch;
    it->second.kill_word_raised = true;
    output_.write_kill_word(id, dev.ordinal, dev.kill_epoch);
    ++client->kills;
    ++dev.kills;
    ++counters_.kills;
  }
  dev.dirty = true;
  log::debug("device {}: RT arrived with {} us of BE work in flight; kill epoch {} for {} clients", dev.ordinal,
             inflight / 1000, dev.kill_epoch, targets.size());
}

// RT went idle (or the gate opened): killed work may run again.
void Scheduler::lower_kill_words(Device& dev) {
  for (auto& [id, client] : clients_) {
    auto it = client->links.find(dev.ordinal);
    if (it == client->links.end() || !it->second.kill_word_raised) continue;
    it->second.kill_word_raised = false;
    output_.write_kill_word(id, dev.ordinal, 0);
  }
}

std::uint32_t Scheduler::device_sms(const Device& dev) const {
  if (dev.sm_count != 0) return dev.sm_count;
  return params_.sm_count != 0 ? params_.sm_count : kDefaultSmCount;
}

// Where BE work of a device runs now: a partition while the device is shut in mps mode.
Scheduler::Placement Scheduler::placement(Device& dev) {
  Placement where;
  if (sharing_mode_ == protocol::SharingMode::mps && dev.mode == GateMode::shut && params_.partition) {
    std::uint32_t sms = device_sms(dev);
    std::vector<std::uint32_t> demands(dev.rt_demand.begin(), dev.rt_demand.end());
    std::uint32_t reserve = choose_reserve_sms(sms, demands, params_.reserve_sms, params_.max_reserve_sms);
    std::uint32_t partition = partition_for_reserve(sms, reserve);
    if (partition > 0) {
      where.route = protocol::Route::partition;
      where.partition_sms = partition;
      dev.reserve_sms = sms - partition;
    }
  }
  if (where.route == protocol::Route::full) dev.reserve_sms = 0;
  if (where.route != dev.route || where.partition_sms != dev.partition_sms) {
    ++counters_.route_changes;
    log::debug("device {}: best-effort route {} ({} SMs)", dev.ordinal,
               where.route == protocol::Route::partition ? "partition" : "full", where.partition_sms);
  }
  dev.route = where.route;
  dev.partition_sms = where.partition_sms;
  return where;
}

void Scheduler::allocate(Device& dev, std::uint64_t now) {
  (void)now;
  const int ordinal = dev.ordinal;
  const Placement where = placement(dev);
  // BE confined to a partition leaves RT its reserve whatever BE queues there; the gate then holds
  // BE only to the partitioned budget (unlimited by default).
  const std::uint64_t shut_budget = !params_.gate                           ? kUnlimited
                                    : where.route == protocol::Route::partition ? params_.partitioned_be_budget_ns
                                                                               : params_.be_budget_ns;
  const std::uint64_t budget = dev.mode == GateMode::shut ? shut_budget : params_.idle_budget_ns;
  std::vector<Client*> order = sharing_order(ordinal);
  if (budget == kUnlimited) {
    for (Client* c : order) send_grant(*c, link(*c, ordinal), ordinal, kUnlimited, false, dev.mode, where);
    return;
  }
  // What each client may occupy whatever is decided now: the largest grant it may still follow
  // (the one it acknowledged and every one sent since) and what it has in flight.
  std::uint64_t committed = 0;
  for (Client* c : order) committed = sat_add(committed, finite_window(link(*c, ordinal)));

  // Policy order first: each client gets what it wants while budget remains; then the rest is
  // spread evenly so that idle clients can start without a round trip.
  std::vector<std::uint64_t> grants(order.size(), 0);
  std::uint64_t remaining = budget;
  for (std::size_t i = 0; i < order.size(); ++i) {
    Link& l = link(*order[i], ordinal);
    std::uint64_t want = std::min(demand(*order[i], l, ordinal), budget);
    grants[i] = std::min(want, remaining);
    remaining -= grants[i];
  }
  // Solo: the first waiting client in order has an operation larger than the whole budget. It
  // runs alone once nothing of any BE client occupies the device; until then nobody else gets
  // more, so that the device drains.
  std::size_t solo = order.size();
  bool solo_waiting = false;
  for (std::size_t i = 0; i < order.size(); ++i) {
    std::uint64_t next = next_operation(*order[i], link(*order[i], ordinal), ordinal);
    if (next == 0) continue;
    if (next > budget) {
      solo_waiting = true;
      std::uint64_t others = 0;
      for (std::size_t j = 0; j < order.size(); ++j) {
        if (j != i) others = sat_add(others, std::max(occupation(link(*order[j], ordinal)), grants[j]));
      }
      if (others == 0 && link(*order[i], ordinal).inflight_ns == 0) solo = i;
    }
    break;
  }
  // What nobody asked for is spread evenly, so that idle clients can start without a round trip.
  if (remaining > 0 && !order.empty() && !solo_waiting) {
    std::uint64_t share = remaining / order.size();
    for (auto& grant : grants) grant += share;
  }
  // A grant within what the client may already occupy changes nothing for the others; a larger
  // one needs room, in policy order. Lowering takes effect when the client acknowledges it.
  for (std::size_t i = 0; i < order.size(); ++i) {
    std::uint64_t occupied = finite_window(link(*order[i], ordinal));
    if (grants[i] > occupied) {
      std::uint64_t room = committed >= budget ? 0 : budget - committed;
      std::uint64_t raise = std::min(grants[i] - occupied, room);
      grants[i] = occupied + raise;
      committed += raise;
    }
  }
  for (std::size_t i = 0; i < order.size(); ++i) {
    bool is_solo = i == solo;
    send_grant(*order[i], link(*order[i], ordinal), ordinal, is_solo ? budget : grants[i], is_solo, dev.mode, where);
  }
}

void Scheduler::flush(std::uint64_t now) {
  for (auto& [ordinal, dev] : devices_) {
    if (!dev->dirty) continue;
    dev->dirty = false;
    allocate(*dev, now);
  }
}

// ---- decisions ---------------------------------------------------------------------------------

protocol::DecisionMsg Scheduler::base_decision(Client& client, int ordinal, Class cls, GateMode mode) {
  protocol::DecisionMsg decision{};
  decision.type = static_cast<std::uint16_t>(protocol::MsgType::decision);
  decision.device = static_cast<std::int16_t>(ordinal);
  decision.cls = cls;
  decision.mode = mode;
  decision.route = protocol::Route::full;
  decision.decision_seq = ++client.decision_seq;
  decision.grant_ns = kUnlimited;
  decision.copy_chunk_bytes = cls == Class::be ? params_.copy_chunk_bytes : 0;
  decision.default_prediction_ns = params_.default_prediction_ns;
  decision.marker_ns = kOpenMarkerNs;
  return decision;
}

void Scheduler::send_rt_decision(Client& client) {
  protocol::DecisionMsg decision = base_decision(client, protocol::kAllDevices, Class::rt, GateMode::open);
  ++counters_.decisions;
  output_.send_decision(client.id, decision);
}

void Scheduler::send_default_decision(Client& client) {
  // Devices sluiced does not serve are never gated; devices it will serve but has not seen yet
  // start as an open device would.
  std::uint64_t grant = served_devices_.empty() ? params_.idle_budget_ns : kUnlimited;
  send_grant(client, client.defaults, protocol::kAllDevices, grant, false, GateMode::open, Placement{});
}

void Scheduler::send_grant(Client& client, Link& l, int ordinal, std::uint64_t grant, bool solo, GateMode mode,
                           Placement where) {
  if (l.sent && l.grant_ns == grant && l.solo == solo && l.mode == mode && l.route == where.route &&
      l.partition_sms == where.partition_sms && l.kill_epoch_sent == l.kill_epoch) {
    return;
  }
  protocol::DecisionMsg decision = base_decision(client, ordinal, Class::be, mode);
  decision.grant_ns = grant;
  decision.solo = solo ? 1 : 0;
  decision.route = where.route;
  decision.partition_sms = where.partition_sms;
  decision.kill_epoch = l.kill_epoch;
  l.route = where.route;
  l.partition_sms = where.partition_sms;
  l.kill_epoch_sent = l.kill_epoch;
  decision.marker_ns = grant == kUnlimited ? kOpenMarkerNs : std::max<std::uint64_t>(grant / 4, 10'000);
  l.sent = true;
  l.grant_ns = grant;
  l.solo = solo;
  l.mode = mode;
  l.unacked.push_back({decision.decision_seq, solo ? std::max(grant, params_.be_budget_ns) : grant});
  constexpr std::size_t kMaxUnacked = 1024;  // a client that never acknowledges keeps the maximum
  if (l.unacked.size() > kMaxUnacked) {
    std::uint64_t largest = std::max(l.acked_reserve, l.unacked.front().reserve);
    l.unacked.pop_front();
    l.acked_reserve = largest;
  }
  ++counters_.decisions;
  output_.send_decision(client.id, decision);
}

// ---- predictions -------------------------------------------------------------------------------

void Scheduler::publish_for(Client& client, std::uint64_t identity, std::uint64_t work) {
  std::uint32_t bucket = protocol::size_bucket(work);
  auto& buckets = client.published[identity];
  if (std::find(buckets.begin(), buckets.end(), bucket) != buckets.end()) return;
  constexpr std::size_t kMaxBucketsPerIdentity = 40;
  if (buckets.size() >= kMaxBucketsPerIdentity) return;
  buckets.push_back(bucket);
  if (auto predicted = model_.predict(identity, work)) {
    output_.publish_prediction(client.id, protocol::prediction_key(identity, bucket), *predicted);
    output_.publish_prediction(client.id, protocol::prediction_key(identity, protocol::kAnyBucket),
                               model_.largest_mean(identity));
    counters_.predictions += 2;
  }
}

void Scheduler::publish_identity(std::uint64_t identity) {
  std::uint64_t largest = model_.largest_mean(identity);
  for (auto& [id, client] : clients_) {
    auto it = client->published.find(identity);
    if (it == client->published.end()) continue;
    for (std::uint32_t bucket : it->second) {
      auto predicted = model_.predict(identity, std::uint64_t{1} << bucket);
      if (!predicted) continue;
      output_.publish_prediction(id, protocol::prediction_key(identity, bucket), *predicted);
      ++counters_.predictions;
    }
    output_.publish_prediction(id, protocol::prediction_key(identity, protocol::kAnyBucket), largest);
    ++counters_.predictions;
  }
}

// ---- timers ------------------------------------------------------------------------------------

void Scheduler::update_shares(std::uint64_t now) {
  std::uint64_t total = 0;
  std::vector<std::pair<Client*, std::uint64_t>> used;
  for (auto& [id, client] : clients_) {
    std::uint64_t completed = client->completed_total();
    std::uint64_t delta = completed >= client->share_mark_ns ? completed - client->share_mark_ns : 0;
    client->share_mark_ns = completed;
    used.emplace_back(client.get(), delta);
    total = sat_add(total, delta);
  }
  for (auto& [client, delta] : used) {
    double window_share = total == 0 ? 0.0 : static_cast<double>(delta) / static_cast<double>(total);
    client->gpu_share = 0.5 * client->gpu_share + 0.5 * window_share;
  }
  next_share_ns_ = now + kShareWindowNs;
}

void Scheduler::tick(std::uint64_t now) {
  if (now >= next_share_ns_) update_shares(now);
  for (auto& [ordinal, dev] : devices_) update_mode(*dev, now);
  flush(now);
}

std::uint64_t Scheduler::next_tick(std::uint64_t now) const {
  std::uint64_t next = std::max(next_share_ns_, now);
  for (const auto& [ordinal, dev] : devices_) {
    // A device held shut by the hold-off reopens when it ends (now, if it already has).
    if (dev->mode == GateMode::shut && !dev->rt_active) {
      next = std::min(next, dev->rt_idle_since_ns + params_.holdoff_ns);
    }
  }
  for (const auto& [id, client] : clients_) {
    if (!client->rt()) continue;
    for (const auto& [ordinal, l] : client->links) {
      if (rt_busy(l, now)) next = std::min(next, l.last_message_ns + kRtStaleNs);
    }
  }
  return next;
}

// ---- views -------------------------------------------------------------------------------------

bool Scheduler::has_rt_clients() const {
  return std::any_of(clients_.begin(), clients_.end(), [](const auto& entry) { return entry.second->rt(); });
}

bool Scheduler::is_rt(ClientId id) const {
  const Client* client = find(id);
  return client != nullptr && client->rt();
}

std::string Scheduler::kernel_name(std::uint64_t kernel_id) const {
  auto it = names_.find(kernel_id);
  return it == names_.end() ? fmt::format("kernel {:#x}", kernel_id) : it->second;
}

std::vector<ClientView> Scheduler::clients(std::uint64_t now) const {
  // RT order: priority, then the earliest absolute deadline (activity start + deadline hint).
  std::vector<const Client*> rt;
  for (const auto& [id, client] : clients_) {
    if (client->rt()) rt.push_back(client.get());
  }
  auto deadline = [&](const Client* c) {
    std::uint64_t start = std::numeric_limits<std::uint64_t>::max();
    for (const auto& [ordinal, l] : c->links) {
      if (rt_busy(l, now)) start = std::min(start, l.busy_since_ns);
    }
    if (c->assignment.params.deadline_us == 0 || start == std::numeric_limits<std::uint64_t>::max()) {
      return std::numeric_limits<std::uint64_t>::max();
    }
    return start + c->assignment.params.deadline_us * 1000;
  };
  std::stable_sort(rt.begin(), rt.end(), [&](const Client* a, const Client* b) {
    if (a->assignment.params.priority != b->assignment.params.priority) {
      return a->assignment.params.priority > b->assignment.params.priority;
    }
    return deadline(a) < deadline(b);
  });

  std::vector<ClientView> views;
  for (const auto& [id, client] : clients_) {
    ClientView view;
    view.id = id;
    view.identity = client->identity;
    view.assignment = client->assignment;
    view.overridden = client->overridden;
    view.connected_ns = now - client->connected_ns;
    view.messages = client->messages;
    view.invalid_messages = client->invalid_messages;
    view.gpu_share = client->gpu_share;
    view.completed_ns = client->completed_total();
    view.grant_ns = client->rt() ? kUnlimited : client->defaults.grant_ns;
    bool first_link = true;
    for (const auto& [ordinal, l] : client->links) {
      view.held_ops += l.held_ops;
      view.inflight_ns = sat_add(view.inflight_ns, l.inflight_ns);
      view.rt_busy = view.rt_busy || (client->rt() && rt_busy(l, now));
      if (!client->rt() && l.sent && served(ordinal)) {
        view.grant_ns = first_link ? l.grant_ns : std::min(view.grant_ns, l.grant_ns);
        view.solo = view.solo || l.solo;
        first_link = false;
      }
    }
    if (client->rt()) {
      view.rt_rank = static_cast<int>(std::find(rt.begin(), rt.end(), client.get()) - rt.begin()) + 1;
    } else {
      view.kills = client->kills;
      for (const auto& [ordinal, l] : client->links) {
        view.kill_epoch = std::max(view.kill_epoch, l.kill_epoch);
        view.partitioned = view.partitioned || (l.sent && l.route == protocol::Route::partition);
      }
    }
    views.push_back(std::move(view));
  }
  return views;
}

std::vector<DeviceView> Scheduler::devices(std::uint64_t now) const {
  std::vector<DeviceView> views;
  for (const auto& [ordinal, dev] : devices_) {
    DeviceView view;
    view.device = ordinal;
    view.mode = dev->mode;
    view.rt_active = dev->rt_active;
    view.budget_ns = dev->mode == GateMode::shut ? params_.be_budget_ns : params_.idle_budget_ns;
    view.rt_idle_ns = dev->rt_active || !dev->ever_active ? 0 : now - dev->rt_idle_since_ns;
    view.route = dev->route;
    view.sm_count = dev->sm_count;
    view.sms_used = device_sms(*dev);
    view.cc_major = dev->cc_major;
    view.cc_minor = dev->cc_minor;
    view.reserve_sms = dev->reserve_sms;
    view.partition_sms = dev->partition_sms;
    view.kill_epoch = dev->kill_epoch;
    view.kills = dev->kills;
    for (const auto& [id, client] : clients_) {
      auto it = client->links.find(ordinal);
      if (it == client->links.end()) continue;
      if (client->rt()) {
        view.rt_busy_clients += rt_busy(it->second, now) ? 1 : 0;
      } else {
        view.be_inflight_ns = sat_add(view.be_inflight_ns, it->second.inflight_ns);
        view.be_committed_ns = sat_add(view.be_committed_ns, occupation(it->second));
        view.be_waiting_clients += it->second.held_ops > 0 ? 1 : 0;
      }
    }
    views.push_back(view);
  }
  return views;
}

std::vector<QueueView> Scheduler::queue(std::uint64_t now, std::size_t limit) const {
  std::vector<QueueView> views;
  for (const auto& [id, client] : clients_) {
    for (const auto& [seq, op] : client->pending) {
      QueueView view;
      view.client = id;
      view.pid = client->identity.pid;
      view.exe = client->identity.exe;
      view.seq = seq;
      view.device = op.device;
      view.kind = op.kind;
      view.name = op.kind == OpKind::kernel ? kernel_name(op.kernel_id) : protocol::op_kind_name(op.kind);
      std::copy(std::begin(op.grid), std::end(op.grid), view.grid);
      std::copy(std::begin(op.block), std::end(op.block), view.block);
      view.bytes = op.bytes;
      view.predicted_ns = predict(op);
      view.waiting_ns = now > op.call_ns ? now - op.call_ns : 0;
      view.stream = op.stream;
      views.push_back(std::move(view));
    }
  }
  std::sort(views.begin(), views.end(), [](const QueueView& a, const QueueView& b) {
    return a.waiting_ns != b.waiting_ns ? a.waiting_ns > b.waiting_ns : a.seq < b.seq;
  });
  if (views.size() > limit) views.resize(limit);
  return views;
}

}  // namespace sluice::sched
