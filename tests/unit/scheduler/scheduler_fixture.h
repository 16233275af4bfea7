// The scheduling core's test fixture: a Scheduler over a recording output, a fake clock, and
// helpers that send the messages clients send.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sluice/scheduler/scheduler.h"

namespace sluice::sched::testing_support {

using protocol::kAllDevices;
using protocol::kUnlimited;

constexpr std::uint64_t kUs = 1000;
constexpr std::uint64_t kMs = 1000 * kUs;

class RecordingOutput final : public SchedulerOutput {
 public:
  void send_decision(ClientId client, const protocol::DecisionMsg& decision) override {
    last[{client, decision.device}] = decision;
    history[{client, decision.device}].push_back(decision);
    latest_seq[client] = decision.decision_seq;
    ++sent;
  }
  void publish_prediction(ClientId client, std::uint64_t key, std::uint64_t value_ns) override {
    predictions[{client, key}] = value_ns;
  }
  void write_kill_word(ClientId client, int device, std::uint32_t value) override {
    kill_words.push_back({client, device, value});
  }
  struct KillWordWrite {
    ClientId client;
    int device;
    std::uint32_t value;
    bool operator==(const KillWordWrite&) const = default;
  };
  std::vector<KillWordWrite> kill_words;

  const protocol::DecisionMsg& of(ClientId client, int device) { return last.at({client, device}); }

  std::map<std::pair<ClientId, int>, protocol::DecisionMsg> last;
  std::map<std::pair<ClientId, int>, std::vector<protocol::DecisionMsg>> history;
  std::map<ClientId, std::uint64_t> latest_seq;
  std::map<std::pair<ClientId, std::uint64_t>, std::uint64_t> predictions;
  int sent = 0;
};

class SchedulerTest : public testing::Test {
 protected:
  SchedulerTest() { make({}); }

  void make(SchedulerParams params, std::vector<int> served = {0}) {
    params_ = params;
    out_ = RecordingOutput();
    sched_ = std::make_unique<Scheduler>(params, std::move(served), out_);
  }

  void connect(ClientId id, Class cls, ClassParams params = {}) {
    ClientIdentity identity;
    identity.pid = 1000 + id;
    identity.exe = "client" + std::to_string(id);
    params.cls = cls;
    sched_->connect(id, identity, Assignment{params, "test"}, now_);
  }

  protocol::OpMsg op(std::uint64_t seq, protocol::OpState state, std::uint64_t predicted = 50 * kUs,
                     std::uint64_t kernel_id = 0x77) {
    protocol::OpMsg msg{};
    msg.type = static_cast<std::uint16_t>(protocol::MsgType::op);
    msg.kind = OpKind::kernel;
    msg.state = state;
    msg.device = 0;
    msg.seq = seq;
    msg.stream = 0x10;
    msg.kernel_id = kernel_id;
    msg.grid[0] = 8;
    msg.grid[1] = msg.grid[2] = 1;
    msg.block[0] = 256;
    msg.block[1] = msg.block[2] = 1;
    msg.call_ns = now_;
    msg.submit_ns = state == protocol::OpState::submitted ? now_ : 0;
    msg.predicted_ns = predicted;
    return msg;
  }

  void send(ClientId id, const protocol::ClientMessage& message) {
    sched_->handle(id, message, now_);
    sched_->flush(now_);
  }

  void rt_launch(ClientId id, std::uint64_t seq) {
    send(id, op(seq, protocol::OpState::submitted));
  }
  void hold(ClientId id, std::uint64_t seq, std::uint64_t predicted) {
    send(id, op(seq, protocol::OpState::held, predicted));
  }

  // A status as the client's thread sends it: acknowledges the newest decision it received.
  void status(ClientId id, std::uint64_t inflight, std::uint64_t retired_seq, bool busy,
              std::uint64_t completed = 0, std::uint64_t held = 0, bool ack = true) {
    protocol::StatusMsg msg{};
    msg.type = static_cast<std::uint16_t>(protocol::MsgType::status);
    msg.device = 0;
    msg.flags = busy ? protocol::kStatusBusy : 0;
    msg.applied_decision = ack ? out_.latest_seq[id] : 0;
    msg.inflight_ns = inflight;
    msg.retired_seq = retired_seq;
    msg.completed_ns = completed;
    msg.held_ops = held;
    send(id, msg);
  }

  void advance(std::uint64_t ns) {
    now_ += ns;
    sched_->tick(now_);
  }

  std::uint64_t grant(ClientId id) { return out_.of(id, 0).grant_ns; }
  GateMode mode(ClientId id) { return out_.of(id, 0).mode; }

  SchedulerParams params_;
  RecordingOutput out_;
  std::unique_ptr<Scheduler> sched_;
  std::uint64_t now_ = 1'000'000'000;
};

}  // namespace sluice::sched::testing_support
