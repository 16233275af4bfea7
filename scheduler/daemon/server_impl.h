// Private state of sluiced's server (server.cpp: sockets, handshake, loop; control.cpp: the
// sluicectl requests).
#pragma once

#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>

#include "identity.h"
#include "kill_writer.h"
#include "metrics.h"
#include "metrics_http.h"
#include "sluice/protocol/ring.h"
#include "sluice/protocol/segment.h"
#include "sluice/protocol/wire.h"
#include "sluice/scheduler/mps.h"
#include "sluice/scheduler/policy.h"
#include "sluice/scheduler/scheduler.h"
#include "sluice/scheduler/server.h"
#include "tracer.h"

namespace sluice::sched {

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// A shim client: its segment, rings and doorbells.
struct ShimClient {
  ClientId id = 0;
  std::uint32_t session = 0;
  protocol::Mapping mapping;
  protocol::SegmentView view;
  protocol::RingReader from_client;
  protocol::RingWriter to_client;
  Fd doorbell_in;   // the client rings it; sluiced sleeps on it
  Fd doorbell_out;  // sluiced rings it; the client sleeps on it
  Fd pidfd;         // readable when the process exits (-1 where pidfd_open is unavailable)
  ClientIdentity identity;
  std::optional<ClassParams> override_params;  // sluicectl set-class
  std::map<std::int16_t, protocol::DecisionMsg> unsent;  // decisions a full ring refused
  bool waiting = false;  // sluiced announced it sleeps (BE clients only)
  std::uint64_t invalid = 0;
};

enum class SessionRole : std::uint8_t { hello, shim, control };

struct Session {
  std::uint32_t id = 0;
  Fd fd;
  protocol::FrameReader reader{1 << 16};
  PeerCredentials peer;
  std::uint64_t accepted_ns = 0;
  SessionRole role = SessionRole::hello;
  ClientId client = 0;
  std::string outbox;         // control replies not yet written (the socket is non-blocking)
  bool want_writable = false;  // EPOLLOUT is registered
};

class Server::Impl final : public SchedulerOutput {
 public:
  Impl(const ServerOptions& options, PolicyStore store);
  ~Impl();

  Status bind();
  Status run();
  void stop() noexcept;
  void reload() noexcept;

  // SchedulerOutput
  void send_decision(ClientId client, const protocol::DecisionMsg& decision) override;
  void publish_prediction(ClientId client, std::uint64_t key, std::uint64_t value_ns) override;
  void write_kill_word(ClientId client, int device, std::uint32_t value) override;
  void note_op(const ClassParams& params, bool held) override { metrics_.note_op(params.cls, held); }
  void note_release(const ClassParams& params, bool was_held, std::uint64_t waited_ns) override {
    metrics_.note_release(params.cls, was_held, waited_ns, params.deadline_us);
  }

  const std::string& socket_path() const { return options_.socket_path; }
  std::uint64_t epoch() const { return epoch_; }

 private:
  // server.cpp
  void watch(int fd, std::uint64_t key, std::uint32_t events);
  void accept_all();
  void on_session_readable(Session& session);
  void close_session(std::uint32_t id);
  void queue_reply(Session& session, std::string_view payload);
  void flush_outbox(Session& session);
  void on_hello(Session& session, const std::string& frame);
  Status admit_shim(Session& session, const protocol::Hello& hello);
  void refuse(Session& session, protocol::WelcomeStatus status, const std::string& reason);
  void drop_client(ClientId id, const char* why);
  bool drain_rings(std::uint64_t now);
  void retry_unsent();
  bool prepare_sleep();
  void finish_sleep();
  std::uint64_t sleep_ns(std::uint64_t now) const;
  void expire_hellos(std::uint64_t now);
  void do_reload();
  Assignment assignment_of(const ShimClient& client) const;

  // control.cpp
  void on_control(Session& session, const std::string& frame);
  nlohmann::json handle_control(const Session& session, const nlohmann::json& request);
  nlohmann::json status_json(std::uint64_t now) const;
  nlohmann::json ps_json(std::uint64_t now) const;
  nlohmann::json queue_json(std::uint64_t now, std::size_t limit) const;
  nlohmann::json set_class(const Session& session, const nlohmann::json& request);
  nlohmann::json mps_json() const;

 public:
  // server.cpp: mps mode's control daemon (before run()).
  Status start_mps();
  // server.cpp: the /metrics endpoint when asked for (before run()).
  Status start_metrics();
  // tracer.h: sluice-trace as a child, when asked for (before run()); never fails.
  void start_tracer() {
    if (!options_.trace) return;
    std::string program = options_.trace_program.empty() ? default_trace_program() : options_.trace_program;
    tracer_ = std::make_unique<Tracer>(TracerOptions{program, options_.trace_driver});
  }

 private:
  bool privileged(const Session& session) const;

  ServerOptions options_;
  PolicyStore policy_;
  Scheduler scheduler_;
  std::uint64_t epoch_ = 0;
  std::uint64_t started_ns_ = 0;
  Fd listen_fd_;
  Fd epoll_fd_;
  Fd wake_fd_;
  Fd signal_fd_;
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> reload_requested_{false};
  std::map<std::uint32_t, std::unique_ptr<Session>> sessions_;
  std::map<ClientId, std::unique_ptr<ShimClient>> clients_;
  std::uint32_t next_session_ = 1;
  ClientId next_client_ = 1;
  std::string last_reload_error_;
  protocol::SharingMode mode_ = protocol::SharingMode::timeslice;
  std::unique_ptr<MpsControl> mps_;
  KillWriter kill_writer_;
  std::string mps_error_;  // why mps mode fell back to timeslice
  std::uint64_t ring_drops_ = 0;
  std::unique_ptr<Tracer> tracer_;  // sluiced --trace
  metrics::DaemonMetrics metrics_;
  // Last: its thread stops first when the server goes away.
  std::unique_ptr<metrics::Endpoint> metrics_endpoint_;
};

}  // namespace sluice::sched
