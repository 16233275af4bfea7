#include "sluice/scheduler/mps.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "sluice/common/clock.h"
#include "sluice/common/log.h"
#include "subprocess.h"

namespace sluice::sched {

namespace {

// The pipe directory of a system daemon (root) must be searchable by every user's clients, as its
// socket's directory is; everything else is private.
Status make_private_directory(const std::string& dir, mode_t mode) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error("{}: cannot create: {}", dir, ec.message());
  struct stat st {};
  if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return make_error("{}: not a directory", dir);
  if (st.st_uid != geteuid())
    return make_error("{}: owned by uid {}, not by sluiced's uid {}", dir, st.st_uid, geteuid());
  if (chmod(dir.c_str(), mode) != 0) return make_error("{}: chmod: {}", dir, std::strerror(errno));
  return {};
}

std::string first_line(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return line.empty() ? std::string("no output") : line;
}

}  // namespace

const char* mps_state_name(MpsState state) {
  switch (state) {
    case MpsState::started:
      return "started";
    case MpsState::adopted:
      return "adopted";
    case MpsState::lost:
      return "lost";
    case MpsState::stopped:
      return "stopped";
  }
  return "?";
}

MpsOptions mps_options_for_socket(const std::string& socket_path) {
  std::filesystem::path base = std::filesystem::path(socket_path).parent_path();
  if (base.empty()) base = ".";
  MpsOptions options;
  options.pipe_dir = (base / "mps" / "pipe").string();
  options.log_dir = (base / "mps" / "log").string();
  return options;
}

Result<std::unique_ptr<MpsControl>> MpsControl::start(const MpsOptions& options) {
  std::string program = find_on_path(options.control_program);
  if (program.empty()) {
    return make_error("{}: not found on PATH or not executable (set --mps-control PATH or {})",
                      options.control_program, kMpsControlEnv);
  }
  if (options.pipe_dir.empty() || options.pipe_dir[0] != '/' || options.pipe_dir.size() >= 200) {
    return make_error("MPS pipe directory '{}' must be an absolute path shorter than 200 bytes",
                      options.pipe_dir);
  }
  std::filesystem::path parent = std::filesystem::path(options.pipe_dir).parent_path();
  if (auto status = make_private_directory(parent.string(), geteuid() == 0 ? 0755 : 0700); !status)
    return std::move(status).take_error();
  if (auto status = make_private_directory(options.pipe_dir, geteuid() == 0 ? 0755 : 0700); !status)
    return std::move(status).take_error();
  if (auto status = make_private_directory(options.log_dir, 0700); !status)
    return std::move(status).take_error();

  std::unique_ptr<MpsControl> control(new MpsControl(options, program));
  // One control daemon per pipe directory: one that answers already is used as it is.
  if (control->send("get_server_list")) {
    control->state_ = MpsState::adopted;
    log::warn(
        "an MPS control daemon already answers on {}; using it (sluiced will leave it running at "
        "exit)",
        options.pipe_dir);
    return control;
  }
  if (auto status = control->launch(); !status) return std::move(status).take_error();
  control->owned_ = true;
  control->state_ = MpsState::started;
  log::info("MPS control daemon started: {} (pipe {}, log {})", program, options.pipe_dir,
            options.log_dir);
  return control;
}

Status MpsControl::launch() {
  auto started = run_command(
      {program_, "-d"},
      {"CUDA_MPS_PIPE_DIRECTORY=" + options_.pipe_dir, "CUDA_MPS_LOG_DIRECTORY=" + options_.log_dir},
      "", options_.timeout_ms);
  if (!started) return std::move(started).take_error();
  if (started->timed_out)
    return make_error("{} -d did not return within {} ms", program_, options_.timeout_ms);
  if (started->exit_code != 0) {
    return make_error("{} -d failed (exit code {}): {}", program_, started->exit_code,
                      first_line(started->output));
  }
  // It daemonizes before its pipe is ready: give it until the timeout to answer.
  const std::uint64_t deadline = now_ns() + options_.timeout_ms * 1'000'000;
  auto healthy = send("get_server_list");
  while (!healthy && now_ns() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    healthy = send("get_server_list");
  }
  if (!healthy) {
    return make_error("{} -d started but does not answer get_server_list on {}: {} (log: {})",
                      program_, options_.pipe_dir, healthy.error().message, options_.log_dir);
  }
  return {};
}

