// sluicectl: shows and steers sluiced (docs/daemon.md).
//
//   sluicectl status | ps [--all] | queue | top  what the daemon sees (--json on each)
//   sluicectl policy show | validate FILE | reload
//   sluicectl set-class PID rt|be|be:N|policy
//
// Exit codes: 0 success; 1 the daemon could not do it (e.g. a reload that failed); 2 bad input
// (usage, an invalid policy file, an unknown class); 3 the daemon is unreachable; 4 permission
// denied; 5 no such client.
#include <sys/ioctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "format.h"
#include "top.h"
#include "sluice/protocol/layout.h"
#include "sluice/protocol/socket_path.h"
#include "sluice/protocol/wire.h"
#include "sluice/scheduler/control.h"
#include "sluice/scheduler/policy.h"

namespace {

using nlohmann::json;

enum Exit : int { kOk = 0, kFailed = 1, kBadInput = 2, kUnreachable = 3, kPermission = 4, kNotFound = 5 };

struct Reply {
  int exit = kOk;
  json body;
};

int exit_for_code(const std::string& code) {
  namespace control = sluice::sched::control;
  if (code == control::kCodePermission) return kPermission;
  if (code == control::kCodeBadRequest) return kBadInput;
  if (code == control::kCodeNotFound) return kNotFound;
  return kFailed;
}

// One request on a fresh connection. Connection problems become kUnreachable or kPermission.
Reply request(const std::string& socket_option, const json& body) {
  std::vector<std::string> paths = socket_option.empty() ? sluice::protocol::client_socket_paths()
                                                         : std::vector<std::string>{socket_option};
  std::string failures;
  for (const std::string& path : paths) {
    auto fd = sluice::protocol::connect_unix(path);
    if (!fd) {
      if (errno == EACCES || errno == EPERM) {
        return {kPermission, {{"ok", false}, {"error", fmt::format("permission denied: {}", fd.error().message)}}};
      }
      failures += fmt::format("{}{}", failures.empty() ? "" : "; ", fd.error().message);
      continue;
    }
    sluice::protocol::set_io_timeout(*fd, 5000);
    sluice::protocol::Hello hello{};
    hello.magic = sluice::protocol::kMagic;
    hello.abi_major = sluice::protocol::kAbiMajor;
    hello.abi_minor = sluice::protocol::kAbiMinor;
    hello.role = sluice::protocol::Role::control;
    hello.pid = static_cast<std::uint32_t>(getpid());
    auto sent = sluice::protocol::send_frame(*fd, std::string_view(reinterpret_cast<const char*>(&hello), sizeof(hello)));
    if (sent) sent = sluice::protocol::send_frame(*fd, body.dump());
    auto frame = sent ? sluice::protocol::recv_frame(*fd) : sluice::Result<sluice::protocol::Frame>(sent.error());
    close(*fd);
    if (!frame) {
      return {kUnreachable, {{"ok", false}, {"error", fmt::format("{}: {}", path, frame.error().message)}}};
    }
    json reply = json::parse(frame->bytes, nullptr, false);
    if (reply.is_discarded() || !reply.is_object()) {
      return {kFailed, {{"ok", false}, {"error", fmt::format("{}: the daemon's reply is not JSON", path)}}};
    }
    if (!reply.value("ok", false)) return {exit_for_code(reply.value("code", "")), reply};
    return {kOk, reply};
  }
  return {kUnreachable, {{"ok", false}, {"error", fmt::format("sluiced is not reachable: {}", failures)}}};
}

// Prints a reply: as JSON, or through `human` when it succeeded.
int print(const Reply& reply, bool as_json, std::string (*human)(const json&)) {
  if (as_json) {
    std::cout << reply.body.dump(2) << std::endl;
  } else if (reply.exit == kOk) {
    std::cout << human(reply.body);
  } else {
    std::cerr << "sluicectl: " << reply.body.value("error", "failed") << std::endl;
  }
  return reply.exit;
}

std::string format_ok(const json& body) {
  std::string out = "ok";
  for (const char* key : {"class", "rule", "source"}) {
    if (body.contains(key)) out += fmt::format(" {}={}", key, body[key].is_string() ? body[key].get<std::string>() : body[key].dump());
  }
  return out + "\n";
}

int validate(const std::string& file, bool as_json) {
  auto policy = sluice::sched::load_policy_file(file);
  if (as_json) {
    json out = policy ? json{{"ok", true}, {"file", file}, {"rules", policy->rules.size()},
                             {"policy", sluice::sched::policy_to_json(*policy)}}
                      : json{{"ok", false}, {"file", file}, {"error", policy.error().message}};
    std::cout << out.dump(2) << std::endl;
  } else if (policy) {
    std::cout << fmt::format("{}: valid (version {}, {} rules, sharing {})\n", file, policy->version,
                             policy->rules.size(), sluice::sched::sharing_name(policy->scheduler.sharing));
  } else {
    std::cerr << "sluicectl: " << policy.error().message << std::endl;
  }
  return policy ? kOk : kBadInput;
}

// A live view: on a terminal each frame is redrawn in place (never scrolling); `once` prints one
// plain frame. Frames on a pipe follow each other.
int top(const std::string& socket, bool as_json, double interval_s, unsigned count, bool once) {
  bool live = !once && !as_json && isatty(STDOUT_FILENO);
  if (live) std::cout << "\033[2J";
  sluice::ctl::KillCounts previous;
  for (unsigned i = 0; count == 0 || i < count; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::duration<double>(interval_s));
    Reply status = request(socket, {{"cmd", "status"}});
    if (status.exit != kOk) return print(status, as_json, sluice::ctl::format_status);
    Reply ps = request(socket, {{"cmd", "ps"}});
    Reply queue = request(socket, {{"cmd", "queue"}, {"limit", 10}});
    if (as_json) {
      std::cout << json{{"status", status.body}, {"ps", ps.body}, {"queue", queue.body}}.dump() << std::endl;
      continue;
    }
    std::string frame = sluice::ctl::format_top(status.body, ps.body, queue.body, i > 0 ? &previous : nullptr, interval_s);
    previous = sluice::ctl::kill_counts(ps.body);
    if (live) {
      winsize size{};
      bool known = ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0;
      std::cout << sluice::ctl::in_place(frame, known ? size.ws_row : 0, known ? size.ws_col : 0) << std::flush;
    } else {
      std::cout << (i > 0 ? "\n" : "") << frame << std::flush;
    }
  }
  return kOk;
}

