// Processes that set the same SLUICE_FAKE_GPU_DIR share one fake device: its engines, its
// tickets, its memory accounting; IPC memory handles map one process's device memory in another.
// Each process is a fake_gpu_client (gpu_client.cpp) spawned with pipes.
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>

#include "support.h"

extern char** environ;

namespace sluice::fake::testing {
namespace {

class ClientProcess {
 public:
  explicit ClientProcess(const std::string& gpu_dir, const std::string& extra_env = "") {
    int to_child[2];
    int from_child[2];
    EXPECT_EQ(0, pipe(to_child));
    EXPECT_EQ(0, pipe(from_child));
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_child[0], 0);
    posix_spawn_file_actions_adddup2(&actions, from_child[1], 1);
    posix_spawn_file_actions_addclose(&actions, to_child[1]);
    posix_spawn_file_actions_addclose(&actions, from_child[0]);
    std::vector<std::string> env_strings;
    for (char** entry = environ; *entry != nullptr; ++entry) {
      if (std::strncmp(*entry, "SLUICE_FAKE_GPU_DIR=", 20) != 0) env_strings.emplace_back(*entry);
    }
    if (!gpu_dir.empty()) env_strings.push_back("SLUICE_FAKE_GPU_DIR=" + gpu_dir);
    if (!extra_env.empty()) env_strings.push_back(extra_env);
    std::vector<char*> env;
    for (auto& entry : env_strings) env.push_back(entry.data());
    env.push_back(nullptr);
    char* argv[] = {const_cast<char*>(FAKE_GPU_CLIENT), nullptr};
    EXPECT_EQ(0, posix_spawn(&pid_, FAKE_GPU_CLIENT, &actions, nullptr, argv, env.data()));
    posix_spawn_file_actions_destroy(&actions);
    close(to_child[0]);
    close(from_child[1]);
    in_ = fdopen(to_child[1], "w");
    out_ = fdopen(from_child[0], "r");
  }

  ~ClientProcess() {
    if (in_ != nullptr) {
      std::fputs("quit\n", in_);
      std::fclose(in_);
    }
    if (out_ != nullptr) std::fclose(out_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }
  ClientProcess(const ClientProcess&) = delete;
  ClientProcess& operator=(const ClientProcess&) = delete;

  // Sends one command and returns the answer without the leading "ok " (fails the test on error).
  std::string call(const std::string& command) {
    std::fprintf(in_, "%s\n", command.c_str());
    std::fflush(in_);
    char line[512] = {};
    if (std::fgets(line, sizeof(line), out_) == nullptr) {
      ADD_FAILURE() << "client exited during '" << command << "'";
      return {};
    }
    std::string answer(line);
    if (!answer.empty() && answer.back() == '\n') answer.pop_back();
    EXPECT_EQ(0u, answer.rfind("ok", 0)) << command << ": " << answer;
    return answer.size() > 3 ? answer.substr(3) : std::string();
  }

  void kill_now() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    std::fclose(in_);
    in_ = nullptr;
  }

