#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "server_impl.h"
#include "sluice/common/clock.h"
#include "sluice/common/log.h"
#include "sluice/protocol/codec.h"
#include "sluice/protocol/doorbell.h"

namespace sluice::sched {

namespace {

constexpr std::uint64_t kHelloTimeoutNs = 5'000'000'000;
constexpr std::uint64_t kMaxSleepNs = 1'000'000'000;
constexpr std::size_t kBatch = 256;
// A client that sends this many invalid messages is disconnected: it is broken or hostile.
constexpr std::uint64_t kInvalidLimit = 10'000;

enum class Tag : std::uint32_t { listen = 1, wake, signal, session, doorbell, pidfd };

std::uint64_t key_of(Tag tag, std::uint32_t id) { return (std::uint64_t{static_cast<std::uint32_t>(tag)} << 32) | id; }
Tag tag_of(std::uint64_t key) { return static_cast<Tag>(key >> 32); }
std::uint32_t id_of(std::uint64_t key) { return static_cast<std::uint32_t>(key); }

int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

std::string bounded_text(const char* text, std::size_t size) {
  return std::string(text, strnlen(text, size));
}

template <std::size_t N>
void copy_text(char (&out)[N], const std::string& text) {
  std::size_t length = std::min(text.size(), N - 1);
  std::memcpy(out, text.data(), length);
  out[length] = '\0';
}

// Makes the socket's directory: private for a per-user daemon, world-searchable for the system
// one (whose socket every user may connect to; what they may do is checked per request).
Status prepare_directory(const std::string& socket_path) {
  std::filesystem::path dir = std::filesystem::path(socket_path).parent_path();
  if (dir.empty()) return {};
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return make_error("{}: cannot create the socket's directory: {}", dir.string(), ec.message());
    chmod(dir.c_str(), geteuid() == 0 ? 0755 : 0700);
  }
  return {};
}

}  // namespace

Server::Impl::Impl(const ServerOptions& options, PolicyStore store)
    : options_(options),
      policy_(std::move(store)),
      scheduler_(policy_.current()->scheduler, options.devices, *this) {
  epoch_ = realtime_ns() ^ (static_cast<std::uint64_t>(getpid()) << 40);
  started_ns_ = now_ns();
}

Server::Impl::~Impl() {
  if (listen_fd_) unlink(options_.socket_path.c_str());
}

Status Server::Impl::bind() {
  if (auto status = prepare_directory(options_.socket_path); !status) return status;
  sockaddr_un addr{};
  if (options_.socket_path.size() >= sizeof(addr.sun_path)) {
    return make_error("{}: socket path longer than {} bytes", options_.socket_path, sizeof(addr.sun_path) - 1);
  }
  // A socket file left by a daemon that died is removed; one that answers belongs to a live one.
  if (auto probe = protocol::connect_unix(options_.socket_path)) {
    close(*probe);
    return make_error("{}: another sluiced is already listening there", options_.socket_path);
  }
  unlink(options_.socket_path.c_str());

  listen_fd_ = Fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listen_fd_) return make_error("socket(): {}", std::strerror(errno));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, options_.socket_path.data(), options_.socket_path.size());
  if (::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    listen_fd_.reset();
    return make_error("{}: cannot bind: {}", options_.socket_path, std::strerror(err));
  }
  if (options_.socket_group) {
    if (chown(options_.socket_path.c_str(), static_cast<uid_t>(-1), *options_.socket_group) != 0) {
      int err = errno;
      listen_fd_.reset();
      unlink(options_.socket_path.c_str());
      return make_error("{}: cannot give the socket to group {}: {}", options_.socket_path,
                        *options_.socket_group, std::strerror(err));
    }
    chmod(options_.socket_path.c_str(), 0660);
  } else {
    chmod(options_.socket_path.c_str(), geteuid() == 0 ? 0666 : 0600);
  }
  if (listen(listen_fd_.get(), 128) != 0) return make_error("listen(): {}", std::strerror(errno));

  epoll_fd_ = Fd(epoll_create1(EPOLL_CLOEXEC));
  wake_fd_ = Fd(protocol::make_doorbell());
  if (!epoll_fd_ || !wake_fd_) return make_error("epoll/eventfd: {}", std::strerror(errno));
  watch(listen_fd_.get(), key_of(Tag::listen, 0), EPOLLIN);
  watch(wake_fd_.get(), key_of(Tag::wake, 0), EPOLLIN);
  if (options_.handle_signals) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    signal_fd_ = Fd(signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!signal_fd_) return make_error("signalfd: {}", std::strerror(errno));
    watch(signal_fd_.get(), key_of(Tag::signal, 0), EPOLLIN);
  }
  return {};
}