int run(int argc, char** argv) {
  CLI::App app{"sluicectl: shows and steers sluiced"};
  app.require_subcommand(1);
  std::string socket;
  bool as_json = false;
  app.add_option("--socket,-s", socket, "sluiced's socket (default: $SLUICE_SOCKET, /run/sluice/sluiced.sock, "
                                        "$XDG_RUNTIME_DIR/sluice/sluiced.sock)");
  auto json_flag = [&](CLI::App* sub) { sub->add_flag("--json", as_json, "print the daemon's reply as JSON"); };

  CLI::App* status = app.add_subcommand("status", "daemon, devices, policy and counters");
  CLI::App* ps = app.add_subcommand("ps", "each client: class, queue, share of GPU time");
  bool all = false;
  ps->add_flag("--all", all, "also the processes that call the GPU driver outside sluice (sluiced --trace)");
  CLI::App* queue = app.add_subcommand("queue", "operations waiting in clients' queues now");
  std::size_t limit = 100;
  queue->add_option("--limit", limit, "at most this many entries");
  CLI::App* top_cmd = app.add_subcommand("top", "status, ps and queue, refreshed");
  double interval = 1.0;
  unsigned count = 0;
  top_cmd->add_option("--interval", interval, "seconds between refreshes");
  top_cmd->add_option("--count", count, "refreshes before exiting (0: until interrupted)");
  bool once = false;
  top_cmd->add_flag("--once", once, "print one frame without terminal escapes and exit");
  for (CLI::App* sub : {status, ps, queue, top_cmd}) json_flag(sub);

  CLI::App* policy = app.add_subcommand("policy", "the policy in force");
  policy->require_subcommand(1);
  CLI::App* show = policy->add_subcommand("show", "print the policy in force (normalised)");
  json_flag(show);
  CLI::App* validate_cmd = policy->add_subcommand("validate", "check a policy file without a daemon");
  std::string file;
  validate_cmd->add_option("FILE", file, "policy file")->required();
  json_flag(validate_cmd);
  CLI::App* reload = policy->add_subcommand("reload", "reload the policy file (as SIGHUP)");
  json_flag(reload);

  CLI::App* set_class = app.add_subcommand("set-class", "change a client's class until it exits");
  std::uint32_t pid = 0;
  std::string cls;
  set_class->add_option("PID", pid, "the client's process id")->required();
  set_class->add_option("CLASS", cls, "rt, be, be:<priority>, or policy (undo)")->required();
  json_flag(set_class);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    int code = app.exit(error);
    return code == 0 ? kOk : kBadInput;
  }

  if (status->parsed()) return print(request(socket, {{"cmd", "status"}}), as_json, sluice::ctl::format_status);
  if (ps->parsed() && all) {
    Reply clients = request(socket, {{"cmd", "ps"}});
    Reply daemon = clients.exit == kOk ? request(socket, {{"cmd", "status"}}) : clients;
    if (daemon.exit != kOk) return print(daemon, as_json, sluice::ctl::format_ps_all);
    clients.body["unmanaged"] = daemon.body.value("unmanaged", json(nullptr));
    return print(clients, as_json, sluice::ctl::format_ps_all);
  }
  if (ps->parsed()) return print(request(socket, {{"cmd", "ps"}}), as_json, sluice::ctl::format_ps);
  if (queue->parsed()) return print(request(socket, {{"cmd", "queue"}, {"limit", limit}}), as_json, sluice::ctl::format_queue);
  if (top_cmd->parsed()) return top(socket, as_json, interval, once ? 1 : count, once);
  if (show->parsed()) return print(request(socket, {{"cmd", "policy"}}), as_json, sluice::ctl::format_policy);
  if (validate_cmd->parsed()) return validate(file, as_json);
  if (reload->parsed()) return print(request(socket, {{"cmd", "reload"}}), as_json, format_ok);
  if (set_class->parsed()) {
    if (cls != "policy" && !sluice::sched::class_from_label(cls)) {
      std::cerr << "sluicectl: unknown class '" << cls << "' (rt, be, be:<priority>, policy)" << std::endl;
      return kBadInput;
    }
    return print(request(socket, {{"cmd", "set-class"}, {"pid", pid}, {"class", cls}}), as_json, format_ok);
  }
  return kBadInput;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "sluicectl: " << error.what() << std::endl;
    return kFailed;
  }
}
