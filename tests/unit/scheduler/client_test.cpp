// The client gate against an in-process sluiced and a mock driver: classification, gating while
// RT is active, solo grants, completion tracking, hold-off, passthrough and wait without a
// daemon, reconnection, reclaim on client death, samples and names.
#include <gtest/gtest.h>

#include <chrono>

#include "sluice/scheduler/client.h"
#include "sluice/shim/stats.h"
#include "test_support.h"

namespace sluice::sched {
namespace {

using namespace testing_support;
using std::chrono::milliseconds;

// RT by default; clients labelled "be" are best-effort. A 100 us budget and an unknown kernel
// predicted at 150 us: a BE kernel fits only as a solo operation while RT is active.
constexpr const char* kPolicy = R"({
  "version": 1,
  "scheduler": {"be_budget_us": 100, "holdoff_ms": 30, "default_prediction_us": 150, "rt_poll_us": 100},
  "defaults": {"class": "rt"}
})";

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MockGpu::busy = false;
    dir_ = temp_dir();
    socket_ = dir_ + "/sluiced.sock";
  }

  std::unique_ptr<ClientGate> gate(const std::string& label, OnDaemonLoss loss = OnDaemonLoss::passthrough) {
    ClientOptions options;
    options.socket_paths = {socket_};
    options.label = label;
    options.on_loss = loss;
    options.reconnect_ns = 20'000'000;
    options.busy_poll_ns = 100'000;
    return make_client_gate(env_, options);
  }

  static void submit(ClientGate& g, const shim::OpDesc& op) {
    g.before_submit(op);
    g.on_submit(op, CUDA_SUCCESS);
  }

  std::string dir_, socket_;
  shim::DriverApi driver_ = MockGpu::api();
  CountingListener listener_;
  OneKernelCatalog catalog_;
  shim::Stats stats_;
  shim::GateEnvironment env_{listener_, catalog_, driver_, stats_};
};

TEST_F(ClientTest, PassthroughWithoutDaemonAdmitsEverything) {
  auto be = gate("be");
  EXPECT_FALSE(be->state().connected);
  EXPECT_TRUE(be->admit(kernel_op(1)));
  EXPECT_EQ(be->copy_chunk_bytes(), 0u) << "no splitting without a daemon";
}

TEST_F(ClientTest, WaitModeHoldsBestEffortWithoutDaemonAndReleasesWhenItComes) {
  auto be = gate("be", OnDaemonLoss::wait);
  EXPECT_FALSE(be->admit(kernel_op(1)));
  shim::OpDesc bookkeeping = kernel_op(2);
  bookkeeping.kind = shim::OpKind::event_record;
  EXPECT_TRUE(be->admit(bookkeeping)) << "only work that occupies the GPU is held";
  int changes = listener_.changes.load();
  DaemonThread daemon(socket_, kPolicy);
  ASSERT_TRUE(eventually([&] { return be->state().connected; }));
  EXPECT_TRUE(be->admit(kernel_op(3)));
  // The gate says it is connected just before it tells the engine; wait for the telling.
  EXPECT_TRUE(eventually([&] { return listener_.changes.load() > changes; }))
      << "the engine was told to look at held work again";
}

TEST_F(ClientTest, ClassComesFromThePolicyAndTheLabelOnlyLowersIt) {
  DaemonThread daemon(socket_, kPolicy);
  auto rt = gate("");
  auto be = gate("be");
  ASSERT_TRUE(rt->state().connected);
  ASSERT_TRUE(be->state().connected);
  EXPECT_EQ(rt->state().cls, protocol::Class::rt);
  EXPECT_EQ(be->state().cls, protocol::Class::be);
  EXPECT_EQ(rt->copy_chunk_bytes(), 0u);
  EXPECT_EQ(be->copy_chunk_bytes(), 8u << 20);
  auto ps = control(socket_, {{"cmd", "ps"}});
  ASSERT_TRUE(ps["ok"].get<bool>()) << ps.dump();
  ASSERT_EQ(ps["clients"].size(), 2u);
  EXPECT_EQ(ps["clients"][0]["class"], "rt");
  EXPECT_EQ(ps["clients"][1]["class"], "be");
  EXPECT_EQ(ps["clients"][1]["label"], "be");
  EXPECT_EQ(ps["clients"][1]["pid"], getpid());
}

