#include "tracer.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "sluice/common/log.h"
#include "subprocess.h"

namespace sluice::sched {

using nlohmann::json;

namespace {

constexpr std::size_t kMaxLine = 16 << 20;  // a line of 65536 processes fits
constexpr int kStopGraceMs = 2000;

}  // namespace

json unmanaged_json(const std::vector<trace::ProcessCounts>& traced, const std::set<std::uint32_t>& clients) {
  json processes = json::array();
  std::uint64_t launches = 0;
  for (const trace::ProcessCounts& p : traced) {
    if (clients.count(p.pid) != 0) continue;
    processes.push_back({{"pid", p.pid}, {"comm", p.comm}, {"launches", p.launches}, {"copies", p.copies}});
    launches += p.launches;
  }
  return {{"launches_total", launches}, {"processes", processes}};
}

std::string default_trace_program() {
  if (const char* from_env = std::getenv("SLUICE_TRACE_PROGRAM"); from_env != nullptr && from_env[0] != '\0') {
    return from_env;
  }
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto sibling = self.parent_path() / "sluice-trace";
    if (access(sibling.c_str(), X_OK) == 0) return sibling.string();
  }
  return "sluice-trace";
}

Tracer::Tracer(TracerOptions options) : options_(std::move(options)) {
  std::vector<std::string> argv = {options_.program, "--json", "--interval", options_.interval};
  if (!options_.driver.empty()) {
    argv.push_back("--driver");
    argv.push_back(options_.driver);
  }
  auto child = spawn_reading(argv, {});
  if (!child || pipe2(wake_, O_CLOEXEC) != 0) {
    std::string why = child ? fmt::format("pipe: {}", std::strerror(errno)) : child.error().message;
    if (child) {
      close(child->output_fd);
      kill(child->pid, SIGKILL);
      waitpid(child->pid, nullptr, 0);
    }
    state_ = "failed";
    error_ = why;
    log::warn("unmanaged processes are not traced: {}", why);
    return;
  }
  pid_ = child->pid;
  log::info("tracing the driver's launches and copies with {} (pid {})", options_.program, pid_);
  reader_ = std::thread([this, fd = child->output_fd] { read_output(fd); });
}

Tracer::~Tracer() {
  if (pid_ > 0) kill(pid_, SIGTERM);
  if (wake_[1] >= 0) {
    char byte = 1;
    ssize_t written = write(wake_[1], &byte, 1);
    (void)written;
  }
  if (reader_.joinable()) reader_.join();
  if (pid_ > 0) {
    int status = 0;
    for (int waited = 0; waitpid(pid_, &status, WNOHANG) == 0; waited += 10) {
      if (waited >= kStopGraceMs) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      usleep(10'000);
    }
  }
  for (int fd : wake_) {
    if (fd >= 0) close(fd);
  }
}

void Tracer::note_client(std::uint32_t pid) {
  std::lock_guard lock(mu_);
  clients_.insert(pid);
}

json Tracer::status() const {
  std::lock_guard lock(mu_);
  json out = unmanaged_json(traced_, clients_);
  out["state"] = state_;
  out["driver"] = options_.driver.empty() ? json(nullptr) : json(options_.driver);
  if (!error_.empty()) out["error"] = error_;
  return out;
}

// Reads the child's lines until it closes its output or the destructor wakes the reader.
void Tracer::read_output(int fd) {
  std::string pending;
  bool stopping = false;
  while (!stopping) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents != 0) stopping = true;  // still take what the child wrote
    if (fds[0].revents == 0) continue;
    char chunk[8192];
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(chunk, static_cast<std::size_t>(n));
    for (std::size_t end; (end = pending.find('\n')) != std::string::npos;) {
      on_line(pending.substr(0, end));
      pending.erase(0, end + 1);
    }
    if (pending.size() > kMaxLine) pending.clear();
  }
  close(fd);
  if (stopping) return;
  // WNOWAIT leaves the child a zombie, so its pid stays valid until the destructor reaps it.
  siginfo_t info{};
  if (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOWAIT) == 0) on_exit(info);
}

void Tracer::on_line(const std::string& line) {
  if (line.empty()) return;
  if (line.front() != '{') {
    // The tracer's own messages (stderr): its error when it fails, its probe count when it starts.
    log::info("{}", line);
    std::lock_guard lock(mu_);
    last_message_ = line;
    return;
  }
  auto processes = trace::processes_from_json_line(line);
  if (!processes) {
    SLUICE_LOG_EVERY_SECOND(warn, "sluice-trace: a line sluiced cannot read: {}", processes.error().message);
    return;
  }
  std::lock_guard lock(mu_);
  traced_ = std::move(*processes);
  state_ = "running";
}

void Tracer::on_exit(const siginfo_t& info) {
  int code = info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
  std::lock_guard lock(mu_);
  state_ = "failed";
  error_ = fmt::format("{} exited with status {}{}{}", options_.program, code, last_message_.empty() ? "" : ": ",
                       last_message_);
  log::warn("unmanaged processes are not traced any more: {}", error_);
}

}  // namespace sluice::sched
