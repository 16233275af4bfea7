// mps mode's SM partitions and the kill epoch, driven by messages and a fake clock: the reserve
// chosen from RT demand, the route sequence (RT arrives -> partition, RT idle after the hold-off ->
// full), timeslice mode never partitioning, and kills ordered when RT arrives behind BE work.
#include <gtest/gtest.h>

#include "scheduler_fixture.h"
#include "sluice/scheduler/scheduler.h"

namespace sluice::sched {
namespace {

using namespace testing_support;  // NOLINT(google-build-using-namespace): the fixture
using protocol::Route;

// ---- the reserve
// ---------------------------------------------------------------------------------

TEST(Reserve, SmDemandIsBlocksBoundedByTheDevice) {
  const std::uint32_t small[3] = {3, 2, 1}, large[3] = {1000, 4, 1};
  EXPECT_EQ(sm_demand(small, 132), 6u);
  EXPECT_EQ(sm_demand(large, 132), 132u);
}

TEST(Reserve, FixedReserveIsRoundedToTheGranularityAndLeavesBestEffortEightSms) {
  EXPECT_EQ(choose_reserve_sms(132, {}, 16), 16u);
  EXPECT_EQ(choose_reserve_sms(132, {100, 100}, 24), 24u) << "a fixed reserve ignores demand";
  EXPECT_EQ(choose_reserve_sms(132, {}, 200), 124u) << "BE keeps 8 SMs";
  EXPECT_EQ(choose_reserve_sms(8, {}, 8), 0u) << "a device under 16 SMs is never split";
}

TEST(Reserve, AutomaticReserveCoversTheNinetiethPercentileOfRtDemand) {
  EXPECT_EQ(choose_reserve_sms(132, {}, 0), 8u) << "no kernel seen yet: one granule";
  EXPECT_EQ(choose_reserve_sms(132, {1, 2, 3}, 0), 8u) << "minimum 8";
  std::vector<std::uint32_t> demand(100, 4);
  for (int i = 0; i < 10; ++i) demand[static_cast<std::size_t>(i)] = 20;
  EXPECT_EQ(choose_reserve_sms(132, demand, 0), 8u) << "10% outliers fall above p90";
  demand[10] = 20;
  EXPECT_EQ(choose_reserve_sms(132, demand, 0), 24u)
      << "11% at 20 SMs: p90 is 20, rounded up to 24";
  EXPECT_EQ(choose_reserve_sms(132, std::vector<std::uint32_t>(10, 5000), 0), 124u) << "clamped";
  EXPECT_EQ(choose_reserve_sms(132, std::vector<std::uint32_t>(10, 5000), 0, 16), 16u) << "capped";
  EXPECT_EQ(choose_reserve_sms(132, {100, 100}, 24, 16), 24u) << "a fixed reserve is not capped";
}

TEST(Reserve, PartitionIsWhatRemainsRoundedDownToTheGranularity) {
  EXPECT_EQ(partition_for_reserve(132, 16), 112u) << "132 - 16 = 116, split in groups of 8";
  EXPECT_EQ(partition_for_reserve(128, 16), 112u);
  EXPECT_EQ(partition_for_reserve(132, 0), 0u);
  EXPECT_EQ(partition_for_reserve(16, 8), 8u);
}

// ---- routes
// --------------------------------------------------------------------------------------

class RouteTest : public SchedulerTest {
 protected:
  void use_mps(SchedulerParams params = {}) {
    make(params);
    sched_->set_sharing_mode(protocol::SharingMode::mps, now_);
  }

  void rt_kernel(ClientId id, std::uint64_t seq, std::uint32_t blocks) {
    protocol::OpMsg msg = op(seq, protocol::OpState::submitted);
    msg.grid[0] = blocks;
    send(id, msg);
  }

