// sluiced: the central scheduler. A thin main over sluice_sched's Server (docs/daemon.md).
//
//   1. parse the command line
//   2. resolve the socket ($SLUICE_SOCKET, /run/sluice as root, else $XDG_RUNTIME_DIR)
//   3. choose the mode: timeslice, or mps with sluiced's own MPS control daemon
//   4. load the policy, bind the socket, start MPS and, with --trace, sluice-trace (Server::start)
//   5. tell systemd (Type=notify) that it is ready, with a watchdog ping from the loop
//   6. serve until SIGTERM/SIGINT (then quit the MPS control daemon); SIGHUP reloads the policy
#include <grp.h>

#include <CLI/CLI.hpp>

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "notify.h"
#include "sluice/common/log.h"
#include "sluice/protocol/socket_path.h"
#include "sluice/scheduler/server.h"

namespace {

// "all" or a comma-separated list of device ordinals.
sluice::Result<std::vector<int>> parse_devices(const std::string& text) {
  std::vector<int> devices;
  if (text == "all") return devices;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    int ordinal = -1;
    auto [ptr, ec] = std::from_chars(text.data() + start, text.data() + end, ordinal);
    if (ec != std::errc() || ptr != text.data() + end || ordinal < 0 || ordinal > 63) {
      return sluice::make_error("--gpu '{}': expected 'all' or ordinals 0..63 separated by commas", text);
    }
    devices.push_back(ordinal);
    start = end + 1;
  }
  return devices;
}

