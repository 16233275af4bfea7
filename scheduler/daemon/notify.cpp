// sd_notify(3) by hand: see notify.h.
#include "notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "sluice/common/log.h"

namespace sluice::sched {
namespace {

constexpr const char* kNotifySocketEnv = "NOTIFY_SOCKET";
constexpr const char* kWatchdogUsecEnv = "WATCHDOG_USEC";
constexpr const char* kWatchdogPidEnv = "WATCHDOG_PID";

std::string take_env(const char* name) {
  const char* value = std::getenv(name);
  std::string copy = value != nullptr ? value : "";
  unsetenv(name);
  return copy;
}

bool parse_unsigned(const std::string& text, std::uint64_t& out) {
  if (text.empty()) return false;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

}  // namespace

std::string notify_status_line(std::string_view text) {
  std::string line = "STATUS=";
  for (char c : text) line.push_back(c == '\n' || c == '\r' ? ' ' : c);
  return line;
}

SystemdNotifier SystemdNotifier::from_environment() {
  std::string socket_path = take_env(kNotifySocketEnv);
  std::string usec_text = take_env(kWatchdogUsecEnv);
  std::string pid_text = take_env(kWatchdogPidEnv);
  if (socket_path.empty()) return {};

  std::uint64_t usec = 0;
  if (!usec_text.empty() && (!parse_unsigned(usec_text, usec) || usec == 0)) {
    log::warn("{}='{}': expected a positive number of microseconds; the watchdog stays off", kWatchdogUsecEnv,
              usec_text);
    usec = 0;
  }
  // WATCHDOG_PID names the process the watchdog is meant for; another one (a parent that did not
  // clear it) must not answer in its place.
  if (usec != 0 && !pid_text.empty()) {
    std::uint64_t pid = 0;
    if (!parse_unsigned(pid_text, pid)) {
      log::warn("{}='{}': expected a process id; the watchdog stays off", kWatchdogPidEnv, pid_text);
      usec = 0;
    } else if (pid != static_cast<std::uint64_t>(getpid())) {
      usec = 0;
    }
  }
  return SystemdNotifier(std::move(socket_path), usec);
}

SystemdNotifier::SystemdNotifier(std::string socket_path, std::uint64_t watchdog_usec)
    : socket_path_(std::move(socket_path)), watchdog_period_ns_(watchdog_usec * 1000 / 2) {}

SystemdNotifier::SystemdNotifier(SystemdNotifier&& other) noexcept
    : socket_path_(std::move(other.socket_path_)),
      watchdog_period_ns_(other.watchdog_period_ns_),
      last_watchdog_ns_(other.last_watchdog_ns_),
      watchdog_sent_(other.watchdog_sent_),
      warned_(other.warned_),
      fd_(std::exchange(other.fd_, -1)) {
  other.socket_path_.clear();
}

SystemdNotifier& SystemdNotifier::operator=(SystemdNotifier&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    socket_path_ = std::move(other.socket_path_);
    other.socket_path_.clear();
    watchdog_period_ns_ = other.watchdog_period_ns_;
    last_watchdog_ns_ = other.last_watchdog_ns_;
    watchdog_sent_ = other.watchdog_sent_;
    warned_ = other.warned_;
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

SystemdNotifier::~SystemdNotifier() {
  if (fd_ >= 0) close(fd_);
}

Status SystemdNotifier::send(std::string_view state) {
  if (!enabled()) return {};
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  // "@name" is the abstract namespace: a leading NUL byte, and the length counts only the name.
  bool abstract = socket_path_[0] == '@';
  if (!abstract && socket_path_[0] != '/') {
    return make_error("{}='{}': expected an absolute path or an @abstract name", kNotifySocketEnv, socket_path_);
  }
  if (socket_path_.size() >= sizeof(address.sun_path)) {
    return make_error("{}='{}': longer than a Unix socket address ({} bytes)", kNotifySocketEnv, socket_path_,
                      sizeof(address.sun_path) - 1);
  }
  std::memcpy(address.sun_path, socket_path_.data(), socket_path_.size());
  if (abstract) address.sun_path[0] = '\0';
  auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path_.size() + (abstract ? 0 : 1));

  if (fd_ < 0) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return make_error("{}='{}': socket: {}", kNotifySocketEnv, socket_path_, std::strerror(errno));
  }
  ssize_t sent;
  do {
    sent = sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&address), length);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return make_error("{}='{}': sendto: {}", kNotifySocketEnv, socket_path_, std::strerror(errno));
  if (static_cast<std::size_t>(sent) != state.size()) {
    return make_error("{}='{}': sent {} of {} bytes", kNotifySocketEnv, socket_path_, sent, state.size());
  }
  return {};
}

void SystemdNotifier::send_or_warn(std::string_view state) {
  auto result = send(state);
  if (!result && !warned_) {
    warned_ = true;
    log::warn("systemd notification failed (further failures are not logged): {}", result.error().message);
  }
}

void SystemdNotifier::ready(std::string_view text) {
  send_or_warn(fmt::format("READY=1\n{}", notify_status_line(text)));
}

void SystemdNotifier::status(std::string_view text) { send_or_warn(notify_status_line(text)); }

void SystemdNotifier::stopping(std::string_view text) {
  send_or_warn(fmt::format("STOPPING=1\n{}", notify_status_line(text)));
}

void SystemdNotifier::watchdog_tick(std::uint64_t now_ns) {
  if (!enabled() || watchdog_period_ns_ == 0) return;
  if (watchdog_sent_ && now_ns - last_watchdog_ns_ < watchdog_period_ns_) return;
  watchdog_sent_ = true;
  last_watchdog_ns_ = now_ns;
  send_or_warn("WATCHDOG=1");
}

}  // namespace sluice::sched
