// sluiced's systemd notifications (scheduler/daemon/notify.h): the datagrams a Type=notify unit
// reads, over a socket the test binds, and sluiced itself started with $NOTIFY_SOCKET set.
#include "notify.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

namespace sluice::sched {
namespace {

// A datagram socket standing in for systemd's notification socket. Reads wait at most 60 s: a
// guard against hanging the test run, not a timing assertion.
class FakeSystemd {
 public:
  explicit FakeSystemd(std::string address) : address_(std::move(address)) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd_, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, address_.data(), address_.size());
    bool abstract = address_[0] == '@';
    if (abstract) addr.sun_path[0] = '\0';
    auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size() + (abstract ? 0 : 1));
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), length), 0) << std::strerror(errno);
    timeval timeout{60, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  }
  ~FakeSystemd() {
    close(fd_);
    if (address_[0] == '/') unlink(address_.c_str());
  }

  const std::string& address() const { return address_; }

  std::optional<std::string> receive() {
    char buffer[4096];
    ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
    if (n < 0) return std::nullopt;
    return std::string(buffer, static_cast<std::size_t>(n));
  }
  // A message already queued, without waiting.
  std::optional<std::string> receive_now() {
    char buffer[4096];
    ssize_t n = recv(fd_, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n < 0) return std::nullopt;
    return std::string(buffer, static_cast<std::size_t>(n));
  }

 private:
  std::string address_;
  int fd_ = -1;
};

std::filesystem::path temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "sluice-notify-XXXXXX").string();
  const char* made = mkdtemp(pattern.data());
  EXPECT_NE(made, nullptr);
  return made;
}

constexpr std::uint64_t kSecond = 1'000'000'000;

TEST(SystemdNotifier, DisabledWithoutNotifySocket) {
  unsetenv("NOTIFY_SOCKET");
  setenv("WATCHDOG_USEC", "1000000", 1);
  auto notifier = SystemdNotifier::from_environment();
  EXPECT_FALSE(notifier.enabled());
  EXPECT_EQ(notifier.watchdog_period_ns(), 0U);
  EXPECT_TRUE(notifier.send("READY=1").ok());
  notifier.watchdog_tick(0);  // no socket, nothing to do
  EXPECT_EQ(std::getenv("WATCHDOG_USEC"), nullptr);
}

TEST(SystemdNotifier, ReadyStatusStoppingOnAPathSocket) {
  auto dir = temp_dir();
  FakeSystemd systemd((dir / "notify").string());
  SystemdNotifier notifier(systemd.address(), 0);
  ASSERT_TRUE(notifier.enabled());
  notifier.ready("listening on /run/sluice/sluiced.sock\n(timeslice mode)");
  EXPECT_EQ(systemd.receive(), "READY=1\nSTATUS=listening on /run/sluice/sluiced.sock (timeslice mode)");
  notifier.status("policy reloaded");
  EXPECT_EQ(systemd.receive(), "STATUS=policy reloaded");
  notifier.stopping("bye");
  EXPECT_EQ(systemd.receive(), "STOPPING=1\nSTATUS=bye");
  std::filesystem::remove_all(dir);
}

TEST(SystemdNotifier, AbstractNamespaceAddress) {
  FakeSystemd systemd("@sluice-notify-test-" + std::to_string(getpid()));
  SystemdNotifier notifier(systemd.address(), 0);
  ASSERT_TRUE(notifier.send("READY=1").ok());
  EXPECT_EQ(systemd.receive(), "READY=1");
}

TEST(SystemdNotifier, WatchdogPingsAtHalfTheInterval) {
  FakeSystemd systemd("@sluice-notify-watchdog-" + std::to_string(getpid()));
  SystemdNotifier notifier(systemd.address(), 2'000'000);  // WATCHDOG_USEC=2 s
  EXPECT_EQ(notifier.watchdog_period_ns(), kSecond);
  // Fake clock: the loop's own timestamps decide, never the wall clock.
  std::uint64_t start = 50 * kSecond;
  notifier.watchdog_tick(start);
  EXPECT_EQ(systemd.receive(), "WATCHDOG=1");
  notifier.watchdog_tick(start + kSecond / 2);
  EXPECT_FALSE(systemd.receive_now().has_value());
  notifier.watchdog_tick(start + kSecond);
  EXPECT_EQ(systemd.receive(), "WATCHDOG=1");
  notifier.watchdog_tick(start + kSecond + 1);
  EXPECT_FALSE(systemd.receive_now().has_value());
}

