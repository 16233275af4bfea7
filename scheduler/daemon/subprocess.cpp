#include "subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "sluice/common/clock.h"

extern char** environ;

namespace sluice::sched {

namespace {

constexpr std::size_t kMaxOutput = 64 * 1024;

// The inherited environment with `extra` entries replacing those of the same name.
std::vector<std::string> merged_environment(const std::vector<std::string>& extra) {
  std::vector<std::string> merged;
  auto name_of = [](const std::string& entry) { return entry.substr(0, entry.find('=')); };
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string text = *entry;
    bool replaced = false;
    for (const std::string& e : extra) replaced = replaced || name_of(e) == name_of(text);
    if (!replaced) merged.push_back(std::move(text));
  }
  merged.insert(merged.end(), extra.begin(), extra.end());
  return merged;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

bool executable(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

// Starts `program` with stdin from `input_fd` and stdout and stderr into `output_fd`.
Result<pid_t> spawn_child(const std::string& program, const std::vector<std::string>& argv,
                          const std::vector<std::string>& env, int input_fd, int output_fd) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, input_fd, STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, output_fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, output_fd, STDERR_FILENO);
  // The child starts with default signal dispositions and an empty mask (sluiced blocks SIGTERM
  // and friends for its signalfd; a helper must not inherit that).
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<std::string> args = argv;
  std::vector<std::string> environment = merged_environment(env);
  std::vector<char*> arg_ptrs = pointers(args), env_ptrs = pointers(environment);
  pid_t pid = -1;
  int spawned =
      posix_spawn(&pid, program.c_str(), &actions, &attr, arg_ptrs.data(), env_ptrs.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (spawned != 0) return make_error("{}: cannot start: {}", program, std::strerror(spawned));
  return pid;
}

}  // namespace

std::string find_on_path(const std::string& name) {
  if (name.empty()) return {};
  if (name.find('/') != std::string::npos) return executable(name) ? name : std::string();
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string dir = dirs.substr(start, end - start);
    if (!dir.empty()) {
      std::string candidate = dir + "/" + name;
      if (executable(candidate)) return candidate;
    }
    start = end + 1;
  }
  return {};
}

Result<Child> spawn_reading(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  if (argv.empty()) return make_error("no program to run");
  std::string program = find_on_path(argv[0]);
  if (program.empty()) return make_error("{}: not found or not executable", argv[0]);
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) return make_error("/dev/null: {}", std::strerror(errno));
  int out_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    close(null_fd);
    return make_error("pipe: {}", std::strerror(errno));
  }
  auto spawned = spawn_child(program, argv, env, null_fd, out_pipe[1]);
  close(null_fd);
  close(out_pipe[1]);
  if (!spawned) {
    close(out_pipe[0]);
    return std::move(spawned).take_error();
  }
  return Child{*spawned, out_pipe[0]};
}

Result<CommandResult> run_command(const std::vector<std::string>& argv,
                                  const std::vector<std::string>& env, const std::string& input,
                                  std::uint64_t timeout_ms) {
  if (argv.empty()) return make_error("no program to run");
  std::string program = find_on_path(argv[0]);
  if (program.empty()) return make_error("{}: not found or not executable", argv[0]);

  int in_pipe[2], out_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0) return make_error("pipe: {}", std::strerror(errno));
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    close(in_pipe[0]);
    close(in_pipe[1]);
    return make_error("pipe: {}", std::strerror(errno));
  }
  auto spawned = spawn_child(program, argv, env, in_pipe[0], out_pipe[1]);
  close(in_pipe[0]);
  close(out_pipe[1]);
  if (!spawned) {
    close(in_pipe[1]);
    close(out_pipe[0]);
    return std::move(spawned).take_error();
  }
  pid_t pid = *spawned;

  // Input is small (a control command); a child that does not read it gets EPIPE, not a hang.
  fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);
  signal(SIGPIPE, SIG_IGN);
  if (!input.empty()) {
    ssize_t written = write(in_pipe[1], input.data(), input.size());
    (void)written;
  }
  close(in_pipe[1]);

  CommandResult result;
  const std::uint64_t deadline = now_ns() + timeout_ms * 1'000'000;
  fcntl(out_pipe[0], F_SETFL, O_NONBLOCK);
  bool open = true;
  int status = 0;
  bool reaped = false;
  while (true) {
    if (!reaped) {
      pid_t done = waitpid(pid, &status, WNOHANG);
      if (done == pid) reaped = true;
    }
    // Output after the child exited can still be in the pipe; a daemonizing child may also have
    // passed the pipe on to a grandchild, so stop reading once the child is gone and the pipe is
    // empty for now.
    std::uint64_t now = now_ns();
    if (now >= deadline) break;
    if (!open && reaped) break;
    pollfd pfd{out_pipe[0], POLLIN, 0};
    int wait_ms = reaped ? 0 : 10;
    int ready = open ? poll(&pfd, 1, wait_ms) : (usleep(10'000), 0);
    if (ready > 0) {
      char chunk[4096];
      ssize_t n = read(out_pipe[0], chunk, sizeof(chunk));
      if (n > 0) {
        if (result.output.size() < kMaxOutput)
          result.output.append(chunk,
                               static_cast<std::size_t>(std::min<ssize_t>(
                                   n, static_cast<ssize_t>(kMaxOutput - result.output.size()))));
        continue;
      }
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) open = false;
    } else if (reaped) {
      break;
    }
  }
  close(out_pipe[0]);
  if (!reaped) {
    result.timed_out = true;
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    result.exit_code = 128 + SIGKILL;
    return result;
  }
  result.exit_code =
      WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return result;
}

}  // namespace sluice::sched