void Server::Impl::watch(int fd, std::uint64_t key, std::uint32_t events) {
  epoll_event event{};
  event.events = events;
  event.data.u64 = key;
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
    log::error("epoll_ctl(ADD, {}): {}", fd, std::strerror(errno));
  }
}

void Server::Impl::stop() noexcept {
  stop_requested_.store(true);
  if (wake_fd_) protocol::ring_doorbell(wake_fd_.get());
}

void Server::Impl::reload() noexcept {
  reload_requested_.store(true);
  if (wake_fd_) protocol::ring_doorbell(wake_fd_.get());
}

// ---- the loop ----------------------------------------------------------------------------------

Status Server::Impl::run() {
  log::info("listening on {} (epoch {:#x}, mode {}, policy {}, devices {})", options_.socket_path, epoch_,
            mode_ == protocol::SharingMode::mps ? "mps" : "timeslice", policy_.current()->source, options_.devices.empty() ? std::string("all") : fmt::format("{}", fmt::join(options_.devices, ",")));
  std::vector<epoll_event> events(64);
  while (!stop_requested_.load()) {
    std::uint64_t now = now_ns();
    if (options_.on_loop) options_.on_loop(now);
    bool more = drain_rings(now);
    scheduler_.flush(now);
    if (scheduler_.next_tick(now) <= now) scheduler_.tick(now);
    retry_unsent();
    expire_hellos(now);
    if (reload_requested_.exchange(false)) do_reload();
    if (more || !prepare_sleep()) continue;

    std::uint64_t sleep = sleep_ns(now_ns());
    int timeout_ms = static_cast<int>((sleep + 999'999) / 1'000'000);
    // epoll_wait counts milliseconds; sub-millisecond polls of RT clients use epoll_pwait2.
    int ready;
#ifdef SYS_epoll_pwait2
    timespec ts = protocol::to_timespec(sleep);
    ready = static_cast<int>(syscall(SYS_epoll_pwait2, epoll_fd_.get(), events.data(),
                                     static_cast<int>(events.size()), &ts, nullptr, 0));
    if (ready < 0 && errno == ENOSYS) ready = epoll_wait(epoll_fd_.get(), events.data(), static_cast<int>(events.size()), timeout_ms);
#else
    ready = epoll_wait(epoll_fd_.get(), events.data(), static_cast<int>(events.size()), timeout_ms);
#endif
    finish_sleep();
    if (ready < 0) {
      if (errno == EINTR) continue;
      return make_error("epoll_wait: {}", std::strerror(errno));
    }
    for (int i = 0; i < ready; ++i) {
      std::uint64_t key = events[static_cast<std::size_t>(i)].data.u64;
      std::uint32_t flags = events[static_cast<std::size_t>(i)].events;
      switch (tag_of(key)) {
        case Tag::listen: accept_all(); break;
        case Tag::wake: protocol::drain_doorbell(wake_fd_.get()); break;
        case Tag::signal: {
          signalfd_siginfo info{};
          while (read(signal_fd_.get(), &info, sizeof(info)) == sizeof(info)) {
            if (info.ssi_signo == SIGHUP) {
              reload_requested_.store(true);
            } else {
              log::info("signal {}: exiting", info.ssi_signo);
              stop_requested_.store(true);
            }
          }
          break;
        }
        case Tag::session: {
          auto it = sessions_.find(id_of(key));
          if (it == sessions_.end()) break;
          if (flags & EPOLLOUT) flush_outbox(*it->second);
          it = sessions_.find(id_of(key));
          if (it == sessions_.end()) break;
          if (flags & EPOLLIN) on_session_readable(*it->second);
          it = sessions_.find(id_of(key));
          if (it != sessions_.end() && (flags & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) && !(flags & EPOLLIN)) {
            close_session(id_of(key));
          }
          break;
        }
        case Tag::doorbell:
          if (auto it = clients_.find(id_of(key)); it != clients_.end()) {
            protocol::drain_doorbell(it->second->doorbell_in.get());
          }
          break;
        case Tag::pidfd:
          if (clients_.count(id_of(key)) != 0) drop_client(id_of(key), "process exited");
          break;
      }
    }
  }
  log::info("stopping: {} client(s) fall back to passthrough", clients_.size());
  return {};
}

std::uint64_t Server::Impl::sleep_ns(std::uint64_t now) const {
  std::uint64_t wake = std::min(scheduler_.next_tick(now), now + kMaxSleepNs);
  std::uint64_t sleep = wake > now ? wake - now : 0;
  // RT clients never ring: their launches cost no system call, so sluiced looks at their rings.
  if (scheduler_.has_rt_clients()) sleep = std::min(sleep, scheduler_.params().rt_poll_ns);
  for (const auto& [id, session] : sessions_) {
    if (session->role == SessionRole::hello) {
      std::uint64_t deadline = session->accepted_ns + kHelloTimeoutNs;
      sleep = std::min(sleep, deadline > now ? deadline - now : 0);
    }
  }
  return std::max<std::uint64_t>(sleep, 1000);
}

// Announces to BE clients that sluiced sleeps, so their next message rings its doorbell. False
// when a message arrived meanwhile (do not sleep).
bool Server::Impl::prepare_sleep() {
  bool quiet = true;
  for (auto& [id, client] : clients_) {
    if (scheduler_.is_rt(id)) continue;
    if (client->from_client.prepare_wait()) {
      client->waiting = true;
    } else {
      quiet = false;
    }
  }
  if (!quiet) finish_sleep();
  return quiet;
}

void Server::Impl::finish_sleep() {
  for (auto& [id, client] : clients_) {
    if (client->waiting) client->from_client.finish_wait();
    client->waiting = false;
  }
}

// Copies messages out of every client's ring, validates and hands them to the scheduler. True
// when a ring had more than one batch (call again before sleeping).
bool Server::Impl::drain_rings(std::uint64_t now) {
  bool more = false;
  protocol::Slot batch[kBatch];
  std::vector<std::pair<ClientId, const char*>> broken;  // evicted, and why
  for (auto& [id, client] : clients_) {
    bool corrupt = false;
    std::size_t count = client->from_client.pop_batch(batch, kBatch, corrupt);
    if (corrupt) {
      metrics_.note_protocol_error("ring_corrupt");
      broken.emplace_back(id, "evicted: the head index of its ring to sluiced is out of range (ring corrupt)");
      continue;
    }
    more = more || count == kBatch;
    for (std::size_t i = 0; i < count; ++i) {
      auto message = protocol::decode_client_message(batch[i]);
      if (message) {
        if (const auto* word = std::get_if<protocol::KillWordMsg>(&*message)) {
          if (auto added = kill_writer_.add(id, *word); !added) {
            log::warn("client {} (pid {}): its kill word cannot be used: {}", id, client->identity.pid,
                      added.error().message);
          }
        }
        scheduler_.handle(id, *message, now);
        continue;
      }
      scheduler_.note_invalid(id);
      metrics_.note_protocol_error(metrics::invalid_message_reason(protocol::message_type(batch[i])));
      if (++client->invalid == 1 || client->invalid % 1000 == 0) {
        log::warn("client {} (pid {}, {}): bad message ({} so far): {}", id, client->identity.pid,
                  client->identity.exe, client->invalid, message.error().message);
      }
    }
    if (client->invalid >= kInvalidLimit) {
      metrics_.note_protocol_error("too_many_invalid");
      broken.emplace_back(id, "evicted: too many bad messages");
    }
  }
  for (auto [id, why] : broken) drop_client(id, why);
  return more;
}

void Server::Impl::retry_unsent() {
  for (auto& [id, client] : clients_) {
    while (!client->unsent.empty()) {
      auto it = client->unsent.begin();
      if (client->to_client.push(it->second) != protocol::RingResult::ok) break;
      client->unsent.erase(it);
      if (client->to_client.should_ring()) protocol::ring_doorbell(client->doorbell_out.get());
    }
  }
}

// ---- SchedulerOutput ---------------------------------------------------------------------------

void Server::Impl::send_decision(ClientId id, const protocol::DecisionMsg& decision) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  ShimClient& client = *it->second;
  if (!client.unsent.empty() || client.to_client.push(decision) != protocol::RingResult::ok) {
    // The client is not reading. Only the newest decision per device matters; keep it.
    client.unsent[decision.device] = decision;
    ++ring_drops_;
    return;
  }
  if (client.to_client.should_ring()) protocol::ring_doorbell(client.doorbell_out.get());
}

void Server::Impl::publish_prediction(ClientId id, std::uint64_t key, std::uint64_t value_ns) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  const protocol::SegmentView& view = it->second->view;
  protocol::publish_prediction(view.predictions, view.layout.prediction_slots, key, value_ns);
}