TEST_F(ClientTest, RtActivityShutsBestEffortUntilTheHoldOffAfterRtIsIdle) {
  DaemonThread daemon(socket_, kPolicy);
  auto rt = gate("");
  auto be = gate("be");
  ASSERT_TRUE(be->state().connected);
  EXPECT_TRUE(be->admit(kernel_op(1))) << "open while RT is idle";

  MockGpu::busy = true;
  submit(*rt, kernel_op(1));  // the RT launch itself is never held
  ASSERT_TRUE(eventually([&] { return !be->admit(kernel_op(2)); })) << "BE did not shut";
  EXPECT_TRUE(rt->admit(kernel_op(2)));

  // A 150 us kernel does not fit the 100 us budget: it runs alone once it is known to wait.
  be->on_hold(kernel_op(2));
  ASSERT_TRUE(eventually([&] { return be->admit(kernel_op(2)); })) << "no solo grant";
  submit(*be, kernel_op(2));
  EXPECT_FALSE(be->admit(kernel_op(3))) << "one solo operation at a time";
  EXPECT_EQ(be->state().inflight_ns, 150'000u);

  auto rt_idle = std::chrono::steady_clock::now();  // sluiced cannot see RT idle before this
  MockGpu::busy = false;                             // everything completes
  ASSERT_TRUE(eventually([&] { return be->state().inflight_ns == 0; })) << "completion not tracked";
  ASSERT_TRUE(eventually([&] { return be->state().grant_ns == protocol::kUnlimited; })) << "BE did not reopen";
  EXPECT_GE(std::chrono::steady_clock::now() - rt_idle, milliseconds(30)) << "reopened before the hold-off";
  EXPECT_TRUE(be->admit(kernel_op(3)));
}

TEST_F(ClientTest, AtProcessExitTheGateStopsCallingTheDriverAndAdmitsEverything) {
  DaemonThread daemon(socket_, kPolicy);
  auto rt = gate("");
  auto be = gate("be");
  ASSERT_TRUE(be->state().connected);
  MockGpu::busy = true;
  submit(*rt, kernel_op(1));
  ASSERT_TRUE(eventually([&] { return !be->admit(kernel_op(2)); })) << "BE did not shut";
  // The RT gate's thread watches its unfinished work through the driver.
  int queries = MockGpu::queries.load();
  ASSERT_TRUE(eventually([&] { return MockGpu::queries.load() > queries + 2; }));

  // atexit: the driver may be torn down under the gates' threads from here on.
  rt->process_exiting();
  be->process_exiting();
  queries = MockGpu::queries.load();
  std::this_thread::sleep_for(milliseconds(30));
  EXPECT_EQ(MockGpu::queries.load(), queries) << "a gate thread still calls the driver";
  EXPECT_TRUE(be->admit(kernel_op(3))) << "work of the exiting process is not held";
  MockGpu::busy = false;
}

TEST_F(ClientTest, DeadClientsBudgetGoesToOthersWithin100Ms) {
  DaemonThread daemon(socket_, kPolicy);
  auto rt = gate("");
  auto first = gate("be");
  auto second = gate("be");
  MockGpu::busy = true;
  submit(*rt, kernel_op(1));
  ASSERT_TRUE(eventually([&] { return !first->admit(kernel_op(1)); }));
  first->on_hold(kernel_op(1));
  ASSERT_TRUE(eventually([&] { return first->admit(kernel_op(1)); }));
  submit(*first, kernel_op(1));  // first occupies the device with a solo kernel that never ends
  second->on_hold(kernel_op(1));
  std::this_thread::sleep_for(milliseconds(20));
  EXPECT_FALSE(second->admit(kernel_op(1)));

  auto died = std::chrono::steady_clock::now();
  first.reset();  // the process of `first` is gone: its socket hangs up
  ASSERT_TRUE(eventually([&] { return second->admit(kernel_op(1)); }, milliseconds(1000)));
  EXPECT_LT(std::chrono::steady_clock::now() - died, milliseconds(100));
}

TEST_F(ClientTest, ReconnectsAfterTheDaemonRestarts) {
  auto daemon = std::make_unique<DaemonThread>(socket_, kPolicy);
  auto be = gate("be");
  ASSERT_TRUE(be->state().connected);
  std::uint64_t first_epoch = be->state().epoch;
  EXPECT_EQ(listener_.losses.load(), 0);
  daemon.reset();
  ASSERT_TRUE(eventually([&] { return !be->state().connected; }));
  EXPECT_TRUE(be->admit(kernel_op(1))) << "passthrough while the daemon is away";
  // The engine was told, so that kill words the daemon left raised come down.
  EXPECT_TRUE(eventually([&] { return listener_.losses.load() == 1; }));
  daemon = std::make_unique<DaemonThread>(socket_, kPolicy);
  ASSERT_TRUE(eventually([&] { return be->state().connected; }));
  EXPECT_EQ(be->state().connects, 2u);
  EXPECT_NE(be->state().epoch, first_epoch);
  EXPECT_EQ(be->state().cls, protocol::Class::be);
}

TEST_F(ClientTest, TimedSamplesTeachTheDaemonAndComeBackAsPredictions) {
  DaemonThread daemon(socket_, kPolicy);
  auto be = gate("be");
  auto rt = gate("");
  for (std::uint64_t seq = 1; seq <= 40; ++seq) submit(*be, kernel_op(seq));
  ASSERT_TRUE(eventually([&] {
    auto status = control(socket_, {{"cmd", "status"}});
    return status["counters"]["samples"].get<int>() > 0;
  })) << control(socket_, {{"cmd", "status"}}).dump();
  // The mock times every kernel at 500 us: once learned, a 500 us kernel alone exceeds the
  // 100 us budget while RT is active, so after an RT launch it needs a solo grant.
  ASSERT_TRUE(eventually([&] { return be->state().inflight_ns == 0; }));
  MockGpu::busy = true;
  submit(*rt, kernel_op(1));
  ASSERT_TRUE(eventually([&] { return !be->admit(kernel_op(50)); }));
  be->on_hold(kernel_op(50));
  ASSERT_TRUE(eventually([&] { return be->admit(kernel_op(50)); }));
  submit(*be, kernel_op(50));
  EXPECT_EQ(be->state().inflight_ns, 500'000u) << "the learned duration, not the 150 us default";
  EXPECT_GT(MockGpu::relaxed_mode_calls.load(), 0) << "the gate's thread never set relaxed capture mode";
}

TEST_F(ClientTest, HeldWorkIsVisibleWithItsKernelName) {
  DaemonThread daemon(socket_, kPolicy);
  auto rt = gate("");
  auto be = gate("be");
  MockGpu::busy = true;
  submit(*rt, kernel_op(1));
  ASSERT_TRUE(eventually([&] { return !be->admit(kernel_op(7)); }));
  submit(*be, kernel_op(6));  // in flight: the next one cannot be solo
  be->on_hold(kernel_op(7, 264));
  nlohmann::json queue;
  ASSERT_TRUE(eventually([&] {
    queue = control(socket_, {{"cmd", "queue"}});
    return queue["queue"].size() == 1;
  })) << queue.dump();
  EXPECT_EQ(queue["queue"][0]["name"], "sluice_spin_test_kernel");
  EXPECT_EQ(queue["queue"][0]["grid"][0], 264);
  EXPECT_EQ(queue["queue"][0]["predicted_us"], 150.0);
  EXPECT_EQ(queue["queue"][0]["kind"], "kernel");
}

}  // namespace
}  // namespace sluice::sched

