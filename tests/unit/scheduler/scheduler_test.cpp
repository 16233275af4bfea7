// The scheduling core, driven by messages and a fake clock: gating while RT is active, hold-off,
// budget safety while decisions are unacknowledged, solo grants, the four sharing policies,
// client death, stale RT clients, predictions and views.
#include <gtest/gtest.h>

#include <iostream>
#include <map>
#include <random>
#include <vector>

#include "scheduler_fixture.h"
#include "sluice/scheduler/scheduler.h"

namespace sluice::sched {
namespace {

using namespace testing_support;  // NOLINT(google-build-using-namespace): the fixture
using protocol::kAllDevices;
using protocol::kUnlimited;

TEST_F(SchedulerTest, BestEffortAloneIsOpenAndUnlimited) {
  connect(1, Class::be);
  EXPECT_EQ(out_.of(1, kAllDevices).grant_ns, kUnlimited) << "devices sluiced does not serve";
  EXPECT_EQ(out_.of(1, kAllDevices).cls, Class::be);
  EXPECT_EQ(out_.of(1, kAllDevices).copy_chunk_bytes, 8u << 20);
  EXPECT_EQ(grant(1), kUnlimited);
  EXPECT_EQ(mode(1), GateMode::open);
}

TEST_F(SchedulerTest, RealTimeClientsAdmitEverythingAndDoNotSplitCopies) {
  connect(1, Class::rt);
  const auto& decision = out_.of(1, kAllDevices);
  EXPECT_EQ(decision.cls, Class::rt);
  EXPECT_EQ(decision.grant_ns, kUnlimited);
  EXPECT_EQ(decision.copy_chunk_bytes, 0u);
  EXPECT_EQ(out_.last.count({1, 0}), 0u) << "no per-device gate for RT";
}

TEST_F(SchedulerTest, RtActivityShutsBestEffortToTheBudget) {
  connect(1, Class::be);
  connect(2, Class::be);
  connect(3, Class::rt);
  status(1, 0, 0, false);
  status(2, 0, 0, false);
  EXPECT_EQ(grant(1), kUnlimited);

  rt_launch(3, 1);
  EXPECT_EQ(mode(1), GateMode::shut);
  EXPECT_LE(grant(1), params_.be_budget_ns) << "lowered at once";
  EXPECT_EQ(sched_->devices(now_)[0].be_committed_ns, kUnlimited)
      << "but the unlimited grants count until the clients acknowledge the new ones";
  hold(2, 1, 150 * kUs);
  status(1, 0, 0, false);
  EXPECT_EQ(sched_->devices(now_)[0].be_committed_ns, kUnlimited) << "client 2 has not acknowledged";
  status(2, 0, 0, false, 0, 1);
  EXPECT_EQ(grant(2), 150 * kUs + 25 * kUs) << "its demand plus half of what is left";
  EXPECT_LE(sched_->devices(now_)[0].be_committed_ns, params_.be_budget_ns);
  ASSERT_EQ(sched_->devices(now_).size(), 1u);
  EXPECT_TRUE(sched_->devices(now_)[0].rt_active);
}

TEST_F(SchedulerTest, ReopensOnlyAfterTheHoldOff) {
  connect(1, Class::be);
  connect(2, Class::rt);
  rt_launch(2, 1);
  rt_launch(2, 2);
  ASSERT_EQ(mode(1), GateMode::shut);
  status(2, 0, 1, false);  // retired only seq 1: seq 2 is still in flight
  EXPECT_EQ(mode(1), GateMode::shut);
  EXPECT_TRUE(sched_->devices(now_)[0].rt_active);
  status(2, 0, 2, false);
  EXPECT_FALSE(sched_->devices(now_)[0].rt_active);
  advance(params_.holdoff_ns - 1);
  EXPECT_EQ(mode(1), GateMode::shut);
  EXPECT_EQ(sched_->next_tick(now_), now_ + 1);
  now_ += 5;  // the loop woke late: the tick is due now
  EXPECT_LE(sched_->next_tick(now_), now_);
  sched_->tick(now_);
  EXPECT_EQ(mode(1), GateMode::open);
  EXPECT_EQ(grant(1), kUnlimited);
}

TEST_F(SchedulerTest, NewRtLaunchDuringHoldOffKeepsTheGateShut) {
  connect(1, Class::be);
  connect(2, Class::rt);
  rt_launch(2, 1);
  status(2, 0, 1, false);
  advance(params_.holdoff_ns / 2);
  rt_launch(2, 2);
  status(2, 0, 2, false);
  advance(params_.holdoff_ns / 2 + 1);
  EXPECT_EQ(mode(1), GateMode::shut) << "the hold-off restarts when RT goes idle again";
  advance(params_.holdoff_ns);
  EXPECT_EQ(mode(1), GateMode::open);
}

TEST_F(SchedulerTest, BusyFlagKeepsRtActive) {
  connect(1, Class::be);
  connect(2, Class::rt);
  rt_launch(2, 1);
  status(2, 10 * kUs, 1, true);  // everything retired, but the client still has work held
  EXPECT_TRUE(sched_->devices(now_)[0].rt_active);
}

TEST_F(SchedulerTest, SilentBusyRtClientIsTakenAsIdle) {
  connect(1, Class::be);
  connect(2, Class::rt);
  rt_launch(2, 1);
  EXPECT_LE(sched_->next_tick(now_), now_ + kRtStaleNs);
  advance(kRtStaleNs);
  EXPECT_FALSE(sched_->devices(now_)[0].rt_active);
  advance(params_.holdoff_ns);
  EXPECT_EQ(mode(1), GateMode::open);
}

TEST_F(SchedulerTest, SumOfGrantsNeverExceedsTheBudgetUnderAnyMessageOrder) {
  // Two BE clients with demand, acknowledgements that arrive late or not at all, RT toggling.
  std::mt19937 rng(7);
  connect(1, Class::be);
  connect(2, Class::be);
  connect(3, Class::rt);
  std::map<ClientId, std::uint64_t> acked{{1, 0}, {2, 0}};
  std::map<ClientId, std::uint64_t> inflight{{1, 0}, {2, 0}};
  std::uint64_t rt_seq = 0, be_seq = 0;
  int checked = 0;
  for (int step = 0; step < 3000; ++step) {
    switch (rng() % 5) {
      case 0: rt_launch(3, ++rt_seq); break;
      case 1: status(3, 0, rt_seq, false); break;
      case 2: hold(1 + rng() % 2, ++be_seq, (1 + rng() % 120) * kUs); break;
      case 3: {
        ClientId id = 1 + rng() % 2;
        // The client follows the newest decision it has seen: its in-flight stays within it.
        const auto& d = out_.of(id, 0);
        acked[id] = d.decision_seq;
        std::uint64_t cap = d.grant_ns == kUnlimited ? 2 * params_.be_budget_ns : d.grant_ns;
        if (d.solo) cap = params_.be_budget_ns;
        inflight[id] = rng() % (cap + 1);
        protocol::StatusMsg msg{};
        msg.type = static_cast<std::uint16_t>(protocol::MsgType::status);
        msg.applied_decision = acked[id];
        msg.inflight_ns = inflight[id];
        msg.held_ops = 1;
        send(id, msg);
        break;
      }
      default: advance((rng() % 20) * kMs); break;
    }
    // Invariant: a client may follow any decision from the newest it acknowledged to the newest
    // sent. Whatever each one follows, their grants together stay within the budget (once the
    // unlimited grants of the open gate are out of the window).
    std::uint64_t worst = 0;
    bool unlimited_in_window = false;
    for (ClientId id : {1u, 2u}) {
      const auto& sent = out_.history[{id, 0}];
      std::size_t first = 0;
      for (std::size_t i = 0; i < sent.size(); ++i) {
        if (sent[i].decision_seq <= acked[id]) first = i;
      }
      std::uint64_t largest = inflight[id];
      for (std::size_t i = first; i < sent.size(); ++i) {
        if (sent[i].grant_ns == kUnlimited) unlimited_in_window = true;
        largest = std::max(largest, sent[i].solo ? params_.be_budget_ns : sent[i].grant_ns);
      }
      worst += largest;
    }
    if (!unlimited_in_window) {
      if (worst > params_.be_budget_ns) {
        for (ClientId id : {1u, 2u}) {
          std::cerr << "client " << id << " acked " << acked[id] << " inflight " << inflight[id] << ":";
          for (const auto& d : out_.history[{id, 0}]) std::cerr << " [" << d.decision_seq << " " << d.grant_ns << (d.solo ? " solo" : "") << (d.mode == GateMode::shut ? " shut" : " open") << "]";
          std::cerr << "\n";
        }
      }
      ASSERT_LE(worst, params_.be_budget_ns) << "step " << step;
      ++checked;
    }
  }
  EXPECT_GT(checked, 1000) << "the invariant was rarely in scope";
}

TEST_F(SchedulerTest, OversizedOperationRunsSoloWhenNothingElseIsInFlight) {
  connect(1, Class::be);
  connect(2, Class::be);
  connect(3, Class::rt);
  rt_launch(3, 1);
  status(1, 100 * kUs, 0, false, 0, 1);  // client 1 has work in flight
  status(2, 0, 0, false, 0, 1);
  hold(2, 1, 2 * kMs);                    // larger than the 200 us budget
  EXPECT_FALSE(out_.of(2, 0).solo) << "client 1 still occupies the device";
  status(1, 0, 0, false);                 // client 1 drained and has nothing held
  EXPECT_FALSE(out_.of(2, 0).solo) << "client 1 may still use the grant it acknowledged";
  EXPECT_EQ(grant(1), 0u) << "so it is withdrawn while a solo operation waits";
  status(1, 0, 0, false);                 // ... and client 1 acknowledges that
  EXPECT_TRUE(out_.of(2, 0).solo);
  EXPECT_EQ(grant(1), 0u) << "nothing for others while the solo grant may be in use";
  status(2, 0, 0, false, 0, 1);
  hold(1, 2, 10 * kUs);
  EXPECT_EQ(grant(1), 0u);
}

// Sharing policies: who gets the budget first when both want all of it.
class SharingTest : public SchedulerTest {
 protected:
  void both_want_everything(Sharing sharing, ClassParams a, ClassParams b, std::uint64_t completed_a,
                            std::uint64_t completed_b) {
    SchedulerParams params;
    params.sharing = sharing;
    make(params);
    connect(1, Class::be, a);
    connect(2, Class::be, b);
    connect(3, Class::rt);
    rt_launch(3, 1);
    status(1, 0, 0, false, completed_a, 1);
    status(2, 0, 0, false, completed_b, 1);
    hold(1, 10, 150 * kUs);
    advance(kUs);
    hold(2, 10, 150 * kUs);
    status(1, 0, 0, false, completed_a, 1);
    status(2, 0, 0, false, completed_b, 1);
  }
};

TEST_F(SharingTest, FairFavoursTheClientThatUsedLessGpuTime) {
  both_want_everything(Sharing::fair, {}, {}, 50 * kMs, 0);
  EXPECT_EQ(grant(2), 150 * kUs);
  EXPECT_EQ(grant(1), 50 * kUs);
  both_want_everything(Sharing::fair, {}, {}, 0, 50 * kMs);
  EXPECT_EQ(grant(1), 150 * kUs);
}

TEST_F(SharingTest, FairHonoursWeights) {
  ClassParams heavy;
  heavy.weight = 10;
  both_want_everything(Sharing::fair, heavy, {}, 50 * kMs, 10 * kMs);
  EXPECT_EQ(grant(1), 150 * kUs) << "50 ms at weight 10 counts as 5 ms";
}

TEST_F(SharingTest, PriorityServesHigherLevelsFirst) {
  ClassParams low, high;
  low.priority = 1;
  high.priority = 4;
  both_want_everything(Sharing::priority, low, high, 0, 80 * kMs);
  EXPECT_EQ(grant(2), 150 * kUs);
  EXPECT_EQ(grant(1), 50 * kUs);
}

TEST_F(SharingTest, SrtfServesTheShortestRemainingJobFirst) {
  ClassParams long_job, short_job;
  long_job.job_length_ms = 60'000;
  short_job.job_length_ms = 1'000;
  both_want_everything(Sharing::srtf, long_job, short_job, 0, 900 * kMs);
  EXPECT_EQ(grant(2), 150 * kUs) << "100 ms left beats 60 s left";
  ClassParams no_hint;
  both_want_everything(Sharing::srtf, no_hint, short_job, 0, 0);
  EXPECT_EQ(grant(2), 150 * kUs) << "a client without a hint goes last";
}

TEST_F(SharingTest, FifoServesTheOldestWaitingOperationFirst) {
  both_want_everything(Sharing::fifo, {}, {}, 0, 0);
  EXPECT_EQ(grant(1), 150 * kUs) << "client 1 queued first";
}

TEST_F(SchedulerTest, ClientDeathReleasesItsBudgetAtOnce) {
  connect(1, Class::be);
  connect(2, Class::be);
  connect(3, Class::rt);
  rt_launch(3, 1);
  status(1, 200 * kUs, 0, false, 0, 5);
  status(2, 0, 0, false, 0, 1);
  hold(2, 1, 100 * kUs);
  EXPECT_EQ(grant(2), 0u);
  sched_->disconnect(1, now_);
  EXPECT_EQ(grant(2), params_.be_budget_ns) << "no timer involved";
}

TEST_F(SchedulerTest, RtDeathReopensAfterTheHoldOff) {
  connect(1, Class::be);
  connect(2, Class::rt);
  rt_launch(2, 1);
  sched_->disconnect(2, now_);
  EXPECT_EQ(mode(1), GateMode::shut);
  advance(params_.holdoff_ns);
  EXPECT_EQ(mode(1), GateMode::open);
}

TEST_F(SchedulerTest, ReassignToBestEffortCountsOldFreedomUntilAcknowledged) {
  connect(1, Class::rt);
  connect(2, Class::be);
  connect(3, Class::rt);
  rt_launch(3, 1);
  status(2, 0, 0, false, 0, 1);
  EXPECT_LE(sched_->devices(now_)[0].be_committed_ns, params_.be_budget_ns);
  sched_->reassign(1, Assignment{ClassParams{}, "set-class"}, true, now_);
  EXPECT_EQ(out_.of(1, kAllDevices).cls, Class::be);
  EXPECT_TRUE(sched_->clients(now_)[0].overridden);
  EXPECT_EQ(sched_->devices(now_)[0].be_committed_ns, kUnlimited)
      << "as an RT client it admitted everything, until it acknowledges a BE grant";
  status(1, 0, 0, false);
  EXPECT_LE(sched_->devices(now_)[0].be_committed_ns, params_.be_budget_ns);
}

TEST_F(SchedulerTest, UnservedDevicesAreNeverGated) {
  connect(1, Class::be);
  connect(2, Class::rt);
  protocol::OpMsg other = op(1, protocol::OpState::submitted);
  other.device = 1;
  send(2, other);
  EXPECT_FALSE(sched_->devices(now_)[0].rt_active);
  EXPECT_EQ(sched_->devices(now_).size(), 1u);
  EXPECT_EQ(out_.of(1, kAllDevices).grant_ns, kUnlimited);
}

TEST_F(SchedulerTest, AllDevicesModeLearnsDevicesFromTraffic) {
  make({}, {});
  connect(1, Class::be);
  connect(2, Class::rt);
  protocol::OpMsg launch = op(1, protocol::OpState::submitted);
  launch.device = 3;
  send(2, launch);
  ASSERT_EQ(sched_->devices(now_).size(), 1u);
  EXPECT_EQ(sched_->devices(now_)[0].device, 3);
  EXPECT_EQ(out_.of(1, 3).mode, GateMode::shut);
}

TEST_F(SchedulerTest, SamplesTeachTheModelAndReachClientsThatUseTheKernel) {
  connect(1, Class::be);
  connect(2, Class::be);
  hold(1, 1, 50 * kUs);  // client 1 uses kernel 0x77 with 8 blocks
  protocol::SampleMsg sample{};
  sample.type = static_cast<std::uint16_t>(protocol::MsgType::sample);
  sample.kind = OpKind::kernel;
  sample.kernel_id = 0x77;
  sample.work = 8;
  sample.duration_ns = 123 * kUs;
  send(2, sample);
  EXPECT_EQ(sched_->model().predict(0x77, 8), 123 * kUs);
  std::uint64_t key = protocol::prediction_key(0x77, protocol::size_bucket(8));
  using Key = std::pair<ClientId, std::uint64_t>;
  EXPECT_EQ(out_.predictions[Key(1, key)], 123 * kUs);
  EXPECT_EQ(out_.predictions[Key(1, protocol::prediction_key(0x77, protocol::kAnyBucket))], 123 * kUs);
  EXPECT_EQ(out_.predictions.count(Key(2, key)), 0u) << "client 2 never used the kernel";
  hold(2, 1, 0);
  EXPECT_EQ(out_.predictions[Key(2, key)], 123 * kUs) << "published when client 2 first uses it";
}

TEST_F(SchedulerTest, QueueShowsHeldWorkWithNamesAndPredictions) {
  connect(1, Class::be);
  protocol::KernelNameMsg name{};
  name.type = static_cast<std::uint16_t>(protocol::MsgType::kernel_name);
  name.kernel_id = 0x77;
  std::string text = "sluice_spin_kernel";
  name.total = static_cast<std::uint16_t>(text.size());
  name.length = 6;
  std::memcpy(name.text, text.data(), 6);
  send(1, name);
  name.offset = 6;
  name.length = static_cast<std::uint8_t>(text.size() - 6);
  std::memcpy(name.text, text.data() + 6, text.size() - 6);
  send(1, name);
  hold(1, 5, 70 * kUs);
  advance(3 * kMs);
  auto queue = sched_->queue(now_, 10);
  ASSERT_EQ(queue.size(), 1u);
  EXPECT_EQ(queue[0].name, text);
  EXPECT_EQ(queue[0].predicted_ns, 70 * kUs);
  EXPECT_EQ(queue[0].waiting_ns, 3 * kMs);
  EXPECT_EQ(queue[0].pid, 1001u);
  protocol::OpSubmittedMsg done{};
  done.type = static_cast<std::uint16_t>(protocol::MsgType::op_submitted);
  done.seq = 5;
  done.submit_ns = now_;
  send(1, done);
  EXPECT_TRUE(sched_->queue(now_, 10).empty());
}

TEST_F(SchedulerTest, SharesFollowReportedGpuTime) {
  connect(1, Class::be);
  connect(2, Class::be);
  advance(kShareWindowNs);
  status(1, 0, 0, false, 300 * kMs);
  status(2, 0, 0, false, 100 * kMs);
  advance(kShareWindowNs);
  auto views = sched_->clients(now_);
  ASSERT_EQ(views.size(), 2u);
  EXPECT_GT(views[0].gpu_share, views[1].gpu_share);
  EXPECT_NEAR(views[0].gpu_share + views[1].gpu_share, 0.5, 1e-9) << "EWMA of 0 and the window";
}

TEST_F(SchedulerTest, RtClientsAreRankedByPriorityThenDeadline) {
  ClassParams relaxed, urgent, important;
  relaxed.deadline_us = 10'000;
  urgent.deadline_us = 500;
  important.priority = 3;
  connect(1, Class::rt, relaxed);
  connect(2, Class::rt, urgent);
  connect(3, Class::rt, important);
  rt_launch(1, 1);
  rt_launch(2, 1);
  auto views = sched_->clients(now_);
  EXPECT_EQ(views[2].rt_rank, 1);
  EXPECT_EQ(views[1].rt_rank, 2);
  EXPECT_EQ(views[0].rt_rank, 3);
}

TEST_F(SchedulerTest, InvalidMessagesAreCountedPerClient) {
  connect(1, Class::be);
  sched_->note_invalid(1);
  sched_->note_invalid(1);
  EXPECT_EQ(sched_->counters().invalid_messages, 2u);
  EXPECT_EQ(sched_->clients(now_)[0].invalid_messages, 2u);
}

TEST_F(SchedulerTest, FiniteIdleBudgetAppliesWhileOpen) {
  SchedulerParams params;
  params.idle_budget_ns = 5 * kMs;
  make(params);
  connect(1, Class::be);
  status(1, 0, 0, false, 0, 1);
  hold(1, 1, 1 * kMs);
  EXPECT_EQ(mode(1), GateMode::open);
  EXPECT_EQ(grant(1), 5 * kMs);
}

TEST(DurationModel, LearnsPerBucketAndPredictsConservatively) {
  DurationModel model;
  EXPECT_FALSE(model.predict(1, 100));
  for (int i = 0; i < 20; ++i) model.observe(1, 128, 1000);
  EXPECT_EQ(model.predict(1, 128), 1000u);
  EXPECT_EQ(model.predict(1, 200), 1000u) << "same bucket";
  EXPECT_EQ(model.predict(1, 512), 4000u) << "larger sizes scale up";
  EXPECT_EQ(model.predict(1, 4), 1000u) << "smaller sizes never predict shorter";
  for (int i = 0; i < 40; ++i) model.observe(1, 128, 3000);
  EXPECT_NEAR(static_cast<double>(*model.predict(1, 128)), 3000, 10) << "follows a change";
  model.observe(1, 1 << 20, 90000);
  EXPECT_EQ(model.largest_mean(1), 90000u);
  EXPECT_EQ(model.samples(1), 61u);
  EXPECT_EQ(model.bucket_mean(1, 20), 90000u);
}

}  // namespace
}  // namespace sluice::sched