void Server::Impl::write_kill_word(ClientId id, int device, std::uint32_t value) {
  if (auto written = kill_writer_.write(id, device, value); !written) {
    SLUICE_LOG_EVERY_SECOND(warn, "kill word not written: {}", written.error().message);
  }
}

// ---- sessions ----------------------------------------------------------------------------------

void Server::Impl::accept_all() {
  for (;;) {
    int fd = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) log::warn("accept: {}", std::strerror(errno));
      return;
    }
    auto session = std::make_unique<Session>();
    session->id = next_session_++;
    session->fd = Fd(fd);
    session->accepted_ns = now_ns();
    auto peer = peer_credentials(fd);
    if (!peer) {
      log::warn("connection without credentials: {}", peer.error().message);
      continue;
    }
    session->peer = *peer;
    watch(fd, key_of(Tag::session, session->id), EPOLLIN | EPOLLRDHUP);
    sessions_[session->id] = std::move(session);
  }
}

void Server::Impl::on_session_readable(Session& session) {
  std::uint32_t id = session.id;
  for (;;) {
    auto fill = session.reader.fill(session.fd.get());
    if (fill == protocol::FrameReader::Fill::closed || fill == protocol::FrameReader::Fill::error) {
      close_session(id);
      return;
    }
    for (;;) {
      auto frame = session.reader.next();
      if (!frame) {
        log::warn("pid {}: {}", session.peer.pid, frame.error().message);
        metrics_.note_protocol_error("bad_frame");
        close_session(id);
        return;
      }
      if (!frame->has_value()) break;
      if (session.role == SessionRole::hello) {
        on_hello(session, **frame);
      } else if (session.role == SessionRole::control) {
        on_control(session, **frame);
      }
      if (sessions_.count(id) == 0) return;  // the frame closed the session
    }
    if (fill == protocol::FrameReader::Fill::would_block) return;
  }
}