// --admin-group: a group name, or a number.
sluice::Result<gid_t> parse_group(const std::string& text) {
  unsigned long number = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (ec == std::errc() && ptr == text.data() + text.size() && number < 0xffffffffUL) return static_cast<gid_t>(number);
  std::vector<char> buffer(16384);
  group entry{};
  group* found = nullptr;
  if (getgrnam_r(text.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 || found == nullptr) {
    return sluice::make_error("--admin-group '{}': no such group", text);
  }
  return found->gr_gid;
}

int run(int argc, char** argv) {
  CLI::App app{"sluiced: gives real-time GPU work priority over best-effort work"};
  std::string policy, socket, gpus = "all", level, mode = "timeslice", mps_control, metrics;
  bool mps_flag = false, metrics_any = false;
  app.add_option("--policy,-p", policy, "policy file (JSON; see docs/policy.md); default: everyone best-effort");
  app.add_option("--socket,-s", socket, "socket path (default: $SLUICE_SOCKET, /run/sluice/sluiced.sock as root, "
                                        "else $XDG_RUNTIME_DIR/sluice/sluiced.sock)");
  app.add_option("--gpu", gpus, "devices to serve: 'all' or ordinals like 0,1 (default all)");
  app.add_option("--log-level", level, "error, warn, info (default), debug, trace; SLUICE_LOG also works");
  app.add_option("--mode", mode, "timeslice (default): gating only; mps: start an MPS control daemon and partition "
                                 "best-effort work while RT is active; auto: mps, or timeslice with a warning when "
                                 "MPS does not start");
  app.add_flag("--mps", mps_flag, "same as --mode mps");
  std::string admin_group;
  std::string socket_group;
  app.add_option("--socket-group", socket_group, "a group (name or number) that owns the control socket, mode "
                                                 "0660: only its members and root may connect (default: 0666 "
                                                 "as root, every request authorised from the caller's credentials)");
  app.add_option("--admin-group", admin_group, "a group (name or number) whose members may reload the policy "
                                               "and set any client's class, besides root and sluiced's user");
  app.add_option("--mps-control", mps_control, "the MPS control program (default: $SLUICE_MPS_CONTROL, else "
                                               "nvidia-cuda-mps-control on PATH)");
  std::uint64_t mps_check_ms = sluice::sched::MpsOptions{}.check_interval_ms;
  app.add_option("--mps-check-ms", mps_check_ms, "mps mode: how often the MPS control daemon is asked whether it "
                                                 "answers; one sluiced started is started again when it does not "
                                                 "(default 10000)")
      ->check(CLI::Range(std::uint64_t{10}, std::uint64_t{3'600'000}));
  app.add_option("--metrics", metrics, "serve Prometheus metrics at http://ADDRESS/metrics: PORT (127.0.0.1), "
                                      "HOST:PORT or [V6]:PORT (default: off; docs/operations.md)");
  app.add_flag("--metrics-any-address", metrics_any, "allow --metrics on a non-loopback address");
  std::string trace_driver;
  CLI::Option* trace = app.add_option("--trace", trace_driver, "report GPU processes that bypass sluice: run sluice-trace "
                                                               "on DRIVER (default: the real libcuda.so.1); needs root "
                                                               "or CAP_BPF + CAP_PERFMON (docs/operations.md)")
                           ->expected(0, 1)
                           ->type_name("[=DRIVER]");
  CLI11_PARSE(app, argc, argv);

  sluice::log::set_component("sluiced");
  sluice::log::Level parsed = sluice::log::Level::info;
  if (!level.empty() && !sluice::log::parse_level(level, parsed)) {
    sluice::log::error("--log-level '{}': expected error, warn, info, debug or trace", level);
    return 2;
  }
  if (!level.empty() || std::getenv("SLUICE_LOG") == nullptr) sluice::log::set_level(parsed);

  sluice::sched::ServerOptions options;
  if (socket.empty()) {
    auto resolved = sluice::protocol::daemon_socket_path();
    if (!resolved) {
      sluice::log::error("{}", resolved.error().message);
      return 2;
    }
    socket = *resolved;
  }
  options.socket_path = socket;
  if (!policy.empty()) options.policy_path = policy;
  auto devices = parse_devices(gpus);
  if (!devices) {
    sluice::log::error("{}", devices.error().message);
    return 2;
  }
  options.devices = *devices;
  for (auto [text, out] : {std::pair{&admin_group, &options.admin_group}, std::pair{&socket_group, &options.socket_group}}) {
    if (text->empty()) continue;
    auto gid = parse_group(*text);
    if (!gid) {
      sluice::log::error("{}", gid.error().message);
      return 2;
    }
    *out = *gid;
  }
  options.handle_signals = true;
  options.trace = trace->count() > 0;
  options.trace_driver = trace_driver;
  // Read (and clear) $NOTIFY_SOCKET and the watchdog before anything starts a child process.
  auto notifier = sluice::sched::SystemdNotifier::from_environment();
  if (notifier.watchdog_period_ns() != 0) {
    options.on_loop = [&notifier](std::uint64_t now) { notifier.watchdog_tick(now); };
  }
  if (mps_flag) {
    if (mode != "timeslice" && mode != "mps") {
      sluice::log::error("--mps and --mode {} contradict each other", mode);
      return 2;
    }
    mode = "mps";
  }
  if (mode == "mps" || mode == "auto") {
    options.mode = sluice::protocol::SharingMode::mps;
    options.mps_fallback = mode == "auto";
  } else if (mode != "timeslice") {
    sluice::log::error("--mode '{}': expected timeslice, mps or auto", mode);
    return 2;
  }
  options.mps = sluice::sched::mps_options_for_socket(socket);
  if (mps_control.empty()) {
    if (const char* from_env = std::getenv(sluice::sched::kMpsControlEnv); from_env != nullptr && from_env[0] != '\0') {
      mps_control = from_env;
    }
  }
  if (!mps_control.empty()) options.mps.control_program = mps_control;
  options.mps.check_interval_ms = mps_check_ms;
  options.metrics_address = metrics;
  options.metrics_any_address = metrics_any;

  auto server = sluice::sched::Server::start(options);
  if (!server) {
    sluice::log::error("cannot start: {}", server.error().message);
    notifier.status(fmt::format("cannot start: {}", server.error().message));
    return 1;
  }
  notifier.ready(fmt::format("listening on {} ({} mode)", socket, mode));
  auto status = (*server)->run();
  notifier.stopping(status ? "stopping: clients fall back to passthrough" : status.error().message);
  if (!status) {
    sluice::log::error("{}", status.error().message);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    sluice::log::error("fatal: {}", error.what());
    return 1;
  }
}
