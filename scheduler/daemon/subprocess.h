// Running a helper program from sluiced without a shell and without ever hanging: posix_spawn,
// stdin and stdout through pipes, and a deadline after which the child is killed (SIGKILL) and
// reaped.
//
// Thread rules: any thread; each call owns the child it spawns.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sluice/common/result.h"

namespace sluice::sched {

struct CommandResult {
  int exit_code = -1;      // the exit status, or 128 + signal when a signal ended it
  bool timed_out = false;  // the deadline passed; the child was killed
  std::string output;      // stdout and stderr together (at most 64 KiB kept)
};

// Runs `argv` (argv[0] a path, or a name looked up on PATH) with the extra environment entries
// `env` ("NAME=value", overriding the inherited ones), writes `input` to its stdin and closes it,
// and collects its output until it exits or `timeout_ms` passes. Fails only when the program
// cannot be started; a non-zero exit or a timeout is reported in the result.
Result<CommandResult> run_command(const std::vector<std::string>& argv,
                                  const std::vector<std::string>& env, const std::string& input,
                                  std::uint64_t timeout_ms);

// A child that runs on: stdin is /dev/null, stdout and stderr come through `output_fd` (the
// caller closes it, and reaps `pid`).
struct Child {
  int pid = -1;
  int output_fd = -1;
};

// Starts `argv` (as run_command) without waiting for it. Fails only when it cannot be started.
Result<Child> spawn_reading(const std::vector<std::string>& argv, const std::vector<std::string>& env);

// The absolute path of `name` on PATH ("" when not found). A name with a slash is checked as is.
std::string find_on_path(const std::string& name);

}  // namespace sluice::sched
