// sluice: runs a program under sluice (docs/operations.md, "sluice run").
//
//   sluice run [--class rt|be|be:N] [--label L] [--socket PATH] [--policy-hint] -- CMD [ARG...]
//
//   1. find libsluice.so: $SLUICE_SHIM, else next to this binary, ../lib/, ../lib/sluice/, or the
//      build tree's ../../shim/
//   2. prepend it to LD_PRELOAD (kept as is when it is already there), set SLUICE_CLASS from
//      --class or --label and SLUICE_SOCKET from --socket; children of CMD inherit all of it
//   3. say once on stderr when no sluiced answers on the socket (CMD then runs unmanaged until one
//      starts: the shim keeps trying)
//   4. execvp CMD, so that its pid, signals and exit status are its own
//
// Exit codes (before CMD runs): 2 bad arguments or no libsluice.so, 126 CMD is not executable,
// 127 CMD is not found; afterwards CMD's own.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/protocol/layout.h"
#include "sluice/protocol/socket_path.h"
#include "sluice/protocol/wire.h"
#include "sluice/scheduler/policy.h"

namespace {

namespace fs = std::filesystem;

constexpr int kBadInput = 2;
constexpr int kNotExecutable = 126;
constexpr int kNotFound = 127;
constexpr const char* kShimName = "libsluice.so";

[[noreturn]] void fail(int code, const std::string& message) {
  std::cerr << "sluice: " << message << std::endl;
  std::exit(code);
}

std::optional<fs::path> existing(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  fs::path absolute = fs::canonical(path, ec);
  return ec ? std::nullopt : std::optional<fs::path>(absolute);
}

// $SLUICE_SHIM wins (and must exist); else the places an install or a build tree keeps it.
fs::path find_shim() {
  if (const char* explicit_shim = std::getenv("SLUICE_SHIM"); explicit_shim != nullptr && explicit_shim[0] != '\0') {
    auto found = existing(explicit_shim);
    if (!found) fail(kBadInput, fmt::format("SLUICE_SHIM={}: no such file", explicit_shim));
    return *found;
  }
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) fail(kBadInput, fmt::format("/proc/self/exe: {}; set SLUICE_SHIM to libsluice.so's path", ec.message()));
  fs::path dir = self.parent_path();
  std::vector<fs::path> candidates = {dir / kShimName, dir / ".." / "lib" / kShimName,
                                      dir / ".." / "lib" / "sluice" / kShimName, dir / ".." / ".." / "shim" / kShimName};
  for (const fs::path& candidate : candidates) {
    if (auto found = existing(candidate)) return *found;
  }
  std::string tried;
  for (const fs::path& candidate : candidates) tried += "\n  " + candidate.lexically_normal().string();
  fail(kBadInput, fmt::format("cannot find {}; looked at:{}\nset SLUICE_SHIM to its path", kShimName, tried));
}

// LD_PRELOAD with the shim first. Entries are separated by colons or spaces (ld.so(8)); an entry
// that already names the shim (same file) leaves the list as it is.
std::string preload_with(const fs::path& shim, const char* current) {
  std::string list = current == nullptr ? "" : current;
  std::size_t start = 0;
  while (start < list.size()) {
    std::size_t end = list.find_first_of(": ", start);
    if (end == std::string::npos) end = list.size();
    if (end > start) {
      std::error_code ec;
      fs::path entry = list.substr(start, end - start);
      if (entry == shim || fs::equivalent(entry, shim, ec)) return list;
    }
    start = end + 1;
  }
  return list.empty() ? shim.string() : shim.string() + ":" + list;
}

// True when some socket sluiced could listen on accepts a connection.
bool daemon_answers(const std::string& socket, std::string& where) {
  std::vector<std::string> paths =
      socket.empty() ? sluice::protocol::client_socket_paths() : std::vector<std::string>{socket};
  for (const std::string& path : paths) {
    if (auto fd = sluice::protocol::connect_unix(path)) {
      close(*fd);
      return true;
    }
  }
  where = fmt::format("{}", fmt::join(paths, " or "));
  return false;
}

// The file name sluiced's `exe` match sees: CMD resolved through PATH, links followed.
std::string exe_name(const std::string& command) {
  fs::path path = command;
  if (command.find('/') == std::string::npos) {
    const char* env_path = std::getenv("PATH");
    std::string dirs = env_path == nullptr ? "/usr/bin:/bin" : env_path;
    std::size_t start = 0;
    while (start <= dirs.size()) {
      std::size_t end = dirs.find(':', start);
      if (end == std::string::npos) end = dirs.size();
      fs::path candidate = fs::path(dirs.substr(start, end - start)) / command;
      if (access(candidate.c_str(), X_OK) == 0) {
        path = candidate;
        break;
      }
      start = end + 1;
    }
  }
  std::error_code ec;
  fs::path resolved = fs::canonical(path, ec);
  return (ec ? path : resolved).filename().string();
}

