// What a client learns about sluiced's mode before and at its connection: in mps mode the MPS pipe
// directory (segment header and the client-env request), applied as CUDA_MPS_PIPE_DIRECTORY unless
// the process has its own; nothing in timeslice mode or without a daemon.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "connection.h"
#include "sluice/protocol/wire.h"
#include "test_support.h"

namespace sluice::sched {
namespace {

using namespace testing_support;  // NOLINT(google-build-using-namespace)

class ClientEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    unsetenv(kMpsPipeEnv);
    dir_ = temp_dir();
    socket_ = dir_ + "/sluiced.sock";
  }
  void TearDown() override { unsetenv(kMpsPipeEnv); }

  ServerOptions mps_options() {
    ServerOptions options = DaemonThread::options_for(socket_);
    options.mode = protocol::SharingMode::mps;
    options.mps = mps_options_for_socket(socket_);
    options.mps.control_program = SLUICE_FAKE_MPS_CONTROL;
    return options;
  }

  static std::string env() {
    const char* value = std::getenv(kMpsPipeEnv);
    return value != nullptr ? value : "(unset)";
  }

  Result<std::unique_ptr<Connection>> connect() {
    protocol::Hello hello = protocol::make_hello(protocol::Role::shim);
    return connect_to_daemon({socket_}, hello);
  }

  std::string dir_, socket_;
};

TEST_F(ClientEnvTest, TimesliceDaemonAnnouncesNoMpsDirectory) {
  DaemonThread daemon(socket_);
  auto connection = connect();
  ASSERT_TRUE(connection) << connection.error().message;
  EXPECT_EQ((*connection)->mps_pipe_dir, "");
  EXPECT_TRUE(prepare_driver_environment({socket_}));
  EXPECT_EQ(env(), "(unset)");
}

TEST_F(ClientEnvTest, MpsDaemonsPipeDirectoryReachesTheClientAtConnectionAndBeforeDriverInit) {
  ServerOptions options = mps_options();
  DaemonThread daemon(options);
  ASSERT_NE(daemon.server(), nullptr);

  ASSERT_TRUE(prepare_driver_environment({socket_}));
  EXPECT_EQ(env(), options.mps.pipe_dir) << "client-env, before the driver initializes";

  unsetenv(kMpsPipeEnv);
  auto connection = connect();
  ASSERT_TRUE(connection) << connection.error().message;
  EXPECT_EQ((*connection)->mps_pipe_dir, options.mps.pipe_dir) << "from the segment header";
  EXPECT_EQ(env(), options.mps.pipe_dir);

  setenv("SLUICE_SOCKET", socket_.c_str(), 1);
  unsetenv(kMpsPipeEnv);
  EXPECT_EQ(sluice_prepare_driver_environment(), 0);
  EXPECT_EQ(env(), options.mps.pipe_dir) << "the shim's entry point";
  unsetenv("SLUICE_SOCKET");
}

TEST_F(ClientEnvTest, AClientsOwnMpsDirectoryWins) {
  DaemonThread daemon(mps_options());
  setenv(kMpsPipeEnv, "/srv/mps-pipe", 1);
  EXPECT_TRUE(prepare_driver_environment({socket_}));
  auto connection = connect();
  ASSERT_TRUE(connection) << connection.error().message;
  EXPECT_EQ(env(), "/srv/mps-pipe");
}

TEST_F(ClientEnvTest, NoDaemonChangesNothing) {
  auto prepared = prepare_driver_environment({socket_});
  ASSERT_FALSE(prepared);
  EXPECT_NE(prepared.error().message.find(socket_), std::string::npos) << prepared.error().message;
  EXPECT_EQ(env(), "(unset)");
  setenv("SLUICE_SOCKET", socket_.c_str(), 1);
  EXPECT_EQ(sluice_prepare_driver_environment(), 1);
  unsetenv("SLUICE_SOCKET");
}

TEST(ApplyMpsPipeDir, SetsOnlyANonEmptyDirectoryWhenTheVariableIsUnsetOrEmpty) {
  unsetenv(kMpsPipeEnv);
  EXPECT_FALSE(apply_mps_pipe_dir(""));
  EXPECT_EQ(std::getenv(kMpsPipeEnv), nullptr);
  setenv(kMpsPipeEnv, "", 1);
  EXPECT_TRUE(apply_mps_pipe_dir("/run/sluice/mps/pipe"));
  EXPECT_STREQ(std::getenv(kMpsPipeEnv), "/run/sluice/mps/pipe");
  EXPECT_FALSE(apply_mps_pipe_dir("/elsewhere"));
  EXPECT_STREQ(std::getenv(kMpsPipeEnv), "/run/sluice/mps/pipe");
  unsetenv(kMpsPipeEnv);
}

}  // namespace
}  // namespace sluice::sched