// Control replies go out as the peer reads them; a peer that lets 16 MiB pile up is dropped. The
// daemon never blocks on a control client.
void Server::Impl::queue_reply(Session& session, std::string_view payload) {
  constexpr std::size_t kMaxOutbox = std::size_t{16} << 20;
  session.outbox += protocol::encode_frame(payload);
  if (session.outbox.size() > kMaxOutbox) {
    log::warn("control client pid {} does not read its replies; closing", session.peer.pid);
    close_session(session.id);
    return;
  }
  flush_outbox(session);
}

void Server::Impl::flush_outbox(Session& session) {
  while (!session.outbox.empty()) {
    ssize_t n = send(session.fd.get(), session.outbox.data(), session.outbox.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      session.outbox.erase(0, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    close_session(session.id);
    return;
  }
  bool want = !session.outbox.empty();
  if (want == session.want_writable) return;
  session.want_writable = want;
  epoll_event event{};
  event.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0u);
  event.data.u64 = key_of(Tag::session, session.id);
  epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, session.fd.get(), &event);
}

void Server::Impl::close_session(std::uint32_t id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  ClientId client = it->second->client;
  sessions_.erase(it);  // closes the socket, which removes it from epoll
  if (client != 0 && clients_.count(client) != 0) drop_client(client, "disconnected");
}