namespace sluice::sched {
namespace {

using namespace testing_support;

// A finite budget while open, so that every BE admission reserves grant.
constexpr const char* kFiniteOpenPolicy = R"({
  "version": 1,
  "scheduler": {"idle_budget_us": 1000, "default_prediction_us": 150},
  "defaults": {"class": "be"}
})";

TEST_F(ClientTest, AdmissionReservesGrantOnceAndReleasesWhatWasNeverSubmitted) {
  DaemonThread daemon(socket_, kFiniteOpenPolicy);
  auto be = gate("");
  ASSERT_TRUE(eventually([&] { return be->state().grant_ns == 1'000'000; }));
  ASSERT_TRUE(be->admit(kernel_op(1)));
  EXPECT_EQ(be->state().inflight_ns, 150'000u) << "reserved at admission";
  ASSERT_TRUE(be->admit(kernel_op(2)));  // op 1 was never submitted
  EXPECT_EQ(be->state().inflight_ns, 150'000u) << "the stale reservation was released";
  MockGpu::busy = true;
  be->before_submit(kernel_op(2));
  be->on_submit(kernel_op(2), CUDA_SUCCESS);
  EXPECT_EQ(be->state().inflight_ns, 150'000u) << "submission does not count it twice";
  ASSERT_TRUE(be->admit(kernel_op(3)));
  be->on_submit(kernel_op(3), CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(be->state().inflight_ns, 150'000u) << "a refused submission gives its reservation back";
  MockGpu::busy = false;
  EXPECT_TRUE(eventually([&] { return be->state().inflight_ns == 0; }));
}

}  // namespace
}  // namespace sluice::sched
