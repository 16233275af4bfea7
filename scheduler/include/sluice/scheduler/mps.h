// sluiced's MPS control daemon (`sluiced --mode mps`): without MPS, contexts of different
// processes time-slice and SM partitions do nothing across processes (docs/daemon.md).
//
// start():   makes the pipe and log directories (0700), then
//            * adopts a control daemon that already answers on the pipe directory (and leaves it
//              running at exit: sluiced did not start it), or
//            * starts `nvidia-cuda-mps-control -d` with CUDA_MPS_PIPE_DIRECTORY and
//              CUDA_MPS_LOG_DIRECTORY set, and checks that it answers `get_server_list`.
// watch():   checks it every interval on a thread of its own (never on sluiced's loop): one that
//            stops answering is `lost` (logged once), and back to what it was when it answers
//            again. One that sluiced started is started again (`-d`) at that check and, while
//            that fails, at most every kRestartBackoffMs; an adopted one is left to its owner.
// stop():    ends the watch; for a control daemon sluiced started, sends `quit` and waits (bounded)
//            until it no longer answers.
// Every call of the control program is posix_spawn'ed without a shell and bounded by a timeout.
//
// Thread rules: one thread (sluiced's main thread) owns it; state() may be read from any thread
// while the watch runs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "sluice/common/result.h"

namespace sluice::sched {

inline constexpr const char* kMpsControlEnv = "SLUICE_MPS_CONTROL";
inline constexpr const char* kMpsControlProgram = "nvidia-cuda-mps-control";

struct MpsOptions {
  std::string control_program = kMpsControlProgram;  // a path, or a name looked up on PATH
  std::string pipe_dir;                              // CUDA_MPS_PIPE_DIRECTORY
  std::string log_dir;                               // CUDA_MPS_LOG_DIRECTORY
  std::uint64_t timeout_ms = 5000;                   // each call of the control program
  std::uint64_t check_interval_ms = 10'000;          // watch(): how often it is asked
};

// The directories under sluice's runtime directory (the socket's directory): <dir>/mps/pipe and
// <dir>/mps/log.
MpsOptions mps_options_for_socket(const std::string& socket_path);

enum class MpsState : std::uint8_t {
  started,  // sluiced started it and will quit it at exit
  adopted,  // it was already running on the pipe directory; sluiced leaves it running
  lost,     // it stopped answering
  stopped,  // sluiced quit it
};

const char* mps_state_name(MpsState state);

class MpsControl {
 public:
  static Result<std::unique_ptr<MpsControl>> start(const MpsOptions& options);
  ~MpsControl();  // stop()
  MpsControl(const MpsControl&) = delete;
  MpsControl& operator=(const MpsControl&) = delete;

  static constexpr std::uint64_t kRestartBackoffMs = 5'000;

  // `echo get_server_list | nvidia-cuda-mps-control`: answers (exit 0) within the timeout. Moves
  // the state to `lost` when a started or adopted one does not answer, and back when it does; a
  // lost one that sluiced started is started again (see restarts()).
  Status check();
  // Runs check() every options().check_interval_ms on a thread until stop().
  void watch();
  // Ends the watch and quits a control daemon sluiced started; idempotent. Adopted ones are left
  // running.
  Status stop();

  MpsState state() const { return state_.load(); }
  const MpsOptions& options() const { return options_; }
  const std::string& program() const { return program_; }  // resolved path
  std::uint64_t restarts() const { return restarts_.load(); }  // times check() started it again

 private:
  MpsControl(MpsOptions options, std::string program)
      : options_(std::move(options)), program_(std::move(program)) {}
  Result<std::string> send(const std::string& command) const;
  // `-d`, then waits (bounded by the timeout) until it answers.
  Status launch();
  void end_watch();

  MpsOptions options_;
  std::string program_;
  bool owned_ = false;  // sluiced started it
  std::atomic<MpsState> state_{MpsState::started};
  std::atomic<std::uint64_t> restarts_{0};
  std::uint64_t next_restart_ns_ = 0;  // check()'s caller only
  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  bool watch_stop_ = false;  // guarded by watch_mu_
  std::thread watch_thread_;
};

}  // namespace sluice::sched
