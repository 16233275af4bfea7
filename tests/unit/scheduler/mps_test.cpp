// sluiced's MPS control daemon against a fake nvidia-cuda-mps-control (a Python script that
// answers get_server_list and quit over a socket in the pipe directory): start and health check,
// adoption of a running one, failures, shutdown; and run_command's timeouts.
#include "sluice/scheduler/mps.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "subprocess.h"

namespace sluice::sched {
namespace {

std::string temp_dir() {
  std::string pattern = ::testing::TempDir() + "/sluice-mps-XXXXXX";
  char* made = mkdtemp(pattern.data());
  return made != nullptr ? std::string(made) : ::testing::TempDir();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class MpsTest : public testing::Test {
 protected:
  MpsTest() {
    base_ = temp_dir();
    options_.control_program = SLUICE_FAKE_MPS_CONTROL;
    options_.pipe_dir = base_ + "/mps/pipe";
    options_.log_dir = base_ + "/mps/log";
    options_.timeout_ms = 5000;
  }
  ~MpsTest() override {
    // A control daemon a failed test left behind.
    std::string pid_text = read_file(options_.pipe_dir + "/control.pid");
    if (!pid_text.empty()) kill(std::atoi(pid_text.c_str()), SIGKILL);
    unsetenv("FAKE_MPS_START_FAIL");
    unsetenv("FAKE_MPS_MUTE");
  }
  std::string log() { return read_file(options_.log_dir + "/control.log"); }

  std::string base_;
  MpsOptions options_;
};

TEST_F(MpsTest, StartsChecksAndQuitsItsControlDaemon) {
  auto control = MpsControl::start(options_);
  ASSERT_TRUE(control) << control.error().message;
  EXPECT_EQ((*control)->state(), MpsState::started);
  struct stat st {};
  ASSERT_EQ(stat(options_.pipe_dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, geteuid() == 0 ? 0755u : 0700u);
  ASSERT_EQ(stat(options_.log_dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_NE(log().find("started\nget_server_list\n"), std::string::npos) << log();
  EXPECT_TRUE((*control)->check());

  ASSERT_TRUE((*control)->stop());
  EXPECT_EQ((*control)->state(), MpsState::stopped);
  EXPECT_NE(log().find("quit\nexiting\n"), std::string::npos) << log();
  EXPECT_FALSE((*control)->check()) << "it no longer answers";
  EXPECT_TRUE((*control)->stop()) << "idempotent";
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

TEST_F(MpsTest, AControlDaemonItStartedThatDiesIsStartedAgainByTheWatch) {
  options_.check_interval_ms = 20;
  auto control = MpsControl::start(options_);
  ASSERT_TRUE(control) << control.error().message;
  (*control)->watch();
  std::string pid_text = read_file(options_.pipe_dir + "/control.pid");
  ASSERT_FALSE(pid_text.empty());
  kill(std::atoi(pid_text.c_str()), SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while ((*control)->restarts() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ((*control)->restarts(), 1u);
  EXPECT_EQ((*control)->state(), MpsState::started);
  EXPECT_TRUE((*control)->check());
  EXPECT_EQ(count_of(log(), "started\n"), 2u) << log();
  EXPECT_NE(read_file(options_.pipe_dir + "/control.pid"), pid_text) << "a new control daemon";
  ASSERT_TRUE((*control)->stop());
  EXPECT_NE(log().find("quit\nexiting\n"), std::string::npos) << "the new one is quit at exit: " << log();
}

TEST_F(MpsTest, AnAdoptedControlDaemonThatDiesIsLeftToItsOwner) {
  auto owner = MpsControl::start(options_);  // another sluiced's, say; never asked again here
  ASSERT_TRUE(owner) << owner.error().message;
  auto adopted = MpsControl::start(options_);
  ASSERT_TRUE(adopted) << adopted.error().message;
  ASSERT_EQ((*adopted)->state(), MpsState::adopted);
  std::string pid_text = read_file(options_.pipe_dir + "/control.pid");
  ASSERT_FALSE(pid_text.empty());
  kill(std::atoi(pid_text.c_str()), SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while ((*adopted)->check() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ((*adopted)->state(), MpsState::lost);
  EXPECT_FALSE((*adopted)->check()) << "still lost: not sluiced's to start";
  EXPECT_EQ((*adopted)->restarts(), 0u);
  EXPECT_EQ(count_of(log(), "started\n"), 1u) << log();
  EXPECT_TRUE((*adopted)->stop()) << "nothing to quit";
  EXPECT_EQ(log().find("quit"), std::string::npos);
}

TEST_F(MpsTest, AdoptsAControlDaemonThatAlreadyAnswersAndLeavesItRunning) {
  auto first = MpsControl::start(options_);
  ASSERT_TRUE(first) << first.error().message;
  {
    auto second = MpsControl::start(options_);
    ASSERT_TRUE(second) << second.error().message;
    EXPECT_EQ((*second)->state(), MpsState::adopted);
  }  // destroyed: an adopted control daemon is not quit
  EXPECT_EQ(log().find("quit"), std::string::npos) << log();
  EXPECT_TRUE((*first)->check());
  EXPECT_TRUE((*first)->stop());
}

TEST_F(MpsTest, DestructionQuitsAStartedControlDaemon) {
  {
    auto control = MpsControl::start(options_);
    ASSERT_TRUE(control) << control.error().message;
  }
  EXPECT_NE(log().find("quit\nexiting\n"), std::string::npos) << log();
}

TEST_F(MpsTest, AControlProgramThatFailsToStartIsReportedWithItsMessage) {
  setenv("FAKE_MPS_START_FAIL", "1", 1);
  auto control = MpsControl::start(options_);
  ASSERT_FALSE(control);
  EXPECT_NE(control.error().message.find(
                "-d failed (exit code 1): An instance of this daemon is already running"),
            std::string::npos)
      << control.error().message;
}

TEST_F(MpsTest, AControlDaemonThatNeverAnswersFailsWithinTheTimeout) {
  setenv("FAKE_MPS_MUTE", "1", 1);
  options_.timeout_ms = 5000;  // per call: `-d` itself must get through (Python starts slowly)
  auto started = std::chrono::steady_clock::now();
  auto control = MpsControl::start(options_);
  ASSERT_FALSE(control);
  EXPECT_NE(control.error().message.find("does not answer get_server_list"), std::string::npos)
      << control.error().message;
  // Bounded: a few timeouts, never a hang (generous for a loaded machine).
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(60));
}

TEST_F(MpsTest, AMissingControlProgramNamesTheProgramAndHowToChooseAnother) {
  options_.control_program = base_ + "/no-such-mps-control";
  auto control = MpsControl::start(options_);
  ASSERT_FALSE(control);
  EXPECT_NE(control.error().message.find("no-such-mps-control: not found"), std::string::npos);
  EXPECT_NE(control.error().message.find(kMpsControlEnv), std::string::npos);
}

TEST_F(MpsTest, DirectoriesGoUnderTheSocketsDirectory) {
  MpsOptions options = mps_options_for_socket("/run/user/1000/sluice/sluiced.sock");
  EXPECT_EQ(options.pipe_dir, "/run/user/1000/sluice/mps/pipe");
  EXPECT_EQ(options.log_dir, "/run/user/1000/sluice/mps/log");
  EXPECT_EQ(options.control_program, "nvidia-cuda-mps-control");
}

// ---- run_command -------------------------------------------------------------------------------

TEST(RunCommand, FeedsStdinAndCollectsOutputAndExitCode) {
  auto cat = run_command({"cat"}, {}, "hello\n", 5000);
  ASSERT_TRUE(cat) << cat.error().message;
  EXPECT_EQ(cat->output, "hello\n");
  EXPECT_EQ(cat->exit_code, 0);
  auto env = run_command({"sh", "-c", "echo $SLUICE_TEST_VALUE; exit 3"}, {"SLUICE_TEST_VALUE=42"},
                         "", 5000);
  ASSERT_TRUE(env) << env.error().message;
  EXPECT_EQ(env->output, "42\n");
  EXPECT_EQ(env->exit_code, 3);
}

TEST(RunCommand, KillsAChildThatOutlivesTheTimeout) {
  auto started = std::chrono::steady_clock::now();
  auto slow = run_command({"sleep", "30"}, {}, "", 100);
  ASSERT_TRUE(slow) << slow.error().message;
  EXPECT_TRUE(slow->timed_out);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(20));
}

TEST(RunCommand, AProgramThatIsNotThereIsAnError) {
  auto missing = run_command({"sluice-no-such-program"}, {}, "", 1000);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("sluice-no-such-program: not found"), std::string::npos);
}

}  // namespace
}  // namespace sluice::sched