  void describe_device(ClientId id, std::uint32_t sms) {
    protocol::StatusMsg msg{};
    msg.type = static_cast<std::uint16_t>(protocol::MsgType::status);
    msg.device = 0;
    msg.applied_decision = out_.latest_seq[id];
    msg.sm_count = sms;
    msg.cc_major = 9;
    send(id, msg);
  }

  // BE client 1 and RT client 2 in mps mode; RT launches 12 blocks and the gate shuts.
  void rt_arrives_in_mps_mode(const SchedulerParams& params) {
    use_mps(params);
    connect(1, Class::be);
    connect(2, Class::rt);
    rt_kernel(2, 1, 12);
    ASSERT_EQ(mode(1), GateMode::shut);
  }

  Route route(ClientId id) { return out_.of(id, 0).route; }
  std::uint32_t partition(ClientId id) { return out_.of(id, 0).partition_sms; }
  DeviceView device0() { return sched_->devices(now_).at(0); }
};

TEST_F(RouteTest, RtArrivalPartitionsBestEffortAndRtIdleAfterTheHoldOffRestoresTheFullGpu) {
  use_mps();
  connect(1, Class::be);
  connect(2, Class::rt);
  EXPECT_EQ(route(1), Route::full);

  rt_kernel(2, 1, 12);  // 12 blocks: 12 SMs, reserve 16
  EXPECT_EQ(mode(1), GateMode::shut);
  EXPECT_EQ(route(1), Route::partition);
  EXPECT_EQ(partition(1), 112u) << "132 SMs assumed, 16 reserved, rounded down to 112";
  EXPECT_EQ(device0().reserve_sms, 20u);

  status(2, 0, 1, false);  // RT idle: the hold-off keeps the partition
  EXPECT_EQ(route(1), Route::partition);
  advance(params_.holdoff_ns);
  EXPECT_EQ(mode(1), GateMode::open);
  EXPECT_EQ(route(1), Route::full);
  EXPECT_EQ(partition(1), 0u);
  EXPECT_EQ(device0().route, Route::full);
  EXPECT_EQ(device0().reserve_sms, 0u);
}

TEST_F(RouteTest, ReportedSmCountSizesThePartition) {
  use_mps();
  connect(1, Class::be);
  connect(2, Class::rt);
  describe_device(1, 78);
  rt_kernel(2, 1, 4);
  EXPECT_EQ(partition(1), 64u) << "78 SMs, reserve 8: 70, rounded down to 64";
  EXPECT_EQ(device0().sm_count, 78u);
  EXPECT_EQ(device0().cc_major, 9u);
}

TEST_F(RouteTest, PolicyReserveOverridesDemand) {
  SchedulerParams params;
  params.reserve_sms = 32;
  use_mps(params);
  connect(1, Class::be);
  connect(2, Class::rt);
  rt_kernel(2, 1, 132);
  EXPECT_EQ(partition(1), 96u);
}

TEST_F(RouteTest, ReserveFollowsTheRecentRtDemand) {
  SchedulerParams params;
  params.max_reserve_sms = 0;
  use_mps(params);
  connect(1, Class::be);
  connect(2, Class::rt);
  for (std::uint64_t seq = 1; seq <= 20; ++seq) rt_kernel(2, seq, 40);
  status(1, 0, 0, false);  // any BE status re-evaluates the device
  EXPECT_EQ(partition(1), 88u) << "40 SMs reserved: 92, rounded down to 88";
}

TEST_F(RouteTest, PartitionSwitchedOffKeepsBestEffortOnTheFullGpuButGated) {
  SchedulerParams params;
  params.partition = false;
  rt_arrives_in_mps_mode(params);
  EXPECT_EQ(route(1), Route::full);
  EXPECT_LE(out_.of(1, 0).grant_ns, params.be_budget_ns);
}

TEST_F(RouteTest, PartitionedBestEffortIsHeldOnlyToThePartitionedBudget) {
  SchedulerParams params;
  params.partitioned_be_budget_ns = 3'000'000;
  rt_arrives_in_mps_mode(params);
  EXPECT_EQ(route(1), Route::partition);
  EXPECT_LE(out_.of(1, 0).grant_ns, params.partitioned_be_budget_ns);
  EXPECT_GT(out_.of(1, 0).grant_ns, params.be_budget_ns) << "the partition's budget, not the full GPU's";
}

TEST_F(RouteTest, GateSwitchedOffPartitionsWithoutHoldingBestEffort) {
  SchedulerParams params;
  params.gate = false;
  params.partitioned_be_budget_ns = 3'000'000;
  rt_arrives_in_mps_mode(params);
  EXPECT_EQ(route(1), Route::partition);
  EXPECT_EQ(out_.of(1, 0).grant_ns, protocol::kUnlimited);
}

TEST_F(RouteTest, TimesliceModeNeverPartitions) {
  connect(1, Class::be);
  connect(2, Class::rt);
  rt_kernel(2, 1, 12);
  EXPECT_EQ(mode(1), GateMode::shut);
  for (const auto& decision : out_.history[{1, 0}]) EXPECT_EQ(decision.route, Route::full);
  EXPECT_EQ(device0().route, Route::full);
}

// ---- kills
// ---------------------------------------------------------------------------------------

TEST_F(RouteTest, RtArrivingBehindTooMuchBestEffortWorkBumpsTheKillEpochOfKillableClients) {
  ClassParams killable;
  killable.kill = true;
  connect(1, Class::be, killable);
  connect(3, Class::be);  // not killable
  connect(2, Class::rt);
  status(1, 5 * kMs, 0, true);
  status(3, 5 * kMs, 0, true);
  EXPECT_EQ(out_.of(1, 0).kill_epoch, 0u);

  rt_kernel(2, 1, 12);
  EXPECT_EQ(out_.of(1, 0).kill_epoch, 1u);
  EXPECT_EQ(out_.of(3, 0).kill_epoch, 0u) << "a rule without kill is never killed";
  EXPECT_EQ(device0().kill_epoch, 1u);
  EXPECT_EQ(sched_->counters().kills, 1u);
  using Write = RecordingOutput::KillWordWrite;
  EXPECT_EQ(out_.kill_words, (std::vector<Write>{{1, 0, 1}})) << "the kill word holds the epoch";
  for (const ClientView& view : sched_->clients(now_)) {
    if (view.id == 1 || view.id == 3) {
      EXPECT_EQ(view.kills, view.id == 1 ? 1u : 0u) << "client " << view.id;
    }
  }

  // RT stays active: no new kill. RT goes idle and comes back: a new epoch.
  rt_kernel(2, 2, 12);
  EXPECT_EQ(out_.of(1, 0).kill_epoch, 1u);
  status(2, 0, 2, false);
  EXPECT_EQ(out_.kill_words, (std::vector<Write>{{1, 0, 1}, {1, 0, 0}}))
      << "lowered as soon as RT is idle, while the gate still holds new BE work";
  EXPECT_EQ(mode(1), GateMode::shut);
  advance(params_.holdoff_ns);
  EXPECT_EQ(out_.kill_words.size(), 2u) << "the gate opening writes nothing more";
  status(1, 5 * kMs, 0, true);
  rt_kernel(2, 3, 12);
  EXPECT_EQ(out_.of(1, 0).kill_epoch, 2u);
  EXPECT_EQ(out_.kill_words.back(), (Write{1, 0, 2}));
}

TEST_F(RouteTest, BestEffortWithinTheBudgetIsNotKilled) {
  ClassParams killable;
  killable.kill = true;
  connect(1, Class::be, killable);
  connect(2, Class::rt);
  status(1, 100 * kUs, 0, true);  // under the 200 us budget
  rt_kernel(2, 1, 12);
  EXPECT_EQ(out_.of(1, 0).kill_epoch, 0u);
  EXPECT_EQ(device0().kills, 0u);
}

}  // namespace
}  // namespace sluice::sched