MpsControl::~MpsControl() {
  if (auto status = stop(); !status) log::warn("{}", status.error().message);
}

Result<std::string> MpsControl::send(const std::string& command) const {
  auto result = run_command({program_},
                            {"CUDA_MPS_PIPE_DIRECTORY=" + options_.pipe_dir,
                             "CUDA_MPS_LOG_DIRECTORY=" + options_.log_dir},
                            command + "\n", options_.timeout_ms);
  if (!result) return std::move(result).take_error();
  if (result->timed_out)
    return make_error("'{}' got no answer within {} ms", command, options_.timeout_ms);
  if (result->exit_code != 0) {
    return make_error("'{}' failed (exit code {}): {}", command, result->exit_code,
                      first_line(result->output));
  }
  return std::move(result->output);
}

Status MpsControl::check() {
  auto answer = send("get_server_list");
  MpsState seen = state_.load();
  if (answer) {
    if (seen == MpsState::lost &&
        state_.compare_exchange_strong(seen, owned_ ? MpsState::started : MpsState::adopted)) {
      log::info("the MPS control daemon on {} answers again", options_.pipe_dir);
    }
    return {};
  }
  if ((seen == MpsState::started || seen == MpsState::adopted) &&
      state_.compare_exchange_strong(seen, MpsState::lost)) {
    log::warn("the MPS control daemon on {} stopped answering ({}); clients that start now run without MPS{}",
              options_.pipe_dir, answer.error().message,
              owned_ ? "; starting it again" : " until its owner restarts it");
  }
  if (!owned_ || state_.load() != MpsState::lost || now_ns() < next_restart_ns_) {
    return std::move(answer).take_error();
  }
  next_restart_ns_ = now_ns() + kRestartBackoffMs * 1'000'000;
  if (auto started = launch(); !started) {
    log::warn("the MPS control daemon on {} could not be started again: {} (next try in {} s)",
              options_.pipe_dir, started.error().message, kRestartBackoffMs / 1000);
    return std::move(started).take_error();
  }
  seen = MpsState::lost;
  if (state_.compare_exchange_strong(seen, MpsState::started)) {  // stop() may have come first
    auto count = restarts_.fetch_add(1) + 1;
    log::info("MPS control daemon on {} started again ({} restart{})", options_.pipe_dir, count,
              count == 1 ? "" : "s");
  }
  return {};
}

void MpsControl::watch() {
  end_watch();
  watch_stop_ = false;
  watch_thread_ = std::thread([this, interval_ms = options_.check_interval_ms] {
    std::unique_lock lock(watch_mu_);
    while (!watch_cv_.wait_for(lock, std::chrono::milliseconds(interval_ms),
                               [this] { return watch_stop_; })) {
      lock.unlock();
      (void)check();
      lock.lock();
    }
  });
}

void MpsControl::end_watch() {
  {
    std::lock_guard lock(watch_mu_);
    watch_stop_ = true;
  }
  watch_cv_.notify_all();
  if (watch_thread_.joinable()) watch_thread_.join();
}

Status MpsControl::stop() {
  end_watch();
  if (!owned_) return {};
  MpsState was = state_.exchange(MpsState::stopped);
  if (was == MpsState::stopped || was == MpsState::lost) return {};  // nothing that answers to quit
  auto quit = send("quit");
  if (!quit)
    return make_error("MPS control daemon on {}: quit: {}", options_.pipe_dir,
                      quit.error().message);
  // quit returns once the control daemon has the command; wait until it no longer answers.
  const std::uint64_t deadline = now_ns() + options_.timeout_ms * 1'000'000;
  while (now_ns() < deadline) {
    if (!send("get_server_list")) {
      log::info("MPS control daemon on {} stopped", options_.pipe_dir);
      return {};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return make_error("MPS control daemon on {} still answers {} ms after quit", options_.pipe_dir,
                    options_.timeout_ms);
}

}  // namespace sluice::sched