TEST(SystemdNotifier, EnvironmentIsReadAndCleared) {
  setenv("NOTIFY_SOCKET", "@sluice-env", 1);
  setenv("WATCHDOG_USEC", "30000000", 1);
  setenv("WATCHDOG_PID", std::to_string(getpid()).c_str(), 1);
  auto notifier = SystemdNotifier::from_environment();
  EXPECT_TRUE(notifier.enabled());
  EXPECT_EQ(notifier.watchdog_period_ns(), 15 * kSecond);
  EXPECT_EQ(std::getenv("NOTIFY_SOCKET"), nullptr);
  EXPECT_EQ(std::getenv("WATCHDOG_USEC"), nullptr);
  EXPECT_EQ(std::getenv("WATCHDOG_PID"), nullptr);
}

TEST(SystemdNotifier, WatchdogForAnotherProcessOrMalformedStaysOff) {
  setenv("NOTIFY_SOCKET", "@sluice-env", 1);
  setenv("WATCHDOG_USEC", "30000000", 1);
  setenv("WATCHDOG_PID", std::to_string(getpid() + 1).c_str(), 1);
  EXPECT_EQ(SystemdNotifier::from_environment().watchdog_period_ns(), 0U);

  setenv("NOTIFY_SOCKET", "@sluice-env", 1);
  setenv("WATCHDOG_USEC", "thirty", 1);
  auto notifier = SystemdNotifier::from_environment();
  EXPECT_TRUE(notifier.enabled());
  EXPECT_EQ(notifier.watchdog_period_ns(), 0U);
}

TEST(SystemdNotifier, BadAddressNamesTheVariable) {
  SystemdNotifier relative("run/notify", 0);
  auto status = relative.send("READY=1");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message.find("NOTIFY_SOCKET='run/notify'"), std::string::npos) << status.error().message;

  SystemdNotifier too_long("/" + std::string(200, 'x'), 0);
  status = too_long.send("READY=1");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message.find("longer than a Unix socket address"), std::string::npos);

  auto dir = temp_dir();
  SystemdNotifier nobody_listens((dir / "absent").string(), 0);
  status = nobody_listens.send("READY=1");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message.find("sendto"), std::string::npos);
  nobody_listens.ready("still fine");  // logs once, never throws or exits
  std::filesystem::remove_all(dir);
}

// sluiced itself, as systemd starts it: READY=1 once its socket listens, WATCHDOG=1 from its loop,
// STOPPING=1 on SIGTERM, and exit status 0.
TEST(SystemdNotifier, SluicedSpeaksTheProtocol) {
  auto dir = temp_dir();
  FakeSystemd systemd((dir / "notify").string());
  std::string socket_path = (dir / "sluiced.sock").string();
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    setenv("NOTIFY_SOCKET", systemd.address().c_str(), 1);
    setenv("WATCHDOG_USEC", "200000", 1);
    unsetenv("WATCHDOG_PID");
    setenv("SLUICE_LOG", "warn", 1);
    execl(SLUICE_SLUICED, SLUICE_SLUICED, "--socket", socket_path.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  auto ready = systemd.receive();
  ASSERT_TRUE(ready.has_value()) << "no notification from sluiced";
  EXPECT_EQ(ready->rfind("READY=1\nSTATUS=listening on " + socket_path, 0), 0U) << *ready;
  EXPECT_TRUE(std::filesystem::exists(socket_path)) << "READY=1 before the socket exists";
  // The loop pings every 100 ms; two pings prove it keeps doing so.
  EXPECT_EQ(systemd.receive(), "WATCHDOG=1");
  EXPECT_EQ(systemd.receive(), "WATCHDOG=1");

  kill(child, SIGTERM);
  std::optional<std::string> message;
  do {
    message = systemd.receive();
  } while (message == "WATCHDOG=1");
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(message->rfind("STOPPING=1\n", 0), 0U) << *message;
  int wstatus = 0;
  ASSERT_EQ(waitpid(child, &wstatus, 0), child);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << "status " << wstatus;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sluice::sched
