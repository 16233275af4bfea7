// What the daemon's gate tells the engine about classes and routes (Gate::stream_class,
// Gate::route_sms), against an in-process sluiced in timeslice and mps mode and a mock driver.
#include <gtest/gtest.h>

#include "sluice/scheduler/client.h"
#include "sluice/scheduler/mps.h"
#include "sluice/shim/stats.h"
#include "test_support.h"

namespace sluice::sched {
namespace {

using namespace testing_support;

// RT by default; clients labelled "be" are best-effort.
constexpr const char* kPolicy = R"({
  "version": 1,
  "scheduler": {"be_budget_us": 100, "holdoff_ms": 30, "default_prediction_us": 150, "rt_poll_us": 100},
  "defaults": {"class": "rt"}
})";

// The shim's side of a client gate: what the engine would hand make_client_gate().
struct ShimSide {
  shim::DriverApi driver = MockGpu::api();
  CountingListener listener;
  OneKernelCatalog catalog;
  shim::Stats stats;
};

class ClientRouteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MockGpu::busy = false;
    socket_ = temp_dir() + "/sluiced.sock";
  }
  void TearDown() override { MockGpu::busy = false; }

  std::unique_ptr<ClientGate> gate(const std::string& label) {
    ClientOptions o;
    o.socket_paths = {socket_};
    o.label = label;
    o.reconnect_ns = 20'000'000;
    return make_client_gate({shim_.listener, shim_.catalog, shim_.driver, shim_.stats}, o);
  }
  ServerOptions options(protocol::SharingMode mode) {
    ServerOptions o = DaemonThread::options_for(socket_, kPolicy);
    o.mode = mode;
    if (mode == protocol::SharingMode::mps) {
      o.mps = mps_options_for_socket(socket_);
      o.mps.control_program = SLUICE_FAKE_MPS_CONTROL;
    }
    return o;
  }
  // An RT launch: sluiced sees RT active while MockGpu::busy holds.
  static void launch_rt(ClientGate& rt) {
    const shim::OpDesc op = kernel_op(1);
    rt.before_submit(op);
    rt.on_submit(op, CUDA_SUCCESS);
  }

  std::string socket_;
  ShimSide shim_;
};

TEST_F(ClientRouteTest, WithoutADaemonNoClassAndTheFullGpu) {
  auto be = gate("be");
  EXPECT_EQ(be->stream_class(), shim::StreamClass::unknown);
  EXPECT_EQ(be->route_sms(kernel_op(1)), 0u);
  EXPECT_NE(be->needs() & shim::kNeedRoute, 0u);
}

TEST_F(ClientRouteTest, TheClassComesFromTheDaemon) {
  DaemonThread daemon(options(protocol::SharingMode::timeslice));
  auto rt = gate("");
  auto be = gate("be");
  ASSERT_TRUE(be->state().connected);
  EXPECT_EQ(rt->stream_class(), shim::StreamClass::rt);
  EXPECT_EQ(be->stream_class(), shim::StreamClass::be);
}

TEST_F(ClientRouteTest, TimesliceModeNeverRoutes) {
  DaemonThread daemon(options(protocol::SharingMode::timeslice));
  auto rt = gate("");
  auto be = gate("be");
  ASSERT_TRUE(be->state().connected);
  MockGpu::busy = true;
  launch_rt(*rt);
  ASSERT_TRUE(eventually([&] { return !be->admit(kernel_op(2)); })) << "BE did not shut";
  EXPECT_EQ(be->route_sms(kernel_op(3)), 0u);
}

TEST_F(ClientRouteTest, MpsModeRoutesBestEffortToAPartitionWhileRtIsActive) {
  DaemonThread daemon(options(protocol::SharingMode::mps));
  auto rt = gate("");
  auto be = gate("be");
  ASSERT_TRUE(be->state().connected);
  EXPECT_EQ(be->route_sms(kernel_op(1)), 0u) << "RT is idle: the full GPU";
  MockGpu::busy = true;
  launch_rt(*rt);
  ASSERT_TRUE(eventually([&] { return be->route_sms(kernel_op(2)) != 0; })) << "no partition";
  const std::uint32_t sms = be->route_sms(kernel_op(2));
  EXPECT_EQ(sms % 8, 0u);
  EXPECT_LT(sms, 132u);
  EXPECT_EQ(rt->route_sms(kernel_op(2)), 0u) << "RT always runs on the full GPU";
  MockGpu::busy = false;
  ASSERT_TRUE(eventually([&] { return be->route_sms(kernel_op(3)) == 0; }))
      << "BE did not come back to the full GPU when RT went idle";
}

}  // namespace
}  // namespace sluice::sched