void Server::Impl::expire_hellos(std::uint64_t now) {
  std::vector<std::uint32_t> expired;
  for (const auto& [id, session] : sessions_) {
    if (session->role == SessionRole::hello && now - session->accepted_ns > kHelloTimeoutNs) expired.push_back(id);
  }
  for (std::uint32_t id : expired) {
    log::info("pid {}: no hello within {} s; closing", sessions_[id]->peer.pid, kHelloTimeoutNs / 1'000'000'000);
    close_session(id);
  }
}

void Server::Impl::on_hello(Session& session, const std::string& frame) {
  protocol::Hello hello{};
  if (frame.size() < sizeof(hello)) {
    log::warn("pid {}: hello of {} bytes, expected {}", session.peer.pid, frame.size(), sizeof(hello));
    metrics_.note_protocol_error("bad_hello");
    close_session(session.id);
    return;
  }
  std::memcpy(&hello, frame.data(), sizeof(hello));
  if (hello.magic != protocol::kMagic) {
    log::warn("pid {}: not a sluice client (magic {:#x})", session.peer.pid, hello.magic);
    metrics_.note_protocol_error("bad_magic");
    close_session(session.id);
    return;
  }
  if (hello.abi_major != protocol::kAbiMajor) {
    metrics_.note_protocol_error("abi_mismatch");
    refuse(session, protocol::WelcomeStatus::version_mismatch,
           fmt::format("sluiced speaks protocol {}.{}, the client {}.{}", protocol::kAbiMajor,
                       protocol::kAbiMinor, hello.abi_major, hello.abi_minor));
    return;
  }
  if (hello.role == protocol::Role::control) {
    session.role = SessionRole::control;
    return;
  }
  if (hello.role != protocol::Role::shim) {
    metrics_.note_protocol_error("unknown_role");
    refuse(session, protocol::WelcomeStatus::refused, fmt::format("unknown role {}", static_cast<std::uint32_t>(hello.role)));
    return;
  }
  if (auto status = admit_shim(session, hello); !status) {
    log::warn("pid {}: {}", session.peer.pid, status.error().message);
    refuse(session, protocol::WelcomeStatus::internal, status.error().message);
  }
}

void Server::Impl::refuse(Session& session, protocol::WelcomeStatus status, const std::string& reason) {
  protocol::Welcome welcome{};
  welcome.magic = protocol::kMagic;
  welcome.abi_major = protocol::kAbiMajor;
  welcome.abi_minor = protocol::kAbiMinor;
  welcome.status = status;
  welcome.daemon_epoch = epoch_;
  copy_text(welcome.reason, reason);
  (void)protocol::send_frame(session.fd.get(), std::string_view(reinterpret_cast<const char*>(&welcome), sizeof(welcome)));
  close_session(session.id);
}

Assignment Server::Impl::assignment_of(const ShimClient& client) const {
  Assignment assignment = assign(*policy_.current(), client.identity);
  if (client.override_params) {
    assignment.params = *client.override_params;
    assignment.rule = "set-class";
  }
  return assignment;
}

Status Server::Impl::admit_shim(Session& session, const protocol::Hello& hello) {
  auto identity = read_identity(session.peer);
  if (!identity) return std::move(identity).take_error();
  std::string label = bounded_text(hello.label, sizeof(hello.label));
  if (!valid_label(label)) {
    log::warn("pid {}: ignoring SLUICE_CLASS '{}' (letters, digits, _-.: only, under {} bytes)",
              session.peer.pid, label, protocol::kLabelBytes);
    metrics_.note_protocol_error("invalid_label");
    label.clear();
  }
  identity->label = label;
  identity->job_length_ms = hello.job_length_ms;
  identity->deadline_us = hello.deadline_us;

  auto client = std::make_unique<ShimClient>();
  client->id = next_client_++;
  client->session = session.id;
  client->identity = *identity;

  const protocol::SegmentLayout layout = protocol::default_layout();
  Fd memfd(memfd_create(fmt::format("sluice-client-{}", client->id).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!memfd) return make_error("memfd_create: {}", std::strerror(errno));
  if (ftruncate(memfd.get(), static_cast<off_t>(layout.segment_bytes)) != 0) {
    return make_error("ftruncate of the client segment: {}", std::strerror(errno));
  }
  // The client gets the memfd read-write; sealed, it cannot shrink it under sluiced's mapping
  // (which would make sluiced's next ring access fault).
  if (fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return make_error("sealing the client segment: {}", std::strerror(errno));
  }
  auto mapping = protocol::Mapping::map(memfd.get(), layout.segment_bytes);
  if (!mapping) return std::move(mapping).take_error();
  client->mapping = std::move(*mapping);
  protocol::init_segment(client->mapping.base(), layout, epoch_, client->id);
  protocol::write_sharing(client->mapping.base(), mode_,
                          mode_ == protocol::SharingMode::mps ? options_.mps.pipe_dir : std::string());
  client->view = protocol::SegmentView::over(client->mapping.base(), layout);
  client->from_client = protocol::RingReader(client->view.to_daemon, client->view.to_daemon_slots, layout.to_daemon_slots);
  client->to_client = protocol::RingWriter(client->view.to_client, client->view.to_client_slots, layout.to_client_slots);
  client->doorbell_in = Fd(protocol::make_doorbell());
  client->doorbell_out = Fd(protocol::make_doorbell());
  if (!client->doorbell_in || !client->doorbell_out) return make_error("eventfd: {}", std::strerror(errno));
  client->pidfd = Fd(open_pidfd(session.peer.pid));

  Assignment assignment = assignment_of(*client);
  ClientId id = client->id;
  session.role = SessionRole::shim;
  session.client = id;
  watch(client->doorbell_in.get(), key_of(Tag::doorbell, id), EPOLLIN);
  if (client->pidfd) watch(client->pidfd.get(), key_of(Tag::pidfd, id), EPOLLIN);
  ShimClient& added = *client;
  clients_[id] = std::move(client);
  // The first decisions go into the ring before the client maps it: it starts with them.
  scheduler_.connect(id, added.identity, assignment, now_ns());
  if (tracer_) tracer_->note_client(added.identity.pid);

  protocol::Welcome welcome{};
  welcome.magic = protocol::kMagic;
  welcome.abi_major = protocol::kAbiMajor;
  welcome.abi_minor = protocol::kAbiMinor;
  welcome.status = protocol::WelcomeStatus::ok;
  welcome.client_id = id;
  welcome.daemon_epoch = epoch_;
  welcome.segment_bytes = layout.segment_bytes;
  welcome.cls = assignment.params.cls;
  copy_text(welcome.reason, assignment.rule);
  int fds[protocol::kWelcomeFds] = {memfd.get(), added.doorbell_in.get(), added.doorbell_out.get()};
  protocol::set_io_timeout(session.fd.get(), 1000);
  auto sent = protocol::send_frame(session.fd.get(), std::string_view(reinterpret_cast<const char*>(&welcome), sizeof(welcome)),
                                   fds, protocol::kWelcomeFds);
  if (!sent) {
    drop_client(id, "the welcome could not be sent");
    return {};
  }
  log::info("client {}: pid {} uid {} exe {} label '{}' -> {} (rule {})", id, added.identity.pid,
            added.identity.uid, added.identity.exe, label, protocol::class_name(assignment.params.cls), assignment.rule);
  return {};
}

Status Server::Impl::start_mps() {
  if (options_.mode != protocol::SharingMode::mps) return {};
  auto control = MpsControl::start(options_.mps);
  if (!control) {
    if (!options_.mps_fallback) return make_error("mps mode: {}", control.error().message);
    mps_error_ = control.error().message;
    log::warn("mps mode is not available ({}); running in timeslice mode (--mode auto)", mps_error_);
    return {};
  }
  mps_ = std::move(*control);
  // sluiced's own driver context (kill words) joins the same MPS server as its clients. Set before
  // any thread of sluiced reads the environment.
  setenv("CUDA_MPS_PIPE_DIRECTORY", options_.mps.pipe_dir.c_str(), 0);
  mps_->watch();
  mode_ = protocol::SharingMode::mps;
  scheduler_.set_sharing_mode(mode_, now_ns());
  return {};
}

Status Server::Impl::start_metrics() {
  if (options_.metrics_address.empty()) return {};
  auto address = metrics::parse_listen_address(options_.metrics_address, options_.metrics_any_address);
  if (!address) return std::move(address).take_error();
  auto endpoint = metrics::Endpoint::start(*address, metrics::scrape_over_control_socket(options_.socket_path));
  if (!endpoint) return std::move(endpoint).take_error();
  metrics_endpoint_ = std::move(*endpoint);
  log::info("metrics on http://{}:{}/metrics", address->ipv6 ? "[" + address->host + "]" : address->host,
            metrics_endpoint_->port());
  return {};
}

void Server::Impl::drop_client(ClientId id, const char* why) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  std::uint32_t session = it->second->session;
  log::info("client {} (pid {}, {}): {}", id, it->second->identity.pid, it->second->identity.exe, why);
  scheduler_.disconnect(id, now_ns());
  kill_writer_.remove(id);
  clients_.erase(it);
  if (auto s = sessions_.find(session); s != sessions_.end()) {
    s->second->client = 0;
    sessions_.erase(s);
  }
}

void Server::Impl::do_reload() {
  auto status = policy_.reload();
  if (!status) {
    last_reload_error_ = status.error().message;
    log::error("policy reload failed, the previous policy stays in force: {}", last_reload_error_);
    return;
  }
  last_reload_error_.clear();
  auto policy = policy_.current();
  std::uint64_t now = now_ns();
  scheduler_.set_params(policy->scheduler, now);
  for (auto& [id, client] : clients_) {
    scheduler_.reassign(id, assignment_of(*client), client->override_params.has_value(), now);
  }
  log::info("policy reloaded from {} ({} rules)", policy->source, policy->rules.size());
}

// ---- Server ------------------------------------------------------------------------------------

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

Result<std::unique_ptr<Server>> Server::start(const ServerOptions& options) {
  PolicyStore store(options.policy_path);
  if (options.policy_path) {
    if (auto status = store.reload(); !status) return std::move(status).take_error();
  }
  auto impl = std::make_unique<Impl>(options, std::move(store));
  // The metrics address first: a bad one fails before anything else is started.
  if (auto status = impl->start_metrics(); !status) return std::move(status).take_error();
  if (auto status = impl->bind(); !status) return std::move(status).take_error();
  if (auto status = impl->start_mps(); !status) return std::move(status).take_error();
  impl->start_tracer();
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Status Server::run() { return impl_->run(); }
void Server::stop() noexcept { impl_->stop(); }
void Server::reload() noexcept { impl_->reload(); }
const std::string& Server::socket_path() const { return impl_->socket_path(); }
std::uint64_t Server::epoch() const { return impl_->epoch(); }

}  // namespace sluice::sched