// A policy rule (docs/policy.md) that gives this command `cls`. A label can only lower a class, so
// making a program RT takes a rule that matches what sluiced sees of the process.
std::string policy_hint(const std::vector<std::string>& command, const std::string& cls) {
  std::string cmdline;
  for (const std::string& arg : command) {
    if (!cmdline.empty()) cmdline += ' ';
    // fnmatch(3) would read these as pattern characters.
    for (char c : arg) {
      if (c == '*' || c == '?' || c == '[' || c == '\\') cmdline += '\\';
      cmdline += c;
    }
  }
  nlohmann::json rule = {{"name", "sluice-run-" + exe_name(command[0])},
                         {"match", {{"exe", exe_name(command[0])}, {"cmdline", cmdline}}},
                         {"class", cls.empty() ? "rt" : cls.substr(0, cls.find(':'))}};
  return rule.dump();
}

int run(int argc, char** argv) {
  CLI::App app{"sluice: runs a program with its GPU work scheduled by sluiced"};
  app.require_subcommand(1);
  CLI::App* run_cmd = app.add_subcommand("run", "run CMD with libsluice.so preloaded (children inherit it)");
  std::string cls, label, socket;
  bool hint = false;
  run_cmd->add_option("--class", cls, "rt, be or be:N: sets SLUICE_CLASS, which can only lower the class the "
                                      "policy gives (docs/policy.md)");
  run_cmd->add_option("--label", label, "a label for the policy's `label` matches (sets SLUICE_CLASS)");
  run_cmd->add_option("--socket,-s", socket, "sluiced's socket (sets SLUICE_SOCKET; default: $SLUICE_SOCKET, "
                                             "/run/sluice/sluiced.sock, $XDG_RUNTIME_DIR/sluice/sluiced.sock)");
  run_cmd->add_flag("--policy-hint", hint, "print a policy rule that matches CMD (for the class --class names, "
                                           "else rt) on stderr, then run it");
  // Everything from the first positional argument on is CMD's, options included.
  run_cmd->prefix_command();
  run_cmd->footer("CMD and its arguments follow the options, after --:\n"
                  "  sluice run [OPTIONS] -- CMD [ARG...]\n"
                  "  sluice run --class be -- torchrun --nproc-per-node 2 train.py\n"
                  "Exit status: CMD's; 2 bad arguments or no libsluice.so; 126 CMD not executable; 127 not found");

  if (argc > 1 && argv[1][0] != '-' && std::string_view(argv[1]) != "run") {
    fail(kBadInput, fmt::format("unknown command '{}' (sluice run [OPTIONS] -- CMD [ARG...])", argv[1]));
  }
  // sluice's own arguments end at the first "--"; CLI11 sees only those.
  int own = argc;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--") {
      own = i;
      break;
    }
  }
  try {
    app.parse(own, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error) == 0 ? 0 : kBadInput;
  }
  std::vector<std::string> command = run_cmd->remaining();
  if (!command.empty() && command.front().rfind('-', 0) == 0) {
    fail(kBadInput, fmt::format("run: unknown option '{}' (sluice run --help)", command.front()));
  }
  // `sluice run CMD -- X`: that "--" is CMD's.
  if (own < argc && !command.empty()) command.emplace_back("--");
  for (int i = own + 1; i < argc; ++i) command.emplace_back(argv[i]);
  if (command.empty()) fail(kBadInput, "run: no command given (sluice run [OPTIONS] -- CMD [ARG...])");

  if (!cls.empty() && !label.empty()) {
    fail(kBadInput, fmt::format("--class {} and --label {}: both set SLUICE_CLASS, a client has one label; give one "
                                "(a label rule in the policy can set the class too)", cls, label));
  }
  if (!cls.empty() && !sluice::sched::class_from_label(cls)) {
    fail(kBadInput, fmt::format("--class '{}': expected rt, be or be:<priority>", cls));
  }
  if (!label.empty() && (label.size() >= sluice::protocol::kLabelBytes || !sluice::sched::valid_label(label))) {
    fail(kBadInput, fmt::format("--label '{}': expected letters, digits and _-.: only, under {} bytes", label,
                                sluice::protocol::kLabelBytes));
  }

  fs::path shim = find_shim();
  setenv("LD_PRELOAD", preload_with(shim, std::getenv("LD_PRELOAD")).c_str(), 1);
  if (!cls.empty()) setenv("SLUICE_CLASS", cls.c_str(), 1);
  if (!label.empty()) setenv("SLUICE_CLASS", label.c_str(), 1);
  if (!socket.empty()) setenv(sluice::protocol::kSocketEnv, socket.c_str(), 1);

  std::string where;
  if (!daemon_answers(socket, where)) {
    std::cerr << fmt::format("sluice: no sluiced answers at {}; {} runs unmanaged until one starts", where,
                             command[0])
              << std::endl;
  }
  if (hint) std::cerr << "sluice: policy rule for this command: " << policy_hint(command, cls) << std::endl;

  std::vector<char*> args;
  for (std::string& arg : command) args.push_back(arg.data());
  args.push_back(nullptr);
  execvp(args[0], args.data());
  int error = errno;
  fail(error == ENOENT || error == ENOTDIR ? kNotFound : kNotExecutable,
       fmt::format("{}: {}", command[0], error == ENOENT ? "command not found" : std::strerror(error)));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "sluice: " << error.what() << std::endl;
    return kBadInput;
  }
}