 private:
  pid_t pid_ = -1;
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
};

struct KernelTimes {
  std::uint64_t ticket = 0;
  std::uint64_t start = 0;
  std::uint64_t end = 0;
};

KernelTimes last_kernel(ClientProcess& client) {
  KernelTimes times;
  std::istringstream(client.call("last")) >> times.ticket >> times.start >> times.end;
  return times;
}

class CrossProcess : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/sluice-fake-gpu-XXXXXX";
    ASSERT_NE(nullptr, mkdtemp(pattern));
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(CrossProcess, ProcessesSharingADeviceWaitForEachOthersGrids) {
  ClientProcess best_effort(dir_);
  ClientProcess real_time(dir_);
  EXPECT_EQ("1", best_effort.call("init"));
  EXPECT_EQ("1", real_time.call("init"));
  best_effort.call("spin 150000000 1");  // 150 ms on the whole device
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  real_time.call("spin 1000 1");
  real_time.call("sync");
  best_effort.call("sync");
  const KernelTimes be = last_kernel(best_effort);
  const KernelTimes rt = last_kernel(real_time);
  EXPECT_LT(be.ticket, rt.ticket);  // one ticket counter for the device
  EXPECT_GE(rt.start, be.end);
  EXPECT_EQ(150'000'000u, be.end - be.start);
}

TEST_F(CrossProcess, AGridOfAnotherProcessWaitsBehindADeepQueue) {
  ClientProcess best_effort(dir_);
  ClientProcess real_time(dir_);
  best_effort.call("init");
  real_time.call("init");
  constexpr int kQueued = 8;
  for (int i = 0; i < kQueued; ++i) best_effort.call("spin 20000000 1");  // 8 x 20 ms in one stream
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  real_time.call("spin 1000 1");
  real_time.call("sync");
  best_effort.call("sync");
  const KernelTimes be_last = last_kernel(best_effort);
  const KernelTimes rt = last_kernel(real_time);
  // Each queued grid went on the board before its predecessor left it, so the RT grid (a later
  // ticket) never found the device free until the queue was done.
  EXPECT_GE(rt.start, be_last.end);
  EXPECT_LT(be_last.ticket, rt.ticket);
}

TEST_F(CrossProcess, SubmissionsWakeOnlyTheSubmittingProcess) {
  ClientProcess busy(dir_);
  ClientProcess idle(dir_);
  busy.call("init");
  idle.call("init");
  idle.call("spin 1000 1");  // starts the idle process's executor
  idle.call("sync");
  const long before = std::stol(idle.call("wakeups"));
  busy.call("burst 2000");
  const long after = std::stol(idle.call("wakeups"));
  // The idle process waits for nothing from others: neither submissions nor freed slots of the
  // busy one wake it (at most its idle timeout does).
  EXPECT_LT(after - before, 20) << "the idle process woke for the launches of the busy one";
}

TEST_F(CrossProcess, EveryDriverCallCostsTheConfiguredHostTime) {
  ClientProcess slow("", "SLUICE_FAKE_LAUNCH_NS=200000");
  ClientProcess fast("");
  slow.call("init");
  fast.call("init");
  EXPECT_GE(std::stoll(slow.call("time 20")), 200'000);
  EXPECT_LT(std::stoll(fast.call("time 20")), 200'000);
}

TEST_F(CrossProcess, PrivateDevicesDoNotWait) {
  ClientProcess first("");
  ClientProcess second("");
  EXPECT_EQ("0", first.call("init"));
  EXPECT_EQ("0", second.call("init"));
  first.call("spin 150000000 1");
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  second.call("spin 1000 1");
  second.call("sync");
  first.call("sync");
  EXPECT_LT(last_kernel(second).start, last_kernel(first).end);
}

TEST_F(CrossProcess, GridsOfADeadProcessStopHoldingTheDevice) {
  ClientProcess doomed(dir_);
  ClientProcess survivor(dir_);
  doomed.call("init");
  survivor.call("init");
  doomed.call("spin 60000000000 1");  // a minute
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  survivor.call("spin 1000 1");
  const auto killed_at = std::chrono::steady_clock::now();
  doomed.kill_now();
  survivor.call("sync");
  const auto waited = std::chrono::steady_clock::now() - killed_at;
  EXPECT_LT(waited, std::chrono::seconds(5));
}

TEST_F(CrossProcess, IpcHandlesMapDeviceMemoryOfAnotherProcess) {
  ClientProcess owner(dir_);
  ClientProcess peer(dir_);
  owner.call("init");
  peer.call("init");
  const std::string handle = owner.call("export 41");
  ASSERT_EQ(128u, handle.size());
  EXPECT_EQ("41", peer.call("import " + handle));
  EXPECT_EQ("42", owner.call("peek"));  // the peer's write is visible to the owner
}

}  // namespace
}  // namespace sluice::fake::testing
